"""Shared test helpers."""
import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """Return the path of an external tool the test needs.

    On a laptop a missing tool skips the test; in CI (``CI`` set) it fails,
    so a green CI run always means the real tool was exercised.
    """
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (apt-get install {name})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
