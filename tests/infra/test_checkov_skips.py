"""checkov on the synthesized stacks: the skips in .checkov.yaml are exactly the checks that
fail without them, so a skip that hides nothing is removed before it hides a regression."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".checkov.yaml"


@pytest.fixture(scope="module")
def failing_checks(cdktf_out, tmp_path_factory) -> set[str]:
    """The ids of the checks that fail on the synthesized JSON with no skip at all."""
    import checkov  # noqa: F401 -- a dev requirement: missing, the test fails, never skips
    root = tmp_path_factory.mktemp("checkov-infra")
    shutil.copytree(cdktf_out / "stacks", root / "stacks")
    # Run where no .checkov.yaml is: every check applies.
    result = subprocess.run(
        [sys.executable, "-m", "checkov.main", "--directory", str(root), "--framework",
         "terraform_json", "--output", "json", "--skip-download", "--quiet"],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    # A JSON file checkov cannot parse runs no check and exits 0: make sure it read them.
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 500, report["summary"]
    return {check["check_id"] for check in report["results"]["failed_checks"]}


def skips() -> list[str]:
    return yaml.safe_load(CONFIG.read_text())["skip-check"]


def test_every_skip_is_still_needed(failing_checks):
    assert [check for check in skips() if check not in failing_checks] == []


def test_every_failing_check_is_skipped_with_a_reason(failing_checks):
    assert failing_checks - set(skips()) == set()
    # Each group of skips follows the comment that gives its reason.
    lines = [line.strip() for line in CONFIG.read_text().splitlines()]
    for number, line in enumerate(lines):
        if line.startswith("- CKV"):
            before = next(previous for previous in reversed(lines[:number])
                          if not previous.startswith("- CKV"))
            assert before.startswith("#"), f"{line}: no reason above it"
