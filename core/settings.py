"""The validated configuration of one environment, read from ``config/<environment>.yaml``.

Everything the stacks build comes from here, and everything here is checked before a single
construct exists: a bad file is reported as one line per problem (field, what is wrong, what is
allowed) through :class:`ConfigError`, never as a traceback from deep inside the CDK. What AWS
accepts (instance types, regions, log retention periods) comes from botocore's own data
(:mod:`core.aws_catalog`).

This module imports neither the CDK nor the provider, so validation costs milliseconds.
"""
from __future__ import annotations

import datetime
import difflib
import errno
import hashlib
import ipaddress
import os
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError,
                      field_validator)

from core import aws_catalog

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

# Ports fixed by the design; they are not configuration.
HTTP_PORT = 80
HTTPS_PORT = 443
APP_PORT = 5000
# The health agent on each APP host answers Caddy's active health check. It is the one port
# added to the seed's table: a host leaves the load balancer by failing this check on purpose
# (its drain switch), with no Caddy configuration change.
HEALTH_AGENT_PORT = 5001
# Caddy on each load balancer answers the Network Load Balancer's health check here itself,
# whatever the app hosts' state: the NLB asks "is this Caddy up?", Caddy asks the app hosts.
LB_HEALTH_PORT = 8080
LB_HEALTH_PATH = "/lb-health"
# The NLB's health check of each LB (AWS's shortest interval and smallest thresholds: a dead
# Caddy is out after about two intervals), and how long a deregistered LB keeps its open
# connections before the NLB lets them go: longer than any request (IN_FLIGHT_SECONDS on the
# app side) so that taking an LB out for maintenance fails none.
LB_HEALTH_INTERVAL_SECONDS = 5
LB_HEALTH_TIMEOUT_SECONDS = 2
LB_HEALTH_THRESHOLD = 2
LB_DEREGISTRATION_DELAY_SECONDS = 30
POSTGRES_PORT = 5432
NFS_PORT = 2049
ELASTICSEARCH_PORT = 9200
KIBANA_PORT = 5601

ROLES = ("lb", "app", "db", "nfs", "log")
# DB-01's backup health in CloudWatch (provisioning/files/backup_metrics.py) and when its
# alarms go off: a daily backup missed by two hours, WAL archiving five minutes behind.
BACKUP_METRIC_NAMESPACE = "WebPlatform/Backups"
BACKUP_AGE_ALARM_SECONDS = 26 * 3600
ARCHIVE_LAG_ALARM_SECONDS = 5 * 60

# Private addresses are fixed per role (an offset into the host's subnet). Knowing them at
# synthesis keeps every host's configuration free of cross-references: no dependency cycle
# between DB-01 (mounts NFS-01) and NFS-01 (exports to DB-01), and Caddy's upstream list is
# plain text.
HOST_OFFSETS = {"lb": 10, "db": 10, "nfs": 11, "log": 12, "app": 20}
# The public subnet's .10-.19 are kept for the load balancers. The NAT gateway's address is
# pinned below them: left to AWS, it could take a load balancer's fixed address first.
NAT_OFFSET = 5
MAX_APP_HOSTS = 50
LOAD_BALANCER_COUNTS = (1, 2)

ENVIRONMENT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
# Stack names other than the environments' in cdktf.out/stacks/.
RESERVED_ENVIRONMENT_NAMES = ("bootstrap",)
CONFIG_SUFFIX = ".yaml"
# Editor leftovers in config/: hidden files (Emacs' .#x.yaml lock, Vim's .x.yaml.swp), backups
# (x.yaml~) and Emacs' auto-saves (#x.yaml#). They never name an environment.
_EDITOR_FILE = re.compile(r"^(\..*|.*~|#.*#)$")

# Tag keys the stacks set themselves: the provider's default tags and the most any one
# resource adds (a host: Name, Role, UserDataSha256). A test checks the synthesized JSON
# against this list. AWS allows 50 tags per resource, counting these.
STACK_TAG_KEYS = ("Project", "Environment", "ManagedBy", "Name", "Role", "UserDataSha256")
MAX_TAGS_PER_RESOURCE = 50
MAX_USER_TAGS = MAX_TAGS_PER_RESOURCE - len(STACK_TAG_KEYS)

_NAME = r"^[a-z][a-z0-9-]{1,20}$"
_HOSTNAME = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
_OIDC_PROVIDER_ARN = (r"^arn:aws(-[a-z]+)*:iam::\d{12}:"
                      r"oidc-provider/token\.actions\.githubusercontent\.com$")
_NAME_FORM = "2-21 lower-case letters, digits or hyphens, starting with a letter"
_TYPE_FORM = "an EC2 instance type such as t3.micro"
_SHOWN_LENGTH = 60

# The image reference grammar of the OCI distribution spec (distribution/reference), which
# Docker applies: [registry[:port]/]path[:tag][@digest], path components lower case.
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_IMAGE_REFERENCE = re.compile(
    rf"(?P<name>(?:{_REGISTRY}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<algorithm>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*)"
    r":(?P<digest>[0-9a-fA-F]{32,}))?", re.ASCII)
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_IMAGE_FORM = "an image reference with a tag or digest, e.g. ghcr.io/org/app:1.4.2"

_GITHUB_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_GITHUB_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_BUCKET_RULE = ("S3 bucket names are 3 to 63 characters: lower-case letters, digits, dots and "
                "hyphens, starting and ending with a letter or digit")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_TAG_PUNCTUATION = set(" _.:/=+-@")


class ConfigError(Exception):
    """A configuration that cannot be built; ``problems`` holds one line per mistake."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def shown(value: Any) -> str:
    """``value`` as a message quotes it: its repr, cut so that one line stays one line."""
    text = repr(value)
    if len(text) <= _SHOWN_LENGTH:
        return text
    closing = text[-1] if text[-1] in "'\"" else ""
    return text[:_SHOWN_LENGTH - 4] + "..." + closing


def _did_you_mean(value: str, choices) -> str:
    normalised = value.strip().lower()
    close = [normalised] if normalised in choices else difflib.get_close_matches(
        value, sorted(choices), n=1, cutoff=0.6)
    return f": did you mean {close[0]!r}?" if close else ""


class _Section(BaseModel):
    # strict: YAML's "5" is not the number 5; frozen: the stacks only read.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{shown(value)} is not a network in CIDR form such as 10.0.0.0/16")
    if network.version != 4:
        raise ValueError(f"{shown(value)} is not an IPv4 network; the VPC is IPv4 only")
    if "/" not in value:
        raise ValueError(f"{shown(value)} is a single address; write {value}/32 for it alone, "
                         "or the network in CIDR form")
    if str(network) != value:
        raise ValueError(f"{shown(value)} has host bits set; the network is {network}")
    return value


def _prefix_between(shortest: int, longest: int, allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        prefix = ipaddress.ip_network(value).prefixlen
        if not shortest <= prefix <= longest:
            raise ValueError(f"{value} is a /{prefix}; {allowed}")
        return value
    return check


Cidr = Annotated[str, Field(description="An IPv4 network in CIDR form"), AfterValidator(_cidr)]


def _retention(value: int) -> int:
    if value not in aws_catalog.LOG_RETENTION_DAYS:
        allowed = ", ".join(map(str, aws_catalog.LOG_RETENTION_DAYS))
        raise ValueError(f"{value} is not a CloudWatch Logs retention period; AWS allows "
                         f"{allowed}")
    return value


class NetworkSettings(_Section):
    """Addresses of the VPC and its two subnets, and how private hosts reach out."""

    vpc_cidr: Cidr = "10.0.0.0/16"
    public_subnet_cidr: Cidr = "10.0.1.0/24"
    private_subnet_cidr: Cidr = "10.0.2.0/24"
    # Private hosts need a way out for packages, container images and SSM. Without NAT they
    # need VPC endpoints and a package mirror, which this project does not create: only true
    # is accepted.
    nat_gateway: bool = True
    flow_log_retention_days: int = Field(default=365, description="a CloudWatch Logs "
                                         "retention period")

    _check_vpc_size = field_validator("vpc_cidr")(
        _prefix_between(16, 28, "AWS allows VPC blocks of /16 to /28"))
    # The fixed host addresses (offsets 10 to 20 + app.host_count) need a /26 at least.
    _check_subnets = field_validator("public_subnet_cidr", "private_subnet_cidr")(
        _prefix_between(16, 26, "use /16 to /26: AWS allows /16 to /28 and the hosts' fixed "
                        "addresses need a /26"))
    _check_retention = field_validator("flow_log_retention_days")(_retention)

    @field_validator("vpc_cidr")
    @classmethod
    def _check_vpc_range(cls, value: str) -> str:
        network = ipaddress.ip_network(value)
        if (network.is_loopback or network.is_link_local or network.is_multicast
                or network.is_reserved or network.subnet_of(ipaddress.ip_network("0.0.0.0/8"))):
            raise ValueError(f"{value} is a loopback, link-local, multicast or reserved range, "
                             "which AWS refuses; use a private range such as 10.0.0.0/16")
        return value

    @field_validator("nat_gateway")
    @classmethod
    def _check_nat(cls, value: bool) -> bool:
        if not value:
            raise ValueError("false would leave the private hosts with no way out (packages, "
                             "container images, SSM): this project creates no VPC endpoints "
                             "or package mirror; keep true")
        return value


def _instance_type(value: str) -> str:
    known = aws_catalog.instance_types()
    if value not in known:
        raise ValueError(f"{shown(value)} is not an EC2 instance type"
                         f"{_did_you_mean(value, known)} (botocore "
                         f"{aws_catalog.botocore_version()} knows {len(known)} types; a newer "
                         "type needs a newer botocore)")
    if value.startswith("mac"):
        raise ValueError(f"{shown(value)} is a macOS instance (dedicated hosts only); the "
                         "hosts run Ubuntu: choose e.g. t3.micro or t4g.micro")
    return value


InstanceType = Annotated[str, Field(description=_TYPE_FORM), AfterValidator(_instance_type)]


class InstanceTypes(_Section):
    """EC2 instance type per role; the defaults are the seed's sizes."""

    lb: InstanceType = "t3.micro"
    app: InstanceType = "t3.micro"
    db: InstanceType = "t3.small"
    nfs: InstanceType = "t3.micro"
    log: InstanceType = "t3.medium"

    @field_validator("app")
    @classmethod
    def _check_app_architecture(cls, value: str) -> str:
        # deploy.yml builds the app image for linux/amd64 only: a Graviton host could not
        # run it.
        if aws_catalog.instance_architecture(value) != "x86_64":
            raise ValueError(f"{shown(value)} is an arm64 (Graviton) type, and the app image "
                             "is built for amd64 only: choose an x86_64 type such as t3.micro")
        return value


def _image(value: str) -> str:
    reference = _IMAGE_REFERENCE.fullmatch(value)
    hint = ""
    if "://" in value:
        hint = f"; drop the scheme {value.split('://')[0] + '://'!r}"
    elif reference is None and _IMAGE_REFERENCE.fullmatch(value.lower()):
        hint = "; repository names are lower case"
    elif reference and not (reference["tag"] or reference["digest"]):
        hint = "; add a tag (:1.4.2) or a digest (@sha256:...)"
    elif reference and len(reference["name"]) > 255:
        hint = "; the name is longer than 255 characters"
    elif reference and reference["digest"]:
        length = _DIGEST_LENGTHS.get(reference["algorithm"])
        if length != len(reference["digest"]) or reference["digest"] != reference[
                "digest"].lower():
            hint = "; a digest is sha256: and 64 lower-case hex digits"
    if hint or reference is None:
        raise ValueError(f"{shown(value)} is not {_IMAGE_FORM}{hint}")
    return value


class AppSettings(_Section):
    """The application fleet: how many APP hosts and which container image they run."""

    host_count: int = Field(ge=1, le=MAX_APP_HOSTS, description=f"1 to {MAX_APP_HOSTS}")
    # What a new APP host starts at first boot when no rollout has recorded an image yet.
    # null: nothing until the pipeline's rolling update deploys the image it built into
    # the project's ECR repository. Another registry's image must be pullable without
    # credentials (hosts hold none).
    image: Optional[Annotated[str, AfterValidator(_image)]] = Field(
        default=None, description=f"{_IMAGE_FORM}, or null")


class NfsSettings(_Section):
    """The backup store on NFS-01."""

    volume_size_gb: int = Field(default=50, ge=1, le=16384)


class BackupSettings(_Section):
    """DB-01's pgBackRest backups, in NFS-01's repository and the S3 bucket's."""

    # Any second of the last retention_days can be restored, in both repositories.
    retention_days: int = Field(default=14, ge=1, le=3650)
    # systemd OnCalendar time of day, UTC: the full backup on full_backup_day, a
    # differential on the other days.
    time: str = Field(default="03:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                      description="HH:MM, 24-hour clock, UTC, in quotes")
    full_backup_day: str = Field(default="Sun", pattern=r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)$",
                                 description="Mon, Tue, Wed, Thu, Fri, Sat or Sun")


def _email(value: str) -> str:
    if value.lower().startswith("mailto:"):
        raise ValueError(f"{shown(value)}: write the address alone, without mailto:")
    if not re.fullmatch(r"[^@\s:]+@[^@\s]+\.[a-z]{2,}", value):
        raise ValueError(f"{shown(value)} is not an e-mail address such as ops@example.com")
    return value


class AlertSettings(_Section):
    """Where the alarms go: an SNS topic with one e-mail subscription."""

    # AWS mails a confirmation link to this address; no alarm reaches it before it is clicked.
    email: Annotated[str, AfterValidator(_email)] = Field(
        description="an e-mail address such as ops@example.com")


def _load_balancer_count(value: int) -> int:
    if value not in LOAD_BALANCER_COUNTS:
        raise ValueError(f"{value} load balancers; write 1 (LB-01 holds the Elastic IP, a "
                         "single point of failure) or 2 (LB-01 and LB-02 behind a Network "
                         "Load Balancer)")
    return value


class LoadBalancerSettings(_Section):
    """How many Caddy load balancers serve the environment."""

    # 2: LB-01 and LB-02 behind an AWS Network Load Balancer that holds the Elastic IP, so
    # losing or patching one is not downtime. 1: the seed's single LB-01, for cost.
    count: Annotated[int, AfterValidator(_load_balancer_count)] = Field(
        default=2, description="1 or 2")


class LogSettings(_Section):
    """Elasticsearch on LOG-01."""

    retention_days: int = Field(default=30, ge=1, le=3650)


def _tag_text(value: str) -> bool:
    # What every tagged service accepts (IAM is the strictest): letters, digits and spaces
    # in any script, and _ . : / = + - @
    return all(unicodedata.category(char)[0] in "LNZ" or char in _TAG_PUNCTUATION
               for char in value)


def _tag_key(key: str) -> str:
    allowed = "1 to 128 letters, digits, spaces or _ . : / = + - @"
    if not 1 <= len(key) <= 128 or not _tag_text(key):
        raise ValueError(f"tag key {shown(key)} is not {allowed}")
    if key.lower().startswith("aws:"):
        raise ValueError(f"tag key {shown(key)}: the prefix aws: is reserved for AWS")
    taken = {name.lower(): name for name in STACK_TAG_KEYS}
    if key.lower() in taken:
        raise ValueError(f"tag key {shown(key)} is set by the stacks themselves "
                         f"({', '.join(STACK_TAG_KEYS)}); choose another key")
    return key


def _tag_value(value: str) -> str:
    if len(value) > 256 or not _tag_text(value):
        raise ValueError(f"tag value {shown(value)} is not 0 to 256 letters, digits, spaces "
                         "or _ . : / = + - @")
    return value


class Settings(_Section):
    """One environment: everything ``config/<environment>.yaml`` may say."""

    environment: str = Field(pattern=_NAME, description=_NAME_FORM)
    project: str = Field(default="webapp", pattern=_NAME, description=_NAME_FORM)
    region: str = Field(description="an AWS region such as eu-west-1")
    availability_zone: str = Field(description="a zone of the region such as eu-west-1a")
    admin_cidr: Cidr
    domain: Optional[str] = Field(default=None, max_length=253, pattern=_HOSTNAME,
                                  description="a lower-case DNS name such as "
                                  "app.example.com, or null for plain HTTP")
    acme_email: Optional[str] = Field(default=None, description="an e-mail address such as "
                                      "ops@example.com, or null")
    github_repository: str = Field(description="owner/name, e.g. example-org/web-platform")
    # An account holds one OIDC provider per issuer: if GitHub's exists already (made by
    # another project), the bootstrap stack uses it instead of failing to create a second.
    github_oidc_provider_arn: Optional[str] = Field(
        default=None, pattern=_OIDC_PROVIDER_ARN,
        description="the ARN of the account's GitHub OIDC provider, arn:aws:iam::<account "
        "id>:oidc-provider/token.actions.githubusercontent.com, or null to create it")
    state_bucket: str = Field(description=_BUCKET_RULE)
    # Refuse `terraform destroy` and API termination of the hosts that hold data.
    protect_data: bool = True
    network: NetworkSettings = NetworkSettings()
    instance_types: InstanceTypes = InstanceTypes()
    load_balancer: LoadBalancerSettings = LoadBalancerSettings()
    app: AppSettings
    nfs: NfsSettings = NfsSettings()
    backups: BackupSettings = BackupSettings()
    alerts: AlertSettings
    logs: LogSettings = LogSettings()
    tags: dict[Annotated[str, AfterValidator(_tag_key)],
               Annotated[str, AfterValidator(_tag_value)]] = {}

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        known = aws_catalog.regions()
        if value not in known:
            raise ValueError(f"{shown(value)} is not an AWS region{_did_you_mean(value, known)}"
                             f" (regions known to botocore {aws_catalog.botocore_version()}; "
                             "a region opened later needs a newer botocore)")
        owner = aws_catalog.partition(value)
        if owner != "aws":
            # ARNs, service principals and the AMI owner are the commercial partition's.
            raise ValueError(f"{shown(value)} is in the {owner} partition; only the aws "
                             "partition is supported: choose a commercial region such as "
                             "eu-west-1")
        return value

    @field_validator("availability_zone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        # botocore has no zone list; zone names are the region and a letter, a to f at most
        # (us-east-1 has six).
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+[a-f]", value):
            raise ValueError(f"{shown(value)} is not an availability zone: the region "
                             "followed by a letter a to f, e.g. eu-west-1a")
        return value

    @field_validator("admin_cidr")
    @classmethod
    def _check_admin_cidr(cls, value: str) -> str:
        if ipaddress.ip_network(value).prefixlen == 0:
            raise ValueError(f"{value} would open Kibana to the whole internet; name your "
                             "office or VPN range")
        return value

    @field_validator("acme_email")
    @classmethod
    def _check_email(cls, value: Optional[str]) -> Optional[str]:
        return value if value is None else _email(value)

    @field_validator("github_repository")
    @classmethod
    def _check_repository(cls, value: str) -> str:
        path = re.sub(r"^([a-z+]+://)?([^@/]+@)?(www\.)?github\.com[:/]", "", value)
        path = path.removesuffix("/").removesuffix(".git")
        owner, _, name = path.partition("/")
        sound = (_GITHUB_OWNER.fullmatch(owner) and _GITHUB_NAME.fullmatch(name)
                 and name not in (".", ".."))
        if path != value and sound:
            raise ValueError(f"{shown(value)}: write owner/name only, {path!r}: the OIDC "
                             "subject names the repository without URL or .git")
        if not sound:
            raise ValueError(f"{shown(value)} is not owner/name, e.g. example-org/web-platform")
        return value

    @field_validator("state_bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        problem = None
        if not 3 <= len(value) <= 63:
            problem = f"is {len(value)} characters long"
        elif not re.fullmatch(r"[a-z0-9.-]+", value):
            problem = "holds a character other than a-z, 0-9, . or -"
        elif not (value[0].isalnum() and value[-1].isalnum()):
            problem = "does not start and end with a letter or digit"
        elif ".." in value:
            problem = "holds two adjacent dots"
        elif re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value):
            problem = "is shaped like an IP address"
        elif value.startswith(_BUCKET_PREFIXES):
            problem = f"starts with a prefix AWS reserves ({', '.join(_BUCKET_PREFIXES)})"
        elif value.endswith(_BUCKET_SUFFIXES):
            problem = f"ends with a suffix AWS reserves ({', '.join(_BUCKET_SUFFIXES)})"
        if problem:
            raise ValueError(f"{shown(value)} {problem}; {_BUCKET_RULE}, not shaped like an "
                             "IP address, no '..'")
        return value

    @field_validator("tags")
    @classmethod
    def _check_tag_count(cls, value: dict) -> dict:
        if len(value) > MAX_USER_TAGS:
            raise ValueError(f"{len(value)} tags; at most {MAX_USER_TAGS}: AWS allows "
                             f"{MAX_TAGS_PER_RESOURCE} per resource and the stacks set "
                             f"{len(STACK_TAG_KEYS)} ({', '.join(STACK_TAG_KEYS)})")
        return value

    @property
    def name_prefix(self) -> str:
        """Prefix of every named AWS resource of this environment."""
        return f"{self.project}-{self.environment}"

    @property
    def backup_bucket(self) -> str:
        """The S3 bucket of DB-01's second backup repository.

        Bucket names are global: the environment's name alone could be anyone's, so a hash of
        the state bucket (already unique and the user's) makes it theirs. Known at synthesis,
        so DB-01's user data stays plain text.
        """
        digest = hashlib.sha256(self.state_bucket.encode()).hexdigest()[:10]
        # At most 21 + 1 + 21 + 8 + 10 = 61 characters: within S3's 63.
        return f"{self.name_prefix}-backup-{digest}"

    @property
    def app_repository_name(self) -> str:
        """The project's ECR repository of the app image, shared by every environment."""
        return f"{self.project}/app"

    def host_names(self, role: str) -> list[str]:
        """The design's host names for a role: LB-01 (and LB-02), APP-1..N, DB-01, NFS-01,
        LOG-01."""
        if role == "app":
            return [f"APP-{index}" for index in range(1, self.app.host_count + 1)]
        if role == "lb":
            return [f"LB-{index:02d}" for index in range(1, self.load_balancer.count + 1)]
        return [f"{role.upper()}-01"]

    @property
    def nat_private_ip(self) -> str:
        """The NAT gateway's fixed address in the public subnet."""
        return str(ipaddress.ip_network(self.network.public_subnet_cidr)[NAT_OFFSET])

    def private_ips(self, role: str) -> list[str]:
        """The fixed private address of each host of a role, in ``host_names`` order."""
        cidr = self.network.public_subnet_cidr if role == "lb" else self.network.private_subnet_cidr
        first = ipaddress.ip_network(cidr)[HOST_OFFSETS[role]]
        return [str(first + index) for index in range(len(self.host_names(role)))]

    def architecture(self, role: str) -> str:
        """``x86_64`` or ``arm64``: what the role's instance type runs, so its AMI matches."""
        return aws_catalog.instance_architecture(getattr(self.instance_types, role))


class _Unchecked(Exception):
    """A field that failed its own check (or its section did): comparisons skip it."""


class _CheckedFields:
    """The values of the fields that passed their own checks, for the checks that compare.

    So that a file with both kinds of mistake is fixed in one round, the comparisons run even
    when some single-field check failed; each skips the comparisons that involve a bad field.
    """

    def __init__(self, document: dict, failed: set[tuple]):
        self._document = document
        self._failed = failed

    def __getitem__(self, dotted: str) -> Any:
        path = tuple(dotted.split("."))
        if any(path[:length] in self._failed for length in range(1, len(path) + 1)):
            raise _Unchecked(dotted)
        value, model = self._document, Settings
        for part in path:
            field = model.model_fields[part]
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif field.is_required():
                raise _Unchecked(dotted)
            else:
                value = field.get_default(call_default_factory=True)
            model = field.annotation
        return value.model_dump() if isinstance(value, BaseModel) else value


def _subnet_problems(fields: _CheckedFields) -> list[str]:
    problems = []
    vpc = ipaddress.ip_network(fields["network.vpc_cidr"])
    for field in ("network.public_subnet_cidr", "network.private_subnet_cidr"):
        if not ipaddress.ip_network(fields[field]).subnet_of(vpc):
            problems.append(f"{field}: {fields[field]} lies outside network.vpc_cidr {vpc}; "
                            "choose a subnet inside the VPC")
    return problems


def _overlap_problems(fields: _CheckedFields) -> list[str]:
    public = ipaddress.ip_network(fields["network.public_subnet_cidr"])
    private = ipaddress.ip_network(fields["network.private_subnet_cidr"])
    if public.overlaps(private):
        return [f"network.private_subnet_cidr: {private} overlaps network.public_subnet_cidr "
                f"{public}; the subnets must not overlap"]
    return []


def _app_fit_problems(fields: _CheckedFields) -> list[str]:
    private = ipaddress.ip_network(fields["network.private_subnet_cidr"])
    count = fields["app.host_count"]
    # AWS keeps the last address of every subnet (and the first four).
    if HOST_OFFSETS["app"] + count > private.num_addresses - 1:
        return [f"app.host_count: {count} APP hosts do not fit in {private}; use a larger "
                "private subnet or fewer hosts"]
    return []


def _zone_problems(fields: _CheckedFields) -> list[str]:
    region, zone = fields["region"], fields["availability_zone"]
    if zone[:-1] != region:
        return [f"availability_zone: {zone!r} is not a zone of region {region}; use e.g. "
                f"{region}a"]
    return []


_CROSS_FIELD_CHECKS = (_subnet_problems, _overlap_problems, _app_fit_problems, _zone_problems)


def _cross_field_problems(fields: _CheckedFields) -> list[str]:
    """Checks that span several fields, each reported against the field to change."""
    problems = []
    for check in _CROSS_FIELD_CHECKS:
        try:
            problems += check(fields)
        except _Unchecked:
            pass
    return problems


def _describe(error: dict) -> str:
    """One line for one pydantic error: the dotted field, then what is wrong and allowed."""
    path = list(error["loc"])
    if path and path[-1] == "[key]":  # a dict key's own check: the key is in the message
        path = path[:-2]
    location = _dotted(path)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(error["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see README"
        guess = _did_you_mean(str(error["loc"][-1]), parent.model_fields) if parent else ""
        return f"{location}: unknown key{guess or '.'} Allowed keys here: {allowed}"
    field = _field_at(error["loc"])
    wanted = f" ({field.description})" if field and field.description else ""
    if kind == "missing":
        return f"{location}: required but missing{wanted}"
    if kind == "model_type":
        return f"{location}: expected a mapping of settings (got {shown(error.get('input'))})"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        message = f"expected {field.description}" if wanted else "is not in the expected form"
    got = error.get("input")
    if kind == "value_error" or isinstance(got, (dict, list)):
        return f"{location}: {message}"
    hint = ""
    if kind.endswith("_type") and isinstance(got, str) and re.fullmatch(
            r"true|false|-?\d+(\.\d+)?", got.lower()):
        hint = "; write it without quotes"
    elif kind == "bool_type":
        hint = "; write true or false"
    elif kind == "string_type" and isinstance(got, (bool, int, float, datetime.date)):
        # YAML 1.1 reads yes/no/on/off as booleans, 2026-01-01 as a date, 1e3 as a number.
        kind_read = ("boolean" if isinstance(got, bool) else "date"
                     if isinstance(got, datetime.date) else "number")
        hint = f"; YAML reads it as a {kind_read}: quote it"
    return f"{location}: {message} (got {shown(got)}{hint})"


def _dotted(path) -> str:
    """A field's path as the file spells it; a key that is not a plain word is quoted, cut."""
    return ".".join(str(part) if re.fullmatch(r"[\w-]{1,40}", str(part)) else shown(part)
                    for part in path)


def _model_at(path: tuple) -> Optional[type[BaseModel]]:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _field_at(path: tuple):
    parent = _model_at(path[:-1]) if path else None
    return parent.model_fields.get(str(path[-1])) if parent else None


class _BaseSixty:
    """An unquoted ``12:30``, which YAML 1.1 reads as a base-60 number (750)."""

    def __init__(self, text: str, value):
        self.text, self.value = text, value


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice is an error, not a silent override,
    and that a base-60 number is kept apart to be reported with the text as typed."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges, then keys override
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.MarkedYAMLError(
                    problem="a key must be a plain value, not a list or a mapping",
                    problem_mark=key_node.start_mark)
            if duplicate:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {shown(key)}",
                                           problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        value = super().construct_yaml_int(node)
        return _BaseSixty(node.value, value) if ":" in node.value else value

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        return _BaseSixty(node.value, value) if ":" in node.value else value


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)


def _base_sixty(document, path=()) -> dict[tuple, _BaseSixty]:
    if isinstance(document, _BaseSixty):
        return {path: document}
    found = {}
    children = document.items() if isinstance(document, dict) else (
        enumerate(document) if isinstance(document, list) else ())
    for key, child in children:
        found.update(_base_sixty(child, (*path, key)))
    return found


def scan_config_dir(config_dir: Path = CONFIG_DIR) -> tuple[list[str], list[str]]:
    """The environment names in ``config_dir``, sorted, and the problems of its files.

    A file that looks meant as an environment but would not be read as one (``staging.yml``,
    ``Prod.yaml``, ``bootstrap.yaml``, a broken link) is a problem: ignoring it silently
    would drop that environment's stack and its roles from the output. Editor leftovers and
    other files are ignored.
    """
    names, problems = [], []
    for path in sorted(config_dir.iterdir()):
        stem, suffix = os.path.splitext(path.name)
        if _EDITOR_FILE.match(path.name) or suffix.lower() not in (".yaml", ".yml"):
            continue
        if suffix != CONFIG_SUFFIX:
            problems.append(f"{path}: environment files end in {CONFIG_SUFFIX}; rename it to "
                            f"{stem}{CONFIG_SUFFIX}, or move it out of the folder")
            continue
        problem = _file_problem(path)
        if problem is None and not ENVIRONMENT_NAME.fullmatch(stem):
            problem = (f"{stem!r} cannot name an environment: rename the file to "
                       f"{_NAME_FORM}, then {CONFIG_SUFFIX}")
        if problem is None and stem in RESERVED_ENVIRONMENT_NAMES:
            problem = (f"{stem!r} is the name of the stack that holds the state bucket and "
                       "the GitHub roles; give the environment another name")
        if problem:
            problems.append(f"{path}: {problem}")
        else:
            names.append(stem)
    return names, problems


def _file_problem(path: Path) -> Optional[str]:
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a loop of symbolic links; point it at a real file"
        if path.is_symlink():
            return (f"a symbolic link to {os.readlink(path)}, which does not exist; fix or "
                    "remove the link")
        return f"cannot be read ({error.strerror})"
    if not path.is_file():
        return "not a regular file; an environment is a YAML file"
    return None


def available_environments(config_dir: Path = CONFIG_DIR) -> list[str]:
    """The environment names that have a usable configuration file, sorted."""
    return scan_config_dir(config_dir)[0]


def load_environment(name: str, config_dir: Path = CONFIG_DIR) -> Settings:
    """Read and validate one environment; raise :class:`ConfigError` listing every problem."""
    settings, _, problems = _read_environment(name, config_dir)
    if problems:
        raise ConfigError(problems)
    return settings


def _read_environment(name: str, config_dir: Path) -> tuple[
        Optional[Settings], Optional[_CheckedFields], list[str]]:
    """The settings (None if any problem), the fields that passed their own checks, and the
    problems, each line prefixed with the file."""
    path = config_dir / f"{name}{CONFIG_SUFFIX}"
    try:
        document = _read_document(name, path, config_dir)
    except ConfigError as error:
        return None, None, error.problems
    problems = []
    base_sixty = _base_sixty(document)
    for where, number in base_sixty.items():
        problems.append(f"{_dotted(where)}: {number.text} is read by YAML as the "
                        f"base-60 number {number.value}; quote it: \"{number.text}\"")
    failed = set(base_sixty)
    settings = None
    try:
        settings = Settings.model_validate(document)
    except ValidationError as error:
        for detail in error.errors():
            location = tuple(detail["loc"])
            if not any(location[:len(where)] == where for where in base_sixty):
                problems.append(_describe(detail))
            failed.add(location)
    fields = _CheckedFields(document, failed)
    problems += _cross_field_problems(fields)
    return (None if problems else settings), fields, [f"{path}: {line}" for line in problems]


def _read_document(name: str, path: Path, config_dir: Path) -> dict:
    if path.is_file() and not ENVIRONMENT_NAME.fullmatch(name):
        raise ConfigError([f"{path}: {name!r} cannot name an environment: rename the file to "
                           f"{_NAME_FORM}, then {CONFIG_SUFFIX}"])
    if name in RESERVED_ENVIRONMENT_NAMES:
        raise ConfigError([f"{path}: {name!r} is the name of the stack that holds the state "
                           "bucket and the GitHub roles; give the environment another name"])
    if not path.is_file():
        problem = _file_problem(path) if path.is_symlink() else None
        if problem:
            raise ConfigError([f"{path}: {problem}"])
        known = ", ".join(available_environments(config_dir)) or "none"
        raise ConfigError([f"{path}: unknown environment {name!r}; known environments: {known}"])
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: cannot be read as UTF-8 text ({error})"])
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise ConfigError([f"{path}: {where}YAML syntax error: {problem}"])
    if not isinstance(document, dict):
        raise ConfigError([f"{path}: expected a mapping of settings at the top level"])
    if document.setdefault("environment", name) != name:
        raise ConfigError([f"{path}: environment: {shown(document['environment'])} does not "
                           f"match the file name; write {name!r} or rename the file"])
    return document


def load_environments(names: list[str], config_dir: Path = CONFIG_DIR) -> list[Settings]:
    """Validate several environments, reporting the problems of all of them together."""
    loaded, checked, problems = [], [], []
    for name in names:
        settings, fields, found = _read_environment(name, config_dir)
        loaded += [settings] if settings else []
        checked += [fields] if fields else []
        problems += found
    problems += _shared_problems(checked)
    if problems:
        raise ConfigError(problems)
    return loaded


def _shared_problems(environments: list[_CheckedFields]) -> list[str]:
    """The bootstrap stack serves every environment: they must agree on what it creates."""
    problems = []
    for field in ("project", "state_bucket", "github_repository", "region",
                  "github_oidc_provider_arn"):
        values = set()
        for fields in environments:
            try:
                values.add(str(fields[field]))
            except _Unchecked:
                pass
        if len(values) > 1:
            problems.append(f"{field}: environments disagree ({', '.join(sorted(values))}); "
                            "the one bootstrap stack needs a single value in every file")
    # IAM scopes an environment by its name prefix (roles, buckets, parameters named
    # <project>-<environment>-*): staging's would then cover staging-eu's resources.
    names = set()
    for fields in environments:
        try:
            names.add(str(fields["environment"]))
        except _Unchecked:
            pass
    for name in sorted(names):
        for other in sorted(names):
            if other.startswith(f"{name}-"):
                problems.append(f"environment: {other!r} starts with {name!r} and a hyphen, so "
                                f"{name}'s permissions (every name {name}-*) would reach it; "
                                "rename one")
    return problems
