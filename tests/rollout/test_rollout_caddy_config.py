"""LB-01's Caddy config: the shape the rolling update relies on, checked by the real Caddy."""
import json
import os
import subprocess

import pytest

from provisioning.caddy import MINIMUM_CADDY_VERSION, UPSTREAMS_ID, caddy_config
from rollout.caddy_admin import UpstreamPool
from tests.tools import caddy

UPSTREAMS = ["10.0.2.11:5000", "10.0.2.12:5000"]


def proxy_of(config):
    [route] = config["apps"]["http"]["servers"]["app"]["routes"]
    [handler] = route["handle"]
    return route, handler


def test_one_reverse_proxy_with_the_upstreams_id():
    route, proxy = proxy_of(caddy_config(UPSTREAMS, domain="shop.example.com"))
    assert proxy["@id"] == UPSTREAMS_ID == "app-upstreams"
    assert proxy["handler"] == "reverse_proxy"
    assert proxy["upstreams"] == [{"dial": u} for u in UPSTREAMS]
    assert route["match"] == [{"host": ["shop.example.com"]}]


def test_active_health_checks_probe_the_agent_port():
    _, proxy = proxy_of(caddy_config(UPSTREAMS, health_port=5001))
    active = proxy["health_checks"]["active"]
    assert active["port"] == 5001 and active["uri"] == "/health"
    assert active["expect_status"] == 200
    assert active["interval"] == "2s" and active["timeout"] == "1s"
    assert (active["passes"], active["fails"]) == (2, 1)
    pool = UpstreamPool.from_handler(proxy)
    assert (pool.interval, pool.timeout, pool.passes, pool.fails) == (2.0, 1.0, 2, 1)


def test_failed_dials_are_retried_on_another_upstream_but_requests_never_resent():
    _, proxy = proxy_of(caddy_config(UPSTREAMS))
    lb = proxy["load_balancing"]
    assert lb["try_duration"] == "5s" and lb["try_interval"] == "250ms"
    assert "retry_match" not in lb


def test_site_address_and_admin():
    with_domain = caddy_config(UPSTREAMS, domain="shop.example.com", acme_email="ops@example.com")
    assert with_domain["apps"]["http"]["servers"]["app"]["listen"] == [":443"]
    assert with_domain["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["email"] == \
        "ops@example.com"
    plain = caddy_config(UPSTREAMS)
    assert plain["apps"]["http"]["servers"]["app"]["listen"] == [":80"]
    assert "match" not in proxy_of(plain)[0] and "tls" not in plain["apps"]
    assert plain["admin"] == {"listen": "localhost:2019"}


def test_access_logs_are_json_on_stdout():
    logs = caddy_config(UPSTREAMS)["logging"]["logs"]
    access = logs["app_access"]
    assert access["encoder"] == {"format": "json"} and access["writer"] == {"output": "stdout"}
    assert logs["default"]["exclude"] == access["include"]


@pytest.mark.parametrize("kwargs, message", [
    ({"upstreams": ["10.0.2.11"]}, "must be HOST:PORT"),
    ({"upstreams": UPSTREAMS + UPSTREAMS[:1]}, "duplicate"),
    ({"admin_listen": "0.0.0.0:2019"}, "must be on localhost"),
    ({"admin_listen": "10.0.1.10:2019"}, "must be on localhost"),
    ({"domain": "not a domain"}, "not a DNS name"),
    ({"health_interval": "2 seconds"}, "Caddy duration"),
    ({"health_port": 0}, "health_port"),
])
def test_rejects_what_would_break_the_lb(kwargs, message):
    args = {"upstreams": UPSTREAMS, **kwargs}
    with pytest.raises(ValueError, match=message):
        caddy_config(args.pop("upstreams"), **args)


def test_loopback_admin_addresses_are_accepted():
    for address in ("localhost:2019", "127.0.0.1:2999", "[::1]:2019"):
        assert caddy_config([], admin_listen=address)["admin"]["listen"] == address


def test_minimum_version_is_the_one_with_both_fixes():
    assert MINIMUM_CADDY_VERSION == "2.11.2"


def _validate(tmp_path, config):
    path = tmp_path / "caddy.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    return subprocess.run([caddy(), "validate", "--config", str(path)], capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.mark.parametrize("domain", [None, "shop.example.com"])
def test_the_production_caddy_accepts_the_config(tmp_path, domain):
    done = _validate(tmp_path, caddy_config(UPSTREAMS, domain=domain,
                                            acme_email="ops@example.com"))
    assert done.returncode == 0, done.stderr[-500:]
