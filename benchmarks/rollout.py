#!/usr/bin/env python3
"""Benchmark of the rolling update on a local fleet (a script, not a test).

For 4, 8 and 16 app hosts behind a real Caddy, under steady keep-alive load (GET and POST with
bodies, clients that never retry), it rolls a new image with a batch of 1 host and with a
batch of 25 %, and prints per run:

* total seconds of ``scripts/rolling_update.py`` (process start to exit);
* the floor no rollout can beat: per batch, the drain wait plus the slowest app start-up in
  that batch (measured by the local app-deploy from process start to first healthy answer);
* the overhead beyond that floor, per batch and per host (everything included: the
  command's own start, reading every host before and after, the batches);
* the same inside one host's cycle (drain -> deploy -> checks -> undrain -> back in Caddy),
  from the seconds the rollout reports per host: what grows with every host;
* requests sent and failed during the run.

Targets: 0 failed requests; under 1 s of overhead per host; with 25 % batches the total
follows the number of batches (4), not the number of hosts.

    python benchmarks/rollout.py [--sizes 4 8 16] [--batches 1 25%] [--caddy PATH]
"""
import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from rollout.batching import BatchSize  # noqa: E402
from rollout.lab.fleet import LocalFleet, caddy_binary  # noqa: E402
from rollout.lab.load import LoadGenerator  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--batches", nargs="+", default=["1", "25%"])
    parser.add_argument("--drain-seconds", type=float, default=0.5)
    parser.add_argument("--app-startup", type=float, default=0.3,
                        help="seconds the demo app takes to start, like a container")
    parser.add_argument("--health-interval", default="250ms")
    parser.add_argument("--healthy-checks", type=int, default=2)
    parser.add_argument("--check-interval", type=float, default=0.1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s per client")
    parser.add_argument("--caddy", default=caddy_binary(),
                        help="Caddy binary (default: the one of requirements-dev.txt)")
    return parser.parse_args()


# A row of the final table: host, old image, new image, result, seconds.
CYCLE = re.compile(r"^(APP-\d+)\s+\S+\s+\S+\s+updated\s+([\d.]+)$", re.M)


def startups(fleet: LocalFleet) -> dict[str, list[float]]:
    return {h.name: fleet.startup_times(h) for h in fleet.hosts}


def run_one(fleet: LocalFleet, args, image: str, batch: str) -> dict:
    before = startups(fleet)
    with LoadGenerator("127.0.0.1", fleet.http_port, clients=args.clients,
                       rate=args.rate) as load:
        while load.stats.sent < args.clients * 5:
            time.sleep(0.02)
        sent_before, failed_before = load.stats.sent, load.stats.failed
        started = time.monotonic()
        done = subprocess.run(fleet.rollout_argv(
            "--image", image, "--batch-size", batch,
            "--drain-seconds", str(args.drain_seconds),
            "--healthy-checks", str(args.healthy_checks),
            "--check-interval", str(args.check_interval), "--health-timeout", "30"),
            capture_output=True, text=True, timeout=600)
        total = time.monotonic() - started
        sent = load.stats.sent - sent_before
        failed = load.stats.failed - failed_before
    if done.returncode != 0:
        raise SystemExit(f"rollout failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    after = startups(fleet)
    started_in = {name: after[name][len(before[name]):] for name in after}
    per_batch = BatchSize.parse(batch).hosts(len(fleet.hosts))
    names = [h.name for h in fleet.hosts]
    batches = [names[i:i + per_batch] for i in range(0, len(names), per_batch)]
    floor = sum(args.drain_seconds + max(max(started_in[n]) for n in b) for b in batches)
    overhead = total - floor
    cycles = {m[1]: float(m[2]) for m in CYCLE.finditer(done.stdout)}
    if sorted(cycles) != sorted(names):
        raise SystemExit(f"cannot read every host's seconds from the report:\n{done.stdout}")
    startup = sum(sum(v) for v in started_in.values()) / len(names)
    cycle_overhead = sum(cycles.values()) / len(names) - args.drain_seconds - startup
    return {"hosts": len(names), "batch": batch, "batches": len(batches), "total": total,
            "floor": floor, "per_batch": overhead / len(batches),
            "per_host": overhead / len(names), "cycle": cycle_overhead, "sent": sent,
            "failed": failed, "startup": startup}


def main() -> int:
    args = parse_args()
    rows = []
    version = subprocess.run([args.caddy, "version"], capture_output=True, text=True).stdout
    print(f"caddy {version.strip()}, health probe {args.health_interval}, "
          f"drain {args.drain_seconds:g}s, app start-up {args.app_startup:g}s, "
          f"{args.healthy_checks} healthy checks {args.check_interval:g}s apart, "
          f"{args.clients} clients x {args.rate:g} req/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as workdir:
        for size in args.sizes:
            with LocalFleet(Path(workdir) / f"fleet-{size}", size, caddy=args.caddy,
                            health_interval=args.health_interval,
                            app_startup=args.app_startup) as fleet:
                for version, batch in enumerate(args.batches, 2):
                    row = run_one(fleet, args, f"registry.local/app:v{version}", batch)
                    rows.append(row)
                    print(f"  {size} hosts, batch {batch}: {row['total']:.1f}s", flush=True)
    header = (f"{'hosts':>5} {'batch':>5} {'batches':>7} {'total s':>8} {'floor s':>8} "
              f"{'over/batch':>10} {'over/host':>9} {'in cycle':>8} {'start-up':>8} "
              f"{'requests':>8} {'failed':>6}")
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['hosts']:>5} {r['batch']:>5} {r['batches']:>7} {r['total']:>8.2f} "
              f"{r['floor']:>8.2f} {r['per_batch']:>10.2f} {r['per_host']:>9.2f} "
              f"{r['cycle']:>8.2f} {r['startup']:>8.2f} {r['sent']:>8} {r['failed']:>6}")
    serial = [r for r in rows if r["batch"] == "1"]
    worst = max((r["per_host"] for r in serial), default=math.nan)
    worst_cycle = max((r["cycle"] for r in serial), default=math.nan)
    failed = sum(r["failed"] for r in rows)
    print(f"\nfailed requests: {failed}; worst overhead per host with batch 1: {worst:.2f}s "
          f"overall, {worst_cycle:.2f}s inside the host's cycle")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
