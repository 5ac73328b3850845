"""SSM Parameter Store names of the secrets the hosts generate for themselves, and of the
image the rolling update deployed.

No secret is ever in user data, in the synthesized Terraform or in its state: the host that
owns a secret creates it at first boot as a SecureString (``ssm-parameter ensure``), and the
hosts that need it read it at run time. The IAM policies in ``stacks/environment.py`` are
built from these names.
"""
from __future__ import annotations

from core.settings import Settings


def db_password(settings: Settings) -> str:
    """The app's database password: written by DB-01, read by the APP hosts."""
    return f"/{settings.project}/{settings.environment}/db/password"


def log_secrets_prefix(settings: Settings) -> str:
    """Everything LOG-01 generates: Elasticsearch users' passwords, Kibana's key."""
    return f"/{settings.project}/{settings.environment}/logs"


def filebeat_password(settings: Settings) -> str:
    """The password of Elasticsearch's log writer user: written by LOG-01, read by APP hosts."""
    return f"{log_secrets_prefix(settings)}/filebeat-password"


def elastic_password(settings: Settings) -> str:
    """The password of Elasticsearch's ``elastic`` superuser, for logging in to Kibana."""
    return f"{log_secrets_prefix(settings)}/elastic-password"


def deployed_image(settings: Settings) -> str:
    """The app image the last successful rolling update deployed (a String, not a secret):
    written by the deploy workflow's rollout, read by an APP host at its first boot."""
    return f"/{settings.project}/{settings.environment}/app/image"
