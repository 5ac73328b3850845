"""The reference app as a real process, against the session's real PostgreSQL server."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.provisioning.postgres_server import free_port, postgres_server  # noqa: F401

APP_DIR = Path(__file__).resolve().parents[2] / "app"


def require_psycopg():
    """The app's driver: skipped on a laptop without it, a failure in CI."""
    try:
        import psycopg
    except ImportError:
        message = "psycopg is not installed (pip install -r app/requirements.txt)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return psycopg


class RunningApp:
    """One ``python app/server.py`` process and a way to talk to it."""

    def __init__(self, env: dict[str, str]):
        self.port = int(env["PORT"])
        self.process = subprocess.Popen([sys.executable, str(APP_DIR / "server.py")], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)

    def wait_until_listening(self, timeout: float = 15) -> "RunningApp":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the app exited: {self.process.stderr.read()}")
            try:
                self.request("GET", "/")
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the app did not start listening")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(self, method: str, path: str, body=None, headers=None):
        """(status, headers, JSON body) of one request on a new connection."""
        connection = self.connection()
        try:
            payload = json.dumps(body) if isinstance(body, (dict, list)) else body
            connection.request(method, path, body=payload, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), json.loads(response.read())
        finally:
            connection.close()

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return self.process.returncode, out


@pytest.fixture(scope="session")
def app_database(postgres_server):  # noqa: F811 (the fixture imported above)
    """A database and a password-authenticated owner, as db-setup makes them on DB-01."""
    require_psycopg()
    suffix = uuid.uuid4().hex[:8]
    user, database, password = f"app_{suffix}", f"app_{suffix}", f"pw-{uuid.uuid4().hex}"
    postgres_server.create_role(user, password)
    postgres_server.create_database(database, owner=user)
    return {"DB_HOST": "127.0.0.1", "DB_PORT": str(postgres_server.port), "DB_NAME": database,
            "DB_USER": user, "DB_PASSWORD": password}


@pytest.fixture
def app_env(app_database) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return {**keep, **app_database, "PORT": str(free_port()), "LISTEN": "127.0.0.1",
            "APP_VERSION": "1.4.2", "DB_SSLMODE": "disable", "DB_POOL_SIZE": "4"}


@pytest.fixture
def start_app(app_env):
    """``start_app(**overrides)``: a running app; every one is stopped after the test."""
    started: list[RunningApp] = []

    def start(**overrides) -> RunningApp:
        env = {**app_env, "PORT": str(free_port()), **overrides}
        app = RunningApp(env)
        started.append(app)
        return app.wait_until_listening()

    yield start
    for app in started:
        app.stop()


@pytest.fixture
def app(start_app) -> RunningApp:
    return start_app()
