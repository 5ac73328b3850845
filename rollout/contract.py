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
class Probe:
    """The answers one load balancer (or all of them together) got lately."""

    answer: int | None
    streak: int
    age: float | None

    def confirms(self, answer: int, streak: int, max_age: float) -> bool:
        """The last ``streak`` probes, the latest within ``max_age`` s, got ``answer``."""
        return (self.answer == answer and self.streak >= streak
                and self.age is not None and self.age <= max_age)


@dataclass(frozen=True)
class ProbeView:
    """What a host's health agent last answered the load balancers (its ``/agent`` page).

    ``answer``/``streak``/``age`` count every probe together; ``probers`` per source address
    (one per load balancer).
    """

    drained: bool
    answer: int | None
    streak: int
    age: float | None
    probers: tuple[tuple[str, Probe], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "ProbeView":
        try:
            data = json.loads(text)
            probe = data["probe"]
            probers = tuple(sorted(
                (str(source), Probe(p["answer"], int(p["streak"]), p["age"]))
                for source, p in (data.get("probers") or {}).items()))
            return cls(drained=bool(data["drained"]), answer=probe["answer"],
                       streak=int(probe["streak"]), age=probe["age"], probers=probers)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ContractError(f"health agent /agent page is not what the agent serves: "
                                f"{text[:120]!r}") from exc

    def serving(self, max_age: float, sources: tuple[str | None, ...] = (None,)) -> bool:
        """Every load balancer's latest probe, recent enough, found the host up and not
        drained."""
        return not self.drained and self.confirms(200, 1, max_age, sources)

    def confirms(self, answer: int, streak: int, max_age: float,
                 sources: tuple[str | None, ...] = (None,)) -> bool:
        """The last ``streak`` probes of every load balancer got ``answer``, the latest
        within ``max_age`` s.

        ``sources``: each load balancer's probe address, None when unknown. One load
        balancer of unknown address is judged on every probe together; otherwise each known
        address must confirm, and as many distinct recent probers as load balancers must.
        """
        if len(sources) == 1 and sources[0] is None:
            return Probe(self.answer, self.streak, self.age).confirms(answer, streak, max_age)
        probers = dict(self.probers)
        if not all(probers[s].confirms(answer, streak, max_age)
                   for s in sources if s is not None and s in probers):
            return False
        if any(s is not None and s not in probers for s in sources):
            return False
        agreeing = [p for p in probers.values() if p.confirms(answer, streak, max_age)]
        return len(agreeing) >= len(sources)

    def describe(self, sources: tuple[str | None, ...] = (None,)) -> str:
        """What the load balancers last got, for a log line."""
        if len(sources) == 1 and sources[0] is None or not self.probers:
            if not self.answer:
                return "no probe yet"
            return f"{self.answer} x{self.streak}, {self.age}s ago"
        return ", ".join(f"{source}: {p.answer} x{p.streak}, {p.age}s ago"
                         for source, p in self.probers)
