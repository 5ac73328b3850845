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
HEALTH_SERVER_NAME = "lb-health"
ACME_SERVER_NAME = "acme-peer"
ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/"
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
    health_listen: Sequence[str] | None = None,
    health_path: str = "/lb-health",
    acme_peer: str | None = None,
    http_listen: Sequence[str] | None = None,
    peer_renewal_window_ratio: float = 0.1,
    http_challenge_only: bool = False,
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
        health_listen: addresses of a server that answers ``health_path`` with 200 itself,
            whatever the app hosts' state: the Network Load Balancer's health check of this
            Caddy (two LBs). ``None``: no such server (one LB).
        acme_peer: ``HOST:PORT`` of the peer LB that answers ACME (domain mode, LB-02): this
            Caddy forwards ``/.well-known/acme-challenge/*`` on port 80 there, redirects the
            rest of port 80 to HTTPS, and renews its certificate only late in its life
            (``peer_renewal_window_ratio``), by which time the peer's renewal has reached it
            through the shared storage. Caddy answers a challenge it started itself first.
        http_listen: override port 80's listen addresses with ``acme_peer`` (tests).
        http_challenge_only: solve ACME challenges over HTTP-01 only (domain mode). Two LBs
            behind the NLB need it on both: a TLS-ALPN-01 validation on port 443 may reach
            the LB that did not start the challenge, and LB-02 forwards only port 80's.

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

    if acme_peer is not None:
        _check_dial(acme_peer)
        if not domain:
            raise ValueError("acme_peer needs a domain: without one there is no ACME")
    if not 0 < peer_renewal_window_ratio < 1:
        raise ValueError("peer_renewal_window_ratio must be between 0 and 1")
    if not health_path.startswith("/"):
        raise ValueError(f"health_path must start with '/', got {health_path!r}")

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
    servers = config["apps"]["http"]["servers"]
    if health_listen:
        servers[HEALTH_SERVER_NAME] = {
            "listen": list(health_listen),
            "routes": [{"match": [{"path": [health_path]}], "handle": [
                {"handler": "static_response", "status_code": 200, "body": "ok"}]}],
            # Plain HTTP whatever the domain: the NLB's health check speaks nothing else.
            "automatic_https": {"disable": True},
        }
    if acme_peer is not None:
        # Caddy's own redirects would take port 80 before the forwarding route below.
        server["automatic_https"] = {"disable_redirects": True}
        servers[ACME_SERVER_NAME] = {
            "listen": list(http_listen) if http_listen else [":80"],
            "routes": [
                {"match": [{"path": [f"{ACME_CHALLENGE_PATH}*"]}],
                 "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": acme_peer}],
                             "transport": {"protocol": "http", "dial_timeout": "2s"}}],
                 "terminal": True},
                {"handle": [{"handler": "static_response", "status_code": 308, "headers": {
                    "Location": ["https://{http.request.host}{http.request.uri}"]}}]},
            ],
        }
    policy: dict = {"subjects": [domain]}
    if domain and (acme_email or http_challenge_only):
        issuer: dict = {"module": "acme"}
        if acme_email:
            issuer["email"] = acme_email
        if http_challenge_only:
            issuer["challenges"] = {"tls-alpn": {"disabled": True}}
        policy["issuers"] = [issuer]
    if domain and acme_peer is not None:
        policy["renewal_window_ratio"] = peer_renewal_window_ratio
    if len(policy) > 1:
        config["apps"]["tls"] = {"automation": {"policies": [policy]}}
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
