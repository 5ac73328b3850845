"""Caddy's JSON configuration for LB-01, as a pure function.

``caddy_config(upstreams, domain=...)`` returns the whole document that ``caddy run --config``
loads. It has no CDK and no settings import so that the LB-01 user data, the Compose file and
the tests can all render it the same way.

Shape (the parts the rolling update depends on)::

    apps.http.servers.app.routes[0].handle[0]   <- the one reverse_proxy handler
        "@id": "app-upstreams"                  <- scripts/rolling_update.py reconciles
        "upstreams": [{"dial": "10.0.2.11:5000"}, ...]   /id/app-upstreams/upstreams
        "health_checks": {
            "active": {"uri": "/health", "port": 5001, "interval": "2s", "timeout": "1s",
                       "expect_status": 200, "passes": 2, "fails": 1},
            "passive": {"fail_duration": "5s", "max_fails": 2}},
        "load_balancing": {"selection_policy": {"policy": "round_robin"},
                           "try_duration": "5s", "try_interval": "250ms"}

A host leaves the pool by failing the *active* health check on purpose: the health agent on
port 5001 answers 503 while the host's drain switch is set. No config change is needed for
that, which matters because every config change (admin API included) closes idle keep-alive
client connections and loses requests of clients that do not retry.

Caddy versions:

* ``passes`` / ``fails`` on the active health check need Caddy >= 2.8.0.
* Caddy 2.10.0 to 2.11.1 ignore the health check ``port`` and probe the app port instead
  (caddyserver/caddy#7524, fixed in 2.11.2): the drain switch would then have no effect.
* Before 2.11.2 a request with a body cannot be retried on another upstream after a failed
  dial (caddyserver/caddy#7547): ``try_duration`` covers GETs only on older versions.

Production therefore runs Caddy >= ``MINIMUM_CADDY_VERSION``.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Sequence

UPSTREAMS_ID = "app-upstreams"
"""The ``@id`` of the reverse_proxy handler; the admin API path is ``/id/app-upstreams``."""

MINIMUM_CADDY_VERSION = "2.11.2"
"""Oldest Caddy release with both a working health ``port`` and body-safe dial retries."""

SERVER_NAME = "app"
ACCESS_LOGGER = "app_access"

_DURATION = re.compile(r"^\d+(\.\d+)?(ns|us|µs|ms|s|m|h)$")
_DIAL = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                     r"[A-Za-z]{2,63}$")


def caddy_config(
    upstreams: Sequence[str],
    *,
    domain: str | None = None,
    health_port: int = 5001,
    health_uri: str = "/health",
    health_interval: str = "2s",
    health_timeout: str = "1s",
    health_passes: int = 2,
    health_fails: int = 1,
    try_duration: str = "5s",
    try_interval: str = "250ms",
    admin_listen: str = "localhost:2019",
    listen: Sequence[str] | None = None,
    acme_email: str | None = None,
    source_address: str | None = None,
) -> dict:
    """Build the Caddy JSON config for LB-01.

    Args:
        upstreams: dial addresses of the app hosts, ``"HOST:PORT"`` (e.g. ``"10.0.2.11:5000"``).
            May be empty: the rolling update's ``--sync-only`` fills the list in later.
        domain: serve this name with automatic HTTPS (ACME); ``None`` serves plain HTTP on :80.
        health_port: port of the health agent on every app host (the drain switch lives there).
        health_uri: path the active health check requests.
        health_interval, health_timeout: Caddy durations (``"2s"``, ``"250ms"``). Keep the
            agent's own app-check timeout below ``health_timeout``.
        health_passes, health_fails: consecutive probes to mark a host up / down.
        try_duration, try_interval: how long a request keeps looking for another upstream when
            its dial fails.
        admin_listen: admin API address; must be a loopback address (the admin API is never
            exposed to the network).
        listen: override the server's listen addresses (tests use ``["127.0.0.1:PORT"]``);
            default ``[":443"]`` with a domain, ``[":80"]`` without.
        acme_email: contact address given to the ACME CA (domain mode only).
        source_address: the address Caddy dials app hosts and probes them from; default the
            system's choice (on AWS the LB's private IP, which is how a health agent tells
            load balancers apart). The local lab gives each of its Caddys its own.

    Returns:
        A JSON-serialisable dict, ready for ``json.dump``.

    Raises:
        ValueError: on an argument Caddy would reject or that would expose the admin API.
    """
    dials = [_check_dial(u) for u in upstreams]
    if len(set(dials)) != len(dials):
        raise ValueError(f"duplicate upstreams: {sorted(dials)}")
    if domain is not None and not _DOMAIN.match(domain):
        raise ValueError(f"domain {domain!r} is not a DNS name")
    if not 0 < health_port < 65536:
        raise ValueError(f"health_port must be 1..65535, got {health_port}")
    if not health_uri.startswith("/"):
        raise ValueError(f"health_uri must start with '/', got {health_uri!r}")
    for name, value in (("health_interval", health_interval), ("health_timeout", health_timeout),
                        ("try_duration", try_duration), ("try_interval", try_interval)):
        if not _DURATION.match(value):
            raise ValueError(f"{name} must be a Caddy duration such as '2s', got {value!r}")
    if health_passes < 1 or health_fails < 1:
        raise ValueError("health_passes and health_fails must be >= 1")
    _check_loopback(admin_listen)

    active: dict = {
        "uri": health_uri,
        "port": health_port,
        "interval": health_interval,
        "timeout": health_timeout,
        # The agent answers exactly 200 or 503; anything else means something else answered.
        "expect_status": 200,
        "max_size": 4096,
        "passes": health_passes,
        "fails": health_fails,
    }

    proxy = {
        "@id": UPSTREAMS_ID,
        "handler": "reverse_proxy",
        "upstreams": [{"dial": d} for d in dials],
        "health_checks": {
            "active": active,
            # A host that crashes between two probes is skipped after a couple of failed dials
            # instead of being dialled by every request until the next probe.
            "passive": {"fail_duration": "5s", "max_fails": 2},
        },
        "load_balancing": {
            "selection_policy": {"policy": "round_robin"},
            # Only failed dials are retried (no retry_match): a request that reached an app is
            # never sent twice.
            "try_duration": try_duration,
            "try_interval": try_interval,
        },
        # Hosts are in the same VPC: a dial that takes longer than this is a dead host, and
        # failing fast leaves try_duration time to find another one.
        "transport": {"protocol": "http", "dial_timeout": "1s"},
    }
    if source_address is not None:
        ipaddress.ip_address(source_address)
        proxy["transport"]["local_address"] = source_address

    route: dict = {"handle": [proxy], "terminal": True}
    if domain:
        route["match"] = [{"host": [domain]}]
    server: dict = {
        "listen": list(listen) if listen else ([":443"] if domain else [":80"]),
        "routes": [route],
        "logs": {"default_logger_name": ACCESS_LOGGER},
    }
    config: dict = {
        "admin": {"listen": admin_listen},
        "logging": {
            "logs": {
                # Access logs go to stdout as JSON (Filebeat reads the container log); Caddy's
                # own messages stay on the default logger (stderr).
                "default": {"exclude": [f"http.log.access.{ACCESS_LOGGER}"]},
                ACCESS_LOGGER: {
                    "writer": {"output": "stdout"},
                    "encoder": {"format": "json"},
                    "include": [f"http.log.access.{ACCESS_LOGGER}"],
                },
            }
        },
        "apps": {"http": {"servers": {SERVER_NAME: server}}},
    }
    if domain and acme_email:
        config["apps"]["tls"] = {
            "automation": {
                "policies": [{
                    "subjects": [domain],
                    "issuers": [{"module": "acme", "email": acme_email}],
                }]
            }
        }
    return config


def _check_dial(address: str) -> str:
    match = _DIAL.match(address)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"upstream {address!r} must be HOST:PORT, e.g. '10.0.2.11:5000'")
    return address


def _check_loopback(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"admin_listen {address!r} must be HOST:PORT, e.g. 'localhost:2019'")
    host = host.strip("[]")
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"admin_listen {address!r} must be on localhost: the admin API can "
                     "rewrite the whole config and is never exposed to the network")
