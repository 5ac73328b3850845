"""Elasticsearch's TLS: LOG-01's first-boot CA and certificate, checked by the real openssl,
and the generated configurations that use them."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest
import yaml

from provisioning import logging_stack
from tests.provisioning.conftest import boot_steps, fake_command, run_script, written_file
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


# --- a replaced LOG-01's new CA reaches Filebeat ------------------------------------------

def ca_refresh(tmp_path, clean_env, *, active=True, in_ssm="CA-2\n", ssm_fails=False):
    """The real filebeat-ca-refresh as the APP host's timer runs it (its unit's command
    line), with stand-ins for systemctl and ssm-parameter; Filebeat started with CA-1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ca_file = run_dir / "ca.crt"
    ca_file.write_text("CA-1\n")
    fake_command(bin_dir, "systemctl", f'echo "systemctl $*" >> {log}\n'
                 f'[[ $1 != is-active ]] || exit {0 if active else 3}\n')
    fake_command(bin_dir, "ssm-parameter", f'echo "ssm-parameter $*" >> {log}\n'
                 + ("exit 1\n" if ssm_fails else
                    f'[[ $1 == get && $3 == --region && $5 == --output ]]\n'
                    f'printf %b {in_ssm!r} > "$6"\n'))
    return ca_file, log, bin_dir


def run_ca_refresh(tmp_path, clean_env, cloud_configs, **kwargs):
    ca_file, log, bin_dir = ca_refresh(tmp_path, clean_env, **kwargs)
    unit = written_file(cloud_configs["app"],
                        "/etc/systemd/system/filebeat-ca-refresh.service")["content"]
    (command,) = [line.split("=", 1)[1].split() for line in unit.splitlines()
                  if line.startswith("ExecStart=")]
    assert command[0] == "/usr/local/sbin/filebeat-ca-refresh"
    assert command[1:3] == [CA_PARAMETER, "eu-west-1"]
    assert command[3:] == [logging_stack.FILEBEAT_CA_HOST, "filebeat.service"]
    script = tmp_path / "filebeat-ca-refresh"
    script.write_text(written_file(cloud_configs["app"],
                                   "/usr/local/sbin/filebeat-ca-refresh")["content"])
    env = {**clean_env, "PATH": f"{bin_dir}:{clean_env['PATH']}",
           "SSM_PARAMETER": str(bin_dir / "ssm-parameter")}
    result = subprocess.run(["bash", str(script), *command[1:3], str(ca_file), command[4]],
                            env=env, capture_output=True, text=True, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls, ca_file


def test_a_new_ca_in_ssm_restarts_filebeat(tmp_path, clean_env, cloud_configs):
    result, calls, ca_file = run_ca_refresh(tmp_path, clean_env, cloud_configs)
    assert result.returncode == 0, result.stderr
    assert calls[-1] == "systemctl try-restart filebeat.service"
    assert f"CA certificate in {CA_PARAMETER} changed: restarting filebeat.service" in (
        result.stdout)
    # Filebeat's own start fetches the new CA; nothing is left beside the old one.
    assert [p.name for p in ca_file.parent.iterdir()] == ["ca.crt"]


@pytest.mark.parametrize("case", ["unchanged", "empty", "filebeat-stopped", "ssm-fails"])
def test_filebeat_is_left_alone_otherwise(tmp_path, clean_env, cloud_configs, case):
    kwargs = {"unchanged": {"in_ssm": "CA-1\n"}, "empty": {"in_ssm": ""},
              "filebeat-stopped": {"active": False},
              "ssm-fails": {"ssm_fails": True}}[case]
    result, calls, _ = run_ca_refresh(tmp_path, clean_env, cloud_configs, **kwargs)
    assert not any("restart" in call for call in calls), calls
    assert result.returncode == (1 if case == "ssm-fails" else 0), result.stderr
    if case == "filebeat-stopped":
        assert calls == ["systemctl is-active --quiet filebeat.service"]


def test_the_ca_check_runs_every_few_minutes_from_the_first_boot(cloud_configs, tmp_path):
    config = cloud_configs["app"]
    timer = written_file(config, "/etc/systemd/system/filebeat-ca-refresh.timer")["content"]
    assert "OnUnitActiveSec=5min" in timer and "WantedBy=timers.target" in timer
    steps = [step for step in boot_steps(config) if "filebeat.service" in step]
    assert steps == [["systemctl", "enable", "--now", "--no-block", "filebeat.service",
                      "filebeat-ca-refresh.timer"]]
    analyze = require_tool("systemd-analyze")
    paths = []
    for name in ("filebeat-ca-refresh.service", "filebeat-ca-refresh.timer"):
        path = tmp_path / name
        path.write_text(written_file(config, f"/etc/systemd/system/{name}")["content"])
        paths.append(str(path))
    result = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines()
                if "/usr/local/sbin/filebeat-ca-refresh is not executable" not in line
                and "filebeat.service" not in line]
    assert problems == [], result.stderr
