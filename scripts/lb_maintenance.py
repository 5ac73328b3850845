#!/usr/bin/env python3
"""Take one load balancer (LB-01 or LB-02) out of the Network Load Balancer, or put it back.

    python scripts/lb_maintenance.py production status
    python scripts/lb_maintenance.py production out LB-02   # deregister, wait until drained
    python scripts/lb_maintenance.py production in LB-02    # register, wait until healthy
    python scripts/lb_maintenance.py production check       # exit 3 while an LB is out

``out`` refuses to take an LB out while the other one is not healthy in every target group
(that would leave nobody serving; ``--force`` overrides), deregisters it from every target
group of the environment's NLB, and returns once the NLB has let its connections go (the
deregistration delay). ``in`` registers it again and returns once every target group sees it
healthy. Between the two the LB can be patched, upgraded or replaced: see the README's
runbook.

Terraform manages the LBs' target group attachments too: an apply while an LB is out would
register it again, and the drift check sees it missing. So ``out`` records the LB in the SSM
parameter ``/<project>/<environment>/lb/maintenance`` (a String, one ``HOST SINCE`` line per
LB) before deregistering it, and ``in`` removes it once the LB is healthy again. ``check``
is what the deploy workflow runs before planning: it exits 3 naming each LB out and the
command that puts it back. ``check --explain-drift`` is the drift check's: it names them as
a warning and exits 0; where its role may not read the parameter, it names the LBs
registered in no target group instead.

Hosts and the NLB are found by their ``Environment`` and ``Role``/``Name`` tags, as the
rolling update finds them; credentials come from the environment (the deploy role).

Exit status: 0 done; 1 AWS refused, or the wait timed out (one line says which target
group); 2 a bad argument or nothing to act on (one line, no traceback); 3 ``check``: an LB
is out for maintenance.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_IN_MAINTENANCE = 1, 2, 3
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


def take_out(balancer: Balancer, host: str, elbv2, *, timeout: float, **waiting) -> None:
    """Deregister ``host`` everywhere and wait until drained; ``refuse_if_last`` comes
    first (the caller records the maintenance between the two)."""
    instance_id = _instance(balancer, host)
    for arn in balancer.target_groups.values():
        elbv2.deregister_targets(TargetGroupArn=arn, Targets=[
            {"Id": instance_id, "Port": _port(elbv2, arn)}])
    wait_for(balancer, instance_id, "unused", elbv2, timeout, **waiting)


def refuse_if_last(balancer: Balancer, host: str, elbv2, *, force: bool) -> None:
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


def put_back(balancer: Balancer, host: str, elbv2, *, timeout: float, **waiting) -> None:
    instance_id = _instance(balancer, host)
    for arn in balancer.target_groups.values():
        elbv2.register_targets(TargetGroupArn=arn, Targets=[
            {"Id": instance_id, "Port": _port(elbv2, arn)}])
    wait_for(balancer, instance_id, "healthy", elbv2, timeout, **waiting)


def recorded(ssm, parameter: str) -> dict[str, str]:
    """The LBs recorded out for maintenance: host -> since (empty when none)."""
    try:
        value = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    except Exception as error:
        if _code(error) == "ParameterNotFound":
            return {}
        raise
    return dict((line.split(" ", 1) + [""])[:2] for line in value.splitlines() if line.strip())


def record(ssm, parameter: str, hosts: dict[str, str]) -> None:
    if hosts:
        ssm.put_parameter(
            Name=parameter, Type="String", Overwrite=True,
            Value="\n".join(f"{host} {since}" for host, since in sorted(hosts.items())))
        return
    try:
        ssm.delete_parameter(Name=parameter)
    except Exception as error:
        if _code(error) != "ParameterNotFound":
            raise


def _code(error: Exception) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Code", "")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def out_lines(environment: str, hosts: dict[str, str]) -> list[str]:
    return [f"{host} of {environment} is out of the NLB for maintenance since {since}; "
            f"once it is done: python scripts/lb_maintenance.py {environment} in {host}"
            for host, since in sorted(hosts.items())]


def check(environment: str, parameter: str, ssm) -> int:
    """The deploy workflow's guard: a plan now would register an LB under maintenance."""
    hosts = recorded(ssm, parameter)
    if not hosts:
        print(f"no load balancer of {environment} is out for maintenance ({parameter})")
        return 0
    prefix = "::error::" if os.environ.get("GITHUB_ACTIONS") == "true" else "error: "
    for line in out_lines(environment, hosts):
        print(f"{prefix}refusing to plan and apply: {line} (Terraform would register it "
              "again)", file=sys.stdout if prefix == "::error::" else sys.stderr)
    return EXIT_IN_MAINTENANCE


def explain_drift(environment: str, parameter: str, ssm, elbv2, ec2) -> int:
    """The drift check's note: which LBs are out, so that the drift they cause is named."""
    try:
        hosts = recorded(ssm, parameter)
        lines = out_lines(environment, hosts)
    except Exception as error:
        if _code(error) not in ("AccessDenied", "AccessDeniedException"):
            raise
        # A plan role from a bootstrap applied before it could read the parameter: it may
        # describe the target groups.
        try:
            balancer = discover(environment, elbv2, ec2)
        except MaintenanceError:
            balancer = Balancer("", {}, {})  # one LB: no NLB, nothing to take out
        lines = [f"{host} of {environment} is registered in no target group of the NLB "
                 f"(out for maintenance?); python scripts/lb_maintenance.py {environment} "
                 f"in {host} puts it back"
                 for host, instance_id in sorted(balancer.hosts.items())
                 if set(states(balancer, instance_id, elbv2).values()) == {"unused"}]
    if not lines:
        print(f"no load balancer of {environment} is out for maintenance")
        return 0
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    for line in lines:
        print(f"::warning::expected drift: {line}; the plan registers it again")
    if summary:
        with open(summary, "a", encoding="utf-8") as file:
            file.write("".join(f"- **Expected drift:** {line}; the plan registers it "
                               "again.\n" for line in lines))
    return 0


def _instance(balancer: Balancer, host: str) -> str:
    if host not in balancer.hosts:
        known = ", ".join(sorted(balancer.hosts)) or "none"
        raise MaintenanceError(f"{host} is not a load balancer host here (found: {known})",
                               EXIT_BAD_INPUT)
    return balancer.hosts[host]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("environment")
    parser.add_argument("action", choices=("status", "out", "in", "check"))
    parser.add_argument("host", nargs="?", help="LB-01 or LB-02 (out and in)")
    parser.add_argument("--region", help="default: the AWS configuration's region")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds to wait for draining or health (default 600)")
    parser.add_argument("--force", action="store_true",
                        help="take the LB out even if the other one is not healthy")
    parser.add_argument("--parameter", help="the SSM parameter recording the LBs out for "
                        "maintenance (default: /<project>/<environment>/lb/maintenance, "
                        "from config/<environment>.yaml)")
    parser.add_argument("--explain-drift", action="store_true",
                        help="check: name the LBs out as a warning and exit 0 (drift check)")
    args = parser.parse_args(argv)
    if args.action in ("out", "in") and not args.host:
        parser.error(f"{args.action} needs the host, e.g. LB-02")
    return args


def configured(environment: str) -> tuple[str, str]:
    """The region and the maintenance parameter of ``config/<environment>.yaml``."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from core.settings import ConfigError, load_environment
    from provisioning.parameters import lb_maintenance

    try:
        settings = load_environment(environment)
    except ConfigError as error:
        raise MaintenanceError(error.problems[0], EXIT_BAD_INPUT) from None
    return settings.region, lb_maintenance(settings)


def main(argv: list[str] | None = None, *, session=None, sleep=time.sleep,
         clock=time.monotonic, now=_now) -> int:
    args = parse_args(argv)
    try:
        region, parameter = configured(args.environment)
    except MaintenanceError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status
    parameter = args.parameter or parameter
    if session is None:
        import boto3  # imported here so that --help works without it

        session = boto3.session.Session(region_name=args.region or region)
    elbv2, ec2, ssm = session.client("elbv2"), session.client("ec2"), session.client("ssm")
    try:
        if args.action == "check":
            if args.explain_drift:
                return explain_drift(args.environment, parameter, ssm, elbv2, ec2)
            return check(args.environment, parameter, ssm)
        balancer = discover(args.environment, elbv2, ec2)
        if args.action == "out":
            _instance(balancer, args.host)
            refuse_if_last(balancer, args.host, elbv2, force=args.force)
            # Recorded first: a deploy that starts meanwhile refuses rather than undoing it.
            record(ssm, parameter, {**recorded(ssm, parameter), args.host: now()})
            take_out(balancer, args.host, elbv2, timeout=args.timeout, sleep=sleep,
                     clock=clock)
            print(f"{args.host} is out of the NLB and drained; deploys of "
                  f"{args.environment} refuse until `in {args.host}` ({parameter})")
        elif args.action == "in":
            put_back(balancer, args.host, elbv2, timeout=args.timeout, sleep=sleep,
                     clock=clock)
            record(ssm, parameter, {host: since for host, since in
                                    recorded(ssm, parameter).items() if host != args.host})
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
