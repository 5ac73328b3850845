"""Local inventory files: a fleet described in YAML instead of discovered on AWS.

Used by the tests, the benchmark and developers (``--inventory FILE``)::

    environment: local                    # optional; when present must equal --environment
    caddy:
      admin: http://127.0.0.1:2019        # Caddy's admin API (required)
      upstreams_id: app-upstreams         # @id of the reverse_proxy handler (this default)
    # or, with several load balancers, instead of ``caddy``:
    load_balancers:
      - name: LB-01                       # unique
        admin: http://127.0.0.1:2019
        upstreams_id: app-upstreams       # optional, this default
        probe_source: 127.0.1.1           # optional: the address its health probes come
                                          # from; without it, every LB is counted apart
                                          # only by the number of distinct probers
    lock_file: /tmp/rollout-local.lock    # optional; default: one per environment and admin
                                          # address in the system's temp directory
    hosts:
      - name: APP-1                       # unique; the report and the step lines use it
        upstream: 127.0.0.2:5000          # the address Caddy dials: the host's identity in
                                          # the load balancer, unique
        health_url: http://127.0.0.2:5001/health   # its health agent (what Caddy probes);
                                          # the engine reads /agent on the same host:port
        deploy_command: [python3, -m, rollout.lab.app_deploy, --state-dir, /tmp/lab/APP-1,
                         --bind, 127.0.0.2]
                                          # argv that runs app-deploy for this host; the
                                          # subcommand (status, drain, undrain, IMAGE,
                                          # --rollback) is appended; relative paths are
                                          # resolved from the current directory
        env: {}                           # optional extra environment for deploy_command

Host order in the file does not matter: hosts are rolled in natural name order.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .caddy_admin import DEFAULT_UPSTREAMS_ID
from .model import AppHost, natural_key

_UPSTREAM = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_TOP_KEYS = {"environment", "caddy", "load_balancers", "lock_file", "hosts"}
_CADDY_KEYS = {"admin", "upstreams_id"}
_LB_KEYS = {"name", "admin", "upstreams_id", "probe_source"}


@dataclass(frozen=True)
class LoadBalancer:
    """One Caddy of a local inventory."""

    name: str
    admin: str
    upstreams_id: str = DEFAULT_UPSTREAMS_ID
    probe_source: str | None = None


_HOST_KEYS = {"name", "upstream", "health_url", "deploy_command", "env"}


class InventoryError(ValueError):
    """The inventory file cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class Inventory:
    """A parsed local inventory."""

    path: str
    load_balancers: tuple[LoadBalancer, ...]
    hosts: tuple[AppHost, ...]
    environment: str | None = None
    lock_file: str | None = None

    @property
    def caddy_admin(self) -> str:
        return self.load_balancers[0].admin

    @property
    def upstreams_id(self) -> str:
        return self.load_balancers[0].upstreams_id

    def lock_path(self, environment: str) -> str:
        if self.lock_file:
            return self.lock_file
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{environment}-{self.caddy_admin}").strip("-")
        return os.path.join(tempfile.gettempdir(), f"rolling-update-{slug}.lock")


def load_inventory(path: str) -> Inventory:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise InventoryError(f"--inventory {path}: cannot read it ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise InventoryError(f"--inventory {path}: byte {exc.object[exc.start]:#04x} at offset "
                             f"{exc.start} is not UTF-8; save the file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        raise InventoryError(f"--inventory {path}:{line} is not valid YAML") from exc
    return parse_inventory(data, path)


def parse_inventory(data: object, path: str = "<inventory>") -> Inventory:
    def fail(field: str, fix: str) -> InventoryError:
        return InventoryError(f"--inventory {path}: {field}: {fix}")

    if not isinstance(data, dict):
        raise fail("top level", "must be a mapping with 'caddy' and 'hosts'")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise fail(", ".join(sorted(unknown)), f"unknown key; allowed: {sorted(_TOP_KEYS)}")

    if "caddy" in data and "load_balancers" in data:
        raise fail("load_balancers", "give either caddy (one load balancer) or "
                                     "load_balancers, not both")
    if "load_balancers" not in data:
        caddy = data.get("caddy")
        if not isinstance(caddy, dict) or not isinstance(caddy.get("admin"), str):
            raise fail("caddy.admin", "required, e.g. 'http://127.0.0.1:2019'")
        unknown = set(caddy) - _CADDY_KEYS
        if unknown:
            raise fail(f"caddy.{sorted(unknown)[0]}",
                       f"unknown key; allowed: {sorted(_CADDY_KEYS)}")
        balancers = [_parse_lb({"name": "LB-01", **caddy}, "caddy", fail)]
    else:
        raw = data["load_balancers"]
        if not isinstance(raw, list) or not raw:
            raise fail("load_balancers", "must be a non-empty list of {name, admin}")
        balancers = [_parse_lb(b, f"load_balancers[{i}]", fail) for i, b in enumerate(raw)]
        for attribute in ("name", "admin"):
            values = [getattr(b, attribute) for b in balancers]
            if len(set(values)) != len(values):
                raise fail(f"load_balancers.{attribute}", "each must be unique")

    raw_hosts = data.get("hosts")
    if not isinstance(raw_hosts, list) or not raw_hosts:
        raise fail("hosts", "must be a non-empty list of hosts")
    hosts = [_parse_host(h, f"hosts[{i}]", fail) for i, h in enumerate(raw_hosts)]
    for attribute in ("name", "upstream"):
        seen: set[str] = set()
        for host in hosts:
            value = getattr(host, attribute)
            if value in seen:
                raise fail(f"hosts.{attribute}", f"{value!r} appears twice; each must be unique")
            seen.add(value)

    environment = data.get("environment")
    if environment is not None and not isinstance(environment, str):
        raise fail("environment", "must be a string")
    lock_file = data.get("lock_file")
    if lock_file is not None and not isinstance(lock_file, str):
        raise fail("lock_file", "must be a file path")
    return Inventory(path=path, load_balancers=tuple(balancers),
                     hosts=tuple(sorted(hosts, key=lambda h: natural_key(h.name))),
                     environment=environment, lock_file=lock_file)


def _check_keys(raw: object, where: str, fail, allowed: set[str], required: str) -> None:
    """``raw`` is a mapping of ``allowed`` keys only."""
    if not isinstance(raw, dict):
        raise fail(where, f"must be a mapping with {required}")
    unknown = set(raw) - allowed
    if unknown:
        raise fail(f"{where}.{sorted(unknown)[0]}", f"unknown key; allowed: {sorted(allowed)}")


def _parse_lb(raw: object, where: str, fail) -> LoadBalancer:
    _check_keys(raw, where, fail, _LB_KEYS, "name and admin")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail(f"{where}.name", "required, e.g. 'LB-01'")
    if not isinstance(raw.get("admin"), str):
        raise fail(f"{where}.admin", "required, e.g. 'http://127.0.0.1:2019'")
    admin = urlsplit(raw["admin"] if "://" in raw["admin"] else f"http://{raw['admin']}")
    if admin.scheme != "http" or not admin.hostname or not admin.port:
        raise fail(f"{where}.admin", f"must look like http://127.0.0.1:2019, got {raw['admin']!r}")
    upstreams_id = raw.get("upstreams_id", DEFAULT_UPSTREAMS_ID)
    if not isinstance(upstreams_id, str) or not upstreams_id:
        raise fail(f"{where}.upstreams_id", "must be a non-empty string")
    source = raw.get("probe_source")
    if source is not None and not isinstance(source, str):
        raise fail(f"{where}.probe_source", "must be an IP address, e.g. '127.0.1.1'")
    return LoadBalancer(name, raw["admin"], upstreams_id, source)


def _parse_host(raw: object, where: str, fail) -> AppHost:
    _check_keys(raw, where, fail, _HOST_KEYS, "name, upstream, health_url, deploy_command")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail(f"{where}.name", "required, e.g. 'APP-1'")
    where = f"{where} ({name})"
    upstream = raw.get("upstream")
    if not isinstance(upstream, str) or not _UPSTREAM.match(upstream):
        raise fail(f"{where}.upstream", f"must be HOST:PORT as Caddy dials it, e.g. "
                                        f"'127.0.0.2:5000', got {upstream!r}")
    health_url = raw.get("health_url")
    parts = urlsplit(health_url) if isinstance(health_url, str) else None
    if not parts or parts.scheme != "http" or not parts.hostname:
        raise fail(f"{where}.health_url", f"must be the health agent's URL, e.g. "
                                          f"'http://127.0.0.2:5001/health', got {health_url!r}")
    command = raw.get("deploy_command")
    if (not isinstance(command, list) or not command
            or not all(isinstance(a, (str, int, float)) for a in command)):
        raise fail(f"{where}.deploy_command", "must be a non-empty argv list, e.g. "
                                              "['/usr/local/bin/app-deploy']")
    env = raw.get("env") or {}
    if not isinstance(env, dict):
        raise fail(f"{where}.env", "must be a mapping of variable names to values")
    return AppHost(name=name, upstream=upstream, health_url=health_url,
                   deploy_command=tuple(str(a) for a in command),
                   env=tuple((str(k), str(v)) for k, v in env.items()))
