"""Wait for a fresh environment before its first rollout step.

The deploy job runs the rollout right after ``terraform apply``: new hosts may not be
registered with SSM yet and may still be running their first boot (packages, Docker, Caddy).
Before anything else, and bounded by one deadline, this waits until

1. every host of the environment is ``Online`` in SSM (``DescribeInstanceInformation``);
2. every host's first boot has completed: the platform's own boot state, not cloud-init's
   status, which is fixed for the whole boot and stays ``error`` after an operator fixed a
   failed step and resumed the boot (docs/hosts.md). ``boot-step --complete``, the boot's
   last script, writes ``/var/lib/platform-boot/complete`` once every step succeeded; a
   failed step is recorded in ``/var/lib/platform-boot/failed`` (its unit
   ``boot-<step>.service`` stays failed) and stops the wait naming the host and the step. A
   host booted before the marker existed counts as booted when cloud-init says ``done``;
3. Caddy's admin API answers on every load balancer.

Each host gets a progress line when its state changes, so a slow first boot is visible.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from .caddy_admin import CaddyAdmin, LoadBalancerError
from .hosts import in_parallel
from .report import StepLog

BOOT_STATE_DIR = "/var/lib/platform-boot"
# What the boot script prints first: complete, failed STEP, or cloud-init's status.
BOOTED = ("complete", "done")


def boot_script(state_dir: str = BOOT_STATE_DIR, poll_seconds: int = 5) -> str:
    """One line, whatever happened: ``boot complete``, ``boot failed STEP``, or ``boot
    STATUS`` (cloud-init's) when neither marker exists once cloud-init has finished.

    It waits while cloud-init runs and neither marker exists (the runner's timeout bounds
    it)."""
    return (f"d={state_dir}; s=; "
            "while [ ! -e \"$d/complete\" ] && [ ! -e \"$d/failed\" ]; do "
            "s=$(cloud-init status 2>/dev/null | sed -n 's/^status: //p'); "
            "case $s in running|'not started') ;; *) break ;; esac; "
            f"sleep {poll_seconds}; done; "
            "if [ -e \"$d/failed\" ]; then printf 'boot failed %s\\n' \"$(cat \"$d/failed\")\"; "
            "elif [ -e \"$d/complete\" ]; then echo 'boot complete'; "
            "else printf 'boot %s\\n' \"${s:-unknown}\"; fi")


class NotReady(RuntimeError):
    """The environment did not become ready; the message names the hosts and why."""


@dataclass(frozen=True)
class Instance:
    """A host to wait for: its name and instance ID."""

    name: str
    instance_id: str


class ReadinessWait:
    """The three waits, sharing one deadline."""

    def __init__(self, ssm, runner, log: StepLog, *, timeout: float = 1500.0,
                 poll: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ssm = ssm
        self.runner = runner
        self.log = log
        self.timeout = timeout
        self.poll = poll
        self.clock = clock
        self.sleep = sleep

    def wait(self, hosts: Sequence[Instance], admins: Sequence[CaddyAdmin]) -> None:
        deadline = self.clock() + self.timeout
        self.log.fleet(f"waiting up to {self.timeout:g}s for {len(hosts)} host(s) to be "
                       "online in SSM with their first boot finished")
        self._online(hosts, deadline)
        self._booted(hosts, deadline)
        self._admin_answers(admins, deadline)

    def _line(self, host: Instance, message: str) -> None:
        self.log.fleet(f"{host.name} ({host.instance_id}): {message}")

    def _online(self, hosts: Sequence[Instance], deadline: float) -> None:
        said: dict[str, str] = {}
        while True:
            online = self._ping_statuses([h.instance_id for h in hosts])
            waiting = []
            for host in hosts:
                state = online.get(host.instance_id, "not registered yet")
                if said.get(host.instance_id) != state:
                    said[host.instance_id] = state
                    self._line(host, "online in SSM" if state == "Online"
                               else f"SSM agent {state}")
                if state != "Online":
                    waiting.append(host)
            if not waiting:
                return
            if self.clock() + self.poll > deadline:
                names = ", ".join(h.name for h in waiting)
                raise NotReady(f"{names} not online in SSM within {self.timeout:g}s (instance "
                               "profile with AmazonSSMManagedInstanceCore? a way out through "
                               "the NAT gateway?)")
            self.sleep(self.poll)

    def _ping_statuses(self, ids: list[str]) -> dict[str, str]:
        statuses: dict[str, str] = {}
        try:
            pages = self.ssm.get_paginator("describe_instance_information").paginate(
                Filters=[{"Key": "InstanceIds", "Values": ids}])
            for page in pages:
                for info in page.get("InstanceInformationList", []):
                    statuses[info["InstanceId"]] = info.get("PingStatus", "unknown")
        except ClientError as exc:
            raise NotReady(f"cannot ask SSM which hosts are online: {exc}") from exc
        except BotoCoreError as exc:
            raise NotReady(f"cannot reach SSM: {exc}") from exc
        return statuses

    def _booted(self, hosts: Sequence[Instance], deadline: float) -> None:
        def check(host: Instance) -> str | None:
            remaining = max(deadline - self.clock(), 1.0)
            result = self.runner.run(host.instance_id, boot_script(), remaining)
            words = result.stdout.split() if result.ok else []
            if len(words) >= 2 and words[0] == "boot" and words[1] in BOOTED:
                self._line(host, "first boot done")
                return None
            if not result.ok:
                problem = f"{host.name}: cannot read its first boot ({result.reason()})"
            elif len(words) >= 3 and words[1] == "failed":
                problem = (f"{host.name}: first boot failed at step {words[2]} (systemctl "
                           f"status boot-{words[2]}.service, /var/log/cloud-init-output.log)")
            else:
                status = words[1] if len(words) >= 2 else "unknown"
                problem = (f"{host.name}: first boot not complete, cloud-init says {status!r} "
                           f"and {BOOT_STATE_DIR}/complete is missing (cloud-init status "
                           "--long; a resumed boot writes it at its end)")
            self._line(host, problem.split(": ", 1)[1])
            return problem

        problems = [p for p in in_parallel(check, list(hosts)) if p]
        if problems:
            raise NotReady("; ".join(problems))

    def _admin_answers(self, admins: Sequence[CaddyAdmin], deadline: float) -> None:
        for admin in admins:
            while True:
                try:
                    status, _ = admin.transport.request("GET", "/config/")
                    if status == 200:
                        self.log.fleet(f"{admin.name}: Caddy's admin API answers")
                        break
                    problem = f"answered {status}"
                except LoadBalancerError as exc:
                    problem = str(exc)
                if self.clock() + self.poll > deadline:
                    raise NotReady(f"{admin.name}: Caddy's admin API did not answer within "
                                   f"{self.timeout:g}s: {problem}")
                self.sleep(self.poll)
