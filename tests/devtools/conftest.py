"""Fixtures of the developer-tooling tests: the Compose file, the scripts, a second synthesis."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
WIDER_APP_HOST_COUNT = 5

# The scripts run as `python scripts/<name>.py`, with scripts/ on the import path; the tests
# import them the same way.
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))


def venv_tool(name: str) -> str:
    """A console script next to the running interpreter (the venv), else one on PATH.

    A missing tool skips the test on a laptop and fails it in CI (``CI`` set), as
    ``tests/conftest.py`` does for system tools.
    """
    # Not resolved: a venv's python is often a symlink to the system interpreter.
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (pip install -r requirements-dev.txt)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def system_tool(name: str, package: str | None = None) -> str:
    """A program installed on the machine (scripts/install-test-tools.sh); skip or fail."""
    found = shutil.which(name)
    if found:
        return found
    message = (f"{name} is not installed (apt-get install {package or name}, or "
               "sudo scripts/install-test-tools.sh)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def compose() -> dict:
    """compose.yaml, parsed."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def wider_cdktf_out(tmp_path_factory, cdktf_out) -> Path:
    """production synthesized again with more APP hosts: the one extra synthesis.

    In-process, after ``cdktf_out`` so that the provider bindings are already loaded.
    """
    import main

    config_dir = tmp_path_factory.mktemp("wider-config")
    document = yaml.safe_load((REPO_ROOT / "config" / "production.yaml").read_text())
    assert document["app"]["host_count"] != WIDER_APP_HOST_COUNT
    document["app"]["host_count"] = WIDER_APP_HOST_COUNT
    (config_dir / "production.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    outdir = tmp_path_factory.mktemp("wider-synth") / "cdktf.out"
    assert main.main(["--config-dir", str(config_dir), "--outdir", str(outdir),
                      "--environment", "production"]) == 0
    return outdir
