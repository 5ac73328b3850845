"""Reference application: a small HTTP service on port 5000 backed by PostgreSQL.

It stands in for "the supplied application" of the design so that the platform can be run and
tested end to end; a user swaps in their own app by replacing ``app/`` (the pipeline builds
``app/Dockerfile``) or by rolling out their own image. What the platform expects of any app
image is what this one does:

* listen on ``PORT`` (5000) and answer ``GET /health`` with 200 only when it can serve,
  here: when the database answers;
* read the database settings from ``DB_HOST``, ``DB_PORT``, ``DB_NAME``, ``DB_USER`` and
  ``DB_PASSWORD`` (``app-deploy`` sets them; the password comes from SSM Parameter Store);
* finish in-flight requests and exit on SIGTERM (``docker stop``).

Endpoints (every answer is JSON and carries the running version, from ``APP_VERSION``, in its
body and in the ``X-App-Version`` header)::

    GET  /            the service, its version and the host that answered
    GET  /health      200 when the database answers ``SELECT 1``, else 503
    POST /messages    {"text": "..."} -> 201 with the stored row
    GET  /messages    the latest messages, newest first

One log line of JSON per request on stdout, for Filebeat.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator, Mapping

import psycopg

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 1000
LATEST_MESSAGES = 20
# Any constant shared by every app host: the first one to start creates the table while the
# others wait on this lock instead of racing on CREATE TABLE.
SCHEMA_LOCK_ID = 5_000_001
SCHEMA = """
    CREATE TABLE IF NOT EXISTS messages (
        id          bigserial PRIMARY KEY,
        body        text        NOT NULL CHECK (length(body) BETWEEN 1 AND 1000),
        version     text        NOT NULL,
        host        text        NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    )
"""


class ConfigError(ValueError):
    """An environment variable is missing or malformed."""


@dataclass(frozen=True)
class Config:
    """What the app reads from its environment."""

    version: str
    port: int
    listen: str
    db_host: str
    db_port: int
    db_name: str
    db_user: str
    db_password: str
    db_sslmode: str
    pool_size: int

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> "Config":
        missing = [name for name in ("DB_HOST", "DB_NAME", "DB_USER") if not env.get(name)]
        if missing:
            raise ConfigError(f"missing environment variables: {', '.join(missing)}")
        try:
            port = int(env.get("PORT", "5000"))
            db_port = int(env.get("DB_PORT", "5432"))
            pool_size = int(env.get("DB_POOL_SIZE", "8"))
        except ValueError as error:
            raise ConfigError(f"PORT, DB_PORT and DB_POOL_SIZE must be integers: {error}")
        if not 0 < port < 65536 or not 0 < db_port < 65536 or pool_size < 1:
            raise ConfigError("PORT and DB_PORT must be 1..65535 and DB_POOL_SIZE >= 1")
        return cls(version=env.get("APP_VERSION") or "unknown", port=port,
                   listen=env.get("LISTEN", "0.0.0.0"), db_host=env["DB_HOST"],
                   db_port=db_port, db_name=env["DB_NAME"], db_user=env["DB_USER"],
                   db_password=env.get("DB_PASSWORD", ""),
                   # "prefer": TLS whenever the server offers it (DB-01 does).
                   db_sslmode=env.get("DB_SSLMODE", "prefer"), pool_size=pool_size)


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached or did not answer in time."""


class Database:
    """A bounded pool of autocommit connections; the schema is created on first use."""

    def __init__(self, config: Config, wait_seconds: float = 3.0):
        self._config = config
        self._wait_seconds = wait_seconds
        self._slots = threading.BoundedSemaphore(config.pool_size)
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._schema_ready = False

    def _connect(self) -> psycopg.Connection:
        c = self._config
        return psycopg.connect(
            host=c.db_host, port=c.db_port, dbname=c.db_name, user=c.db_user,
            password=c.db_password, sslmode=c.db_sslmode, connect_timeout=3,
            application_name="reference-app", autocommit=True,
            # A stuck query must not hold a request (and a pool slot) for ever.
            options="-c statement_timeout=5000")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if not self._slots.acquire(timeout=self._wait_seconds):
            raise DatabaseUnavailable("all database connections are busy")
        try:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None or connection.closed:
                connection = self._connect()
            try:
                yield connection
            except BaseException:
                connection.close()
                raise
            with self._lock:
                self._idle.append(connection)
        finally:
            self._slots.release()

    def run(self, work: Callable[[psycopg.Connection], object], *, retry: bool = False):
        """Run ``work(connection)``; a pooled connection the server dropped is retried once.

        Only idempotent work may set ``retry``: a write might have happened before the error.
        """
        for attempt in (1, 2):
            try:
                with self._connection() as connection:
                    self._ensure_schema(connection)
                    return work(connection)
            except psycopg.OperationalError as error:
                if not retry or attempt == 2:
                    raise DatabaseUnavailable(_first_line(error)) from error

    def _ensure_schema(self, connection: psycopg.Connection) -> None:
        if self._schema_ready:
            return
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
            connection.execute(SCHEMA)
        self._schema_ready = True

    def check(self) -> None:
        self.run(lambda c: c.execute("SELECT 1").fetchone(), retry=True)

    def add_message(self, text: str, version: str, host: str) -> dict:
        row = self.run(lambda c: c.execute(
            "INSERT INTO messages (body, version, host) VALUES (%s, %s, %s) "
            "RETURNING id, created_at", (text, version, host)).fetchone())
        return {"id": row[0], "text": text, "created_at": row[1].isoformat()}

    def latest_messages(self, limit: int = LATEST_MESSAGES) -> list[dict]:
        rows = self.run(lambda c: c.execute(
            "SELECT id, body, version, host, created_at FROM messages "
            "ORDER BY id DESC LIMIT %s", (limit,)).fetchall(), retry=True)
        return [{"id": r[0], "text": r[1], "version": r[2], "host": r[3],
                 "created_at": r[4].isoformat()} for r in rows]

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


class BadRequest(Exception):
    """The client sent something the endpoint cannot take; ``status`` says what."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class AppServer(ThreadingHTTPServer):
    """Threaded HTTP server that finishes in-flight requests when asked to stop.

    Request threads are joined on close (``daemon_threads = False``). Idle keep-alive
    connections are closed at once on stop; busy ones answer their request with
    ``Connection: close``.
    """

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, config: Config, database: Database):
        self.config = config
        self.database = database
        self.hostname = socket.gethostname()
        self.stopping = threading.Event()
        self._idle_connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((config.listen, config.port), RequestHandler)

    def mark_idle(self, connection: socket.socket, idle: bool) -> None:
        with self._connections_lock:
            if idle:
                self._idle_connections.add(connection)
            else:
                self._idle_connections.discard(connection)

    def stop(self) -> None:
        """Stop accepting, then close idle keep-alive connections. Thread-safe."""
        self.stopping.set()
        self.shutdown()
        with self._connections_lock:
            idle = list(self._idle_connections)
        for connection in idle:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "reference-app"
    # Longer than the load balancer keeps an idle upstream connection (Caddy: 2 min), so
    # that Caddy, not the app, closes idle connections: the other way round, a request sent
    # on a connection the app is closing would be lost.
    timeout = 300
    # Headers and body leave in two writes; without TCP_NODELAY each answer would wait for
    # the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True
    server: AppServer

    def handle_one_request(self) -> None:
        self.server.mark_idle(self.connection, True)
        try:
            super().handle_one_request()
        finally:
            self.server.mark_idle(self.connection, False)

    def parse_request(self) -> bool:
        self.server.mark_idle(self.connection, False)
        self._started = time.monotonic()
        parsed = super().parse_request()
        if self.server.stopping.is_set():
            self.close_connection = True
        return parsed

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    _ROUTES = {"/": {"GET": "index"}, "/health": {"GET": "health"},
               "/messages": {"GET": "list_messages", "POST": "add_message"}}

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body()
            methods = self._ROUTES.get(path)
            if methods is None:
                raise BadRequest(404, "not found")
            if method not in methods:
                raise BadRequest(405, f"{method} is not allowed on {path}")
            status, document = getattr(self, methods[method])(body)
        except BadRequest as error:
            status, document = error.status, {"error": str(error)}
        except DatabaseUnavailable as error:
            status, document = 503, {"error": f"database unavailable: {error}"}
        except Exception as error:  # a bug: answer 500 and keep serving the other requests
            log("error", "unhandled error", error=f"{error.__class__.__name__}: {error}")
            self.close_connection = True
            status, document = 500, {"error": "internal error"}
        self._answer(status, document, allow=", ".join(methods) if status == 405 else None)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise BadRequest(411, "send the body with a Content-Length")
        if not length:
            return b""
        if not length.isdigit():
            self.close_connection = True
            raise BadRequest(400, "Content-Length must be a number")
        if int(length) > MAX_BODY_BYTES:
            # The body is not read: the connection cannot be reused.
            self.close_connection = True
            raise BadRequest(413, f"the body may not exceed {MAX_BODY_BYTES} bytes")
        return self.rfile.read(int(length))

    def index(self, body: bytes) -> tuple[int, dict]:
        return 200, {"service": "reference-app", "host": self.server.hostname}

    def health(self, body: bytes) -> tuple[int, dict]:
        try:
            self.server.database.check()
        except DatabaseUnavailable as error:
            return 503, {"status": "unavailable", "reason": f"database: {error}"}
        return 200, {"status": "ok"}

    def add_message(self, body: bytes) -> tuple[int, dict]:
        try:
            document = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "the body must be JSON such as {\"text\": \"hello\"}")
        text = document.get("text") if isinstance(document, dict) else None
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT_CHARS:
            raise BadRequest(422, f"\"text\" must be a string of 1 to {MAX_TEXT_CHARS} "
                                  "characters")
        row = self.server.database.add_message(text, self.server.config.version,
                                               self.server.hostname)
        return 201, {**row, "host": self.server.hostname}

    def list_messages(self, body: bytes) -> tuple[int, dict]:
        return 200, {"messages": self.server.database.latest_messages()}

    def _answer(self, status: int, document: dict, allow: str | None = None) -> None:
        version = self.server.config.version
        payload = (json.dumps({**document, "version": version}) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-App-Version", version)
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", allow)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self._log(status)

    def _log(self, status: int) -> None:
        log("info" if status < 500 else "error", "request", method=self.command,
            path=self.path.split("?", 1)[0], status=status,
            duration_ms=round((time.monotonic() - self._started) * 1000, 1),
            client=self.client_address[0])

    def log_request(self, code="-", size="-") -> None:
        pass  # _log writes one richer line per request

    def log_message(self, format: str, *args) -> None:
        # http.server's own lines (malformed requests) as JSON too.
        log("warning", format % args)


def log(level: str, message: str, **fields) -> None:
    """One JSON line on stdout: what Filebeat ships to Elasticsearch."""
    line = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "level": level, "message": message, **fields}
    print(json.dumps(line), flush=True)


def main() -> int:
    try:
        config = Config.from_environment()
    except ConfigError as error:
        print(f"reference-app: error: {error}", file=sys.stderr)
        return 2
    database = Database(config)
    server = AppServer(config, database)

    def on_signal(signum, frame) -> None:
        # shutdown() waits for serve_forever() to return: it cannot run in this thread.
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("info", "listening", address=f"{config.listen}:{config.port}", version=config.version)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()  # joins the request threads: in-flight requests finish
        database.close()
    log("info", "stopped", version=config.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
