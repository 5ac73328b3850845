"""A throw-away PostgreSQL server on 127.0.0.1 for the tests that need a real one.

PostgreSQL refuses to run as root, and CI runs as root: there, initdb and pg_ctl run as the
``postgres`` user the Debian package creates, in a directory that user owns. Authentication
mirrors DB-01: the superuser ``postgres`` over TCP without a password (trust, tests only),
every other role with scram-sha-256.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.tools import require_tool

SUPERUSER = "postgres"


def postgres_bindir() -> Path:
    """The server binaries: ``PG_BINDIR``, else the newest Debian install, else PATH."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                       key=lambda p: int(p.parent.parent.name))
    if installed:
        return installed[-1].parent
    return Path(require_tool("initdb", "postgresql")).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """``start()``/``stop()`` a private cluster; ``env`` points libpq tools at it."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        if not (self.bindir / "initdb").exists():
            require_tool("initdb", "postgresql")  # skips locally, fails in CI
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.root / "data"
        if self.as_postgres:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)
            self.root.chmod(0o700)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, cwd=self.root)

    @property
    def env(self) -> dict[str, str]:
        """libpq settings for the superuser, plus the server binaries first on PATH."""
        return {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(self.port),
                "PGUSER": SUPERUSER, "PGDATABASE": "postgres",
                "PATH": f"{self.bindir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def start(self) -> "PostgresServer":
        self._run("initdb", "--pgdata", str(self.data), "--username", SUPERUSER,
                  "--auth-local", "trust", "--auth-host", "scram-sha-256",
                  "--encoding", "UTF8", "--locale", "C")
        hba = self.data / "pg_hba.conf"
        rules = hba.read_text()
        hba.write_text("host all postgres 127.0.0.1/32 trust\n" + rules)
        self._run("pg_ctl", "--pgdata", str(self.data), "--wait", "--log",
                  str(self.root / "server.log"), "--options",
                  f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                  f"-c unix_socket_directories={self.root}", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "--pgdata", str(self.data), "--mode", "fast", "--wait", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; the unaligned, tuples-only output."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", database, "-c", sql],
            env=self.env, check=True, capture_output=True, text=True)
        return result.stdout.strip()

    def create_database(self, name: str, owner: str | None = None) -> None:
        owner_clause = f' OWNER "{owner}"' if owner else ""
        self.psql(f'CREATE DATABASE "{name}"{owner_clause}')

    def create_role(self, name: str, password: str) -> None:
        self.psql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole test session."""
    if os.geteuid() == 0:
        require_tool("runuser")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
