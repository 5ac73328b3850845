"""The AWS path: discovery by tags (moto), every SSM outcome (botocore Stubber), and the
commands sent to hosts and to LB-01 run for real in a local shell."""
import base64
import json
import subprocess

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from rollout_fakes import fake_http_server

from rollout.aws import (DiscoveryError, LoadBalancerHost, SsmAdminTransport, SsmHostAdapter,
                         SsmRunner, discover, lease_lock, record_deployed_image,
                         shell_command)
from rollout.caddy_admin import CaddyAdmin, LoadBalancerError
from rollout.hosts import HostUnreachable
from rollout.locking import LockError
from rollout.model import AppHost, CommandResult
from tests.tools import require_tool

REGION = "eu-west-1"
COMMAND_ID = "11111111-2222-3333-4444-555555555555"


# ------------------------------------------------------------------------------ discovery

@pytest.fixture
def ec2():
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def launch(ec2, name, role, environment="production", ip=None):
    kwargs = {"PrivateIpAddress": ip} if ip else {}
    subnet = _subnet(ec2)
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        SubnetId=subnet, TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "Name", "Value": name}, {"Key": "Role", "Value": role},
            {"Key": "Environment", "Value": environment}]}], **kwargs)["Instances"][0]
    return instance["InstanceId"]


def _subnet(ec2):
    subnets = ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": ["10.0.2.0/24"]}])
    if subnets["Subnets"]:
        return subnets["Subnets"][0]["SubnetId"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    return ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]


def test_discovers_lb_and_running_app_hosts_of_one_environment(ec2):
    lb = launch(ec2, "production-LB-01", "lb")
    apps = {n: launch(ec2, f"production-APP-{n}", "app", ip=f"10.0.2.{20 + n}")
            for n in (1, 2, 10)}
    stopped = launch(ec2, "production-APP-3", "app")
    ec2.stop_instances(InstanceIds=[stopped])
    launch(ec2, "staging-APP-1", "app", environment="staging")
    launch(ec2, "staging-LB-01", "lb", environment="staging")
    launch(ec2, "production-DB-01", "db")

    fleet = discover(ec2, "production")

    assert fleet.lb.instance_id == lb and fleet.lb.name == "production-LB-01"
    assert [h.name for h in fleet.app_hosts] == [
        "production-APP-1", "production-APP-2", "production-APP-10"]
    first = fleet.app_hosts[0]
    assert first.instance_id == apps[1]
    assert first.upstream == "10.0.2.21:5000"
    assert first.health_url == "http://10.0.2.21:5001/health"


def test_discovery_requires_a_running_lb_and_finds_every_one(ec2):
    launch(ec2, "production-APP-1", "app")
    with pytest.raises(DiscoveryError, match="no running instance tagged .*Role=lb"):
        discover(ec2, "production")
    second = launch(ec2, "production-LB-02", "lb", ip="10.0.2.6")
    first = launch(ec2, "production-LB-01", "lb", ip="10.0.2.5")
    fleet = discover(ec2, "production")
    assert [(lb.instance_id, lb.name, lb.private_ip) for lb in fleet.lbs] == [
        (first, "production-LB-01", "10.0.2.5"), (second, "production-LB-02", "10.0.2.6")]
    assert fleet.lb.instance_id == first


def test_hosts_sharing_a_name_tag_stay_distinguishable(ec2):
    launch(ec2, "production-LB-01", "lb")
    a = launch(ec2, "production-APP-1", "app")
    b = launch(ec2, "production-APP-1", "app")
    names = {h.name for h in discover(ec2, "production").app_hosts}
    assert names == {f"production-APP-1 ({a})", f"production-APP-1 ({b})"}


def test_discovery_errors_are_reported_not_raised_raw():
    client = boto3.client("ec2", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("describe_instances", "UnauthorizedOperation", "not allowed")
        with pytest.raises(DiscoveryError, match="UnauthorizedOperation"):
            discover(client, "production")


# ---------------------------------------------------------------------------- SSM runner

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def ssm():
    client = boto3.client("ssm", region_name=REGION, aws_access_key_id="x",
                          aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def runner_for(client, clock=None, grace=10.0):
    clock = clock or Clock()
    # Polls every second from the start, so the number of polls is easy to count.
    return SsmRunner(client, poll_interval=1.0, first_poll=1.0, delivery_grace=grace,
                     clock=clock, sleep=clock.sleep)


def expect_send(stub, ids, script=ANY, timeout="30"):
    stub.add_response("send_command", {"Command": {"CommandId": COMMAND_ID}}, {
        "InstanceIds": ids, "DocumentName": "AWS-RunShellScript", "Comment": ANY,
        "TimeoutSeconds": ANY,
        "Parameters": {"commands": [script] if script is not ANY else ANY,
                       "executionTimeout": [timeout]}})


def invocation(stub, instance, status, details=None, code=-1, out="", err=""):
    stub.add_response("get_command_invocation", {
        "CommandId": COMMAND_ID, "InstanceId": instance, "Status": status,
        "StatusDetails": details or status, "ResponseCode": code,
        "StandardOutputContent": out, "StandardErrorContent": err},
        {"CommandId": COMMAND_ID, "InstanceId": instance})


def missing(stub, instance):
    stub.add_client_error("get_command_invocation", "InvocationDoesNotExist", "",
                          expected_params={"CommandId": COMMAND_ID, "InstanceId": instance})


def test_success_after_the_invocation_appears(ssm):
    client, stub = ssm
    expect_send(stub, ["i-1"], script="echo hi")
    missing(stub, "i-1")                      # right after send_command: not there yet
    invocation(stub, "i-1", "Pending")
    invocation(stub, "i-1", "Delayed")
    invocation(stub, "i-1", "InProgress")
    invocation(stub, "i-1", "Success", code=0, out="hi\n")
    result = runner_for(client).run("i-1", "echo hi", 30)
    assert result.ok and result.stdout == "hi\n"


def test_failed_carries_the_exit_status_and_stderr(ssm):
    client, stub = ssm
    expect_send(stub, ["i-1"])
    reason = "app-deploy: app:2 failed its health check within 60s; restored app:1"
    invocation(stub, "i-1", "Failed", code=1, err=f"pulling\n{reason}\n")
    result = runner_for(client).run("i-1", "app-deploy app:2", 30)
    assert not result.ok and result.exit_code == 1 and result.error is None
    assert result.reason() == reason


@pytest.mark.parametrize("status, details, expected", [
    ("TimedOut", "ExecutionTimedOut", "ran past its execution timeout"),
    ("TimedOut", "DeliveryTimedOut", "was not delivered in time"),
    ("Cancelled", "Cancelled", "was cancelled"),
    ("Failed", "Undeliverable", "failed (Undeliverable)"),
    ("Failed", "Terminated", "failed (Terminated)"),
])
def test_unfinished_commands_become_errors(ssm, status, details, expected):
    client, stub = ssm
    expect_send(stub, ["i-1"])
    invocation(stub, "i-1", status, details=details)
    result = runner_for(client).run("i-1", "true", 30)
    assert not result.ok and result.exit_code is None
    assert expected in result.error and COMMAND_ID in result.error


def test_cancelling_is_waited_for_until_cancelled(ssm):
    client, stub = ssm
    expect_send(stub, ["i-1"])
    invocation(stub, "i-1", "Cancelling")
    invocation(stub, "i-1", "Cancelled")
    result = runner_for(client).run("i-1", "true", 30)
    assert not result.ok and "was cancelled" in result.error


def test_an_invocation_that_never_appears_is_an_error_after_the_grace_period(ssm):
    client, stub = ssm
    expect_send(stub, ["i-1"])
    for _ in range(11):                      # t = 0..10 s: grace 10 s, polled every second
        missing(stub, "i-1")
    result = runner_for(client, grace=10).run("i-1", "true", 30)
    assert not result.ok
    assert "InvocationDoesNotExist" in result.error and "SSM agent" in result.error


def test_a_command_past_its_deadline_is_cancelled(ssm):
    client, stub = ssm
    expect_send(stub, ["i-1"], timeout="5")
    for _ in range(46):                      # 5 s execution + 10 s grace + 30 s slack
        invocation(stub, "i-1", "InProgress")
    stub.add_response("cancel_command", {}, {"CommandId": COMMAND_ID, "InstanceIds": ["i-1"]})
    result = runner_for(client, grace=10).run("i-1", "sleep 600", 5)
    assert not result.ok and "cancelled" in result.error


def test_send_command_rejected_for_an_unmanaged_instance(ssm):
    client, stub = ssm
    stub.add_client_error("send_command", "InvalidInstanceId", "Instances not in a valid state")
    result = runner_for(client).run("i-1", "true", 30)
    assert not result.ok and "InvalidInstanceId" in result.error
    assert "registered with SSM" in result.error


def test_polls_back_off_from_a_short_first_wait(ssm):
    client, stub = ssm
    expect_send(stub, ["i-1"])
    for _ in range(4):
        invocation(stub, "i-1", "InProgress")
    invocation(stub, "i-1", "Success", code=0)
    clock = Clock()
    waits = []
    runner = SsmRunner(client, poll_interval=1.0, first_poll=0.2, clock=clock,
                       sleep=lambda s: (waits.append(s), clock.sleep(s)))
    assert runner.run("i-1", "true", 30).ok
    assert waits == [0.2, 0.4, 0.8, 1.0]


def test_throttled_polls_are_retried(ssm):
    client, stub = ssm
    expect_send(stub, ["i-1"])
    stub.add_client_error("get_command_invocation", "ThrottlingException", "slow down")
    invocation(stub, "i-1", "Success", code=0, out="ok")
    assert runner_for(client).run("i-1", "true", 30).ok


def test_one_command_on_many_hosts_with_separate_outcomes(ssm):
    client, stub = ssm
    expect_send(stub, ["i-1", "i-2"])
    invocation(stub, "i-1", "Success", code=0, out="a")
    invocation(stub, "i-2", "InProgress")
    invocation(stub, "i-2", "Failed", code=2, err="boom")
    results = runner_for(client).run_many(["i-1", "i-2"], "app-deploy status", 30)
    assert results["i-1"].ok and results["i-1"].stdout == "a"
    assert results["i-2"].exit_code == 2 and results["i-2"].reason() == "boom"


# ------------------------------------------------- what is sent over SSM, run in a real shell

class ShellRunner:
    """Stands in for SsmRunner: runs the script in a local sh, as AWS-RunShellScript does."""

    def __init__(self):
        # What the scripts use on the hosts (Ubuntu has them all).
        for tool in ("sh", "curl", "base64", "flock"):
            require_tool(tool)
        self.scripts = []

    def run(self, instance_id, script, timeout):
        self.scripts.append((instance_id, script))
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                              timeout=timeout)
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def run_many(self, instance_ids, script, timeout):
        return {i: self.run(i, script, timeout) for i in instance_ids}


def test_app_deploy_command_quotes_arguments_and_passes_settings(tmp_path):
    recorder = tmp_path / "app-deploy"
    recorder.write_text('#!/bin/sh\nprintf "%s|" "$DRAIN_SECONDS" "$HEALTH_TIMEOUT" "$@"\n')
    recorder.chmod(0o755)
    runner = ShellRunner()
    adapter = SsmHostAdapter(runner, app_deploy=str(recorder))
    host = AppHost("production-APP-1", "10.0.2.11:5000", instance_id="i-1")
    weird = "registry.example/app:1.0; rm -rf /"
    result = adapter.run(host, [weird], env={"DRAIN_SECONDS": "10", "HEALTH_TIMEOUT": "120"},
                         timeout=30)
    assert result.stdout == f"10|120|{weird}|"
    assert shell_command("/usr/local/bin/app-deploy", ["drain"], {"DRAIN_SECONDS": "3"}) == \
        "DRAIN_SECONDS=3 /usr/local/bin/app-deploy drain"


def test_probe_view_reads_the_agent_through_the_host(tmp_path):
    runner = ShellRunner()
    view = {"drained": True, "probe": {"answer": 503, "streak": 2, "age": 0.3}, "probes": 9}
    with fake_http_server({"GET /agent": (200, json.dumps(view).encode())}) as (port, _):
        adapter = SsmHostAdapter(runner, agent_url=f"http://127.0.0.1:{port}/agent")
        got = adapter.probe_view(AppHost("APP-1", "10.0.2.11:5000", instance_id="i-1"))
        assert (got.drained, got.answer, got.streak) == (True, 503, 2)
        views = adapter.probe_views([AppHost("APP-1", "10.0.2.11:5000", instance_id="i-1"),
                                     AppHost("APP-2", "10.0.2.12:5000", instance_id="i-2")])
        assert views["APP-2"].answer == 503 and len(runner.scripts) == 3
    adapter = SsmHostAdapter(runner, agent_url="http://127.0.0.1:9/agent")
    with pytest.raises(HostUnreachable):
        adapter.probe_view(AppHost("APP-1", "10.0.2.11:5000", instance_id="i-1"))
    views = adapter.probe_views([AppHost("APP-1", "10.0.2.11:5000", instance_id="i-1")])
    assert isinstance(views["APP-1"], HostUnreachable)


def test_caddy_admin_over_ssm_reads_and_patches_through_curl():
    handler = {"@id": "app-upstreams", "handler": "reverse_proxy",
               "upstreams": [{"dial": "10.0.2.11:5000"}],
               "health_checks": {"active": {"port": 5001, "interval": "2s", "timeout": "1s",
                                            "passes": 2, "fails": 1}}}
    routes = {"GET /id/app-upstreams": (200, json.dumps(handler).encode()),
              "PATCH /id/app-upstreams/upstreams": (200, b""),
              "GET /reverse_proxy/upstreams": (200, b'[{"address": "10.0.2.11:5000", '
                                                    b'"num_requests": 4, "fails": 0}]')}
    with fake_http_server(routes) as (port, requests):
        lb = LoadBalancerHost("i-lb", "production-LB-01", "10.0.1.10")
        admin = CaddyAdmin(SsmAdminTransport(ShellRunner(), lb,
                                             admin_url=f"http://localhost:{port}"))
        pool = admin.pool()
        assert pool.dials == ["10.0.2.11:5000"]
        assert (pool.interval, pool.timeout, pool.passes, pool.fails) == (2.0, 1.0, 2, 1)
        assert admin.in_flight() == {"10.0.2.11:5000": 4}
        # A body with quotes and a newline survives the trip through the shell.
        upstreams = [{"dial": "10.0.2.11:5000"}, {"dial": "10.0.2.12:5000", "x": "a'b\n\"c"}]
        admin.set_upstreams(upstreams)
    method, path, body, host = requests[-1]
    assert (method, path) == ("PATCH", "/id/app-upstreams/upstreams")
    assert json.loads(body) == upstreams
    assert host == f"localhost:{port}"     # what Caddy's admin API insists on


def test_caddy_admin_over_ssm_unreachable_and_unknown_id():
    lb = LoadBalancerHost("i-lb", "production-LB-01", None)
    admin = CaddyAdmin(SsmAdminTransport(ShellRunner(), lb, admin_url="http://127.0.0.1:9"))
    with pytest.raises(LoadBalancerError, match="unreachable"):
        admin.pool()
    with fake_http_server({}) as (port, _):
        admin = CaddyAdmin(SsmAdminTransport(ShellRunner(), lb,
                                             admin_url=f"http://127.0.0.1:{port}"))
        with pytest.raises(LoadBalancerError, match="no object with @id 'app-upstreams'"):
            admin.pool()


def test_admin_script_encodes_the_body():
    lb = LoadBalancerHost("i-lb", "production-LB-01", None)
    script = SsmAdminTransport(ShellRunner(), lb).script("PATCH", "/id/x/upstreams", b'[1]')
    assert base64.b64encode(b"[1]").decode() in script
    assert script.endswith(" http://localhost:2019/id/x/upstreams")


# ------------------------------------------------------------------ the lease lock on LB-01

def lease_runner(tmp_path):
    runner = ShellRunner()
    lb = LoadBalancerHost("i-lb", "production-LB-01", None)

    def make(force=False):
        lock = lease_lock(runner, lb, ttl=600, force=force)
        lock.directory = str(tmp_path / "lease")
        return lock
    return make


def test_lease_allows_one_holder_and_names_it(tmp_path):
    make = lease_runner(tmp_path)
    first, second = make(), make()
    first.acquire()
    with pytest.raises(LockError, match=r"another rollout holds the lease.*lapses in \d+s"):
        second.acquire()
    first.refresh()
    first.release()
    second.acquire()
    second.release()


def test_lease_of_a_dead_run_lapses_or_is_broken(tmp_path):
    make = lease_runner(tmp_path)
    dead = make()
    dead.acquire()
    lease = tmp_path / "lease" / "lease"
    expires, owner, rest = lease.read_text().split(" ", 2)
    lease.write_text(f"{int(expires) - 10_000} {owner} {rest}")
    successor = make()
    successor.acquire()                       # the lease lapsed
    with pytest.raises(LockError, match="lost the rollout lease"):
        dead.refresh()
    forced = make(force=True)
    forced.acquire()                          # --break-lock
    with pytest.raises(LockError, match="lost"):
        successor.refresh()


# ------------------------------------------------------------------------ deployed image

def test_the_deployed_image_is_recorded_for_hosts_created_later():
    with mock_aws():
        ssm = boto3.client("ssm", region_name=REGION)
        name = "/webapp/production/app/image"
        assert record_deployed_image(ssm, name, "repo/app:1") is None
        assert record_deployed_image(ssm, name, "repo/app:2") is None
        parameter = ssm.get_parameter(Name=name)["Parameter"]
    assert (parameter["Value"], parameter["Type"], parameter["Version"]) == (
        "repo/app:2", "String", 2)


def test_an_image_that_cannot_be_recorded_is_a_problem_naming_it():
    ssm = boto3.client("ssm", region_name=REGION)
    with Stubber(ssm) as stub:
        stub.add_client_error("put_parameter", "AccessDeniedException", "not allowed")
        problem = record_deployed_image(ssm, "/webapp/production/app/image", "repo/app:2")
    assert problem.startswith("every host serves repo/app:2, but it could not be recorded in "
                              "/webapp/production/app/image (")
    assert problem.endswith("hosts created later would start an older image; run the "
                            "rollout again")
