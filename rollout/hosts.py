"""Reaching app hosts: run the ``app-deploy`` contract and read the health agent.

One engine, two ways in: ``LocalHostAdapter`` (processes on this machine, from an inventory
file) and ``rollout.aws.SsmHostAdapter`` (SSM Run Command). Both return ``CommandResult``
instead of raising when a command fails, so the engine decides what a failure means.
"""
from __future__ import annotations

import http.client
import os
import subprocess
import threading
from typing import Callable, Mapping, Protocol, Sequence, TypeVar
from urllib.parse import urlsplit

from .contract import ContractError, ProbeView
from .model import AppHost, CommandResult

T = TypeVar("T")
R = TypeVar("R")


class HostUnreachable(RuntimeError):
    """A host (or its health agent) could not be asked anything."""


class HostAdapter(Protocol):
    def run(self, host: AppHost, args: Sequence[str], *, env: Mapping[str, str],
            timeout: float) -> CommandResult:
        """Run ``app-deploy ARGS`` on ``host`` with the contract's environment variables."""
        ...

    def run_on_all(self, hosts: Sequence[AppHost], args: Sequence[str], *,
                   env: Mapping[str, str], timeout: float) -> dict[str, CommandResult]:
        """The same command on several hosts at once, keyed by host name."""
        ...

    def probe_view(self, host: AppHost) -> ProbeView:
        """The host's health agent ``/agent`` page; raises HostUnreachable."""
        ...

    def probe_views(self, hosts: Sequence[AppHost]) -> dict[str, ProbeView | Exception]:
        """The same for several hosts at once; a host that cannot be read maps to the error."""
        ...


def in_parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[function(i) for i in items]`` with one thread per item, results in order.

    Daemon threads, so that an interrupted run (Ctrl-C, SIGTERM) can exit while commands on
    hosts finish on their own, as they would over SSM. The first worker exception is raised.
    """
    if len(items) <= 1:
        return [function(item) for item in items]
    results: list = [None] * len(items)
    errors: list[BaseException] = []

    def work(index: int, item: T) -> None:
        try:
            results[index] = function(item)
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, item), daemon=True,
                                name=f"rollout-{i}") for i, item in enumerate(items)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


class LocalHostAdapter:
    """Hosts of a local inventory: ``deploy_command`` + args as a process on this machine.

    Each command runs in its own session: like an SSM command, it finishes even if the
    rollout is killed, and a Ctrl-C meant for the rollout does not hit it mid-deploy.
    """

    def __init__(self, agent_timeout: float = 3.0) -> None:
        self.agent_timeout = agent_timeout

    def run(self, host: AppHost, args: Sequence[str], *, env: Mapping[str, str],
            timeout: float) -> CommandResult:
        if not host.deploy_command:
            return CommandResult(None, error=f"{host.name} has no deploy_command")
        argv = [*host.deploy_command, *args]
        environment = {**os.environ, **dict(host.env), **env}
        try:
            process = subprocess.Popen(argv, env=environment, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, start_new_session=True)
        except OSError as exc:
            return CommandResult(None, error=f"cannot start {argv[0]}: {exc}")
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Left running on purpose, as SSM would: the host's own lock serialises it with
            # whatever comes next. Its output is still drained so that it never dies of a
            # closed pipe.
            threading.Thread(target=process.communicate, daemon=True).start()
            return CommandResult(None, error=f"`{' '.join(args)}` did not finish within "
                                             f"{timeout:g}s")
        return CommandResult(process.returncode, stdout, stderr)

    def run_on_all(self, hosts: Sequence[AppHost], args: Sequence[str], *,
                   env: Mapping[str, str], timeout: float) -> dict[str, CommandResult]:
        results = in_parallel(lambda h: self.run(h, args, env=env, timeout=timeout), hosts)
        return {host.name: result for host, result in zip(hosts, results)}

    def probe_views(self, hosts: Sequence[AppHost]) -> dict[str, ProbeView | Exception]:
        def read(host: AppHost) -> ProbeView | Exception:
            try:
                return self.probe_view(host)
            except (HostUnreachable, ContractError) as exc:
                return exc
        return {h.name: view for h, view in zip(hosts, in_parallel(read, hosts))}

    def probe_view(self, host: AppHost) -> ProbeView:
        if not host.health_url:
            raise HostUnreachable(f"{host.name} has no health_url")
        parts = urlsplit(host.health_url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                          timeout=self.agent_timeout)
        try:
            conn.request("GET", "/agent")
            response = conn.getresponse()
            body = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise HostUnreachable(f"health agent of {host.name} at {parts.netloc}: "
                                  f"{exc.__class__.__name__}: {exc}") from exc
        finally:
            conn.close()
        if response.status != 200:
            raise HostUnreachable(f"health agent of {host.name} answered {response.status} "
                                  "for /agent")
        return ProbeView.parse(body)
