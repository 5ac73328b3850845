"""The rolling update: move every app host to one image, a batch at a time, with no lost request.

A run, in order (no host is touched before step 3):

1. read Caddy's upstream pool (the admin API must answer, or no host is touched);
2. take the rollout lock, read every host's ``app-deploy status``;
3. restore hosts a killed run left drained (undrain them once healthy);
4. reconcile Caddy's upstream list with the hosts that exist: hosts that joined are added once
   healthy, hosts that are gone are removed once they have no request in flight - one config
   change for all of them, none when nothing changed (``--sync-only`` stops here);
5. skip hosts already on the image, split the others into batches, and for each batch:
   check capacity (a batch whose serving hosts would leave fewer than ``min_healthy`` serving
   is not started, and never the last one; a fleet that serves nothing yet has nothing to
   protect); pause if a host outside the batch stopped serving, and stop if it does not come
   back in time; drain -> confirm Caddy took the hosts out -> ``app-deploy IMAGE`` -> N
   consecutive healthy checks -> undrain -> confirm Caddy put them back;
6. if a host fails: it goes back to its previous image and rejoins once healthy, the rollout
   stops, and the hosts it already updated are rolled back the same way (unless
   ``keep_updated``). The report says where every host ended.

The host-side commands are described in ``rollout.contract``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from . import contract
from .batching import BatchSize, MinHealthy, make_batches
from .caddy_admin import CaddyAdmin, LoadBalancerError, UpstreamPool
from .contract import ContractError, HostStatus, ProbeView
from .hosts import HostAdapter, HostUnreachable, in_parallel
from .locking import LockError, RolloutLock
from .model import AppHost, natural_key
from .report import HostRow, RolloutReport, StepLog

STATUS_TIMEOUT = 60.0
HEALTHY, DRAINING = 200, 503


class RolloutRefused(RuntimeError):
    """The rollout did not start; no host was touched."""


class PlanError(ValueError):
    """The options do not fit this fleet (e.g. a batch as large as the fleet)."""


@dataclass(frozen=True)
class RolloutOptions:
    """How a rollout behaves; all but the last three fields are CLI flags."""

    image: str | None
    batch_size: BatchSize = BatchSize(1)
    # None: the fleet minus one batch (see MinHealthy).
    min_healthy: MinHealthy | None = None
    health_timeout: float = 120.0
    drain_seconds: float = 10.0
    healthy_checks: int = 3
    check_interval: float = 1.0
    keep_updated: bool = False
    dry_run: bool = False
    sync_only: bool = False
    # Pull and start of one container, on top of health_timeout and drain_seconds.
    command_timeout: float = 600.0
    # Extra time allowed to see the load balancer react, on top of its own probe timing
    # (covers the latency of reading a health agent, e.g. over SSM).
    lb_slack: float = 5.0
    # A host created by the apply that ran just before may still be running its user data
    # (Docker, image pull): it gets this long to become healthy and join.
    join_timeout: float = 900.0
    # How long a host outside the batch that stopped serving is waited for before the
    # rollout stops; None: health_timeout.
    outside_wait: float | None = None

    def __post_init__(self) -> None:
        if not self.sync_only and not self.image:
            raise ValueError("an image is required unless sync_only")
        if self.health_timeout <= 0 or self.drain_seconds < 0 or self.check_interval <= 0:
            raise ValueError("health_timeout and check_interval must be > 0, drain_seconds >= 0")
        if self.healthy_checks < 1:
            raise ValueError("healthy_checks must be >= 1")

    def contract_env(self) -> dict[str, str]:
        return {contract.ENV_DRAIN_SECONDS: f"{self.drain_seconds:g}",
                contract.ENV_HEALTH_TIMEOUT: f"{self.health_timeout:g}"}


@dataclass
class _Host:
    """A host's record for the run."""

    host: AppHost
    position: int
    row: HostRow
    status: HostStatus | None = None
    status_error: str | None = None
    member: bool = True
    # Served at the last look: if it stops while outside a batch, the rollout pauses.
    expect_serving: bool = False
    notes: list[str] = field(default_factory=list)


class RollingUpdate:
    """Runs one rollout (or one upstream sync) over a fleet; ``run()`` returns the report."""

    def __init__(self, *, environment: str, hosts: Sequence[AppHost], host_adapter: HostAdapter,
                 lb: CaddyAdmin | Sequence[CaddyAdmin], lock: RolloutLock,
                 options: RolloutOptions, log: StepLog,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        ordered = sorted(hosts, key=lambda h: natural_key(h.name))
        self.environment = environment
        self.adapter = host_adapter
        # Every load balancer in front of the app hosts: a host is out only once every one has
        # taken it out, and back only once every one has put it back.
        self.lbs = list(lb) if isinstance(lb, (list, tuple)) else [lb]
        self.sources = tuple(b.probe_source for b in self.lbs)
        # Probes are told apart by their source address: without every LB's, none can be.
        if len(self.sources) > 1 and None in self.sources:
            self.sources = (None,) * len(self.sources)
        self.lock = lock
        self.options = options
        self.log = log
        self.clock = clock
        self.sleep = sleep
        self.env = options.contract_env()
        self.hosts = [_Host(h, i + 1, HostRow(h.name)) for i, h in enumerate(ordered)]
        self.total = len(self.hosts)
        log.name_width = max([len(h.host.name) for h in self.hosts] + [log.name_width])
        self.extra_rows: list[HostRow] = []
        # Each load balancer's upstream pool, read at the start of the run.
        self.pools: list[UpstreamPool] = []
        self.failure: str | None = None
        self.per_batch = 1
        # A host outside every batch stopped serving and did not come back.
        self.outside_loss = False
        self._failure_lock = threading.Lock()

    @property
    def pool(self) -> UpstreamPool:
        """Every load balancer's upstreams at once, with the slowest health timing."""
        return _combined(self.pools)

    # ----------------------------------------------------------------------------- the run

    def run(self) -> RolloutReport:
        if not self.hosts:
            raise RolloutRefused(f"no app hosts found for environment {self.environment!r}")
        opts = self.options
        for lb in self.lbs:
            self.log.fleet(f"reading Caddy's upstream pool at {lb.describe()}")
            try:
                self.pools.append(lb.pool())
            except LoadBalancerError as exc:
                raise RolloutRefused(f"{exc}; no host was touched") from exc
        self.log.fleet(
            f"{len(self.pool.dials)} upstreams in {len(self.lbs)} Caddy load balancer(s); "
            f"health probe every "
            f"{self.pool.interval:g}s, out after {self.pool.fails} failed, back after "
            f"{self.pool.passes} passed")
        if not opts.dry_run:
            try:
                self.lock.acquire()
            except LockError as exc:
                raise RolloutRefused(f"{exc}; no host was touched") from exc
        try:
            return self._run_locked()
        finally:
            if not opts.dry_run:
                try:
                    self.lock.release()
                except LockError as exc:
                    self.log.fleet(f"warning: {exc}")

    def _run_locked(self) -> RolloutReport:
        opts = self.options
        members = set.intersection(*(set(p.dials) for p in self.pools))
        for h in self.hosts:
            h.member = h.host.upstream in members
        self._read_statuses(self.hosts)
        for h in self.hosts:
            h.row.old_image = h.status.image if h.status else None
        broken = [h for h in self.hosts if h.member and h.status is None]
        if broken:
            names = ", ".join(f"{h.host.name} ({h.status_error})" for h in broken)
            raise RolloutRefused(f"cannot read the status of {names}; fix or remove these hosts "
                                 "first; no host was touched")
        per_batch = self._check_batch_size()

        self._restore_stranded()
        self._sync_upstreams()
        if opts.sync_only:
            return self._finish(sync_only=True)

        serving = [h for h in self.hosts if h.member]
        # Hosts that serve nobody now go first: fixing them adds capacity before a healthy
        # host is taken out.
        todo = sorted((h for h in serving if not self._is_current(h)),
                      key=lambda h: bool(h.status and h.status.healthy and not h.status.drained))
        for h in serving:
            if h not in todo:
                h.row.result = "already current"
                self._host_log(h, f"already on {opts.image}: skipped")
        if not todo:
            self.log.fleet(f"every host in the load balancer is already on {opts.image}")
            return self._finish()
        batches = make_batches(todo, per_batch)
        plan = " | ".join(", ".join(h.host.name for h in b) for b in batches)
        self.log.fleet(f"plan: {len(todo)} of {self.total} hosts to {opts.image} in "
                       f"{len(batches)} batch(es) of up to {per_batch}, keeping at least "
                       f"{self._min_healthy(len(serving))} serving: {plan}")
        if opts.dry_run:
            for h in todo:
                h.row.result = "would update"
            return self._finish()

        views = self.adapter.probe_views([h.host for h in serving])
        for h in serving:
            h.expect_serving = self._serving(views.get(h.host.name))
        updated = self._roll(batches, opts.image, label="batch")
        if self.failure:
            for h in todo:
                if h.row.result == "not started":
                    h.row.result = "not started (rollout stopped)"
            if updated and (opts.keep_updated or self.outside_loss):
                why = ("--keep-updated" if opts.keep_updated else "rolling back would take "
                       "more hosts out while capacity is short")
                self.log.fleet(f"keeping {len(updated)} updated host(s) on {opts.image} "
                               f"({why})")
                for h in updated:
                    h.row.result = "updated (kept)"
            elif updated:
                self._roll_back(updated)
        return self._finish()

    # ------------------------------------------------------------------------- preflight

    def _check_batch_size(self) -> int:
        # A percentage is of the hosts that exist (joining ones included); whether a batch
        # may really leave is decided again, on fresh statuses, before each batch.
        fleet = len(self.hosts)
        per_batch = self.options.batch_size.hosts(fleet)
        self.per_batch = per_batch
        if self.options.sync_only or all(self._is_current(h) for h in self.hosts):
            return per_batch
        if not any(h.status and h.status.healthy and not h.status.drained for h in self.hosts):
            # Nothing serves yet (a fresh environment): there is no capacity to protect.
            return per_batch
        if fleet < 2:
            raise PlanError(f"the fleet has {fleet} app host: it cannot be updated without "
                            "downtime; add a host (a rolling update needs at least 2)")
        if per_batch >= fleet:
            raise PlanError(f"--batch-size {self.options.batch_size} means {per_batch} of "
                            f"{fleet} hosts at once, leaving none to serve; use at most "
                            f"{fleet - 1} (or {100 * (fleet - 1) // fleet}%)")
        room = fleet - per_batch
        if self._min_healthy(fleet) > room:
            raise PlanError(f"--min-healthy {self.options.min_healthy} means "
                            f"{self._min_healthy(fleet)} "
                            f"of {fleet} hosts must keep serving, which leaves no room for a "
                            f"batch of {per_batch}; use at most {room} (or "
                            f"{100 * room // fleet}%), or a smaller --batch-size")
        return per_batch

    def _min_healthy(self, members: int) -> int:
        """Hosts of the load balancer's ``members`` that must keep serving during a batch."""
        if self.options.min_healthy:
            return self.options.min_healthy.hosts(members)
        return max(members - self.per_batch, 1)

    def _is_current(self, h: _Host) -> bool:
        s = h.status
        return bool(s and s.image == self.options.image and s.healthy and not s.drained)

    # -------------------------------------------------------------- killed-run recovery

    def _restore_stranded(self) -> None:
        stranded = [h for h in self.hosts if h.member and h.status and h.status.drained]
        if not stranded:
            return
        if self.options.dry_run:
            for h in stranded:
                self._host_log(h, "is drained (left by an interrupted run?): would undrain it "
                                  "once healthy")
            return
        in_parallel(self._restore_one, stranded)

    def _restore_one(self, h: _Host) -> None:
        self._host_log(h, "is drained (left by an interrupted run?): restoring it")
        # drain waits for any app-deploy still running there (the host's own lock) and returns
        # at once if the switch has been set for long enough.
        result = self._run(h, [contract.DRAIN], self.options.drain_seconds
                           + self.options.command_timeout + self.options.health_timeout)
        if not result.ok:
            self._host_log(h, f"could not take its deploy lock: {result.reason()}")
            return
        if not self._wait_healthy(h, image=None, timeout=self.options.health_timeout,
                                  give_up_when_unhealthy=True):
            self._host_log(h, "its app is not healthy: it stays drained until redeployed")
            return
        if self._undrain_and_confirm(h):
            h.notes.append("undrained (left drained by an earlier run)")
            self._refresh_status(h)

    # ----------------------------------------------------------------- membership sync

    def _sync_upstreams(self) -> None:
        opts = self.options
        wanted = {h.host.upstream for h in self.hosts}
        joining = [h for h in self.hosts if not h.member]
        leaving = [u for u in self.pool.upstreams if u["dial"] not in wanted]
        if not joining and not leaving:
            self.log.fleet(f"Caddy's upstreams match the {self.total} app hosts")
            return
        self.log.fleet("Caddy's upstreams differ from the app hosts: "
                       + ", ".join([f"+{h.host.name} ({h.host.upstream})" for h in joining]
                                   + [f"-{u['dial']}" for u in leaving]))
        ready: list[_Host] = []
        if opts.dry_run:
            ready = [h for h in joining if h.status and h.status.healthy]
            for h in joining:
                h.row.result = "would join" if h in ready else "would wait to join (unhealthy)"
            for u in leaving:
                self.extra_rows.append(HostRow(u["dial"], result="would leave the LB"))
            return
        if joining:
            ok = in_parallel(self._prepare_joining, joining)
            ready = [h for h, good in zip(joining, ok) if good]
        if leaving:
            self._wait_leaving_idle([u["dial"] for u in leaving])

        kept_serving = [h for h in self.hosts if h.member and h.status and h.status.healthy
                        and not h.status.drained]
        keep_all = bool(leaving and not kept_serving and not ready)
        if keep_all:
            self.log.fleet("refusing to remove upstreams: no healthy host would be left")
            leaving = []
        failure = None
        # One config change per load balancer, none where its list is already right.
        for index, (lb, pool) in enumerate(zip(self.lbs, self.pools)):
            kept = [u for u in pool.upstreams if keep_all or u["dial"] in wanted]
            present = {u["dial"] for u in kept}
            new_list = kept + [{"dial": h.host.upstream} for h in ready
                               if h.host.upstream not in present]
            if [u["dial"] for u in new_list] == pool.dials:
                continue
            try:
                lb.set_upstreams(new_list)
            except LoadBalancerError as exc:
                self.log.fleet(f"could not update the upstreams of {lb.name}: {exc}")
                failure = failure or exc
                continue
            self.log.fleet(f"{lb.name} now has {len(new_list)} upstreams (one config change)")
            self.pools[index] = replace(pool, upstreams=tuple(new_list))
        if failure:
            for h in ready:
                h.row.result, h.row.ok = f"not joined: {failure}", False
            return
        for u in leaving:
            self.extra_rows.append(HostRow(u["dial"], result="left the LB"))
        for h in ready:
            h.member = True
            if self._confirm_lb(h, HEALTHY, self.pool.passes):
                h.notes.append("joined the LB")
                self._host_log(h, "joined the load balancer")
            else:
                h.row.ok = False
                h.notes.append("joined, but the LB has not confirmed it healthy")

    def _prepare_joining(self, h: _Host) -> bool:
        self._host_log(h, "is not in Caddy's upstreams: waiting for it to be healthy to join")
        timeout = max(self.options.join_timeout, self.options.health_timeout)
        # While it is not up yet, ask every few seconds, not every check interval.
        if not self._wait_healthy(h, image=None, timeout=timeout,
                                  retry_after=max(self.options.check_interval, 5.0)):
            h.row.result, h.row.ok = "not joined: never healthy", False
            self._host_log(h, f"was not healthy within {timeout:g}s: not added to the load "
                              "balancer")
            return False
        if h.status and h.status.drained:
            result = self._run(h, [contract.UNDRAIN], self.options.command_timeout)
            if not result.ok:
                h.row.result, h.row.ok = f"not joined: undrain failed: {result.reason()}", False
                return False
        return True

    def _wait_leaving_idle(self, dials: list[str]) -> None:
        deadline = self.clock() + max(self.options.drain_seconds, 1.0)
        busy = dials
        while True:
            try:
                counts = self._in_flight()
            except LoadBalancerError as exc:
                self.log.fleet(f"warning: cannot read requests in flight ({exc})")
                return
            busy = [d for d in dials if counts.get(d, 0) > 0]
            if not busy or self.clock() >= deadline:
                break
            self.sleep(0.2)
        if busy:
            self.log.fleet(f"warning: {', '.join(busy)} still have requests in flight; "
                           "removing them anyway (Caddy lets in-flight requests finish)")

    # --------------------------------------------------------------------- the batches

    def _roll(self, batches: list[list[_Host]], image: str, label: str) -> list[_Host]:
        """Run the batches in order until one fails; return the hosts moved to ``image``."""
        moved: list[_Host] = []
        for number, batch in enumerate(batches, 1):
            where = f"{label} {number} of {len(batches)}"
            names = ", ".join(h.host.name for h in batch)
            refusal = self._batch_refusal(batch, where)
            if not refusal:
                try:
                    self.lock.refresh()
                except LockError as exc:
                    refusal = str(exc)
            if refusal:
                self.log.fleet(f"stopping before {where} ({names}): {refusal}")
                self._record_failure(refusal)
                for h in batch:
                    h.row.result = f"not started: {refusal}"
                return moved
            self.log.fleet(f"{where}: {names}")
            cycles = in_parallel(lambda h: self._cycle(h, image, where), batch)
            moved += [h for h, ok in zip(batch, cycles) if ok]
            views = self.adapter.probe_views([h.host for h in batch])
            for h in batch:
                h.expect_serving = self._serving(views.get(h.host.name))
            if not all(cycles):
                return moved
        return moved

    def _serving(self, view) -> bool:
        """Caddy's latest probe of a host, recent enough, found it up and not drained."""
        max_age = self.pool.interval * 2 + self.pool.timeout + self.options.lb_slack
        return isinstance(view, ProbeView) and view.serving(max_age, self.sources)

    def _batch_refusal(self, batch: list[_Host], where: str) -> str | None:
        """Why ``batch`` must not be drained now, or None.

        The fleet is judged as Caddy judges it, by the latest answers to its probes. A host
        outside the batch that served before and does not now pauses the rollout for up to
        ``outside_wait`` seconds: nobody else should change hosts while the rollout holds the
        lock, so it failed on its own, and draining more would stack two losses.
        """
        opts = self.options
        members = [h for h in self.hosts if h.member]
        others = [h for h in members if h not in batch]
        wait = opts.health_timeout if opts.outside_wait is None else opts.outside_wait
        deadline = self.clock() + wait
        paused: list[_Host] = []
        while True:
            views = self.adapter.probe_views([h.host for h in members]) if members else {}
            lost = [h for h in others
                    if h.expect_serving and not self._serving(views.get(h.host.name))]
            if not lost:
                break
            names = ", ".join(h.host.name for h in lost)
            if not paused:
                self.log.fleet(f"pausing before {where}: {names} stopped serving, outside any "
                               f"batch; waiting up to {wait:g}s for it to come back")
            paused = lost
            if self.clock() >= deadline:
                self.outside_loss = True
                for h in lost:
                    h.row.ok = False
                    h.notes.append("stopped serving during the rollout, outside its batch "
                                   "(not touched by the rollout)")
                return (f"{names} stopped serving outside the batch and did not come back "
                        f"within {wait:g}s")
            self.sleep(max(opts.check_interval, self.pool.interval))
        if paused:
            self.log.fleet(f"resuming: {', '.join(h.host.name for h in paused)} serving again")
        serving = [h for h in others if self._serving(views.get(h.host.name))]
        leaving = [h for h in batch if self._serving(views.get(h.host.name))]
        if not leaving:
            # The batch serves nobody: draining it costs no capacity (a fresh environment).
            return None
        if not serving:
            return "draining it would leave no healthy host in the load balancer"
        minimum = self._min_healthy(len(members))
        if len(serving) < minimum:
            return (f"draining it would leave {len(serving)} of {len(members)} hosts serving, "
                    f"fewer than the minimum of {minimum} (--min-healthy)")
        return None

    def _cycle(self, h: _Host, image: str, where: str) -> bool:
        """Drain, deploy, check, undrain and confirm one host; bring it back on failure."""
        started = self.clock()
        status = h.status
        # What to go back to if ``image`` fails: what runs now, or what ran before it if a
        # killed run already put ``image`` there.
        fallback = None
        if status:
            fallback = status.image if status.image != image else status.previous
        try:
            ok, result, attention = self._cycle_steps(h, image, fallback, where, started)
        except Exception as exc:
            ok, result, attention = False, f"FAILED: {exc.__class__.__name__}: {exc}", True
        h.row.seconds += self.clock() - started
        h.row.result = result
        h.row.ok = not attention
        if not ok:
            self._record_failure(f"{h.host.name}: {result}")
        return ok

    def _cycle_steps(self, h: _Host, image: str, fallback: str | None, where: str,
                     started: float) -> tuple[bool, str, bool]:
        """Return (moved to image, result for the report, host needs attention)."""
        opts = self.options
        self._host_log(h, f"draining ({where})")
        result = self._run(h, [contract.DRAIN],
                           opts.drain_seconds + opts.command_timeout + opts.health_timeout)
        if not result.ok:
            return self._abandon(h, f"drain failed: {result.reason()}")
        if not self._confirm_lb(h, DRAINING, self.pool.fails):
            return self._abandon(h, "Caddy never saw the drain: no 503 answered to its probes "
                                    "(is LB-01 probing the health agent's port? Caddy 2.10.0 to "
                                    "2.11.1 ignore it)")
        self._wait_in_flight_done(h)

        self._host_log(h, f"deploying {image}")
        result = self._run(h, [image],
                           opts.command_timeout + opts.health_timeout + opts.drain_seconds)
        if not result.ok:
            return self._recover(h, fallback, f"app-deploy {image}: {result.reason()}")
        self._host_log(h, f"waiting for {opts.healthy_checks} healthy checks in a row")
        if not self._wait_healthy(h, image=image, timeout=opts.health_timeout):
            return self._recover(h, fallback, f"{image} was not healthy {opts.healthy_checks} "
                                              f"times in a row within {opts.health_timeout:g}s")
        if not self._undrain_and_confirm(h):
            return self._recover(h, fallback, "the load balancer did not take it back")
        self._host_log(h, f"serving {image} ({self.clock() - started:.1f}s)")
        return True, "updated", False

    def _abandon(self, h: _Host, reason: str) -> tuple[bool, str, bool]:
        """Give up before the app was touched: let the host serve again as it was."""
        self._host_log(h, f"FAILED: {reason}")
        result = self._run(h, [contract.UNDRAIN], self.options.command_timeout)
        if result.ok:
            return False, f"not updated: {reason}", False
        return False, f"FAILED: {reason}; undrain failed: {result.reason()}", True

    def _recover(self, h: _Host, fallback: str | None, reason: str) -> tuple[bool, str, bool]:
        """Bring a failed host back on ``fallback`` and into the LB, or leave it drained."""
        opts = self.options
        self._host_log(h, f"FAILED: {reason}")
        if not fallback:
            return False, f"FAILED: {reason}; no previous image to go back to; left drained", True
        status = self._refresh_status(h)
        if not (status and status.image == fallback and status.healthy):
            self._host_log(h, f"rolling back to {fallback}")
            result = self._run(h, [fallback], opts.command_timeout + opts.health_timeout)
            if not result.ok:
                self._host_log(h, f"rollback: {result.reason()}")
        if (self._wait_healthy(h, image=fallback, timeout=opts.health_timeout)
                and self._undrain_and_confirm(h)):
            self._host_log(h, f"back on {fallback} and serving")
            return False, f"rolled back to {fallback}: {reason}", False
        return False, f"FAILED: {reason}; could not restore {fallback}; left drained", True

    def _roll_back(self, updated: list[_Host]) -> None:
        """Take the hosts this run updated back to the image each ran before."""
        hosts = [h for h in reversed(updated) if h.row.old_image]
        for h in updated:
            if not h.row.old_image:
                h.row.result = "updated (no previous image to roll back to)"
        if not hosts:
            return
        self.log.fleet(f"rolling back {len(hosts)} updated host(s): "
                       + ", ".join(h.host.name for h in hosts))
        per_batch = self.options.batch_size.hosts(len(self.hosts))
        groups: dict[str, list[_Host]] = {}
        for h in hosts:
            groups.setdefault(h.row.old_image, []).append(h)
        for old_image, group in groups.items():
            moved = self._roll(make_batches(group, per_batch), old_image, label="rollback")
            for h in group:
                if h in moved:
                    h.row.result = "rolled back (rollout stopped)"
                else:
                    h.row.result = f"FAILED to roll back: {h.row.result}"
                    h.row.ok = False

    def _record_failure(self, reason: str) -> None:
        with self._failure_lock:
            if self.failure is None:
                self.failure = reason

    # -------------------------------------------------------------------------- helpers

    def _host_log(self, h: _Host, message: str) -> None:
        self.log.host(h.position, self.total, h.host.name, message)

    def _run(self, h: _Host, args: list[str], timeout: float):
        return self.adapter.run(h.host, args, env=self.env, timeout=timeout)

    def _read_statuses(self, hosts: list[_Host]) -> None:
        if not hosts:
            return
        results = self.adapter.run_on_all([h.host for h in hosts], [contract.STATUS],
                                          env=self.env, timeout=STATUS_TIMEOUT)
        for h in hosts:
            self._apply_status(h, results.get(h.host.name))

    def _refresh_status(self, h: _Host) -> HostStatus | None:
        self._apply_status(h, self._run(h, [contract.STATUS], STATUS_TIMEOUT))
        return h.status

    def _apply_status(self, h: _Host, result) -> None:
        if result is None or not result.ok:
            h.status = None
            h.status_error = result.reason() if result else "no answer"
            return
        try:
            h.status, h.status_error = HostStatus.parse(result.stdout), None
        except ContractError as exc:
            h.status, h.status_error = None, str(exc)

    def _wait_healthy(self, h: _Host, image: str | None, timeout: float,
                      give_up_when_unhealthy: bool = False,
                      retry_after: float | None = None) -> bool:
        """N consecutive ``status`` answers saying healthy (and on ``image`` if given).

        Checks are ``check_interval`` apart; after a bad answer, ``retry_after`` if given.
        """
        opts = self.options
        deadline = self.clock() + timeout
        streak = 0
        while True:
            status = self._refresh_status(h)
            good = bool(status and status.healthy and (image is None or status.image == image))
            streak = streak + 1 if good else 0
            if streak >= opts.healthy_checks:
                return True
            if not good and give_up_when_unhealthy:
                return False
            interval = opts.check_interval if good or retry_after is None else retry_after
            if self.clock() + interval > deadline:
                return False
            self.sleep(interval)

    def _undrain_and_confirm(self, h: _Host) -> bool:
        self._host_log(h, "undraining")
        result = self._run(h, [contract.UNDRAIN], self.options.command_timeout)
        if not result.ok:
            self._host_log(h, f"undrain failed: {result.reason()}")
            return False
        if not self._confirm_lb(h, HEALTHY, self.pool.passes):
            self._host_log(h, "Caddy's probes did not see it healthy")
            return False
        return True

    def _confirm_lb(self, h: _Host, answer: int, probes: int) -> bool:
        """Wait until the health agent has given every Caddy ``probes`` consecutive
        ``answer``s."""
        pool = self.pool
        deadline = self.clock() + pool.probe_window(probes) + self.options.lb_slack
        max_age = pool.interval * 2 + pool.timeout + self.options.lb_slack
        poll = max(0.02, min(0.5, pool.interval / 10))
        last = "nothing"
        while True:
            try:
                view: ProbeView = self.adapter.probe_view(h.host)
                if view.confirms(answer, probes, max_age, self.sources):
                    return True
                last = view.describe(self.sources)
            except (HostUnreachable, ContractError) as exc:
                last = str(exc)
            if self.clock() >= deadline:
                self._host_log(h, f"wanted {probes} probe(s) answered {answer}; the health "
                                  f"agent last answered: {last}")
                return False
            self.sleep(poll)

    def _in_flight(self) -> dict[str, int]:
        """Requests being proxied right now per upstream, over every load balancer."""
        counts: dict[str, int] = {}
        for lb in self.lbs:
            for dial, count in lb.in_flight().items():
                counts[dial] = counts.get(dial, 0) + count
        return counts

    def _wait_in_flight_done(self, h: _Host) -> None:
        deadline = self.clock() + max(self.options.drain_seconds, 1.0)
        while True:
            try:
                count = self._in_flight().get(h.host.upstream, 0)
            except LoadBalancerError as exc:
                self._host_log(h, f"warning: cannot read requests in flight ({exc})")
                return
            if count == 0:
                return
            if self.clock() >= deadline:
                self._host_log(h, f"warning: {count} request(s) still in flight; the app is "
                                  "stopped gracefully")
                return
            self.sleep(0.1)

    # --------------------------------------------------------------------------- report

    def _finish(self, sync_only: bool = False) -> RolloutReport:
        if not self.options.dry_run:
            self._read_statuses(self.hosts)
        for h in self.hosts:
            if h.status:
                h.row.new_image = h.status.image
                if h.status.drained and h.row.ok and not self.options.dry_run:
                    h.notes.append("still drained")
                    h.row.ok = False
            elif not self.options.dry_run:
                h.notes.append(f"status unknown: {h.status_error}")
                h.row.ok = False
            if sync_only and h.row.result == "not started":
                h.row.result = "in the LB" if h.member else "not in the LB"
            if h.notes:
                h.row.result = "; ".join([h.row.result, *h.notes])
        rows = [h.row for h in self.hosts] + self.extra_rows
        attention = [r.host for r in rows if not r.ok]
        ok = self.failure is None and not attention
        if self.options.dry_run:
            summary = "dry run: nothing was changed"
        elif ok:
            summary = "every host is where it should be"
        else:
            parts = [f"rollout stopped: {self.failure}"] if self.failure else []
            if attention:
                parts.append(f"needs attention: {', '.join(attention)}")
            summary = "; ".join(parts)
        return RolloutReport(environment=self.environment, image=self.options.image,
                             rows=rows, ok=ok, summary=summary, dry_run=self.options.dry_run)


def _combined(pools: list[UpstreamPool]) -> UpstreamPool:
    """Every load balancer's upstreams, with the slowest health timing among them."""
    upstreams: dict[str, dict] = {}
    for pool in pools:
        for upstream in pool.upstreams:
            upstreams.setdefault(upstream["dial"], upstream)
    return UpstreamPool(tuple(upstreams.values()), max(p.interval for p in pools),
                        max(p.timeout for p in pools), max(p.passes for p in pools),
                        max(p.fails for p in pools), pools[0].health_port)
