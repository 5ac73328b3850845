"""The local ``app-deploy``: the host command contract with a process instead of a container.

Follows ``rollout.contract`` to the letter (subcommands, exit codes, the one-line status JSON,
DRAIN_SECONDS and HEALTH_TIMEOUT, the host-wide lock), so that the engine, the tests and the
benchmark exercise exactly what runs on an APP host. Each "host" is a state directory::

    DIR/state.json     {"image": ..., "previous": ..., "pid": ...}
    DIR/drain          the drain switch (the health agent watches it)
    DIR/deploy.lock    the host-wide lock
    DIR/app.log        the app's output
    DIR/commands.log   one line per invocation (the tests check which commands ran)
    DIR/startup.log    seconds each app start took to answer healthy (the benchmark reads it)

"Pulling" an image fails when its tag contains "missing" (or it is given with
--missing-image); the app itself fails its health for tags containing "unhealthy" (or images
given with --unhealthy-image) and exits at start-up for tags containing "crash".

Usage::

    python -m rollout.lab.app_deploy --state-dir DIR --bind 127.0.0.2 [options] SUBCOMMAND
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEMO_APP = Path(__file__).with_name("demo_app.py")


class DeployError(RuntimeError):
    pass


class LocalHost:
    """One lab host: its state directory and the app process it runs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.dir / "state.json"
        self.drain_file = self.dir / "drain"
        self.drain_seconds = float(os.environ.get("DRAIN_SECONDS", "10"))
        self.health_timeout = float(os.environ.get("HEALTH_TIMEOUT", "60"))

    # ---------------------------------------------------------------------------- state

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {"image": None, "previous": None, "pid": None}

    def save(self, **changes) -> None:
        state = {**self.state(), **changes}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def locked(self):
        with open(self.dir / "deploy.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def record(self, command: str) -> None:
        with open(self.dir / "commands.log", "a") as log:
            log.write(f"{time.time():.3f} {command}\n")

    # ------------------------------------------------------------------------ the app

    def app_healthy(self, timeout: float = 1.0) -> bool:
        conn = http.client.HTTPConnection(self.args.bind, self.args.port, timeout=timeout)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def app_pid(self) -> int | None:
        pid = self.state().get("pid")
        if not pid:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        # Never signal a process that merely reuses the pid.
        if str(DEMO_APP).encode() in cmdline and self.args.bind.encode() in cmdline:
            return int(pid)
        return None

    def stop_app(self) -> None:
        pid = self.app_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.args.grace
        while self.app_pid() == pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.save(pid=None)

    def pull(self, image: str) -> None:
        if image in self.args.missing_image or "missing" in _tag(image):
            raise DeployError(f"pull {image}: manifest unknown")

    def start_app(self, image: str) -> None:
        argv = [sys.executable, str(DEMO_APP), "--bind", self.args.bind,
                "--port", str(self.args.port), "--image", image, "--name", self.args.name,
                "--startup-seconds", str(self.args.startup_seconds),
                "--grace", str(self.args.grace)]
        if image in self.args.unhealthy_image:
            argv.append("--unhealthy")
        if self.args.watch_pid:
            argv += ["--watch-pid", str(self.args.watch_pid)]
        with open(self.dir / "app.log", "a") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
        self.save(pid=process.pid)
        started = time.monotonic()
        deadline = started + self.health_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DeployError(f"{image} exited during start-up "
                                  f"(status {process.returncode})")
            if self.app_healthy(timeout=0.5):
                with open(self.dir / "startup.log", "a") as log:
                    log.write(f"{time.monotonic() - started:.3f}\n")
                return
            time.sleep(0.02)
        raise DeployError(f"{image} failed its health check within {self.health_timeout:g}s")

    # ------------------------------------------------------------------- subcommands

    def status(self) -> dict:
        state = self.state()
        return {"image": state.get("image"), "previous": state.get("previous"),
                "drained": self.drain_file.exists(), "healthy": self.app_healthy()}

    def drain(self) -> None:
        with contextlib.suppress(FileExistsError):
            self.drain_file.touch(exist_ok=False)
        ready_at = self.drain_file.stat().st_mtime + self.drain_seconds
        time.sleep(max(0.0, ready_at - time.time()))

    def undrain(self) -> None:
        self.drain_file.unlink(missing_ok=True)

    def deploy(self, image: str) -> None:
        state = self.state()
        old = state.get("image")
        if old == image and self.app_pid() and self.app_healthy():
            return
        drained_here = not self.drain_file.exists()
        if drained_here:
            self.drain()
        try:
            self.pull(image)
            self.stop_app()
            try:
                self.start_app(image)
            except DeployError as failure:
                self.stop_app()
                if not old or old == image:
                    raise DeployError(f"{failure}; nothing to restore") from None
                try:
                    self.start_app(old)
                except DeployError as again:
                    raise DeployError(f"{failure}; restoring {old} failed too: {again}"
                                      ) from None
                raise DeployError(f"{failure}; restored {old}") from None
            if old != image:
                self.save(image=image, previous=old)
            else:
                self.save(image=image)
        finally:
            if drained_here and self.app_healthy():
                self.undrain()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[-1] if ":" in last else ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Local app-deploy (see rollout.contract).")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--bind", required=True, help="the host's address, e.g. 127.0.0.2")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--name", default="app")
    parser.add_argument("--startup-seconds", type=float, default=0.2)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--unhealthy-image", action="append", default=[])
    parser.add_argument("--missing-image", action="append", default=[])
    parser.add_argument("--watch-pid", type=int, default=0)
    parser.add_argument("--rollback", action="store_true")
    parser.add_argument("command", nargs="?",
                        help="status | drain | undrain | IMAGE (or --rollback)")
    args = parser.parse_args(argv)
    if bool(args.rollback) == bool(args.command):
        parser.error("give exactly one of: status, drain, undrain, IMAGE, --rollback")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host = LocalHost(args)
    command = "--rollback" if args.rollback else args.command
    host.record(command)
    if command == "status":
        print(json.dumps(host.status()))
        return 0
    try:
        with host.locked():
            if command == "drain":
                host.drain()
            elif command == "undrain":
                host.undrain()
            elif command == "--rollback":
                previous = host.state().get("previous")
                if not previous:
                    raise DeployError("no previous image recorded")
                host.deploy(previous)
            else:
                host.deploy(command)
    except DeployError as exc:
        print(f"app-deploy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
