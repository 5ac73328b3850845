"""Where the tests find the real programs they drive.

A missing program skips the test on a laptop and fails it in CI (``CI`` set), so a green CI
run always means the real program was exercised.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _missing(message: str):
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str, package: str | None = None) -> str:
    """The path of a program installed on the machine (``scripts/install-test-tools.sh``)."""
    return shutil.which(name) or _missing(
        f"{name} is not installed (apt-get install {package or name}, "
        "or sudo scripts/install-test-tools.sh)")


def venv_tool(name: str) -> str:
    """A console script of ``requirements-dev.txt``: next to this interpreter, else on PATH."""
    # Not resolved: a venv's python is often a symlink to the system interpreter.
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name) or _missing(
        f"{name} is not installed (pip install -r requirements-dev.txt)")


def caddy() -> str:
    """The Caddy of ``requirements-dev.txt``: the exact version LB-01 runs, or the test fails."""
    from provisioning.images import CADDY_IMAGE

    path = venv_tool("caddy")
    wanted = CADDY_IMAGE.rsplit(":", 1)[1]
    found = subprocess.run([path, "version"], capture_output=True, text=True,
                           timeout=30).stdout.split()
    if not found or found[0].lstrip("v") != wanted:
        pytest.fail(f"{path} is Caddy {found[0] if found else '?'}, LB-01 runs {wanted}: "
                    "pip install -r requirements-dev.txt")
    return path
