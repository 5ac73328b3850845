"""app-deploy, the one command the rolling update runs on an APP host (rollout/contract.py).

Docker is replaced by tests/provisioning/fake_docker.py, whose "containers" are real HTTP
servers on 127.0.0.1: app-deploy's health checks, drain waits and lock are the real ones.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioning.cloud_config import FILES_DIR
from rollout.contract import HostStatus
from tests.provisioning.conftest import fake_command, run_script
from tests.provisioning.postgres_server import free_port

pytestmark = pytest.mark.e2e

FAKE_DOCKER = Path(__file__).with_name("fake_docker.py")
REPO = "ghcr.io/example-org/app"


class Host:
    """One simulated APP host: app-deploy's environment, its docker and its files."""

    def __init__(self, root: Path, base_env: dict):
        self.root = root
        self.state = root / "docker.json"
        self.drain_file = root / "run" / "drain"
        port = free_port()
        docker = fake_command(root, "docker",
                              f'exec "{sys.executable}" "{FAKE_DOCKER}" "$@"\n')
        ssm = fake_command(root, "ssm-parameter",
                           'echo "$*" >> "${SSM_CALLS}"\n'
                           '[[ -z ${SSM_FAIL:-} ]] || exit 1\necho "db-secret-value"\n')
        self.env = {**base_env, "APP_DEPLOY_CONFIG": str(root / "absent.env"),
                    "DOCKER": str(docker), "SSM_PARAMETER": str(ssm), "REGISTRY_LOGIN": "true",
                    "SSM_CALLS": str(root / "ssm-calls"),
                    "FAKE_DOCKER_STATE": str(self.state),
                    "FAKE_DOCKER_DRAIN_FILE": str(self.drain_file),
                    "RUN_DIR": str(root / "run"), "STATE_DIR": str(root / "state"),
                    "APP_ENV_FILE": str(root / "app.env"),
                    "APP_PORT": str(port), "DRAIN_SECONDS": "0", "HEALTH_TIMEOUT": "2",
                    "HEALTH_POLL_SECONDS": "0.1", "STOP_TIMEOUT": "5",
                    "DB_HOST": "10.0.2.10", "DB_PORT": "5432", "DB_NAME": "app",
                    "DB_USER": "app", "DB_PASSWORD_PARAMETER": "/webapp/test/db/password"}

    def run(self, *args: str, **env) -> subprocess.CompletedProcess:
        return run_script("app-deploy.sh", *args, env={**self.env, **env}, timeout=60)

    def status(self) -> HostStatus:
        result = self.run("status")
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 1, result.stdout
        return HostStatus.parse(result.stdout)

    def docker(self) -> dict:
        return json.loads(self.state.read_text())

    def commands(self) -> list[str]:
        return [event["command"][0] for event in self.docker()["events"]]

    def stop_everything(self) -> None:
        if self.state.exists():
            for container in self.docker()["containers"].values():
                if container.get("pid") and container.get("running"):
                    subprocess.run(["kill", "--", f"-{container['pid']}"], capture_output=True)


@pytest.fixture
def host(tmp_path, clean_env):
    simulated = Host(tmp_path, clean_env)
    yield simulated
    simulated.stop_everything()


def deployed(host: Host, *versions: str) -> None:
    for version in versions:
        result = host.run(f"{REPO}:{version}")
        assert result.returncode == 0, result.stderr


def test_status_of_a_host_with_no_app_yet(host):
    assert host.status() == HostStatus(image=None, previous=None, drained=False, healthy=False)


def test_first_deploy_starts_the_app_at_once_with_its_settings(host):
    host.env["DRAIN_SECONDS"] = "30"  # nothing serves yet: nothing to wait for
    Path(host.env["APP_ENV_FILE"]).write_text("DB_SSLMODE=require\n")
    started = time.monotonic()

    result = host.run(f"{REPO}:1.0")

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    assert result.stderr == ""
    assert host.status() == HostStatus(image=f"{REPO}:1.0", previous=None, drained=False,
                                       healthy=True)
    env = host.docker()["containers"]["app"]["env"]
    assert env["APP_VERSION"] == "1.0"
    assert env["DB_PASSWORD"] == "db-secret-value"
    assert env["DB_SSLMODE"] == "require"
    assert (env["DB_HOST"], env["DB_NAME"], env["DB_USER"]) == ("10.0.2.10", "app", "app")
    assert Path(host.env["SSM_CALLS"]).read_text() == "get /webapp/test/db/password --wait 0\n"
    # The password went through a temporary file that is gone, never a command line.
    assert not list((host.root / "run").glob("app-env.*"))
    run_command = next(e["command"] for e in host.docker()["events"] if e["command"][0] == "run")
    assert "db-secret-value" not in " ".join(run_command)
    assert ["--restart", "unless-stopped"] == run_command[run_command.index("--restart"):][:2]


def test_a_new_image_replaces_the_old_one_while_the_host_is_drained(host):
    deployed(host, "1.0")
    host.env["DRAIN_SECONDS"] = "1"
    started = time.monotonic()

    result = host.run(f"{REPO}:2.0")

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 1  # the load balancer's time to stop sending
    assert host.status() == HostStatus(image=f"{REPO}:2.0", previous=f"{REPO}:1.0",
                                       drained=False, healthy=True)
    events = host.docker()["events"]
    swap = [e for e in events if e["command"][0] in ("pull", "stop", "run")][-3:]
    assert [e["command"][0] for e in swap] == ["pull", "stop", "run"]
    assert all(e["drained"] for e in swap)
    assert host.docker()["containers"]["app"]["env"]["APP_VERSION"] == "2.0"


def test_an_image_that_fails_its_health_check_is_rolled_back(host):
    deployed(host, "1.0", "2.0")

    result = host.run(f"{REPO}:bad-3.0")

    assert result.returncode == 1
    assert result.stderr == (f"app-deploy: {REPO}:bad-3.0 failed its health check within 2s; "
                             f"restored {REPO}:2.0\n")
    assert host.status() == HostStatus(image=f"{REPO}:2.0", previous=f"{REPO}:1.0",
                                       drained=False, healthy=True)
    assert "something went wrong" in result.stdout  # the failed container's last log lines


def test_an_image_that_crashes_is_rolled_back(host):
    deployed(host, "1.0")

    result = host.run(f"{REPO}:crash-2.0")

    assert result.returncode == 1
    assert result.stderr.endswith(f"restored {REPO}:1.0\n")
    assert host.status().image == f"{REPO}:1.0" and host.status().healthy


def test_an_image_that_cannot_be_pulled_leaves_the_running_app_alone(host):
    deployed(host, "1.0")
    before = len(host.commands())

    result = host.run(f"{REPO}:missing-2.0")

    assert result.returncode == 1
    assert result.stderr == (f"app-deploy: cannot pull {REPO}:missing-2.0; "
                             f"{REPO}:1.0 still running\n")
    assert "stop" not in host.commands()[before:]
    assert host.status() == HostStatus(image=f"{REPO}:1.0", previous=None, drained=False,
                                       healthy=True)


def test_without_the_database_password_nothing_is_touched(host):
    deployed(host, "1.0")
    before = len(host.commands())

    result = host.run(f"{REPO}:2.0", SSM_FAIL="1")

    assert result.returncode == 1
    assert result.stderr.startswith("app-deploy: cannot read the database password")
    assert "stop" not in host.commands()[before:]
    assert host.status().image == f"{REPO}:1.0"


def test_rollback_returns_to_the_previous_image_and_back_again(host):
    deployed(host, "1.0", "2.0")

    assert host.run("--rollback").returncode == 0
    assert host.status() == HostStatus(image=f"{REPO}:1.0", previous=f"{REPO}:2.0",
                                       drained=False, healthy=True)
    assert host.run("--rollback").returncode == 0
    assert host.status().image == f"{REPO}:2.0"


def test_rollback_without_a_previous_image_fails_clearly(host):
    deployed(host, "1.0")

    result = host.run("--rollback")

    assert result.returncode == 1
    assert result.stderr == "app-deploy: no previous image recorded on this host\n"


def test_deploying_the_running_healthy_image_does_nothing(host):
    deployed(host, "1.0")
    before = len(host.commands())

    result = host.run(f"{REPO}:1.0")

    assert result.returncode == 0
    assert "already running and healthy" in result.stdout
    assert host.commands()[before:] == ["inspect"]


def test_a_switch_set_by_the_rolling_update_is_left_for_it_to_clear(host):
    deployed(host, "1.0")
    host.env["DRAIN_SECONDS"] = "30"
    assert host.run("drain", DRAIN_SECONDS="0").returncode == 0
    started = time.monotonic()

    result = host.run(f"{REPO}:2.0")

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10  # the caller drained: no second wait
    assert host.status() == HostStatus(image=f"{REPO}:2.0", previous=f"{REPO}:1.0",
                                       drained=True, healthy=True)


def test_drain_waits_once_from_when_the_switch_was_set_and_undrain_clears_it(host):
    started = time.monotonic()
    assert host.run("drain", DRAIN_SECONDS="1.5").returncode == 0
    assert time.monotonic() - started >= 1.5
    assert host.status().drained

    started = time.monotonic()
    assert host.run("drain", DRAIN_SECONDS="1.5").returncode == 0
    assert time.monotonic() - started < 1.0  # already drained for long enough

    assert host.run("undrain").returncode == 0
    assert not host.status().drained
    assert host.run("undrain").returncode == 0


def test_commands_that_change_the_host_wait_for_each_other(host):
    drain = subprocess.Popen(["bash", str(FILES_DIR / "app-deploy.sh"), "drain"],
                             env={**host.env, "DRAIN_SECONDS": "2"})
    time.sleep(0.5)
    assert host.status().drained  # status does not wait for the lock
    started = time.monotonic()

    assert host.run("undrain").returncode == 0

    assert time.monotonic() - started >= 1.0  # waited for the drain to finish
    assert drain.wait(timeout=10) == 0
    assert not host.status().drained


def test_a_first_deploy_that_never_gets_healthy_is_left_running(host):
    result = host.run(f"{REPO}:bad-1.0")

    assert result.returncode == 1
    assert result.stderr.endswith("no previous image to restore, left it running\n")
    assert host.status() == HostStatus(image=f"{REPO}:bad-1.0", previous=None, drained=False,
                                       healthy=False)


def test_only_the_running_and_the_previous_image_are_kept(host):
    deployed(host, "1.0", "2.0", "3.0")

    images = host.docker()["images"]

    assert sorted(images) == [f"{REPO}:2.0", f"{REPO}:3.0"]


def test_nonsense_is_refused(host):
    for args, message in ((["--frobnicate"], "unknown option"),
                          (["Not An Image"], "not an image name")):
        result = host.run(*args)
        assert result.returncode == 1 and message in result.stderr
    assert host.run("--help").returncode == 0
    assert "app-deploy IMAGE" in host.run("--help").stdout
    assert host.run().returncode == 2


def test_settings_come_from_the_config_file_unless_the_environment_has_them(host):
    config = host.root / "deploy.env"
    config.write_text("DRAIN_SECONDS=not-a-number\nHEALTH_TIMEOUT=1.5\n")
    host.env["APP_DEPLOY_CONFIG"] = str(config)
    del host.env["HEALTH_TIMEOUT"]

    bad = run_script("app-deploy.sh", "status",
                     env={k: v for k, v in host.env.items() if k != "DRAIN_SECONDS"})
    assert bad.returncode == 1
    assert bad.stderr == "app-deploy: DRAIN_SECONDS must be a number of seconds\n"

    result = host.run(f"{REPO}:bad-1.0", DRAIN_SECONDS="0")
    assert "within 1.5s" in result.stderr  # HEALTH_TIMEOUT from the file
