"""IAM's size quotas, measured on the policies as AWS will store them (references resolved to
full ARNs, whitespace not counted): a policy over its quota fails the apply with
LimitExceeded, after part of the stack exists."""
from __future__ import annotations

import re

import pytest

from tests.infra import iam_policy
from tests.infra.iam_policy import Stacks

# IAM and AWS STS quotas (IAM User Guide, "IAM and AWS STS quotas"): characters, whitespace
# excluded.
MANAGED_POLICY_MAX = 6_144
ROLE_INLINE_POLICIES_MAX = 10_240
TRUST_POLICY_MAX = 2_048        # the default; a quota increase can raise it to 4,096
STACKS = ("bootstrap", "production", "staging")


@pytest.fixture(scope="module")
def stacks(stack_json) -> Stacks:
    return Stacks({name: stack_json(name) for name in STACKS})


def size(stacks: Stacks, stack: str, reference: str) -> int:
    return len(re.sub(r"\s", "", iam_policy.policy_json(stacks.document(stack, reference))))


def test_every_managed_policy_fits(stacks):
    sizes = {policy["name"]: size(stacks, stack, policy["policy"])
             for stack in STACKS
             for policy in stacks.stacks[stack]["resource"].get("aws_iam_policy", {}).values()}
    assert sizes, "no managed policy found"
    assert {name: n for name, n in sizes.items() if n > MANAGED_POLICY_MAX} == {}, sizes


def test_each_roles_inline_policies_fit_together(stacks):
    totals: dict[str, int] = {}
    for stack in STACKS:
        for policy in stacks.stacks[stack]["resource"].get("aws_iam_role_policy", {}).values():
            role = stacks.resolve(stack, policy["role"]).rsplit("/", 1)[-1]
            totals[role] = totals.get(role, 0) + size(stacks, stack, policy["policy"])
    assert len(totals) >= 10
    assert {role: n for role, n in totals.items() if n > ROLE_INLINE_POLICIES_MAX} == {}, totals


def test_every_trust_policy_fits(stacks):
    sizes = {role["name"]: size(stacks, stack, role["assume_role_policy"])
             for stack in STACKS
             for role in stacks.stacks[stack]["resource"]["aws_iam_role"].values()
             if role["assume_role_policy"].startswith("${data.aws_iam_policy_document.")}
    assert sizes
    assert {name: n for name, n in sizes.items() if n > TRUST_POLICY_MAX} == {}, sizes
