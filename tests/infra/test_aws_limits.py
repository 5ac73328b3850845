"""Every name, description and tag the stacks emit, against what AWS accepts.

Terraform and the CDK check none of this: a name one character too long or a description with
a character EC2 refuses passes synthesis and `terraform plan`, then fails the apply halfway.
Where botocore's service models carry the constraint (min, max, pattern on the input shape of
the API call Terraform makes), the limit is read from botocore; the others (EC2 security
groups, S3 bucket names, log retention, SSM parameter names) are AWS's documented rules,
quoted next to each.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import botocore.session
import pytest
# botocore's patterns are Java regular expressions (\p{L} and friends), which `re` lacks.
import regex

_BOTOCORE = botocore.session.get_session()


@dataclass(frozen=True)
class Limit:
    """What AWS accepts for one string or number."""

    source: str
    min_length: int = 0
    max_length: Optional[int] = None
    pattern: Optional[str] = None
    forbidden_prefixes: tuple[str, ...] = ()
    allowed_numbers: Optional[frozenset[int]] = None
    number_range: Optional[tuple[int, int]] = None
    check: Optional[Callable[[str], Optional[str]]] = None

    def problems(self, value) -> Iterator[str]:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            if self.allowed_numbers is not None and value not in self.allowed_numbers:
                yield f"{value} is not one of {sorted(self.allowed_numbers)}"
            if self.number_range and not self.number_range[0] <= value <= self.number_range[1]:
                yield f"{value} is outside {self.number_range[0]}..{self.number_range[1]}"
            return
        text = _literal(value)
        if len(text) < self.min_length:
            yield f"{text!r} is shorter than {self.min_length} characters"
        if self.max_length is not None and len(text) > self.max_length:
            yield f"{text!r} is {len(text)} characters, over {self.max_length}"
        if self.pattern is not None and not regex.fullmatch(self.pattern, text):
            yield f"{text!r} does not match {self.pattern}"
        for prefix in self.forbidden_prefixes:
            if text.lower().startswith(prefix):
                yield f"{text!r} may not start with {prefix!r}"
        if self.check:
            problem = self.check(text)
            if problem:
                yield f"{text!r}: {problem}"


def _literal(value: str) -> str:
    # A Terraform reference inside a name is resolved at apply time; it stands for a short
    # identifier here ("a" passes every character set below).
    return regex.sub(r"\$\{[^}]*\}", "a", value)


def botocore_limit(service: str, operation: str, member: str) -> Limit:
    """The constraint botocore's model puts on one input of one API call."""
    model = _BOTOCORE.get_service_model(service)
    shape = model.operation_model(operation).input_shape.members[member]
    if shape.type_name == "list":
        shape = shape.member
    meta = shape.metadata
    source = f"botocore {service} {operation}.{member} ({shape.name})"
    if shape.type_name in ("integer", "long"):
        return Limit(source, number_range=(meta.get("min", 0), meta.get("max", 2**63)))
    return Limit(source, min_length=meta.get("min", 0), max_length=meta.get("max"),
                 pattern=meta.get("pattern"))


# EC2 CreateSecurityGroup and the rule descriptions (VPC): "Up to 255 characters in length.
# Valid characters: a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*". Group names may not
# start with "sg-". botocore's EC2 model carries no constraint at all.
_EC2_TEXT = r"[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]*"
SECURITY_GROUP_NAME = Limit("EC2 CreateSecurityGroup GroupName (documented)", 1, 255,
                            _EC2_TEXT, forbidden_prefixes=("sg-",))
SECURITY_GROUP_TEXT = Limit("EC2 security group and rule descriptions (documented)", 0, 255,
                            _EC2_TEXT)


def _bucket_name_problem(name: str) -> Optional[str]:
    """S3 general purpose bucket naming rules (documented; botocore carries none)."""
    if not regex.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name):
        return "3-63 lower-case letters, digits, dots, hyphens; a letter or digit at each end"
    if ".." in name or ".-" in name or "-." in name:
        return "no two adjacent dots, and no dot next to a hyphen"
    try:
        ipaddress.ip_address(name)
        return "may not be formatted as an IP address"
    except ValueError:
        pass
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(prefix):
            return f"may not start with {prefix}"
    for suffix in ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"):
        if name.endswith(suffix):
            return f"may not end with {suffix}"
    return None


S3_BUCKET = Limit("S3 bucket naming rules (documented)", check=_bucket_name_problem)
# Terraform's bucket_prefix: it appends 26 characters, and the whole name is a bucket name.
S3_BUCKET_PREFIX = Limit("S3 bucket naming rules, less Terraform's 26-character suffix",
                         1, 37,
                         check=lambda prefix: _bucket_name_problem((prefix + "x" * 26)[:63]))

# Elastic Load Balancing CreateLoadBalancer and CreateTargetGroup names (documented; botocore
# carries no constraint): at most 32 alphanumeric characters or hyphens, not beginning or
# ending with a hyphen; a load balancer's may not begin with "internal-".
_ELB_NAME = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
LOAD_BALANCER_NAME = Limit("ELB CreateLoadBalancer Name (documented)", 1, 32, _ELB_NAME,
                           forbidden_prefixes=("internal-",))
TARGET_GROUP_NAME = Limit("ELB CreateTargetGroup Name (documented)", 1, 32, _ELB_NAME)
# PutRetentionPolicy accepts only these day counts (documented; botocore lists none).
LOG_RETENTION_DAYS = Limit("CloudWatch Logs PutRetentionPolicy (documented)", allowed_numbers=(
    frozenset({1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
               2557, 2922, 3288, 3653})))


def _ssm_parameter_problem(name: str) -> Optional[str]:
    """SSM parameter names (documented): a-zA-Z0-9_.- and '/', at most 15 levels, no 'aws'
    or 'ssm' prefix, fully qualified names start with '/'."""
    if not regex.fullmatch(r"/?[a-zA-Z0-9_.\-/]+", name):
        return "only a-zA-Z0-9_.- and / are allowed"
    if name.count("/") > 15:
        return "more than 15 levels"
    first = name.lstrip("/").split("/")[0].lower()
    if first.startswith(("aws", "ssm")):
        return "may not start with aws or ssm"
    return None


SSM_PARAMETER = Limit("SSM PutParameter Name (botocore max, documented characters)",
                      max_length=botocore_limit("ssm", "PutParameter", "Name").max_length,
                      check=_ssm_parameter_problem)

# SNS CreateTopic Name (documented; botocore carries no constraint): "Up to 256 characters.
# Alphanumeric characters, hyphens (-), and underscores (_)" (.fifo topics aside).
SNS_TOPIC_NAME = Limit("SNS CreateTopic Name (documented)", 1, 256, r"[A-Za-z0-9_\-]+")

# (resource type, attribute) -> what AWS accepts there. Every `name`, `name_prefix` and
# `description` a stack emits must be listed (see test_every_named_attribute_has_a_known_limit).
LIMITS: dict[tuple[str, str], Limit] = {
    ("aws_iam_role", "name"): botocore_limit("iam", "CreateRole", "RoleName"),
    ("aws_iam_role", "path"): botocore_limit("iam", "CreateRole", "Path"),
    ("aws_iam_role", "description"): botocore_limit("iam", "CreateRole", "Description"),
    ("aws_iam_role", "max_session_duration"): botocore_limit(
        "iam", "CreateRole", "MaxSessionDuration"),
    ("aws_iam_instance_profile", "name"): botocore_limit(
        "iam", "CreateInstanceProfile", "InstanceProfileName"),
    ("aws_iam_role_policy", "name"): botocore_limit("iam", "PutRolePolicy", "PolicyName"),
    ("aws_iam_policy", "name"): botocore_limit("iam", "CreatePolicy", "PolicyName"),
    ("aws_iam_policy", "description"): botocore_limit("iam", "CreatePolicy", "Description"),
    ("aws_kms_key", "description"): botocore_limit("kms", "CreateKey", "Description"),
    ("aws_kms_alias", "name"): botocore_limit("kms", "CreateAlias", "AliasName"),
    ("aws_iam_openid_connect_provider", "url"): botocore_limit(
        "iam", "CreateOpenIDConnectProvider", "Url"),
    ("aws_iam_openid_connect_provider", "client_id_list"): botocore_limit(
        "iam", "CreateOpenIDConnectProvider", "ClientIDList"),
    ("aws_security_group", "name"): SECURITY_GROUP_NAME,
    ("aws_security_group", "description"): SECURITY_GROUP_TEXT,
    ("aws_vpc_security_group_ingress_rule", "description"): SECURITY_GROUP_TEXT,
    ("aws_vpc_security_group_egress_rule", "description"): SECURITY_GROUP_TEXT,
    ("aws_cloudwatch_log_group", "name"): botocore_limit("logs", "CreateLogGroup",
                                                         "logGroupName"),
    ("aws_cloudwatch_log_group", "retention_in_days"): LOG_RETENTION_DAYS,
    ("aws_s3_bucket", "bucket"): S3_BUCKET,
    ("aws_s3_bucket", "bucket_prefix"): S3_BUCKET_PREFIX,
    ("aws_lb", "name"): LOAD_BALANCER_NAME,
    ("aws_lb_target_group", "name"): TARGET_GROUP_NAME,
    ("aws_lb_target_group", "port"): botocore_limit("elbv2", "CreateTargetGroup", "Port"),
    ("aws_lb_listener", "port"): botocore_limit("elbv2", "CreateListener", "Port"),
    ("aws_ecr_repository", "name"): botocore_limit("ecr", "CreateRepository",
                                                   "repositoryName"),
    ("aws_ssm_parameter", "name"): SSM_PARAMETER,
    ("aws_ssm_parameter", "description"): botocore_limit("ssm", "PutParameter",
                                                         "Description"),
    ("aws_sns_topic", "name"): SNS_TOPIC_NAME,
    ("aws_cloudwatch_metric_alarm", "alarm_name"): botocore_limit(
        "cloudwatch", "PutMetricAlarm", "AlarmName"),
    ("aws_cloudwatch_metric_alarm", "alarm_description"): botocore_limit(
        "cloudwatch", "PutMetricAlarm", "AlarmDescription"),
}
NAMED_ATTRIBUTES = ("name", "name_prefix", "description", "bucket_prefix")
# Nested blocks whose numbers AWS bounds: (resource type, block) -> attribute -> limit.
_HEALTH_CHECK = {attribute: botocore_limit("elbv2", "CreateTargetGroup", member)
                 for attribute, member in (("interval", "HealthCheckIntervalSeconds"),
                                           ("timeout", "HealthCheckTimeoutSeconds"),
                                           ("healthy_threshold", "HealthyThresholdCount"),
                                           ("unhealthy_threshold", "UnhealthyThresholdCount"),
                                           ("path", "HealthCheckPath"))}
NESTED_LIMITS = {("aws_lb_target_group", "health_check"): _HEALTH_CHECK}
# Target group attributes (documented): deregistration_delay.timeout_seconds is 0 to 3600.
DEREGISTRATION_DELAY = Limit("ELB target group attribute deregistration_delay (documented)",
                             number_range=(0, 3600))

# Tags: IAM's tag shapes carry AWS's common tag rules (EC2's documented rules are the same:
# letters, digits, spaces and + - = . _ : / @; keys up to 128, values up to 256); the "aws:"
# prefix is reserved for AWS.
TAG_KEY = Limit("tag key: botocore iam tagKeyType, 'aws:' reserved",
                *[getattr(botocore_limit("iam", "UntagRole", "TagKeys"), field)
                  for field in ("min_length", "max_length", "pattern")],
                forbidden_prefixes=("aws:",))
_TAG_VALUE_SHAPE = _BOTOCORE.get_service_model("iam").shape_for("tagValueType").metadata
TAG_VALUE = Limit("tag value: botocore iam tagValueType", _TAG_VALUE_SHAPE.get("min", 0),
                  _TAG_VALUE_SHAPE["max"], _TAG_VALUE_SHAPE["pattern"])


def violations(stack: dict) -> list[str]:
    """One line per value of ``stack`` (Terraform JSON) that AWS would refuse."""
    found = []

    def check(where: str, limit: Limit, value) -> None:
        values = value if isinstance(value, list) else [value]
        for item in values:
            found.extend(f"{where}: {problem} [{limit.source}]"
                         for problem in limit.problems(item))

    def check_tags(where: str, tags: dict) -> None:
        if not isinstance(tags, dict):
            return
        for key, value in tags.items():
            check(f"{where} tag key", TAG_KEY, key)
            check(f"{where} tag {key}", TAG_VALUE, value)

    for kind, items in stack.get("resource", {}).items():
        for name, resource in items.items():
            where = f"{kind}.{name}"
            for (limited_kind, attribute), limit in LIMITS.items():
                if limited_kind == kind and attribute in resource:
                    check(f"{where}.{attribute}", limit, resource[attribute])
            for (limited_kind, block), limits in NESTED_LIMITS.items():
                if limited_kind == kind and isinstance(resource.get(block), dict):
                    for attribute, limit in limits.items():
                        if attribute in resource[block]:
                            check(f"{where}.{block}.{attribute}", limit,
                                  resource[block][attribute])
            if kind == "aws_lb_target_group" and "deregistration_delay" in resource:
                check(f"{where}.deregistration_delay", DEREGISTRATION_DELAY,
                      int(resource["deregistration_delay"]))
            check_tags(where, resource.get("tags"))
    for provider in stack.get("provider", {}).get("aws", []):
        for block in provider.get("default_tags", []):
            check_tags("provider default_tags", block.get("tags"))
    for name, document in stack.get("data", {}).get("aws_iam_policy_document", {}).items():
        for statement in document.get("statement", []):
            for arn in statement.get("resources", []):
                if isinstance(arn, str) and ":parameter/" in arn:
                    parameter = arn.split(":parameter", 1)[1].removesuffix("/*")
                    check(f"data.aws_iam_policy_document.{name} SSM parameter",
                          SSM_PARAMETER, parameter)
    return found


def named_attributes_without_a_limit(stack: dict) -> set[tuple[str, str]]:
    return {(kind, attribute)
            for kind, items in stack.get("resource", {}).items()
            for resource in items.values()
            for attribute in NAMED_ATTRIBUTES
            if attribute in resource and (kind, attribute) not in LIMITS}


def every_stack(cdktf_out: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text())
            for path in sorted((cdktf_out / "stacks").glob("*/cdk.tf.json"))}


def test_aws_accepts_every_name_description_and_tag_of_every_stack(cdktf_out):
    stacks = every_stack(cdktf_out)
    assert set(stacks) >= {"bootstrap", "production", "staging"}
    problems = [f"{stack}: {problem}" for stack, document in stacks.items()
                for problem in violations(document)]
    assert problems == []


def test_every_named_attribute_has_a_known_limit(cdktf_out):
    """A new kind of resource with a name or description gets its AWS limit above."""
    missing = set().union(*(named_attributes_without_a_limit(document)
                            for document in every_stack(cdktf_out).values()))
    assert missing == set()


def test_the_checks_cover_every_kind_of_value_they_claim(cdktf_out):
    """The walk really reaches rule descriptions, role names, tags and parameter names."""
    stacks = every_stack(cdktf_out)
    kinds = {kind for document in stacks.values() for kind in document.get("resource", {})}
    assert {"aws_iam_role", "aws_iam_instance_profile", "aws_iam_role_policy",
            "aws_security_group", "aws_vpc_security_group_ingress_rule",
            "aws_cloudwatch_log_group", "aws_s3_bucket", "aws_lb", "aws_lb_target_group",
            "aws_lb_listener"} <= kinds
    tagged = sum(1 for document in stacks.values() for items in document["resource"].values()
                 for resource in items.values() if resource.get("tags"))
    assert tagged > 20


@pytest.mark.parametrize("kind, attribute, value, expected", [
    ("aws_vpc_security_group_ingress_rule", "description",
     "Kibana from the administrators' network", "does not match"),
    ("aws_security_group", "description", "x" * 256, "over 255"),
    ("aws_security_group", "name", "sg-app", "may not start with 'sg-'"),
    ("aws_iam_role", "name", "r" * 65, "over 64"),
    ("aws_iam_role", "name", "app role", "does not match"),
    ("aws_iam_instance_profile", "name", "p" * 129, "over 128"),
    ("aws_iam_role_policy", "name", "p" * 129, "over 128"),
    ("aws_iam_role", "max_session_duration", 43201, "outside 3600..43200"),
    ("aws_cloudwatch_log_group", "name", "/vpc/flow logs", "does not match"),
    ("aws_cloudwatch_log_group", "retention_in_days", 10, "is not one of"),
    ("aws_s3_bucket", "bucket", "My_Bucket", "lower-case"),
    ("aws_s3_bucket", "bucket", "192.168.1.10", "IP address"),
    ("aws_ecr_repository", "name", "Web/App", "does not match"),
    ("aws_lb", "name", "nlb-" + "x" * 29, "over 32"),
    ("aws_lb", "name", "internal-webapp", "may not start with 'internal-'"),
    ("aws_lb", "name", "nlb_webapp", "does not match"),
    ("aws_lb", "name", "nlb-webapp-", "does not match"),
    ("aws_lb_target_group", "name", "t" * 33, "over 32"),
    ("aws_lb_target_group", "name", "-tcp80", "does not match"),
    ("aws_lb_target_group", "port", 70000, "outside 1..65535"),
    ("aws_s3_bucket", "bucket_prefix", "p" * 38, "over 37"),
    ("aws_s3_bucket", "bucket_prefix", "Certs-", "lower-case"),
    ("aws_lb_target_group", "health_check", {"interval": 4}, "outside 5..300"),
    ("aws_lb_target_group", "health_check", {"unhealthy_threshold": 1}, "outside 2..10"),
    ("aws_lb_target_group", "health_check", {"timeout": 1}, "outside 2..120"),
    ("aws_lb_target_group", "deregistration_delay", "3601", "outside 0..3600"),
])
def test_the_checks_refuse_what_aws_refuses(kind, attribute, value, expected):
    stack = {"resource": {kind: {"example": {attribute: value}}}}
    (problem,) = violations(stack)
    assert expected in problem


@pytest.mark.parametrize("tags, expected", [
    ({"k" * 129: "v"}, "over 128"),
    ({"Name": "v" * 257}, "over 256"),
    ({"Owner": "ops<team>"}, "does not match"),
    ({"aws:owner": "ops"}, "may not start with 'aws:'"),
])
def test_tag_checks_refuse_what_aws_refuses(tags, expected):
    stack = {"resource": {"aws_instance": {"example": {"tags": tags}}},
             "provider": {"aws": [{"default_tags": [{"tags": tags}]}]}}
    problems = violations(stack)
    assert len(problems) == 2 and all(expected in p for p in problems)


def test_ssm_parameter_names_in_policies_are_checked():
    stack = {"data": {"aws_iam_policy_document": {"p": {"statement": [{"resources": [
        "arn:aws:ssm:eu-west-1:*:parameter/webapp/prod/db password",
        "arn:aws:ssm:eu-west-1:*:parameter/aws/reserved",
        "arn:aws:ssm:eu-west-1:*:parameter/webapp/prod/logs/*"]}]}}}}
    problems = violations(stack)
    assert len(problems) == 2
    assert "only a-zA-Z0-9_.-" in problems[0] and "aws or ssm" in problems[1]


@pytest.mark.parametrize("prefix", ["webapp-production", "p" * 21 + "-" + "e" * 21,
                                    "internal-staging", "a1-b2"])
def test_load_balancer_names_fit_elb_for_every_valid_project_and_environment(prefix):
    """The longest project and environment names (21 + 21) still give names AWS accepts."""
    from modules.load_balancer import elb_name

    names = {kind: elb_name(kind, prefix) for kind in ("nlb", "tcp80", "tcp443")}
    stack = {"resource": {"aws_lb": {"b": {"name": names["nlb"]}}, "aws_lb_target_group": {
        "h": {"name": names["tcp80"]}, "s": {"name": names["tcp443"]}}}}
    assert violations(stack) == []
    assert len(set(names.values())) == 3
