#!/usr/bin/env python3
"""cert-sync: share Caddy's certificates between the load balancers through S3.

    cert-sync pull  --bucket B --prefix caddy/ --root /var/lib/caddy/caddy
    cert-sync push  --bucket B --prefix caddy/ --root /var/lib/caddy/caddy
    cert-sync sync  ...                          pull, then push (the timer's command)
    cert-sync pull  ... --wait-for DOMAIN --wait-seconds 1800

Only Caddy's ``certificates/`` folder is shared: the certificate, its key and its metadata,
one folder per name. A folder moves as a whole, and only when the other side's copy is newer
(the newest file in the folder decides), so a renewal made on either LB reaches the other
and an older copy never overwrites a newer one. Each object carries its SHA-256 and its
modification time as metadata: SSE-KMS ETags are not content digests.

Caddy checks its storage for a renewed certificate before renewing one itself; the peer LB
renews late (see provisioning/caddy.py), so it normally finds LB-01's renewal here first.
``--wait-for`` (LB-02's first boot) waits until LB-01's certificate for DOMAIN is in the
bucket, so a new LB-02 does not ask the CA for a certificate of its own.

Installed on the load balancers as /usr/local/sbin/cert-sync; needs Ubuntu's python3-boto3.
Exit status 1 on an S3 error, with one line on stderr.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

SHARED = "certificates"
WAIT_INTERVAL_SECONDS = 15
EXIT_FAILURE = 1


def _client(region: str | None):
    import boto3  # imported here so that --help works without it

    return boto3.client("s3", region_name=region)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_folders(root: Path) -> dict[str, dict[str, Path]]:
    """Each certificate folder under ``root/certificates``: relative path -> its files."""
    folders: dict[str, dict[str, Path]] = {}
    base = root / SHARED
    if not base.is_dir():
        return folders
    for path in sorted(base.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            relative = path.relative_to(root).as_posix()
            folders.setdefault(relative.rsplit("/", 1)[0], {})[relative] = path
    return folders


def remote_folders(client, bucket: str, prefix: str) -> dict[str, dict[str, dict]]:
    """The same for the bucket: relative path -> {key, sha256, mtime}."""
    folders: dict[str, dict[str, dict]] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}{SHARED}/"):
        for item in page.get("Contents", []):
            head = client.head_object(Bucket=bucket, Key=item["Key"])
            meta = head.get("Metadata", {})
            relative = item["Key"][len(prefix):]
            folders.setdefault(relative.rsplit("/", 1)[0], {})[relative] = {
                "key": item["Key"], "sha256": meta.get("sha256", ""),
                "mtime": float(meta.get("mtime", 0))}
    return folders


def _local_state(files: dict[str, Path]) -> tuple[float, dict[str, str]]:
    return (max(p.stat().st_mtime for p in files.values()),
            {name: _digest(p.read_bytes()) for name, p in files.items()})


def _remote_state(files: dict[str, dict]) -> tuple[float, dict[str, str]]:
    return (max(f["mtime"] for f in files.values()),
            {name: f["sha256"] for name, f in files.items()})


def pull(client, bucket: str, prefix: str, root: Path) -> list[str]:
    """Download every remote folder newer than (or missing from) the local copy."""
    local = local_folders(root)
    pulled = []
    for folder, files in sorted(remote_folders(client, bucket, prefix).items()):
        remote_time, remote_digests = _remote_state(files)
        if folder in local:
            local_time, local_digests = _local_state(local[folder])
            if local_digests == remote_digests or local_time >= remote_time:
                continue
        for relative, info in sorted(files.items()):
            data = client.get_object(Bucket=bucket, Key=info["key"])["Body"].read()
            _write(root / relative, data, info["mtime"])
        pulled.append(folder)
    return pulled


def push(client, bucket: str, prefix: str, root: Path) -> list[str]:
    """Upload every local folder newer than (or missing from) the bucket's copy."""
    remote = remote_folders(client, bucket, prefix)
    pushed = []
    for folder, files in sorted(local_folders(root).items()):
        local_time, local_digests = _local_state(files)
        if folder in remote:
            remote_time, remote_digests = _remote_state(remote[folder])
            if local_digests == remote_digests or remote_time >= local_time:
                continue
        for relative, path in sorted(files.items()):
            data = path.read_bytes()
            client.put_object(Bucket=bucket, Key=f"{prefix}{relative}", Body=data,
                              Metadata={"sha256": _digest(data),
                                        "mtime": repr(path.stat().st_mtime)})
        pushed.append(folder)
    return pushed


def _write(path: Path, data: bytes, mtime: float) -> None:
    """Write ``path`` whole or not at all (Caddy may read it at any moment), mode 0600."""
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".cert-sync-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.utime(temporary, (mtime, mtime))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def has_certificate(root: Path, domain: str) -> bool:
    return any((root / SHARED).glob(f"*/{domain}/{domain}.crt"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cert-sync", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("pull", "push", "sync"))
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="caddy/", help="key prefix, ending in /")
    parser.add_argument("--root", type=Path, required=True, help="Caddy's storage folder")
    parser.add_argument("--region")
    parser.add_argument("--wait-for", metavar="DOMAIN",
                        help="pull until the certificate of DOMAIN is here")
    parser.add_argument("--wait-seconds", type=float, default=0)
    args = parser.parse_args(argv)
    if not args.prefix.endswith("/"):
        parser.error("--prefix must end with /")
    return args


def main(argv: list[str] | None = None, client=None, sleep=time.sleep,
         clock=time.monotonic) -> int:
    args = parse_args(argv)
    client = client or _client(args.region)
    deadline = clock() + args.wait_seconds
    try:
        while True:
            where = (client, args.bucket, args.prefix, args.root)
            done = []
            if args.command in ("pull", "sync"):
                done += [f"pulled {folder}" for folder in pull(*where)]
            if args.command in ("push", "sync"):
                done += [f"pushed {folder}" for folder in push(*where)]
            for line in done:
                print(f"cert-sync: {line}")
            if not args.wait_for or has_certificate(args.root, args.wait_for):
                return 0
            if clock() >= deadline:
                print(f"cert-sync: no certificate for {args.wait_for} in s3://{args.bucket}/"
                      f"{args.prefix} after {args.wait_seconds:.0f}s; Caddy will obtain one",
                      file=sys.stderr)
                return 0
            sleep(WAIT_INTERVAL_SECONDS)
    except Exception as error:  # botocore's errors: one line, no traceback, on the journal
        code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
        print(f"cert-sync: {args.command} s3://{args.bucket}/{args.prefix} failed: "
              f"{code or type(error).__name__}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
