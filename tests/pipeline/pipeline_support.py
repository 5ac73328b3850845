"""Shared by the pipeline tests: the scripts under test, plan fixtures, scanner binaries.

A plain module, not a conftest.py: tests/conftest.py exists too, and two modules named
`conftest` on the import path would shadow each other.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
WORKFLOWS = REPO_ROOT / ".github" / "workflows"

# The scripts are run as `python scripts/plan_comment.py` in CI, where scripts/ is on the
# import path; the tests import them the same way.
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))


def fixture_path(name: str) -> Path:
    return FIXTURES / name


def load_fixture(name: str) -> dict:
    return json.loads(fixture_path(name).read_text(encoding="utf-8"))


def venv_tool(name: str) -> str:
    """A console script installed next to the running interpreter (the venv), else on PATH.

    A missing tool skips the test on a laptop and fails it in CI, like tests/conftest.py.
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
