"""Every host's user data, checked by the tools that read it in production where they exist
here: cloud-init, Caddy, PostgreSQL, systemd, the Compose schema, the host scripts."""
from __future__ import annotations

import ast
import fnmatch
import gzip
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from core.settings import ROLES, load_environment
from provisioning import images, logging_stack, parameters, user_data
from provisioning.caddy import MINIMUM_CADDY_VERSION, UPSTREAMS_ID
from provisioning.cloud_config import (FILES_DIR, CloudConfig, env_file, file_text, host_text,
                                       without_comment_lines)
from tests import tools
from tests.tools import require_tool
from tests.provisioning.conftest import (VOLUME_ID, boot_step_files, boot_steps, render_host,
                                         written_file)
from tests.provisioning.postgres_server import free_port

# EC2 accepts 16 KB of user data; Terraform gzips it (modules/host.py). Python's gzip stands
# in for Terraform's; the margin covers the difference and NFS-01's volume reference.
EC2_USER_DATA_LIMIT = 16 * 1024
SIZE_MARGIN = 2 * 1024

# Host path -> the file in provisioning/files/ it must be, byte for byte.
EMBEDDED = {
    "/usr/local/sbin/install-packages": "install-packages.sh",
    "/usr/local/sbin/pull-images": "pull-images.sh",
    "/usr/local/bin/app-deploy": "app-deploy.sh",
    "/usr/local/sbin/app-first-boot": "app-first-boot.sh",
    "/usr/local/sbin/ssm-parameter": "ssm_parameter.py",
    "/usr/local/sbin/registry-login": "registry_login.py",
    "/usr/local/lib/health-agent/health_agent.py": "health_agent.py",
    "/usr/local/sbin/db-setup": "db-setup.sh",
    "/usr/local/sbin/db-backup": "db-backup.sh",
    "/usr/local/sbin/db-backup-metrics": "backup_metrics.py",
    "/usr/local/sbin/nfs-volume": "nfs-volume.sh",
    "/usr/local/sbin/log-stack": "log-stack.sh",
    "/usr/local/lib/platform/load-defaults.sh": "lib/load-defaults.sh",
    "/usr/local/sbin/boot-step": "boot-step.sh",
    "/usr/local/sbin/cert-sync": "cert_sync.py",
}
ROLE_FILES = {
    # Production has two LBs: they share the certificates through S3.
    "lb": {"/usr/local/sbin/install-packages", "/usr/local/sbin/pull-images",
           "/etc/docker/daemon.json", "/etc/caddy/caddy.json", "/usr/local/sbin/cert-sync",
           "/etc/systemd/system/cert-sync.service", "/etc/systemd/system/cert-sync.timer"},
    "app": {"/usr/local/sbin/install-packages", "/usr/local/sbin/pull-images",
            "/etc/docker/daemon.json", "/usr/local/bin/app-deploy",
            "/usr/local/sbin/app-first-boot", "/usr/local/sbin/ssm-parameter",
            "/usr/local/sbin/registry-login",
            "/usr/local/lib/health-agent/health_agent.py",
            "/usr/local/lib/platform/load-defaults.sh",
            "/etc/tmpfiles.d/app.conf", "/etc/app/deploy.env", "/etc/app/app.env",
            "/etc/systemd/system/health-agent.service", "/etc/filebeat/filebeat.yml",
            "/etc/systemd/system/filebeat.service", "/usr/local/sbin/filebeat-ca-refresh",
            "/etc/systemd/system/filebeat-ca-refresh.service",
            "/etc/systemd/system/filebeat-ca-refresh.timer"},
    "db": {"/usr/local/sbin/install-packages", "/usr/local/sbin/ssm-parameter",
           "/usr/local/sbin/db-setup", "/usr/local/sbin/db-backup", "/etc/db/backup.env",
           "/usr/local/lib/platform/load-defaults.sh",
           "/etc/db/postgresql.conf", "/etc/db/pg_hba.conf", "/usr/local/sbin/db-backup-metrics",
           "/etc/pgbackrest/pgbackrest.conf", "/etc/systemd/system/mnt-backups.mount",
           *(f"/etc/systemd/system/{unit}" for unit in (
               "db-backup@.service", "db-backup-check.service", "db-backup-metrics.service",
               "db-backup-full.timer", "db-backup-diff.timer", "db-backup-check.timer",
               "db-backup-metrics.timer"))},
    "nfs": {"/usr/local/sbin/install-packages", "/usr/local/sbin/nfs-volume",
            "/etc/exports.d/backups.exports", "/etc/nfs.conf.d/60-platform.conf",
            "/etc/systemd/system/nfs-server.service.d/60-backup-volume.conf"},
    "log": {"/usr/local/sbin/install-packages", "/usr/local/sbin/pull-images",
            "/etc/docker/daemon.json", "/usr/local/sbin/ssm-parameter",
            "/usr/local/sbin/log-stack", "/etc/logging/log-stack.env",
            "/usr/local/lib/platform/load-defaults.sh",
            "/etc/sysctl.d/60-elasticsearch.conf", "/opt/logging/compose.yaml",
            "/opt/logging/ilm-policy.json", "/opt/logging/index-template.json",
            "/opt/logging/writer-role.json", "/opt/logging/data-view.json"},
}


def all_hosts():
    for environment in ("production", "staging"):
        settings = load_environment(environment)
        for role in ROLES:
            for name in settings.host_names(role):
                yield pytest.param(settings, name, id=f"{environment}-{name}")


def env_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


# --- what every host's user data must be ---------------------------------------------------

@pytest.mark.parametrize("settings, host", all_hosts())
def test_cloud_init_accepts_the_user_data(settings, host, tmp_path):
    cloud_init = require_tool("cloud-init")
    document = tmp_path / "user-data.yaml"
    document.write_text(render_host(settings, host))

    result = subprocess.run([cloud_init, "schema", "--config-file", str(document)],
                            capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_cloud_init_schema_would_catch_a_broken_document(tmp_path):
    """The check above is not a rubber stamp: the same tool rejects a malformed file."""
    cloud_init = require_tool("cloud-init")
    document = tmp_path / "broken.yaml"
    document.write_text("#cloud-config\nwrite_files:\n- path: /x\n  permissions: 644\n")

    result = subprocess.run([cloud_init, "schema", "--config-file", str(document)],
                            capture_output=True, text=True)

    assert result.returncode != 0


@pytest.mark.parametrize("settings, host", all_hosts())
def test_the_user_data_fits_ec2s_limit_once_gzipped(settings, host):
    text = render_host(settings, host).encode()

    compressed = len(gzip.compress(text, compresslevel=6, mtime=0))

    assert compressed <= EC2_USER_DATA_LIMIT - SIZE_MARGIN, (host, len(text), compressed)


@pytest.mark.parametrize("settings, host", all_hosts())
def test_the_user_data_is_a_pure_function_of_the_settings(settings, host, monkeypatch):
    """No secret generated at synthesis, nothing read from the synthesizing machine."""
    first = render_host(settings, host)
    for name in ("DB_PASSWORD", "ES_PASSWORD", "ELASTIC_PASSWORD", "AWS_SECRET_ACCESS_KEY",
                 "PGPASSWORD"):
        monkeypatch.setenv(name, f"canary-{name}-e1f2a3")

    second = render_host(settings, host)

    assert second == first
    assert "canary-" not in second


@pytest.mark.parametrize("settings, host", all_hosts())
def test_no_secret_is_written_in_the_user_data(settings, host):
    text = render_host(settings, host)
    document = yaml.safe_load(text)

    assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY", text)
    for entry in document["write_files"]:
        if entry["path"].endswith(".env"):
            for key, value in env_values(entry["content"]).items():
                if key.endswith("_KEY_ID"):
                    assert value.startswith("alias/"), (key, value)  # a KMS key's name
                elif re.search("PASSWORD|SECRET|KEY", key):
                    # Only the names of SSM parameters, never a value.
                    assert key.endswith("_PARAMETER") and value.startswith(
                        f"/{settings.project}/{settings.environment}/"), (key, value)
    assert "DB_PASSWORD=" not in " ".join(str(c) for c in boot_steps(document))


@pytest.mark.parametrize("role", ROLES)
def test_each_role_writes_its_files_and_scripts_verbatim(cloud_configs, role):
    config = cloud_configs[role]
    steps = {entry["path"] for entry in boot_step_files(config)}
    paths = [entry["path"] for entry in config["write_files"] if entry["path"] not in steps]

    assert set(paths) == ROLE_FILES[role] | {"/usr/local/sbin/boot-step"}
    assert len(paths) == len(set(paths)) and steps
    for entry in config["write_files"]:
        assert entry["owner"] == "root:root"
        if entry["path"] in EMBEDDED:
            assert entry["content"] == host_text(EMBEDDED[entry["path"]]), entry["path"]
        executable = entry["path"].startswith(("/usr/local/bin/", "/usr/local/sbin/",
                                               "/var/lib/cloud/scripts/per-instance/"))
        assert entry["permissions"] == ("0755" if executable else "0644"), entry["path"]


@pytest.mark.parametrize("role", ROLES)
def test_packages_are_installed_first_by_the_retrying_installer(cloud_configs, role):
    config = cloud_configs[role]
    assert boot_steps(config)[0][0] == "install-packages"
    assert config["hostname"] == user_data_host(role).lower()
    assert "packages" not in config and "package_update" not in config


def user_data_host(role: str) -> str:
    return load_environment("production").host_names(role)[0]


def images_in(text: str) -> set[str]:
    return set(re.findall(r"(?:docker\.elastic\.co/[\w/.-]+|(?<![/\w])caddy):[\w.-]+", text))


def test_every_image_is_pinned_to_a_version(rendered):
    everything = "\n".join(rendered.values())

    found = images_in(everything)

    assert found == {images.CADDY_IMAGE, images.ELASTICSEARCH_IMAGE, images.KIBANA_IMAGE,
                     images.FILEBEAT_IMAGE}
    for image in found:
        assert re.search(r":\d+\.\d+\.\d+$", image), image
    assert images.ELASTIC_VERSION.startswith("8.")
    version = tuple(int(p) for p in images.CADDY_IMAGE.split(":")[1].split("."))
    assert version >= tuple(int(p) for p in MINIMUM_CADDY_VERSION.split(".")) and version[0] == 2
    assert images.POSTGRES_PACKAGE == "postgresql-16"


# --- LB-01 ---------------------------------------------------------------------------------

def test_caddy_proxies_to_every_app_host_through_their_health_agents(cloud_configs,
                                                                     production):
    caddy = json.loads(written_file(cloud_configs["lb"], "/etc/caddy/caddy.json")["content"])

    assert caddy == user_data.load_balancer_config(production)
    assert caddy["admin"]["listen"] == "localhost:2019"
    (route,) = caddy["apps"]["http"]["servers"]["app"]["routes"]
    (proxy,) = route["handle"]
    assert proxy["@id"] == UPSTREAMS_ID
    assert [u["dial"] for u in proxy["upstreams"]] == [
        "10.0.2.20:5000", "10.0.2.21:5000", "10.0.2.22:5000"]
    active = proxy["health_checks"]["active"]
    assert (active["port"], active["uri"]) == (5001, "/health")
    assert caddy["apps"]["http"]["servers"]["app"]["listen"] == [":80"]  # no domain set


def test_caddy_runs_from_the_pinned_image_with_its_config_and_admin_on_localhost(cloud_configs):
    (run,) = [step for step in boot_steps(cloud_configs["lb"]) if "run" in step[:2]]

    assert run[:2] == ["docker", "run"]
    assert ["--network", "host"] == run[run.index("--network"):][:2]
    assert ["--restart", "unless-stopped"] == run[run.index("--restart"):][:2]
    assert "/etc/caddy:/etc/caddy:ro" in run
    image_at = run.index(images.CADDY_IMAGE)
    assert run[image_at + 1:] == ["caddy", "run", "--config", "/etc/caddy/caddy.json",
                                  "--resume"]
    assert ["pull-images", images.CADDY_IMAGE] in boot_steps(cloud_configs["lb"])


@pytest.mark.parametrize("domain", [None, "app.example.com"])
def test_caddy_validates_the_load_balancer_config(production, tmp_path, domain):
    """With the Caddy LB-01 runs, the very configuration it gets."""
    caddy = tools.caddy()
    settings = production.model_copy(update={"domain": domain,
                                             "acme_email": "ops@example.com"})
    config = tmp_path / "caddy.json"
    config.write_text(json.dumps(user_data.load_balancer_config(settings)))

    result = subprocess.run([caddy, "validate", "--config", str(config)], capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


# --- APP hosts -----------------------------------------------------------------------------

def test_app_deploy_settings_match_the_load_balancers_health_checks(cloud_configs):
    deploy = env_values(written_file(cloud_configs["app"], "/etc/app/deploy.env")["content"])
    caddy = json.loads(written_file(cloud_configs["lb"], "/etc/caddy/caddy.json")["content"])
    active = caddy["apps"]["http"]["servers"]["app"]["routes"][0]["handle"][0][
        "health_checks"]["active"]

    def seconds(duration: str) -> float:
        return float(duration.removesuffix("s"))

    out_of_the_pool = seconds(active["interval"]) * active["fails"] + seconds(active["timeout"])
    assert int(deploy["DRAIN_SECONDS"]) == out_of_the_pool + user_data.IN_FLIGHT_SECONDS
    assert deploy["DRAIN_FILE"] == "/run/app/drain"
    assert (deploy["DB_HOST"], deploy["DB_PORT"], deploy["DB_NAME"], deploy["DB_USER"]) == (
        "10.0.2.10", "5432", "app", "app")
    assert deploy["DB_PASSWORD_PARAMETER"] == "/webapp/production/db/password"
    assert deploy["AWS_REGION"] == "eu-west-1"
    assert deploy["DEPLOYED_IMAGE_PARAMETER"] == "/webapp/production/app/image"
    assert deploy["CONFIGURED_IMAGE"] == ""


def test_the_app_starts_at_first_boot_from_the_deployed_else_the_configured_image(production):
    image = "registry.example.com/team/app:1.4.2"
    settings = production.model_copy(update={
        "app": production.app.model_copy(update={"image": image})})
    config = yaml.safe_load(render_host(settings, "APP-1"))
    steps = boot_steps(config)

    assert steps[-1] == ["env", "PASSWORD_WAIT_SECONDS=1800", "HEALTH_TIMEOUT=1800",
                         "app-first-boot"]
    deploy = env_values(written_file(config, "/etc/app/deploy.env")["content"])
    assert deploy["CONFIGURED_IMAGE"] == image
    assert ["systemctl", "enable", "--now", "health-agent.service"] in steps
    assert steps.index(["systemctl", "enable", "--now", "health-agent.service"]) < len(
        steps) - 1


def test_without_a_configured_image_the_host_waits_for_the_rolling_update(cloud_configs,
                                                                          production):
    """The shipped configuration: the pipeline's rollout starts the image it pushed to ECR;
    a first boot never tries to pull an image that was never built (app-first-boot)."""
    assert production.app.image is None
    assert not any("app-deploy" in command for command in boot_steps(cloud_configs["app"]))
    written_file(cloud_configs["app"], "/usr/local/sbin/registry-login")


def test_filebeat_ships_the_app_container_logs_to_log_01(cloud_configs):
    filebeat = yaml.safe_load(written_file(cloud_configs["app"],
                                           "/etc/filebeat/filebeat.yml")["content"])

    output = filebeat["output.elasticsearch"]
    assert output == {"hosts": ["https://10.0.2.12:9200"], "username": "filebeat_writer",
                      "ssl.certificate_authorities": ["/usr/share/filebeat/certs/ca.crt"],
                      "ssl.verification_mode": "full",
                      "password": "${ES_PASSWORD}", "index": "app-logs-production"}
    (source,) = filebeat["filebeat.inputs"]
    assert source["type"] == "filestream"
    assert source["paths"] == ["/var/lib/docker/containers/*/*-json.log"]
    assert source["parsers"] == [{"container": {"stream": "all", "format": "docker"}}]
    processors = {next(iter(p)): next(iter(p.values())) for p in filebeat["processors"]}
    assert processors["add_fields"]["fields"] == {"environment": "production",
                                                  "host": "APP-1", "role": "app"}
    assert processors["decode_json_fields"]["target"] == "app"
    assert filebeat["setup.ilm.enabled"] is False and filebeat["setup.template.enabled"] is False
    # The writer may append to exactly the data stream Filebeat names.
    (grant,) = logging_stack.writer_role()["indices"]
    assert any(fnmatch.fnmatch(output["index"], pattern) for pattern in grant["names"])
    assert any(fnmatch.fnmatch(output["index"], pattern)
               for pattern in logging_stack.index_template()["index_patterns"])


def test_filebeat_runs_pinned_without_the_docker_socket(cloud_configs, production):
    unit = written_file(cloud_configs["app"], "/etc/systemd/system/filebeat.service")["content"]

    assert "docker.sock" not in unit
    assert f" {images.FILEBEAT_IMAGE}\n" in unit
    assert (f"ssm-parameter get {parameters.filebeat_password(production)} --region eu-west-1 "
            "--env ES_PASSWORD --output /run/filebeat/env") in unit
    assert "/var/lib/docker/containers:/var/lib/docker/containers:ro" in unit
    assert "--log-driver journald" in unit


def test_systemd_accepts_every_unit(cloud_configs, tmp_path):
    analyze = require_tool("systemd-analyze")
    units = []
    for role in ("app", "db"):
        for entry in cloud_configs[role]["write_files"]:
            if entry["path"].startswith("/etc/systemd/system/"):
                unit = tmp_path / entry["path"].rsplit("/", 1)[1]
                unit.write_text(entry["content"])
                units.append(str(unit))
    assert len(units) == 4 + 8

    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)

    # What exists on the hosts but not on this machine is all it may miss.
    absent_here = re.compile(r"Command (/usr/local/s?bin/[\w-]+|/usr/bin/docker) is not "
                             r"executable: No such file or directory$|Unit docker.service "
                             r"not found\.$")
    problems = [line for line in result.stderr.splitlines()
                if not absent_here.search(line)]
    assert problems == [], result.stderr


@pytest.mark.e2e
def test_the_health_agent_units_command_line_answers_the_load_balancer(cloud_configs, tmp_path):
    """The unit's exact ExecStart, with only the port and the interpreter swapped."""
    unit = written_file(cloud_configs["app"], "/etc/systemd/system/health-agent.service")
    command = re.search(r"^ExecStart=(.+)$", unit["content"], re.M)[1].split()
    assert command[:2] == ["/usr/bin/python3", "/usr/local/lib/health-agent/health_agent.py"]
    port, drain = free_port(), tmp_path / "drain"
    options = dict(zip(command[2::2], command[3::2]))
    assert options == {"--port": "5001", "--drain-file": "/run/app/drain",
                       "--app-health-url": "http://127.0.0.1:5000/health",
                       "--app-timeout": "0.8"}
    options.update({"--port": str(port), "--drain-file": str(drain),
                    "--app-health-url": f"http://127.0.0.1:{free_port()}/health"})
    agent = tmp_path / "health_agent.py"
    agent.write_text(written_file(cloud_configs["app"], command[1])["content"])
    process = subprocess.Popen([sys.executable, str(agent),
                                *[part for pair in options.items() for part in pair]],
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
        assert answer.value.code == 503  # no app behind it: the host is out of the pool
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- DB-01 ---------------------------------------------------------------------------------

@pytest.mark.e2e
def test_postgresql_parses_pg_hba_and_it_admits_only_the_private_subnet(postgres_server,
                                                                        cloud_configs):
    text = written_file(cloud_configs["db"], "/etc/db/pg_hba.conf")["content"]
    hba = postgres_server.data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(text)  # read by the view below, never loaded: the test server is unchanged
    try:
        rules = postgres_server.psql(
            "SELECT type, array_to_string(database, ','), array_to_string(user_name, ','), "
            "coalesce(address, ''), coalesce(netmask, ''), auth_method, coalesce(error, '') "
            "FROM pg_hba_file_rules ORDER BY line_number")
    finally:
        hba.write_text(original)

    # The test server has no certificate; DB-01 has Ubuntu's (ssl = on in its config).
    no_ssl_here = "hostssl record cannot match because SSL is disabled"
    assert [line.removesuffix(no_ssl_here) for line in rules.splitlines()] == [
        "local|all|postgres|||peer|",
        "local|all|all|||peer|",
        "host|all|all|127.0.0.1|255.255.255.255|scram-sha-256|",
        "host|all|all|::1|ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff|scram-sha-256|",
        "hostssl|app|app|10.0.2.0|255.255.255.0|scram-sha-256|",
    ]


@pytest.mark.e2e
def test_postgresql_accepts_every_setting_of_db_01(postgres_server, cloud_configs):
    text = written_file(cloud_configs["db"], "/etc/db/postgresql.conf")["content"]
    fragment = postgres_server.data / "platform-test.conf"
    fragment.write_text(text)
    conf = postgres_server.data / "postgresql.conf"
    original = conf.read_text()
    conf.write_text(original + f"\ninclude '{fragment}'\n")
    try:
        settings = postgres_server.psql(
            f"SELECT name, setting, coalesce(error, '') FROM pg_file_settings "
            f"WHERE sourcefile = '{fragment}' ORDER BY seqno")
    finally:
        conf.write_text(original)
        fragment.unlink()

    parsed = {name: (value, error) for name, value, error in
              (line.split("|") for line in settings.splitlines())}
    assert parsed["listen_addresses"][0] == "localhost,10.0.2.10"
    assert parsed["password_encryption"][0] == "scram-sha-256"
    assert parsed["ssl"][0] == "on"
    # Unknown names or malformed values would be errors; postmaster-only settings are not
    # applied by a reload, which is all this view can say about them.
    assert {error for _, error in parsed.values()} <= {"", "setting could not be applied"}


def test_db_01_backs_up_full_weekly_differential_daily_then_checks(cloud_configs):
    config = cloud_configs["db"]
    backup = env_values(written_file(config, "/etc/db/backup.env")["content"])
    timers = {name: written_file(config, f"/etc/systemd/system/db-backup-{name}.timer")[
        "content"] for name in ("full", "diff", "check")}

    assert backup["NFS_SOURCE"] == "10.0.2.11:/srv/nfs/backups"
    assert backup["RETENTION_DAYS"] == "14" and backup["DB_NAME"] == "app"
    calendars = {name: re.search(r"^OnCalendar=(.+)$", text, re.M)[1]
                 for name, text in timers.items()}
    assert calendars == {"full": "Sun *-*-* 03:00:00 UTC",
                         "diff": "Mon,Tue,Wed,Thu,Fri,Sat *-*-* 03:00:00 UTC",
                         "check": "*-*-* 05:00:00 UTC"}
    assert all("Persistent=true" in text for text in timers.values())
    analyze = require_tool("systemd-analyze")
    for expression in calendars.values():
        result = subprocess.run([analyze, "calendar", expression], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
    assert "Next elapse: Sun " in subprocess.run(
        [analyze, "calendar", calendars["full"]], capture_output=True, text=True).stdout
    (start,) = [step for step in boot_steps(config)
                if step[:3] == ["systemctl", "enable", "--now"] and "db-backup-full.timer" in step]
    assert set(start[3:]) == {"db-backup-full.timer", "db-backup-diff.timer",
                              "db-backup-check.timer", "db-backup-metrics.timer"}


def test_db_01_installs_its_postgresql_config_after_the_package_then_sets_up(cloud_configs):
    ordered = boot_steps(cloud_configs["db"])

    assert ordered[0] == ["install-packages", "postgresql-16", "pgbackrest", "nfs-common",
                          "python3-boto3"]
    assert ["systemctl", "restart", "postgresql@16-main.service"] in ordered
    # NFS-01 mounted, configuration in place, then PostgreSQL (archiving) and the stanza.
    restart = ordered.index(["systemctl", "restart", "postgresql@16-main.service"])
    assert ordered.index(["systemctl", "enable", "--now", "mnt-backups.mount"]) < restart
    assert ordered[restart - 2][-1] == "/etc/postgresql/16/main/conf.d/60-platform.conf"
    assert ordered[restart - 1][-1] == "/etc/postgresql/16/main/pg_hba.conf"
    assert ordered[restart + 1:restart + 3] == [["db-setup"], ["db-backup", "init"]]


def test_max_connections_leave_room_for_every_app_hosts_pool(production):
    many = production.model_copy(update={"app": production.app.model_copy(
        update={"host_count": 40})})

    assert "max_connections = 100\n" in user_data.postgresql_conf(production)
    assert f"max_connections = {40 * 8 + 20}\n" in user_data.postgresql_conf(many)


# --- NFS-01 --------------------------------------------------------------------------------

def test_nfs_01_exports_the_backup_directory_to_db_01_only(cloud_configs):
    config = cloud_configs["nfs"]
    exports = written_file(config, "/etc/exports.d/backups.exports")["content"]

    (line,) = [line for line in exports.splitlines() if not line.startswith("#")]
    path, client = line.split()
    assert path == "/srv/nfs/backups"
    address, options = client.split("(")
    assert address == "10.0.2.10/32"
    assert set(options.rstrip(")").split(",")) == {
        "rw", "sync", "no_subtree_check", "sec=sys", "all_squash", "anonuid=34",
        "anongid=34", "mp=/srv/nfs"}
    assert written_file(config, "/etc/nfs.conf.d/60-platform.conf")["content"] == (
        "[nfsd]\nvers3=n\n")
    assert "RequiresMountsFor=/srv/nfs" in written_file(
        config, "/etc/systemd/system/nfs-server.service.d/60-backup-volume.conf")["content"]


def test_nfs_01_prepares_the_volume_it_is_given(cloud_configs):
    steps = boot_steps(cloud_configs["nfs"])

    assert steps[1] == ["env", f"VOLUME_ID={VOLUME_ID}", "MOUNT_POINT=/srv/nfs",
                        "BACKUP_SUBDIR=backups", "BACKUP_OWNER=34:34", "nfs-volume"]
    assert steps[-1] == ["exportfs", "-ra"]


# --- LOG-01 --------------------------------------------------------------------------------

def test_the_compose_file_is_valid_compose(cloud_configs, tmp_path):
    compose = tmp_path / "compose.yaml"
    compose.write_text(written_file(cloud_configs["log"], "/opt/logging/compose.yaml")[
        "content"])

    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                             "vendor.compose-spec", str(compose)], capture_output=True,
                            text=True)

    assert result.returncode == 0, result.stdout + result.stderr


def test_elasticsearch_and_kibana_run_pinned_secured_and_sized_at_boot(cloud_configs):
    compose = yaml.safe_load(written_file(cloud_configs["log"],
                                          "/opt/logging/compose.yaml")["content"])

    elasticsearch = compose["services"]["elasticsearch"]
    kibana = compose["services"]["kibana"]
    assert elasticsearch["image"] == images.ELASTICSEARCH_IMAGE
    assert kibana["image"] == images.KIBANA_IMAGE
    environment = elasticsearch["environment"]
    assert environment["xpack.security.enabled"] == "true"
    assert environment["discovery.type"] == "single-node"
    assert environment["ES_JAVA_OPTS"] == "-Xms${ES_HEAP_MB}m -Xmx${ES_HEAP_MB}m"
    assert environment["ELASTIC_PASSWORD"] == "${ELASTIC_PASSWORD:?}"
    assert kibana["environment"]["ELASTICSEARCH_USERNAME"] == "kibana_system"
    assert kibana["environment"]["NODE_OPTIONS"] == "--max-old-space-size=${KIBANA_HEAP_MB}"
    assert kibana["depends_on"] == {"elasticsearch": {"condition": "service_healthy"}}
    assert elasticsearch["ports"] == ["9200:9200"] and kibana["ports"] == ["5601:5601"]
    assert all(s["restart"] == "unless-stopped" for s in compose["services"].values())


@pytest.mark.parametrize("environment, days", [("production", "30d"), ("staging", "7d")])
def test_logs_older_than_the_retention_are_deleted_by_the_lifecycle_policy(environment, days):
    settings = load_environment(environment)
    config = yaml.safe_load(render_host(settings, "LOG-01"))

    policy = json.loads(written_file(config, "/opt/logging/ilm-policy.json")["content"])
    template = json.loads(written_file(config, "/opt/logging/index-template.json")["content"])

    phases = policy["policy"]["phases"]
    assert phases["delete"] == {"min_age": days, "actions": {"delete": {}}}
    assert phases["hot"]["actions"]["rollover"]["max_age"] == "1d"
    assert template["template"]["settings"]["index.lifecycle.name"] == "app-logs"
    assert template["template"]["settings"]["index.number_of_replicas"] == 0
    assert template["data_stream"] == {}
    assert fnmatch.fnmatch(logging_stack.data_stream(settings), template["index_patterns"][0])


def test_the_log_writer_may_only_append_logs(cloud_configs):
    role = json.loads(written_file(cloud_configs["log"], "/opt/logging/writer-role.json")[
        "content"])

    assert role == {"cluster": ["monitor", "read_ilm", "read_pipeline"],
                    "indices": [{"names": ["app-logs-*"], "privileges": [
                        "create_doc", "auto_configure", "view_index_metadata"]}]}


def test_log_01_starts_the_stack_with_its_secrets_in_ssm(cloud_configs):
    config = cloud_configs["log"]
    settings = env_values(written_file(config, "/etc/logging/log-stack.env")["content"])

    assert settings == {"PARAMETER_PREFIX": "/webapp/production/logs",
                        "SSM_KEY_ID": "alias/webapp-production-parameters",
                        "ES_ADDRESS": "10.0.2.12", "CERT_DIR": "/etc/logging/certs",
                        "CA_PARAMETER": "/webapp/production/log-ca/certificate",
                        "AWS_REGION": "eu-west-1", "STACK_DIR": "/opt/logging"}
    assert boot_steps(config)[-1] == ["log-stack", "up"]
    assert written_file(config, "/etc/sysctl.d/60-elasticsearch.conf")["content"] == (
        "vm.max_map_count = 262144\n")


# --- the renderer itself -------------------------------------------------------------------

def test_render_refuses_what_it_cannot_build(production):
    with pytest.raises(ValueError, match="unknown role"):
        user_data.render(production, "cache", "CACHE-01")
    with pytest.raises(ValueError, match="not a app host"):
        user_data.render(production, "app", "APP-9")
    with pytest.raises(ValueError, match="nfs_volume_id"):
        user_data.render(production, "nfs", "NFS-01")
    with pytest.raises(ValueError, match="nfs_volume_id"):
        user_data.render(production, "db", "DB-01", nfs_volume_id=VOLUME_ID)


def test_env_files_refuse_values_the_scripts_would_misread():
    assert env_file({"A": 1, "B": "x/y"}) == "A=1\nB=x/y\n"
    for value in ("two words", "$HOME", "a\nb", '"quoted"'):
        with pytest.raises(ValueError):
            env_file({"A": value})


def test_a_path_cannot_be_written_twice():
    config = CloudConfig(hostname="x")
    config.add_file("/etc/x", "1\n")
    with pytest.raises(ValueError, match="written twice"):
        config.add_file("/etc/x", "2\n")


def test_the_command_line_prints_a_hosts_user_data(capsys):
    assert user_data.main(["staging", "APP-2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("#cloud-config\nhostname: app-2\n")
    assert user_data.main(["staging", "APP-7"]) == 2


SCRIPTS = sorted(p.name for p in FILES_DIR.iterdir() if p.is_file()
                 and p.read_text(encoding="utf-8").startswith("#!"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_loses_only_its_comment_lines_on_the_way_to_a_host(name):
    original, sent = file_text(name), host_text(name)
    if "python" in original.splitlines()[0]:
        assert ast.dump(ast.parse(sent)) == ast.dump(ast.parse(original))
    else:
        subprocess.run(["bash", "-n", "-c", sent], check=True)
        removed = [line for line in original.splitlines() if line not in sent.splitlines()]
        assert all(line.lstrip().startswith("#") for line in removed), removed
        directives = [line for line in original.splitlines() if "# shellcheck" in line]
        assert all(line in sent.splitlines() for line in directives)


def test_comment_lines_inside_a_python_string_or_a_here_document_stay():
    python = '#!/usr/bin/env python3\n# why\nTEXT = """\n# data\n"""\nx = 1  # kept\n'
    shell = "#!/bin/sh\n# why\ncat <<'EOF'\n# data\nEOF\n"

    assert without_comment_lines(python) == (
        '#!/usr/bin/env python3\nTEXT = """\n# data\n"""\nx = 1  # kept\n')
    assert without_comment_lines(shell) == shell
    assert without_comment_lines("#!/bin/sh\n  # why\necho hi\n") == "#!/bin/sh\necho hi\n"
    assert without_comment_lines("plain # text\n# line\n") == "plain # text\n# line\n"
