"""End to end on 127.0.0.0/8: Caddy 2.11.7 (the version LB-01 runs) as LB-01, four app hosts
(each with the real health agent and the local app-deploy), and keep-alive clients that never
retry, sending GET and POST requests with bodies for the whole rollout. Not one request may
fail."""
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from rollout.aws import record_deployed_image
from rollout.caddy_admin import CaddyAdmin, HttpAdminTransport
from rollout.lab.fleet import LocalFleet, free_port, http_get, running
from rollout.lab.load import LoadGenerator
from rollout.model import CommandResult
from rollout.readiness import Instance, ReadinessWait
from rollout.report import StepLog
from tests import tools

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]

V1, V2 = "registry.local/app:v1", "registry.local/app:v2"
# Caddy probes every 200 ms here, so 0.4 s covers one probe interval plus the requests in
# flight (the engine also checks that Caddy saw the drain before touching the app).
FAST = ["--drain-seconds", "0.4", "--check-interval", "0.1", "--healthy-checks", "2"]
CLIENTS = 8


@pytest.fixture
def lab(tmp_path):
    """``lab(size, **options)`` starts a LocalFleet; every one is stopped at the end."""
    caddy = tools.caddy()
    fleets = []

    def make(size=4, **options):
        options.setdefault("image", V1)
        fleet = LocalFleet(tmp_path / f"lab-{len(fleets)}", size, caddy=caddy,
                           health_interval="200ms", app_startup=0.1, **options)
        fleets.append(fleet)
        fleet.start()
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()


def rolling_update(fleet, *args, env=None, timeout=120):
    return subprocess.run(fleet.rollout_argv(*FAST, *args), capture_output=True, text=True,
                          timeout=timeout, env=env)


def wait_for(condition, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def traffic_flowing(load, more=40):
    """Wait until ``more`` further requests were answered."""
    target = load.stats.sent + more
    wait_for(lambda: load.stats.sent >= target, what=f"{more} more requests")


def assert_no_request_lost(load):
    stats = load.stats
    assert stats.failed == 0, f"{stats.failed} of {stats.sent} failed: {stats.failures[:5]}"
    assert stats.connections == CLIENTS, "a keep-alive connection was closed under a client"
    assert stats.sent >= 200 and stats.posts >= stats.sent // 2 - CLIENTS


@pytest.mark.parametrize("batch", ["1", "50%"])
def test_good_rollout_moves_every_host_without_losing_a_request(lab, tmp_path, batch):
    fleet = lab()
    summary = tmp_path / "summary.md"
    with LoadGenerator("127.0.0.1", fleet.http_port, clients=CLIENTS) as load:
        traffic_flowing(load)
        done = rolling_update(fleet, "--image", V2, "--batch-size", batch,
                              env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})
        finished = time.monotonic()
        traffic_flowing(load)
    assert done.returncode == 0, done.stdout + done.stderr
    assert fleet.images() == {f"APP-{n}": V2 for n in range(1, 5)}
    assert_no_request_lost(load)
    assert set(load.stats.versions) == {V1, V2}
    assert set(load.stats.versions_after(finished)) == {V2}
    assert re.search(r"^\d\d:\d\d:\d\dZ  host 3 of 4 +APP-3 +deploying " + re.escape(V2),
                     done.stdout, re.M)
    table = summary.read_text()
    assert f"### Rolling update of lab to {V2}: succeeded" in table
    assert table.count(f"| `{V1}` | `{V2}` | updated |") == 4
    assert all(not s["drained"] for s in fleet.statuses().values())


def test_bad_image_fails_its_health_check_and_the_fleet_stays_on_the_old_version(lab):
    fleet = lab()
    bad = "registry.local/app:v2-unhealthy"
    with LoadGenerator("127.0.0.1", fleet.http_port, clients=CLIENTS) as load:
        traffic_flowing(load)
        done = rolling_update(fleet, "--image", bad, "--health-timeout", "1")
        traffic_flowing(load)
    assert done.returncode == 1, done.stdout + done.stderr
    assert fleet.images() == {f"APP-{n}": V1 for n in range(1, 5)}
    assert_no_request_lost(load)
    assert set(load.stats.versions) == {V1}
    assert f"rolled back to {V1}: app-deploy {bad}: app-deploy: {bad} failed its health " \
           "check within 1s" in done.stdout
    # The rollout stopped at the first host.
    for host in fleet.hosts[1:]:
        assert set(fleet.commands(host)) <= {"status", V1}
    assert all(not s["drained"] and s["healthy"] for s in fleet.statuses().values())


def test_a_host_failing_late_rolls_back_the_hosts_already_updated(lab):
    fleet = lab(unhealthy_images={"APP-3": [V2]})
    with LoadGenerator("127.0.0.1", fleet.http_port, clients=CLIENTS) as load:
        traffic_flowing(load)
        # APP-1 and APP-2 must turn healthy within this on a loaded CI runner; APP-3 never does.
        done = rolling_update(fleet, "--image", V2, "--health-timeout", "5")
        finished = time.monotonic()
        traffic_flowing(load)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()
            if line.startswith("APP-")}
    assert "rolled back (rollout stopped)" in rows["APP-1"], done.stdout
    assert "rolled back (rollout stopped)" in rows["APP-2"], done.stdout
    assert f"rolled back to {V1}" in rows["APP-3"], done.stdout
    assert "not started (rollout stopped)" in rows["APP-4"], done.stdout
    assert fleet.images() == {f"APP-{n}": V1 for n in range(1, 5)}
    assert_no_request_lost(load)
    assert set(load.stats.versions) == {V1, V2}
    assert set(load.stats.versions_after(finished)) == {V1}


def test_unreachable_admin_api_touches_no_host(lab):
    fleet = lab()
    before = {h.name: fleet.commands(h) for h in fleet.hosts}
    fleet.write_inventory(admin=f"http://127.0.0.1:{free_port()}")
    done = rolling_update(fleet, "--image", V2)
    assert done.returncode == 3
    assert "Caddy admin API" in done.stderr and "no host was touched" in done.stderr
    assert {h.name: fleet.commands(h) for h in fleet.hosts} == before
    assert fleet.images() == {f"APP-{n}": V1 for n in range(1, 5)}


def test_killed_mid_run_then_run_again_completes(lab):
    fleet = lab()
    with LoadGenerator("127.0.0.1", fleet.http_port, clients=CLIENTS) as load:
        traffic_flowing(load)
        process = subprocess.Popen(fleet.rollout_argv(*FAST, "--image", V2),
                                   stdout=subprocess.PIPE, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in process.stdout],
                         daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if re.search(r"host 2 of 4 +APP-2 +deploying", line):
                break
        process.kill()                      # SIGKILL: no clean-up of any kind
        process.wait(10)
        assert fleet.statuses()["APP-2"]["drained"]

        again = rolling_update(fleet, "--image", V2)
        finished = time.monotonic()
        traffic_flowing(load)
    assert again.returncode == 0, again.stdout + again.stderr
    assert fleet.images() == {f"APP-{n}": V2 for n in range(1, 5)}
    assert all(not s["drained"] for s in fleet.statuses().values())
    assert_no_request_lost(load)
    assert set(load.stats.versions_after(finished)) == {V2}
    assert re.search(rf"APP-1 +already on {re.escape(V2)}: skipped", again.stdout)
    assert re.search(r"APP-2 +is drained \(left by an interrupted run\?\)", again.stdout)


def test_sync_only_adds_a_new_host_to_caddy(lab):
    fleet = lab(size=5, in_caddy=4)
    done = rolling_update(fleet, "--sync-only")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"APP-5 +joined the load balancer", done.stdout)
    status, body = http_get("127.0.0.1", fleet.admin_port, "/id/app-upstreams/upstreams",
                            headers={"Host": f"127.0.0.1:{fleet.admin_port}"})
    assert status == 200
    assert [u["dial"] for u in json.loads(body)] == [h.upstream for h in fleet.hosts]
    seen = set()

    def reached_app5():
        seen.add(json.loads(http_get("127.0.0.1", fleet.http_port, "/")[1])["host"])
        return "APP-5" in seen
    wait_for(reached_app5, what="a request served by APP-5")
    # Nothing to do the second time: no config change at all.
    again = rolling_update(fleet, "--sync-only")
    assert again.returncode == 0 and "Caddy's upstreams match the 5 app hosts" in again.stdout


def _processes_mentioning(text):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry))
    return found


def test_the_lab_fleet_stops_every_process_cleanly_on_sigterm(tmp_path):
    tools.caddy()
    workdir = tmp_path / "lab"
    fleet = subprocess.Popen([sys.executable, "-m", "rollout.lab.fleet", "--hosts", "2",
                              "--workdir", str(workdir)], cwd=REPO_ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in fleet.stdout], daemon=True).start()
        while "Ctrl-C stops every process" not in lines.get(timeout=60):
            pass
        children = [p for p in _processes_mentioning(str(workdir)) if p != fleet.pid]
        assert len(children) == 3, "caddy and two health agents"
        children += [json.loads((workdir / h / "state.json").read_text())["pid"]
                     for h in ("APP-1", "APP-2")]
        fleet.send_signal(signal.SIGTERM)
        assert fleet.wait(30) == 0, fleet.stderr.read()
    finally:
        if fleet.poll() is None:
            fleet.kill()
    for host in ("APP-1", "APP-2"):
        # The agent's own SIGTERM handler ran: it was not killed after the stop grace.
        assert "health-agent: stopped" in (workdir / host / "agent.log").read_text()
    assert not [pid for pid in children if running(pid)], "a child outlived the fleet"


def test_behind_two_load_balancers_each_one_drains_the_host_before_its_app_stops(lab):
    fleet = lab(size=4, load_balancers=2)
    loads = [LoadGenerator("127.0.0.1", port, clients=CLIENTS) for port in fleet.http_ports]
    for load in loads:
        load.start()
    try:
        for load in loads:
            traffic_flowing(load)
        done = rolling_update(fleet, "--image", V2)
        for load in loads:
            traffic_flowing(load)
    finally:
        for load in loads:
            load.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 Caddy load balancer(s)" in done.stdout
    assert fleet.images() == {f"APP-{n}": V2 for n in range(1, 5)}
    for load in loads:
        assert_no_request_lost(load)
        assert set(load.stats.versions) == {V1, V2}


def test_first_deploy_rehearsal_on_a_brand_new_environment(lab, tmp_path):
    """The deploy job against a fresh environment: hosts still booting and not yet in SSM,
    nothing serving, the image the pipeline just built. It converges with every host on that
    image, records it for hosts created later, and loses no request once a host serves."""
    built = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/webapp/app:3f2c1d0"
    fleet = lab(size=3, image=None)
    assert all(s["image"] is None and not s["healthy"] for s in fleet.statuses().values())
    assert http_get("127.0.0.1", fleet.http_port, "/", timeout=15)[0] in (502, 503)
    hosts = [Instance("lab-LB-01", "i-00000000000000001")] + [
        Instance(f"lab-{h.name}", f"i-0000000000000000{n + 2}")
        for n, h in enumerate(fleet.hosts)]
    ids = [h.instance_id for h in hosts]
    ssm = boto3.client("ssm", region_name="eu-west-1")
    log = io.StringIO()
    with LoadGenerator("127.0.0.1", fleet.http_port, clients=CLIENTS) as load:
        # The deploy job's first call: hosts register with SSM one after another.
        with Stubber(ssm) as stub:
            for registered in ([], ids[:1], ids[:3], ids):
                stub.add_response("describe_instance_information", {"InstanceInformationList": [
                    {"InstanceId": i, "PingStatus": "Online"} for i in registered]})
            ReadinessWait(ssm, BootDone(), StepLog(log), poll=0.05, timeout=30).wait(
                hosts, [CaddyAdmin(HttpAdminTransport(f"127.0.0.1:{fleet.admin_port}"))])
        done = rolling_update(fleet, "--image", built, timeout=300)
        finished = time.monotonic()
        traffic_flowing(load)
    assert "lab-APP-3 (i-00000000000000004): online in SSM" in log.getvalue()
    assert done.returncode == 0, done.stdout + done.stderr
    assert fleet.images() == {h.name: built for h in fleet.hosts}
    stats = load.stats
    assert stats.first_answered_sent_at is not None
    assert stats.failed_since_first_answer() == 0, stats.failures[-5:]
    assert set(stats.versions_after(finished)) == {built}
    with mock_aws():
        recorder = boto3.client("ssm", region_name="eu-west-1")
        assert record_deployed_image(recorder, "/webapp/lab/app/image", built) is None
        assert recorder.get_parameter(Name="/webapp/lab/app/image")["Parameter"]["Value"] == \
            built


class BootDone:
    """SSM Run Command on hosts whose first boot has finished."""

    def run(self, instance_id, script, timeout):
        return CommandResult(0, "boot done \n")


def test_an_app_host_killed_outside_the_batch_stops_the_rollout_and_is_named(lab):
    """What a new user tried: kill APP-4's app while APP-1 is being updated. The rollout
    must notice, wait for it, stop, and never call APP-4 updated."""
    fleet = lab(size=4)
    first, victim = fleet.hosts[0], fleet.hosts[3]
    process = subprocess.Popen(fleet.rollout_argv(*FAST, "--image", V2, "--health-timeout", "5"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: V2 in fleet.commands(first), timeout=60, what="APP-1's deploy")
        os.kill(fleet.app_pid(victim), signal.SIGKILL)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, out + err
    assert "pausing before batch 2 of 4: APP-4 stopped serving, outside any batch" in out
    row = next(line for line in out.splitlines() if line.startswith("APP-4 "))
    assert "stopped serving during the rollout, outside its batch" in row
    assert "updated" not in row
    # Nothing else was taken out while APP-4 was down; APP-1 keeps the new image.
    assert fleet.commands(fleet.hosts[1]).count("drain") == 0
    assert fleet.commands(fleet.hosts[2]).count("drain") == 0
    assert fleet.images()["APP-1"] == V2
