"""The fleet on AWS: found by EC2 tags, reached through SSM Run Command (no SSH anywhere).

* Discovery: running instances tagged ``Environment=<env>`` with ``Role=app`` (the app hosts)
  and ``Role=lb`` (the Caddy load balancers: LB-01, and LB-02 with high availability; every
  one is handled); their ``Name`` tag (``production-APP-1``) names them.
* Commands: ``AWS-RunShellScript`` through ``send_command``, then ``get_command_invocation``
  until the invocation ends. ``Success`` and ``Failed`` carry the script's exit status;
  ``TimedOut``, ``Cancelled``, an undeliverable command, or an invocation SSM never shows
  (``InvocationDoesNotExist`` past a grace period) become a ``CommandResult`` with ``error``
  set, which the engine treats as a failed step.
* Caddy's admin API listens on each LB's localhost only: requests to it are curl commands run
  on that LB over SSM. The rollout lock is a lease file on the first LB by name
  (``rollout.locking.LeaseLock``).
"""
from __future__ import annotations

import base64
import math
import shlex
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from .caddy_admin import LoadBalancerError
from .contract import ContractError, ProbeView
from .hosts import HostUnreachable, in_parallel
from .locking import LeaseLock
from .model import APP_PORT, HEALTH_AGENT_PORT, AppHost, CommandResult, natural_key

SSM_DOCUMENT = "AWS-RunShellScript"
APP_DEPLOY = "/usr/local/bin/app-deploy"
AGENT_VIEW_URL = f"http://127.0.0.1:{HEALTH_AGENT_PORT}/agent"
CADDY_ADMIN_URL = "http://localhost:2019"
SEND_COMMAND_MAX_TARGETS = 50

# get_command_invocation statuses that will still change.
UNFINISHED = {"Pending", "InProgress", "Delayed", "Cancelling"}
_STATUS_MARK = "__rollout_http_status__"


class DiscoveryError(RuntimeError):
    """The environment's instances could not be listed, or are not what a rollout needs."""


@dataclass(frozen=True)
class LoadBalancerHost:
    """A Caddy load balancer as discovered (its private IP is where its probes come from)."""

    instance_id: str
    name: str
    private_ip: str | None


@dataclass(frozen=True)
class Fleet:
    """One environment's load balancers (in name order) and app hosts."""

    lbs: tuple[LoadBalancerHost, ...]
    app_hosts: tuple[AppHost, ...]
    # Every running host of the environment, app hosts and LBs included: (name, instance ID).
    every_host: tuple[tuple[str, str], ...] = ()

    @property
    def lb(self) -> LoadBalancerHost:
        """The first load balancer by name: it holds the rollout lock."""
        return self.lbs[0]


def discover(ec2, environment: str, *, app_port: int = APP_PORT,
             health_port: int = HEALTH_AGENT_PORT) -> Fleet:
    """Find the running load balancers and app hosts of ``environment`` by their tags."""
    filters = [
        {"Name": "tag:Environment", "Values": [environment]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    try:
        pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
        instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    except (ClientError, BotoCoreError) as exc:
        raise DiscoveryError(f"cannot list EC2 instances: {exc}") from exc

    lbs: list[LoadBalancerHost] = []
    apps: list[AppHost] = []
    names: dict[str, int] = {}
    every: list[tuple[str, str]] = []
    for instance in instances:
        if instance.get("State", {}).get("Name") != "running":
            continue
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        if tags.get("Environment") != environment:
            continue
        instance_id = instance["InstanceId"]
        name = tags.get("Name") or instance_id
        ip = instance.get("PrivateIpAddress")
        every.append((name, instance_id))
        if tags.get("Role") == "lb":
            lbs.append(LoadBalancerHost(instance_id, name, ip))
        elif tags.get("Role") == "app":
            if not ip:
                raise DiscoveryError(f"app host {name} ({instance_id}) has no private IP")
            names[name] = names.get(name, 0) + 1
            apps.append(AppHost(name=name, upstream=f"{ip}:{app_port}", instance_id=instance_id,
                                health_url=f"http://{ip}:{health_port}/health"))
    if not lbs:
        raise DiscoveryError(f"no running instance tagged Environment={environment}, Role=lb")
    missing = [f"{lb.name} ({lb.instance_id})" for lb in lbs if not lb.private_ip]
    if missing:
        raise DiscoveryError(f"load balancer {', '.join(missing)} has no private IP")
    # Two hosts with one Name tag would be indistinguishable in the report.
    apps = [AppHost(f"{h.name} ({h.instance_id})", h.upstream, h.health_url, (), h.instance_id)
            if names[h.name] > 1 else h for h in apps]
    apps.sort(key=lambda h: natural_key(h.name))
    lbs.sort(key=lambda lb: natural_key(lb.name))
    every.sort(key=lambda host: natural_key(host[0]))
    return Fleet(lbs=tuple(lbs), app_hosts=tuple(apps), every_host=tuple(every))


class SsmRunner:
    """Runs a shell script on instances with ``AWS-RunShellScript`` and waits for the result."""

    def __init__(self, ssm, *, poll_interval: float = 1.0, first_poll: float = 0.2,
                 delivery_grace: float = 30.0, comment: str = "rolling update",
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ssm = ssm
        # Most commands finish within a second or two: poll soon, then back off.
        self.first_poll = min(first_poll, poll_interval)
        self.poll_interval = poll_interval
        self.delivery_grace = delivery_grace
        self.comment = comment[:100]
        self.clock = clock
        self.sleep = sleep

    def run(self, instance_id: str, script: str, timeout: float) -> CommandResult:
        return self.run_many([instance_id], script, timeout)[instance_id]

    def run_many(self, instance_ids: Sequence[str], script: str, timeout: float
                 ) -> dict[str, CommandResult]:
        ids = list(instance_ids)
        chunks = [ids[i:i + SEND_COMMAND_MAX_TARGETS]
                  for i in range(0, len(ids), SEND_COMMAND_MAX_TARGETS)]
        results: dict[str, CommandResult] = {}
        for part in in_parallel(lambda c: self._run_chunk(c, script, timeout), chunks):
            results.update(part)
        return results

    def _run_chunk(self, ids: list[str], script: str, timeout: float
                   ) -> dict[str, CommandResult]:
        execution_timeout = max(1, math.ceil(timeout))
        try:
            sent = self.ssm.send_command(
                InstanceIds=ids, DocumentName=SSM_DOCUMENT, Comment=self.comment,
                TimeoutSeconds=max(30, math.ceil(self.delivery_grace)),
                Parameters={"commands": [script], "executionTimeout": [str(execution_timeout)]})
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "ClientError")
            hint = (" (not running, or not registered with SSM: agent and instance profile?)"
                    if code == "InvalidInstanceId" else "")
            return {i: CommandResult(None, error=f"SSM send_command {code}: "
                                                 f"{error.get('Message', '')}{hint}") for i in ids}
        except BotoCoreError as exc:
            return {i: CommandResult(None, error=f"SSM send_command: {exc}") for i in ids}

        command_id = sent["Command"]["CommandId"]
        results: dict[str, CommandResult] = {}
        first_missing: dict[str, float] = {}
        deadline = self.clock() + execution_timeout + self.delivery_grace + 30
        delay = self.first_poll
        while True:
            for instance_id in [i for i in ids if i not in results]:
                outcome = self._poll(command_id, instance_id, first_missing)
                if outcome is not None:
                    results[instance_id] = outcome
            pending = [i for i in ids if i not in results]
            if not pending:
                return results
            if self.clock() >= deadline:
                self._cancel(command_id, pending)
                for instance_id in pending:
                    results[instance_id] = CommandResult(
                        None, error=f"SSM command {command_id} gave no result within "
                                    f"{execution_timeout + self.delivery_grace:g}s; cancelled")
                return results
            self.sleep(delay)
            delay = min(delay * 2, self.poll_interval)

    def _poll(self, command_id: str, instance_id: str, first_missing: dict[str, float]
              ) -> CommandResult | None:
        try:
            invocation = self.ssm.get_command_invocation(CommandId=command_id,
                                                         InstanceId=instance_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvocationDoesNotExist":
                # Normal for a moment right after send_command; for good if never delivered.
                since = first_missing.setdefault(instance_id, self.clock())
                if self.clock() - since < self.delivery_grace:
                    return None
                return CommandResult(None, error=f"SSM never showed command {command_id} on "
                                                 f"{instance_id} (InvocationDoesNotExist for "
                                                 f"{self.delivery_grace:g}s): is its SSM agent "
                                                 "online?")
            if code in ("ThrottlingException", "TooManyRequestsException"):
                return None
            return CommandResult(None, error=f"SSM get_command_invocation {code}: {exc}")
        except BotoCoreError as exc:
            return CommandResult(None, error=f"SSM get_command_invocation: {exc}")
        return self._outcome(command_id, invocation)

    @staticmethod
    def _outcome(command_id: str, invocation: dict) -> CommandResult | None:
        status = invocation.get("Status", "")
        details = invocation.get("StatusDetails", "") or status
        stdout = invocation.get("StandardOutputContent", "") or ""
        stderr = invocation.get("StandardErrorContent", "") or ""
        code = invocation.get("ResponseCode", -1)
        if status in UNFINISHED:
            return None
        if status == "Success":
            return CommandResult(0, stdout, stderr)
        if status == "Failed":
            if isinstance(code, int) and code > 0:
                return CommandResult(code, stdout, stderr)
            return CommandResult(None, stdout, stderr,
                                 error=f"SSM command {command_id} failed ({details})")
        if status == "TimedOut":
            why = ("was not delivered in time (instance offline?)"
                   if details == "DeliveryTimedOut" else "ran past its execution timeout")
            return CommandResult(None, stdout, stderr,
                                 error=f"SSM command {command_id} {why} ({details})")
        if status == "Cancelled":
            return CommandResult(None, stdout, stderr,
                                 error=f"SSM command {command_id} was cancelled ({details})")
        return CommandResult(None, stdout, stderr,
                             error=f"SSM command {command_id} ended as {status or 'unknown'}")

    def _cancel(self, command_id: str, instance_ids: list[str]) -> None:
        try:
            self.ssm.cancel_command(CommandId=command_id, InstanceIds=instance_ids)
        except (ClientError, BotoCoreError):
            pass


def shell_command(program: str, args: Sequence[str], env: Mapping[str, str]) -> str:
    """``VAR=value ... program args``, every word quoted for sh."""
    assignments = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    return " ".join([*assignments, shlex.quote(program), *(shlex.quote(a) for a in args)])


class SsmHostAdapter:
    """App hosts reached through SSM: ``app-deploy`` and the health agent's ``/agent``."""

    def __init__(self, runner: SsmRunner, *, app_deploy: str = APP_DEPLOY,
                 agent_url: str = AGENT_VIEW_URL, probe_timeout: float = 30.0) -> None:
        self.runner = runner
        self.app_deploy = app_deploy
        self.agent_url = agent_url
        self.probe_timeout = probe_timeout

    def run(self, host: AppHost, args: Sequence[str], *, env: Mapping[str, str],
            timeout: float) -> CommandResult:
        return self.runner.run(host.instance_id, shell_command(self.app_deploy, args, env),
                               timeout)

    def run_on_all(self, hosts: Sequence[AppHost], args: Sequence[str], *,
                   env: Mapping[str, str], timeout: float) -> dict[str, CommandResult]:
        results = self.runner.run_many([h.instance_id for h in hosts],
                                       shell_command(self.app_deploy, args, env), timeout)
        return {h.name: results[h.instance_id] for h in hosts}

    def _agent_script(self) -> str:
        return f"curl -fsS --max-time 3 {shlex.quote(self.agent_url)}"

    def probe_view(self, host: AppHost) -> ProbeView:
        result = self.runner.run(host.instance_id, self._agent_script(), self.probe_timeout)
        return self._view(host, result)

    def probe_views(self, hosts: Sequence[AppHost]) -> dict[str, ProbeView | Exception]:
        results = self.runner.run_many([h.instance_id for h in hosts], self._agent_script(),
                                       self.probe_timeout)
        views: dict[str, ProbeView | Exception] = {}
        for host in hosts:
            try:
                views[host.name] = self._view(host, results[host.instance_id])
            except (HostUnreachable, ContractError) as exc:
                views[host.name] = exc
        return views

    @staticmethod
    def _view(host: AppHost, result: CommandResult) -> ProbeView:
        if not result.ok:
            raise HostUnreachable(f"health agent of {host.name}: {result.reason()}")
        lines = result.stdout.strip().splitlines()
        return ProbeView.parse(lines[-1] if lines else "")


class SsmAdminTransport:
    """Caddy's admin API on LB-01, reached by running curl there over SSM."""

    def __init__(self, runner: SsmRunner, lb: LoadBalancerHost, *,
                 admin_url: str = CADDY_ADMIN_URL, timeout: float = 60.0) -> None:
        self.runner = runner
        self.lb = lb
        self.admin_url = admin_url.rstrip("/")
        self.timeout = timeout

    def describe(self) -> str:
        return f"{self.admin_url} on {self.lb.name} ({self.lb.instance_id}) via SSM"

    def script(self, method: str, path: str, body: bytes | None) -> str:
        curl = ["curl", "-sS", "--max-time", "20", "-X", method,
                "-w", f"\\n{_STATUS_MARK} %{{http_code}}"]
        if body is not None:
            curl += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        command = " ".join(shlex.quote(w) for w in [*curl, self.admin_url + path])
        if body is None:
            return command
        encoded = base64.b64encode(body).decode()
        return f"printf %s {shlex.quote(encoded)} | base64 -d | {command}"

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        result = self.runner.run(self.lb.instance_id, self.script(method, path, body),
                                 self.timeout)
        if not result.ok:
            raise LoadBalancerError(f"Caddy admin API unreachable ({self.describe()}): "
                                    f"{result.reason()}")
        text, _, status = result.stdout.rpartition(_STATUS_MARK)
        try:
            code = int(status.strip())
        except ValueError:
            raise LoadBalancerError(f"unexpected output from curl on {self.lb.name}: "
                                    f"{result.stdout[-200:]!r}") from None
        if code == 0:
            raise LoadBalancerError(f"Caddy admin API unreachable ({self.describe()})")
        return code, text.rstrip("\n").encode()


def record_deployed_image(ssm, name: str, image: str) -> str | None:
    """Record ``image`` as the one every app host serves; return a problem, or None.

    A plain String (an image reference is no secret), overwritten by each successful rollout;
    APP hosts read it at their first boot (``app-first-boot``).
    """
    try:
        ssm.put_parameter(Name=name, Value=image, Type="String", Overwrite=True,
                          Description="App image of the last successful rolling update")
    except (ClientError, BotoCoreError) as exc:
        return (f"every host serves {image}, but it could not be recorded in {name} ({exc}): "
                "hosts created later would start an older image; run the rollout again")
    return None


def lease_lock(runner: SsmRunner, lb: LoadBalancerHost, *, ttl: float,
               force: bool = False) -> LeaseLock:
    """The rollout lock as a lease file on LB-01."""
    return LeaseLock(lambda script: runner.run(lb.instance_id, script, 60), ttl=ttl,
                     force=force)
