"""LB-01's Caddy, through its admin API.

The rollout reads three things and writes one:

* ``GET /id/app-upstreams`` - the reverse_proxy handler: its upstream list and the active
  health check timing (interval, timeout, passes, fails) that drain and undrain depend on;
* ``GET /reverse_proxy/upstreams`` - requests in flight per upstream, to see a drained host
  finish its last requests;
* ``PATCH /id/app-upstreams/upstreams`` - only when the fleet's membership changed, because
  every config change closes idle keep-alive client connections.

The transport is either plain HTTP (local Caddy) or a command run on LB-01 over SSM that
curls ``localhost:2019`` (``rollout.aws.SsmAdminTransport``).
"""
from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

DEFAULT_UPSTREAMS_ID = "app-upstreams"

# Caddy's defaults when the config leaves them out.
CADDY_DEFAULT_INTERVAL = 30.0
CADDY_DEFAULT_TIMEOUT = 5.0

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


class LoadBalancerError(RuntimeError):
    """Caddy's admin API could not be reached or did not answer as expected."""


class AdminTransport(Protocol):
    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one admin request; raise LoadBalancerError when it cannot be delivered."""
        ...

    def describe(self) -> str: ...


def parse_duration(value: object, default: float) -> float:
    """Seconds in a Caddy duration: a Go duration string ("1m30s") or integer nanoseconds."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        return float(value) / 1e9
    text = str(value).strip()
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise LoadBalancerError(f"cannot read Caddy duration {value!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


@dataclass(frozen=True)
class UpstreamPool:
    """The reverse_proxy handler as configured now: who is in, and how fast health moves."""

    upstreams: tuple[dict, ...]
    interval: float
    timeout: float
    passes: int
    fails: int
    health_port: int | None

    @property
    def dials(self) -> list[str]:
        return [u.get("dial", "") for u in self.upstreams]

    @classmethod
    def from_handler(cls, handler: dict) -> "UpstreamPool":
        if handler.get("handler") != "reverse_proxy":
            raise LoadBalancerError("the object with the upstreams @id is not a reverse_proxy "
                                    "handler")
        active = (handler.get("health_checks") or {}).get("active")
        if not active:
            raise LoadBalancerError("the reverse_proxy handler has no active health checks: "
                                    "hosts could not be drained without a config change")
        upstreams = tuple(handler.get("upstreams") or ())
        if any(not isinstance(u, dict) or not u.get("dial") for u in upstreams):
            raise LoadBalancerError("every upstream needs a static 'dial' address")
        return cls(
            upstreams=upstreams,
            interval=parse_duration(active.get("interval"), CADDY_DEFAULT_INTERVAL),
            timeout=parse_duration(active.get("timeout"), CADDY_DEFAULT_TIMEOUT),
            passes=max(1, int(active.get("passes") or 1)),
            fails=max(1, int(active.get("fails") or 1)),
            health_port=active.get("port"),
        )

    def probe_window(self, probes: int) -> float:
        """How long ``probes`` consecutive health checks take, with one probe of slack."""
        return self.interval * (probes + 1) + self.timeout


class CaddyAdmin:
    """The few admin API calls a rollout needs, on one load balancer.

    ``name`` names it in the log; ``probe_source`` is the address its health probes come
    from (its private IP on AWS), so that the rollout can tell which Caddy took a host out.
    """

    def __init__(self, transport: AdminTransport,
                 upstreams_id: str = DEFAULT_UPSTREAMS_ID, *, name: str = "LB-01",
                 probe_source: str | None = None) -> None:
        self.transport = transport
        self.upstreams_id = upstreams_id
        self.name = name
        self.probe_source = probe_source

    def describe(self) -> str:
        return self.transport.describe()

    def _json(self, method: str, path: str, payload: object = None) -> object:
        body = None if payload is None else json.dumps(payload).encode()
        status, data = self.transport.request(method, path, body)
        if status == 404 and path.startswith("/id/"):
            raise LoadBalancerError(
                f"Caddy at {self.describe()} has no object with @id {self.upstreams_id!r}: "
                "was LB-01 configured by provisioning.caddy.caddy_config?")
        if not 200 <= status < 300:
            message = data.decode(errors="replace").strip()[:300]
            raise LoadBalancerError(f"Caddy admin {method} {path} answered {status}: {message}")
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise LoadBalancerError(f"Caddy admin {method} {path} did not answer JSON") from exc

    def pool(self) -> UpstreamPool:
        handler = self._json("GET", f"/id/{self.upstreams_id}")
        if not isinstance(handler, dict):
            raise LoadBalancerError("Caddy's upstreams handler is not a JSON object")
        return UpstreamPool.from_handler(handler)

    def in_flight(self) -> dict[str, int]:
        """Requests being proxied right now, per upstream dial address."""
        answer = self._json("GET", "/reverse_proxy/upstreams") or []
        counts: dict[str, int] = {}
        for entry in answer if isinstance(answer, list) else []:
            address = entry.get("address")
            if address:
                counts[address] = counts.get(address, 0) + int(entry.get("num_requests") or 0)
        return counts

    def set_upstreams(self, upstreams: list[dict]) -> None:
        """Replace the upstream list: one config change, whatever the number of hosts."""
        self._json("PATCH", f"/id/{self.upstreams_id}/upstreams", upstreams)


class HttpAdminTransport:
    """The admin API over plain HTTP (a local Caddy; on LB-01 itself)."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        parts = urlsplit(address if "://" in address else f"http://{address}")
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"Caddy admin address must look like http://127.0.0.1:2019, "
                             f"got {address!r}")
        self.host, self.port = parts.hostname, parts.port
        # The admin API refuses requests whose Host header is not its listen address.
        self.host_header = parts.netloc
        self.timeout = timeout

    def describe(self) -> str:
        return f"http://{self.host_header}"

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Host": self.host_header}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise LoadBalancerError(f"Caddy admin API at {self.describe()} is unreachable: "
                                    f"{exc.__class__.__name__}: {exc}") from exc
        finally:
            conn.close()
