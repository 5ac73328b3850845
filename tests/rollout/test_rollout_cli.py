"""scripts/rolling_update.py: flags, one-line errors, exit statuses, the step summary."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws
from rollout_fakes import fake_http_server

from rollout import cli
from rollout.lab.fleet import free_port
from rollout.locking import FileLock

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "rolling_update.py"


def run_main(argv, capsys, environ=None):
    status = cli.main(argv, environ=environ if environ is not None else {})
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("argv, flag, fix", [
    ([], "--environment", "e.g. --environment production"),
    (["--environment", "prod"], "--image", "e.g. --image ghcr.io/org/app:1.4.2"),
    (["--environment", "prod", "--image", "app"], "--image", "add one (e.g. app:1.4.2)"),
    (["--environment", "prod", "--image", "App:1"], "--image", "expected e.g."),
    (["--environment", "prod", "--image", "app:1; rm -rf /"], "--image", "expected e.g."),
    (["--environment", "prod", "--image", "app:1", "--batch-size", "0"], "--batch-size",
     "at least 1"),
    (["--environment", "prod", "--image", "app:1", "--batch-size", "150%"], "--batch-size",
     "1% to 100%"),
    (["--environment", "prod", "--image", "app:1", "--batch-size", "half"], "--batch-size",
     "e.g. 25%"),
    (["--environment", "prod", "--image", "app:1", "--min-healthy", "120%"], "--min-healthy",
     "0% to 100%"),
    (["--environment", "prod", "--image", "app:1", "--min-healthy", "most"], "--min-healthy",
     "e.g. 75%"),
    (["--environment", "prod", "--image", "app:1", "--health-timeout", "-3"],
     "--health-timeout", "between 1 and 3600"),
    (["--environment", "prod", "--image", "app:1", "--healthy-checks", "x"],
     "--healthy-checks", "a whole number"),
    (["--environment", "prod", "--image", "app:1", "--healthy-checks", "10",
      "--check-interval", "5", "--health-timeout", "30"], "--health-timeout", "more than 45"),
    (["--environment", "prod", "--image", "app:1"], "--region", "set AWS_REGION"),
    (["--environment", "prod", "--image", "app:1", "--inventory", "x", "--region", "a"],
     "--region", "drop it"),
    (["--environment", "prod", "--image", "app:1", "--inventory", "x", "--break-lock"],
     "--break-lock", "AWS mode"),
    (["--environment", "a b", "--image", "app:1"], "--environment", "letters, digits"),
    (["--environment", "prod", "--image", "app:1", "--frobnicate"], "--frobnicate",
     "see --help"),
])
def test_bad_input_is_one_line_naming_the_flag(argv, flag, fix, capsys):
    status, out, err = run_main(argv, capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("rolling_update.py: error: ")
    assert flag in err and fix in err
    assert "Traceback" not in err and out == ""


def test_the_script_runs_from_the_repository_root():
    done = subprocess.run([sys.executable, "scripts/rolling_update.py", "--environment", "x",
                           "--image", "bad image"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("rolling_update.py: error: argument --image:")
    assert "Traceback" not in done.stderr
    helped = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "--keep-updated" in helped.stdout


def test_inventory_problems_are_exit_2(tmp_path, capsys):
    path = tmp_path / "inv.yaml"
    path.write_text("caddy: {admin: 'http://127.0.0.1:1'}\nhosts: []\n")
    status, _, err = run_main(["--environment", "lab", "--image", "app:1",
                               "--inventory", str(path)], capsys)
    assert status == 2 and "hosts: must be a non-empty list" in err


def test_an_inventory_that_is_not_utf8_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "inv.yaml"
    path.write_bytes("caddy: {admin: 'http://127.0.0.1:1'}\n# caf\u00e9\n".encode("latin-1"))
    status, out, err = run_main(["--environment", "lab", "--image", "app:1",
                                 "--inventory", str(path)], capsys)
    assert status == 2
    assert err == (f"rolling_update.py: error: --inventory {path}: byte 0xe9 at offset 42 is "
                   "not UTF-8; save the file as UTF-8\n")


def lab_inventory(tmp_path, admin, environment="lab"):
    """Two hosts with state but no app running: statuses answer, nothing else is needed."""
    hosts = []
    for n in (1, 2):
        state = tmp_path / f"APP-{n}"
        state.mkdir()
        (state / "state.json").write_text(json.dumps({"image": "app:1", "previous": None,
                                                      "pid": None}))
        hosts.append({
            "name": f"APP-{n}", "upstream": f"127.0.0.{n + 1}:5000",
            "health_url": f"http://127.0.0.{n + 1}:5001/health",
            "deploy_command": [sys.executable, "-m", "rollout.lab.app_deploy", "--state-dir",
                               str(state), "--bind", "127.0.0.1", "--port", str(free_port())],
            "env": {"PYTHONPATH": str(REPO)}})
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"environment": environment, "caddy": {"admin": admin},
                                    "lock_file": str(tmp_path / "lock"), "hosts": hosts}))
    return path


def caddy_routes(dials):
    handler = {"@id": "app-upstreams", "handler": "reverse_proxy",
               "upstreams": [{"dial": d} for d in dials],
               "health_checks": {"active": {"port": 5001, "interval": "1s"}}}
    return {"GET /id/app-upstreams": (200, json.dumps(handler).encode()),
            "GET /reverse_proxy/upstreams": (200, b"[]")}


def commands(tmp_path, host):
    log = tmp_path / host / "commands.log"
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []


def test_dry_run_prints_the_plan_touches_nothing_and_writes_the_summary(tmp_path, capsys):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    with fake_http_server(caddy_routes(["127.0.0.2:5000", "127.0.0.3:5000"])) as (port, reqs):
        inventory = lab_inventory(tmp_path, f"http://127.0.0.1:{port}")
        status, out, err = run_main(["--environment", "lab", "--image", "app:2", "--dry-run",
                                     "--inventory", str(inventory)], capsys,
                                    environ={"GITHUB_STEP_SUMMARY": str(summary)})
    assert status == 0, err
    assert ("plan: 2 of 2 hosts to app:2 in 2 batch(es) of up to 1, keeping at least 1 "
            "serving: APP-1 | APP-2") in out
    assert "Rolling update of lab to app:2: dry run" in out
    assert all(method == "GET" for method, *_ in reqs)
    assert commands(tmp_path, "APP-1") == ["status"] and commands(tmp_path, "APP-2") == ["status"]
    text = summary.read_text()
    assert text.startswith("earlier step\n### Rolling update of lab to app:2: dry run")
    assert "| APP-1 | `app:1` | `app:1` | would update | 0.0 |" in text


def test_unreachable_admin_api_is_exit_3_and_touches_no_host(tmp_path, capsys):
    inventory = lab_inventory(tmp_path, f"http://127.0.0.1:{free_port()}")
    summary = tmp_path / "summary.md"
    status, out, err = run_main(["--environment", "lab", "--image", "app:2",
                                 "--inventory", str(inventory)], capsys,
                                environ={"GITHUB_STEP_SUMMARY": str(summary)})
    assert status == 3
    assert err.count("\n") == 1 and "unreachable" in err and "no host was touched" in err
    assert commands(tmp_path, "APP-1") == [] and commands(tmp_path, "APP-2") == []
    assert summary.read_text().startswith("### Rolling update of lab: refused\n\nCaddy admin")


def test_a_second_rollout_is_refused_while_one_runs(tmp_path, capsys):
    with fake_http_server(caddy_routes(["127.0.0.2:5000", "127.0.0.3:5000"])) as (port, _):
        inventory = lab_inventory(tmp_path, f"http://127.0.0.1:{port}")
        running = FileLock(str(tmp_path / "lock"))
        running.acquire()
        try:
            status, _, err = run_main(["--environment", "lab", "--image", "app:2",
                                       "--inventory", str(inventory)], capsys)
        finally:
            running.release()
    assert status == 3 and "another rollout holds" in err and f"pid {os.getpid()}" in err
    assert commands(tmp_path, "APP-1") == []


def test_inventory_of_another_environment_is_refused(tmp_path, capsys):
    inventory = lab_inventory(tmp_path, "http://127.0.0.1:1", environment="staging")
    status, _, err = run_main(["--environment", "production", "--image", "app:2",
                               "--inventory", str(inventory)], capsys)
    assert status == 2 and "is for environment 'staging'" in err


def test_aws_mode_discovers_by_tags_and_refuses_without_an_lb(capsys):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Environment", "Value": "production"},
                                                  {"Key": "Role", "Value": "app"}]}])
        status, out, err = run_main(["--environment", "production", "--image", "app:2",
                                     "--region", "eu-west-1"], capsys,
                                    environ={"AWS_ACCESS_KEY_ID": "x"})
    assert status == 3
    assert "discovering production in eu-west-1" in out
    assert "no running instance tagged Environment=production, Role=lb" in err


def test_sigterm_stops_the_run_releases_the_lock_and_says_how_to_resume(tmp_path):
    pid_file = tmp_path / "drain.pid"
    app_deploy = tmp_path / "app-deploy"
    app_deploy.write_text(f"""#!/bin/sh
case "$1" in
  status) echo '{{"image": "app:1", "previous": null, "drained": false, "healthy": true}}';;
  drain) echo $$ > {pid_file}; exec sleep 20;;
esac
""")
    app_deploy.chmod(0o755)
    view = {"drained": False, "probe": {"answer": 200, "streak": 3, "age": 0.1}, "probes": 9}
    routes = {**caddy_routes(["127.0.0.2:5000", "127.0.0.3:5000"]),
              "GET /agent": (200, json.dumps(view).encode())}
    with fake_http_server(routes) as (port, _):
        hosts = [{"name": f"APP-{n}", "upstream": f"127.0.0.{n + 1}:5000",
                  "health_url": f"http://127.0.0.1:{port}/health",
                  "deploy_command": [str(app_deploy)]} for n in (1, 2)]
        inventory = tmp_path / "inventory.yaml"
        lock = tmp_path / "lock"
        inventory.write_text(yaml.safe_dump({"caddy": {"admin": f"http://127.0.0.1:{port}"},
                                             "lock_file": str(lock), "hosts": hosts}))
        process = subprocess.Popen([sys.executable, str(SCRIPT), "--environment", "lab",
                                    "--image", "app:2", "--inventory", str(inventory)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not pid_file.exists():
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            if pid_file.exists() and pid_file.read_text().strip():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass
    assert process.returncode == 130
    assert re.search(r"host 1 of 2 +APP-1 +draining", out)
    assert err.count("\n") == 1 and "run the same command again" in err
    next_run = FileLock(str(lock))
    next_run.acquire()                   # released: the next run can start at once
    next_run.release()


def test_aws_mode_takes_region_and_image_parameter_from_the_configuration():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import rolling_update
    finally:
        sys.path.remove(str(REPO / "scripts"))
    assert rolling_update.configured("production") == {
        "region": "eu-west-1", "image_parameter": "/webapp/production/app/image"}
    args = cli.parse_args(["--environment", "production", "--image", "app:1"],
                          {"AWS_REGION": "us-east-1"}, rolling_update.configured)
    assert (args.region, args.image_parameter) == ("eu-west-1", "/webapp/production/app/image")
    args = cli.parse_args(["--environment", "production", "--image", "app:1", "--region",
                           "eu-central-1", "--image-parameter", "/x/image"], {},
                          rolling_update.configured)
    assert (args.region, args.image_parameter) == ("eu-central-1", "/x/image")


def test_aws_mode_for_an_environment_without_configuration_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--environment", "nowhere",
                           "--image", "app:1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "nowhere" in done.stderr
    assert "Traceback" not in done.stderr
