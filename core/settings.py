"""The validated configuration of one environment, read from ``config/<environment>.yaml``.

Everything the stacks build comes from here, and everything here is checked before a single
construct exists: a bad file is reported as one line per problem (field, what is wrong, what is
allowed) through :class:`ConfigError`, never as a traceback from deep inside the CDK.

This module imports neither the CDK nor the provider, so validation costs milliseconds.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

# Ports fixed by the design; they are not configuration.
HTTP_PORT = 80
HTTPS_PORT = 443
APP_PORT = 5000
# The health agent on each APP host answers Caddy's active health check. It is the one port
# added to the seed's table: a host leaves the load balancer by failing this check on purpose
# (its drain switch), with no Caddy configuration change.
HEALTH_AGENT_PORT = 5001
POSTGRES_PORT = 5432
NFS_PORT = 2049
ELASTICSEARCH_PORT = 9200
KIBANA_PORT = 5601

ROLES = ("lb", "app", "db", "nfs", "log")

# Private addresses are fixed per role (an offset into the host's subnet). Knowing them at
# synthesis keeps every host's configuration free of cross-references: no dependency cycle
# between DB-01 (mounts NFS-01) and NFS-01 (exports to DB-01), and Caddy's upstream list is
# plain text.
HOST_OFFSETS = {"lb": 10, "db": 10, "nfs": 11, "log": 12, "app": 20}
# The public subnet's .10-.19 are kept for the load balancers. The NAT gateway's address is
# pinned below them: left to AWS, it could take a load balancer's fixed address first.
NAT_OFFSET = 5
MAX_APP_HOSTS = 50

ENVIRONMENT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
_NAME = r"^[a-z][a-z0-9-]{1,20}$"
_REGION = r"^[a-z]{2}(-gov)?-[a-z]+-\d$"
_INSTANCE_TYPE = r"^[a-z][a-z0-9-]*\.[a-z0-9]+$"
_HOSTNAME = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
_GITHUB_REPOSITORY = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$"
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_IMAGE = r"^[a-z0-9][a-z0-9._/:-]*(:[A-Za-z0-9._-]{1,128}|@sha256:[a-f0-9]{64})$"
_TAG_KEY = r"^[A-Za-z0-9 _.:/=+@-]{1,128}$"
_OIDC_PROVIDER_ARN = (r"^arn:aws(-[a-z]+)*:iam::\d{12}:"
                      r"oidc-provider/token\.actions\.githubusercontent\.com$")
_NAME_FORM = "2-21 lower-case letters, digits or hyphens, starting with a letter"
_TYPE_FORM = "an EC2 instance type such as t3.micro"


class ConfigError(Exception):
    """A configuration that cannot be built; ``problems`` holds one line per mistake."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    # strict: YAML's "5" is not the number 5; frozen: the stacks only read.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f"{value!r} is not a network in CIDR form such as 10.0.0.0/16")
    if network.version != 4:
        raise ValueError(f"{value!r} is not an IPv4 network; the VPC is IPv4 only")
    return value


Cidr = Annotated[str, Field(description="An IPv4 network in CIDR form")]


class NetworkSettings(_Section):
    """Addresses of the VPC and its two subnets, and how private hosts reach out."""

    vpc_cidr: Cidr = "10.0.0.0/16"
    public_subnet_cidr: Cidr = "10.0.1.0/24"
    private_subnet_cidr: Cidr = "10.0.2.0/24"
    # Private hosts need a way out for packages, container images and SSM. Without NAT they
    # need VPC endpoints and a package mirror, which this project does not create.
    nat_gateway: bool = True
    flow_log_retention_days: int = Field(default=365, ge=1, le=3653)

    _check_cidrs = field_validator(
        "vpc_cidr", "public_subnet_cidr", "private_subnet_cidr")(_cidr)


class InstanceTypes(_Section):
    """EC2 instance type per role; the defaults are the seed's sizes."""

    lb: str = Field(default="t3.micro", pattern=_INSTANCE_TYPE, description=_TYPE_FORM)
    app: str = Field(default="t3.micro", pattern=_INSTANCE_TYPE, description=_TYPE_FORM)
    db: str = Field(default="t3.small", pattern=_INSTANCE_TYPE, description=_TYPE_FORM)
    nfs: str = Field(default="t3.micro", pattern=_INSTANCE_TYPE, description=_TYPE_FORM)
    log: str = Field(default="t3.medium", pattern=_INSTANCE_TYPE, description=_TYPE_FORM)


class AppSettings(_Section):
    """The application fleet: how many APP hosts and which container image they run."""

    host_count: int = Field(ge=1, le=MAX_APP_HOSTS)
    # What a new APP host starts at first boot. null: nothing until the pipeline's rolling
    # update deploys the image it built into the project's ECR repository. An image of
    # another registry must be pullable without credentials (hosts hold none).
    image: Optional[str] = Field(default=None, pattern=_IMAGE, description="an image with a "
                                 "tag or digest, e.g. ghcr.io/org/app:1.4.2, or null")


class NfsSettings(_Section):
    """The backup store on NFS-01."""

    volume_size_gb: int = Field(default=50, ge=1, le=16384)


class BackupSettings(_Section):
    """The daily PostgreSQL backup taken on DB-01 and written to NFS-01."""

    retention_days: int = Field(default=14, ge=1, le=3650)
    # systemd OnCalendar time of day, UTC.
    time: str = Field(default="03:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                      description="HH:MM, 24-hour clock, UTC")


class LogSettings(_Section):
    """Elasticsearch on LOG-01."""

    retention_days: int = Field(default=30, ge=1, le=3650)


class Settings(_Section):
    """One environment: everything ``config/<environment>.yaml`` may say."""

    environment: str = Field(pattern=_NAME, description=_NAME_FORM)
    project: str = Field(default="webapp", pattern=_NAME, description=_NAME_FORM)
    region: str = Field(pattern=_REGION, description="an AWS region such as eu-west-1")
    availability_zone: str
    admin_cidr: Cidr
    domain: Optional[str] = Field(default=None, max_length=253, pattern=_HOSTNAME,
                                  description="a lower-case DNS name such as "
                                  "app.example.com, or null for plain HTTP")
    acme_email: Optional[str] = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$",
                                      description="an e-mail address, or null")
    github_repository: str = Field(pattern=_GITHUB_REPOSITORY, description="owner/name")
    # An account holds one OIDC provider per issuer: if GitHub's exists already (made by
    # another project), the bootstrap stack uses it instead of failing to create a second.
    github_oidc_provider_arn: Optional[str] = Field(
        default=None, pattern=_OIDC_PROVIDER_ARN,
        description="the ARN of the account's GitHub OIDC provider, arn:aws:iam::<account "
        "id>:oidc-provider/token.actions.githubusercontent.com, or null to create it")
    state_bucket: str = Field(pattern=_BUCKET, description="an S3 bucket name: lower-case "
                              "letters, digits, dots and hyphens")
    # Refuse `terraform destroy` and API termination of the hosts that hold data.
    protect_data: bool = True
    network: NetworkSettings = NetworkSettings()
    instance_types: InstanceTypes = InstanceTypes()
    app: AppSettings
    nfs: NfsSettings = NfsSettings()
    backups: BackupSettings = BackupSettings()
    logs: LogSettings = LogSettings()
    tags: dict[Annotated[str, Field(pattern=_TAG_KEY)], Annotated[str, Field(max_length=256)]] = {}

    _check_admin_cidr = field_validator("admin_cidr")(_cidr)

    @property
    def name_prefix(self) -> str:
        """Prefix of every named AWS resource of this environment."""
        return f"{self.project}-{self.environment}"

    @property
    def app_repository_name(self) -> str:
        """The project's ECR repository of the app image, shared by every environment."""
        return f"{self.project}/app"

    def host_names(self, role: str) -> list[str]:
        """The design's host names for a role: LB-01, APP-1..N, DB-01, NFS-01, LOG-01."""
        if role == "app":
            return [f"APP-{index}" for index in range(1, self.app.host_count + 1)]
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


def _cross_field_problems(settings: Settings) -> list[str]:
    """Checks that span several fields, each reported against the field to change."""
    problems = []
    net = settings.network
    vpc = ipaddress.ip_network(net.vpc_cidr)
    subnets = {"network.public_subnet_cidr": net.public_subnet_cidr,
               "network.private_subnet_cidr": net.private_subnet_cidr}
    for field, cidr in subnets.items():
        if not ipaddress.ip_network(cidr).subnet_of(vpc):
            problems.append(f"{field}: {cidr} lies outside network.vpc_cidr {net.vpc_cidr}; "
                            "choose a subnet inside the VPC")
    public, private = (ipaddress.ip_network(c) for c in subnets.values())
    if public.overlaps(private):
        problems.append(f"network.private_subnet_cidr: {private} overlaps "
                        f"network.public_subnet_cidr {public}; the subnets must not overlap")
    for field, network in (("network.public_subnet_cidr", public),
                           ("network.private_subnet_cidr", private)):
        if network.prefixlen > 26:
            problems.append(f"{field}: {network} is too small; use a /26 or larger")
    last_app = HOST_OFFSETS["app"] + settings.app.host_count
    if not problems and last_app > private.num_addresses - 2:
        problems.append(f"app.host_count: {settings.app.host_count} APP hosts do not fit in "
                        f"{private}; use a larger private subnet or fewer hosts")
    if ipaddress.ip_network(settings.admin_cidr).prefixlen == 0:
        problems.append("admin_cidr: 0.0.0.0/0 would open Kibana to the whole internet; "
                        "name your office or VPN range")
    if not settings.availability_zone.startswith(settings.region) or not re.fullmatch(
            r"[a-z]", settings.availability_zone[len(settings.region):]):
        problems.append(f"availability_zone: {settings.availability_zone!r} is not a zone of "
                        f"region {settings.region}; use e.g. {settings.region}a")
    return problems


def _describe(error: dict) -> str:
    """One line for one pydantic error: the dotted field, then what is wrong and allowed."""
    location = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(error["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see README"
        return f"{location}: unknown key; allowed keys here: {allowed}"
    if kind == "missing":
        return f"{location}: required but missing"
    if kind == "model_type":
        return f"{location}: expected a mapping of settings (got {error.get('input')!r})"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        parent = _model_at(error["loc"][:-1])
        field = parent.model_fields.get(str(error["loc"][-1])) if parent else None
        message = f"expected {field.description}" if field and field.description else (
            "is not in the expected form")
    got = error.get("input")
    shown = "" if kind == "value_error" or isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"{location}: {message}{shown}"


def _model_at(path: tuple) -> Optional[type[BaseModel]]:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice is an error, not a silent override."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}",
                                           problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def available_environments(config_dir: Path = CONFIG_DIR) -> list[str]:
    """The environment names that have a configuration file, sorted."""
    return sorted(path.stem for path in config_dir.glob("*.yaml"))


def load_environment(name: str, config_dir: Path = CONFIG_DIR) -> Settings:
    """Read and validate one environment; raise :class:`ConfigError` listing every problem."""
    path = config_dir / f"{name}.yaml"
    if path.is_file() and not ENVIRONMENT_NAME.fullmatch(name):
        raise ConfigError([f"{path}: {name!r} cannot name an environment: rename the file to "
                           f"{_NAME_FORM}, then .yaml"])
    if not path.is_file():
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
        raise ConfigError([f"{path}: environment: {document['environment']!r} does not match "
                           f"the file name; write {name!r} or rename the file"])
    try:
        settings = Settings.model_validate(document)
    except ValidationError as error:
        raise ConfigError([f"{path}: {_describe(e)}" for e in error.errors()])
    problems = _cross_field_problems(settings)
    if problems:
        raise ConfigError([f"{path}: {problem}" for problem in problems])
    return settings


def load_environments(names: list[str], config_dir: Path = CONFIG_DIR) -> list[Settings]:
    """Validate several environments, reporting the problems of all of them together."""
    loaded, problems = [], []
    for name in names:
        try:
            loaded.append(load_environment(name, config_dir))
        except ConfigError as error:
            problems.extend(error.problems)
    if not problems:
        problems = _shared_problems(loaded)
    if problems:
        raise ConfigError(problems)
    return loaded


def _shared_problems(environments: list[Settings]) -> list[str]:
    """The bootstrap stack serves every environment: they must agree on what it creates."""
    problems = []
    for field in ("project", "state_bucket", "github_repository", "region",
                  "github_oidc_provider_arn"):
        values = {str(getattr(env, field)) for env in environments}
        if len(values) > 1:
            problems.append(f"{field}: environments disagree ({', '.join(sorted(values))}); "
                            "the one bootstrap stack needs a single value in every file")
    return problems
