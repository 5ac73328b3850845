"""The central logs: Filebeat on every APP host, Elasticsearch and Kibana on LOG-01.

Every document here is plain data, rendered into the hosts' user data and asserted on by the
tests. Elasticsearch runs with security on: Filebeat writes with a user that may only append
to the app's log data stream; Kibana uses its own ``kibana_system`` user; administrators log
in as ``elastic``. Their passwords are generated on LOG-01 (see ``provisioning/parameters.py``).

Elasticsearch serves HTTPS on 9200 with a certificate for LOG-01's address, signed by a CA
that LOG-01 makes at its first boot (``log-stack certificates``) and publishes in SSM; Filebeat
verifies it in full. Kibana (5601) stays plain HTTP for the admin network; see docs/hosts.md.
"""
from __future__ import annotations

from core.settings import ELASTICSEARCH_PORT, KIBANA_PORT, Settings
from provisioning import images

WRITER_USER = "filebeat_writer"
WRITER_ROLE = "app_logs_writer"
INDEX_PREFIX = "app-logs"
LIFECYCLE_POLICY = "app-logs"
CONTAINER_LOGS = "/var/lib/docker/containers"
# LOG-01's certificates on the host, and where the containers see them.
CERT_DIR = "/etc/logging/certs"
ES_CERTS = "/usr/share/elasticsearch/config/certs"
KIBANA_CA = "/usr/share/kibana/config/certs/ca.crt"
# On the APP hosts: the CA certificate as fetched from SSM, and where Filebeat reads it.
FILEBEAT_CA_HOST = "/run/filebeat/ca.crt"
FILEBEAT_CA = "/usr/share/filebeat/certs/ca.crt"


def data_stream(settings: Settings) -> str:
    """The data stream Filebeat writes the environment's app logs to."""
    return f"{INDEX_PREFIX}-{settings.environment}"


def elasticsearch_url(settings: Settings) -> str:
    return f"https://{settings.private_ips('log')[0]}:{ELASTICSEARCH_PORT}"


def filebeat_config(settings: Settings, host_name: str) -> dict:
    """``filebeat.yml`` of one APP host: the app container's log lines to LOG-01.

    Filebeat reads Docker's JSON log files directly, without the Docker socket (which would
    give it root on the host). Its own container logs to journald, so the only container log
    files on an APP host are the app's.
    """
    return {
        "filebeat.inputs": [{
            "type": "filestream",
            "id": "app-container-logs",
            "paths": [f"{CONTAINER_LOGS}/*/*-json.log"],
            "parsers": [{"container": {"stream": "all", "format": "docker"}}],
        }],
        "processors": [
            {"dissect": {"field": "log.file.path", "target_prefix": "",
                         "tokenizer": f"{CONTAINER_LOGS}/%{{container.id}}/%{{?file}}"}},
            # JSON log lines (the reference app writes them) become searchable fields under
            # "app"; other lines stay as they are in "message".
            {"decode_json_fields": {"fields": ["message"], "target": "app",
                                    "max_depth": 3, "overwrite_keys": False,
                                    "add_error_key": False}},
            {"add_fields": {"target": "platform", "fields": {
                "environment": settings.environment, "host": host_name, "role": "app"}}},
        ],
        "output.elasticsearch": {
            "hosts": [elasticsearch_url(settings)],
            "username": WRITER_USER,
            # Filled in from the container's environment, read from SSM at start.
            "password": "${ES_PASSWORD}",
            "index": data_stream(settings),
            # LOG-01's CA, fetched from SSM at every start; "full": the certificate must be
            # for the address Filebeat connects to.
            "ssl.certificate_authorities": [FILEBEAT_CA],
            "ssl.verification_mode": "full",
        },
        # LOG-01 owns the template and the lifecycle policy; the writer may not change them.
        "setup.template.enabled": False,
        "setup.template.name": INDEX_PREFIX,
        "setup.template.pattern": f"{INDEX_PREFIX}-*",
        "setup.ilm.enabled": False,
        "logging.level": "info",
        "logging.metrics.enabled": False,
    }


def lifecycle_policy(settings: Settings) -> dict:
    """Roll the data stream over daily, delete what is older than ``logs.retention_days``."""
    return {"policy": {
        "_meta": {"managed_by": "LOG-01 user data (provisioning/logging_stack.py)"},
        "phases": {
            "hot": {"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "10gb"}}},
            "delete": {"min_age": f"{settings.logs.retention_days}d", "actions": {"delete": {}}},
        },
    }}


def index_template() -> dict:
    """The app logs' data streams: one shard, no replica (one node), the lifecycle policy."""
    return {
        "index_patterns": [f"{INDEX_PREFIX}-*"],
        "data_stream": {},
        "priority": 200,
        "template": {
            "settings": {"index.lifecycle.name": LIFECYCLE_POLICY,
                         "index.number_of_shards": 1, "index.number_of_replicas": 0},
            "mappings": {"properties": {
                "@timestamp": {"type": "date"},
                "message": {"type": "text"},
                # Whatever JSON an app logs: one field, so no app can explode the mapping.
                "app": {"type": "flattened"},
                "container": {"properties": {"id": {"type": "keyword"}}},
                "platform": {"properties": {"environment": {"type": "keyword"},
                                            "host": {"type": "keyword"},
                                            "role": {"type": "keyword"}}},
            }},
        },
        "_meta": {"managed_by": "LOG-01 user data (provisioning/logging_stack.py)"},
    }


def writer_role() -> dict:
    """What Filebeat may do: check the cluster, append to the app logs, nothing else."""
    return {
        "cluster": ["monitor", "read_ilm", "read_pipeline"],
        "indices": [{"names": [f"{INDEX_PREFIX}-*"],
                     "privileges": ["create_doc", "auto_configure", "view_index_metadata"]}],
    }


def kibana_data_view() -> dict:
    """Kibana's view of the logs, so that they are searchable from the first login."""
    return {"override": True, "data_view": {
        "title": f"{INDEX_PREFIX}-*", "name": "App logs", "timeFieldName": "@timestamp"}}


def compose_file(settings: Settings) -> dict:
    """LOG-01's Compose project: single-node Elasticsearch and Kibana.

    ``${...}`` values come from the env file ``log-stack up`` writes on tmpfs: the heap sizes
    (from the host's memory) and the passwords (from SSM).
    """
    heap = "-Xms${ES_HEAP_MB}m -Xmx${ES_HEAP_MB}m"
    return {
        "name": "logging",
        "services": {
            "elasticsearch": {
                "image": images.ELASTICSEARCH_IMAGE,
                "restart": "unless-stopped",
                "environment": {
                    "node.name": "log-01",
                    "cluster.name": f"{settings.name_prefix}-logs",
                    "discovery.type": "single-node",
                    "xpack.security.enabled": "true",
                    "xpack.security.http.ssl.enabled": "true",
                    "xpack.security.http.ssl.key": "certs/http.key",
                    "xpack.security.http.ssl.certificate": "certs/http.crt",
                    "xpack.security.http.ssl.certificate_authorities": "certs/ca.crt",
                    "xpack.security.transport.ssl.enabled": "false",
                    # Not used here, and each would take memory or reach the internet.
                    "xpack.ml.enabled": "false",
                    "ingest.geoip.downloader.enabled": "false",
                    "action.destructive_requires_name": "true",
                    "ELASTIC_PASSWORD": "${ELASTIC_PASSWORD:?}",
                    "ES_JAVA_OPTS": heap,
                },
                "ulimits": {"nofile": {"soft": 65535, "hard": 65535}},
                "volumes": ["elasticsearch-data:/usr/share/elasticsearch/data",
                            f"{CERT_DIR}:{ES_CERTS}:ro"],
                "ports": [f"{ELASTICSEARCH_PORT}:9200"],
                "healthcheck": {
                    # "$$": the container's shell, not Compose, expands the password; its
                    # built-in printf hands it to curl on stdin, never on a command line.
                    "test": ["CMD-SHELL", "printf 'user = \"elastic:%s\"\\n' "
                             "\"$$ELASTIC_PASSWORD\" | curl --silent --fail --config - "
                             f"--cacert {ES_CERTS}/ca.crt "
                             "'https://localhost:9200/_cluster/health?wait_for_status=yellow"
                             "&timeout=5s' >/dev/null"],
                    "interval": "10s", "timeout": "10s", "retries": 30, "start_period": "60s",
                },
            },
            "kibana": {
                "image": images.KIBANA_IMAGE,
                "restart": "unless-stopped",
                "depends_on": {"elasticsearch": {"condition": "service_healthy"}},
                "environment": {
                    "ELASTICSEARCH_HOSTS": "https://elasticsearch:9200",
                    "ELASTICSEARCH_SSL_CERTIFICATEAUTHORITIES": KIBANA_CA,
                    "ELASTICSEARCH_SSL_VERIFICATIONMODE": "full",
                    "ELASTICSEARCH_USERNAME": "kibana_system",
                    "ELASTICSEARCH_PASSWORD": "${KIBANA_SYSTEM_PASSWORD:?}",
                    "XPACK_SECURITY_ENCRYPTIONKEY": "${KIBANA_ENCRYPTION_KEY:?}",
                    "XPACK_ENCRYPTEDSAVEDOBJECTS_ENCRYPTIONKEY": "${KIBANA_ENCRYPTION_KEY:?}",
                    "XPACK_REPORTING_ENCRYPTIONKEY": "${KIBANA_ENCRYPTION_KEY:?}",
                    "NODE_OPTIONS": "--max-old-space-size=${KIBANA_HEAP_MB}",
                    # Lets the health check below ask for the status without credentials.
                    "STATUS_ALLOWANONYMOUS": "true",
                    "TELEMETRY_OPTIN": "false",
                },
                "volumes": [f"{CERT_DIR}/ca.crt:{KIBANA_CA}:ro"],
                "ports": [f"{KIBANA_PORT}:5601"],
                "healthcheck": {
                    "test": ["CMD-SHELL",
                             "curl --silent --fail http://localhost:5601/api/status >/dev/null"],
                    "interval": "10s", "timeout": "10s", "retries": 60, "start_period": "60s",
                },
            },
        },
        "volumes": {"elasticsearch-data": {}},
    }
