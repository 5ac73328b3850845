"""Elasticsearch's TLS: LOG-01's first-boot CA and certificate, checked by the real openssl,
and the generated configurations that use them."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest
import yaml

from provisioning import logging_stack
from tests.provisioning.conftest import fake_command, run_script, written_file
from tests.tools import require_tool

LOG_01 = "10.0.2.12"
CA_PARAMETER = "/webapp/production/log-ca/certificate"


@pytest.fixture
def certificates(tmp_path, clean_env):
    """``log-stack certificates`` run as at first boot, with ssm-parameter recording its call."""
    openssl = require_tool("openssl")
    published = tmp_path / "published"
    ssm = fake_command(tmp_path, "ssm-parameter",
                       f'printf "%s\\n" "$*" >>"{published}.args"\n'
                       f'cp -- "$4" "{published}"\n')
    env = {**clean_env, "ES_ADDRESS": LOG_01, "CERT_DIR": str(tmp_path / "certs"),
           "CA_PARAMETER": CA_PARAMETER, "SSM_PARAMETER": str(ssm),
           "ES_KEY_OWNER": f"{os.getuid()}:{os.getgid()}",
           "LOG_STACK_CONFIG": str(tmp_path / "none"),
           "PATH": f"{os.path.dirname(openssl)}:{clean_env['PATH']}"}

    def run():
        return run_script("log-stack.sh", "certificates", env=env, check=True)
    return tmp_path / "certs", published, run


def verify(certs, address: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-verify_ip", address,
                           "-CAfile", str(certs / "ca.crt"), str(certs / "http.crt")],
                          capture_output=True, text=True)


def test_the_first_boot_certificate_verifies_for_log_01s_address_only(certificates):
    certs, published, run = certificates
    assert "made a CA" in run().stdout

    assert verify(certs, LOG_01).returncode == 0, verify(certs, LOG_01).stderr
    wrong = verify(certs, "10.0.2.13")
    assert wrong.returncode != 0 and "IP address mismatch" in wrong.stderr
    # The CA's key is gone: nothing else can ever be signed with it.
    assert sorted(p.name for p in certs.iterdir()) == ["ca.crt", "http.crt", "http.key"]
    assert stat.S_IMODE((certs / "http.key").stat().st_mode) == 0o440
    public = [subprocess.run(["openssl", *command], capture_output=True, check=True).stdout
              for command in (["pkey", "-pubout", "-in", str(certs / "http.key")],
                              ["x509", "-pubkey", "-noout", "-in", str(certs / "http.crt")])]
    assert public[0] == public[1]
    assert published.read_text() == (certs / "ca.crt").read_text()
    assert published.with_suffix(".args").read_text() == (
        f"put {CA_PARAMETER} --file {certs}/ca.crt\n")


def test_a_second_run_keeps_the_certificate_and_publishes_it_again(certificates):
    certs, published, run = certificates
    run()
    first = (certs / "http.crt").read_bytes()
    assert "made a CA" not in run().stdout
    assert (certs / "http.crt").read_bytes() == first
    assert len(published.with_suffix(".args").read_text().splitlines()) == 2


def test_without_log_01s_address_no_certificate_is_made(tmp_path, clean_env):
    result = run_script("log-stack.sh", "certificates", env={
        **clean_env, "CERT_DIR": str(tmp_path / "certs"),
        "LOG_STACK_CONFIG": str(tmp_path / "none")})
    assert result.returncode == 1
    assert "ES_ADDRESS must be LOG-01's private address" in result.stderr
    assert not (tmp_path / "certs").exists()


def test_elasticsearch_serves_https_with_the_certificate(cloud_configs):
    compose = yaml.safe_load(written_file(cloud_configs["log"], "/opt/logging/compose.yaml")[
        "content"])
    elasticsearch = compose["services"]["elasticsearch"]
    environment = elasticsearch["environment"]
    assert environment["xpack.security.http.ssl.enabled"] == "true"
    assert environment["xpack.security.http.ssl.certificate"] == "certs/http.crt"
    assert environment["xpack.security.http.ssl.key"] == "certs/http.key"
    assert f"{logging_stack.CERT_DIR}:{logging_stack.ES_CERTS}:ro" in elasticsearch["volumes"]
    kibana = compose["services"]["kibana"]["environment"]
    assert kibana["ELASTICSEARCH_HOSTS"] == "https://elasticsearch:9200"
    assert kibana["ELASTICSEARCH_SSL_VERIFICATIONMODE"] == "full"


def test_filebeat_verifies_log_01s_certificate(cloud_configs):
    filebeat = yaml.safe_load(written_file(cloud_configs["app"], "/etc/filebeat/filebeat.yml")[
        "content"])
    output = filebeat["output.elasticsearch"]
    assert output["hosts"] == [f"https://{LOG_01}:9200"]
    assert output["ssl.verification_mode"] == "full"
    assert output["ssl.certificate_authorities"] == [logging_stack.FILEBEAT_CA]
    unit = written_file(cloud_configs["app"], "/etc/systemd/system/filebeat.service")["content"]
    assert (f"ssm-parameter get {CA_PARAMETER} --region eu-west-1 --output "
            f"{logging_stack.FILEBEAT_CA_HOST}") in unit
    assert f"--volume {logging_stack.FILEBEAT_CA_HOST}:{logging_stack.FILEBEAT_CA}:ro" in unit


# --- passwords never on a command line ----------------------------------------------------

# What puts a credential in a process's arguments, where `ps` shows it to every user.
COMMAND_LINE_SECRETS = {
    "curl -u/--user USER:SECRET": r"(?:\s-u\s*|--user[\s=])[\"']?[\w.$-]+:\S",
    "a --password option (other than --password-stdin)": r"--password(?!-stdin)[\s=]",
    "a -p option followed by a value (mysql/redis style)": r"\s-p\$",
    "credentials inside a URL": r"://[^/\s:@]+:[^/\s@]+@",
    # `VAR=x command` is not in argv, but `env VAR=x command` is: env's own arguments.
    "a password passed through env(1)": r"\benv\s+(?:\S+=\S*\s+)*\w*PASSWORD=",
}


def test_no_generated_script_or_unit_puts_a_password_on_a_command_line(production, staging):
    """Every host's user data (scripts, units, Compose files) of every environment."""
    import re

    from core.settings import ROLES
    from tests.provisioning.conftest import render_host

    texts = {f"{settings.environment}/{host}": render_host(settings, host)
             for settings in (production, staging)
             for role in ROLES for host in settings.host_names(role)}
    found = [(where, what) for where, text in texts.items()
             for what, pattern in COMMAND_LINE_SECRETS.items() if re.search(pattern, text)]
    assert found == []


@pytest.mark.parametrize("line", [
    "curl -u elastic:$PASSWORD https://x", "curl --user \"elastic:$$P\" https://x",
    "psql --password=abc", "mysql -p$DB_PASSWORD", "curl https://elastic:s3cret@host:9200/",
    "env PGPASSWORD=$P psql -h db", "env A=1 ES_PASSWORD=x filebeat"])
def test_the_scan_catches_each_way_a_password_reaches_a_command_line(line):
    import re

    assert any(re.search(pattern, f" {line}") for pattern in COMMAND_LINE_SECRETS.values())


def test_the_elasticsearch_health_check_passes_the_password_on_stdin(cloud_configs, tmp_path):
    """Run as the container's /bin/sh (dash) would, with a curl that reports what it got."""
    compose = yaml.safe_load(written_file(cloud_configs["log"], "/opt/logging/compose.yaml")[
        "content"])
    kind, command = compose["services"]["elasticsearch"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    fake_command(tmp_path, "curl", 'printf "%s\\n" "$*" >"$0.args"\ncat >"$0.stdin"\n')
    shell = require_tool("dash")
    subprocess.run([shell, "-c", command.replace("$$", "$")], check=True,
                   env={"PATH": f"{tmp_path}:/usr/bin:/bin", "ELASTIC_PASSWORD": "pw-4711"})
    arguments = (tmp_path / "curl.args").read_text()
    assert "pw-4711" not in arguments and "--config -" in arguments
    assert "https://localhost:9200/" in arguments and "--cacert" in arguments
    assert (tmp_path / "curl.stdin").read_text() == 'user = "elastic:pw-4711"\n'
