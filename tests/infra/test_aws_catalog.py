"""core.aws_catalog reads botocore's files directly; here it is checked against botocore's own
API, and the architecture it derives against moto's copy of EC2's DescribeInstanceTypes."""
import gzip
import json
import re
from pathlib import Path

import botocore.session
import moto
import pytest

from core import aws_catalog

MOTO_EC2 = Path(moto.__file__).parent / "ec2" / "resources"


@pytest.fixture(scope="module")
def session():
    return botocore.session.get_session()


def test_instance_types_are_the_ec2_models_enum(session):
    enum = session.get_service_model("ec2").shape_for("InstanceType").enum
    assert aws_catalog.instance_types() == frozenset(enum)
    assert {"t3.micro", "t4g.micro", "m7g.large"} <= aws_catalog.instance_types()


def test_regions_hold_every_partitions_regions(session):
    """What get_available_regions answers per partition, and partitions.json (which lags)."""
    for partition in session.get_available_partitions():
        assert set(session.get_available_regions("ec2", partition)) <= aws_catalog.regions()
    partitions = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json")
                            .read_text())
    listed = {region for partition in partitions["partitions"]
              for region in partition["regions"] if not region.endswith("-global")}
    assert listed <= aws_catalog.regions()
    assert {"eu-west-1", "cn-north-1", "us-gov-west-1"} <= aws_catalog.regions()


def test_each_region_belongs_to_the_partition_botocore_says(session):
    for partition in session.get_available_partitions():
        for region in session.get_available_regions("ec2", partition):
            assert aws_catalog.partition(region) == partition, region
    assert aws_catalog.partition("eu-west-1") == "aws"
    assert aws_catalog.partition("cn-north-1") == "aws-cn"
    assert aws_catalog.partition("us-gov-west-1") == "aws-us-gov"
    assert aws_catalog.partition("eu-west-9") is None


def test_log_retention_periods_are_the_ones_botocore_documents(session):
    days = session.get_service_model("logs").shape_for("Days")
    stated = re.search(r"Possible values are: ([0-9, and]+)\.", days.documentation)[1]
    assert tuple(int(n) for n in re.findall(r"\d+", stated)) == aws_catalog.LOG_RETENTION_DAYS


def test_architecture_matches_describe_instance_types():
    """Every type botocore knows that moto's DescribeInstanceTypes data also has (1,300+)."""
    described = json.loads(gzip.decompress((MOTO_EC2 / "instance_types.json.gz").read_bytes()))
    compared = 0
    for name in aws_catalog.instance_types() & set(described):
        architectures = described[name]["ProcessorInfo"]["SupportedArchitectures"]
        if any(arch.endswith("_mac") for arch in architectures):
            continue
        assert aws_catalog.instance_architecture(name) in architectures, name
        compared += 1
    assert compared > 800


@pytest.mark.parametrize("instance_type, architecture", [
    ("t4g.micro", "arm64"), ("a1.large", "arm64"), ("g5g.xlarge", "arm64"),
    ("im4gn.large", "arm64"), ("c7gn.large", "arm64"), ("g4dn.xlarge", "x86_64"),
    ("g6e.xlarge", "x86_64"), ("t3.micro", "x86_64"), ("u-6tb1.metal", "x86_64"),
])
def test_graviton_families_are_arm64(instance_type, architecture):
    assert aws_catalog.instance_architecture(instance_type) == architecture


def test_version_in_messages_is_botocores():
    assert aws_catalog.botocore_version() == botocore.__version__
