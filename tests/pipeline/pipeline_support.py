"""Shared by the pipeline tests: the scripts under test, plan fixtures, scanner binaries.

A plain module, not a conftest.py: tests/conftest.py exists too, and two modules named
`conftest` on the import path would shadow each other.
"""
import json
import sys
from pathlib import Path


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
