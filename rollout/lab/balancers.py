"""Two load balancers behind a TCP balancer, on loopback: the lab of the failover tests.

LB-01 and LB-02 are real Caddy processes running the production configuration rendered by
``provisioning.user_data.load_balancer_config`` (only the addresses are moved onto loopback),
in front of the app hosts of a :class:`~rollout.lab.fleet.LocalFleet`. HAProxy stands in for
the AWS Network Load Balancer: TCP mode, the NLB's health check (HTTP on each Caddy's health
port, the same interval and thresholds), no retry of a failed connection on another server
(the NLB has none), and its runtime API, on a stats socket, to drain a server as a
deregistration does.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from core.settings import (LB_HEALTH_INTERVAL_SECONDS, LB_HEALTH_PATH, LB_HEALTH_THRESHOLD,
                           LB_HEALTH_TIMEOUT_SECONDS, load_environment)
from provisioning.caddy import HEALTH_SERVER_NAME, SERVER_NAME, UPSTREAMS_ID
from provisioning.user_data import load_balancer_config
from rollout.lab.fleet import LabError, LocalFleet, free_loopback_addresses, free_port, http_get
from rollout.lab.load import LoadGenerator

BACKEND = "lbs"


def haproxy_config(servers: dict[str, str], *, listen: str, health_port: int, socket_path: str,
                   interval: float = LB_HEALTH_INTERVAL_SECONDS,
                   timeout: float = LB_HEALTH_TIMEOUT_SECONDS,
                   threshold: int = LB_HEALTH_THRESHOLD) -> str:
    """HAProxy as the NLB: ``servers`` maps LB names to ``ADDRESS:PORT``."""
    lines = [
        "global",
        f"    stats socket {socket_path} mode 600 level admin",
        "    maxconn 2000",
        "defaults",
        "    mode tcp",
        f"    timeout connect {timeout}s",
        "    timeout client 350s",  # the NLB's TCP idle timeout
        "    timeout server 350s",
        f"    timeout check {timeout}s",
        # A connection to a dead LB fails, as through the NLB: no retry, no redispatch.
        "    retries 0",
        "frontend web",
        f"    bind {listen}",
        f"    default_backend {BACKEND}",
        f"backend {BACKEND}",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri {LB_HEALTH_PATH}",
        "    http-check expect status 200",
    ]
    lines += [f"    server {name} {address} check port {health_port} inter {interval}s "
              f"fall {threshold} rise {threshold}"
              for name, address in sorted(servers.items())]
    return "\n".join(lines) + "\n"


class BalancedPair:
    """LB-01 and LB-02 (Caddy) behind HAProxy, in front of ``fleet``; a context manager."""

    def __init__(self, workdir: Path, fleet: LocalFleet, *, caddy: str, haproxy: str,
                 health_interval: float = LB_HEALTH_INTERVAL_SECONDS) -> None:
        self.workdir = Path(workdir)
        self.fleet = fleet
        self.caddy_bin, self.haproxy_bin = caddy, haproxy
        self.health_interval = health_interval
        self.names = load_environment("production").host_names("lb")
        self.port = free_port()
        self.health_port = free_port()
        self.frontend_port = free_port()
        self.addresses: dict[str, str] = {}
        self.caddies: dict[str, subprocess.Popen] = {}
        self.haproxy: subprocess.Popen | None = None
        self.socket_path = str(self.workdir / "haproxy.sock")

    def __enter__(self) -> "BalancedPair":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        found = free_loopback_addresses(len(self.names), ports=(self.port, self.health_port))
        self.addresses = dict(zip(self.names, found))
        for name in self.names:
            self.start_caddy(name)
        config = self.workdir / "haproxy.cfg"
        config.write_text(haproxy_config(
            {name: f"{address}:{self.port}" for name, address in self.addresses.items()},
            listen=f"127.0.0.1:{self.frontend_port}", health_port=self.health_port,
            socket_path=self.socket_path, interval=self.health_interval))
        check = subprocess.run([self.haproxy_bin, "-c", "-f", str(config)],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise LabError(f"haproxy refused its config: {check.stdout}{check.stderr}")
        log = open(self.workdir / "haproxy.log", "ab")
        self.haproxy = subprocess.Popen([self.haproxy_bin, "-db", "-f", str(config)],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self.wait_for_state(self.names, "UP", timeout=30)

    def stop(self) -> None:
        for process in [self.haproxy, *self.caddies.values()]:
            if process and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.haproxy = None
        self.caddies.clear()

    # --------------------------------------------------------------------------- Caddy

    def caddy_config(self, name: str) -> dict:
        """The production configuration of ``name``, its addresses moved onto loopback."""
        config = load_balancer_config(load_environment("production"), name)
        address = self.addresses[name]
        servers = config["apps"]["http"]["servers"]
        servers[SERVER_NAME]["listen"] = [f"{address}:{self.port}"]
        servers[HEALTH_SERVER_NAME]["listen"] = [f"{address}:{self.health_port}"]
        config["admin"]["listen"] = f"127.0.0.1:{free_port()}"
        (proxy,) = [h for route in servers[SERVER_NAME]["routes"] for h in route["handle"]
                    if h.get("@id") == UPSTREAMS_ID]
        proxy["upstreams"] = [{"dial": host.upstream} for host in self.fleet.hosts]
        return config

    def start_caddy(self, name: str) -> None:
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps(self.caddy_config(name), indent=2))
        home = self.workdir / f"{name}-home"
        env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
               "XDG_CONFIG_HOME": str(home / "config")}
        log = open(self.workdir / f"{name}.log", "ab")
        self.caddies[name] = subprocess.Popen(
            [self.caddy_bin, "run", "--config", str(path)], stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + 20
        while True:
            if self.caddies[name].poll() is not None:
                raise LabError(f"{name}: caddy exited: "
                               f"{(self.workdir / f'{name}.log').read_text()[-800:]}")
            try:
                status, _ = http_get(self.addresses[name], self.port, "/", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LabError(f"{name}: caddy did not serve the app within 20s")
            time.sleep(0.1)

    def kill_caddy(self, name: str) -> None:
        """A crash: SIGKILL, no goodbye to any connection."""
        self.caddies[name].send_signal(signal.SIGKILL)
        self.caddies[name].wait()

    # ---------------------------------------------------------------- HAProxy runtime API

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(self.socket_path)
            connection.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def drain(self, name: str) -> None:
        """What deregistration does: no new connection to ``name``, open ones go on."""
        self.command(f"set server {BACKEND}/{name} state drain")

    def restore(self, name: str) -> None:
        self.command(f"set server {BACKEND}/{name} state ready")

    def states(self) -> dict[str, str]:
        """Each LB's status as HAProxy sees it: UP, DOWN, DRAIN, ``UP 1/2``..."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        found = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == BACKEND and row.get("svname") in self.names:
                found[row["svname"]] = row["status"]
        return found

    def wait_for_state(self, names, wanted: str, timeout: float) -> float:
        """Seconds until every LB of ``names`` has status ``wanted``."""
        start = time.monotonic()
        while True:
            try:
                current = self.states()
            except OSError:  # HAProxy still starting: no socket yet
                if self.haproxy and self.haproxy.poll() is not None:
                    raise LabError("haproxy exited: "
                                   f"{(self.workdir / 'haproxy.log').read_text()[-800:]}")
                current = {}
            if all(current.get(name) == wanted for name in names):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise LabError(f"HAProxy did not see {', '.join(names)} {wanted} within "
                               f"{timeout}s: {current}")
            time.sleep(0.1)


class TimedLoad(LoadGenerator):
    """The lab's load generator, remembering when each failed request failed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failure_times: list[float] = []

    def _count(self, problem, data, post, sent_at) -> None:
        if problem:
            with self._lock:
                self.failure_times.append(time.monotonic())
        super()._count(problem, data, post, sent_at)


class NewConnectionProbe:
    """A fresh connection every ``period`` seconds, one GET each: when do new ones fail?"""

    def __init__(self, host: str, port: int, *, period: float = 0.1, timeout: float = 5.0):
        self.host, self.port, self.period, self.timeout = host, port, period, timeout
        self.results: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="probe")

    def __enter__(self) -> "NewConnectionProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            at = time.monotonic()
            try:
                status, _ = http_get(self.host, self.port, "/", timeout=self.timeout)
                ok = status == 200
            except OSError:
                ok = False
            self.results.append((at, ok))


def failover(pair: BalancedPair, load: TimedLoad, probe: NewConnectionProbe, *,
             settle: float = 3.0, drain_hold: float = 5.0) -> dict:
    """Kill LB-02 under load, bring it back, then drain LB-01 and restore it.

    Returns the figures of each phase: requests of the keep-alive clients sent and failed,
    new connections (``probe``) opened and failed, how long HAProxy took to see the change,
    and the seconds from the event to the last failed new connection: after it, every new
    connection succeeded.
    """
    time.sleep(settle)
    figures: dict = {}

    def phase(name: str, action) -> None:
        sent, failed, start = load.stats.sent, load.stats.failed, time.monotonic()
        extra = action() or {}
        time.sleep(settle)
        probes = [(t - start, ok) for t, ok in list(probe.results) if t >= start]
        late = [t for t, ok in probes if not ok]
        figures[name] = {"sent": load.stats.sent - sent, "failed": load.stats.failed - failed,
                         "new_connections": len(probes), "new_failed": len(late),
                         "last_new_failure_after": round(max(late), 2) if late else 0.0,
                         **extra}

    def kill() -> dict:
        pair.kill_caddy("LB-02")
        return {"marked_down_after": round(pair.wait_for_state(["LB-02"], "DOWN", 60), 2)}

    def restart() -> dict:
        pair.start_caddy("LB-02")
        return {"marked_up_after": round(pair.wait_for_state(["LB-02"], "UP", 60), 2)}

    def drain_and_restore() -> None:
        pair.drain("LB-01")
        pair.wait_for_state(["LB-01"], "DRAIN", 10)
        time.sleep(drain_hold)
        pair.restore("LB-01")
        pair.wait_for_state(["LB-01"], "UP", 10)

    phase("kill LB-02", kill)
    phase("restart LB-02", restart)
    phase("drain and restore LB-01", drain_and_restore)
    return figures
