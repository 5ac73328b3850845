"""Pull-request plans install hashicorp/aws and nothing else, proven with the real terraform.

This machine has no network: an allowed provider fails to download ("could not connect"),
a refused one fails before any download ("not found in any of the search locations").
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
CLI_CONFIG = REPO / ".github" / "terraform" / "pull-request.tfrc"
REFUSED = "was not found in any of the search locations"
NO_NETWORK = "could not connect to registry.terraform.io"


def init(directory: Path, cli_config: Path | str, providers: dict | None = None,
         ) -> subprocess.CompletedProcess:
    if providers is not None:
        (directory / "main.tf.json").write_text(json.dumps(
            {"terraform": {"required_providers": providers}}))
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1",
           "CHECKPOINT_DISABLE": "1"}
    env.pop("TF_PLUGIN_CACHE_DIR", None)
    return subprocess.run([require_tool("terraform"), f"-chdir={directory}", "init",
                           "-input=false", "-backend=false", "-no-color"],
                          capture_output=True, text=True, env=env, timeout=120)


def one_line(result: subprocess.CompletedProcess) -> str:
    return " ".join((result.stdout + result.stderr).split())


@pytest.mark.parametrize("source", ["hashicorp/random", "hashicorp/external",
                                    "example.com/someone/aws"])
def test_the_pull_request_cli_config_refuses_any_other_provider(tmp_path, source):
    result = init(tmp_path, CLI_CONFIG, {"other": {"source": source}})
    assert result.returncode != 0
    assert REFUSED in one_line(result) and NO_NETWORK not in one_line(result)


def test_without_it_the_same_provider_would_be_fetched(tmp_path):
    """The control: the refusal above comes from the CLI configuration, not the network."""
    empty = tmp_path / "empty.tfrc"
    empty.write_text("")
    result = init(tmp_path, empty, {"random": {"source": "hashicorp/random"}})
    assert result.returncode != 0
    assert NO_NETWORK in one_line(result) and REFUSED not in one_line(result)


def test_the_synthesized_stacks_aws_provider_is_allowed(cdktf_out, tmp_path):
    # A copy: init leaves a .terraform directory behind.
    (tmp_path / "cdk.tf.json").write_text(
        (cdktf_out / "stacks" / "production" / "cdk.tf.json").read_text())
    result = init(tmp_path, CLI_CONFIG)
    assert result.returncode != 0  # no network here
    assert NO_NETWORK in one_line(result) and REFUSED not in one_line(result)


def test_the_pull_request_plan_uses_it():
    workflow = yaml.safe_load((REPO / ".github/workflows/pull-request.yml").read_text())
    plan = workflow["jobs"]["plan"]
    assert plan["env"]["TF_CLI_CONFIG_FILE"] == (
        "${{ github.workspace }}/.github/terraform/pull-request.tfrc")
    init_steps = [s for s in plan["steps"] if "terraform" in s.get("run", "")]
    assert init_steps and "TF_CLI_CONFIG_FILE" not in json.dumps(init_steps)  # not overridden
