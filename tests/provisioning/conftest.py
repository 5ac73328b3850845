"""Fixtures for the host provisioning tests: rendered user data and the host scripts."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from core.settings import ROLES, load_environment
from provisioning import user_data
from provisioning.cloud_config import BOOT_STEPS_DIR, FILES_DIR, SHELL_LIBRARY
from tests.provisioning.postgres_server import postgres_server  # noqa: F401 (a fixture)

# What NFS-01's user data is rendered with outside Terraform: a well-formed volume ID.
VOLUME_ID = "vol-0123456789abcdef0"
# What two LBs' user data is rendered with: a bucket name as Terraform's bucket_prefix makes.
CERTIFICATE_BUCKET = "webapp-production-certs-20261201000000000000000001"


def render_host(settings, host_name: str) -> str:
    role = next(r for r in ROLES if host_name in settings.host_names(r))
    shares = role == "lb" and settings.load_balancer.count > 1
    return user_data.render(settings, role, host_name,
                            nfs_volume_id=VOLUME_ID if role == "nfs" else None,
                            certificate_bucket=CERTIFICATE_BUCKET if shares else None)


@pytest.fixture(scope="session")
def production():
    return load_environment("production")


@pytest.fixture(scope="session")
def staging():
    return load_environment("staging")


@pytest.fixture(scope="session")
def rendered(production) -> dict[str, str]:
    """The production user data of the first host of each role, by role."""
    return {role: render_host(production, production.host_names(role)[0]) for role in ROLES}


@pytest.fixture(scope="session")
def cloud_configs(rendered) -> dict[str, dict]:
    """The same, parsed."""
    return {role: yaml.safe_load(text) for role, text in rendered.items()}


def written_file(cloud_config: dict, path: str) -> dict:
    """The write_files entry for ``path``; fails the test if there is none."""
    matches = [entry for entry in cloud_config["write_files"] if entry["path"] == path]
    assert len(matches) == 1, f"{path} is written {len(matches)} times"
    return matches[0]


def boot_step_files(cloud_config: dict) -> list[dict]:
    """The per-instance scripts of a host's first boot, in the order cloud-init runs them."""
    return sorted((entry for entry in cloud_config["write_files"]
                   if entry["path"].startswith(BOOT_STEPS_DIR + "/")),
                  key=lambda entry: entry["path"])


def boot_steps(cloud_config: dict) -> list[list[str]]:
    """The command of each boot step, in order (what boot-step runs after its ``--``)."""
    commands = []
    for entry in boot_step_files(cloud_config):
        words = shlex.split(entry["content"].strip().splitlines()[-1])
        assert words[:2] == ["exec", "boot-step"], entry["content"]
        if words[2:] == ["--complete"]:
            continue  # the last script: it marks the boot complete and runs nothing
        commands.append(words[words.index("--") + 1:])
    return commands


# The shared shell library the scripts source, from the repository rather than a host's path.
SCRIPT_ENV = {"PLATFORM_LIB": str(SHELL_LIBRARY.parent)}


def run_script(name: str, *args: str, env: dict | None = None, timeout: float = 60,
               check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run ``provisioning/files/NAME`` (the very text the hosts receive) with bash."""
    if env is not None:
        env = {**SCRIPT_ENV, **env}
    result = subprocess.run(["bash", str(FILES_DIR / name), *args], env=env, text=True,
                            capture_output=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def fake_command(directory: Path, name: str, body: str) -> Path:
    """An executable shell script standing in for a command."""
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment without settings that would leak into the scripts from outside."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {**{key: value for key, value in os.environ.items() if key in keep}, **SCRIPT_ENV}
