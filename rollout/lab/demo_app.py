"""A tiny app that says which image it runs: the stand-in for the app container in the lab.

Standard library only, run by path or as ``python -m rollout.lab.demo_app``::

    GET /        -> 200 {"version": IMAGE, "host": NAME}
    POST /echo   -> 200 {"version": IMAGE, "host": NAME, "length": N, "sha256": HEX-OF-BODY}
    GET /health  -> 200, or 500 for an image the lab treats as broken (tag contains
                    "unhealthy", or --unhealthy)

An image whose tag contains "crash" exits during start-up. SIGTERM stops it as ``docker stop``
stops a well-behaved container: no new connections, in-flight requests finish, idle
keep-alive connections are closed, then exit (or give up after --grace seconds).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, *, image: str, name: str, healthy: bool) -> None:
        super().__init__(address, handler)
        self.image, self.name, self.healthy = image, name, healthy
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.connections: dict[socket.socket, bool] = {}  # socket -> busy

    def set_busy(self, sock: socket.socket, busy: bool) -> None:
        with self.lock:
            if sock in self.connections:
                self.connections[sock] = busy

    def close_idle(self) -> int:
        """Close idle keep-alive connections; return how many connections remain."""
        with self.lock:
            for sock, busy in list(self.connections.items()):
                if not busy:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            return len(self.connections)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DemoServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections[self.connection] = False

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.lock:
                self.server.connections.pop(self.connection, None)

    def parse_request(self) -> bool:
        # The request line has arrived: from here until the response is sent, the
        # connection is busy and a graceful stop must wait for it.
        self.server.set_busy(self.connection, True)
        return super().parse_request()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.server.set_busy(self.connection, False)
            if self.server.stopping.is_set():
                self.close_connection = True

    def _reply(self, status: int, payload: dict) -> None:
        body = (json.dumps(payload) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.server.stopping.is_set():
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            if self.server.healthy:
                self._reply(200, {"status": "ok", "version": self.server.image})
            else:
                self._reply(500, {"status": "broken", "version": self.server.image})
            return
        self._reply(200, {"version": self.server.image, "host": self.server.name})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._reply(200, {"version": self.server.image, "host": self.server.name,
                          "length": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    def log_message(self, format: str, *args) -> None:
        pass


def watch_parent(pid: int) -> None:
    """Exit when the lab that started us is gone, so a crashed test run leaks no server."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--image", required=True)
    parser.add_argument("--name", default=socket.gethostname())
    parser.add_argument("--startup-seconds", type=float, default=0.0,
                        help="time to get ready before listening, like a container starting")
    parser.add_argument("--unhealthy", action="store_true", help="answer /health with 500")
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--watch-pid", type=int, default=0)
    args = parser.parse_args(argv)

    if args.watch_pid:
        threading.Thread(target=watch_parent, args=(args.watch_pid,), daemon=True).start()
    tag = args.image.rsplit(":", 1)[-1] if ":" in args.image else ""
    time.sleep(args.startup_seconds)
    if "crash" in tag:
        print(f"demo-app: {args.image} crashed during start-up", file=sys.stderr)
        return 3
    healthy = not (args.unhealthy or "unhealthy" in tag)
    server = DemoServer((args.bind, args.port), Handler, image=args.image, name=args.name,
                        healthy=healthy)

    def stop(signum, frame) -> None:
        server.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"demo-app: {args.image} listening on {args.bind}:{args.port}", file=sys.stderr,
          flush=True)
    server.serve_forever(poll_interval=0.05)
    server.socket.close()
    deadline = time.monotonic() + args.grace
    while server.close_idle() and time.monotonic() < deadline:
        time.sleep(0.02)
    print("demo-app: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
