"""What AWS accepts, read from the data botocore ships: instance types, regions, log retention.

botocore is already installed (boto3 runs the rolling update) and carries the EC2 service model
and the endpoint data of every partition. Its files are read directly, without importing
botocore (whose import alone costs about 0.3 s), so that a configuration mistake is still
reported in a fraction of a second. The data is as new as the pinned botocore: to accept an
instance type or a region AWS opened later, raise the boto3/botocore pins
(requirements-common.txt, constraints.txt).
"""
from __future__ import annotations

import bisect
import functools
import gzip
import importlib.util
import json
import re
from pathlib import Path

# CloudWatch Logs accepts only these retention periods. botocore's logs model states them in
# the documentation of its ``Days`` shape rather than as an enum (a test compares the two).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                      1827, 2192, 2557, 2922, 3288, 3653)

# A family is a kind (letters), a generation (digits) and options (letters, hyphens...).
_FAMILY = re.compile(r"^(?P<kind>[a-z]+)(?P<generation>\d+)(?P<options>[a-z0-9-]*)$")


def _data_dir() -> Path:
    spec = importlib.util.find_spec("botocore")
    return Path(spec.submodule_search_locations[0]) / "data"


@functools.cache
def botocore_version() -> str:
    """The version of botocore whose data is used, for messages.

    Read from its source: importlib.metadata scans every installed package (0.1 s).
    """
    source = (_data_dir().parent / "__init__.py").read_text(encoding="utf-8")
    return re.search(r"^__version__ = ['\"]([^'\"]+)", source, re.MULTILINE)[1]


@functools.cache
def instance_types() -> frozenset[str]:
    """Every EC2 instance type: the ``InstanceType`` enum of the EC2 service model."""
    service = _data_dir() / "ec2"
    newest = max(path.name for path in service.iterdir() if (path / "service-2.json.gz").exists())
    text = gzip.decompress((service / newest / "service-2.json.gz").read_bytes()).decode()
    for _, shape in _objects_named("InstanceType", text):
        if "enum" in shape:
            return frozenset(shape["enum"])
    raise LookupError(f"no InstanceType enum in botocore's EC2 model {newest}")


def _objects_named(key: str, text: str):
    """Each JSON object that is the value of ``key`` anywhere in ``text``, with the offset in
    ``text`` where it starts.

    botocore's files are megabytes of JSON of which one shape or one list is needed here:
    decoding only those takes milliseconds where parsing the whole file takes 0.03 to 0.1 s,
    which counts when a configuration mistake should be reported in a fraction of a second.
    """
    decoder = json.JSONDecoder()
    for match in re.finditer(rf'"{key}"\s*:\s*(?=\{{)', text):
        yield match.end(), decoder.raw_decode(text, match.end())[0]


@functools.cache
def region_partitions() -> dict[str, str]:
    """Region -> its partition (``aws``, ``aws-cn``, ``aws-us-gov``, ...), for every region
    in the endpoint data.

    ``endpoints.json`` rather than ``partitions.json``: the latter lags (botocore 1.35.99
    lists mx-central-1 in the first only). ``Session.get_available_regions("ec2")`` reads the
    same file but answers for the ``aws`` partition alone.
    """
    text = (_data_dir() / "endpoints.json").read_text(encoding="utf-8")
    # Each partition object names itself before its region map: a map's owner is the last
    # name before it.
    names = [(m.start(), m[1]) for m in re.finditer(r'"partition"\s*:\s*"([^"]+)"', text)]
    starts = [start for start, _ in names]
    found: dict[str, str] = {}
    for offset, regions in _objects_named("regions", text):
        owner = bisect.bisect_left(starts, offset) - 1
        # A partition's regions map each name to its description; nothing else does.
        for name, region in regions.items():
            if owner >= 0 and isinstance(region, dict) and "description" in region:
                found[name] = names[owner][1]
    return found


def regions() -> frozenset[str]:
    """Every region of every partition in the endpoint data."""
    return frozenset(region_partitions())


def partition(region: str) -> str | None:
    """The partition of ``region`` (``aws`` for the commercial regions), None if unknown."""
    return region_partitions().get(region)


def instance_architecture(instance_type: str) -> str:
    """``arm64`` or ``x86_64``: what an instance type runs, derived from its family's name.

    botocore has no per-type architecture. AWS names its Graviton (arm64) families with a
    ``g`` right after the generation (t4g, m7gd, c6gn, im4gn, x2gd, g5g) and the first one
    ``a1``; a ``g`` as the kind (g4dn, g5, g6e: GPU instances) is x86_64. ``mac`` families
    (macOS on dedicated hosts) run no Linux AMI and are refused by the settings.
    """
    family = instance_type.split(".", 1)[0]
    match = _FAMILY.match(family)
    if match and (family == "a1" or match["options"].startswith("g")):
        return "arm64"
    return "x86_64"
