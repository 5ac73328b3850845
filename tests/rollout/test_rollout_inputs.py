"""What the rollout reads: batch sizes, inventories, host answers, Caddy durations; and the
report it writes."""
import pytest

from rollout.batching import BatchSize, make_batches
from rollout.caddy_admin import LoadBalancerError, UpstreamPool, parse_duration
from rollout.contract import ContractError, HostStatus, ProbeView
from rollout.inventory import InventoryError, load_inventory, parse_inventory
from rollout.model import CommandResult, natural_key
from rollout.report import HostRow, RolloutReport


@pytest.mark.parametrize("text, fleet, per_batch", [
    ("1", 10, 1), ("3", 10, 3), ("25%", 4, 1), ("25%", 8, 2), ("25%", 16, 4),
    ("25%", 5, 2), ("1%", 3, 1), ("100%", 7, 7), (" 50 % ", 4, 2),
])
def test_batch_size_numbers_and_percentages(text, fleet, per_batch):
    assert BatchSize.parse(text).hosts(fleet) == per_batch


@pytest.mark.parametrize("text", ["0", "0%", "101%", "-1", "two", "2.5", "%", ""])
def test_batch_size_rejects(text):
    with pytest.raises(ValueError):
        BatchSize.parse(text)


def test_make_batches_keeps_order():
    assert make_batches([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert make_batches([], 3) == []


def test_natural_order():
    names = ["APP-10", "APP-2", "app-1", "APP-1b"]
    assert sorted(names, key=natural_key) == ["app-1", "APP-1b", "APP-2", "APP-10"]


GOOD = {
    "environment": "lab",
    "caddy": {"admin": "http://127.0.0.1:2019"},
    "hosts": [
        {"name": "APP-2", "upstream": "127.0.0.3:5000",
         "health_url": "http://127.0.0.3:5001/health", "deploy_command": ["app-deploy"]},
        {"name": "APP-1", "upstream": "127.0.0.2:5000",
         "health_url": "http://127.0.0.2:5001/health",
         "deploy_command": ["python3", "-m", "rollout.lab.app_deploy", "--port", 5000],
         "env": {"X": 1}},
    ],
}


def test_inventory_parses_and_orders_hosts(tmp_path):
    import yaml
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    inventory = load_inventory(str(path))
    assert [h.name for h in inventory.hosts] == ["APP-1", "APP-2"]
    first = inventory.hosts[0]
    assert first.deploy_command[-1] == "5000" and first.env == (("X", "1"),)
    assert inventory.upstreams_id == "app-upstreams"
    assert inventory.lock_path("lab").endswith(".lock")
    assert inventory.environment == "lab"


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("caddy"), "caddy.admin: required"),
    (lambda d: d["caddy"].update(admin="127.0.0.1"), "caddy.admin: must look like"),
    (lambda d: d.update(hosts=[]), "hosts: must be a non-empty list"),
    (lambda d: d["hosts"][0].update(upstream="127.0.0.3"), r"hosts\[0\] \(APP-2\).upstream"),
    (lambda d: d["hosts"][0].update(health_url="127.0.0.3:5001"), "health_url"),
    (lambda d: d["hosts"][0].update(deploy_command="app-deploy"), "deploy_command"),
    (lambda d: d["hosts"][1].update(name="APP-2"), "'APP-2' appears twice"),
    (lambda d: d["hosts"][1].update(upstream="127.0.0.3:5000"), "appears twice"),
    (lambda d: d["hosts"][0].update(nmae="x"), "unknown key"),
    (lambda d: d.update(extra=1), "extra: unknown key"),
])
def test_inventory_errors_name_the_field(change, message):
    import copy
    data = copy.deepcopy(GOOD)
    change(data)
    with pytest.raises(InventoryError, match=message):
        parse_inventory(data, "inv.yaml")


def test_inventory_file_errors(tmp_path):
    with pytest.raises(InventoryError, match="cannot read it"):
        load_inventory(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: [\n")
    with pytest.raises(InventoryError, match="not valid YAML"):
        load_inventory(str(bad))


def test_host_status_parsing():
    status = HostStatus.parse('banner\n{"image": "a:1", "previous": null, "drained": false, '
                              '"healthy": true}\n')
    assert status == HostStatus("a:1", None, False, True)
    assert HostStatus.parse(status.to_json()) == status
    for bad in ["", "not json", "[]", '{"image": 1, "drained": false, "healthy": true}',
                '{"image": "a", "drained": "no", "healthy": true}']:
        with pytest.raises(ContractError):
            HostStatus.parse(bad)


def test_probe_view():
    view = ProbeView.parse('{"drained": true, "probe": {"answer": 503, "streak": 2, '
                           '"age": 0.5}, "probes": 7}')
    assert view.confirms(503, 2, 1.0)
    assert not view.confirms(503, 3, 1.0)       # Caddy wants 3 failures
    assert not view.confirms(200, 1, 1.0)
    assert not view.confirms(503, 2, 0.1)       # probes stopped arriving
    assert not ProbeView(False, None, 0, None).confirms(200, 1, 10)
    with pytest.raises(ContractError):
        ProbeView.parse("<html>")


@pytest.mark.parametrize("value, seconds", [
    ("2s", 2.0), ("250ms", 0.25), ("1m30s", 90.0), ("1.5s", 1.5), (2_000_000_000, 2.0),
    (None, 30.0),
])
def test_caddy_durations(value, seconds):
    assert parse_duration(value, 30.0) == pytest.approx(seconds)


def test_upstream_pool_needs_active_health_checks():
    with pytest.raises(LoadBalancerError, match="no active health checks"):
        UpstreamPool.from_handler({"handler": "reverse_proxy", "upstreams": []})
    with pytest.raises(LoadBalancerError, match="not a reverse_proxy"):
        UpstreamPool.from_handler({"handler": "static_response"})
    pool = UpstreamPool.from_handler({"handler": "reverse_proxy", "health_checks": {
        "active": {"port": 5001}}})
    assert (pool.interval, pool.timeout, pool.passes, pool.fails) == (30.0, 5.0, 1, 1)


def test_command_result_reason():
    assert CommandResult(1, "", "line 1\nthe reason\n\n").reason() == "the reason"
    assert CommandResult(3).reason() == "exit status 3"
    assert CommandResult(None, error="SSM timed out").reason() == "SSM timed out"


def test_report_table_and_markdown():
    report = RolloutReport("production", "app:2", rows=[
        HostRow("APP-1", "app:1", "app:2", "updated", 12.34),
        HostRow("APP-2", "app:1", "app:1", "rolled back to app:1: a|b", 3.0),
        HostRow("APP-3", None, None, "not started (rollout stopped)", 0.0)],
        ok=False, summary="rollout stopped: APP-2: a|b")
    table = report.table().splitlines()
    assert table[0] == "Rolling update of production to app:2: FAILED"
    assert table[1].split() == ["host", "old", "image", "new", "image", "result", "seconds"]
    assert table[3].split() == ["APP-1", "app:1", "app:2", "updated", "12.3"]
    assert table[5].split()[:3] == ["APP-3", "-", "-"]
    markdown = report.markdown()
    assert markdown.startswith("### Rolling update of production to app:2: FAILED\n")
    assert "| APP-1 | `app:1` | `app:2` | updated | 12.3 |" in markdown
    assert "rolled back to app:1: a\\|b" in markdown
    assert "| APP-3 | - | - | not started (rollout stopped) | 0.0 |" in markdown


def test_inventory_with_several_load_balancers(tmp_path):
    import copy
    data = copy.deepcopy(GOOD)
    del data["caddy"]
    data["load_balancers"] = [
        {"name": "LB-01", "admin": "http://127.0.0.1:2019", "probe_source": "127.0.1.1"},
        {"name": "LB-02", "admin": "http://127.0.0.1:2020", "probe_source": "127.0.1.2"}]
    inventory = parse_inventory(data, "inv.yaml")
    assert [(b.name, b.admin, b.upstreams_id, b.probe_source)
            for b in inventory.load_balancers] == [
        ("LB-01", "http://127.0.0.1:2019", "app-upstreams", "127.0.1.1"),
        ("LB-02", "http://127.0.0.1:2020", "app-upstreams", "127.0.1.2")]
    data["load_balancers"][1]["name"] = "LB-01"
    with pytest.raises(InventoryError, match="load_balancers.name: each must be unique"):
        parse_inventory(data, "inv.yaml")
    data["caddy"] = {"admin": "http://127.0.0.1:2019"}
    with pytest.raises(InventoryError, match="not both"):
        parse_inventory(data, "inv.yaml")
