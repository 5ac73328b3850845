"""scripts/lb_maintenance.py: an LB taken out of the NLB and put back (moto stands in for AWS).

The environment is built in moto the way the synthesized stack describes it: two LB hosts
tagged Environment/Role/Name, an NLB tagged with the environment, a TCP target group per
port with both LBs registered.
"""
from __future__ import annotations

import boto3
import pytest
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
