"""scripts/lb_maintenance.py: an LB taken out of the NLB and put back (moto stands in for AWS).

The environment is built in moto the way the synthesized stack describes it: two LB hosts
tagged Environment/Role/Name, an NLB tagged with the environment, a TCP target group per
port with both LBs registered.
"""
from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

import lb_maintenance

REGION = "eu-west-1"


@pytest.fixture
def aws(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def build(session, environment: str = "production", hosts=("LB-01", "LB-02")) -> dict:
    ec2, elbv2 = session.client("ec2"), session.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24",
                               AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ids = {}
    for host in hosts:
        (instance,) = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": f"{environment}-{host}"},
                {"Key": "Role", "Value": "lb"},
                {"Key": "Environment", "Value": environment}]}])["Instances"]
        ids[host] = instance["InstanceId"]
    balancer = elbv2.create_load_balancer(
        Name=f"nlb-webapp-{environment}", Subnets=[subnet], Type="network",
        Tags=[{"Key": "Environment", "Value": environment}])["LoadBalancers"][0]
    for port in (80, 443):
        group = elbv2.create_target_group(
            Name=f"tcp{port}-webapp-{environment}", Protocol="TCP", Port=port, VpcId=vpc,
            TargetType="instance")["TargetGroups"][0]
        elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="TCP",
                              Port=port, DefaultActions=[{
                                  "Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}])
        elbv2.register_targets(TargetGroupArn=group["TargetGroupArn"], Targets=[
            {"Id": instance_id, "Port": port} for instance_id in ids.values()])
    return ids


def run(session, *argv) -> int:
    return lb_maintenance.main(list(argv), session=session, sleep=lambda _: None)


def registered(session, instance_id: str) -> dict[int, str]:
    elbv2 = session.client("elbv2")
    found = {}
    for group in elbv2.describe_target_groups()["TargetGroups"]:
        targets = elbv2.describe_target_health(
            TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
        found[group["Port"]] = any(t["Target"]["Id"] == instance_id for t in targets)
    return found


def test_take_an_lb_out_and_put_it_back(aws, capsys):
    ids = build(aws)

    assert run(aws, "production", "out", "LB-02") == 0
    assert registered(aws, ids["LB-02"]) == {80: False, 443: False}
    assert registered(aws, ids["LB-01"]) == {80: True, 443: True}
    assert "LB-02 is out of the NLB and drained" in capsys.readouterr().out

    assert run(aws, "production", "in", "LB-02") == 0
    assert registered(aws, ids["LB-02"]) == {80: True, 443: True}
    assert "LB-02 is back in the NLB and healthy" in capsys.readouterr().out

    assert run(aws, "production", "status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"LB-01 {ids['LB-01']}: tcp443-webapp-production healthy, "
                     "tcp80-webapp-production healthy",
                     f"LB-02 {ids['LB-02']}: tcp443-webapp-production healthy, "
                     "tcp80-webapp-production healthy"]


def test_the_last_serving_lb_is_not_taken_out(aws, capsys):
    ids = build(aws)
    assert run(aws, "production", "out", "LB-01") == 0
    capsys.readouterr()

    assert run(aws, "production", "out", "LB-02") == 1

    assert capsys.readouterr().err.startswith(
        "error: LB-01 is not healthy (tcp443-webapp-production unused, "
        "tcp80-webapp-production unused): taking LB-02 out would leave no load balancer")
    assert registered(aws, ids["LB-02"]) == {80: True, 443: True}
    assert run(aws, "production", "out", "LB-02", "--force") == 0


def test_a_wait_that_never_ends_is_reported_with_its_target_group(aws, capsys, monkeypatch):
    build(aws)
    stuck = {"tcp80-x": "healthy", "tcp443-x": "draining"}
    monkeypatch.setattr(lb_maintenance, "states", lambda *a: stuck)
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    status = lb_maintenance.main(["production", "out", "LB-02", "--timeout", "60", "--force"],
                                 session=aws, sleep=sleep, clock=lambda: now[0])

    assert status == 1
    err = capsys.readouterr().err
    assert err == "error: not unused after 60s: tcp443-x draining, tcp80-x healthy\n"


@pytest.mark.parametrize("argv, expected", [
    (["staging", "out", "LB-02"], "no Network Load Balancer tagged Environment=staging"),
    (["production", "out", "LB-03"],
     "LB-03 is not a load balancer host here (found: LB-01, LB-02)"),
])
def test_nothing_to_act_on_is_one_line_and_status_2(aws, capsys, argv, expected):
    build(aws)
    assert run(aws, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1


# --- the maintenance record the deploy and drift workflows read -----------------------------

PARAMETER = "/webapp/production/lb/maintenance"


def run_at(session, when, *argv) -> int:
    return lb_maintenance.main(list(argv), session=session, sleep=lambda _: None,
                               now=lambda: when)


def parameter(session):
    try:
        return session.client("ssm").get_parameter(Name=PARAMETER)["Parameter"]
    except session.client("ssm").exceptions.ParameterNotFound:
        return None


def test_out_records_the_lb_until_in_and_check_refuses_meanwhile(aws, capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    build(aws)
    assert run(aws, "production", "check") == 0
    assert run_at(aws, "2026-12-02T10:00:00Z", "production", "out", "LB-02") == 0
    stored = parameter(aws)
    assert (stored["Type"], stored["Value"]) == ("String", "LB-02 2026-12-02T10:00:00Z")
    capsys.readouterr()

    assert run(aws, "production", "check") == 3
    err = capsys.readouterr().err
    assert err == ("error: refusing to plan and apply: LB-02 of production is out of the NLB "
                   "for maintenance since 2026-12-02T10:00:00Z; once it is done: python "
                   "scripts/lb_maintenance.py production in LB-02 (Terraform would register "
                   "it again)\n")

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert run(aws, "production", "check") == 3
    assert capsys.readouterr().out.startswith("::error::refusing to plan and apply: LB-02 ")

    assert run(aws, "production", "in", "LB-02") == 0
    assert parameter(aws) is None
    assert run(aws, "production", "check") == 0


def test_two_lbs_out_are_recorded_and_put_back_one_by_one(aws, capsys):
    build(aws)
    assert run_at(aws, "T1", "production", "out", "LB-01") == 0
    assert run_at(aws, "T2", "production", "out", "LB-02", "--force") == 0
    assert parameter(aws)["Value"] == "LB-01 T1\nLB-02 T2"
    assert run(aws, "production", "in", "LB-01") == 0
    assert parameter(aws)["Value"] == "LB-02 T2"


def test_a_refused_out_records_nothing(aws, capsys):
    build(aws)
    assert run(aws, "production", "out", "LB-01") == 0
    assert run(aws, "production", "in", "LB-01") == 0
    assert run(aws, "production", "out", "LB-01") == 0
    before = parameter(aws)["Value"]
    assert run(aws, "production", "out", "LB-02") == 1
    assert parameter(aws)["Value"] == before


def test_the_drift_check_names_the_lb_out(aws, capsys, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    build(aws)
    assert run_at(aws, "T1", "production", "out", "LB-02") == 0
    capsys.readouterr()

    assert run(aws, "production", "check", "--explain-drift") == 0
    out = capsys.readouterr().out
    assert out.startswith("::warning::expected drift: LB-02 of production is out of the NLB "
                          "for maintenance since T1")
    assert "python scripts/lb_maintenance.py production in LB-02" in summary.read_text()


class PlanRoleSession:
    """The plan role: elbv2 and ec2 reads work, SSM parameters are denied."""

    def __init__(self, session):
        self.session = session
        self.stubber = None

    def client(self, name):
        client = self.session.client(name)
        if name == "ssm":
            self.stubber = Stubber(client)
            self.stubber.add_client_error("get_parameter", "AccessDeniedException",
                                          "not authorized to perform: ssm:GetParameter")
            self.stubber.activate()
        return client


def test_the_drift_check_falls_back_to_the_target_groups_without_ssm(aws, capsys):
    build(aws)
    assert run(aws, "production", "out", "LB-02") == 0
    capsys.readouterr()

    assert run(PlanRoleSession(aws), "production", "check", "--explain-drift") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("::warning::expected drift: LB-02 of production is registered in "
                           "no target group of the NLB")


def test_the_drift_check_of_an_environment_with_one_lb_passes_without_ssm(aws, capsys):
    build(aws)
    assert run(PlanRoleSession(aws), "staging", "check", "--explain-drift") == 0
    assert capsys.readouterr().out == "no load balancer of staging is out for maintenance\n"


def test_the_deploy_and_drift_workflows_run_the_check_before_planning():
    import yaml
    from pathlib import Path

    workflows = Path(lb_maintenance.__file__).resolve().parents[1] / ".github" / "workflows"
    for name, command in (("deploy-environment.yml", 'check'),
                          ("drift.yml", 'check --explain-drift')):
        (job,) = yaml.safe_load((workflows / name).read_text())["jobs"].values()
        runs = [step.get("run", "") for step in job["steps"]]
        (guard,) = [i for i, text in enumerate(runs) if "scripts/lb_maintenance.py" in text]
        (plan,) = [i for i, text in enumerate(runs) if "terraform" in text and " plan " in text]
        assert guard < plan
        assert runs[guard].strip().endswith(f'lb_maintenance.py "$STACK" {command}')
