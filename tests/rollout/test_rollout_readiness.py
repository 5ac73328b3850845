"""The wait before a fresh environment's first rollout step: SSM registration (botocore's
Stubber), first boot (the script run for real against a stand-in cloud-init), Caddy's admin
API on every load balancer."""
import io
import os
import subprocess

import boto3
import pytest
from botocore.stub import Stubber
from rollout_fakes import FakeClock

from rollout.caddy_admin import CaddyAdmin, LoadBalancerError
from rollout.model import CommandResult
from rollout.readiness import Instance, NotReady, ReadinessWait, boot_script
from rollout.report import StepLog

HOSTS = [Instance("production-LB-01", "i-0000000000000000a"),
         Instance("production-APP-1", "i-0000000000000000b")]


def online(*ids):
    return {"InstanceInformationList": [{"InstanceId": i, "PingStatus": "Online"}
                                        for i in ids]}


class BootRunner:
    """SSM Run Command as the readiness wait uses it: the boot line of each host."""

    def __init__(self, lines):
        self.lines = lines
        self.calls = []

    def run(self, instance_id, script, timeout):
        self.calls.append((instance_id, script, timeout))
        line = self.lines[instance_id]
        if isinstance(line, CommandResult):
            return line
        return CommandResult(0, line + "\n")


class Admin:
    """The admin API transport: refused a few times, then 200."""

    def __init__(self, refusals=0):
        self.refusals = refusals

    def describe(self):
        return "fake"

    def request(self, method, path, body=None):
        assert (method, path) == ("GET", "/config/")
        if self.refusals:
            self.refusals -= 1
            raise LoadBalancerError("connection refused")
        return 200, b"{}"


def waiter(ssm, runner, timeout=600):
    out, clock = io.StringIO(), FakeClock()
    return ReadinessWait(ssm, runner, StepLog(out), timeout=timeout, poll=10, clock=clock,
                         sleep=clock.sleep), out


def test_waits_for_registration_boot_and_admin_api_with_a_line_per_host():
    ssm = boto3.client("ssm", region_name="eu-west-1")
    runner = BootRunner({h.instance_id: "boot done" for h in HOSTS})
    wait, out = waiter(ssm, runner)
    with Stubber(ssm) as stub:
        stub.add_response("describe_instance_information", {"InstanceInformationList": []})
        stub.add_response("describe_instance_information", online(HOSTS[1].instance_id))
        stub.add_response("describe_instance_information",
                          online(*[h.instance_id for h in HOSTS]))
        wait.wait(HOSTS, [CaddyAdmin(Admin(refusals=2), name="production-LB-01")])
        stub.assert_no_pending_responses()
    lines = [line.split("fleet", 1)[1].strip() for line in out.getvalue().splitlines()]
    # The boot lines come from parallel checks: their order between hosts may vary.
    assert lines[:5] == [
        "waiting up to 600s for 2 host(s) to be online in SSM with their first boot finished",
        "production-LB-01 (i-0000000000000000a): SSM agent not registered yet",
        "production-APP-1 (i-0000000000000000b): SSM agent not registered yet",
        "production-APP-1 (i-0000000000000000b): online in SSM",
        "production-LB-01 (i-0000000000000000a): online in SSM"]
    assert sorted(lines[5:7]) == [
        "production-APP-1 (i-0000000000000000b): first boot done",
        "production-LB-01 (i-0000000000000000a): first boot done"]
    assert lines[7:] == ["production-LB-01: Caddy's admin API answers"]
    assert all(timeout <= 600 for _, _, timeout in runner.calls)


def refused(lb_boot: str, app_boot: str) -> tuple[NotReady, str]:
    """Both hosts online in SSM, their boot scripts answering these: the refusal, the log."""
    ssm = boto3.client("ssm", region_name="eu-west-1")
    runner = BootRunner({HOSTS[0].instance_id: lb_boot, HOSTS[1].instance_id: app_boot})
    wait, out = waiter(ssm, runner)
    with Stubber(ssm) as stub:
        stub.add_response("describe_instance_information",
                          online(*[h.instance_id for h in HOSTS]))
        with pytest.raises(NotReady) as failure:
            wait.wait(HOSTS, [])
    return failure.value, out.getvalue()


def test_a_failed_first_boot_names_the_host_and_its_step():
    failure, _ = refused("boot done", "boot failed start-app")
    assert str(failure) == (
        "production-APP-1: first boot failed at step start-app (systemctl status "
        "boot-start-app.service, /var/log/cloud-init-output.log)")


def test_a_host_never_registered_is_named_when_the_wait_ends():
    ssm = boto3.client("ssm", region_name="eu-west-1")
    wait, out = waiter(ssm, BootRunner({}), timeout=30)
    with Stubber(ssm) as stub:
        for _ in range(4):
            stub.add_response("describe_instance_information", online(HOSTS[0].instance_id))
        with pytest.raises(NotReady, match=r"^production-APP-1 not online in SSM within 30s"):
            wait.wait(HOSTS, [])
    assert out.getvalue().count("SSM agent not registered yet") == 1


def test_an_admin_api_that_never_answers_stops_the_wait():
    ssm = boto3.client("ssm", region_name="eu-west-1")
    runner = BootRunner({h.instance_id: "boot done" for h in HOSTS})
    wait, _ = waiter(ssm, runner, timeout=60)
    with Stubber(ssm) as stub:
        stub.add_response("describe_instance_information",
                          online(*[h.instance_id for h in HOSTS]))
        with pytest.raises(NotReady, match="production-LB-02: Caddy's admin API did not "
                                           "answer within 60s: connection refused"):
            wait.wait(HOSTS, [CaddyAdmin(Admin(refusals=99), name="production-LB-02")])


def fake_cloud_init(tmp_path, statuses, then=None):
    """cloud-init that answers ``status`` with each of STATUSES in turn (the last one from
    then on); on its last answer it runs THEN (e.g. the boot completing meanwhile)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    answers = "\n".join(f"  {n}) echo 'status: {st}' ;;" for n, st in enumerate(statuses, 1))
    fake = bin_dir / "cloud-init"
    fake.write_text(f"#!/bin/sh\n[ \"$*\" = status ] || exit 9\necho x >> {calls}\n"
                    f"n=$(wc -l < {calls})\n"
                    f"[ \"$n\" -ge {len(statuses)} ] && {{ {then or ':'}; }}\n"
                    f"case $n in\n{answers}\n  *) echo 'status: {statuses[-1]}' ;;\nesac\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}


def run_boot_script(tmp_path, env):
    return subprocess.run(["sh", "-c", boot_script(str(tmp_path / "state"), poll_seconds=0)],
                          capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize("status, markers, line", [
    # An operator fixed a failed step and resumed the boot: cloud-init still says error.
    ("error", {"complete": "2026-12-02T10:00:00Z\n"}, "boot complete"),
    ("done", {"complete": "2026-12-02T10:00:00Z\n"}, "boot complete"),
    ("error", {"failed": "db-setup\n"}, "boot failed db-setup"),
    # A resumed boot still running, or a failure before the boot steps.
    ("error", {}, "boot error"),
    # A host booted before the completion marker existed.
    ("done", {}, "boot done"),
    (None, {}, "boot unknown"),
])
def test_the_boot_script_reads_the_platforms_boot_state(tmp_path, status, markers, line):
    state = tmp_path / "state"
    state.mkdir()
    for name, text in markers.items():
        (state / name).write_text(text)
    env = fake_cloud_init(tmp_path, [status or ""])
    result = run_boot_script(tmp_path, env)
    assert result.returncode == 0 and result.stdout == line + "\n"


def test_the_boot_script_waits_while_the_boot_runs(tmp_path):
    (tmp_path / "state").mkdir()
    complete = f"date > {tmp_path / 'state' / 'complete'}"
    env = fake_cloud_init(tmp_path, ["not started", "running", "running"], then=complete)
    result = run_boot_script(tmp_path, env)
    assert result.stdout == "boot complete\n"
    assert len((tmp_path / "calls").read_text().splitlines()) == 3


def test_a_resumed_boot_counts_and_one_not_complete_is_named():
    failure, log = refused("boot complete", "boot error")
    assert str(failure) == (
        "production-APP-1: first boot not complete, cloud-init says 'error' and "
        "/var/lib/platform-boot/complete is missing (cloud-init status --long; a resumed "
        "boot writes it at its end)")
    assert "production-LB-01 (i-0000000000000000a): first boot done" in log
