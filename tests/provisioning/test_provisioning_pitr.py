"""Point-in-time recovery on real parts: PostgreSQL, pgBackRest, a local S3 (moto behind Caddy).

Each test runs a cluster archiving continuously to both repositories under inserts that never
pause (one row per transaction), takes it away as a dead DB-01 would go, and restores it with
``db-backup restore``, the command DB-01 has. ``archive_timeout`` is short here to keep the
tests fast; production's is ``pgbackrest.ARCHIVE_TIMEOUT_SECONDS``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import pytest

from core.settings import ARCHIVE_LAG_ALARM_SECONDS, BACKUP_METRIC_NAMESPACE
from provisioning.cloud_config import FILES_DIR
from tests.provisioning.backup_lab import BackedUpCluster, Inserts, LocalS3

pytestmark = pytest.mark.e2e

ARCHIVE_TIMEOUT = 2
# After archive_timeout closes a segment, the archiver starts pgBackRest, which pushes it:
# the time that takes is what a restore may lose beyond archive_timeout (measured here well
# under a second for a 1 MB segment; benchmarks/backup.py prints it for production's).
PUSH_ALLOWANCE = 1.5


@pytest.fixture(scope="module")
def s3():
    server = LocalS3().start()
    yield server
    server.stop()


@pytest.fixture
def cluster(s3):
    lab = BackedUpCluster(s3, bucket=f"backups-{uuid.uuid4().hex[:12]}",
                          archive_timeout=ARCHIVE_TIMEOUT).create()
    yield lab
    lab.destroy()


def restored_ids(cluster) -> set[int]:
    return {int(row) for row in cluster.psql("SELECT id FROM ticks").split()}


@pytest.mark.parametrize("repo", ["1", "2"])
def test_restore_latest_loses_nothing_older_than_archive_timeout(cluster, repo):
    cluster.db_backup("backup", "full", "--repo", repo)
    inserts = Inserts(cluster.dsn).start()
    time.sleep(4 * ARCHIVE_TIMEOUT)
    crashed = cluster.crash()
    inserts.stop()
    if repo == "2":
        shutil.rmtree(cluster.repo1)  # NFS-01 is gone too

    result = cluster.db_backup("restore", "--latest", "--repo", repo)

    assert f"restored from repo{repo}" in result.stdout
    present = restored_ids(cluster)
    lost = {row: at for row, at in inserts.acknowledged.items() if row not in present}
    assert len(inserts.acknowledged) > 100 and present
    # Every lost row is among the newest: none committed before the window.
    assert all(at > crashed - ARCHIVE_TIMEOUT - PUSH_ALLOWANCE for at in lost.values()), (
        f"lost rows committed {crashed - min(lost.values()):.1f}s before the crash")
    # Nothing comes back that was never acknowledged... except a commit the crash cut off
    # between the server and the client.
    assert max(present) <= max(inserts.acknowledged) + 1
    # The restored cluster takes writes again (promoted, not left in recovery).
    cluster.psql("INSERT INTO ticks (inserted_at) VALUES (now())")


def test_restore_to_a_second_brings_back_exactly_the_rows_committed_before_it(cluster):
    cluster.db_backup("backup", "full", "--repo", "1")
    inserts = Inserts(cluster.dsn).start()
    time.sleep(1.5)
    target = datetime.fromtimestamp(int(time.time()) + 1, timezone.utc)
    time.sleep(2.5)
    inserts.stop()
    text = target.strftime("%Y-%m-%d %H:%M:%S+00")
    expected = {int(row) for row in cluster.psql(
        "SELECT id FROM ticks WHERE pg_xact_commit_timestamp(xmin) <= "
        f"'{text}'::timestamptz").split()}
    later = int(cluster.psql("SELECT count(*) FROM ticks WHERE pg_xact_commit_timestamp(xmin) "
                             f"> '{text}'::timestamptz"))
    assert expected and later > 0
    cluster.wait_for_archive()
    cluster.crash()

    cluster.db_backup("restore", "--to", text, "--repo", "1")

    assert restored_ids(cluster) == expected
    assert cluster.psql("SELECT pg_is_in_recovery()") == "f"


def test_restore_refuses_a_time_it_cannot_read_before_stopping_anything(cluster):
    result = cluster.db_backup("restore", "--to", "yesterday-ish", check=False)

    assert result.returncode == 1
    assert "is not a time such as '2026-12-01 10:31:07+00'" in result.stderr
    assert cluster.psql("SELECT 1") == "1"


def metrics(cluster) -> subprocess.CompletedProcess:
    command = [sys.executable, str(FILES_DIR / "backup_metrics.py"),
               "--namespace", BACKUP_METRIC_NAMESPACE,
               "--environment", "lab", "--region", "us-east-1", "--config", str(cluster.config),
               "--psql", str(cluster.bindir / "psql")]
    # As the test's user with the test's interpreter (boto3): DB-01 runs it as postgres, whose
    # rights it needs only for pgbackrest info and the archiver's status, both given here.
    return subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=60)


def published(cluster) -> dict[str, float]:
    cloudwatch = cluster.s3.client("cloudwatch")
    values = {}
    for name in ("BackupAgeSeconds", "ArchiveLagSeconds"):
        statistics = cloudwatch.get_metric_statistics(
            Namespace=BACKUP_METRIC_NAMESPACE, MetricName=name,
            Dimensions=[{"Name": "Environment", "Value": "lab"}],
            StartTime=datetime.fromtimestamp(time.time() - 600, timezone.utc),
            EndTime=datetime.fromtimestamp(time.time() + 60, timezone.utc),
            Period=60, Statistics=["Maximum"])["Datapoints"]
        if statistics:
            values[name] = max(point["Maximum"] for point in statistics)
    return values


def test_the_metrics_turn_red_when_archiving_and_backups_fail(cluster):
    missing = metrics(cluster)
    # No backup yet in either repository: no age to publish, and the unit fails.
    assert missing.returncode == 1 and "repo1: no valid backups" in missing.stderr
    cluster.db_backup("backup", "full")
    healthy = metrics(cluster)
    assert healthy.returncode == 0, healthy.stderr
    values = published(cluster)
    assert values["BackupAgeSeconds"] < 120
    assert values["ArchiveLagSeconds"] < ARCHIVE_LAG_ALARM_SECONDS
    # The daily check: pgbackrest check (a WAL switch archived to both repositories), then
    # verify of each repository.
    daily = cluster.db_backup("check", check=False)
    assert daily.returncode == 0, daily.stderr
    assert "check out in every repository" in daily.stderr + daily.stdout

    # NFS-01's repository disappears: the next backup, archive-push and check fail.
    cluster.repo1.rename(cluster.repo1.with_name("repo1-gone"))
    failed_backup = cluster.db_backup("backup", "diff", check=False)
    assert failed_backup.returncode == 1
    assert "diff backup failed in repo1" in failed_backup.stderr
    failed_check = cluster.db_backup("check", check=False)
    assert failed_check.returncode == 1
    # pgBackRest 2.45's verify finds nothing wrong in a repository path that is gone: check
    # (which archives a segment to each repository) is what catches it.
    assert "failed: check" in failed_check.stderr and "repo1" in failed_check.stderr
    cluster.psql("INSERT INTO ticks (inserted_at) VALUES (now())")
    segment = cluster.psql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 60
    while int(cluster.psql("SELECT failed_count FROM pg_stat_archiver")) == 0:
        assert time.monotonic() < deadline, "archive_command never failed"
        time.sleep(0.2)
    ready = cluster.data / "pg_wal" / "archive_status" / f"{segment}.ready"
    assert ready.exists()
    # Let the segment have waited longer than the alarm allows: its mtime is when it closed.
    closed = time.time() - ARCHIVE_LAG_ALARM_SECONDS - 60
    os.utime(ready, (closed, closed))

    broken = metrics(cluster)

    assert broken.returncode == 1 and "repo1: " in broken.stderr
    printed = dict(line.split("=") for line in broken.stdout.split())
    assert float(printed["ArchiveLagSeconds"]) > ARCHIVE_LAG_ALARM_SECONDS
    assert published(cluster)["ArchiveLagSeconds"] > ARCHIVE_LAG_ALARM_SECONDS
    # No backup age while a repository cannot be read: its alarm counts missing data as
    # breaching (tests/infra/test_backup_infrastructure.py).
    assert "BackupAgeSeconds" not in printed
