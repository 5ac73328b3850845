#!/usr/bin/env python3
"""Take one load balancer (LB-01 or LB-02) out of the Network Load Balancer, or put it back.

    python scripts/lb_maintenance.py production status
    python scripts/lb_maintenance.py production out LB-02   # deregister, wait until drained
    python scripts/lb_maintenance.py production in LB-02    # register, wait until healthy

``out`` refuses to take an LB out while the other one is not healthy in every target group
(that would leave nobody serving; ``--force`` overrides), deregisters it from every target
group of the environment's NLB, and returns once the NLB has let its connections go (the
deregistration delay). ``in`` registers it again and returns once every target group sees it
healthy. Between the two the LB can be patched, upgraded or replaced: see the README's
runbook. Hosts and the NLB are found by their ``Environment`` and ``Role``/``Name`` tags, as
the rolling update finds them; credentials come from the environment (the deploy role).

Exit status: 0 done; 1 AWS refused, or the wait timed out (one line says which target
group); 2 a bad argument or nothing to act on (one line, no traceback).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
POLL_SECONDS = 5


class MaintenanceError(Exception):
    """A failure to report in one line; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Balancer:
    """The environment's NLB: its target groups and the LB hosts' instance IDs by name."""

    arn: str
    target_groups: dict[str, str]  # name -> ARN
    hosts: dict[str, str]  # LB-01 -> instance ID


def discover(environment: str, elbv2, ec2) -> Balancer:
    """The NLB tagged ``Environment=<environment>``, and its LB hosts."""
    balancers = [b for page in elbv2.get_paginator("describe_load_balancers").paginate()
                 for b in page["LoadBalancers"] if b.get("Type") == "network"]
    ours = []
    for start in range(0, len(balancers), 20):  # DescribeTags takes 20 ARNs at a time
        arns = [b["LoadBalancerArn"] for b in balancers[start:start + 20]]
        for description in elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"]:
            tags = {t["Key"]: t["Value"] for t in description.get("Tags", [])}
            if tags.get("Environment") == environment:
                ours.append(description["ResourceArn"])
    if not ours:
        raise MaintenanceError(f"no Network Load Balancer tagged Environment={environment}: "
                               "with load_balancer.count 1 there is nothing to take out of",
                               EXIT_BAD_INPUT)
    if len(ours) > 1:
        raise MaintenanceError(f"{len(ours)} Network Load Balancers are tagged "
                               f"Environment={environment}: {', '.join(ours)}", EXIT_BAD_INPUT)
    groups = {g["TargetGroupName"]: g["TargetGroupArn"]
              for g in elbv2.describe_target_groups(LoadBalancerArn=ours[0])["TargetGroups"]}
    hosts = {}
    filters = [{"Name": "tag:Environment", "Values": [environment]},
               {"Name": "tag:Role", "Values": ["lb"]},
               {"Name": "instance-state-name",
                "Values": ["pending", "running", "stopping", "stopped"]}]
    for reservation in ec2.describe_instances(Filters=filters)["Reservations"]:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            hosts[tags.get("Name", "").removeprefix(f"{environment}-")] = instance["InstanceId"]
    return Balancer(ours[0], groups, hosts)


def states(balancer: Balancer, instance_id: str, elbv2) -> dict[str, str]:
    """The target's state in each target group; ``unused`` where it is not registered."""
    found = {}
    for name, arn in balancer.target_groups.items():
        descriptions = elbv2.describe_target_health(
            TargetGroupArn=arn, Targets=[{"Id": instance_id}])["TargetHealthDescriptions"]
        found[name] = (descriptions[0]["TargetHealth"]["State"] if descriptions
                       else "unused")
    return found


def _port(elbv2, arn: str) -> int:
    return elbv2.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]["Port"]


def wait_for(balancer: Balancer, instance_id: str, wanted: str, elbv2, timeout: float,
             sleep=time.sleep, clock=time.monotonic, say=print) -> None:
    deadline = clock() + timeout
    while True:
        current = states(balancer, instance_id, elbv2)
        if all(state == wanted for state in current.values()):
            return
        if clock() >= deadline:
            late = ", ".join(f"{name} {state}" for name, state in sorted(current.items())
                             if state != wanted)
            raise MaintenanceError(f"not {wanted} after {timeout:.0f}s: {late}")
        say("waiting: " + ", ".join(f"{n} {s}" for n, s in sorted(current.items())))
        sleep(POLL_SECONDS)


def take_out(balancer: Balancer, host: str, elbv2, *, force: bool, timeout: float,
             **waiting) -> None:
    instance_id = _instance(balancer, host)
    if not force:
        for other, other_id in sorted(balancer.hosts.items()):
            if other == host:
                continue
            unhealthy = {n: s for n, s in states(balancer, other_id, elbv2).items()
                         if s != "healthy"}
            if unhealthy:
                raise MaintenanceError(
                    f"{other} is not healthy ({', '.join(f'{n} {s}' for n, s in unhealthy.items())}"
                    f"): taking {host} out would leave no load balancer serving; bring "
                    f"{other} back first (or --force)")
    for arn in balancer.target_groups.values():
        elbv2.deregister_targets(TargetGroupArn=arn, Targets=[
            {"Id": instance_id, "Port": _port(elbv2, arn)}])
    wait_for(balancer, instance_id, "unused", elbv2, timeout, **waiting)


def put_back(balancer: Balancer, host: str, elbv2, *, timeout: float, **waiting) -> None:
    instance_id = _instance(balancer, host)
    for arn in balancer.target_groups.values():
        elbv2.register_targets(TargetGroupArn=arn, Targets=[
            {"Id": instance_id, "Port": _port(elbv2, arn)}])
    wait_for(balancer, instance_id, "healthy", elbv2, timeout, **waiting)


def _instance(balancer: Balancer, host: str) -> str:
    if host not in balancer.hosts:
        known = ", ".join(sorted(balancer.hosts)) or "none"
        raise MaintenanceError(f"{host} is not a load balancer host here (found: {known})",
                               EXIT_BAD_INPUT)
    return balancer.hosts[host]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("environment")
    parser.add_argument("action", choices=("status", "out", "in"))
    parser.add_argument("host", nargs="?", help="LB-01 or LB-02 (out and in)")
    parser.add_argument("--region", help="default: the AWS configuration's region")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds to wait for draining or health (default 600)")
    parser.add_argument("--force", action="store_true",
                        help="take the LB out even if the other one is not healthy")
    args = parser.parse_args(argv)
    if args.action != "status" and not args.host:
        parser.error(f"{args.action} needs the host, e.g. LB-02")
    return args


def main(argv: list[str] | None = None, *, session=None, sleep=time.sleep,
         clock=time.monotonic) -> int:
    args = parse_args(argv)
    if session is None:
        import boto3  # imported here so that --help works without it

        session = boto3.session.Session(region_name=args.region)
    elbv2, ec2 = session.client("elbv2"), session.client("ec2")
    try:
        balancer = discover(args.environment, elbv2, ec2)
        if args.action == "out":
            take_out(balancer, args.host, elbv2, force=args.force, timeout=args.timeout,
                     sleep=sleep, clock=clock)
            print(f"{args.host} is out of the NLB and drained")
        elif args.action == "in":
            put_back(balancer, args.host, elbv2, timeout=args.timeout, sleep=sleep,
                     clock=clock)
            print(f"{args.host} is back in the NLB and healthy")
        else:
            for host, instance_id in sorted(balancer.hosts.items()):
                shown = ", ".join(f"{n} {s}" for n, s in sorted(
                    states(balancer, instance_id, elbv2).items()))
                print(f"{host} {instance_id}: {shown}")
    except MaintenanceError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status
    except Exception as error:  # botocore's ClientError and friends: one line
        code = getattr(error, "response", {}).get("Error", {}).get("Code")
        print(f"error: AWS refused: {code or type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
