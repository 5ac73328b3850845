"""Every script the hosts run: ShellCheck, and the small ones' behaviour."""
from __future__ import annotations

import subprocess
import sys

import pytest

from provisioning.cloud_config import FILES_DIR, host_text
from tests.tools import require_tool
from tests.provisioning.conftest import SCRIPT_ENV, fake_command, run_script

SHELL_SCRIPTS = sorted(FILES_DIR.glob("*.sh"))
PYTHON_SCRIPTS = sorted(FILES_DIR.glob("*.py"))


def test_the_scripts_are_all_there():
    assert {p.name for p in SHELL_SCRIPTS} == {
        "app-deploy.sh", "app-first-boot.sh", "boot-step.sh", "db-backup.sh", "db-setup.sh",
        "filebeat-ca-refresh.sh",
        "install-packages.sh",
        "log-stack.sh", "nfs-volume.sh", "pull-images.sh"}


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_finds_nothing(script):
    shellcheck = require_tool("shellcheck")

    # -x follows the shared library each script sources, so it is checked in context too.
    result = subprocess.run([shellcheck, "--shell=bash", "--severity=style", "-x",
                             "--source-path=SCRIPTDIR", str(script)],
                            capture_output=True, text=True)

    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_every_shell_script_is_strict_bash(script):
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -euo pipefail" in lines


@pytest.mark.parametrize("script", PYTHON_SCRIPTS, ids=lambda p: p.name)
def test_python_helpers_compile_and_use_only_the_system_python(script):
    source = script.read_text()
    compile(source, str(script), "exec")
    assert source.startswith("#!/usr/bin/env python3\n")


# --- install-packages ----------------------------------------------------------------------

@pytest.fixture
def fake_apt(tmp_path):
    """apt-get that fails its first ``FAILURES`` calls, logging every call."""
    counter, log = tmp_path / "calls", tmp_path / "apt.log"
    return fake_command(tmp_path, "apt-get", f"""
echo "$*" >> "{log}"
count=$(( $(cat "{counter}" 2>/dev/null || echo 0) + 1 ))
echo "$count" > "{counter}"
(( count > ${{FAILURES:-0}} ))
"""), log


def test_install_packages_retries_until_the_archive_answers(fake_apt, clean_env):
    apt, log = fake_apt
    env = {**clean_env, "APT_GET": str(apt), "APT_RETRY_SECONDS": "0", "FAILURES": "3"}

    result = run_script("install-packages.sh", "docker.io", "python3-boto3", env=env,
                        check=True)

    calls = log.read_text().splitlines()
    assert len(calls) == 6
    assert all(call.endswith("--error-on=any update") for call in calls[:4])
    assert calls[4].endswith(" upgrade")
    assert calls[5].endswith("--no-install-recommends install docker.io python3-boto3")
    assert all("--force-confold" in call for call in calls)
    assert result.stdout.count("apt-get update failed; retrying") == 3


def test_install_packages_gives_up_after_its_deadline(fake_apt, clean_env):
    apt, _ = fake_apt
    env = {**clean_env, "APT_GET": str(apt), "APT_RETRY_SECONDS": "0",
           "APT_WAIT_SECONDS": "0", "FAILURES": "99"}

    result = run_script("install-packages.sh", "nfs-common", env=env)

    assert result.returncode == 1
    assert result.stderr == ("install-packages: error: apt-get update kept failing "
                             "for 0s\n")


# --- pull-images ---------------------------------------------------------------------------

def test_pull_images_retries_each_image(tmp_path, clean_env):
    log = tmp_path / "pulls"
    docker = fake_command(tmp_path, "docker", f"""
echo "$*" >> "{log}"
[[ $(grep -c "$3" "{log}") -gt 2 ]]
""")
    env = {**clean_env, "DOCKER": str(docker), "PULL_RETRY_SECONDS": "0"}

    run_script("pull-images.sh", "caddy:2.11.7", "busybox:1.37", env=env, check=True)

    assert log.read_text().splitlines() == ["pull --quiet caddy:2.11.7"] * 3 + [
        "pull --quiet busybox:1.37"] * 3


def test_pull_images_fails_after_its_attempts(tmp_path, clean_env):
    docker = fake_command(tmp_path, "docker", "exit 1\n")
    env = {**clean_env, "DOCKER": str(docker), "PULL_RETRY_SECONDS": "0",
           "PULL_ATTEMPTS": "2"}

    result = run_script("pull-images.sh", "caddy:2.11.7", env=env)

    assert result.returncode == 1
    assert result.stderr == "pull-images: error: cannot pull caddy:2.11.7 after 2 attempts\n"


# --- log-stack memory sizing ---------------------------------------------------------------

@pytest.mark.parametrize("total_kib, es_mib, kibana_mib", [
    (3_955_100, 1163, 768),   # t3.medium: the design's LOG-01
    (1_940_000, 512, 512),    # t3.small (staging): Elasticsearch's floor
    (16_000_000, 7044, 768),  # a larger host
])
def test_elasticsearch_gets_half_the_memory_minus_kibanas_share(tmp_path, clean_env, total_kib,
                                                                es_mib, kibana_mib):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {total_kib} kB\nMemFree:        1000 kB\n")
    env = {**clean_env, "MEMINFO": str(meminfo), "LOG_STACK_CONFIG": str(tmp_path / "none")}

    result = run_script("log-stack.sh", "memory", env=env, check=True)

    assert result.stdout == f"ES_HEAP_MB={es_mib}\nKIBANA_HEAP_MB={kibana_mib}\n"
    assert es_mib + kibana_mib <= total_kib // 1024 // 2 or es_mib == 512


def test_log_stack_without_a_command_prints_its_usage(clean_env):
    result = run_script("log-stack.sh", env=clean_env)
    assert result.returncode == 2 and "log-stack up" in result.stderr


def test_db_backup_without_a_command_prints_its_usage(clean_env):
    result = run_script("db-backup.sh", env=clean_env)
    assert result.returncode == 2 and "db-backup restore --latest|--to TIME" in result.stderr


@pytest.mark.parametrize("script, args, status, stream, expected", [
    ("app-deploy.sh", ["--help"], 0, "stdout",
     ["app-deploy IMAGE", "app-deploy --rollback", "app-deploy drain", "app-deploy status"]),
    ("db-backup.sh", ["--help"], 2, "stderr",
     ["db-backup init", "db-backup restore --latest|--to TIME", "db-backup dumps | dump"]),
    ("log-stack.sh", [], 2, "stderr",
     ["log-stack up", "log-stack certificates", "log-stack memory"]),
])
def test_usage_survives_the_comment_stripping_of_user_data(tmp_path, clean_env, script, args,
                                                           status, stream, expected):
    """The script as user data ships it (comment lines left out), run for its usage."""
    shipped = tmp_path / script
    shipped.write_text(host_text(script))
    assert len(shipped.read_text()) < len((FILES_DIR / script).read_text())
    env = {**clean_env, **SCRIPT_ENV, "APP_DEPLOY_CONFIG": str(tmp_path / "none"),
           "DB_BACKUP_CONFIG": str(tmp_path / "none"), "LOG_STACK_CONFIG": str(tmp_path / "none")}
    result = subprocess.run(["bash", str(shipped), *args], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == status, result.stderr
    printed = getattr(result, stream)
    for line in expected:
        assert line in printed, (line, printed)
    assert "shellcheck" not in printed


def test_the_health_agent_embedded_in_user_data_accepts_the_flags_its_unit_passes():
    """The unit's command line, against the agent's own argument parser."""
    agent = FILES_DIR / "health_agent.py"

    result = subprocess.run([sys.executable, str(agent), "--help"], capture_output=True,
                            text=True, check=True)

    for flag in ("--port", "--drain-file", "--app-health-url", "--app-timeout"):
        assert flag in result.stdout


# --- app-first-boot ------------------------------------------------------------------------

DEPLOYED = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/webapp/app:3f2c1d0"


@pytest.fixture
def first_boot(tmp_path, clean_env):
    """app-first-boot with an ssm-parameter answering PARAMETER_ANSWER and a recording
    app-deploy."""
    calls = tmp_path / "app-deploy.calls"
    ssm = fake_command(tmp_path, "ssm-parameter", """
case ${PARAMETER_ANSWER:-missing} in
    missing) echo "ssm-parameter: cannot get $2: ParameterNotFound" >&2; exit 1 ;;
    denied) echo "ssm-parameter: cannot get $2: AccessDeniedException" >&2; exit 3 ;;
    *) echo "$PARAMETER_ANSWER" ;;
esac
""")
    deploy = fake_command(tmp_path, "app-deploy", f'echo "$*" >> "{calls}"\n')
    env = {**clean_env, "SSM_PARAMETER": str(ssm), "APP_DEPLOY": str(deploy),
           "APP_DEPLOY_CONFIG": str(tmp_path / "none"),
           "DEPLOYED_IMAGE_PARAMETER": "/webapp/production/app/image"}

    def run(**extra):
        result = run_script("app-first-boot.sh", env={**env, **extra})
        started = calls.read_text().splitlines() if calls.exists() else []
        return result, started
    return run


def test_first_boot_starts_the_image_the_last_rollout_deployed(first_boot):
    result, started = first_boot(PARAMETER_ANSWER=DEPLOYED, CONFIGURED_IMAGE="app:old")
    assert result.returncode == 0 and started == [DEPLOYED]


def test_first_boot_falls_back_to_the_configured_image(first_boot):
    result, started = first_boot(CONFIGURED_IMAGE="registry.example.com/app:1.0")
    assert result.returncode == 0 and started == ["registry.example.com/app:1.0"]


def test_first_boot_with_no_image_at_all_waits_for_the_rollout(first_boot):
    result, started = first_boot()
    assert result.returncode == 0 and started == []
    assert "no image yet: the next rolling update starts the app" in result.stdout


def test_first_boot_fails_when_ssm_cannot_be_asked(first_boot):
    result, started = first_boot(PARAMETER_ANSWER="denied", CONFIGURED_IMAGE="app:1")
    assert result.returncode == 1 and started == []
    assert "AccessDeniedException" in result.stderr
