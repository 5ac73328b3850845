"""The local app-deploy keeps the host contract that the real one on the hosts must keep."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rollout.lab.fleet import free_port

REPO = Path(__file__).resolve().parents[2]
V1, V2 = "registry.local/app:v1", "registry.local/app:v2"


class Host:
    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.port = free_port()

    def __call__(self, *args, drain=0.0, health_timeout=5.0):
        argv = [sys.executable, "-m", "rollout.lab.app_deploy", "--state-dir", str(self.dir),
                "--bind", "127.0.0.1", "--port", str(self.port), "--name", "APP-1",
                "--startup-seconds", "0.05", "--grace", "3",
                "--unhealthy-image", "registry.local/app:v2-bad-here",
                "--watch-pid", str(os.getpid()), *args]
        env = {**os.environ, "DRAIN_SECONDS": str(drain), "HEALTH_TIMEOUT": str(health_timeout),
               "PYTHONPATH": str(REPO)}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    def status(self):
        done = self("status")
        assert done.returncode == 0
        lines = done.stdout.splitlines()
        assert len(lines) == 1
        return json.loads(lines[0])

    def pid(self):
        return json.loads((self.dir / "state.json").read_text())["pid"]


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path / "APP-1")
    yield h
    state = h.dir / "state.json"
    if state.exists():
        pid = json.loads(state.read_text()).get("pid")
        if pid:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_status_of_an_empty_host(host):
    assert host.status() == {"image": None, "previous": None, "drained": False,
                             "healthy": False}


def test_deploy_then_upgrade_records_previous_and_clears_its_own_drain(host):
    assert host(V1).returncode == 0
    assert host.status() == {"image": V1, "previous": None, "drained": False, "healthy": True}
    assert host(V2).returncode == 0
    assert host.status() == {"image": V2, "previous": V1, "drained": False, "healthy": True}


def test_deploying_the_running_image_changes_nothing(host):
    host(V1)
    pid = host.pid()
    assert host(V1).returncode == 0
    assert host.pid() == pid


def test_a_bad_image_is_reverted_with_one_line_on_stderr(host):
    host(V1)
    done = host("registry.local/app:v2-unhealthy", health_timeout=1)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "app-deploy: registry.local/app:v2-unhealthy failed its health check within 1s; "
        f"restored {V1}"]
    assert host.status() == {"image": V1, "previous": None, "drained": False, "healthy": True}


@pytest.mark.parametrize("image, reason", [
    ("registry.local/app:v2-crash", "exited during start-up"),
    ("registry.local/app:v2-bad-here", "failed its health check"),
])
def test_other_failures_are_reverted_too(host, image, reason):
    host(V1)
    done = host(image, health_timeout=1)
    assert done.returncode == 1 and reason in done.stderr
    assert host.status()["image"] == V1 and host.status()["healthy"]


def test_a_missing_image_fails_before_the_app_is_stopped(host):
    host(V1)
    pid = host.pid()
    done = host("registry.local/app:v2-missing")
    assert done.returncode == 1 and "manifest unknown" in done.stderr
    assert host.pid() == pid


def test_a_drained_host_stays_drained_through_a_deploy(host):
    host(V1)
    assert host("drain").returncode == 0
    assert host(V2).returncode == 0
    assert host.status() == {"image": V2, "previous": V1, "drained": True, "healthy": True}
    assert host("undrain").returncode == 0
    assert host.status()["drained"] is False


def test_drain_waits_drain_seconds_once(host):
    started = time.monotonic()
    assert host("drain", drain=1.0).returncode == 0
    assert time.monotonic() - started >= 1.0
    # The switch is old enough now: a second drain returns at once.
    started = time.monotonic()
    assert host("drain", drain=1.0).returncode == 0
    assert time.monotonic() - started < 0.9


def test_rollback_goes_to_the_previous_image(host):
    host(V1)
    host(V2)
    assert host("--rollback").returncode == 0
    assert host.status() == {"image": V1, "previous": V2, "drained": False, "healthy": True}


def test_subcommands_are_recorded(host):
    host("status")
    host("drain")
    host("undrain")
    commands = [line.split(" ", 1)[1] for line in
                (host.dir / "commands.log").read_text().splitlines()]
    assert commands == ["status", "drain", "undrain"]


def test_usage_errors(host):
    done = host()
    assert done.returncode == 2 and "give exactly one of" in done.stderr
