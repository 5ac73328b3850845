"""Scale-in: before `terraform apply`, the APP hosts the saved plan destroys leave every
Caddy's upstreams (rolling_update.py --sync-only --leaving-from-plan), so the apply never
cuts off a host that still gets requests."""
import io
import json
from pathlib import Path

import pytest
import yaml

from rollout import cli
from rollout.model import AppHost
from rollout.report import StepLog

REPO = Path(__file__).resolve().parents[2]


def change(address, role, actions, instance_id):
    return {"address": address, "type": "aws_instance",
            "change": {"actions": actions,
                       "before": None if actions == ["create"] else {
                           "id": instance_id, "tags": {"Role": role}}}}


def plan(tmp_path, *changes) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"format_version": "1.2", "resource_changes": list(changes)}))
    return str(path)


def test_the_app_hosts_the_plan_destroys_are_found(tmp_path):
    path = plan(tmp_path,
                change("aws_instance.APP-3_host", "app", ["delete"], "i-3"),
                change("aws_instance.APP-2_host", "app", ["delete", "create"], "i-2"),
                change("aws_instance.APP-1_host", "app", ["update"], "i-1"),
                change("aws_instance.DB-01_host", "db", ["delete"], "i-db"),
                change("aws_instance.APP-4_host", "app", ["create"], None),
                {"address": "aws_eip.x", "type": "aws_eip",
                 "change": {"actions": ["delete"], "before": {"id": "e", "tags": {}}}})
    assert cli.destroyed_app_hosts(path) == {"i-3", "i-2"}


def test_the_staying_hosts_leave_the_destroyed_ones_out():
    hosts = [AppHost(f"APP-{n}", f"10.0.2.{19 + n}:5000", f"http://10.0.2.{19 + n}:5001/health",
                     (), f"i-{n}") for n in (1, 2, 3)]
    out = io.StringIO()
    kept = cli.staying(hosts, frozenset({"i-3"}), StepLog(out))
    assert [h.name for h in kept] == ["APP-1", "APP-2"]
    assert "APP-3 (i-3): the plan destroys it; taking it out of the load balancers" in (
        out.getvalue())
    assert cli.staying(hosts, frozenset(), StepLog(out)) == tuple(hosts)


def test_a_plan_that_replaces_every_app_host_takes_none_out_first():
    """An AZ move, or any replacement of a one-host fleet: the engine refuses an empty fleet,
    which would block the very apply that brings the new hosts."""
    hosts = [AppHost(f"APP-{n}", f"10.0.2.{19 + n}:5000", f"http://10.0.2.{19 + n}:5001/health",
                     (), f"i-{n}") for n in (1, 2)]
    out = io.StringIO()
    assert cli.staying(hosts, frozenset({"i-1", "i-2"}), StepLog(out)) == tuple(hosts)
    assert "destroys or replaces every app host (2): none is taken out first" in out.getvalue()


def test_a_plan_that_destroys_no_app_host_touches_nothing(tmp_path, capsys):
    path = plan(tmp_path, change("aws_instance.APP-4_host", "app", ["create"], None))
    status = cli.main(["--environment", "production", "--sync-only",
                       "--leaving-from-plan", path], environ={"AWS_REGION": "eu-west-1"})
    assert status == 0
    assert "the plan destroys no app host: nothing to take out" in capsys.readouterr().out


@pytest.mark.parametrize("argv, content, expected", [
    (["--sync-only"], "not json", "argument --leaving-from-plan: "),
    (["--sync-only"], '{"resource_changes": [{"type": "aws_instance"}]}',
     "argument --leaving-from-plan: "),
    (["--image", "registry.local/app:v2"], "{}",
     "argument --leaving-from-plan: for AWS mode with --sync-only"),
])
def test_a_bad_plan_or_mode_is_one_line_and_status_2(tmp_path, capsys, argv, content, expected):
    path = tmp_path / "plan.json"
    path.write_text(content)
    status = cli.main(["--environment", "production", *argv, "--leaving-from-plan", str(path)],
                      environ={"AWS_REGION": "eu-west-1"})
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and expected in err, err


def test_the_deploy_takes_them_out_after_the_summary_and_before_the_apply():
    workflow = yaml.safe_load((REPO / ".github/workflows/deploy-environment.yml").read_text())
    (job,) = workflow["jobs"].values()
    runs = [step.get("run", "") for step in job["steps"]]
    (summary,) = [i for i, r in enumerate(runs) if "plan_comment.py summary" in r]
    (leaving,) = [i for i, r in enumerate(runs) if "--leaving-from-plan" in r]
    (apply,) = [i for i, r in enumerate(runs) if "terraform" in r and " apply " in r]
    assert summary < leaving < apply
    assert '--leaving-from-plan "$STACK_DIR/plan.json"' in runs[leaving]
    assert runs[leaving].startswith(".venv/bin/python scripts/scale_in.py")


def test_the_script_the_workflow_runs_reaches_the_same_command(tmp_path):
    """scripts/scale_in.py for real: --sync-only is implied, the plan is read."""
    import subprocess
    import sys
    path = plan(tmp_path, change("aws_instance.APP-4_host", "app", ["create"], None))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "scale_in.py"), "--environment", "production",
         "--leaving-from-plan", path], capture_output=True, text=True, timeout=120,
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "AWS_REGION": "eu-west-1"})
    assert result.returncode == 0, result.stderr
    assert "the plan destroys no app host: nothing to take out" in result.stdout


def test_taking_hosts_out_waits_for_the_load_balancers_only():
    from rollout.aws import Fleet, LoadBalancerHost
    lbs = (LoadBalancerHost("i-lb1", "production-LB-01", "10.0.1.10"),)
    fleet = Fleet(lbs=lbs, app_hosts=(), every_host=(
        ("production-APP-3", "i-3"), ("production-DB-01", "i-db"), ("production-LB-01", "i-lb1")))
    assert cli.awaited(fleet, frozenset({"i-3"})) == (("production-LB-01", "i-lb1"),)
    assert cli.awaited(fleet, None) == fleet.every_host
