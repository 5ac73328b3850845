"""One rollout at a time.

Locally the lock is an ``flock`` on a file: the kernel drops it when the holder dies, so a run
killed with SIGKILL never blocks the next one. On AWS two runs may start on two different
machines (two workflow runs, or a person and the pipeline), so the lock lives on LB-01 as a
*lease*: a file holding an expiry time and the owner's token, written under ``flock`` by a
small shell script run there over SSM. The holder renews it before every batch; a run that
died stops renewing and its lease lapses after ``ttl`` seconds (``--break-lock`` takes it at
once).
"""
from __future__ import annotations

import fcntl
import getpass
import os
import shlex
import socket
import time
import uuid
from typing import Callable, Protocol

from .model import CommandResult


class LockError(RuntimeError):
    """The lock is held by another run, or could not be taken or kept."""


class RolloutLock(Protocol):
    def acquire(self) -> None: ...
    def refresh(self) -> None: ...
    def release(self) -> None: ...


def describe_owner() -> str:
    """Who holds the lock, in words a person can act on."""
    run = os.environ.get("GITHUB_RUN_ID")
    who = os.environ.get("GITHUB_ACTOR") or _user()
    where = f"workflow run {run}" if run else f"pid {os.getpid()}"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"{who}@{socket.gethostname()} ({where}) since {since}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class FileLock:
    """An exclusive, non-blocking ``flock`` on a local file (local inventories)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another run"
            os.close(fd)
            raise LockError(f"another rollout holds {self.path}: {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (describe_owner() + "\n").encode(), 0)
        self._fd = fd

    def refresh(self) -> None:
        if self._fd is None:
            raise LockError("the rollout lock is not held")

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


LEASE_SCRIPT = r"""set -eu
dir=%(dir)s
mkdir -p "$dir"
exec 9>"$dir/guard"
flock -w 20 9
lease="$dir/lease"
now=$(date +%%s)
action=%(action)s
owner=%(owner)s
if [ -s "$lease" ]; then
  read -r expires holder rest < "$lease" || true
else
  expires=0; holder=-; rest=
fi
case "$action" in
  release)
    if [ "$holder" = "$owner" ]; then rm -f "$lease"; fi
    echo RELEASED; exit 0;;
  acquire|refresh)
    if [ "$holder" != "$owner" ] && [ "${expires:-0}" -gt "$now" ] && [ %(force)s != 1 ]; then
      echo "HELD $((expires - now)) $rest"; exit 0
    fi
    if [ "$action" = refresh ] && [ "$holder" != "$owner" ]; then
      echo "LOST $rest"; exit 0
    fi
    printf '%%s %%s %%s\n' "$((now + %(ttl)d))" "$owner" %(description)s > "$lease.new"
    mv "$lease.new" "$lease"
    echo "ACQUIRED %(ttl)d";;
esac
"""


class LeaseLock:
    """A lease file on the load balancer host, written through ``run_script`` (SSM on AWS)."""

    def __init__(self, run_script: Callable[[str], CommandResult], *, ttl: float,
                 directory: str = "/var/lib/rolling-update", force: bool = False) -> None:
        self._run = run_script
        self.ttl = max(60, int(ttl))
        self.directory = directory
        self.force = force
        self.owner = uuid.uuid4().hex
        self.description = describe_owner()
        self._held = False

    def script(self, action: str) -> str:
        return LEASE_SCRIPT % {
            "dir": shlex.quote(self.directory), "action": action, "owner": self.owner,
            "ttl": self.ttl, "force": "1" if self.force and action == "acquire" else "0",
            "description": shlex.quote(self.description.replace("\n", " ")),
        }

    def _call(self, action: str) -> str:
        result = self._run(self.script(action))
        if not result.ok:
            raise LockError(f"could not {action} the rollout lease on the load balancer: "
                            f"{result.reason()}")
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def acquire(self) -> None:
        answer = self._call("acquire")
        if answer.startswith("HELD"):
            _, seconds, *holder = answer.split(" ", 2) + [""]
            raise LockError(f"another rollout holds the lease on the load balancer: "
                            f"{' '.join(holder).strip() or 'unknown'}; it lapses in {seconds}s "
                            f"unless renewed (--break-lock takes it if that run is dead)")
        if not answer.startswith("ACQUIRED"):
            raise LockError(f"unexpected answer from the lease script: {answer!r}")
        self._held = True

    def refresh(self) -> None:
        answer = self._call("refresh")
        if not answer.startswith("ACQUIRED"):
            self._held = False
            raise LockError(f"lost the rollout lease on the load balancer ({answer})")

    def release(self) -> None:
        if self._held:
            self._held = False
            self._call("release")
