#!/usr/bin/env python3
"""db-backup-metrics: publish DB-01's backup health to CloudWatch, every minute (a timer).

BackupAgeSeconds: seconds since the newest good backup, in the repository whose newest is
oldest (a backup missing from either copy counts). Not published when a repository cannot
be read or holds no good backup: the alarm counts missing data as breaching.
ArchiveLagSeconds: how long the oldest WAL segment PostgreSQL has closed has been waiting to
be archived; 0 when nothing waits. A failing archive_command leaves segments waiting.

    db-backup-metrics --namespace NS --environment ENV --region REGION [--dry-run]

Runs as the postgres user: ``pgbackrest info`` and ``psql`` need no other rights.
Exit status 1 when a metric could not be measured (the unit then shows as failed).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

LAG_QUERY = ("SELECT coalesce(extract(epoch FROM now() - min(modification)), 0) "
             "FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")


def backup_age(info: list, now: float) -> tuple[float | None, list[str]]:
    """The worst repository's seconds since its newest good backup; and what is wrong."""
    problems, ages = [], []
    for stanza in info:
        newest: dict[int, float] = {}
        for backup in stanza.get("backup", []):
            if backup.get("error"):
                continue
            key = backup["database"]["repo-key"]
            newest[key] = max(newest.get(key, 0), backup["timestamp"]["stop"])
        for repo in stanza.get("repo", []):
            key, status = repo["key"], repo["status"]
            if status["code"] != 0:
                problems.append(f"repo{key}: {status['message']}")
            elif key not in newest:
                problems.append(f"repo{key}: no good backup")
            else:
                ages.append(now - newest[key])
    if not ages and not problems:
        problems.append("no repository in pgbackrest info")
    return (None if problems else max(ages)), problems


def measure(args) -> tuple[dict[str, float], list[str]]:
    info = subprocess.run([args.pgbackrest, f"--config={args.config}", f"--stanza={args.stanza}",
                           "--output=json", "info"], capture_output=True, text=True)
    metrics, problems = {}, []
    if info.returncode == 0:
        age, problems = backup_age(json.loads(info.stdout), time.time())
        if age is not None:
            metrics["BackupAgeSeconds"] = round(age)
    else:
        problems.append(f"pgbackrest info failed: {info.stderr.strip()}")
    lag = subprocess.run([args.psql, "-X", "-A", "-t", "-q", "-d", "postgres", "-c", LAG_QUERY],
                         capture_output=True, text=True)
    if lag.returncode == 0:
        metrics["ArchiveLagSeconds"] = round(float(lag.stdout.strip()))
    else:
        problems.append(f"archive lag unknown: {lag.stderr.strip()}")
    return metrics, problems


def publish(metrics: dict[str, float], args) -> None:
    import boto3

    cloudwatch = boto3.client("cloudwatch", region_name=args.region)
    cloudwatch.put_metric_data(Namespace=args.namespace, MetricData=[
        {"MetricName": name, "Value": value, "Unit": "Seconds",
         "Dimensions": [{"Name": "Environment", "Value": args.environment}]}
        for name, value in metrics.items()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--environment", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--stanza", default="main")
    parser.add_argument("--config", default="/etc/pgbackrest/pgbackrest.conf")
    parser.add_argument("--pgbackrest", default="pgbackrest")
    parser.add_argument("--psql", default="psql")
    parser.add_argument("--dry-run", action="store_true", help="print, publish nothing")
    args = parser.parse_args(argv)
    metrics, problems = measure(args)
    for name, value in metrics.items():
        print(f"{name}={value:g}")
    for problem in problems:
        print(f"db-backup-metrics: {problem}", file=sys.stderr)
    if metrics and not args.dry_run:
        publish(metrics, args)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
