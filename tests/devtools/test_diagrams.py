"""scripts/diagrams.py: the pictures are drawn from the synthesized JSON and keep up with it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import diagrams

from tests.tools import require_tool

from .conftest import REPO_ROOT, SCRIPTS, WIDER_APP_HOST_COUNT

_ATTR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_NODE = re.compile(r'^\s*"(?P<name>(?:[^"\\]|\\.)*)" \[(?P<attrs>.*)\];$')
_EDGE = re.compile(r'^\s*"(?P<tail>(?:[^"\\]|\\.)*)" -> "(?P<head>(?:[^"\\]|\\.)*)"'
                   r'(?: \[(?P<attrs>.*)\])?;$')
_CLUSTER = re.compile(r'^\s*subgraph "(?P<name>[^"]+)" \{$')
_GRAPH = re.compile(r'^\s*graph \[(?P<attrs>.*)\];$')


class Parsed:
    """A DOT source read back: nodes and edges with their attributes and enclosing clusters."""

    def __init__(self, source: str):
        self.nodes: dict[str, dict] = {}
        self.edges: list[dict] = []
        self.clusters: dict[str, dict] = {}
        self.graph: dict = {}
        self.parents: dict[str, list[str]] = {}  # node -> ids of enclosing clusters, outer first
        stack: list[str] = []
        for line in source.splitlines():
            if match := _CLUSTER.match(line):
                stack.append(match["name"])
                self.clusters[match["name"]] = {}
            elif match := _GRAPH.match(line):
                attributes = dict(_ATTR.findall(match["attrs"]))
                if stack:
                    self.clusters[stack[-1]] = attributes
                else:
                    self.graph = attributes
            elif line.strip() == "}" and stack:
                stack.pop()
            elif match := _EDGE.match(line):
                self.edges.append({"tail": match["tail"], "head": match["head"],
                                   **dict(_ATTR.findall(match["attrs"] or ""))})
            elif match := _NODE.match(line):
                self.nodes[match["name"]] = dict(_ATTR.findall(match["attrs"]))
                self.parents[match["name"]] = [self.clusters[c].get("id", c) for c in stack]

    def texts(self) -> set[str]:
        """Every line of text the picture shows: labels of nodes, arrows and clusters."""
        labels = [a.get("label", "") for a in (self.graph, *self.nodes.values(), *self.edges,
                                               *self.clusters.values())]
        return {line for label in labels for line in label.split("\\n") if line}

    def ids(self) -> set[str]:
        return ({a["id"] for a in self.nodes.values() if "id" in a}
                | {e["id"] for e in self.edges if "id" in e}
                | {a["id"] for a in self.clusters.values() if "id" in a})


def addresses(stack: dict, kind: str) -> dict[str, dict]:
    return {f"{kind}.{name}": body for name, body in stack["resource"].get(kind, {}).items()}


def target(value: str) -> str:
    return re.fullmatch(r"\$\{([a-z0-9_]+\.[A-Za-z0-9_-]+)\.[a-z_]+\}", value)[1]


@pytest.fixture(scope="module", params=["production", "staging"])
def environment_stack(request, stack_json):
    return stack_json(request.param)


def test_implementation_view_draws_every_instance_in_its_subnet_and_group(environment_stack):
    view = Parsed(diagrams.implementation_dot(environment_stack))
    instances = addresses(environment_stack, "aws_instance")
    assert instances
    for address, body in instances.items():
        assert address in view.nodes, f"{address} is missing from the implementation view"
        label = view.nodes[address]["label"]
        host = body["tags"]["Name"].split("-", 1)[1]
        for fact in (host, body["instance_type"], body["private_ip"]):
            assert fact in label, f"{address}: {fact} not shown"
        enclosing = view.parents[address]
        assert target(body["subnet_id"]) in enclosing
        assert target(body["vpc_security_group_ids"][0]) in enclosing


def test_implementation_view_draws_one_arrow_per_ingress_rule(environment_stack):
    view = Parsed(diagrams.implementation_dot(environment_stack))
    rules = addresses(environment_stack, "aws_vpc_security_group_ingress_rule")
    assert len(rules) >= 8
    by_id = {edge["id"]: edge for edge in view.edges}
    assert set(by_id) == set(rules), "one arrow per ingress rule, and nothing else"
    groups_of = {address: target(body["vpc_security_group_ids"][0])
                 for address, body in addresses(environment_stack, "aws_instance").items()}
    for address, rule in rules.items():
        edge = by_id[address]
        assert edge["label"] == f"tcp {rule['from_port']}"
        assert edge["tooltip"] == rule["description"]
        # The arrow ends on a host of the rule's group...
        assert groups_of[edge["head"]] == target(rule["security_group_id"])
        # ...and starts on a host of the source group, or on the source network.
        if "referenced_security_group_id" in rule:
            assert groups_of[edge["tail"]] == target(rule["referenced_security_group_id"])
        else:
            assert edge["tail"] == f"cidr:{rule['cidr_ipv4']}"
            assert rule["cidr_ipv4"] in view.nodes[edge["tail"]]["label"]


def test_cloud_view_draws_the_network_hosts_and_volume(environment_stack):
    view = Parsed(diagrams.cloud_dot(environment_stack))
    ids = view.ids()
    for kind in ("aws_vpc", "aws_subnet", "aws_internet_gateway", "aws_nat_gateway", "aws_eip",
                 "aws_instance", "aws_ebs_volume", "aws_volume_attachment", "aws_route"):
        found = addresses(environment_stack, kind)
        assert found, f"the stack has no {kind}"
        assert set(found) <= ids, f"{kind} missing from the cloud view"
    for address, body in addresses(environment_stack, "aws_instance").items():
        assert target(body["subnet_id"]) in view.parents[address]
    for address, body in addresses(environment_stack, "aws_volume_attachment").items():
        (edge,) = [e for e in view.edges if e.get("id") == address]
        ends = (target(body["instance_id"]), target(body["volume_id"]))
        assert (edge["tail"], edge["head"]) == ends
    for address, body in addresses(environment_stack, "aws_route").items():
        (edge,) = [e for e in view.edges if e.get("id") == address]
        gateway = body.get("gateway_id") or body.get("nat_gateway_id")
        assert edge["tail"] == target(gateway)
    nat = next(iter(addresses(environment_stack, "aws_nat_gateway").values()))
    public_subnet = target(nat["subnet_id"])
    nat_address = next(iter(addresses(environment_stack, "aws_nat_gateway")))
    assert public_subnet in view.parents[nat_address]


def test_a_change_in_the_app_host_count_changes_the_picture(stack_json, wider_cdktf_out):
    wider = diagrams.load_stack(wider_cdktf_out / "stacks", "production")
    default = stack_json("production")
    for render in (diagrams.implementation_dot, diagrams.cloud_dot):
        before, after = Parsed(render(default)), Parsed(render(wider))
        hosts_before = {a["label"].split("\n")[0] for a in before.nodes.values()
                        if "APP-" in a.get("label", "")}
        hosts_after = {a["label"].split("\n")[0] for a in after.nodes.values()
                       if "APP-" in a.get("label", "")}
        assert len(hosts_after) == WIDER_APP_HOST_COUNT
        assert len(hosts_after) - len(hosts_before) == WIDER_APP_HOST_COUNT - 3
        assert set(addresses(wider, "aws_instance")) <= after.ids()
    dot = require_tool("dot", "graphviz")
    assert (diagrams.render_svg(diagrams.implementation_dot(default), dot)
            != diagrams.render_svg(diagrams.implementation_dot(wider), dot))


SVG = "{http://www.w3.org/2000/svg}"


def _svg_ids(root: ET.Element) -> set[str]:
    return {g.get("id") for g in root.iter(f"{SVG}g")
            if g.get("class") in ("node", "edge", "cluster")}


def _svg_texts(root: ET.Element) -> set[str]:
    return {text.text for text in root.iter(f"{SVG}text") if text.text}


@pytest.mark.parametrize("view", diagrams.VIEWS)
def test_committed_diagrams_show_the_current_production_stack(view, stack_json):
    """docs/*.svg are generated files: the same resources and the same words as the picture
    of what the code synthesizes today (a changed instance type or port shows up too)."""
    expected = Parsed(diagrams.RENDERERS[view](stack_json("production")))
    committed = ET.parse(REPO_ROOT / "docs" / f"{view}.svg").getroot()
    stale = f"docs/{view}.svg is stale: run `make synth && python scripts/diagrams.py`"
    assert _svg_ids(committed) == expected.ids(), stale
    assert _svg_texts(committed) == expected.texts(), stale


def run_script(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "diagrams.py"), *map(str, arguments)],
                          capture_output=True, text=True, check=False, cwd=REPO_ROOT)


def test_command_writes_both_svg_files(cdktf_out, tmp_path):
    require_tool("dot", "graphviz")
    result = run_script("--stacks-dir", cdktf_out / "stacks", "--outdir", tmp_path)
    assert result.returncode == 0, result.stderr
    for view in diagrams.VIEWS:
        root = ET.parse(tmp_path / f"{view}.svg").getroot()
        assert root.tag == f"{SVG}svg"
        texts = _svg_texts(root)
        assert {"APP-1", "APP-3", "DB-01"} <= {text.removeprefix("EC2 ") for text in texts}
    assert result.stdout.splitlines() == [f"wrote {tmp_path / f'{view}.svg'}"
                                          for view in diagrams.VIEWS]


def test_command_writes_the_dot_sources_on_request(cdktf_out, stack_json, tmp_path):
    result = run_script("--stacks-dir", cdktf_out / "stacks", "--outdir", tmp_path,
                        "--environment", "staging", "--format", "dot")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cloud.dot").read_text() == diagrams.cloud_dot(stack_json("staging"))


@pytest.mark.parametrize("arguments, message", [
    (["--stacks-dir", "nowhere/stacks"], "run `make synth` first"),
    (["--environment", "qa"], "synthesized stacks: bootstrap, production, staging"),
    (["--environment", "bootstrap"], "no aws_instance resources"),
])
def test_bad_input_is_one_line_and_exit_status_2(arguments, message, cdktf_out):
    if "--stacks-dir" not in arguments:
        arguments = ["--stacks-dir", cdktf_out / "stacks", *arguments]
    result = run_script(*arguments)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_graphviz_is_reported_in_one_line(cdktf_out, tmp_path):
    # PATH without `dot` (but with the interpreter, which is called by its full path).
    bare = tmp_path / "bin"
    bare.mkdir()
    result = subprocess.run([sys.executable, str(SCRIPTS / "diagrams.py"), "--stacks-dir",
                             str(cdktf_out / "stacks"), "--outdir", str(tmp_path / "out")],
                            capture_output=True, text=True, check=False,
                            env={"PATH": str(bare)})
    assert result.returncode == 2
    assert "Graphviz `dot` not found" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_malformed_stack_is_reported_in_one_line(tmp_path):
    stack = tmp_path / "stacks" / "production"
    stack.mkdir(parents=True)
    (stack / "cdk.tf.json").write_text('{"resource": {"aws_instance": {"x": '
                                       '{"subnet_id": "subnet-123"}}}}')
    result = run_script("--stacks-dir", tmp_path / "stacks", "--format", "dot",
                        "--outdir", tmp_path / "out")
    assert result.returncode == 2
    assert "expected a reference to an aws_subnet" in result.stderr
    assert "Traceback" not in result.stderr


def test_graphviz_is_not_needed_for_the_sources(cdktf_out, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert diagrams.main(["--stacks-dir", str(cdktf_out / "stacks"), "--outdir",
                          str(tmp_path), "--format", "dot"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.dot", "implementation.dot"]


def test_a_group_without_hosts_and_a_host_with_two_groups_are_still_drawn(stack_json):
    """Not in the design today; the picture must not break the day it happens."""
    stack = json.loads(json.dumps(stack_json("production")))
    resources = stack["resource"]
    app_group = next(k for k in resources["aws_security_group"] if "_app_" in k)
    vpc = next(iter(resources["aws_vpc"]))
    resources["aws_security_group"]["endpoints"] = {
        "vpc_id": f"${{aws_vpc.{vpc}.id}}", "tags": {"Name": "SG-ENDPOINTS"}}
    resources["aws_vpc_security_group_ingress_rule"]["endpoints-in-443"] = {
        "security_group_id": "${aws_security_group.endpoints.id}", "ip_protocol": "tcp",
        "from_port": 443, "to_port": 443, "description": "HTTPS to the VPC endpoints",
        "referenced_security_group_id": f"${{aws_security_group.{app_group}.id}}"}
    db = next(k for k in resources["aws_instance"] if k.startswith("DB-01"))
    resources["aws_instance"][db]["vpc_security_group_ids"].append(
        f"${{aws_security_group.{app_group}.id}}")

    view = Parsed(diagrams.implementation_dot(stack))
    assert view.nodes["aws_security_group.endpoints"]["label"] == "SG-ENDPOINTS\\n(no host)"
    arrows = [e for e in view.edges
              if e["id"].startswith("aws_vpc_security_group_ingress_rule.endpoints-in-443")]
    # From the APP hosts' cluster and from DB-01, which is now in SG-APP too.
    app_1 = next(k for k in resources["aws_instance"] if k.startswith("APP-1_"))
    assert {e["tail"] for e in arrows} == {f"aws_instance.{db}", f"aws_instance.{app_1}"}
    assert {e["head"] for e in arrows} == {"aws_security_group.endpoints"}
    svg = diagrams.render_svg(diagrams.implementation_dot(stack), require_tool("dot", "graphviz"))
    assert {"SG-ENDPOINTS", "(no host)"} <= _svg_texts(ET.fromstring(svg))


def test_the_network_load_balancer_is_drawn_and_its_health_checks_named(stack_json):
    """Two LBs: the NLB holds the Elastic IP and sends 80/443 to both; the one rule it adds
    to SG-LB comes from the NLB, not from administrators."""
    stack = stack_json("production")
    cloud = Parsed(diagrams.cloud_dot(stack))
    (balancer,) = [n for n in cloud.nodes if n.startswith("aws_lb.")]
    assert cloud.nodes[balancer]["label"] == "Network Load Balancer\\nnlb-webapp-production"
    heads = {e["head"] for e in cloud.edges if e["tail"] == balancer}
    targets = {cloud.nodes[h]["label"].split("\\n")[0] for h in heads}
    assert targets == {"EC2 LB-01", "EC2 LB-02"}
    assert any(e["head"] == balancer and e["tail"].startswith("aws_eip.") for e in cloud.edges)
    implementation = Parsed(diagrams.implementation_dot(stack))
    assert implementation.nodes["cidr:10.0.1.0/24"]["label"] == (
        "Network Load Balancer\\n10.0.1.0/24")
