"""IAM's size quotas, measured on the policies as AWS will store them (references resolved to
full ARNs, whitespace not counted): a policy over its quota fails the apply with
LimitExceeded, after part of the stack exists."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.infra import iam_policy
from tests.infra.iam_policy import Stacks

# IAM and AWS STS quotas (IAM User Guide, "IAM and AWS STS quotas"): characters, whitespace
# excluded.
MANAGED_POLICY_MAX = 6_144
ROLE_INLINE_POLICIES_MAX = 10_240
TRUST_POLICY_MAX = 2_048        # the default; a quota increase can raise it to 4,096
STACKS = ("bootstrap", "production", "staging")
REPO_ROOT = Path(__file__).resolve().parents[2]
# The longest names the configuration accepts (core/settings.py), four environments: the
# guardrails name every other environment, so they grow with each.
LONGEST_PROJECT = "p" * 21
LONGEST_ENVIRONMENTS = tuple(f"{letter * 20}1" for letter in "wxyz")


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


@pytest.mark.e2e
def test_the_longest_names_and_four_environments_still_fit(tmp_path):
    """Synthesized in-process (the CDK is loaded already): the bootstrap stack's policies,
    where the names and the environments add up."""
    import main

    config = tmp_path / "config"
    config.mkdir()
    production = (REPO_ROOT / "config" / "production.yaml").read_text()
    for name in LONGEST_ENVIRONMENTS:
        (config / f"{name}.yaml").write_text(f"project: {LONGEST_PROJECT}\n{production}")
    out = tmp_path / "cdktf.out"
    assert main.main(["--outdir", str(out), "--config-dir", str(config)]) == 0
    bootstrap = json.loads((out / "stacks" / "bootstrap" / "cdk.tf.json").read_text())
    stacks = Stacks({"bootstrap": bootstrap})
    resources = bootstrap["resource"]
    managed = {p["name"]: size(stacks, "bootstrap", p["policy"])
               for p in resources["aws_iam_policy"].values()}
    inline: dict[str, int] = {}
    for policy in resources["aws_iam_role_policy"].values():
        role = stacks.resolve("bootstrap", policy["role"])
        inline[role] = inline.get(role, 0) + size(stacks, "bootstrap", policy["policy"])
    assert len(managed) == 8 and len(inline) == 8
    assert max(managed.values()) <= MANAGED_POLICY_MAX, managed
    assert max(inline.values()) <= ROLE_INLINE_POLICIES_MAX, inline
