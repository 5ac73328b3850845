"""plan_comment.py as the workflows run it: exit codes, one-line errors, job summaries."""
import json
import os
import subprocess
import sys

import pytest
from pipeline_support import REPO_ROOT, fixture_path

SCRIPT = REPO_ROOT / "scripts" / "plan_comment.py"


def run(*arguments, summary_file=None, github_actions=False):
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith(("GITHUB_", "GH_"))}
    if summary_file is not None:
        environ["GITHUB_STEP_SUMMARY"] = str(summary_file)
    if github_actions:
        environ["GITHUB_ACTIONS"] = "true"
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, arguments)],
                          capture_output=True, text=True, env=environ, timeout=60)


def assert_one_line_error(result, expected):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------- bad input


def test_a_missing_plan_file(tmp_path):
    result = run("render", "--stack", "staging", "--plan-json", tmp_path / "nope.json")

    assert_one_line_error(result, f"plan file not found: {tmp_path / 'nope.json'}")


def test_invalid_json_names_the_position(tmp_path):
    broken = tmp_path / "plan.json"
    broken.write_text('{"format_version": "1.2",\n  "resource_changes": [,]}')

    result = run("render", "--stack", "staging", "--plan-json", broken)

    assert_one_line_error(result, "is not valid JSON (line 2, column")


@pytest.mark.parametrize("document, message", [
    ([1, 2], "the top level is not an object"),
    ({"resource_changes": []}, "it has no format_version"),
    ({"format_version": "2.0", "planned_values": {}}, "format_version 2.0"),
    # `terraform show -json` of a state, not of a plan.
    ({"format_version": "1.0", "terraform_version": "1.15.9", "values": {}},
     "did you pass a state file?"),
    ({"format_version": "1.2", "planned_values": {}, "resource_changes": {}},
     "resource_changes is not a list"),
    ({"format_version": "1.2", "planned_values": {}, "resource_changes": [{"address": "a.b"}]},
     "resource_changes[0] has no actions"),
])
def test_json_that_is_not_a_plan(tmp_path, document, message):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document))

    assert_one_line_error(run("render", "--stack", "staging", "--plan-json", path), message)


def test_a_missing_plan_text_file(tmp_path):
    result = run("render", "--stack", "staging",
                 "--plan-json", fixture_path("plan_no_changes.json"),
                 "--plan-text", tmp_path / "plan.txt")

    assert_one_line_error(result, "plan text file not found")


@pytest.mark.parametrize("arguments", [
    ["render", "--stack", "bad name!", "--plan-json", "x.json"],
    ["render", "--plan-json", "x.json"],
    ["publish"],
    [],
])
def test_bad_arguments_exit_2_with_usage(arguments):
    result = run(*arguments)

    assert result.returncode == 2 and "usage:" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- render


def test_render_prints_the_comment_markdown():
    result = run("render", "--stack", "staging",
                 "--plan-json", fixture_path("terraform_data_plan.json"),
                 "--plan-text", fixture_path("terraform_data_plan.txt"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("<!-- terraform-plan-comment stack=staging -->\n")
    assert "Plan: 2 to add, 1 to change, 2 to destroy." in result.stdout


# --------------------------------------------------------------------------- drift


def test_no_drift_exits_0_and_says_so_in_the_job_summary(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")

    result = run("summary", "--stack", "production", "--detect-drift",
                 "--plan-json", fixture_path("plan_no_changes.json"), summary_file=summary)

    assert result.returncode == 0, result.stderr
    written = summary.read_text()
    assert written.startswith("earlier step\n")  # appended, not overwritten
    assert "✅ No drift: `production` matches the code." in written
    assert "### Drift check · `production`" in written


def test_any_change_is_drift_exits_1_and_annotates_the_run(tmp_path):
    summary = tmp_path / "summary.md"

    result = run("summary", "--stack", "production", "--detect-drift",
                 "--plan-json", fixture_path("plan_routine_update.json"),
                 "--plan-text", fixture_path("terraform_data_plan.txt"),
                 summary_file=summary, github_actions=True)

    assert result.returncode == 1
    written = summary.read_text()
    assert "❌ **Drift: `production` no longer matches the code" in written
    assert "Plan output (terraform show)" in written
    assert ("::error::Drift in production: Plan: 2 to add, 4 to change, 1 to destroy."
            in result.stdout)


def test_a_change_to_outputs_only_is_drift_too(tmp_path):
    document = json.loads(fixture_path("plan_no_changes.json").read_text())
    document["output_changes"]["lb_public_ip"]["actions"] = ["update"]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document))

    result = run("summary", "--stack", "staging", "--detect-drift", "--plan-json", path,
                 "--output", tmp_path / "summary.md")

    assert result.returncode == 1
    assert "Only outputs change." in (tmp_path / "summary.md").read_text()


def test_without_a_summary_file_the_markdown_goes_to_stdout():
    result = run("summary", "--stack", "staging",
                 "--plan-json", fixture_path("plan_fresh_environment.json"))

    assert result.returncode == 0, result.stderr
    assert "### Terraform plan · `staging`" in result.stdout
    assert result.stdout.rstrip().endswith("staging: Plan: 12 to add, 0 to change, 0 to destroy.")


# --------------------------------------------------------------------------- data-loss guard


def test_the_deploy_refuses_a_plan_that_loses_data(tmp_path):
    summary = tmp_path / "summary.md"

    result = run("summary", "--stack", "production", "--refuse-data-loss",
                 "--plan-json", fixture_path("plan_data_loss.json"), summary_file=summary,
                 github_actions=True)

    assert result.returncode == 1
    written = summary.read_text()
    assert "⛔ **Not applied: this plan destroys or replaces stateful resources.**" in written
    assert "allow_data_loss" in written
    assert "> - **DB-01" in written
    assert "::error::Refusing to apply production" in result.stdout


@pytest.mark.parametrize("fixture", ["plan_routine_update.json", "plan_fresh_environment.json"])
def test_the_guard_lets_ordinary_plans_through(tmp_path, fixture):
    result = run("summary", "--stack", "production", "--refuse-data-loss",
                 "--plan-json", fixture_path(fixture), "--output", tmp_path / "summary.md")

    assert result.returncode == 0, result.stderr
    assert "Not applied" not in (tmp_path / "summary.md").read_text()


def test_without_the_guard_a_dangerous_plan_is_shown_but_not_refused(tmp_path):
    result = run("summary", "--stack", "production",
                 "--plan-json", fixture_path("plan_data_loss.json"),
                 "--output", tmp_path / "summary.md")

    assert result.returncode == 0
    assert "[!CAUTION]" in (tmp_path / "summary.md").read_text()


def test_an_unwritable_summary_file_is_a_clear_error(tmp_path):
    result = run("summary", "--stack", "production",
                 "--plan-json", fixture_path("plan_no_changes.json"),
                 "--output", tmp_path / "missing-dir" / "summary.md")

    assert_one_line_error(result, "cannot write the summary to")
