"""Fixtures of the developer-tooling tests: the Compose file, the scripts, a second synthesis."""
from __future__ import annotations

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
