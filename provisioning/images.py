"""What the hosts run, each pinned to a version: container images and the PostgreSQL major.

Upgrading one is a change to this file, reviewed like any other; it reaches new hosts through
their user data and running hosts as described in docs/hosts.md.
"""
from __future__ import annotations

# LB-01. At least MINIMUM_CADDY_VERSION of provisioning/caddy.py: older releases ignore the
# health check port or cannot retry a request with a body on another host.
CADDY_IMAGE = "caddy:2.11.7"

# LOG-01 and the APP hosts: the last 8.x line; the three must stay on the same version.
ELASTIC_VERSION = "8.19.21"
ELASTICSEARCH_IMAGE = f"docker.elastic.co/elasticsearch/elasticsearch:{ELASTIC_VERSION}"
KIBANA_IMAGE = f"docker.elastic.co/kibana/kibana:{ELASTIC_VERSION}"
FILEBEAT_IMAGE = f"docker.elastic.co/beats/filebeat:{ELASTIC_VERSION}"

# DB-01: Ubuntu 24.04's own PostgreSQL packages; the major is in the package name, and a
# major upgrade (dump and restore, or pg_upgradecluster) is a deliberate operation.
POSTGRES_MAJOR = 16
POSTGRES_PACKAGE = f"postgresql-{POSTGRES_MAJOR}"
