"""The host-side command contract: what ``/usr/local/bin/app-deploy`` must do on an APP host.

The rolling update never touches Docker or Caddy's config to move a host to a new image: it
calls this one command on the host (through SSM Run Command on AWS, as a local process with
an inventory file) and reads the host's health agent. Whoever implements ``app-deploy``
(a shell script on the hosts; ``rollout.lab.app_deploy`` is the local equivalent the tests use)
follows this page.

Settings (environment variables; the engine always sets both)::

    DRAIN_SECONDS    how long Caddy needs to stop sending the host requests once the switch
                     is set: its health interval x fails + the longest in-flight request.
    HEALTH_TIMEOUT   how long a new container may take to answer its health check.

Files on the host::

    /run/app/drain         the drain switch; the health agent answers 503 while it exists.
    /run/app/deploy.lock   flock(1) held by every subcommand that changes something, waiting
                           for a running one to finish (a run killed mid-way can have left
                           an app-deploy running on the host: the next run queues behind it).

Subcommands (arguments are appended to the command; one per call)::

    app-deploy status
        Print ONE line of JSON and exit 0, without taking the lock:
            {"image": "repo/app:v2" | null, "previous": "repo/app:v1" | null,
             "drained": true | false, "healthy": true | false}
        image: the image of the running app container (null if there is none);
        previous: the image it replaced (null if none); drained: the switch exists;
        healthy: the app's own health endpoint answers 200 now (the switch is ignored).

    app-deploy drain
        Create the switch, then wait until DRAIN_SECONDS have passed since it was created
        (at once if it already existed for that long). Exit 0.

    app-deploy undrain
        Remove the switch. Exit 0 (also when it did not exist).

    app-deploy IMAGE
        1. If IMAGE is already running and healthy: exit 0, nothing else.
        2. Drain (as above) unless the switch is already set.
        3. Pull IMAGE; stop the old container gracefully (SIGTERM, then a grace period);
           start the new one; wait up to HEALTH_TIMEOUT for its health to answer 200.
        4. Success: record previous := old image (only when the image changed), and remove the
           switch only if step 2 created it. Exit 0.
        5. Failure (pull, start or health): restore the old image and wait for its health,
           remove the switch only if step 2 created it, print ONE line on stderr saying why
           (e.g. "repo/app:v3 failed its health check within 60s; restored repo/app:v2"),
           exit non-zero.

    app-deploy --rollback
        The same as ``app-deploy PREVIOUS``: back to the image recorded as previous.

The engine drains a host itself before ``app-deploy IMAGE`` (so step 2 is skipped and the host
stays drained until the engine has seen the new container healthy several times) and
undrains it after. For one batch of hosts::

    drain every host -> check the LB took it out (agent saw fails x 503, no request in flight)
    -> app-deploy IMAGE -> N consecutive healthy `status` -> undrain
    -> check the LB put it back (agent saw passes x 200) -> next batch

The health agent (``provisioning/files/health_agent.py``) listens on port 5001 and serves
``/health`` to Caddy and ``/agent`` to the engine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

DRAIN = "drain"
UNDRAIN = "undrain"
STATUS = "status"
ROLLBACK = "--rollback"

ENV_DRAIN_SECONDS = "DRAIN_SECONDS"
ENV_HEALTH_TIMEOUT = "HEALTH_TIMEOUT"


class ContractError(ValueError):
    """A host answered something the contract does not allow."""


@dataclass(frozen=True)
class HostStatus:
    """One host's answer to ``app-deploy status``."""

    image: str | None
    previous: str | None
    drained: bool
    healthy: bool

    @classmethod
    def parse(cls, output: str) -> "HostStatus":
        """Read the last non-empty line of the command's stdout (banners may precede it)."""
        lines = [line for line in output.splitlines() if line.strip()]
        if not lines:
            raise ContractError("`app-deploy status` printed nothing")
        try:
            data = json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise ContractError(f"`app-deploy status` did not print JSON: {lines[-1][:120]!r}"
                                ) from exc
        if not isinstance(data, dict):
            raise ContractError("`app-deploy status` must print a JSON object")
        for key in ("image", "previous"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ContractError(f"`app-deploy status`: {key!r} must be a string or null")
        for key in ("drained", "healthy"):
            if not isinstance(data.get(key), bool):
                raise ContractError(f"`app-deploy status`: {key!r} must be true or false")
        return cls(image=data.get("image") or None, previous=data.get("previous") or None,
                   drained=data["drained"], healthy=data["healthy"])

    def to_json(self) -> str:
        return json.dumps({"image": self.image, "previous": self.previous,
                           "drained": self.drained, "healthy": self.healthy})


@dataclass(frozen=True)
class ProbeView:
    """What a host's health agent last answered the load balancer (its ``/agent`` page)."""

    drained: bool
    answer: int | None
    streak: int
    age: float | None

    @classmethod
    def parse(cls, text: str) -> "ProbeView":
        try:
            data = json.loads(text)
            probe = data["probe"]
            return cls(drained=bool(data["drained"]), answer=probe["answer"],
                       streak=int(probe["streak"]), age=probe["age"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"health agent /agent page is not what the agent serves: "
                                f"{text[:120]!r}") from exc

    def serving(self, max_age: float) -> bool:
        """Caddy's latest probe, recent enough, found the host up and not drained."""
        return not self.drained and self.confirms(200, 1, max_age)

    def confirms(self, answer: int, streak: int, max_age: float) -> bool:
        """True when the last ``streak`` probes, the latest within ``max_age`` s, got ``answer``."""
        return (self.answer == answer and self.streak >= streak
                and self.age is not None and self.age <= max_age)
