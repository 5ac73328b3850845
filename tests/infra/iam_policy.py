"""A small IAM policy evaluator for the synthesized stacks, following AWS's documented logic.

An explicit Deny in any policy wins; otherwise an identity policy must Allow, a permissions
boundary (when the role has one) must Allow too, and a KMS key is used only if its key policy
allows the role itself, or allows the account and an identity policy allows the role. Action
and resource patterns use IAM's ``*`` and ``?`` wildcards (actions case-insensitive).
Conditions support exactly the operators the stacks use; any other operator raises instead of
passing, so a new condition cannot make a test green by accident.

Terraform references (``${aws_iam_role.x.arn}``) are resolved to the ARNs AWS would give the
resources in a test account; an unknown kind of reference raises.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ACCOUNT = "111122223333"
REGION = "eu-west-1"
MANAGED_POLICIES = Path(__file__).parent / "fixtures" / "aws-managed-policies"
AWS_MANAGED_PREFIX = "arn:aws:iam::aws:policy/"


# ---------------------------------------------------------------------------- statements

@dataclass(frozen=True)
class Statement:
    """One statement, in IAM's terms, with every reference resolved."""

    effect: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    sid: str = ""
    # A trust or key policy statement: it names principals, and may omit the resource.
    in_resource_policy: bool = False

    def __post_init__(self):
        if self.effect not in ("Allow", "Deny"):
            raise ValueError(f"effect {self.effect!r}")
        if bool(self.actions) == bool(self.not_actions):
            raise ValueError(f"statement {self.sid!r}: exactly one of Action/NotAction")
        if bool(self.resources) == bool(self.not_resources) and not self.in_resource_policy:
            raise ValueError(f"statement {self.sid!r}: exactly one of Resource/NotResource")

    def to_json(self) -> dict:
        """As aws_iam_policy_document renders it: a single value is a string, not a list."""
        def one_or_list(values):
            return values[0] if len(values) == 1 else list(values)
        document: dict = {"Effect": self.effect}
        if self.sid:
            document["Sid"] = self.sid
        for key, values in (("Action", self.actions), ("NotAction", self.not_actions),
                            ("Resource", self.resources),
                            ("NotResource", self.not_resources)):
            if values:
                document[key] = one_or_list(values)
        if self.principals:
            document["Principal"] = {"AWS": one_or_list(self.principals)}
        if self.conditions:
            condition: dict = {}
            for operator, key, values in self.conditions:
                condition.setdefault(operator, {})[key] = one_or_list(values)
            document["Condition"] = condition
        return document


def policy_json(statements: list[Statement]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [s.to_json() for s in statements]})


def _as_tuple(value) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def from_iam_json(document: dict) -> list[Statement]:
    """Statements of a policy in IAM's JSON (a managed policy)."""
    statements = document["Statement"]
    if isinstance(statements, dict):
        statements = [statements]
    result = []
    for raw in statements:
        conditions = tuple((operator, key, _as_tuple(values))
                           for operator, block in raw.get("Condition", {}).items()
                           for key, values in block.items())
        principal = raw.get("Principal", {})
        result.append(Statement(
            effect=raw["Effect"], sid=raw.get("Sid", ""),
            actions=_as_tuple(raw.get("Action")), not_actions=_as_tuple(raw.get("NotAction")),
            resources=_as_tuple(raw.get("Resource")),
            not_resources=_as_tuple(raw.get("NotResource")),
            principals=_as_tuple(principal.get("AWS") if isinstance(principal, dict)
                                 else principal),
            conditions=conditions, in_resource_policy="Principal" in raw))
    return result


def managed_policy(arn: str) -> list[Statement]:
    """The vendored content of an AWS managed policy; a policy not vendored raises."""
    if not arn.startswith(AWS_MANAGED_PREFIX):
        raise KeyError(f"{arn} is not an AWS managed policy")
    path = MANAGED_POLICIES / f"{arn.removeprefix(AWS_MANAGED_PREFIX)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{arn} is attached but not vendored in {MANAGED_POLICIES}")
    version = json.loads(path.read_text())["PolicyVersion"]
    assert version["CreateDate"] and version["VersionId"], path
    return from_iam_json(version["Document"])


# ---------------------------------------------------------------------------- matching

def _pattern(text: str, case_sensitive: bool) -> re.Pattern:
    expression = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(f"^{expression}$", 0 if case_sensitive else re.IGNORECASE | re.DOTALL)


def matches(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    return bool(_pattern(pattern, case_sensitive).match(value))


def _condition_holds(operator: str, key: str, values: tuple[str, ...], context: dict) -> bool:
    present = {k.lower(): v for k, v in context.items()}
    actual = present.get(key.lower())
    actual_values = () if actual is None else _as_tuple(actual)
    if operator == "Null":
        (expected,) = values
        return (actual is None) == (expected == "true")
    if operator == "StringEquals":
        return any(a == v for a in actual_values for v in values)
    if operator == "StringNotEquals":
        # A key that is absent is "not equal": the negated operators match it (AWS's docs).
        return not any(a == v for a in actual_values for v in values)
    if operator == "StringLike":
        return any(matches(v, a) for a in actual_values for v in values)
    if operator in ("ArnLike", "ArnEquals"):
        # AWS matches both the same way: wildcards allowed in each part of the ARN.
        return any(matches(v, a) for a in actual_values for v in values)
    if operator == "ArnNotEquals":
        return not any(matches(v, a) for a in actual_values for v in values)
    if operator == "BoolIfExists":
        # IfExists: an absent key makes the condition true; a present one compares as Bool,
        # whose values AWS reads case-insensitively.
        if actual is None:
            return True
        return any(a.lower() == v.lower() for a in actual_values for v in values)
    raise NotImplementedError(f"condition operator {operator} is not modelled; add it with "
                              "AWS's documented semantics before using it")


@dataclass(frozen=True)
class Request:
    """One API call: who asks is given to :func:`decide`; this is what is asked."""

    action: str
    resource: str
    context: dict = field(default_factory=dict)


def applies(statement: Statement, request: Request, principal: Optional[str] = None) -> bool:
    if statement.actions:
        action_hit = any(matches(a, request.action, case_sensitive=False)
                         for a in statement.actions)
    else:
        action_hit = not any(matches(a, request.action, case_sensitive=False)
                             for a in statement.not_actions)
    if not action_hit:
        return False
    if statement.resources:
        resource_hit = any(matches(r, request.resource) for r in statement.resources)
    elif statement.not_resources:
        resource_hit = not any(matches(r, request.resource) for r in statement.not_resources)
    else:
        resource_hit = True
    if not resource_hit:
        return False
    if principal is not None and not any(matches(p, principal) for p in statement.principals):
        return False
    return all(_condition_holds(op, key, values, request.context)
               for op, key, values in statement.conditions)


@dataclass
class Principal:
    """A role: its ARN, its identity policies' statements and its permissions boundary."""

    arn: str
    identity: list[Statement]
    boundary: Optional[list[Statement]] = None


def decide(principal: Principal, request: Request,
           key_policy: Optional[list[Statement]] = None) -> bool:
    """Whether ``principal`` may make ``request``. ``key_policy``: the KMS key's, for a kms:
    action on a key. On an alias, or on a key being created (resource ``*``), IAM alone
    decides: AWS consults no key policy there."""
    policies = [principal.identity, principal.boundary or [], key_policy or []]
    for statements in policies[:2]:
        if any(s.effect == "Deny" and applies(s, request) for s in statements):
            return False
    if key_policy is not None and any(s.effect == "Deny" and applies(s, request, principal.arn)
                                      for s in key_policy):
        return False
    identity = any(s.effect == "Allow" and applies(s, request) for s in principal.identity)
    boundary = principal.boundary is None or any(
        s.effect == "Allow" and applies(s, request) for s in principal.boundary)
    if request.action.lower().startswith("kms:") and ":key/" in request.resource:
        if key_policy is None:
            raise ValueError("a KMS request needs the key's policy")
        direct = any(s.effect == "Allow" and applies(s, request, principal.arn)
                     for s in key_policy)
        account = any(s.effect == "Allow" and applies(s, request, f"arn:aws:iam::{ACCOUNT}:root")
                      for s in key_policy)
        return boundary and (direct or (account and identity))
    return identity and boundary


# ---------------------------------------------------------------------------- stacks

def bucket_name(block: dict) -> str:
    """An aws_s3_bucket's name; from ``bucket_prefix``, as Terraform completes it (26 more
    characters)."""
    return block.get("bucket") or f"{block['bucket_prefix']}20261202004400000000000001"


class Stacks:
    """Every synthesized stack, with references resolved to test-account ARNs."""

    def __init__(self, stacks: dict[str, dict]):
        self.stacks = stacks

    def resource(self, stack: str, kind: str, key: str) -> dict:
        return self.stacks[stack]["resource"][kind][key]

    def tags(self, stack: str, kind: str, key: str) -> dict:
        """A resource's tags as AWS holds them: the provider's default tags, then its own."""
        tags: dict = {}
        for provider in self.stacks[stack]["provider"]["aws"]:
            for block in provider.get("default_tags", ()):
                tags.update(block.get("tags", {}))
        tags.update(self.resource(stack, kind, key).get("tags") or {})
        return tags

    def resolve(self, stack: str, text: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: self._reference(stack, m.group(1)), text)

    def _reference(self, stack: str, reference: str) -> str:
        parts = reference.split(".")
        data = parts[0] == "data"
        kind, key, attribute = parts[1:4] if data else parts[:3]
        block = self.stacks[stack]["data" if data else "resource"][kind][key]
        if kind == "aws_caller_identity" and attribute == "account_id":
            return ACCOUNT
        if kind == "aws_iam_role" and attribute in ("arn", "id", "name"):
            return (f"arn:aws:iam::{ACCOUNT}:role/{block['name']}" if attribute == "arn"
                    else block["name"])
        if kind == "aws_iam_policy" and attribute == "arn":
            return f"arn:aws:iam::{ACCOUNT}:policy/{block['name']}"
        if kind == "aws_kms_key" and attribute == "arn":
            return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{stack}-{key}"
        if kind == "aws_s3_bucket" and attribute in ("arn", "id", "bucket"):
            name = bucket_name(block)
            return f"arn:aws:s3:::{name}" if attribute == "arn" else name
        if kind == "aws_ecr_repository" and attribute == "arn":
            return f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{block['name']}"
        if kind == "aws_cloudwatch_log_group" and attribute == "arn":
            return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{block['name']}"
        if kind == "aws_iam_openid_connect_provider" and attribute == "arn":
            return f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
        raise KeyError(f"the evaluator does not resolve ${{{reference}}}: add it")

    def document(self, stack: str, reference: str) -> list[Statement]:
        """The statements of ``${data.aws_iam_policy_document.KEY.json}``."""
        match = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.([^.]+)\.json\}", reference)
        if not match:
            raise ValueError(f"not a policy document reference: {reference}")
        raw = self.stacks[stack]["data"]["aws_iam_policy_document"][match.group(1)]
        return [self._statement(stack, s) for s in raw["statement"]]

    def _statement(self, stack: str, raw: dict) -> Statement:
        unknown = set(raw) - {"sid", "effect", "actions", "not_actions", "resources",
                              "not_resources", "principals", "condition"}
        if unknown:
            raise ValueError(f"statement keys not modelled: {unknown}")

        def values(key):
            return tuple(self.resolve(stack, v) for v in raw.get(key, ()))
        principals = tuple(self.resolve(stack, identifier)
                           for block in raw.get("principals", ()) if block["type"] == "AWS"
                           for identifier in block["identifiers"])
        conditions = tuple((c["test"], c["variable"],
                            tuple(self.resolve(stack, v) for v in c["values"]))
                           for c in raw.get("condition", ()))
        return Statement(effect=raw.get("effect", "Allow"), sid=raw.get("sid", ""),
                         actions=values("actions"), not_actions=values("not_actions"),
                         resources=values("resources"), not_resources=values("not_resources"),
                         principals=principals, conditions=conditions,
                         in_resource_policy="principals" in raw)

    def all_documents(self):
        """(stack, key, statements) of every policy document, trust policies included."""
        for stack, content in self.stacks.items():
            for key in content.get("data", {}).get("aws_iam_policy_document", {}):
                yield stack, key, self.document(
                    stack, f"${{data.aws_iam_policy_document.{key}.json}}")

    def roles(self) -> dict[str, Principal]:
        """Every IAM role of every stack, by name, with its policies and boundary."""
        found: dict[str, Principal] = {}
        for stack, content in self.stacks.items():
            for role in content.get("resource", {}).get("aws_iam_role", {}).values():
                boundary = None
                if role.get("permissions_boundary"):
                    boundary = self.customer_policy(
                        self.resolve(stack, role["permissions_boundary"]))
                found[role["name"]] = Principal(
                    arn=f"arn:aws:iam::{ACCOUNT}:role/{role['name']}", identity=[],
                    boundary=boundary)
            resources = content.get("resource", {})
            for policy in resources.get("aws_iam_role_policy", {}).values():
                name = self.resolve(stack, policy["role"]).rsplit("/", 1)[-1]
                found[name].identity += self.document(stack, policy["policy"])
            for attachment in resources.get("aws_iam_role_policy_attachment", {}).values():
                name = self.resolve(stack, attachment["role"]).rsplit("/", 1)[-1]
                arn = self.resolve(stack, attachment["policy_arn"])
                found[name].identity += (managed_policy(arn) if arn.startswith(
                    AWS_MANAGED_PREFIX) else self.customer_policy(arn))
        return found

    def customer_policy(self, arn: str) -> list[Statement]:
        """The statements of the customer managed policy ``arn`` (a boundary, guardrails)."""
        name = arn.rsplit("/", 1)[-1]
        for stack, content in self.stacks.items():
            for policy in content.get("resource", {}).get("aws_iam_policy", {}).values():
                if policy["name"] == name:
                    return self.document(stack, policy["policy"])
        raise KeyError(f"no stack creates the policy {arn}")

    def key_policies(self, stack: str) -> dict[str, list[Statement]]:
        """Each KMS key of ``stack``: its ARN -> its key policy."""
        return {self.resolve(stack, f"${{aws_kms_key.{key}.arn}}"):
                from_iam_json(json.loads(self.resolve(stack, key_block["policy"])))
                for key, key_block in self.stacks[stack]["resource"]["aws_kms_key"].items()}
