"""In-memory app hosts, load balancer, lock and clock for the engine's unit tests.

The fake hosts follow ``rollout.contract`` (status JSON, drain/undrain, ``app-deploy IMAGE``
restoring the old image on failure) and the fake LB derives each host's health-agent view
from the host's state, as Caddy's probes would. Every command is recorded, and the LB checks
on each drain that at least one host is still serving.
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rollout import contract
from rollout.caddy_admin import LoadBalancerError, UpstreamPool
from rollout.contract import Probe, ProbeView
from rollout.engine import RolloutOptions, RollingUpdate
from rollout.hosts import HostUnreachable
from rollout.locking import LockError
from rollout.model import AppHost, CommandResult
from rollout.report import StepLog

OLD, NEW = "registry.example/app:1.0", "registry.example/app:2.0"


@dataclass
class FakeHost:
    name: str
    upstream: str
    image: str | None = OLD
    previous: str | None = None
    drained: bool = False
    healthy: bool = True
    # images whose container never becomes healthy on this host
    bad_images: set = field(default_factory=set)
    # the LB's probes keep getting this answer whatever the state (e.g. a Caddy that probes
    # the wrong port); None = derived from the state
    forced_answer: int | None = None
    status_fails: bool = False
    # healthy answers given by a new container before it starts failing (a flapping image)
    flapping: dict = field(default_factory=dict)
    # probe source -> the answer that load balancer keeps getting whatever the state
    source_answers: dict = field(default_factory=dict)

    def answer(self) -> int:
        if self.forced_answer is not None:
            return self.forced_answer
        return 503 if self.drained or not self.healthy else 200


class FakeFleet:
    """The hosts, the adapter over them and a record of every command."""

    def __init__(self, hosts: list[FakeHost], drain_together: int = 0) -> None:
        self.hosts = {h.name: h for h in hosts}
        # Drains wait for each other in groups of this size: a batch that is not drained
        # at the same time breaks the barrier (and the test).
        self.barrier = threading.Barrier(drain_together, timeout=5) if drain_together else None
        self.commands: list[tuple[str, tuple[str, ...]]] = []
        self.lock = threading.Lock()
        self.max_drained = 0
        self.serving_when_drained: list[int] = []
        self.envs: list[dict] = []
        # The load balancers' probe addresses: each gets its own entry in the agent's view.
        self.sources: tuple[str, ...] = ()

    def app_hosts(self) -> list[AppHost]:
        return [AppHost(name=h.name, upstream=h.upstream,
                        health_url=f"http://{h.upstream.split(':')[0]}:5001/health")
                for h in self.hosts.values()]

    def mutating(self, name: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
        return [(n, a) for n, a in self.commands
                if a[0] != contract.STATUS and (name is None or n == name)]

    # ---------------------------------------------------------------- HostAdapter

    def run(self, host: AppHost, args, *, env, timeout) -> CommandResult:
        result = self._run(host, args, env)
        if args[0] == contract.DRAIN and self.barrier:
            self.barrier.wait()
        return result

    def _run(self, host: AppHost, args, env) -> CommandResult:
        h = self.hosts[host.name]
        with self.lock:
            self.commands.append((host.name, tuple(args)))
            self.envs.append(dict(env))
            command = args[0]
            if command == contract.STATUS:
                if h.status_fails:
                    return CommandResult(None, error="SSM command timed out")
                healthy = h.healthy
                if h.flapping.get(h.image) is not None:
                    left = h.flapping[h.image]
                    healthy = left > 0
                    h.flapping[h.image] = left - 1
                status = contract.HostStatus(h.image, h.previous, h.drained, healthy)
                return CommandResult(0, status.to_json() + "\n")
            if command == contract.DRAIN:
                h.drained = True
                drained = sum(x.drained for x in self.hosts.values())
                self.max_drained = max(self.max_drained, drained)
                self.serving_when_drained.append(sum(
                    not x.drained and x.healthy for x in self.hosts.values()))
                return CommandResult(0)
            if command == contract.UNDRAIN:
                h.drained = False
                return CommandResult(0)
            image = h.previous if command == contract.ROLLBACK else command
            if image == h.image and h.healthy:
                return CommandResult(0)
            if image in h.bad_images:
                # app-deploy restores what ran before and says why on one line.
                return CommandResult(1, "", f"app-deploy: {image} failed its health check "
                                            f"within 60s; restored {h.image}\n")
            if image != h.image:
                h.previous, h.image = h.image, image
            h.healthy = True
            return CommandResult(0)

    def run_on_all(self, hosts, args, *, env, timeout):
        return {h.name: self.run(h, args, env=env, timeout=timeout) for h in hosts}

    def probe_views(self, hosts):
        views = {}
        for host in hosts:
            try:
                views[host.name] = self.probe_view(host)
            except HostUnreachable as exc:
                views[host.name] = exc
        return views

    def probe_view(self, host: AppHost) -> ProbeView:
        h = self.hosts[host.name]
        if h.status_fails:
            raise HostUnreachable(f"{host.name} unreachable")
        probers = tuple((source, Probe(h.source_answers.get(source, h.answer()), 5, 0.1))
                        for source in self.sources)
        return ProbeView(drained=h.drained, answer=h.answer(), streak=5, age=0.1,
                         probers=probers)


class FakeLB:
    """Caddy's admin API as the engine sees it."""

    def __init__(self, dials: list[str], *, reachable: bool = True, passes: int = 1,
                 fails: int = 1, name: str = "LB-01", probe_source: str | None = None) -> None:
        self.name, self.probe_source = name, probe_source
        self.upstreams = [{"dial": d} for d in dials]
        self.reachable = reachable
        self.passes, self.fails = passes, fails
        self.set_calls: list[list[dict]] = []
        self.in_flight_script: list[dict] = []
        self.in_flight_calls = 0

    def describe(self) -> str:
        return "fake caddy"

    def pool(self) -> UpstreamPool:
        if not self.reachable:
            raise LoadBalancerError("Caddy admin API at fake is unreachable: refused")
        return UpstreamPool(tuple(self.upstreams), interval=1.0, timeout=0.5,
                            passes=self.passes, fails=self.fails, health_port=5001)

    def in_flight(self) -> dict[str, int]:
        self.in_flight_calls += 1
        if self.in_flight_script:
            return self.in_flight_script.pop(0)
        return {}

    def set_upstreams(self, upstreams: list[dict]) -> None:
        self.set_calls.append(list(upstreams))
        self.upstreams = list(upstreams)


class FakeLock:
    def __init__(self, held_by_other: bool = False) -> None:
        self.held_by_other = held_by_other
        self.events: list[str] = []

    def acquire(self) -> None:
        if self.held_by_other:
            raise LockError("another rollout holds /tmp/x.lock: someone since 10:00")
        self.events.append("acquire")

    def refresh(self) -> None:
        self.events.append("refresh")

    def release(self) -> None:
        self.events.append("release")


class FakeClock:
    """Time that passes only when the engine sleeps (thread-safe)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now += 0.001
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def make_hosts(count: int, **overrides) -> list[FakeHost]:
    return [FakeHost(f"APP-{n}", f"10.0.2.{10 + n}:5000", **overrides)
            for n in range(1, count + 1)]


def engine(fleet: FakeFleet, lb: FakeLB | None = None, lock: FakeLock | None = None,
           **options) -> tuple[RollingUpdate, io.StringIO]:
    lb = lb or FakeLB([h.upstream for h in fleet.hosts.values()])
    settings = dict(image=NEW, health_timeout=30, drain_seconds=2, healthy_checks=3,
                    check_interval=1)
    settings.update(options)
    out = io.StringIO()
    clock = FakeClock()
    update = RollingUpdate(environment="production", hosts=fleet.app_hosts(),
                           host_adapter=fleet, lb=lb, lock=lock or FakeLock(),
                           options=RolloutOptions(**settings), log=StepLog(out),
                           clock=clock, sleep=clock.sleep)
    return update, out


class fake_http_server:
    """A local HTTP server answering from a table, recording requests (method, path, body)."""

    def __init__(self, routes):
        self.routes = routes
        self.requests = []

    def __enter__(self):
        routes, requests = self.routes, self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                requests.append((self.command, self.path, body, self.headers.get("Host")))
                status, payload = routes.get(f"{self.command} {self.path}", (404, b"{}"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PATCH = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1], requests

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
