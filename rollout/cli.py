"""Command line of the rolling update (``scripts/rolling_update.py`` calls ``main``).

Exit status: 0 every host ended where it should (or a dry run); 1 the rollout failed or
stopped (the report says where every host ended); 2 bad input (flags, inventory, a batch
size the fleet cannot take); 3 refused before touching any host (Caddy's admin API
unreachable, another rollout running, a host that cannot be read, AWS not reachable);
130 interrupted (run the same command again: it restores drained hosts and skips updated ones).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from typing import Callable, TextIO

from .batching import BatchSize, MinHealthy
from .caddy_admin import CaddyAdmin, HttpAdminTransport
from .engine import PlanError, RolloutOptions, RolloutRefused, RollingUpdate
from .inventory import InventoryError, load_inventory
from .locking import FileLock
from .report import RolloutReport, StepLog

PROG = "rolling_update.py"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_IMAGE = re.compile(
    r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*(?::\d+)?/)?"           # registry[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"                # name
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"          # /more/path
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"     # :tag
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$")              # @digest
_RESERVED = {"status", "drain", "undrain"}
_EXAMPLES = {"--environment": "--environment production"}


class UsageError(ValueError):
    """A flag is wrong; the message names it and the fix."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        missing = re.search(r"the following arguments are required: (.+)", message)
        if missing:
            flags = [f.strip() for f in missing[1].split(",")]
            message += "; e.g. " + " ".join(_EXAMPLES.get(f, f"{f} ...") for f in flags)
        raise UsageError(message)


def image_reference(text: str) -> str:
    match = _IMAGE.match(text)
    if not match or len(text) > 255:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an image reference; expected e.g. ghcr.io/org/app:1.4.2")
    if not (match["tag"] or match["digest"]):
        raise argparse.ArgumentTypeError(
            f"{text!r} has no tag: add one (e.g. {text}:1.4.2) or a digest, so that hosts "
            "already on it can be recognised")
    if text in _RESERVED:
        raise argparse.ArgumentTypeError(f"{text!r} is an app-deploy subcommand, not an image")
    return text


def _number(kind, low: float, high: float, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what} between {low:g} and {high:g}, "
                                             f"got {text!r}")
        return value
    return parse


def batch_size(text: str) -> BatchSize:
    try:
        return BatchSize.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def min_healthy(text: str) -> MinHealthy:
    try:
        return MinHealthy.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog=PROG,
        description="Move every app host to a new image, one batch at a time, without "
                    "dropping a request. Local hosts with --inventory FILE, otherwise AWS "
                    "(hosts found by their Environment and Role tags, reached through SSM).",
        epilog="Exit status: 0 done, 1 rollout failed (hosts rolled back, see the table), "
               "2 bad input, 3 refused before touching any host, 130 interrupted.")
    parser.add_argument("--environment", required=True,
                        help="environment to update (the Environment tag, e.g. production)")
    parser.add_argument("--image", type=image_reference,
                        help="image to run, with a tag or digest (e.g. ghcr.io/org/app:1.4.2); "
                             "to roll back, give the previous image")
    parser.add_argument("--batch-size", type=batch_size, default=BatchSize(1),
                        help="hosts updated at once: a number or a percentage of the fleet "
                             "(e.g. 2 or 25%%); default 1")
    parser.add_argument("--min-healthy", type=min_healthy,
                        help="hosts that must keep serving while a batch is out: a number or "
                             "a percentage of the fleet; a batch that would go below it is not "
                             "started (default: the fleet minus one batch)")
    parser.add_argument("--health-timeout", type=_number(float, 1, 3600, "seconds"),
                        default=120.0, help="seconds a new container may take to be healthy "
                                            "(default 120)")
    parser.add_argument("--drain-seconds", type=_number(float, 0, 600, "seconds"),
                        default=10.0,
                        help="seconds for Caddy to stop using a drained host: its health "
                             "interval x fails + the longest request (default 10)")
    parser.add_argument("--healthy-checks", type=_number(int, 1, 100, "a whole number"),
                        default=3, help="consecutive healthy checks before a host rejoins "
                                        "(default 3)")
    parser.add_argument("--check-interval", type=_number(float, 0.05, 60, "seconds"),
                        default=1.0, help="seconds between those checks (default 1)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and change nothing")
    parser.add_argument("--sync-only", action="store_true",
                        help="only reconcile Caddy's upstream list with the hosts that exist")
    parser.add_argument("--keep-updated", action="store_true",
                        help="when a host fails, do not roll back the hosts already updated")
    parser.add_argument("--inventory", metavar="FILE",
                        help="local mode: a YAML inventory (see rollout/inventory.py)")
    parser.add_argument("--region", help="AWS mode: region (default: the environment's "
                                         "configuration, else $AWS_REGION)")
    parser.add_argument("--image-parameter", metavar="NAME",
                        help="AWS mode: SSM parameter that records the image once every host "
                             "serves it, read by APP hosts at first boot (default: the "
                             "environment's, from its configuration)")
    parser.add_argument("--ready-timeout", type=_number(float, 0, 3600, "seconds"),
                        default=1500.0,
                        help="AWS mode: seconds to wait, before the first step, for every host "
                             "to be online in SSM with its first boot done and for Caddy's "
                             "admin API to answer on every LB (default 1500)")
    parser.add_argument("--leaving-from-plan", metavar="PLAN_JSON",
                        help="AWS mode, with --sync-only: before `terraform apply`, take the "
                             "APP hosts this saved plan (`terraform show -json`) destroys out "
                             "of every load balancer, after their requests in flight")
    parser.add_argument("--break-lock", action="store_true",
                        help="AWS mode: take the rollout lease even if another run holds it "
                             "(only when that run is known to be dead)")
    return parser


def parse_args(argv: list[str] | None, environ: dict,
               configured: Callable[[str], dict] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if not args.environment.strip() or not re.match(r"^[A-Za-z0-9_.-]+$", args.environment):
        raise UsageError(f"argument --environment: {args.environment!r} is not an environment "
                         "name; use letters, digits, '-', '_' or '.'")
    if not args.sync_only and not args.image:
        raise UsageError("argument --image is required (e.g. --image ghcr.io/org/app:1.4.2), "
                         "unless --sync-only")
    needed = (args.healthy_checks - 1) * args.check_interval
    if needed >= args.health_timeout:
        raise UsageError(f"argument --health-timeout: {args.health_timeout:g}s is too short "
                         f"for {args.healthy_checks} checks {args.check_interval:g}s apart; "
                         f"give more than {needed:g}")
    if args.inventory and args.region:
        raise UsageError("argument --region is for AWS mode; drop it, or drop --inventory")
    if args.inventory and args.break_lock:
        raise UsageError("argument --break-lock is for AWS mode; a local lock is released when "
                         "its holder dies")
    if args.inventory and args.image_parameter:
        raise UsageError("argument --image-parameter is for AWS mode; drop it, or drop "
                         "--inventory")
    args.leaving = None
    if args.leaving_from_plan is not None:
        if args.inventory or not args.sync_only:
            raise UsageError("argument --leaving-from-plan: for AWS mode with --sync-only")
        args.leaving = destroyed_app_hosts(args.leaving_from_plan)
    if not args.inventory:
        defaults = configured(args.environment) if configured else {}
        args.image_parameter = args.image_parameter or defaults.get("image_parameter")
        args.region = (args.region or defaults.get("region") or environ.get("AWS_REGION")
                       or environ.get("AWS_DEFAULT_REGION"))
        if not args.region:
            raise UsageError("argument --region is required in AWS mode (or set AWS_REGION); "
                             "for local hosts give --inventory FILE")
    return args


def destroyed_app_hosts(path: str) -> frozenset[str]:
    """The instance IDs of the APP hosts a saved plan destroys (scale-in, or replaced)."""
    try:
        with open(path, encoding="utf-8") as file:
            plan = json.load(file)
        changes = plan.get("resource_changes") or []
        return frozenset(
            change["change"]["before"]["id"] for change in changes
            if change.get("type") == "aws_instance"
            and "delete" in change["change"]["actions"]
            and ((change["change"].get("before") or {}).get("tags") or {}).get("Role") == "app")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"argument --leaving-from-plan: {path} is not a saved plan as "
                         f"`terraform show -json` writes it ({type(exc).__name__}: {exc})")


def staying(hosts, leaving: frozenset[str] | None, log: StepLog):
    """The app hosts that stay: those the plan does not destroy. When it destroys or replaces
    every one, none is taken out first: the load balancers would then have nothing at all."""
    if not leaving:
        return tuple(hosts)
    if hosts and all(host.instance_id in leaving for host in hosts):
        log.fleet(f"the plan destroys or replaces every app host ({len(hosts)}): none is taken "
                  "out first, the site serves again once the new hosts do")
        return tuple(hosts)
    for host in hosts:
        if host.instance_id in leaving:
            log.fleet(f"{host.name} ({host.instance_id}): the plan destroys it; taking it "
                      "out of the load balancers first")
    return tuple(h for h in hosts if h.instance_id not in leaving)


def awaited(fleet, leaving: frozenset[str] | None) -> tuple[tuple[str, str], ...]:
    """(name, instance ID) of the hosts whose first boot must be done before the run.

    Taking hosts out before an apply needs only the load balancers: a host whose boot failed
    must not keep the apply that removes or replaces it from running."""
    if leaving:
        return tuple((lb.name, lb.instance_id) for lb in fleet.lbs)
    return tuple(fleet.every_host)


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None,
         environ: dict | None = None, configured: Callable[[str], dict] | None = None) -> int:
    """Run the command; ``configured(environment)`` gives AWS mode's defaults (``region``,
    ``image_parameter``) from the environment's configuration, or raises ValueError."""
    out = stdout if stdout is not None else sys.stdout
    environ = dict(os.environ if environ is None else environ)
    try:
        args = parse_args(argv, environ, configured)
    except UsageError as exc:
        return _error(f"{exc} (see --help)", EXIT_USAGE)
    except ValueError as exc:
        return _error(str(exc), EXIT_USAGE)

    if args.leaving is not None and not args.leaving:
        print(f"{PROG}: the plan destroys no app host: nothing to take out", file=out)
        return EXIT_OK
    options = RolloutOptions(
        image=None if args.sync_only else args.image, batch_size=args.batch_size,
        min_healthy=args.min_healthy,
        health_timeout=args.health_timeout, drain_seconds=args.drain_seconds,
        healthy_checks=args.healthy_checks, check_interval=args.check_interval,
        keep_updated=args.keep_updated, dry_run=args.dry_run, sync_only=args.sync_only)
    if args.sync_only and args.image:
        print(f"{PROG}: note: --image is not used with --sync-only", file=out)
    log = StepLog(out)
    record = None
    try:
        if args.inventory:
            engine = _local_engine(args, options, log)
        else:
            engine, record = _aws_engine(args, options, log)
    except InventoryError as exc:
        return _error(str(exc), EXIT_USAGE)
    except RolloutRefused as exc:
        return _stopped(args, environ, "refused", str(exc), EXIT_REFUSED)

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = engine.run()
    except PlanError as exc:
        return _stopped(args, environ, "refused", str(exc), EXIT_USAGE)
    except RolloutRefused as exc:
        return _stopped(args, environ, "refused", str(exc), EXIT_REFUSED)
    except KeyboardInterrupt:
        return _stopped(args, environ, "interrupted",
                        "interrupted; hosts of the current batch may be left drained: run the "
                        "same command again to restore them and finish", EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _publish(report, out, environ)
    if report.ok and record and not (args.dry_run or args.sync_only):
        problem = record(args.image)
        if problem:
            return _error(problem, EXIT_FAILED)
        print(f"{PROG}: recorded {args.image} in {args.image_parameter}: hosts created from "
              "now on start it", file=out)
    return EXIT_OK if report.ok else EXIT_FAILED


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _error(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _stopped(args, environ: dict, verdict: str, message: str, status: int) -> int:
    """One line on stderr, and the same in the workflow's step summary."""
    _append_summary(environ, f"### Rolling update of {args.environment}: {verdict}\n\n"
                             f"{message}\n")
    return _error(message, status)


def _append_summary(environ: dict, markdown: str) -> None:
    summary_path = environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        try:
            with open(summary_path, "a") as summary:
                summary.write(markdown)
        except OSError as exc:
            print(f"{PROG}: warning: cannot write $GITHUB_STEP_SUMMARY: {exc}", file=sys.stderr)


def _publish(report: RolloutReport, out: TextIO, environ: dict) -> None:
    print("", file=out)
    print(report.table(), file=out)
    _append_summary(environ, report.markdown())


def _local_engine(args, options: RolloutOptions, log: StepLog) -> RollingUpdate:
    from .hosts import LocalHostAdapter

    inventory = load_inventory(args.inventory)
    if inventory.environment and inventory.environment != args.environment:
        raise InventoryError(f"--inventory {args.inventory} is for environment "
                             f"{inventory.environment!r}, not --environment "
                             f"{args.environment!r}")
    lb = [CaddyAdmin(HttpAdminTransport(b.admin), b.upstreams_id, name=b.name,
                     probe_source=b.probe_source) for b in inventory.load_balancers]
    return RollingUpdate(environment=args.environment, hosts=inventory.hosts,
                         host_adapter=LocalHostAdapter(), lb=lb,
                         lock=FileLock(inventory.lock_path(args.environment)),
                         options=options, log=log)


def _aws_engine(args, options: RolloutOptions, log: StepLog):
    """The engine over SSM, and what records the image once the rollout succeeded."""
    # Imported here so that local runs work without AWS libraries configured.
    import boto3
    from botocore.exceptions import BotoCoreError

    from .aws import DiscoveryError, SsmAdminTransport, SsmHostAdapter, SsmRunner, discover
    from .aws import lease_lock, record_deployed_image
    from .readiness import Instance, NotReady, ReadinessWait

    try:
        session = boto3.session.Session(region_name=args.region)
        ec2, ssm = session.client("ec2"), session.client("ssm")
        log.fleet(f"discovering {args.environment} in {args.region} (EC2 tags)")
        fleet = discover(ec2, args.environment)
    except (DiscoveryError, BotoCoreError) as exc:
        raise RolloutRefused(f"{exc}; no host was touched") from exc
    log.fleet("load balancer(s): "
              + ", ".join(f"{lb.name} ({lb.instance_id})" for lb in fleet.lbs)
              + f"; {len(fleet.app_hosts)} app host(s)")
    runner = SsmRunner(ssm, comment=f"rolling update of {args.environment}")
    admins = [CaddyAdmin(SsmAdminTransport(runner, lb), name=lb.name, probe_source=lb.private_ip)
              for lb in fleet.lbs]
    if not args.dry_run:
        try:
            ReadinessWait(ssm, runner, log, timeout=args.ready_timeout).wait(
                [Instance(name, instance_id)
                 for name, instance_id in awaited(fleet, args.leaving)], admins)
        except NotReady as exc:
            raise RolloutRefused(f"{exc}; no host was touched") from exc
    # A lease outlives one batch at its slowest; the holder renews it before every batch.
    ttl = (options.drain_seconds + options.command_timeout + 3 * options.health_timeout
           + 300)
    engine = RollingUpdate(environment=args.environment,
                           hosts=staying(fleet.app_hosts, args.leaving, log),
                           host_adapter=SsmHostAdapter(runner),
                           lb=admins,
                           lock=lease_lock(runner, fleet.lb, ttl=ttl, force=args.break_lock),
                           options=options, log=log)
    if not args.image_parameter:
        return engine, None
    return engine, lambda image: record_deployed_image(ssm, args.image_parameter, image)
