"""SSM Parameter Store names of what the hosts share, and who may write and read each: the
secrets the hosts generate for themselves, and the image the rolling update deployed.

No secret is ever in user data, in the synthesized Terraform or in its state: the host that
owns a secret creates it at first boot as a SecureString (``ssm-parameter ensure``) under the
environment's own KMS key, and the hosts that need it read it at run time. ``catalog`` is the
single list the IAM policies and the key policy in ``stacks/environment.py`` are built from:
a new parameter is one line there, and no role can read a parameter that is not listed for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings


@dataclass(frozen=True)
class Parameter:
    """One parameter (or a ``/*`` path of them) and its access.

    name: the parameter's name, or a path ending in ``/*`` for every parameter below it.
    writer: the host role that creates it at first boot; None when the pipeline writes it.
    readers: the host roles that read it besides its writer.
    secret: a SecureString under the environment's key (False: a plain String).
    """

    name: str
    writer: str | None
    readers: tuple[str, ...] = ()
    secret: bool = True

    def readable_by(self, role: str) -> bool:
        return role == self.writer or role in self.readers


def prefix(settings: Settings) -> str:
    """Every parameter of the environment lives below this path."""
    return f"/{settings.project}/{settings.environment}"


def db_password(settings: Settings) -> str:
    """The app's database password: written by DB-01, read by the APP hosts."""
    return f"{prefix(settings)}/db/password"


def log_secrets_prefix(settings: Settings) -> str:
    """Everything LOG-01 generates: Elasticsearch users' passwords, Kibana's key."""
    return f"{prefix(settings)}/logs"


def filebeat_password(settings: Settings) -> str:
    """The password of Elasticsearch's log writer user: written by LOG-01, read by APP hosts."""
    return f"{log_secrets_prefix(settings)}/filebeat-password"


def elastic_password(settings: Settings) -> str:
    """The password of Elasticsearch's ``elastic`` superuser, for logging in to Kibana."""
    return f"{log_secrets_prefix(settings)}/elastic-password"


def deployed_image(settings: Settings) -> str:
    """The app image the last successful rolling update deployed (a String, not a secret):
    written by the deploy workflow's rollout, read by an APP host at its first boot."""
    return f"{prefix(settings)}/app/image"


def log_ca_certificate(settings: Settings) -> str:
    """The CA certificate of Elasticsearch's TLS, made on LOG-01, trusted by Filebeat.

    Outside ``log_secrets_prefix``: the APP hosts read it, and must not read LOG-01's secrets.
    """
    return f"{prefix(settings)}/log-ca/certificate"


def lb_maintenance(settings: Settings) -> str:
    """The load balancers out of the NLB for maintenance (a String, one ``HOST SINCE`` line
    each): written by ``scripts/lb_maintenance.py``, read by the deploy and drift workflows.
    No host reads it, so it is not in the catalog."""
    return f"{prefix(settings)}/lb/maintenance"


def catalog(settings: Settings) -> tuple[Parameter, ...]:
    """Every parameter of the environment with its writer and readers."""
    return (
        Parameter(db_password(settings), writer="db", readers=("app",)),
        # LOG-01's own secrets; the APP hosts read only Filebeat's, listed next.
        Parameter(f"{log_secrets_prefix(settings)}/*", writer="log"),
        Parameter(filebeat_password(settings), writer="log", readers=("app",)),
        Parameter(log_ca_certificate(settings), writer="log", readers=("app",), secret=False),
        # Written by the deploy role's rollout, never by a host.
        Parameter(deployed_image(settings), writer=None, readers=("app",), secret=False),
    )


def secret_key_alias(settings: Settings) -> str:
    """The alias of the environment's KMS key for SecureString parameters."""
    return f"alias/{settings.name_prefix}-parameters"
