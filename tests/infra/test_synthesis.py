"""Synthesis as a whole: repeatable, atomic, and clean under checkov."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import main

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


def tree(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_output_holds_bootstrap_and_one_stack_per_environment(cdktf_out):
    stacks = sorted(p.name for p in (cdktf_out / "stacks").iterdir())
    assert stacks == ["bootstrap", "production", "staging"]
    manifest = json.loads((cdktf_out / "manifest.json").read_text())
    assert sorted(manifest["stacks"]) == stacks


def test_two_runs_produce_byte_identical_output(cdktf_out, tmp_path):
    """A second run, in a separate process as the pipeline would make it."""
    second = tmp_path / "cdktf.out"
    subprocess.run([sys.executable, "main.py", "--outdir", str(second)], cwd=REPO,
                   check=True, capture_output=True, timeout=300)
    assert tree(second) == tree(cdktf_out)


def test_output_names_no_local_path(cdktf_out):
    for path, content in tree(cdktf_out).items():
        assert str(REPO).encode() not in content, path
        assert b"/home/" not in content and b"stackTrace" not in content, path


def test_failed_synthesis_leaves_the_previous_output_intact(tmp_path, monkeypatch):
    import stacks

    outdir = tmp_path / "cdktf.out"
    outdir.mkdir()
    (outdir / "marker").write_text("previous run")

    def broken_build(environments, staging_dir):
        (Path(staging_dir) / "half-written.json").write_text("{")
        raise RuntimeError("synthesis failed half way")

    monkeypatch.setattr(stacks, "build_app", broken_build)
    with pytest.raises(RuntimeError):
        main.synthesize([], outdir)
    assert tree(outdir) == {"marker": b"previous run"}
    assert [p.name for p in tmp_path.iterdir()] == ["cdktf.out"]


def checkov(*args: str) -> dict:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("checkov")), "--framework", "terraform_json",
         "--output", "json", "--quiet", "--compact", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = {"passed": 0, "failed": 0, "failed_checks": []}
    for entry in reports:
        summary["passed"] += entry["summary"]["passed"]
        summary["failed"] += entry["summary"]["failed"]
        summary["failed_checks"] += [(c["check_id"], c["resource"])
                                     for c in entry["results"]["failed_checks"]]
    return summary


def test_checkov_finds_nothing_to_fix_and_really_scanned(cdktf_out):
    summary = checkov("-d", str(cdktf_out), "--config-file", str(REPO / ".checkov.yaml"))
    assert summary["failed_checks"] == []
    # Checkov silently scans nothing in some inputs; a real scan of this code runs hundreds.
    assert summary["passed"] >= 500


def test_checkov_fails_a_known_bad_fixture():
    summary = checkov("-f", str(FIXTURES / "insecure.tf.json"),
                      "--config-file", str(REPO / ".checkov.yaml"))
    failed = {check for check, _ in summary["failed_checks"]}
    assert {"CKV_AWS_24", "CKV_AWS_3", "CKV_AWS_79"} <= failed


def test_terraform_working_files_survive_a_new_synthesis(tmp_path):
    """The bootstrap stack's local state and every stack's `terraform init` are kept."""
    outdir = tmp_path / "cdktf.out"
    bootstrap = outdir / "stacks" / "bootstrap"
    (bootstrap / ".terraform" / "providers").mkdir(parents=True)
    (bootstrap / "terraform.tfstate").write_text('{"serial": 7}')
    (bootstrap / ".terraform.lock.hcl").write_text("# lock")
    (outdir / "stacks" / "retired").mkdir()
    (outdir / "stacks" / "retired" / "terraform.tfstate").write_text("{}")

    main.synthesize(main.load_environments(["staging"]), outdir)

    assert (bootstrap / "terraform.tfstate").read_text() == '{"serial": 7}'
    assert (bootstrap / ".terraform.lock.hcl").read_text() == "# lock"
    assert (bootstrap / ".terraform" / "providers").is_dir()
    assert (bootstrap / "cdk.tf.json").is_file()
    assert not (outdir / "stacks" / "retired").exists()


def test_the_readmes_cdktf_cli_commands_run_as_written():
    """The CLI runs cdktf.json's `python main.py`: only the virtualenv's python has the
    packages. Without CHECKPOINT_DISABLE=1 it prints a telemetry error offline."""
    readme = (REPO / "README.md").read_text()
    lines = readme.splitlines()
    commands = [i for i, line in enumerate(lines) if "npx cdktf-cli" in line]
    assert commands
    assert json.loads((REPO / "cdktf.json").read_text())["app"] == "python main.py"
    for index in commands:
        assert "CHECKPOINT_DISABLE=1 npx cdktf-cli" in lines[index], lines[index]
        before = "\n".join(lines[max(0, index - 3):index + 1])
        assert ". .venv/bin/activate" in before or "PATH=" in lines[index], lines[index]
