"""Two real Caddy 2.11.7 load balancers (the production configuration) behind HAProxy, the
stand-in for the AWS Network Load Balancer, under keep-alive load that never retries.

The goals of the two-LB design: a drained LB (deregistered from the NLB) fails no request,
and after an LB is killed no new connection fails more than 10 s later. The figures are
printed by benchmarks/lb_failover.py.
"""
import pytest

from rollout.lab.balancers import BalancedPair, NewConnectionProbe, TimedLoad, failover
from rollout.lab.fleet import LocalFleet
from tests import tools
from tests.tools import require_tool

pytestmark = pytest.mark.e2e

# The goal for a killed LB.
RECOVERY_GOAL_SECONDS = 10


def test_a_killed_lb_stops_failing_new_connections_and_a_drained_one_fails_nothing(tmp_path):
    caddy, haproxy = tools.caddy(), require_tool("haproxy")
    with LocalFleet(tmp_path / "fleet", 2, caddy=caddy) as fleet, \
            BalancedPair(tmp_path / "balancers", fleet, caddy=caddy, haproxy=haproxy) as pair:
        load = TimedLoad("127.0.0.1", pair.frontend_port, clients=4, rate=10)
        probe = NewConnectionProbe("127.0.0.1", pair.frontend_port)
        with load, probe:
            figures = failover(pair, load, probe, settle=2.0, drain_hold=4.0)

    killed = figures["kill LB-02"]
    # Both LBs were serving: new connections that HAProxy sent to the dead one failed...
    assert killed["new_failed"] > 0, figures
    # ...until its health check took it out, within the goal.
    assert killed["last_new_failure_after"] <= RECOVERY_GOAL_SECONDS, figures
    assert killed["marked_down_after"] <= RECOVERY_GOAL_SECONDS, figures
    restarted = figures["restart LB-02"]
    assert (restarted["failed"], restarted["new_failed"]) == (0, 0), figures
    drained = figures["drain and restore LB-01"]
    assert drained["sent"] > 100 and drained["new_connections"] > 10, figures
    assert (drained["failed"], drained["new_failed"]) == (0, 0), figures
