"""The things a rollout works on: app hosts, command results, and the ports they use."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

APP_PORT = 5000
HEALTH_AGENT_PORT = 5001


@dataclass(frozen=True)
class AppHost:
    """One APP host as the rollout sees it.

    ``upstream`` is the address Caddy dials (``"10.0.2.11:5000"``) and so the host's identity
    in the load balancer. Local hosts carry the command that runs ``app-deploy`` and the URL of
    their health agent; AWS hosts carry their instance id.
    """

    name: str
    upstream: str
    health_url: str | None = None
    deploy_command: tuple[str, ...] = ()
    instance_id: str | None = None
    env: tuple[tuple[str, str], ...] = field(default=())

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class CommandResult:
    """What one ``app-deploy`` call returned.

    ``error`` is set when the command could not run to completion at all (not delivered,
    timed out, cancelled); ``exit_code`` is then None.
    """

    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    def reason(self) -> str:
        """One line saying why the command failed, for the step log and the report."""
        if self.error:
            return self.error
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        if lines:
            return lines[-1]
        return f"exit status {self.exit_code}"


def natural_key(name: str) -> list:
    """Sort APP-2 before APP-10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
