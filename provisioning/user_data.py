"""Cloud-config user data for each role, generated from the environment's settings.

``render(settings, role, host_name)`` returns the cloud-config that turns a fresh Ubuntu 24.04
host into that host, with no manual step. It is plain text known at synthesis: the only
Terraform reference in any user data is NFS-01's volume ID. No secret is in it: hosts create
or read their secrets in SSM Parameter Store at run time (``provisioning/parameters.py``).

User data runs once, at the first boot; hosts ignore later changes (see docs/hosts.md).
Print one host's user data with::

    python -m provisioning.user_data production APP-1
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from core.settings import (APP_PORT, BACKUP_METRIC_NAMESPACE, HEALTH_AGENT_PORT, HTTP_PORT,
                           LB_HEALTH_PATH, LB_HEALTH_PORT, POSTGRES_PORT, ROLES, ConfigError,
                           Settings, load_environment)
from provisioning import images, logging_stack, parameters, pgbackrest
from provisioning.caddy import caddy_config
from provisioning.cloud_config import CloudConfig, env_file, host_text, template_text

# Caddy's active health check of each APP host's health agent. A drained host is out of the
# pool after one interval x fails (plus a probe's timeout); app-deploy waits that long plus
# the longest request (the reference app's statement timeout) before stopping a container.
HEALTH_INTERVAL_SECONDS = 2
HEALTH_TIMEOUT_SECONDS = 1
HEALTH_PASSES = 2
HEALTH_FAILS = 1
IN_FLIGHT_SECONDS = 5
# The agent must answer Caddy within its timeout, even when the app does not.
AGENT_APP_TIMEOUT_SECONDS = 0.8
CADDY_ADMIN = "localhost:2019"
# Caddy's storage on the LB hosts (the container's /data), and what of it the two LBs share.
CADDY_DATA = "/var/lib/caddy"
CERTIFICATE_PREFIX = "caddy/"
CERTIFICATE_SYNC_MINUTES = 5
# How often an APP host compares LOG-01's CA in SSM with the one Filebeat started with.
FILEBEAT_CA_CHECK_MINUTES = 5
# A new LB-02 waits this long for LB-01's first certificate before starting without it.
FIRST_CERTIFICATE_WAIT_SECONDS = 1800

DRAIN_FILE = "/run/app/drain"
APP_CONTAINER = "app"
APP_HEALTH_TIMEOUT_SECONDS = 120
APP_STOP_TIMEOUT_SECONDS = 30
APP_DB_POOL_SIZE = 8
# At first boot DB-01 may still be installing PostgreSQL: wait for it much longer.
FIRST_BOOT_WAIT_SECONDS = 1800

APP_DB_NAME = "app"
APP_DB_USER = "app"
NFS_ROOT = "/srv/nfs"
BACKUP_SUBDIR = "backups"
BACKUP_MOUNT = "/mnt/backups"
# Ubuntu's "backup" user and group (34:34) own the backups; every NFS client is mapped to it.
BACKUP_OWNER = "34:34"
# DB-01's NFS mount. NFS-01's export keeps Linux's default ``secure`` (requests from source
# ports below 1024 only, which only root can open on the client), so the client must not ask
# for ``noresvport``. Keeping ``secure`` rather than exporting ``insecure`` means no
# unprivileged process on an allowed address can speak NFS to NFS-01 as the export's user.
# soft, about 45 s (timeo x retrans): with NFS-01 gone, pgBackRest gets an error instead of
# hanging in the kernel, and WAL and backups still reach the S3 repository. Every file
# pgBackRest writes is checksummed and verified, so a write cut short is found, not trusted.
NFS_MOUNT_OPTIONS = "nfsvers=4.2,soft,timeo=150,retrans=3,resvport"
BACKUP_MOUNT_UNIT = "mnt-backups.mount"

SCRIPTS = "/usr/local/sbin"
DOCKER_DAEMON = {
    # Bounded container logs: Filebeat ships them, the disk must not fill up.
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "5"},
    # Containers keep running while unattended-upgrades restarts the Docker daemon.
    "live-restore": True,
}


def drain_seconds() -> int:
    """How long a drained host waits before its container may stop: see the constants."""
    return HEALTH_INTERVAL_SECONDS * HEALTH_FAILS + HEALTH_TIMEOUT_SECONDS + IN_FLIGHT_SECONDS


def load_balancer_config(settings: Settings, host_name: str = "LB-01") -> dict:
    """The Caddy configuration of one LB: every APP host, checked through its health agent.

    With two LBs, each also answers the NLB's health check itself, and LB-02 forwards ACME
    HTTP-01 challenges to LB-01, which obtains and renews the certificate they share; both
    solve HTTP-01 only, the one challenge that reaches LB-01 whichever LB the NLB picks.
    """
    names = settings.host_names("lb")
    if host_name not in names:
        raise ValueError(f"{host_name} is not a load balancer of {settings.environment}")
    two = len(names) > 1
    acme_peer = (f"{settings.private_ips('lb')[0]}:{HTTP_PORT}"
                 if settings.domain and host_name != names[0] else None)
    return caddy_config(
        [f"{address}:{APP_PORT}" for address in settings.private_ips("app")],
        domain=settings.domain, acme_email=settings.acme_email,
        health_port=HEALTH_AGENT_PORT, health_interval=f"{HEALTH_INTERVAL_SECONDS}s",
        health_timeout=f"{HEALTH_TIMEOUT_SECONDS}s", health_passes=HEALTH_PASSES,
        health_fails=HEALTH_FAILS, admin_listen=CADDY_ADMIN,
        health_listen=[f":{LB_HEALTH_PORT}"] if two else None, health_path=LB_HEALTH_PATH,
        acme_peer=acme_peer, http_challenge_only=two)


def render(settings: Settings, role: str, host_name: str, *,
           nfs_volume_id: Optional[str] = None,
           certificate_bucket: Optional[str] = None) -> str:
    """The cloud-config that turns a fresh Ubuntu host into ``host_name`` of ``role``.

    nfs_volume_id: NFS-01 only, the ID of its backup volume (a Terraform reference).
    certificate_bucket: the LBs only, when there are two: the bucket through which they
        share Caddy's certificates (a Terraform reference).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    if host_name not in settings.host_names(role):
        raise ValueError(f"{host_name} is not a {role} host of {settings.environment}")
    if (role == "nfs") != (nfs_volume_id is not None):
        raise ValueError("nfs_volume_id is required for NFS-01 and only for NFS-01")
    shares_certificates = role == "lb" and settings.load_balancer.count > 1
    if shares_certificates != (certificate_bucket is not None):
        raise ValueError("certificate_bucket is required for the load balancers when there "
                         "are two, and only then")
    config = CloudConfig(hostname=host_name.lower())
    config.add_script(f"{SCRIPTS}/install-packages", "install-packages.sh")
    if role == "lb":
        _load_balancer(settings, config, host_name, certificate_bucket)
    elif role == "app":
        _app_host(settings, config, host_name)
    elif role == "db":
        _database(settings, config)
    elif role == "nfs":
        _nfs_server(settings, config, nfs_volume_id)
    else:
        _log_server(settings, config)
    return config.render()


def _docker(config: CloudConfig) -> None:
    config.add_json("/etc/docker/daemon.json", DOCKER_DAEMON)
    config.add_script(f"{SCRIPTS}/pull-images", "pull-images.sh")


def _load_balancer(settings: Settings, config: CloudConfig, host_name: str,
                   certificate_bucket: Optional[str]) -> None:
    _docker(config)
    config.add_json("/etc/caddy/caddy.json", load_balancer_config(settings, host_name))
    packages = ["docker.io"]
    if certificate_bucket is not None:
        packages.append("python3-boto3")
        _certificate_sync(settings, config, certificate_bucket)
    config.step("install-packages", ["install-packages", *packages])
    config.step("pull-images", ["pull-images", images.CADDY_IMAGE])
    if certificate_bucket is not None:
        config.step("reload-systemd", ["systemctl", "daemon-reload"])
        sync = ["cert-sync", "pull", "--bucket", certificate_bucket,
                "--prefix", CERTIFICATE_PREFIX, "--root", f"{CADDY_DATA}/caddy",
                "--region", settings.region]
        if settings.domain and host_name != settings.host_names("lb")[0]:
            # LB-02 starts with LB-01's certificate rather than asking the CA for its own.
            sync += ["--wait-for", settings.domain,
                     "--wait-seconds", str(FIRST_CERTIFICATE_WAIT_SECONDS)]
        config.step("pull-certificates", sync, attempts=3, retry_seconds=30)
    # Host networking: Caddy binds 80/443 directly and its admin API stays on the host's
    # localhost, where the rolling update reaches it over SSM. --resume: after a restart
    # Caddy loads its last active config (upstreams changed through the admin API
    # included), not the file written at first boot. Its storage (certificates) is a host
    # folder, which cert-sync shares with the other LB.
    config.step("start-caddy", [
        "docker", "run", "--detach", "--name", "caddy", "--restart", "unless-stopped",
        "--network", "host", "--volume", "/etc/caddy:/etc/caddy:ro",
        "--volume", f"{CADDY_DATA}:/data", "--volume", "caddy-config:/config",
        images.CADDY_IMAGE, "caddy", "run", "--config", "/etc/caddy/caddy.json", "--resume"])
    if certificate_bucket is not None:
        config.step("start-certificate-sync",
                    ["systemctl", "enable", "--now", "cert-sync.timer"])


def _certificate_sync(settings: Settings, config: CloudConfig, bucket: str) -> None:
    config.add_script(f"{SCRIPTS}/cert-sync", "cert_sync.py")
    config.add_file("/etc/systemd/system/cert-sync.service", template_text(
        "cert-sync.service", bucket=bucket, prefix=CERTIFICATE_PREFIX,
        root=f"{CADDY_DATA}/caddy", region=settings.region))
    config.add_file("/etc/systemd/system/cert-sync.timer", template_text(
        "cert-sync.timer", interval=f"{CERTIFICATE_SYNC_MINUTES}min"))


def _app_host(settings: Settings, config: CloudConfig, host_name: str) -> None:
    _docker(config)
    config.add_script("/usr/local/bin/app-deploy", "app-deploy.sh")
    config.add_script(f"{SCRIPTS}/app-first-boot", "app-first-boot.sh")
    config.add_script(f"{SCRIPTS}/ssm-parameter", "ssm_parameter.py")
    config.add_script(f"{SCRIPTS}/registry-login", "registry_login.py")
    config.add_file("/usr/local/lib/health-agent/health_agent.py", host_text("health_agent.py"))
    config.add_file("/etc/tmpfiles.d/app.conf", "d /run/app 0755 root root -\n")
    config.add_file("/etc/app/deploy.env", env_file({
        "APP_CONTAINER": APP_CONTAINER,
        "APP_PORT": APP_PORT,
        "DRAIN_FILE": DRAIN_FILE,
        "DRAIN_SECONDS": drain_seconds(),
        "HEALTH_TIMEOUT": APP_HEALTH_TIMEOUT_SECONDS,
        "STOP_TIMEOUT": APP_STOP_TIMEOUT_SECONDS,
        "DB_HOST": settings.private_ips("db")[0],
        "DB_PORT": POSTGRES_PORT,
        "DB_NAME": APP_DB_NAME,
        "DB_USER": APP_DB_USER,
        "DB_PASSWORD_PARAMETER": parameters.db_password(settings),
        "DEPLOYED_IMAGE_PARAMETER": parameters.deployed_image(settings),
        "CONFIGURED_IMAGE": settings.app.image or "",
        "AWS_REGION": settings.region,
    }))
    # Settings of the reference app that are not the platform's business; a user's own app
    # may ignore them or get its own here.
    config.add_file("/etc/app/app.env",
                    env_file({"DB_SSLMODE": "require", "DB_POOL_SIZE": APP_DB_POOL_SIZE}))
    config.add_file("/etc/systemd/system/health-agent.service", template_text(
        "health-agent.service", port=HEALTH_AGENT_PORT, drain_file=DRAIN_FILE,
        app_health_url=f"http://127.0.0.1:{APP_PORT}/health",
        app_timeout=AGENT_APP_TIMEOUT_SECONDS))
    config.add_yaml("/etc/filebeat/filebeat.yml",
                    logging_stack.filebeat_config(settings, host_name))
    config.add_file("/etc/systemd/system/filebeat.service", template_text(
        "filebeat.service", image=images.FILEBEAT_IMAGE, region=settings.region,
        parameter=parameters.filebeat_password(settings),
        ca_parameter=parameters.log_ca_certificate(settings),
        ca_file=logging_stack.FILEBEAT_CA_HOST, container_ca=logging_stack.FILEBEAT_CA))
    config.add_script(f"{SCRIPTS}/filebeat-ca-refresh", "filebeat-ca-refresh.sh")
    config.add_file("/etc/systemd/system/filebeat-ca-refresh.service", template_text(
        "filebeat-ca-refresh.service", region=settings.region,
        ca_parameter=parameters.log_ca_certificate(settings),
        ca_file=logging_stack.FILEBEAT_CA_HOST))
    config.add_file("/etc/systemd/system/filebeat-ca-refresh.timer", template_text(
        "filebeat-ca-refresh.timer", interval=f"{FILEBEAT_CA_CHECK_MINUTES}min"))
    config.step("install-packages", ["install-packages", "docker.io", "python3-boto3"])
    config.step("create-run-dir", ["systemd-tmpfiles", "--create", "/etc/tmpfiles.d/app.conf"])
    config.step("reload-systemd", ["systemctl", "daemon-reload"])
    config.step("start-health-agent", ["systemctl", "enable", "--now", "health-agent.service"])
    # --no-block: Filebeat waits for LOG-01's password on its own, retrying.
    config.step("start-filebeat",
                ["systemctl", "enable", "--now", "--no-block", "filebeat.service",
                 "filebeat-ca-refresh.timer"])
    # The image the last rolling update deployed, else app.image, else none until the
    # rolling update deploys the image the pipeline built. app-deploy waits for DB-01's
    # password itself; another attempt covers a registry or SSM that was briefly away.
    config.step("start-app", ["env", f"PASSWORD_WAIT_SECONDS={FIRST_BOOT_WAIT_SECONDS}",
                              f"HEALTH_TIMEOUT={FIRST_BOOT_WAIT_SECONDS}", "app-first-boot"],
                attempts=3, retry_seconds=60)


def postgresql_conf(settings: Settings) -> str:
    """DB-01's additions to postgresql.conf (Ubuntu's conf.d)."""
    address = settings.private_ips("db")[0]
    # Each APP host keeps up to APP_DB_POOL_SIZE connections; leave room for maintenance.
    max_connections = max(100, settings.app.host_count * APP_DB_POOL_SIZE + 20)
    return "\n".join([
        "# Written by DB-01's user data (provisioning/user_data.py).",
        f"listen_addresses = 'localhost,{address}'",
        f"port = {POSTGRES_PORT}",
        f"max_connections = {max_connections}",
        "password_encryption = 'scram-sha-256'",
        # Ubuntu's self-signed certificate: traffic from the APP hosts is encrypted.
        "ssl = on",
        "ssl_cert_file = '/etc/ssl/certs/ssl-cert-snakeoil.pem'",
        "ssl_key_file = '/etc/ssl/private/ssl-cert-snakeoil.key'",
        "ssl_min_protocol_version = 'TLSv1.2'",
        "log_connections = on",
        # Continuous archiving to both pgBackRest repositories (provisioning/pgbackrest.py).
        *(f"{key} = '{value}'" for key, value in pgbackrest.archiving_settings().items()),
        "",
    ])


def pg_hba_conf(settings: Settings) -> str:
    """DB-01's pg_hba.conf: local administration, and the app from the private subnet."""
    subnet = settings.network.private_subnet_cidr
    rows = [
        ("local", "all", "postgres", "", "peer"),
        ("local", "all", "all", "", "peer"),
        ("host", "all", "all", "127.0.0.1/32", "scram-sha-256"),
        ("host", "all", "all", "::1/128", "scram-sha-256"),
        # TLS only, the app's database and user only, the private subnet only.
        ("hostssl", APP_DB_NAME, APP_DB_USER, subnet, "scram-sha-256"),
    ]
    lines = ["# Written by DB-01's user data (provisioning/user_data.py). Nothing else may "
             "connect.", "# TYPE    DATABASE  USER      ADDRESS          METHOD"]
    lines += [f"{kind:<9} {database:<9} {user:<9} {address:<16} {method}".rstrip()
              for kind, database, user, address, method in rows]
    return "\n".join(lines) + "\n"


def nfs_source(settings: Settings) -> str:
    return f"{settings.private_ips('nfs')[0]}:{NFS_ROOT}/{BACKUP_SUBDIR}"


def _database(settings: Settings, config: CloudConfig) -> None:
    cluster = f"/etc/postgresql/{images.POSTGRES_MAJOR}/main"
    cluster_unit = f"postgresql@{images.POSTGRES_MAJOR}-main.service"
    data_directory = f"/var/lib/postgresql/{images.POSTGRES_MAJOR}/main"
    config.add_script(f"{SCRIPTS}/ssm-parameter", "ssm_parameter.py")
    config.add_script(f"{SCRIPTS}/db-setup", "db-setup.sh")
    config.add_script(f"{SCRIPTS}/db-backup", "db-backup.sh")
    config.add_script(f"{SCRIPTS}/db-backup-metrics", "backup_metrics.py")
    config.add_file("/etc/db/backup.env", env_file({
        "DB_NAME": APP_DB_NAME,
        "DB_USER": APP_DB_USER,
        "DB_PASSWORD_PARAMETER": parameters.db_password(settings),
        "SSM_KEY_ID": parameters.secret_key_alias(settings),
        "AWS_REGION": settings.region,
        "NFS_SOURCE": nfs_source(settings),
        "BACKUP_MOUNT": BACKUP_MOUNT,
        "RETENTION_DAYS": settings.backups.retention_days,
        "PGBACKREST_CONFIG": pgbackrest.CONFIG_PATH,
        "STANZA": pgbackrest.STANZA,
        "PG_DATA": data_directory,
        "CLUSTER_UNIT": cluster_unit,
    }))
    config.add_file(pgbackrest.CONFIG_PATH, pgbackrest.config_text(
        cluster=pgbackrest.Cluster(data_directory=data_directory, port=POSTGRES_PORT),
        repo1_path=f"{BACKUP_MOUNT}/{pgbackrest.REPO1_SUBDIR}",
        s3=pgbackrest.S3Repository(bucket=settings.backup_bucket, region=settings.region),
        retention_days=settings.backups.retention_days))
    # Staged here and installed after the package has created the cluster: pg_createcluster
    # refuses a configuration directory that already exists.
    config.add_file("/etc/db/postgresql.conf", postgresql_conf(settings))
    config.add_file("/etc/db/pg_hba.conf", pg_hba_conf(settings))
    config.add_file(f"/etc/systemd/system/{BACKUP_MOUNT_UNIT}",
                    backup_mount_unit(nfs_source(settings)))
    units = pgbackrest.systemd_units(
        schedule=pgbackrest.schedule(settings.backups.full_backup_day, settings.backups.time),
        cluster_unit=cluster_unit, mount_unit=BACKUP_MOUNT_UNIT,
        metrics_command=[f"{SCRIPTS}/db-backup-metrics",
                         "--namespace", BACKUP_METRIC_NAMESPACE,
                         "--environment", settings.environment, "--region", settings.region])
    for name, text in units.items():
        config.add_file(f"/etc/systemd/system/{name}", text)
    install = ["install", "-D", "-o", "postgres", "-g", "postgres", "-m", "0640"]
    config.step("install-packages",
                ["install-packages", images.POSTGRES_PACKAGE, "pgbackrest", "nfs-common",
                 "python3-boto3"])
    config.step("reload-systemd", ["systemctl", "daemon-reload"])
    # NFS-01 may still be booting: the mount is retried, and db-backup init waits for it.
    config.step("mount-backups", ["systemctl", "enable", "--now", BACKUP_MOUNT_UNIT],
                attempts=10, retry_seconds=30)
    config.step("backup-directories", ["install", "-d", "-o", "postgres", "-g", "postgres",
                                       "-m", "0750", pgbackrest.SPOOL_PATH,
                                       pgbackrest.LOG_PATH])
    config.step("install-postgresql-conf",
                [*install, "/etc/db/postgresql.conf", f"{cluster}/conf.d/60-platform.conf"])
    config.step("install-pg-hba", [*install, "/etc/db/pg_hba.conf", f"{cluster}/pg_hba.conf"])
    config.step("restart-postgresql", ["systemctl", "restart", cluster_unit])
    config.step("db-setup", ["db-setup"])
    # Retried: stanza-create waits for a lock the first archive-push may hold.
    config.step("backup-stanza", ["db-backup", "init"], attempts=3, retry_seconds=60)
    config.step("start-backup-timers", ["systemctl", "enable", "--now", *(
        name for name in units if name.endswith(".timer"))])
    # The first full backup now, not at the next scheduled one: until it exists, no restore
    # is possible. --no-block: the boot does not wait for it; its alarm does.
    config.step("first-backup",
                ["systemctl", "start", "--no-block", "db-backup@full.service"])


def backup_mount_unit(source: str) -> str:
    """DB-01's systemd mount of NFS-01's export at BACKUP_MOUNT (repo1 and old dumps)."""
    return "\n".join([
        "# NFS-01's backup export: pgBackRest's repo1 (provisioning/user_data.py).",
        "[Unit]",
        "Description=NFS-01's backup export",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Mount]",
        f"What={source}",
        f"Where={BACKUP_MOUNT}",
        "Type=nfs4",
        f"Options={NFS_MOUNT_OPTIONS}",
        "",
        "[Install]",
        "WantedBy=remote-fs.target",
        "",
    ])


def nfs_exports(settings: Settings) -> str:
    """NFS-01's export: the backup directory, to DB-01 only, every access as the backup user.

    ``mp``: exported only while the volume is mounted, never the empty directory under it.
    """
    uid, gid = BACKUP_OWNER.split(":")
    return (f"# Written by NFS-01's user data (provisioning/user_data.py).\n"
            f"{NFS_ROOT}/{BACKUP_SUBDIR} {settings.private_ips('db')[0]}/32"
            f"(rw,sync,no_subtree_check,sec=sys,all_squash,anonuid={uid},anongid={gid},"
            f"mp={NFS_ROOT})\n")


def _nfs_server(settings: Settings, config: CloudConfig, volume_id: str) -> None:
    config.add_script(f"{SCRIPTS}/nfs-volume", "nfs-volume.sh")
    config.add_file("/etc/exports.d/backups.exports", nfs_exports(settings))
    # NFSv4 only: one TCP port (2049), the one SG-NFS opens.
    config.add_file("/etc/nfs.conf.d/60-platform.conf", "[nfsd]\nvers3=n\n")
    # No NFS service without the volume: backups fail loudly instead of filling the root disk.
    config.add_file("/etc/systemd/system/nfs-server.service.d/60-backup-volume.conf",
                    f"[Unit]\nRequiresMountsFor={NFS_ROOT}\n")
    config.step("install-packages", ["install-packages", "nfs-kernel-server"])
    config.step("nfs-volume", ["env", f"VOLUME_ID={volume_id}", f"MOUNT_POINT={NFS_ROOT}",
                               f"BACKUP_SUBDIR={BACKUP_SUBDIR}", f"BACKUP_OWNER={BACKUP_OWNER}",
                               "nfs-volume"])
    config.step("reload-systemd", ["systemctl", "daemon-reload"])
    config.step("restart-nfs-server", ["systemctl", "restart", "nfs-server.service"])
    config.step("export-backups", ["exportfs", "-ra"])


def _log_server(settings: Settings, config: CloudConfig) -> None:
    _docker(config)
    stack = "/opt/logging"
    config.add_script(f"{SCRIPTS}/ssm-parameter", "ssm_parameter.py")
    config.add_script(f"{SCRIPTS}/log-stack", "log-stack.sh")
    config.add_file("/etc/logging/log-stack.env", env_file({
        "PARAMETER_PREFIX": parameters.log_secrets_prefix(settings),
        "SSM_KEY_ID": parameters.secret_key_alias(settings),
        "ES_ADDRESS": settings.private_ips("log")[0],
        "CERT_DIR": logging_stack.CERT_DIR,
        "CA_PARAMETER": parameters.log_ca_certificate(settings),
        "AWS_REGION": settings.region,
        "STACK_DIR": stack,
    }))
    # Elasticsearch refuses to start with the kernel's default map count.
    config.add_file("/etc/sysctl.d/60-elasticsearch.conf", "vm.max_map_count = 262144\n")
    config.add_yaml(f"{stack}/compose.yaml", logging_stack.compose_file(settings))
    config.add_json(f"{stack}/ilm-policy.json", logging_stack.lifecycle_policy(settings))
    config.add_json(f"{stack}/index-template.json", logging_stack.index_template())
    config.add_json(f"{stack}/writer-role.json", logging_stack.writer_role())
    config.add_json(f"{stack}/data-view.json", logging_stack.kibana_data_view())
    config.step("install-packages",
                ["install-packages", "docker.io", "docker-compose-v2", "python3-boto3"])
    config.step("load-sysctl", ["sysctl", "--load=/etc/sysctl.d/60-elasticsearch.conf"])
    config.step("pull-images", ["pull-images", images.ELASTICSEARCH_IMAGE, images.KIBANA_IMAGE])
    # Safe to run again (it says so): a slow first start of Elasticsearch gets more time.
    config.step("log-stack", ["log-stack", "up"], attempts=3, retry_seconds=60)


def main(argv: list[str] | None = None) -> int:
    """Print the user data of one host: ``python -m provisioning.user_data ENV HOST``."""
    parser = argparse.ArgumentParser(description="Print one host's cloud-config user data.")
    parser.add_argument("environment", help="a config/<environment>.yaml name")
    parser.add_argument("host", help="LB-01 (LB-02), APP-1..N, DB-01, NFS-01 or LOG-01")
    args = parser.parse_args(argv)
    try:
        settings = load_environment(args.environment)
    except ConfigError as error:
        print("\n".join(f"error: {p}" for p in error.problems), file=sys.stderr)
        return 2
    role = next((r for r in ROLES if args.host in settings.host_names(r)), None)
    if role is None:
        print(f"error: {args.host} is not a host of {args.environment}", file=sys.stderr)
        return 2
    volume = "<volume ID of the NFS volume, known after apply>" if role == "nfs" else None
    bucket = ("<certificate bucket, known after apply>"
              if role == "lb" and settings.load_balancer.count > 1 else None)
    sys.stdout.write(render(settings, role, args.host, nfs_volume_id=volume,
                            certificate_bucket=bucket))
    return 0


if __name__ == "__main__":
    sys.exit(main())
