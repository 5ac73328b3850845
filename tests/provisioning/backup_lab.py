"""A DB-01 on this machine: real PostgreSQL, real pgBackRest, repo1 posix, repo2 in a local S3.

repo2 is moto's S3 server behind Caddy: pgBackRest speaks only HTTPS to S3 and checks the
host name, so Caddy terminates TLS for ``localhost`` with a self-signed certificate that
pgBackRest is told to trust (``repo2-storage-ca-file``). The pgBackRest configuration and
PostgreSQL's archiving settings are rendered by ``provisioning/pgbackrest.py``, as DB-01's,
with local paths and endpoints; the commands are ``provisioning/files/db-backup.sh``.

Used by the end-to-end backup tests and by ``benchmarks/backup.py``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from provisioning import pgbackrest
from provisioning.cloud_config import FILES_DIR, SHELL_LIBRARY
from tests.provisioning.postgres_server import free_port, postgres_bindir
from tests.tools import require_tool, venv_tool

OS_USER = "postgres"
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *command] if os.geteuid() == 0 else command


class LocalS3:
    """moto's server (S3, CloudWatch) on loopback, with Caddy in front for HTTPS."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        # Readable by the postgres user, who runs pgBackRest and reads the certificate.
        self.root = Path(tempfile.mkdtemp(prefix="local-s3-"))
        self.root.chmod(0o755)
        self.moto_port, self.port = free_port(), free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port)
        self.endpoint_url = f"http://127.0.0.1:{self.moto_port}"
        self.ca_file = self.root / "localhost.crt"
        self.caddy = None

    def start(self) -> "LocalS3":
        # One line per request, hundreds per backup: nothing a failing test needs.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.moto.start()
        key = self.root / "localhost.key"
        subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", str(key), "-out", str(self.ca_file)],
                       check=True, capture_output=True)
        os.chmod(key, 0o644)  # read by Caddy only, in a private temporary directory
        os.chmod(self.ca_file, 0o644)
        config = {"admin": {"disabled": True}, "apps": {
            "http": {"servers": {"s3": {
                "listen": [f"127.0.0.1:{self.port}"],
                "routes": [{"handle": [{"handler": "reverse_proxy",
                                        "upstreams": [{"dial": f"127.0.0.1:{self.moto_port}"}]}]}],
                "tls_connection_policies": [{}],
                "automatic_https": {"disable": True}}}},
            "tls": {"certificates": {"load_files": [
                {"certificate": str(self.ca_file), "key": str(key)}]}}}}
        path = self.root / "caddy.json"
        path.write_text(json.dumps(config))
        self.caddy = subprocess.Popen([venv_tool("caddy"), "run", "--config", str(path)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env={**os.environ, "HOME": str(self.root),
                                           "XDG_DATA_HOME": str(self.root)})
        deadline = time.monotonic() + 20
        while True:
            try:
                import socket
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.caddy.poll() is not None:
                    raise RuntimeError("Caddy did not start in front of moto")
                time.sleep(0.1)
        return self

    def client(self, service: str):
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        if self.caddy:
            self.caddy.terminate()
            self.caddy.wait(10)
        self.moto.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Inserts:
    """Rows inserted without pause, one transaction each; when each commit was acknowledged."""

    dsn: str
    interval: float = 0.005
    acknowledged: dict[int, float] = field(default_factory=dict)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True) as connection:
                while not self._stop.is_set():
                    (row_id,) = connection.execute(
                        "INSERT INTO ticks (inserted_at) VALUES (clock_timestamp()) "
                        "RETURNING id").fetchone()
                    self.acknowledged[row_id] = time.time()
                    time.sleep(self.interval)
        except psycopg.OperationalError:
            pass  # the server was killed under us: that is the point

    def start(self) -> "Inserts":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class BackedUpCluster:
    """A PostgreSQL cluster archiving to both repositories through the real pgBackRest."""

    def __init__(self, s3: LocalS3, bucket: str, archive_timeout: int = 2,
                 wal_segment_mb: int = 1, process_max: int = 4):
        require_tool("pgbackrest")
        if os.geteuid() == 0:
            require_tool("runuser")
        self.s3, self.bucket = s3, bucket
        self.archive_timeout = archive_timeout
        self.bindir = postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="pgbackrest-lab-"))
        self.data = self.root / "data"
        self.repo1 = self.root / "repo1"
        self.spool = self.root / "spool"
        self.config = self.root / "pgbackrest.conf"
        self.port = free_port()
        for directory in (self.repo1, self.spool, self.root / "log"):
            directory.mkdir()
        if os.geteuid() == 0:
            for path in (self.root, self.repo1, self.spool, self.root / "log"):
                shutil.chown(path, OS_USER, OS_USER)
        self.root.chmod(0o755)
        self.config.write_text(pgbackrest.config_text(
            cluster=pgbackrest.Cluster(data_directory=str(self.data), port=self.port,
                                       socket_directory=str(self.root)),
            repo1_path=str(self.repo1),
            s3=pgbackrest.S3Repository(bucket=bucket, region=REGION, endpoint="localhost",
                                       port=s3.port, uri_style="path",
                                       ca_file=str(s3.ca_file)),
            retention_days=14, spool_path=str(self.spool), log_path=str(self.root / "log"),
            lock_path=str(self.root / "lock"), process_max=process_max))
        self.config.chmod(0o644)
        s3.client("s3").create_bucket(Bucket=bucket)
        self.wal_segment_mb = wal_segment_mb

    @property
    def env(self) -> dict[str, str]:
        """What DB-01's environment holds, pointed at this lab: db-backup's settings, libpq's,
        and the S3 credentials the instance role would give (moto's, here)."""
        fake_systemctl = self.root / "systemctl"
        return {**os.environ, "PATH": f"{self.bindir}{os.pathsep}{os.environ['PATH']}",
                "PGHOST": str(self.root), "PGPORT": str(self.port), "PGUSER": OS_USER,
                "PGDATABASE": "postgres",
                "DB_BACKUP_CONFIG": str(self.root / "absent.env"),
                "PLATFORM_LIB": str(SHELL_LIBRARY.parent),
                "DB_OS_USER": OS_USER if os.geteuid() == 0 else "",
                "PGBACKREST_CONFIG": str(self.config), "PG_DATA": str(self.data),
                "CLUSTER_UNIT": "lab.service", "SYSTEMCTL": str(fake_systemctl),
                "PSQL": str(self.bindir / "psql"), "NFS_SOURCE": "",
                "BACKUP_DIR": str(self.repo1), "RESTORE_WAIT_SECONDS": "300",
                "PGBACKREST_REPO2_S3_KEY_TYPE": "shared",
                "PGBACKREST_REPO2_S3_KEY": "testing", "PGBACKREST_REPO2_S3_KEY_SECRET": "testing",
                "AWS_ENDPOINT_URL": self.s3.endpoint_url, **CREDENTIALS}

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(_as_postgres([str(self.bindir / "pg_ctl"), "--pgdata",
                                            str(self.data), *args]),
                              env=self.env, capture_output=True, text=True, check=check,
                              cwd=self.root)

    def create(self) -> "BackedUpCluster":
        """initdb, archiving on, started; the ticks table; the stanza in both repositories."""
        # What systemctl does on DB-01, for db-backup restore: stop and start the cluster.
        (self.root / "systemctl").write_text(
            "#!/bin/bash\n"
            f'pg_ctl=({" ".join(_as_postgres([str(self.bindir / "pg_ctl")]))} '
            f'--pgdata "{self.data}")\n'
            'case $1 in\n'
            f'  stop) "${{pg_ctl[@]}}" status >/dev/null 2>&1 || exit 0; '
            '"${pg_ctl[@]}" --mode fast --wait stop ;;\n'
            # Like systemd's unit, no start timeout: recovery may replay a lot of WAL.
            f'  start) "${{pg_ctl[@]}}" --wait --timeout 600 --log "{self.root}/server.log" '
            'start ;;\n'
            'esac\n')
        (self.root / "systemctl").chmod(0o755)
        subprocess.run(_as_postgres([str(self.bindir / "initdb"), "--pgdata", str(self.data),
                                     "--username", OS_USER, "--auth", "trust", "--encoding",
                                     "UTF8", "--locale", "C", "--no-sync",
                                     f"--wal-segsize={self.wal_segment_mb}"]),
                       check=True, capture_output=True, cwd=self.root)
        settings = pgbackrest.archiving_settings(self.archive_timeout, str(self.config))
        lines = [f"{key} = '{value}'" for key, value in settings.items()]
        lines += ["listen_addresses = ''", f"port = {self.port}",
                  f"unix_socket_directories = '{self.root}'", "fsync = off",
                  "max_wal_size = '256MB'"]
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join(lines) + "\n")
        self.start()
        self.psql("CREATE TABLE ticks (id bigserial PRIMARY KEY, "
                  "inserted_at timestamptz NOT NULL)")
        self.db_backup("init")
        return self

    def start(self) -> None:
        self._pg_ctl("--wait", "--log", str(self.root / "server.log"), "start")

    def db_backup(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["bash", str(FILES_DIR / "db-backup.sh"), *args], env=self.env,
                                capture_output=True, text=True, timeout=600)
        if check and result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text().splitlines()[-30:] if log.exists() else []
            raise AssertionError(f"db-backup {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}\nserver.log:\n"
                                 + "\n".join(tail))
        return result

    def psql(self, sql: str) -> str:
        result = subprocess.run([str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v",
                                 "ON_ERROR_STOP=1", "-c", sql], env=self.env,
                                capture_output=True, text=True, check=True)
        return result.stdout.strip()

    @property
    def dsn(self) -> str:
        return f"host={self.root} port={self.port} user={OS_USER} dbname=postgres"

    def crash(self) -> float:
        """DB-01 is gone: kill -9 the server and pgBackRest's archiver, delete the data
        directory and the spool. Returns the time of the crash."""
        pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        crashed = time.time()
        self._kill_processes()
        time.sleep(0.2)
        # A replaced DB-01 has no socket lock of the dead server. Here the killed postmaster
        # can linger as a zombie until it is reaped, and PostgreSQL takes a lock naming a
        # PID that still answers kill(pid, 0) for another server's ("lock file already
        # exists"), so the restored server would refuse to start.
        for stale in self.root.glob(".s.PGSQL.*"):
            stale.unlink(missing_ok=True)
        shutil.rmtree(self.data)
        shutil.rmtree(self.spool)
        self.spool.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.spool, OS_USER, OS_USER)
        return crashed

    def wait_for_archive(self, timeout: float = 60) -> None:
        """Switch to a new WAL segment and wait until the one closed is archived."""
        segment = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + timeout
        while self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
            if time.monotonic() > deadline:
                raise AssertionError(f"{segment} not archived within {timeout}s")
            time.sleep(0.2)

    def _kill_processes(self) -> None:
        """SIGKILL every process of this lab: the server's and pgBackRest's, which all name
        this lab's private directory on their command line."""
        for process in Path("/proc").iterdir():
            if not process.name.isdigit():
                continue
            try:
                command = (process / "cmdline").read_bytes()
            except OSError:
                continue
            if str(self.root).encode() in command:
                try:
                    os.kill(int(process.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def destroy(self) -> None:
        self._pg_ctl("--mode", "immediate", "--wait", "stop", check=False)
        self._kill_processes()
        shutil.rmtree(self.root, ignore_errors=True)
