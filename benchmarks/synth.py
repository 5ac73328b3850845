"""Synthesis benchmark: a full ``python main.py`` next to its floor, side by side.

The floor is a process that only imports the provider submodules the project uses (``import
core.cdk``): jsii loading the bindings is time no project code can save. Everything above it
is ours. Both engines (cdktf, cdktn) are measured in the same run, each under its own
interpreter (``--python ENGINE=PATH``; by default this one, for every engine it has). Each
figure is the median of ``--runs`` fresh processes, floor and full taken in turn, with peak
memory summed over the process tree (Python and the Node.js process jsii starts).

    make bench      # builds .venv and .venv-cdktn, then runs this script with both
    python benchmarks/synth.py [--runs 5] [--python cdktf=.venv/bin/python ...]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.15
ENGINE_PACKAGES = {"cdktf": "cdktf", "cdktn": "cdktn"}


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def measure(command: list[str], engine: str) -> tuple[float, int]:
    """Wall seconds and peak tree memory (MiB) of one run of ``command``."""
    env = dict(os.environ, CDK_ENGINE=engine)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_kib(process.pid))
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n"
                         f"{process.stderr.read().decode(errors='replace')}")
    return elapsed, peak // 1024


def interleaved_medians(runs: int, commands: list[list[str]], engine: str):
    """Median (wall, peak) of each command, the runs taken in turn.

    Alternating the commands spreads a noisy neighbour's slowdowns over both figures instead
    of letting it land on one of them.
    """
    samples: list[list[tuple[float, int]]] = [[] for _ in commands]
    for _ in range(runs):
        for index, command in enumerate(commands):
            samples[index].append(measure(command, engine))
    return [(statistics.median(wall for wall, _ in runs_of),
             int(statistics.median(peak for _, peak in runs_of)))
            for runs_of in samples]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--python", action="append", default=[], metavar="ENGINE=PATH",
                        help="interpreter that has ENGINE installed (repeatable)")
    args = parser.parse_args()
    interpreters = {engine: sys.executable for engine, package in ENGINE_PACKAGES.items()
                    if importlib.util.find_spec(package)}
    for choice in args.python:
        engine, _, path = choice.partition("=")
        if engine not in ENGINE_PACKAGES or not Path(path).is_file():
            print(f"error: --python {choice}: expected ENGINE=PATH with ENGINE one of "
                  f"{', '.join(ENGINE_PACKAGES)} and PATH an interpreter", file=sys.stderr)
            return 2
        interpreters[engine] = path
    if not interpreters:
        print("error: no CDK engine installed; run `make synth` first", file=sys.stderr)
        return 2
    print(f"{'engine':8} {'what':6} {'wall s':>7} {'peak MiB':>9}")
    verdicts = []
    with tempfile.TemporaryDirectory() as scratch:
        for engine, python in sorted(interpreters.items()):
            floor, full = interleaved_medians(args.runs, [
                [python, "-c", "import core.cdk"],
                [python, "main.py", "--outdir", str(Path(scratch) / engine)]], engine)
            for what, (wall, peak) in (("floor", floor), ("full", full)):
                print(f"{engine:8} {what:6} {wall:7.2f} {peak:9d}")
            ratio = full[0] / floor[0]
            verdicts.append(f"{engine}: full / floor = {ratio:.2f}x (target <= {TARGET_RATIO}x)"
                            f"{'' if ratio <= TARGET_RATIO else '  OVER TARGET'}")
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
