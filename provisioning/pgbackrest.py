"""DB-01's continuous backup with pgBackRest: its configuration, PostgreSQL's archiving, timers.

Two repositories hold the same backups and WAL:

- repo1: posix, on NFS-01's export mounted at ``/mnt/backups`` (the seed's "NFS for backups");
- repo2: the environment's S3 bucket (``modules/backup_bucket.py``), reached with DB-01's
  instance role (``repo2-s3-key-type=auto``) and encrypted with the bucket's KMS key.

WAL leaves DB-01 through asynchronous ``archive-push`` (a local spool queue, several segments
per call), and ``archive_timeout`` closes a segment at least every minute, so a committed
transaction is in both repositories within about a minute. Everything here is rendered from
the environment's settings; the tests render the same text with local paths and endpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

STANZA = "main"
# PostgreSQL closes a WAL segment at least this often while anything is written: the most
# committed data that can wait on DB-01 before it is archived.
ARCHIVE_TIMEOUT_SECONDS = 60
CONFIG_PATH = "/etc/pgbackrest/pgbackrest.conf"
SPOOL_PATH = "/var/spool/pgbackrest"
LOG_PATH = "/var/log/pgbackrest"
LOCK_PATH = "/tmp/pgbackrest"  # pgBackRest's default
REPO1_SUBDIR = "pgbackrest"
REPO2_PATH = "/pgbackrest"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class S3Repository:
    """repo2: where pgBackRest finds the bucket.

    bucket, region: the environment's backup bucket. kms_key_id: the key objects are
    encrypted with (SSE-KMS), or None for the bucket's default. endpoint: the S3 endpoint
    (regional by default; a VPC endpoint or another S3 server works too). port, uri_style,
    ca_file: how to reach a non-AWS endpoint; AWS needs none of them. key_type: ``auto``
    takes the instance role's temporary credentials from the instance metadata service.
    """

    bucket: str
    region: str
    kms_key_id: Optional[str] = None
    endpoint: Optional[str] = None
    port: Optional[int] = None
    uri_style: str = "host"
    ca_file: Optional[str] = None
    key_type: str = "auto"


@dataclass(frozen=True)
class Cluster:
    """The PostgreSQL cluster pgBackRest backs up (Ubuntu's ``16/main`` by default)."""

    data_directory: str
    port: int = 5432
    socket_directory: str = "/var/run/postgresql"


def config_text(*, cluster: Cluster, repo1_path: str, s3: S3Repository, retention_days: int,
                spool_path: str = SPOOL_PATH, log_path: str = LOG_PATH,
                lock_path: str = LOCK_PATH, process_max: int = 2) -> str:
    """pgbackrest.conf: both repositories, asynchronous archiving, retention by time."""
    endpoint = s3.endpoint or f"s3.{s3.region}.amazonaws.com"
    repo2 = {
        "repo2-type": "s3",
        "repo2-path": REPO2_PATH,
        "repo2-s3-bucket": s3.bucket,
        "repo2-s3-region": s3.region,
        "repo2-s3-endpoint": endpoint,
        "repo2-s3-key-type": s3.key_type,
        "repo2-s3-uri-style": s3.uri_style,
    }
    if s3.kms_key_id:
        repo2["repo2-s3-kms-key-id"] = s3.kms_key_id
    if s3.port:
        repo2["repo2-storage-port"] = str(s3.port)
    if s3.ca_file:
        repo2["repo2-storage-ca-file"] = s3.ca_file
    options = {
        "repo1-type": "posix",
        "repo1-path": repo1_path,
        **repo2,
        # Full backups are kept until the oldest one still needed to restore to any second
        # of the last retention_days; the WAL they need is kept with them.
        **{f"repo{n}-{key}": value for n in (1, 2) for key, value in (
            ("retention-full-type", "time"), ("retention-full", str(retention_days)),
            # Small files bundled into larger objects: a cluster's thousand small files
            # become a few dozen S3 PUTs (cheaper, and much faster to write and verify).
            ("bundle", "y"))},
        "archive-async": "y",
        "spool-path": spool_path,
        "lock-path": lock_path,
        "process-max": str(process_max),
        "compress-type": "zst",
        "start-fast": "y",
        "log-path": log_path,
        "log-level-console": "info",
        "log-level-file": "detail",
    }
    lines = ["# Written by DB-01's user data (provisioning/pgbackrest.py).", "[global]"]
    lines += [f"{key}={value}" for key, value in options.items()]
    lines += ["", f"[{STANZA}]", f"pg1-path={cluster.data_directory}",
              f"pg1-port={cluster.port}", f"pg1-socket-path={cluster.socket_directory}", ""]
    return "\n".join(lines)


def archiving_settings(archive_timeout: int = ARCHIVE_TIMEOUT_SECONDS,
                       config_path: str = CONFIG_PATH) -> dict[str, str]:
    """postgresql.conf settings for continuous archiving through pgBackRest."""
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": f"pgbackrest --config={config_path} --stanza={STANZA} "
                           "archive-push %p",
        "archive_timeout": f"{archive_timeout}s",
        # Commit times are kept with each transaction: what a restore to a time compares.
        "track_commit_timestamp": "on",
    }


def calendar(days: str, time: str) -> str:
    """A systemd OnCalendar expression: ``days`` (``Sun``, ``Mon..Sat``) at ``time`` UTC."""
    return f"{days} *-*-* {time}:00 UTC"


def schedule(full_day: str, time: str) -> dict[str, str]:
    """OnCalendar of each timer: a full backup on ``full_day``, a differential on the others,
    and check + verify every day two hours after the backup (when it has usually finished).
    """
    others = ",".join(day for day in WEEKDAYS if day != full_day)
    hour, minute = time.split(":")
    check = f"{(int(hour) + 2) % 24:02d}:{minute}"
    return {"full": calendar(full_day, time), "diff": calendar(others, time),
            "check": f"*-*-* {check}:00 UTC"}


def systemd_units(*, schedule: dict[str, str], cluster_unit: str, mount_unit: str,
                  metrics_command: list[str], db_backup: str = "/usr/local/sbin/db-backup"
                  ) -> dict[str, str]:
    """DB-01's backup units by file name: the backups, the daily check, the metrics."""
    def unit(description: str, *sections: tuple[str, list[str]]) -> str:
        lines = ["# DB-01's backups (provisioning/pgbackrest.py).", "[Unit]",
                 f"Description={description}"]
        for name, body in sections:
            lines += ["", f"[{name}]", *body]
        return "\n".join(lines) + "\n"

    after = [f"After=network-online.target {cluster_unit} {mount_unit}",
             "Wants=network-online.target"]
    units = {
        "db-backup@.service": unit(
            "pgBackRest %i backup of the database to NFS-01 and S3",
            ("Unit", after), ("Service", [
                "Type=oneshot", f"ExecStart={db_backup} backup %i",
                # A backup must not slow the database down for the app.
                "Nice=10", "IOSchedulingClass=idle", "TimeoutStartSec=12h"])),
        "db-backup-check.service": unit(
            "pgBackRest check and verify of both repositories",
            ("Unit", after), ("Service", [
                "Type=oneshot", f"ExecStart={db_backup} check", "Nice=10",
                "IOSchedulingClass=idle", "TimeoutStartSec=6h"])),
        # As postgres: pgbackrest info and the archiver's status need nothing more.
        "db-backup-metrics.service": unit(
            "Backup age and WAL archive lag to CloudWatch",
            ("Unit", [f"After={cluster_unit}"]), ("Service", [
                "Type=oneshot", "User=postgres", "Group=postgres",
                "ExecStart=" + " ".join(metrics_command), "TimeoutStartSec=50s"])),
        "db-backup-metrics.timer": unit(
            "Backup metrics every minute",
            ("Timer", ["OnBootSec=2min", "OnUnitActiveSec=1min", "AccuracySec=5s"]),
            ("Install", ["WantedBy=timers.target"])),
    }
    for name, service in (("full", "db-backup@full.service"), ("diff", "db-backup@diff.service"),
                          ("check", "db-backup-check.service")):
        # Persistent: a run missed while DB-01 was down happens at its next boot.
        units[f"db-backup-{name}.timer"] = unit(
            f"Schedule of {service}",
            ("Timer", [f"OnCalendar={schedule[name]}", "Persistent=true", f"Unit={service}"]),
            ("Install", ["WantedBy=timers.target"]))
    return units
