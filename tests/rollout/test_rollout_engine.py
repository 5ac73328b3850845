"""The rolling update engine against in-memory hosts: order of steps, batches, safety rules."""
import re

import pytest
from rollout_fakes import NEW, OLD, FakeFleet, FakeLB, FakeLock, engine, make_hosts

from rollout import contract
from rollout.batching import BatchSize, MinHealthy
from rollout.engine import PlanError, RolloutOptions, RolloutRefused


def images(fleet):
    return {name: h.image for name, h in fleet.hosts.items()}


def test_updates_every_host_one_at_a_time_in_contract_order():
    fleet = FakeFleet(make_hosts(3))
    report = engine(fleet)[0].run()

    assert report.ok
    assert images(fleet) == {"APP-1": NEW, "APP-2": NEW, "APP-3": NEW}
    assert all(not h.drained for h in fleet.hosts.values())
    assert fleet.max_drained == 1
    assert min(fleet.serving_when_drained) >= 1
    for name in fleet.hosts:
        assert fleet.mutating(name) == [(name, ("drain",)), (name, (NEW,)),
                                        (name, ("undrain",))]
    # Hosts go strictly one after another: APP-2 is drained after APP-1 is back.
    order = [(n, a[0]) for n, a in fleet.mutating()]
    assert order.index(("APP-2", "drain")) > order.index(("APP-1", "undrain"))
    assert [r.result for r in report.rows] == ["updated"] * 3
    assert [(r.old_image, r.new_image) for r in report.rows] == [(OLD, NEW)] * 3


def test_waits_for_consecutive_healthy_checks_before_undraining():
    fleet = FakeFleet(make_hosts(2))
    engine(fleet, healthy_checks=4)[0].run()
    calls = [a[0] for n, a in fleet.commands if n == "APP-1"]
    deploy, undrain = calls.index(NEW), calls.index("undrain")
    assert calls[deploy + 1:undrain] == ["status"] * 4


def test_passes_drain_and_health_settings_to_app_deploy():
    fleet = FakeFleet(make_hosts(2))
    engine(fleet, drain_seconds=7, health_timeout=45)[0].run()
    assert all(env == {contract.ENV_DRAIN_SECONDS: "7", contract.ENV_HEALTH_TIMEOUT: "45"}
               for env in fleet.envs)


@pytest.mark.parametrize("size, batch, expected", [
    (8, "25%", [["APP-1", "APP-2"], ["APP-3", "APP-4"], ["APP-5", "APP-6"], ["APP-7", "APP-8"]]),
    (6, "3", [["APP-1", "APP-2", "APP-3"], ["APP-4", "APP-5", "APP-6"]]),
    (4, "30%", [["APP-1", "APP-2"], ["APP-3", "APP-4"]]),   # 30% of 4 rounds up to 2
    (10, "10%", [[f"APP-{n}"] for n in range(1, 11)]),
])
def test_batches_drain_together(size, batch, expected):
    fleet = FakeFleet(make_hosts(size), drain_together=len(expected[0]))
    update, out = engine(fleet, batch_size=BatchSize.parse(batch))
    assert update.run().ok
    assert fleet.max_drained == len(expected[0])
    assert min(fleet.serving_when_drained) >= size - len(expected[0])
    for number, hosts in enumerate(expected, 1):
        assert f"batch {number} of {len(expected)}: {', '.join(hosts)}" in out.getvalue()
    assert set(images(fleet).values()) == {NEW}


def test_last_batch_may_be_smaller():
    fleet = FakeFleet(make_hosts(5))
    update, out = engine(fleet, batch_size=BatchSize(2))
    assert update.run().ok
    assert "batch 3 of 3: APP-5" in out.getvalue()
    assert ("in 3 batch(es) of up to 2, keeping at least 3 serving: APP-1, APP-2 | APP-3, "
            "APP-4 | APP-5") in out.getvalue()


def test_natural_host_order():
    fleet = FakeFleet(make_hosts(11))
    update, out = engine(fleet)
    update.run()
    drains = [n for n, a in fleet.mutating() if a == ("drain",)]
    assert drains[:3] == ["APP-1", "APP-2", "APP-3"] and drains[-2:] == ["APP-10", "APP-11"]
    assert re.search(r"host 11 of 11 +APP-11 +serving", out.getvalue())


@pytest.mark.parametrize("batch, size, message", [
    ("100%", 4, "use at most 3"),
    ("4", 4, "leaving none to serve"),
    ("1", 1, "at least 2"),
])
def test_refuses_a_batch_size_that_drains_the_whole_fleet(batch, size, message):
    fleet = FakeFleet(make_hosts(size))
    with pytest.raises(PlanError, match=message):
        engine(fleet, batch_size=BatchSize.parse(batch))[0].run()
    assert fleet.mutating() == []


def test_skips_hosts_already_on_the_image():
    hosts = make_hosts(3)
    hosts[0].image = NEW
    hosts[2].image = NEW
    fleet = FakeFleet(hosts)
    update, out = engine(fleet)
    report = update.run()
    assert report.ok
    assert fleet.mutating("APP-1") == [] and fleet.mutating("APP-3") == []
    assert [a[0] for _, a in fleet.mutating("APP-2")] == ["drain", NEW, "undrain"]
    assert [r.result for r in report.rows] == ["already current", "updated", "already current"]
    assert f"already on {NEW}: skipped" in out.getvalue()


def test_nothing_to_do_on_a_current_fleet_even_of_one_host():
    fleet = FakeFleet(make_hosts(1, image=NEW))
    report = engine(fleet)[0].run()
    assert report.ok and fleet.mutating() == []


def test_redeploys_an_unhealthy_host_already_on_the_image():
    hosts = make_hosts(2)
    hosts[1].image, hosts[1].healthy = NEW, False
    fleet = FakeFleet(hosts)
    assert engine(fleet)[0].run().ok
    assert ("APP-2", (NEW,)) in fleet.mutating("APP-2")
    assert fleet.hosts["APP-2"].healthy


def test_unhealthy_hosts_go_first():
    hosts = make_hosts(3)
    hosts[2].healthy = False
    fleet = FakeFleet(hosts)
    assert engine(fleet)[0].run().ok
    drains = [n for n, a in fleet.mutating() if a == ("drain",)]
    assert drains == ["APP-3", "APP-1", "APP-2"]


def test_never_drains_the_last_healthy_host():
    hosts = make_hosts(2)
    hosts[1].forced_answer = 503     # Caddy sees APP-2 down: APP-1 is the only one serving
    fleet = FakeFleet(hosts)
    update, out = engine(fleet)
    report = update.run()
    assert not report.ok
    assert fleet.mutating("APP-1") == []
    assert "would leave no healthy host" in out.getvalue()
    row = report.rows[0]
    assert row.result.startswith("not started: draining it would leave no healthy host")


def test_restores_a_host_left_drained_by_a_killed_run():
    hosts = make_hosts(3)
    hosts[0].image, hosts[0].previous, hosts[0].drained = NEW, OLD, True   # killed after deploy
    hosts[1].drained = True                                                # killed after drain
    fleet = FakeFleet(hosts)
    update, out = engine(fleet)
    report = update.run()
    assert report.ok
    assert all(not h.drained for h in fleet.hosts.values())
    assert images(fleet) == {"APP-1": NEW, "APP-2": NEW, "APP-3": NEW}
    # APP-1 only needed its switch cleared; it was never redeployed.
    assert [a[0] for _, a in fleet.mutating("APP-1")] == ["drain", "undrain"]
    assert report.rows[0].result.startswith("already current; undrained")
    assert "left by an interrupted run" in out.getvalue()


def test_a_drained_host_that_is_unhealthy_stays_drained_until_redeployed():
    hosts = make_hosts(3)
    hosts[1].drained, hosts[1].healthy = True, False
    fleet = FakeFleet(hosts)
    update, out = engine(fleet)
    assert update.run().ok
    steps = [a[0] for _, a in fleet.mutating("APP-2")]
    assert steps[:1] == ["drain"] and steps.index(NEW) < steps.index("undrain")
    assert "stays drained until redeployed" in out.getvalue()


def test_one_rollout_at_a_time():
    fleet = FakeFleet(make_hosts(3))
    with pytest.raises(RolloutRefused, match="another rollout holds"):
        engine(fleet, lock=FakeLock(held_by_other=True))[0].run()
    assert fleet.commands == []


def test_lock_is_renewed_before_every_batch_and_released():
    fleet = FakeFleet(make_hosts(3))
    lock = FakeLock()
    engine(fleet, lock=lock)[0].run()
    assert lock.events == ["acquire", "refresh", "refresh", "refresh", "release"]


def test_lock_is_released_when_the_run_fails():
    hosts = make_hosts(3)
    hosts[0].bad_images = {NEW}
    lock = FakeLock()
    engine(FakeFleet(hosts), lock=lock)[0].run()
    assert lock.events[-1] == "release"


def test_unreachable_load_balancer_touches_no_host():
    fleet = FakeFleet(make_hosts(3))
    lock = FakeLock()
    with pytest.raises(RolloutRefused, match="unreachable.*no host was touched"):
        engine(fleet, lb=FakeLB([], reachable=False), lock=lock)[0].run()
    assert fleet.commands == [] and lock.events == []


def test_a_host_whose_status_cannot_be_read_stops_the_run_before_any_change():
    hosts = make_hosts(3)
    hosts[2].status_fails = True
    fleet = FakeFleet(hosts)
    with pytest.raises(RolloutRefused, match="APP-3"):
        engine(fleet)[0].run()
    assert fleet.mutating() == []


def test_failed_host_is_rolled_back_and_so_are_the_updated_ones():
    hosts = make_hosts(4)
    hosts[2].bad_images = {NEW}
    fleet = FakeFleet(hosts)
    update, out = engine(fleet)
    report = update.run()

    assert not report.ok
    assert images(fleet) == {f"APP-{n}": OLD for n in range(1, 5)}
    assert all(not h.drained for h in fleet.hosts.values())
    assert fleet.mutating("APP-4") == []
    results = {r.host: r.result for r in report.rows}
    assert results["APP-1"] == results["APP-2"] == "rolled back (rollout stopped)"
    assert results["APP-3"].startswith(f"rolled back to {OLD}: app-deploy {NEW}: "
                                       f"app-deploy: {NEW} failed its health check")
    assert results["APP-4"] == "not started (rollout stopped)"
    assert "rollout stopped: APP-3" in report.summary
    # The updated hosts go back the same careful way, newest first.
    back = [n for n, a in fleet.mutating() if a == (OLD,)]
    assert back == ["APP-2", "APP-1"]
    assert min(fleet.serving_when_drained) >= 1


def test_keep_updated_leaves_updated_hosts_on_the_new_image():
    hosts = make_hosts(4)
    hosts[2].bad_images = {NEW}
    fleet = FakeFleet(hosts)
    report = engine(fleet, keep_updated=True)[0].run()
    assert not report.ok
    assert images(fleet) == {"APP-1": NEW, "APP-2": NEW, "APP-3": OLD, "APP-4": OLD}
    results = [r.result for r in report.rows]
    assert results[:2] == ["updated (kept)"] * 2
    assert results[3] == "not started (rollout stopped)"


def test_image_that_is_not_healthy_often_enough_is_rolled_back():
    hosts = make_hosts(2)
    hosts[0].flapping = {NEW: 2}     # two healthy answers, then down
    fleet = FakeFleet(hosts)
    report = engine(fleet, healthy_checks=3, health_timeout=10)[0].run()
    assert not report.ok
    assert images(fleet)["APP-1"] == OLD and not fleet.hosts["APP-1"].drained
    assert "was not healthy 3 times in a row within 10s" in report.rows[0].result
    assert fleet.mutating("APP-2") == []


def test_failed_batch_member_does_not_stop_its_batch_mates_but_all_are_rolled_back():
    hosts = make_hosts(4)
    hosts[1].bad_images = {NEW}
    fleet = FakeFleet(hosts)
    report = engine(fleet, batch_size=BatchSize(2))[0].run()
    assert images(fleet) == {f"APP-{n}": OLD for n in range(1, 5)}
    assert [r.result.split(":")[0] for r in report.rows] == [
        "rolled back (rollout stopped)", f"rolled back to {OLD.split(':')[0]}",
        "not started (rollout stopped)", "not started (rollout stopped)"]


def test_host_without_a_previous_image_is_left_drained_and_reported():
    hosts = make_hosts(3)
    hosts[0].image, hosts[0].healthy = None, False
    hosts[0].bad_images = {NEW}
    fleet = FakeFleet(hosts)
    report = engine(fleet)[0].run()
    assert not report.ok
    assert fleet.hosts["APP-1"].drained
    assert report.rows[0].result.startswith("FAILED:")
    assert "left drained" in report.rows[0].result
    assert "needs attention: APP-1" in report.summary


def test_a_drain_the_load_balancer_never_sees_stops_before_the_app_is_touched():
    hosts = make_hosts(3)
    hosts[0].forced_answer = 200     # e.g. Caddy 2.10 probing the app port, not the agent
    fleet = FakeFleet(hosts)
    update, out = engine(fleet)
    report = update.run()
    assert not report.ok
    assert [a[0] for _, a in fleet.mutating("APP-1")] == ["drain", "undrain"]
    assert not fleet.hosts["APP-1"].drained and images(fleet)["APP-1"] == OLD
    assert "Caddy never saw the drain" in report.rows[0].result
    assert fleet.mutating("APP-2") == []


def test_waits_for_requests_in_flight_before_deploying():
    fleet = FakeFleet(make_hosts(2))
    lb = FakeLB([h.upstream for h in fleet.hosts.values()])
    lb.in_flight_script = [{"10.0.2.11:5000": 3}, {"10.0.2.11:5000": 1}, {"10.0.2.11:5000": 0}]
    engine(fleet, lb=lb)[0].run()
    assert lb.in_flight_calls >= 3


def test_dry_run_changes_nothing_and_says_what_it_would_do():
    hosts = make_hosts(4)
    hosts[1].image = NEW
    hosts[2].drained = True
    fleet = FakeFleet(hosts)
    lb = FakeLB([h.upstream for h in hosts[:3]] + ["10.0.2.99:5000"])
    lock = FakeLock()
    update, out = engine(fleet, lb=lb, lock=lock, dry_run=True)
    report = update.run()
    assert report.ok and report.dry_run
    assert fleet.mutating() == [] and lb.set_calls == [] and lock.events == []
    results = {r.host: r.result for r in report.rows}
    assert results == {"APP-1": "would update", "APP-2": "already current",
                       "APP-3": "would update", "APP-4": "would join",
                       "10.0.2.99:5000": "would leave the LB"}
    assert "would undrain it once healthy" in out.getvalue()
    assert "plan: 2 of 4 hosts" in out.getvalue()


def test_sync_only_adds_new_hosts_and_removes_gone_ones_in_one_change():
    hosts = make_hosts(3)
    fleet = FakeFleet(hosts)
    lb = FakeLB([hosts[0].upstream, "10.0.2.99:5000", hosts[1].upstream])
    update, out = engine(fleet, lb=lb, image=None, sync_only=True)
    report = update.run()
    assert report.ok
    assert lb.set_calls == [[{"dial": hosts[0].upstream}, {"dial": hosts[1].upstream},
                             {"dial": hosts[2].upstream}]]
    assert fleet.mutating() == []
    results = {r.host: r.result for r in report.rows}
    assert results["APP-3"] == "in the LB; joined the LB"
    assert results["10.0.2.99:5000"] == "left the LB"


def test_sync_makes_no_config_change_when_nothing_changed():
    fleet = FakeFleet(make_hosts(3))
    lb = FakeLB([h.upstream for h in fleet.hosts.values()])
    engine(fleet, lb=lb, image=None, sync_only=True)[0].run()
    assert lb.set_calls == []


def test_a_new_host_that_never_gets_healthy_is_not_added_but_the_rest_is_updated():
    hosts = make_hosts(3)
    hosts[2].healthy = False
    fleet = FakeFleet(hosts)
    lb = FakeLB([h.upstream for h in hosts[:2]])
    report = engine(fleet, lb=lb, health_timeout=5)[0].run()
    assert not report.ok
    assert lb.set_calls == []
    assert images(fleet) == {"APP-1": NEW, "APP-2": NEW, "APP-3": OLD}
    assert report.rows[2].result.startswith("not joined: never healthy")


def test_a_new_host_still_booting_is_waited_for_patiently():
    hosts = make_hosts(3)
    hosts[2].status_fails = True          # SSM agent not registered yet
    fleet = FakeFleet(hosts)
    lb = FakeLB([h.upstream for h in hosts[:2]])
    update, out = engine(fleet, lb=lb, health_timeout=30, join_timeout=600)
    report = update.run()
    assert report.rows[2].result.startswith("not joined: never healthy")
    asks = [a for n, a in fleet.commands if n == "APP-3"]
    assert 100 <= len(asks) <= 125          # every 5 s for 600 s, not every second
    assert "was not healthy within 600s" in out.getvalue()


def test_new_host_joins_and_is_then_updated():
    hosts = make_hosts(3)
    fleet = FakeFleet(hosts)
    lb = FakeLB([h.upstream for h in hosts[:2]])
    report = engine(fleet, lb=lb)[0].run()
    assert report.ok
    assert [u["dial"] for u in lb.upstreams] == [h.upstream for h in hosts]
    assert images(fleet)["APP-3"] == NEW


def test_gone_hosts_are_not_removed_when_no_healthy_host_would_remain():
    hosts = make_hosts(2, healthy=False)
    fleet = FakeFleet(hosts)
    lb = FakeLB([h.upstream for h in hosts] + ["10.0.2.99:5000"])
    update, out = engine(fleet, lb=lb, image=None, sync_only=True)
    update.run()
    assert lb.set_calls == []
    assert "no healthy host would be left" in out.getvalue()


def test_gone_hosts_leave_after_their_requests_finish():
    hosts = make_hosts(2)
    fleet = FakeFleet(hosts)
    lb = FakeLB([h.upstream for h in hosts] + ["10.0.2.99:5000"])
    lb.in_flight_script = [{"10.0.2.99:5000": 2}, {"10.0.2.99:5000": 0}]
    engine(fleet, lb=lb, image=None, sync_only=True)[0].run()
    assert lb.in_flight_calls == 2 and len(lb.set_calls) == 1


def test_options_reject_nonsense():
    with pytest.raises(ValueError):
        RolloutOptions(image=None)
    with pytest.raises(ValueError):
        RolloutOptions(image=NEW, healthy_checks=0)


# --- capacity ------------------------------------------------------------------------------

def test_a_fresh_fleet_that_serves_nothing_yet_gets_its_first_image():
    """Hosts booted with no image: nothing to protect, so the first batches may leave."""
    fleet = FakeFleet(make_hosts(3, image=None, healthy=False))
    update, out = engine(fleet)
    report = update.run()
    assert report.ok, out.getvalue()
    assert set(images(fleet).values()) == {NEW}
    assert [r.result for r in report.rows] == ["updated"] * 3


def test_a_fresh_fleet_of_one_host_gets_its_first_image():
    fleet = FakeFleet(make_hosts(1, image=None, healthy=False))
    assert engine(fleet)[0].run().ok
    assert images(fleet) == {"APP-1": NEW}


def test_min_healthy_that_leaves_no_room_for_a_batch_is_refused():
    fleet = FakeFleet(make_hosts(4))
    with pytest.raises(PlanError, match=r"--min-healthy 75% means 3 of 4 hosts .* batch of 2; "
                                        r"use at most 2 \(or 50%\)"):
        engine(fleet, batch_size=BatchSize(2), min_healthy=MinHealthy.parse("75%"))[0].run()
    assert fleet.mutating() == []


def test_a_batch_that_would_go_below_min_healthy_is_not_started():
    hosts = make_hosts(4)
    hosts[3].forced_answer = 503     # Caddy sees APP-4 down from the start
    fleet = FakeFleet(hosts)
    report = engine(fleet, min_healthy=MinHealthy(3))[0].run()
    assert not report.ok
    assert fleet.mutating("APP-1") == []
    assert report.rows[0].result == ("not started: draining it would leave 2 of 4 hosts "
                                     "serving, fewer than the minimum of 3 (--min-healthy)")


def test_min_healthy_lower_than_the_default_lets_a_degraded_fleet_be_updated():
    hosts = make_hosts(4)
    hosts[3].forced_answer = 503
    fleet = FakeFleet(hosts)
    report = engine(fleet, min_healthy=MinHealthy(2), keep_updated=True)[0].run()
    assert [r.result for r in report.rows[:3]] == ["updated (kept)"] * 3
    assert min(fleet.serving_when_drained) >= 2


class DyingFleet(FakeFleet):
    """APP-3 stops serving once APP-1 is back in the LB; it may come back after a while."""

    def __init__(self, hosts, back_after_probes=None):
        super().__init__(hosts)
        self.back_after_probes = back_after_probes
        self.probes_while_dead = 0

    def _run(self, host, args, env):
        result = super()._run(host, args, env)
        if host.name == "APP-1" and args[0] == contract.UNDRAIN:
            self.hosts["APP-3"].healthy = False
        return result

    def probe_view(self, host):
        dead = self.hosts["APP-3"]
        if host.name == "APP-3" and not dead.healthy and self.back_after_probes is not None:
            self.probes_while_dead += 1
            if self.probes_while_dead > self.back_after_probes:
                dead.healthy = True
        return super().probe_view(host)


def test_a_host_outside_the_batch_that_dies_stops_the_rollout_and_is_not_reported_updated():
    fleet = DyingFleet(make_hosts(4))
    update, out = engine(fleet, outside_wait=20)
    report = update.run()
    log = out.getvalue()
    assert not report.ok
    assert "pausing before batch 2 of 4: APP-3 stopped serving, outside any batch" in log
    # Nothing else left the LB after APP-3 died, and APP-1 went back to the old image.
    assert fleet.mutating("APP-2") == [] and fleet.mutating("APP-4") == []
    assert max(fleet.serving_when_drained) == 3
    rows = {r.host: r for r in report.rows}
    assert "updated" not in rows["APP-3"].result
    assert rows["APP-3"].result == ("not started (rollout stopped); stopped serving during "
                                    "the rollout, outside its batch (not touched by the "
                                    "rollout)")
    assert not rows["APP-3"].ok
    assert report.summary.startswith("rollout stopped: APP-3 stopped serving outside the batch "
                                     "and did not come back within 20s")


def test_a_host_outside_the_batch_that_comes_back_lets_the_rollout_resume():
    fleet = DyingFleet(make_hosts(4), back_after_probes=3)
    update, out = engine(fleet, outside_wait=60)
    report = update.run()
    assert report.ok, out.getvalue()
    assert "resuming: APP-3 serving again" in out.getvalue()
    assert set(images(fleet).values()) == {NEW}


# --- several load balancers ----------------------------------------------------------------

def two_lbs(fleet, **second):
    fleet.sources = ("10.0.1.10", "10.0.1.11")
    dials = [h.upstream for h in fleet.hosts.values()]
    return [FakeLB(dials, name="LB-01", probe_source="10.0.1.10"),
            FakeLB(dials, name="LB-02", probe_source="10.0.1.11", **second)]


def test_every_load_balancer_must_take_the_host_out_before_its_app_is_touched():
    hosts = make_hosts(3)
    hosts[0].source_answers = {"10.0.1.11": 200}   # LB-02 keeps sending APP-1 requests
    fleet = FakeFleet(hosts)
    update, out = engine(fleet, lb=two_lbs(fleet))
    report = update.run()
    assert not report.ok
    assert [a[0] for _, a in fleet.mutating("APP-1")] == ["drain", "undrain"]
    assert "10.0.1.10: 503 x5, 0.1s ago, 10.0.1.11: 200 x5, 0.1s ago" in out.getvalue()
    assert report.rows[0].result.startswith("not updated: Caddy never saw the drain")


def test_a_fleet_behind_two_load_balancers_is_updated_and_both_follow_membership():
    hosts = make_hosts(4)
    fleet = FakeFleet(hosts)
    lbs = two_lbs(fleet)
    lbs[1].upstreams = lbs[1].upstreams[:3]          # LB-02 does not know APP-4 yet
    update, out = engine(fleet, lb=lbs)
    report = update.run()
    assert report.ok, out.getvalue()
    assert set(images(fleet).values()) == {NEW}
    assert lbs[0].set_calls == []
    assert [[u["dial"] for u in call] for call in lbs[1].set_calls] == [
        [h.upstream for h in hosts]]
    assert "LB-02 now has 4 upstreams (one config change)" in out.getvalue()
