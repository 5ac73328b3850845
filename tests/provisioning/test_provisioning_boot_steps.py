"""A host's first boot fails loudly: the rendered boot steps, run by cloud-init's own
``runparts`` (what its scripts_per_instance module calls) and the real ``boot-step``, with
stand-ins for systemd-run and for each step's command."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from core.settings import ROLES
from provisioning.cloud_config import BOOT_COMPLETE, BOOT_STEP_PATH, BOOT_STEPS_DIR, CloudConfig
from rollout.readiness import boot_script
from tests.provisioning.conftest import (boot_step_files, boot_steps, fake_command,
                                         render_host, written_file)
from tests.tools import require_tool

# systemd-run as boot-step calls it: record the unit, run the command after "--", and keep
# the unit "failed" when the command fails, as systemd does.
SYSTEMD_RUN = """
unit=""
for argument in "$@"; do
    shift
    case $argument in --unit=*) unit=${argument#--unit=} ;; --) break ;; esac
done
echo "start $unit" >> "$BOOT_LOG"
if "$@"; then echo "done $unit" >> "$BOOT_LOG"; else
    status=$?; echo "failed $unit" >> "$BOOT_LOG"; exit "$status"; fi
"""
# Every step's program: log the call; fail when it is the one named in FAIL_PROGRAM.
STEP_PROGRAM = """
echo "run $(basename "$0") $*" >> "$BOOT_LOG"
[[ $(basename "$0") != "${FAIL_PROGRAM:-}" ]]
"""


class Boot:
    """One host's rendered boot steps on disk, ready for cloud-init's runparts."""

    def __init__(self, root: Path, cloud_config: dict):
        self.steps_dir = root / "per-instance"
        self.steps_dir.mkdir()
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "boot.log"
        self.state = root / "state"
        for entry in boot_step_files(cloud_config):
            path = self.steps_dir / Path(entry["path"]).name
            path.write_text(entry["content"])
            path.chmod(0o755)
        runner = self.bin / "boot-step"
        runner.write_text(written_file(cloud_config, BOOT_STEP_PATH)["content"])
        runner.chmod(0o755)
        fake_command(self.bin, "systemd-run", SYSTEMD_RUN)
        fake_command(self.bin, "journalctl", 'echo "journal: $*"\n')
        for command in boot_steps(cloud_config):
            program = next(word for word in command if "=" not in word or word == "env")
            program = command[command.index("env") + 1:] if program == "env" else [program]
            program = next(word for word in program if "=" not in word)
            fake_command(self.bin, program, STEP_PROGRAM)
        # boot-step's own reset-failed calls go to the same systemctl as the steps'.
        fake_command(self.bin, "systemctl", STEP_PROGRAM)

    def env(self, **extra) -> dict:
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "BOOT_LOG": str(self.log),
                "BOOT_STATE_DIR": str(self.state), "LANG": "C.UTF-8", **extra}

    def run_by_cloud_init(self, **extra) -> subprocess.CompletedProcess:
        """cloud-init's scripts_per_instance: runparts over the folder, in name order."""
        require_tool("cloud-init")
        code = ("import sys\nfrom cloudinit import subp\n"
                "try:\n    subp.runparts(sys.argv[1])\n"
                "except RuntimeError as error:\n    sys.exit(str(error))\n")
        return subprocess.run(["/usr/bin/python3", "-c", code, str(self.steps_dir)],
                              env=self.env(**extra), capture_output=True, text=True,
                              timeout=60)

    def events(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def step_names(cloud_config: dict) -> list[str]:
    """The steps, less the last script, which marks the boot complete."""
    names = [Path(entry["path"]).name.split("-", 1)[1] for entry in boot_step_files(cloud_config)]
    assert names[-1] == BOOT_COMPLETE
    return names[:-1]


def readiness(boot: "Boot", cloud_init_status: str) -> str:
    """The rolling update's readiness line for this boot's state, cloud-init saying STATUS."""
    fake_command(boot.bin, "cloud-init", f"echo 'status: {cloud_init_status}'\n")
    return subprocess.run(["sh", "-c", boot_script(str(boot.state), poll_seconds=0)],
                          env=boot.env(), capture_output=True, text=True,
                          timeout=30).stdout.strip()


@pytest.fixture(params=ROLES)
def role_config(request, production) -> tuple[str, dict]:
    role = request.param
    return role, yaml.safe_load(render_host(production, production.host_names(role)[0]))


def test_no_step_is_left_to_runcmd(role_config):
    """runcmd is one sh script without set -e: a failed line in it is silently ignored."""
    _, config = role_config
    assert "runcmd" not in config and "bootcmd" not in config
    names = step_names(config)
    assert names and len(names) == len(set(names))


def test_every_step_runs_in_order_as_a_unit_named_after_it(role_config, tmp_path):
    _, config = role_config
    boot = Boot(tmp_path, config)

    result = boot.run_by_cloud_init()

    assert result.returncode == 0, result.stderr
    names = step_names(config)
    units = [line.split()[1] for line in boot.events() if line.startswith("done ")]
    assert units == [f"boot-{name}.service" for name in names]
    assert (boot.state / "done").read_text().splitlines() == names
    assert (boot.state / "complete").exists()
    assert readiness(boot, "done") == "boot complete"


@pytest.mark.parametrize("role, failing_program, failing_step", [
    ("db", "db-setup", "db-setup"),
    ("nfs", "nfs-volume", "nfs-volume"),
    ("app", "install-packages", "install-packages"),
    ("lb", "docker", "start-caddy"),
])
def test_a_failed_step_stops_the_boot_and_cloud_init_names_it(
        production, tmp_path, role, failing_program, failing_step):
    config = yaml.safe_load(render_host(production, production.host_names(role)[0]))
    boot = Boot(tmp_path, config)
    names = step_names(config)
    failing = names.index(failing_step)

    result = boot.run_by_cloud_init(FAIL_PROGRAM=failing_program)

    # The error cloud-init raises, and `cloud-init status --long` shows: the one failed step.
    script = f"{failing + 1:02d}-{failing_step}"
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"Runparts: 1 failures ({script}) in {len(names) + 1} attempted commands")
    # systemd keeps the step's unit failed: `systemctl --failed` names it too.
    assert f"failed boot-{failing_step}.service" in boot.events()
    # Nothing after it ran.
    started = [line.split()[1] for line in boot.events() if line.startswith("start ")]
    assert started == [f"boot-{name}.service" for name in names[:failing + 1]]
    assert (boot.state / "failed").read_text() == f"{failing_step}\n"
    # The completion script ran last, said why the boot is not complete, and failed nothing.
    assert not (boot.state / "complete").exists()
    assert f"the boot is not complete: boot step {failing_step} failed" in result.stderr
    assert readiness(boot, "error") == f"boot failed {failing_step}"


def test_a_failed_step_exits_non_zero_under_sh(production, tmp_path):
    """The step file alone, as any shell runs it: its exit status is the command's failure."""
    config = yaml.safe_load(render_host(production, "DB-01"))
    boot = Boot(tmp_path, config)
    (script,) = boot.steps_dir.glob("*-db-setup")

    failed = subprocess.run(["sh", str(script)], env=boot.env(FAIL_PROGRAM="db-setup"),
                            capture_output=True, text=True, timeout=30)

    assert failed.returncode == 1
    assert "boot-step: error: db-setup failed (attempt 1 of 1)" in failed.stderr
    assert "systemctl status boot-db-setup.service" in failed.stderr
    # The step's journal is repeated where cloud-init keeps the boot's output.
    assert "journal: --unit=boot-db-setup.service --lines=30" in failed.stdout
    (later,) = boot.steps_dir.glob("*-start-backup-timers")
    skipped = subprocess.run(["sh", str(later)], env=boot.env(), capture_output=True,
                             text=True, timeout=30)
    assert skipped.stderr == ("boot-step: start-backup-timers not run: boot step db-setup "
                              "failed before it\n")
    assert not any("db-backup-full.timer" in line for line in boot.events())


def test_after_a_fix_the_boot_resumes_where_it_stopped(production, tmp_path):
    config = yaml.safe_load(render_host(production, "DB-01"))
    boot = Boot(tmp_path, config)
    assert boot.run_by_cloud_init(FAIL_PROGRAM="db-setup").returncode != 0
    before = len(boot.events())

    (boot.state / "failed").unlink()
    result = boot.run_by_cloud_init()

    assert result.returncode == 0, result.stderr
    started = [line.split()[1] for line in boot.events()[before:] if line.startswith("start ")]
    assert started == ["boot-db-setup.service", "boot-backup-stanza.service",
                       "boot-start-backup-timers.service", "boot-first-backup.service"]
    # cloud-init's status stays "error" for this boot; the rollout counts the host booted.
    assert readiness(boot, "error") == "boot complete"


def test_the_db_01_rebuild_runbook_ends_with_a_host_the_rollout_accepts(production, tmp_path):
    """docs/hosts.md: backup-stanza fails on purpose; restore, init, then finish the boot."""
    config = yaml.safe_load(render_host(production, "DB-01"))
    boot = Boot(tmp_path, config)
    fake_command(boot.bin, "sleep", "exit 0\n")  # backup-stanza retries a minute apart
    assert boot.run_by_cloud_init(FAIL_PROGRAM="db-backup").returncode != 0
    assert (boot.state / "failed").read_text() == "backup-stanza\n"
    assert readiness(boot, "error") == "boot failed backup-stanza"
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "hosts.md").read_text()
    assert "sudo rm /var/lib/platform-boot/failed" in runbook
    assert "sudo run-parts /var/lib/cloud/scripts/per-instance" in runbook

    (boot.state / "failed").unlink()
    assert boot.run_by_cloud_init().returncode == 0
    assert readiness(boot, "error") == "boot complete"


def run_boot_step(tmp_path: Path, *args: str, fail_times: int = 0):
    """The real boot-step with a systemd-run whose command fails its first FAIL_TIMES runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_command(bin_dir, "systemd-run", SYSTEMD_RUN)
    fake_command(bin_dir, "systemctl", "exit 0\n")
    fake_command(bin_dir, "journalctl", "exit 0\n")
    counter = tmp_path / "attempts"
    fake_command(bin_dir, "flaky", f'echo x >> "{counter}"\n'
                 f'(( $(wc -l < "{counter}") > {fail_times} ))\n')
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "BOOT_LOG": str(tmp_path / "boot.log"),
           "BOOT_STATE_DIR": str(tmp_path / "state")}
    runner = Path(__file__).resolve().parents[2] / "provisioning" / "files" / "boot-step.sh"
    result = subprocess.run(["bash", str(runner), *args], env=env, capture_output=True,
                            text=True, timeout=30)
    attempts = len(counter.read_text().splitlines()) if counter.exists() else 0
    return result, attempts


def test_a_step_that_may_retry_is_retried_until_it_succeeds(tmp_path):
    result, attempts = run_boot_step(tmp_path, "log-stack", "--attempts", "3",
                                     "--retry-seconds", "0", "--", "flaky", fail_times=2)
    assert result.returncode == 0, result.stderr
    assert attempts == 3
    assert "log-stack: failed; retrying in 0s" in result.stdout


def test_a_step_that_keeps_failing_fails_after_its_attempts(tmp_path):
    result, attempts = run_boot_step(tmp_path, "log-stack", "--attempts", "2",
                                     "--retry-seconds", "0", "--", "flaky", fail_times=5)
    assert result.returncode == 1 and attempts == 2
    assert "log-stack failed (attempt 2 of 2)" in result.stderr


@pytest.mark.parametrize("args", [[], ["Bad Name", "--", "true"], ["name"],
                                  ["name", "--attempts", "0", "--", "true"],
                                  ["name", "--colour", "--", "true"]])
def test_boot_step_refuses_what_it_cannot_run(tmp_path, args):
    result, attempts = run_boot_step(tmp_path, *args)
    assert result.returncode == 1 and attempts == 0
    assert result.stderr.startswith("boot-step: error: usage: boot-step NAME")


def test_waiting_steps_retry_and_others_do_not(cloud_configs):
    scripts = {Path(entry["path"]).name: entry["content"]
               for config in cloud_configs.values() for entry in boot_step_files(config)}
    retried = {name.split("-", 1)[1] for name, text in scripts.items() if "--attempts" in text}
    # start-app waits for the image; pull-certificates (two LBs) waits for S3 and the
    # instance role, which may lag the first boot by a few seconds; NFS-01's export and the
    # stanza's lock on DB-01 wait on something outside the step.
    assert retried == {"log-stack", "start-app", "pull-certificates", "mount-backups",
                       "backup-stanza"}


def test_the_first_app_start_is_retried(production):
    settings = production.model_copy(update={
        "app": production.app.model_copy(update={"image": "registry.example.com/app:1"})})
    config = yaml.safe_load(render_host(settings, "APP-1"))
    (entry,) = [e for e in boot_step_files(config) if e["path"].endswith("-start-app")]
    assert "--attempts 3 --retry-seconds 60 --" in entry["content"]


def test_step_files_pass_shellcheck(cloud_configs, tmp_path):
    shellcheck = require_tool("shellcheck")
    paths = []
    for role, config in cloud_configs.items():
        for entry in boot_step_files(config):
            path = tmp_path / f"{role}-{Path(entry['path']).name}"
            path.write_text(entry["content"])
            paths.append(str(path))
    result = subprocess.run([shellcheck, "--shell=sh", "--severity=style", *paths],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_step_names_must_be_unique_and_short():
    config = CloudConfig(hostname="x")
    config.step("one", ["true"])
    with pytest.raises(ValueError):
        config.step("one", ["true"])
    with pytest.raises(ValueError):
        config.step("Two words", ["true"])
    assert BOOT_STEPS_DIR == "/var/lib/cloud/scripts/per-instance"
    assert os.path.basename(BOOT_STEP_PATH) == "boot-step"
