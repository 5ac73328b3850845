#!/usr/bin/env python3
"""Failover of the two load balancers under load (a script, not a test).

Two real Caddy processes with the production configuration (LB-01, LB-02) in front of a local
fleet of app hosts, behind HAProxy standing in for the AWS Network Load Balancer (TCP mode,
the NLB's health check interval and thresholds, no retry on another server, a runtime API to
drain). Keep-alive clients that never retry send GET and POST with bodies, and a probe
opens a new connection every 0.1 s, while:

1. LB-02's Caddy is killed (SIGKILL), until HAProxy has marked it down;
2. LB-02 is started again, until HAProxy has marked it up;
3. LB-01 is drained through HAProxy's runtime API (what deregistration from the NLB does),
   held, and restored.

Printed per phase: requests sent and failed, new connections opened and failed, seconds
until the balancer saw the change, and the seconds from the event to the last failed new
connection (after that, every new connection succeeded). Goals: 0 failed for the drained
LB; no new connection failing more than 10 s after the kill.

    python benchmarks/lb_failover.py [--caddy .venv/bin/caddy] [--clients 6] [--rate 10]
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from rollout.lab.balancers import (BalancedPair, NewConnectionProbe, TimedLoad,  # noqa: E402
                                   failover)
from rollout.lab.fleet import LocalFleet  # noqa: E402


def parse_args() -> argparse.Namespace:
    venv_caddy = Path(sys.executable).parent / "caddy"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caddy", default=str(venv_caddy) if venv_caddy.exists()
                        else shutil.which("caddy") or "caddy")
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    parser.add_argument("--app-hosts", type=int, default=2)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s per client")
    parser.add_argument("--runs", type=int, default=1)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="lb-failover-") as workdir:
        for run in range(1, args.runs + 1):
            base = Path(workdir) / f"run-{run}"
            with LocalFleet(base / "fleet", args.app_hosts, caddy=args.caddy) as fleet, \
                    BalancedPair(base / "balancers", fleet, caddy=args.caddy,
                                 haproxy=args.haproxy) as pair:
                load = TimedLoad("127.0.0.1", pair.frontend_port, clients=args.clients,
                                 rate=args.rate)
                probe = NewConnectionProbe("127.0.0.1", pair.frontend_port)
                with load, probe:
                    figures = failover(pair, load, probe)
            print(f"run {run}: {args.clients} keep-alive clients x {args.rate:g} req/s, "
                  f"{args.app_hosts} app hosts, HAProxy as the NLB")
            for phase, numbers in figures.items():
                shown = ", ".join(f"{key} {value}" for key, value in numbers.items())
                print(f"  {phase:<26} {shown}")
            if load.stats.failures:
                print(f"  failures seen: {sorted(set(load.stats.failures))[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
