#!/usr/bin/env python3
"""Health agent of an app host: what LB-01's Caddy probes instead of the app itself.

Runs as a systemd service on every APP host (standard library only, Ubuntu's python3).

GET /health (Caddy's active health check, port 5001 by default):
    503 while the drain switch file exists (``/run/app/drain``), so Caddy stops sending the
    host new requests without any change to its configuration; otherwise the app's own health
    (``http://127.0.0.1:5000/health``): 200 -> 200; any other status, no answer, or an answer
    slower than ``--app-timeout`` -> 503.

GET /agent (read by the rolling update, never by Caddy):
    one JSON object telling what the load balancer has been told recently::

        {"drained": true, "probe": {"answer": 503, "streak": 3, "age": 0.4}, "probes": 812,
         "probers": {"10.0.1.10": {"answer": 503, "streak": 2, "age": 0.4}}}

    ``answer``: the status given to the latest /health request, ``streak``: how many in a
    row got it, ``age``: seconds since; ``probers``: the same per source address (one per
    load balancer). A streak of 503 reaching Caddy's ``fails`` after the switch was set means
    that Caddy took the host out; of 200 reaching ``passes``, put it back. Only the load
    balancers reach port 5001 (SG-APP): every /health request is an LB probe.

Keep ``--app-timeout`` below Caddy's health check timeout so that Caddy always gets an answer.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HEALTHY, UNHEALTHY = 200, 503
APP_BODY_LIMIT = 64 * 1024
# A replaced load balancer leaves a stale entry: the oldest goes first.
MAX_PROBERS = 16


class ProbeLog:
    """The answers given to the load balancers' probes, shared by the request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answer: int | None = None
        self.streak = 0
        self.total = 0
        self.at: float | None = None
        self.reason = ""
        # source address -> [answer, streak, monotonic time of the latest]
        self.probers: dict[str, list] = {}

    def record(self, answer: int, reason: str, source: str = "") -> bool:
        """Remember one answer; return True when it differs from the previous one."""
        with self._lock:
            changed = answer != self.answer or (answer != HEALTHY and reason != self.reason)
            self.streak = self.streak + 1 if answer == self.answer else 1
            self.answer, self.reason = answer, reason
            self.total += 1
            self.at = time.monotonic()
            mine = self.probers.pop(source, None)
            streak = mine[1] + 1 if mine and mine[0] == answer else 1
            self.probers[source] = [answer, streak, self.at]
            while len(self.probers) > MAX_PROBERS:
                del self.probers[next(iter(self.probers))]
            return changed

    def snapshot(self) -> dict:
        with self._lock:
            now = time.monotonic()
            age = None if self.at is None else round(now - self.at, 3)
            return {"probe": {"answer": self.answer, "streak": self.streak, "age": age},
                    "probes": self.total,
                    "probers": {source: {"answer": answer, "streak": streak,
                                         "age": round(now - at, 3)}
                                for source, (answer, streak, at) in self.probers.items()}}


class AppHealth:
    """Asks the app for its own health, bounded in time, without proxies or redirects."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--app-health-url must be an http:// URL, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout

    def check(self) -> tuple[bool, str]:
        deadline = time.monotonic() + self.timeout
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            response = conn.getresponse()
            response.read(APP_BODY_LIMIT)
            if time.monotonic() > deadline:
                return False, f"app answered after more than {self.timeout:g}s"
            if response.status != 200:
                return False, f"app health answered {response.status}"
            return True, "app healthy"
        except (OSError, http.client.HTTPException) as exc:
            return False, f"app health unreachable: {exc.__class__.__name__}: {exc}"
        finally:
            conn.close()


class Agent:
    """Decides the answer to a probe: the drain switch first, then the app's own health."""

    def __init__(self, drain_file: str, app: AppHealth) -> None:
        self.drain_file = drain_file
        self.app = app
        self.probes = ProbeLog()

    def drained(self) -> bool:
        return os.path.exists(self.drain_file)

    def answer_probe(self, source: str = "") -> tuple[int, str]:
        if self.drained():
            answer, reason = UNHEALTHY, f"draining ({self.drain_file} exists)"
        else:
            healthy, reason = self.app.check()
            answer = HEALTHY if healthy else UNHEALTHY
        if self.probes.record(answer, reason, source):
            log(f"answering {answer} to the load balancer: {reason}")
        return answer, reason

    def view(self) -> dict:
        return {"drained": self.drained(), **self.probes.snapshot()}


def make_handler(agent: Agent, health_path: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "health-agent"
        # Idle keep-alive connections from Caddy must not pin threads for ever.
        timeout = 60

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            self._serve(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(head=True)

        def _serve(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == health_path:
                status, reason = agent.answer_probe(self.client_address[0])
                body = (json.dumps({"status": status, "reason": reason}) + "\n").encode()
            elif path == "/agent":
                status, body = 200, (json.dumps(agent.view()) + "\n").encode()
            else:
                status, body = 404, b'{"error": "not found"}\n'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            # One line per probe would flood the journal; state changes are logged instead.
            pass

    return Handler


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


def log(message: str) -> None:
    print(f"health-agent: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Answer the load balancer's health probes for this app host.")
    parser.add_argument("--listen", default="0.0.0.0",
                        help="address to listen on (default: all, SG-APP admits LB-01 only)")
    parser.add_argument("--port", type=int, default=5001, help="port (default: 5001)")
    parser.add_argument("--drain-file", default="/run/app/drain",
                        help="while this file exists, answer 503 (default: /run/app/drain)")
    parser.add_argument("--app-health-url", default="http://127.0.0.1:5000/health",
                        help="the app's own health endpoint")
    parser.add_argument("--app-timeout", type=float, default=0.8,
                        help="seconds the app may take to answer; keep it below Caddy's "
                             "health check timeout (default: 0.8)")
    parser.add_argument("--health-path", default="/health",
                        help="path Caddy probes (default: /health)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1..65535, got {args.port}")
    if args.app_timeout <= 0:
        parser.error("--app-timeout must be a positive number of seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        app = AppHealth(args.app_health_url, args.app_timeout)
    except ValueError as exc:
        print(f"health-agent: error: {exc}", file=sys.stderr)
        return 2
    agent = Agent(args.drain_file, app)
    try:
        server = AgentServer((args.listen, args.port), make_handler(agent, args.health_path))
    except OSError as exc:
        print(f"health-agent: error: cannot listen on {args.listen}:{args.port}: {exc}",
              file=sys.stderr)
        return 1

    def stop(signum, frame) -> None:
        # shutdown() blocks until serve_forever returns, so it cannot run in this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening on {args.listen}:{args.port}, drain switch {args.drain_file}, "
        f"app health {args.app_health_url}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
