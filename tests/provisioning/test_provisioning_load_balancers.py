"""Two load balancers on the host side: Caddy's configuration of LB-01 and LB-02, checked by
the real Caddy 2.11.7, and cert-sync, which shares their certificates (moto stands in for S3).
"""
from __future__ import annotations

import http.server
import importlib.util
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

import boto3
import pytest
import yaml
from moto import mock_aws

from core.settings import HTTP_PORT, LB_HEALTH_PATH, LB_HEALTH_PORT, load_environment
from provisioning import user_data
from provisioning.caddy import ACME_SERVER_NAME, HEALTH_SERVER_NAME, caddy_config
from provisioning.cloud_config import FILES_DIR
from tests.provisioning.conftest import CERTIFICATE_BUCKET, boot_steps, render_host
from tests.provisioning.postgres_server import free_port
from tests import tools

DOMAIN = "app.example.com"


def settings_with(environment: str, domain: str | None):
    settings = load_environment(environment)
    return settings.model_copy(update={"domain": domain, "acme_email": "ops@example.com"})


@pytest.mark.parametrize("environment", ["production", "staging"])
@pytest.mark.parametrize("domain", [None, DOMAIN])
def test_caddy_2_11_7_accepts_every_load_balancers_config(tmp_path, environment, domain):
    caddy = tools.caddy()
    settings = settings_with(environment, domain)
    for host in settings.host_names("lb"):
        path = tmp_path / f"{host}.json"
        path.write_text(json.dumps(user_data.load_balancer_config(settings, host)))

        result = subprocess.run([caddy, "validate", "--config", str(path)],
                                capture_output=True, text=True, timeout=60)

        assert result.returncode == 0, (host, result.stderr[-2000:])
        assert "Valid configuration" in result.stdout + result.stderr


def test_two_lbs_solve_acme_over_http_01_only_and_caddy_accepts_it(tmp_path):
    caddy = tools.caddy()
    for environment, two in (("production", True), ("staging", False)):
        settings = settings_with(environment, DOMAIN)
        for host in settings.host_names("lb"):
            config = user_data.load_balancer_config(settings, host)
            (policy,) = config["apps"]["tls"]["automation"]["policies"]
            (issuer,) = policy["issuers"]
            # TLS-ALPN-01 is validated on 443, which the NLB may send to the LB that did not
            # start the challenge; LB-02 forwards only port 80's HTTP-01 to LB-01.
            assert issuer.get("challenges") == (
                {"tls-alpn": {"disabled": True}} if two else None), (environment, host)
            path = tmp_path / f"{environment}-{host}.json"
            path.write_text(json.dumps(config))
            result = subprocess.run([caddy, "validate", "--config", str(path)],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (host, result.stderr[-2000:])
    # Caddy decodes the issuer strictly: a misspelt key would not pass for a disabled one.
    (policy,) = config["apps"]["tls"]["automation"]["policies"]
    policy["issuers"][0]["challenges"] = {"tls_alpn": {"disabled": True}}
    path.write_text(json.dumps(config))
    result = subprocess.run([caddy, "validate", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_one_lb_keeps_the_seeds_config():
    settings = settings_with("staging", DOMAIN)
    (host,) = settings.host_names("lb")
    config = user_data.load_balancer_config(settings, host)
    assert set(config["apps"]["http"]["servers"]) == {"app"}
    assert "renewal_window_ratio" not in json.dumps(config)


def test_lb_02_forwards_acme_challenges_to_lb_01_and_renews_late():
    settings = settings_with("production", DOMAIN)
    first = user_data.load_balancer_config(settings, "LB-01")
    second = user_data.load_balancer_config(settings, "LB-02")
    assert ACME_SERVER_NAME not in first["apps"]["http"]["servers"]
    (policy,) = first["apps"]["tls"]["automation"]["policies"]
    assert "renewal_window_ratio" not in policy

    peer = second["apps"]["http"]["servers"][ACME_SERVER_NAME]
    assert peer["listen"] == [f":{HTTP_PORT}"]
    forward, redirect = peer["routes"]
    assert forward["match"] == [{"path": ["/.well-known/acme-challenge/*"]}]
    assert forward["handle"][0]["upstreams"] == [
        {"dial": f"{settings.private_ips('lb')[0]}:{HTTP_PORT}"}]
    assert redirect["handle"][0]["status_code"] == 308
    (policy,) = second["apps"]["tls"]["automation"]["policies"]
    # LB-01 renews with a third of the lifetime left (Caddy's default), LB-02 with a tenth:
    # weeks in which LB-01's renewal reaches LB-02's storage through cert-sync.
    assert 0 < policy["renewal_window_ratio"] < 1 / 3
    # Same issuer, so the same storage key: LB-02 finds LB-01's certificate as its own.
    assert policy["issuers"] == first["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    for config in (first, second):
        health = config["apps"]["http"]["servers"][HEALTH_SERVER_NAME]
        assert health["listen"] == [f":{LB_HEALTH_PORT}"]


def test_without_a_domain_there_is_nothing_to_forward():
    settings = settings_with("production", None)
    second = user_data.load_balancer_config(settings, "LB-02")
    assert set(second["apps"]["http"]["servers"]) == {"app", HEALTH_SERVER_NAME}
    assert "tls" not in second["apps"]
    with pytest.raises(ValueError, match="acme_peer needs a domain"):
        caddy_config(["10.0.2.20:5000"], acme_peer="10.0.1.10:80")


class _Peer(http.server.BaseHTTPRequestHandler):
    """LB-01 as LB-02 sees it: answers a challenge token with its key authorization."""

    def do_GET(self):
        body = f"key-authorization-for {self.path} host {self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _get(url: str, host: str) -> tuple[int, str, dict]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


@pytest.mark.e2e
def test_a_challenge_that_reaches_lb_02_is_answered_by_lb_01(tmp_path):
    """The real Caddy 2.11.7 with LB-02's port-80 server: the challenge goes to the peer with
    its Host header, everything else is redirected to HTTPS, the health path answers 200."""
    caddy = tools.caddy()
    peer = http.server.ThreadingHTTPServer(("127.0.0.3", 0), _Peer)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    http_port, https_port, health_port = free_port(), free_port(), free_port()
    admin = f"127.0.0.1:{free_port()}"
    config = caddy_config(["127.0.0.4:5000"], domain=DOMAIN, admin_listen=admin,
                          listen=[f"127.0.0.2:{https_port}"],
                          health_listen=[f"127.0.0.2:{health_port}"],
                          acme_peer=f"127.0.0.3:{peer.server_port}",
                          http_listen=[f"127.0.0.2:{http_port}"])
    # Offline: a local issuer instead of the CA, and Caddy's own ports where the test put them.
    config["apps"]["tls"]["automation"]["policies"][0]["issuers"] = [{"module": "internal"}]
    config["apps"]["http"].update(http_port=http_port, https_port=https_port)
    path = tmp_path / "caddy.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    process = subprocess.Popen([caddy, "run", "--config", str(path)], env=env,
                               stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "w"))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body, _ = _get(f"http://127.0.0.2:{health_port}{LB_HEALTH_PATH}", "x")
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "log").read_text()[-2000:]
                assert time.monotonic() < deadline, "Caddy did not start"
                time.sleep(0.2)
        assert (status, body) == (200, "ok")

        status, body, _ = _get(
            f"http://127.0.0.2:{http_port}/.well-known/acme-challenge/t0k3n", DOMAIN)
        assert status == 200
        assert body == f"key-authorization-for /.well-known/acme-challenge/t0k3n host {DOMAIN}"

        status, _, headers = _get(f"http://127.0.0.2:{http_port}/login?next=1", DOMAIN)
        assert status == 308 and headers["Location"] == f"https://{DOMAIN}/login?next=1"
    finally:
        process.terminate()
        process.wait(timeout=20)
        peer.shutdown()


# --- cert-sync -----------------------------------------------------------------------------

def load_cert_sync():
    spec = importlib.util.spec_from_file_location("cert_sync", FILES_DIR / "cert_sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cert_sync = load_cert_sync()
BUCKET = "webapp-test-certs-1"
ISSUER = "certificates/acme-v02.api.letsencrypt.org-directory"


@pytest.fixture
def s3(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET,
                             CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def write_certificate(root, domain: str, version: str, mtime: float) -> None:
    folder = root / ISSUER / domain
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("crt", "key", "json"):
        path = folder / f"{domain}.{suffix}"
        path.write_text(f"{suffix} {version}")
        os.utime(path, (mtime, mtime))


def read_certificate(root, domain: str) -> set[str]:
    return {p.read_text() for p in (root / ISSUER / domain).iterdir()}


def run(command: str, root, client, *extra) -> int:
    return cert_sync.main([command, "--bucket", BUCKET, "--root", str(root), *extra],
                          client=client)


def test_a_certificate_obtained_on_lb_01_reaches_lb_02(s3, tmp_path, capsys):
    lb01, lb02 = tmp_path / "lb01", tmp_path / "lb02"
    write_certificate(lb01, DOMAIN, "v1", 1_000)
    (lb01 / "locks").mkdir()
    (lb01 / "locks" / "issue.lock").write_text("not shared")

    assert run("sync", lb01, s3) == 0
    assert run("sync", lb02, s3) == 0

    assert read_certificate(lb02, DOMAIN) == {"crt v1", "key v1", "json v1"}
    assert not (lb02 / "locks").exists()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {f"caddy/{ISSUER}/{DOMAIN}/{DOMAIN}.{s}" for s in ("crt", "key", "json")}
    assert (lb02 / ISSUER / DOMAIN / f"{DOMAIN}.key").stat().st_mode & 0o077 == 0
    assert "pulled certificates/" in capsys.readouterr().out


def test_a_renewal_on_either_lb_wins_and_an_older_copy_never_overwrites_it(s3, tmp_path):
    lb01, lb02 = tmp_path / "lb01", tmp_path / "lb02"
    write_certificate(lb01, DOMAIN, "v1", 1_000)
    assert run("sync", lb01, s3) == 0 and run("sync", lb02, s3) == 0

    # LB-02 renewed by itself (LB-01 was down); LB-01 comes back with its older copy.
    write_certificate(lb02, DOMAIN, "v2", 2_000)
    assert run("sync", lb02, s3) == 0
    assert run("sync", lb01, s3) == 0

    assert read_certificate(lb01, DOMAIN) == {"crt v2", "key v2", "json v2"}
    assert run("sync", lb02, s3) == 0
    assert read_certificate(lb02, DOMAIN) == {"crt v2", "key v2", "json v2"}


def test_a_new_lb_02_waits_for_lb_01s_certificate_within_a_bound(s3, tmp_path, capsys):
    lb01, lb02 = tmp_path / "lb01", tmp_path / "lb02"
    now = [0.0]
    arrivals = iter([lambda: None, lambda: (write_certificate(lb01, DOMAIN, "v1", 1_000),
                                            run("push", lb01, s3))])

    def sleep(seconds):
        now[0] += seconds
        next(arrivals, lambda: None)()

    status = cert_sync.main(["pull", "--bucket", BUCKET, "--root", str(lb02), "--wait-for",
                             DOMAIN, "--wait-seconds", "600"], client=s3, sleep=sleep,
                            clock=lambda: now[0])
    assert status == 0 and read_certificate(lb02, DOMAIN) == {"crt v1", "key v1", "json v1"}
    assert now[0] == 2 * cert_sync.WAIT_INTERVAL_SECONDS

    elsewhere = tmp_path / "lb03"
    status = cert_sync.main(["pull", "--bucket", BUCKET, "--root", str(elsewhere),
                             "--wait-for", "other.example.com", "--wait-seconds", "60"],
                            client=s3, sleep=sleep, clock=lambda: now[0])
    assert status == 0
    assert "no certificate for other.example.com" in capsys.readouterr().err


def test_an_s3_error_is_one_line(s3, tmp_path, capsys):
    status = cert_sync.main(["sync", "--bucket", "no-such-bucket", "--root", str(tmp_path)],
                            client=s3)
    assert status == 1
    assert capsys.readouterr().err == (
        "cert-sync: sync s3://no-such-bucket/caddy/ failed: NoSuchBucket\n")


def test_lb_hosts_pull_before_caddy_starts_and_sync_on_a_timer():
    settings = settings_with("production", DOMAIN)
    for host in settings.host_names("lb"):
        steps = boot_steps(yaml.safe_load(render_host(settings, host)))
        names = [step[0] if step[0] != "docker" else "docker-run" for step in steps]
        assert names.index("cert-sync") < names.index("docker-run") < len(names) - 1
        pull = steps[names.index("cert-sync")]
        assert pull[pull.index("--bucket") + 1] == CERTIFICATE_BUCKET
        waits = "--wait-for" in pull
        assert waits == (host == "LB-02"), host
        assert steps[-1] == ["systemctl", "enable", "--now", "cert-sync.timer"]
        run_step = steps[names.index("docker-run")]
        assert f"{user_data.CADDY_DATA}:/data" in run_step


def test_the_user_data_command_prints_lb_02(capsys):
    """The command of docs/hosts.md works for LB-02 too (the bucket is named after apply)."""
    assert user_data.main(["production", "LB-02"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["hostname"] == "lb-02"
    pull = boot_steps(printed)[[s[0] for s in boot_steps(printed)].index("cert-sync")]
    # No domain in the default configuration: nothing to wait for.
    assert pull[pull.index("--bucket") + 1] == "<certificate bucket, known after apply>"
    assert "--wait-for" not in pull
