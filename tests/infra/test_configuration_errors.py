"""Every kind of configuration mistake: one clear line, exit status 2, output untouched."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VALID = yaml.safe_load((REPO / "config" / "staging.yaml").read_text())


def run_main(config_dir: Path, outdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "main.py", "--config-dir", str(config_dir), "--outdir", str(outdir),
         *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture
def previous_output(tmp_path) -> Path:
    """An earlier synthesis that a failed run must leave exactly as it was."""
    outdir = tmp_path / "cdktf.out"
    (outdir / "stacks" / "staging").mkdir(parents=True)
    (outdir / "stacks" / "staging" / "cdk.tf.json").write_text('{"earlier": true}')
    return outdir


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def with_changes(changes: dict) -> dict:
    document = yaml.safe_load(yaml.safe_dump(VALID))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = document
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return document


MISTAKES = [
    pytest.param({"colour": "blue"}, "staging.yaml: colour: unknown key; allowed keys here: "
                 "environment, project, region", id="unknown-key"),
    pytest.param({"network.nat": False}, "network.nat: unknown key; allowed keys here: "
                 "vpc_cidr, public_subnet_cidr", id="unknown-nested-key"),
    pytest.param({"app.host_count": "3"}, "app.host_count: Input should be a valid integer "
                 "(got '3')", id="wrong-type"),
    pytest.param({"network.nat_gateway": "yes"}, "network.nat_gateway: Input should be a "
                 "valid boolean", id="wrong-type-bool"),
    pytest.param({"network.private_subnet_cidr": "10.9.2.0/24"},
                 "network.private_subnet_cidr: 10.9.2.0/24 lies outside network.vpc_cidr "
                 "10.0.0.0/16", id="cidr-outside-vpc"),
    pytest.param({"network.private_subnet_cidr": "10.0.1.0/25"},
                 "network.private_subnet_cidr: 10.0.1.0/25 overlaps "
                 "network.public_subnet_cidr 10.0.1.0/24", id="overlapping-cidrs"),
    pytest.param({"network.vpc_cidr": "10.0.0.0/33"}, "network.vpc_cidr: '10.0.0.0/33' is "
                 "not a network in CIDR form", id="malformed-cidr"),
    pytest.param({"app.host_count": 0}, "app.host_count: Input should be greater than or "
                 "equal to 1 (got 0)", id="no-app-hosts"),
    pytest.param({"admin_cidr": "0.0.0.0/0"}, "admin_cidr: 0.0.0.0/0 would open Kibana to "
                 "the whole internet", id="admin-cidr-open"),
    pytest.param({"app.image": "my app"}, "app.image: expected an image with a tag or "
                 "digest", id="bad-image"),
    pytest.param({"availability_zone": "us-east-1a"}, "availability_zone: 'us-east-1a' is "
                 "not a zone of region eu-west-1", id="zone-outside-region"),
]


@pytest.mark.parametrize("changes, expected", MISTAKES)
def test_mistake_is_reported_in_one_line_and_nothing_is_written(
        tmp_path, previous_output, changes, expected):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "staging.yaml").write_text(yaml.safe_dump(with_changes(changes)))
    before = snapshot(previous_output)

    result = run_main(config_dir, previous_output)

    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines)
    assert snapshot(previous_output) == before
    assert sorted(p.name for p in previous_output.parent.iterdir()) == ["cdktf.out", "config"]


def test_several_mistakes_give_one_line_each(tmp_path, previous_output):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "staging.yaml").write_text(yaml.safe_dump(
        with_changes({"app.host_count": 0, "colour": "blue", "app.image": "x"})))
    result = run_main(config_dir, previous_output)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 3


def test_yaml_syntax_error_names_its_line(tmp_path, previous_output):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "staging.yaml").write_text("region: eu-west-1\napp:\n  host_count: [2\n")
    result = run_main(config_dir, previous_output)
    assert result.returncode == 2
    assert "staging.yaml: line 4, column 1: YAML syntax error" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_environment_lists_the_known_ones(tmp_path, previous_output):
    result = run_main(REPO / "config", previous_output, "--environment", "prod")
    assert result.returncode == 2
    assert ("unknown environment 'prod'; known environments: production, staging"
            in result.stderr)


def test_environments_must_share_what_the_bootstrap_stack_creates(tmp_path, previous_output):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "staging.yaml").write_text(yaml.safe_dump(VALID))
    (config_dir / "qa.yaml").write_text(yaml.safe_dump(
        with_changes({"state_bucket": "another-bucket"})))
    result = run_main(config_dir, previous_output)
    assert result.returncode == 2
    assert "state_bucket: environments disagree (another-bucket, " in result.stderr


def test_duplicate_key_is_an_error_not_a_silent_override(tmp_path, previous_output):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    text = yaml.safe_dump(VALID) + "region: us-east-1\n"
    (config_dir / "staging.yaml").write_text(text)
    result = run_main(config_dir, previous_output)
    assert result.returncode == 2
    line = len(text.splitlines())
    assert f"staging.yaml: line {line}, column 1: YAML syntax error: duplicate key 'region'" in (
        result.stderr)


def test_file_that_is_not_text_is_reported(tmp_path, previous_output):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "staging.yaml").write_bytes(b"\xff\xfe\x00binary")
    result = run_main(config_dir, previous_output)
    assert result.returncode == 2
    assert "staging.yaml: cannot be read as UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_output_folder_is_one_line(tmp_path, cdktf_out, capsys):
    import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main.main(["--environment", "staging", "--outdir", str(blocker / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: --outdir {blocker / 'out'}: cannot write the output")
    assert len(error.strip().splitlines()) == 1


def test_file_name_that_cannot_name_an_environment(tmp_path, previous_output):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "Prod_EU.yaml").write_text(yaml.safe_dump(VALID))
    result = run_main(config_dir, previous_output)
    assert result.returncode == 2
    assert "Prod_EU.yaml: 'Prod_EU' cannot name an environment: rename the file to 2-21 " \
        "lower-case letters" in result.stderr
