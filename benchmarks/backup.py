#!/usr/bin/env python3
"""Benchmark of DB-01's backups on real parts (a script, not a test).

A local DB-01 (PostgreSQL, pgBackRest, repo1 posix, repo2 in moto's S3 behind Caddy's TLS;
see tests/provisioning/backup_lab.py) with production's ``archive_timeout`` and WAL segment
size prints:

* RPO: over several trials, inserts that never pause (one row per transaction), then a
  kill -9 of the server with its data directory and spool deleted at a random moment, then
  ``db-backup restore --latest``: the seconds between the crash and the oldest acknowledged
  row that did not come back (0 when none was lost). The worst trial is the figure.
* Restore time of a database of about ``--size-mb`` MB from each repository: from the
  ``db-backup restore --latest`` command's start to PostgreSQL open for writes.

For comparison, Amazon RDS restores to a point about 5 minutes before now (its latest
restorable time), and takes longer than a minute to create the restored instance.

    python benchmarks/backup.py [--trials 3] [--archive-timeout 60] [--size-mb 1024]
"""
import argparse
import random
import shutil
import sys
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from provisioning.pgbackrest import ARCHIVE_TIMEOUT_SECONDS  # noqa: E402
from tests.provisioning.backup_lab import BackedUpCluster, Inserts, LocalS3  # noqa: E402

PRODUCTION_WAL_SEGMENT_MB = 16


def rpo_trial(s3: LocalS3, archive_timeout: int) -> tuple[float, int]:
    """One crash and restore; the seconds of data lost and the rows acknowledged."""
    lab = BackedUpCluster(s3, f"rpo-{uuid.uuid4().hex[:10]}", archive_timeout=archive_timeout,
                          wal_segment_mb=PRODUCTION_WAL_SEGMENT_MB, process_max=2).create()
    try:
        lab.db_backup("backup", "full", "--repo", "1")
        inserts = Inserts(lab.dsn, interval=0.02).start()
        # Past the first archive_timeout, then anywhere in the next one.
        time.sleep(archive_timeout * (1 + random.random()) + 1)
        crashed = lab.crash()
        inserts.stop()
        lab.db_backup("restore", "--latest", "--repo", "1")
        present = {int(row) for row in lab.psql("SELECT id FROM ticks").split()}
        lost = [at for row, at in inserts.acknowledged.items() if row not in present]
        return (crashed - min(lost) if lost else 0.0), len(inserts.acknowledged)
    finally:
        lab.destroy()


def restore_times(s3: LocalS3, size_mb: int) -> dict[str, float]:
    lab = BackedUpCluster(s3, f"size-{uuid.uuid4().hex[:10]}",
                          archive_timeout=ARCHIVE_TIMEOUT_SECONDS,
                          wal_segment_mb=PRODUCTION_WAL_SEGMENT_MB, process_max=2).create()
    try:
        # About 330 bytes per row on disk: md5 text eight times, plus the tuple overhead.
        rows = size_mb * 1024 * 1024 // 330
        started = time.monotonic()
        lab.psql("CREATE TABLE orders AS SELECT g AS id, repeat(md5(g::text), 8) AS body "
                 f"FROM generate_series(1, {rows}) g")
        size = lab.psql("SELECT pg_size_pretty(pg_database_size('postgres'))")
        print(f"  database: {size} in {time.monotonic() - started:.0f} s", flush=True)
        timings = {}
        for repo in ("1", "2"):
            started = time.monotonic()
            lab.db_backup("backup", "full", "--repo", repo)
            print(f"  full backup to repo{repo}: {time.monotonic() - started:.0f} s", flush=True)
        for repo in ("2", "1"):
            lab.crash()
            if repo == "2":
                moved = lab.repo1.with_name("repo1-away")
                shutil.move(lab.repo1, moved)
            started = time.monotonic()
            lab.db_backup("restore", "--latest", "--repo", repo)
            timings[f"repo{repo}"] = time.monotonic() - started
            if repo == "2":
                shutil.move(moved, lab.repo1)
            count = int(lab.psql("SELECT count(*) FROM orders"))
            assert count == rows, f"restored {count} of {rows} rows"
            print(f"  restore from repo{repo}: {timings[f'repo{repo}']:.0f} s", flush=True)
        return timings
    finally:
        lab.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--archive-timeout", type=int, default=ARCHIVE_TIMEOUT_SECONDS)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    s3 = LocalS3().start()
    try:
        losses = []
        for trial in range(1, args.trials + 1):
            lost, rows = rpo_trial(s3, args.archive_timeout)
            losses.append(lost)
            print(f"trial {trial}: {rows} rows acknowledged, {lost:.1f} s of data lost",
                  flush=True)
        print(f"worst RPO over {args.trials} trials: {max(losses):.1f} s "
              f"(archive_timeout {args.archive_timeout} s)")
        if args.size_mb:
            print(f"restore of a ~{args.size_mb} MB database:", flush=True)
            timings = restore_times(s3, args.size_mb)
            print("restore time (command start to open for writes): " + ", ".join(
                f"{repo} {seconds:.0f} s" for repo, seconds in timings.items()))
    finally:
        s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
