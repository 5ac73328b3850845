#!/usr/bin/env python3
"""Draw the architecture from the synthesized Terraform JSON, so the pictures cannot go stale.

    python scripts/diagrams.py                          # production -> docs/*.svg
    python scripts/diagrams.py --environment staging --outdir /tmp/diagrams
    python scripts/diagrams.py --format dot             # the Graphviz sources instead

Two views of one environment stack (``cdktf.out/stacks/<environment>/cdk.tf.json``):

* ``implementation``: every host inside its subnet and security group, and one arrow per
  ``aws_vpc_security_group_ingress_rule``: the traffic the security groups allow in.
* ``cloud``: the AWS resources: region, VPC, availability zone, subnets, internet and NAT
  gateways with their default routes, Elastic IPs, instances and the EBS data volume.

Every node and arrow carries the Terraform address of the resource it stands for as its
``id``, so a test (or a reader of the SVG) can match the picture against the JSON.
Rendering needs Graphviz's ``dot`` (Debian/Ubuntu: ``apt-get install graphviz``).
Exit status 2, with one line on stderr, for a missing or unusable input.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Where `make synth` (python main.py) writes, honouring the same CDKTF_OUTDIR override.
DEFAULT_STACKS = Path(os.environ.get("CDKTF_OUTDIR", "cdktf.out")) / "stacks"
VIEWS = ("implementation", "cloud")
EXIT_BAD_INPUT = 2

# "${aws_subnet.network_private_F84D38B9.id}" -> ("aws_subnet", "network_private_F84D38B9")
_REFERENCE = re.compile(r"^\$\{(?P<type>[a-z0-9_]+)\.(?P<name>[A-Za-z0-9_-]+)\.[a-z_]+\}$")

FONT = "Helvetica,Arial,sans-serif"
# Colours carry meaning, the same in both views: public = blue, private = green.
PUBLIC_FILL, PRIVATE_FILL, GROUP_FILL = "#e8f1fb", "#eaf6ec", "#ffffff"
EXTERNAL_FILL = "#fdf3e1"


class InputError(Exception):
    """A stack file that is missing or does not have the shape this script draws."""


def load_stack(stacks_dir: Path, environment: str) -> dict:
    """The parsed ``cdk.tf.json`` of one environment; :class:`InputError` if unusable."""
    path = stacks_dir / environment / "cdk.tf.json"
    if not path.is_file():
        known = sorted(p.name for p in stacks_dir.glob("*") if (p / "cdk.tf.json").is_file())
        if not known:
            raise InputError(f"{path} not found: run `make synth` first")
        raise InputError(f"{path} not found; synthesized stacks: {', '.join(known)} "
                         "(run `make synth` after adding an environment)")
    try:
        stack = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not readable as JSON ({error}); run `make synth` again")
    if not isinstance(stack, dict) or not stack.get("resource", {}).get("aws_instance"):
        raise InputError(f"{path}: no aws_instance resources; is this an environment stack?")
    return stack


def reference(value, expected_type: str, where: str) -> str:
    """The Terraform address a ``${type.name.attr}`` string points to."""
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    if not match or match["type"] != expected_type:
        raise InputError(f"{where}: expected a reference to an {expected_type}, got {value!r}")
    return f"{match['type']}.{match['name']}"


def _resources(stack: dict, kind: str) -> dict[str, dict]:
    """``{address: body}`` of every resource of one type, in address order."""
    return {f"{kind}.{name}": body
            for name, body in sorted(stack.get("resource", {}).get(kind, {}).items())}


def _name_tag(body: dict, fallback: str) -> str:
    return (body.get("tags") or {}).get("Name") or fallback


def _environment(stack: dict) -> str:
    for body in _resources(stack, "aws_instance").values():
        environment = (body.get("tags") or {}).get("Environment")
        if environment:
            return environment
    return "environment"


def host_label(body: dict, address: str, environment: str) -> str:
    """The design's host name (``APP-2``) from the instance's Name tag."""
    return _name_tag(body, address).removeprefix(f"{environment}-")


def _quote(text: str) -> str:
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _attrs(attributes: dict) -> str:
    parts = [f"{key}={_quote(value)}" for key, value in attributes.items() if value is not None]
    return f" [{', '.join(parts)}]" if parts else ""


def _cluster(address: str) -> str:
    return "cluster_" + re.sub(r"[^A-Za-z0-9_]", "_", address)


class Dot:
    """A tiny writer of Graphviz source: nested clusters, nodes and edges, indented."""

    def __init__(self, name: str, **graph):
        self.lines = [f"digraph {name} {{"]
        self.depth = 1
        self.attributes("graph", **graph)

    def _emit(self, text: str) -> None:
        self.lines.append("  " * self.depth + text)

    def attributes(self, kind: str, **attributes) -> None:
        self._emit(f"{kind}{_attrs(attributes)};")

    def open_cluster(self, name: str, **graph) -> None:
        self._emit(f"subgraph {_quote(name)} {{")
        self.depth += 1
        self.attributes("graph", **graph)

    def close_cluster(self) -> None:
        self.depth -= 1
        self._emit("}")

    def node(self, name: str, **attributes) -> None:
        self._emit(f"{_quote(name)}{_attrs(attributes)};")

    def edge(self, tail: str, head: str, **attributes) -> None:
        self._emit(f"{_quote(tail)} -> {_quote(head)}{_attrs(attributes)};")

    def same_rank(self, names: list[str]) -> None:
        if len(names) > 1:
            self._emit("{rank=same; " + " ".join(f"{_quote(n)};" for n in names) + "}")

    def source(self) -> str:
        return "\n".join([*self.lines, "}"]) + "\n"


def _port_label(rule: dict) -> str:
    protocol = str(rule.get("ip_protocol", "tcp"))
    if protocol == "-1":
        return "all traffic"
    low, high = rule.get("from_port"), rule.get("to_port")
    ports = f"{low}" if low == high else f"{low}-{high}"
    return f"{protocol} {ports}"


class Topology:
    """The resources both views draw, resolved from references to plain addresses."""

    def __init__(self, stack: dict):
        self.environment = _environment(stack)
        self.region = (stack.get("provider", {}).get("aws") or [{}])[0].get("region", "?")
        self.vpcs = _resources(stack, "aws_vpc")
        self.subnets = _resources(stack, "aws_subnet")
        self.groups = _resources(stack, "aws_security_group")
        self.instances = _resources(stack, "aws_instance")
        self.ingress = _resources(stack, "aws_vpc_security_group_ingress_rule")
        self.internet_gateways = _resources(stack, "aws_internet_gateway")
        self.nat_gateways = _resources(stack, "aws_nat_gateway")
        self.eips = _resources(stack, "aws_eip")
        self.volumes = _resources(stack, "aws_ebs_volume")
        self.attachments = _resources(stack, "aws_volume_attachment")
        self.routes = _resources(stack, "aws_route")
        self.route_table_links = _resources(stack, "aws_route_table_association")
        self.balancers = _resources(stack, "aws_lb")
        self.listeners = _resources(stack, "aws_lb_listener")
        self.balancer_targets = _resources(stack, "aws_lb_target_group_attachment")

        self.subnet_of: dict[str, str] = {}
        self.groups_of: dict[str, list[str]] = {}
        for address, body in self.instances.items():
            self.subnet_of[address] = reference(body.get("subnet_id"), "aws_subnet", address)
            group_ids = body.get("vpc_security_group_ids") or []
            if not group_ids:
                raise InputError(f"{address}: no vpc_security_group_ids")
            self.groups_of[address] = [reference(g, "aws_security_group", address)
                                       for g in group_ids]
        for instance, subnet in self.subnet_of.items():
            if subnet not in self.subnets:
                raise InputError(f"{instance}: {subnet} is not defined in the stack")
        for instance, groups in self.groups_of.items():
            for group in groups:
                if group not in self.groups:
                    raise InputError(f"{instance}: {group} is not defined in the stack")

    def balancer_subnets(self, balancer: str) -> list[str]:
        return [reference(m.get("subnet_id"), "aws_subnet", balancer)
                for m in self.balancers[balancer].get("subnet_mapping") or []]

    def who_is(self, cidr: str) -> str:
        """Whom an ingress rule's CIDR stands for, as the picture names it."""
        if cidr in ("0.0.0.0/0", "::/0"):
            return "Internet"
        for subnet, body in self.subnets.items():
            if body.get("cidr_block") == cidr:
                if any(subnet in self.balancer_subnets(b) for b in self.balancers):
                    return "Network Load Balancer"
                return "Subnet"
        return "Administrators"

    def subnet_is_public(self, subnet: str) -> bool:
        """Public = its route table sends 0.0.0.0/0 to an internet gateway."""
        for route in self.routes.values():
            if route.get("gateway_id", "").startswith("${aws_internet_gateway."):
                table = reference(route.get("route_table_id"), "aws_route_table", "aws_route")
                if subnet in self._subnets_of_table(table):
                    return True
        return False

    def _subnets_of_table(self, table: str) -> list[str]:
        return [reference(link.get("subnet_id"), "aws_subnet", address)
                for address, link in self.route_table_links.items()
                if reference(link.get("route_table_id"), "aws_route_table", address) == table]

    def default_routes(self) -> list[tuple[str, str, str]]:
        """``(route address, subnet, gateway address)`` for every route to a gateway."""
        found = []
        for address, route in self.routes.items():
            table = reference(route.get("route_table_id"), "aws_route_table", address)
            if route.get("gateway_id"):
                gateway = reference(route["gateway_id"], "aws_internet_gateway", address)
            elif route.get("nat_gateway_id"):
                gateway = reference(route["nat_gateway_id"], "aws_nat_gateway", address)
            else:
                continue
            for subnet in self._subnets_of_table(table):
                found.append((address, subnet, gateway))
        return found

    def subnets_in(self, vpc: str) -> list[str]:
        return [subnet for subnet, body in self.subnets.items()
                if reference(body.get("vpc_id"), "aws_vpc", subnet) == vpc]

    def sorted_hosts(self, instances) -> list[str]:
        """Instances in the order of their host names, APP-2 before APP-10."""
        return sorted(instances, key=lambda address: _natural(self.host(address)))

    def host(self, address: str) -> str:
        return host_label(self.instances[address], address, self.environment)

    def group_name(self, group: str) -> str:
        return _name_tag(self.groups[group], group.split(".", 1)[1])

    def subnet_title(self, subnet: str) -> str:
        body = self.subnets[subnet]
        kind = "public" if self.subnet_is_public(subnet) else "private"
        return f"{kind} subnet {body.get('cidr_block', '?')}"


def _graph_defaults(dot: Dot) -> None:
    dot.attributes("node", shape="box", style="rounded,filled", fillcolor="white",
                   fontname=FONT, fontsize="11")
    dot.attributes("edge", fontname=FONT, fontsize="10", color="#444444")


def implementation_dot(stack: dict) -> str:
    """Graphviz source: hosts in subnets and security groups, arrows = ingress rules."""
    topo = Topology(stack)
    title = (f"{topo.environment} ({topo.region}): hosts in their subnets and security groups, "
             "arrows = inbound traffic allowed")
    dot = Dot("implementation", rankdir="LR", compound="true", newrank="true", fontname=FONT,
              fontsize="16", labelloc="t", nodesep="0.3", ranksep="1.2", label=title)
    _graph_defaults(dot)

    # Hosts of one security group in one subnet share a cluster (a host with several groups
    # sits in its first one's); an arrow ends on the cluster, or on a host of a further group.
    members: dict[tuple[str, str], list[str]] = defaultdict(list)
    for instance, groups in topo.groups_of.items():
        members[(topo.subnet_of[instance], groups[0])].append(instance)
    ends: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for key in sorted(members):
        ends[key[1]].append((topo.sorted_hosts(members[key])[0], _cluster(f"{key[0]}.{key[1]}")))
    for instance in topo.sorted_hosts(topo.groups_of):
        for group in topo.groups_of[instance][1:]:
            ends[group].append((instance, None))
    clusters_of_group = {group: sum(1 for _, c in found if c) for group, found in ends.items()}

    external: dict[str, str] = {}
    lonely: set[str] = set()  # groups that rules name but no instance uses
    for address, rule in topo.ingress.items():
        cidr = rule.get("cidr_ipv4") or rule.get("cidr_ipv6")
        if cidr:
            external.setdefault(cidr, f"cidr:{cidr}")
        for field in ("security_group_id", "referenced_security_group_id"):
            if rule.get(field):
                group = reference(rule[field], "aws_security_group", address)
                if group not in topo.groups:
                    raise InputError(f"{address}: {group} is not defined in the stack")
                if group not in ends:
                    lonely.add(group)
    for group in sorted(lonely):
        ends[group].append((group, None))
    for cidr, node in sorted(external.items()):
        dot.node(node, id=node, label=f"{topo.who_is(cidr)}\n{cidr}", style="filled,dashed",
                 fillcolor=EXTERNAL_FILL)

    for vpc, vpc_body in topo.vpcs.items():
        dot.open_cluster(_cluster(vpc), id=vpc, label=f"VPC {vpc_body.get('cidr_block', '?')}",
                         style="rounded", color="#888888")
        for subnet in topo.subnets_in(vpc):
            fill = PUBLIC_FILL if topo.subnet_is_public(subnet) else PRIVATE_FILL
            dot.open_cluster(_cluster(subnet), id=subnet, label=topo.subnet_title(subnet),
                             style="filled,rounded", fillcolor=fill, color="#999999")
            for (member_subnet, group), hosts in sorted(members.items()):
                if member_subnet != subnet:
                    continue
                spread = clusters_of_group[group] > 1
                dot.open_cluster(_cluster(f"{subnet}.{group}"), label=topo.group_name(group),
                                 id=f"{group}@{subnet}" if spread else group,
                                 style="filled", fillcolor=GROUP_FILL, color="#bbbbbb")
                for host in topo.sorted_hosts(hosts):
                    body = topo.instances[host]
                    label = "\n".join(part for part in (
                        topo.host(host), body.get("instance_type", "?"),
                        body.get("private_ip")) if part)
                    dot.node(host, id=host, label=label)
                # The hosts of a group stand in one column, in name order.
                dot.same_rank(topo.sorted_hosts(hosts))
                dot.close_cluster()
            dot.close_cluster()
        for group in sorted(lonely):
            if reference(topo.groups[group].get("vpc_id"), "aws_vpc", group) == vpc:
                dot.node(group, id=group, label=f"{topo.group_name(group)}\n(no host)",
                         style="rounded,dashed")
        dot.close_cluster()

    for address, rule in topo.ingress.items():
        target_group = reference(rule.get("security_group_id"), "aws_security_group", address)
        if rule.get("referenced_security_group_id"):
            source_group = reference(rule["referenced_security_group_id"],
                                     "aws_security_group", address)
            sources = ends[source_group]
        else:
            cidr = rule.get("cidr_ipv4") or rule.get("cidr_ipv6")
            if not cidr:
                raise InputError(f"{address}: neither a CIDR nor a security group as its source")
            sources = [(external[cidr], None)]
        pairs = [(source, target) for source in sources for target in ends[target_group]]
        for index, ((tail, tail_cluster), (head, head_cluster)) in enumerate(pairs):
            # One arrow per rule, unless a group is spread over several subnets or hosts.
            dot.edge(tail, head, id=address if index == 0 else f"{address}#{index + 1}",
                     label=_port_label(rule), tooltip=rule.get("description"),
                     ltail=tail_cluster, lhead=head_cluster)
    return dot.source()


def cloud_dot(stack: dict) -> str:
    """Graphviz source: region, VPC, zone, subnets, gateways, addresses, hosts, volume."""
    topo = Topology(stack)
    dot = Dot("cloud", rankdir="LR", compound="true", newrank="true", fontname=FONT,
              fontsize="16", labelloc="t", nodesep="0.25", ranksep="0.7",
              label=f"{topo.environment}: AWS resources")
    _graph_defaults(dot)
    dot.node("internet", id="internet", label="Internet", style="filled,dashed",
             fillcolor=EXTERNAL_FILL)

    dot.open_cluster(_cluster("region"), id=f"region:{topo.region}", style="rounded",
                     label=f"AWS region {topo.region}", color="#ff9900")
    # Elastic IPs belong to the region, not to the VPC.
    for eip, body in topo.eips.items():
        dot.node(eip, id=eip, label=f"Elastic IP\n{_name_tag(body, eip)}", shape="ellipse",
                 fillcolor="#fff7e6")
    for vpc, vpc_body in topo.vpcs.items():
        dot.open_cluster(_cluster(vpc), id=vpc, style="rounded", color="#888888",
                         label=f"VPC {_name_tag(vpc_body, vpc)}\n"
                               f"{vpc_body.get('cidr_block', '?')}")
        for igw, body in topo.internet_gateways.items():
            if reference(body.get("vpc_id"), "aws_vpc", igw) == vpc:
                dot.node(igw, id=igw, label=f"Internet gateway\n{_name_tag(body, igw)}")
        subnets = topo.subnets_in(vpc)
        zones = sorted({topo.subnets[s].get("availability_zone", "?") for s in subnets})
        for zone in zones:
            dot.open_cluster(_cluster(f"{vpc}.{zone}"), id=f"zone:{zone}",
                             label=f"availability zone {zone}", style="dashed,rounded",
                             color="#aaaaaa")
            for subnet in subnets:
                if topo.subnets[subnet].get("availability_zone", "?") == zone:
                    _cloud_subnet(dot, topo, subnet)
            for volume, body in topo.volumes.items():
                if body.get("availability_zone", "?") != zone:
                    continue
                label = "\n".join(part for part in (
                    f"EBS {body.get('type', 'gp2')} {body.get('size', '?')} GiB",
                    _name_tag(body, volume),
                    "encrypted" if body.get("encrypted") else "NOT encrypted") if part)
                dot.node(volume, id=volume, label=label, shape="cylinder", fillcolor="#f3e8fb")
            dot.close_cluster()
        dot.close_cluster()
    dot.close_cluster()

    # Arrows are written from the outside in (internet -> gateway -> subnet) so that Graphviz
    # lays the picture out from the internet inwards; ``dir="back"`` keeps each route arrow
    # pointing from the subnet to its gateway, the way the traffic leaves.
    for igw in topo.internet_gateways:
        dot.edge("internet", igw, id=f"{igw}<->internet", dir="both")
    for route, subnet, gateway in topo.default_routes():
        destination = topo.routes[route].get("destination_cidr_block", "?")
        dot.edge(gateway, f"{subnet}.anchor", id=route, dir="back", lhead=_cluster(subnet),
                 label=f"{destination} route", style="bold", color="#1f6fb2",
                 fontcolor="#1f6fb2")
    for eip, body in topo.eips.items():
        if body.get("instance"):
            target = reference(body["instance"], "aws_instance", eip)
            dot.edge(eip, target, id=f"{eip}->instance", style="dashed", arrowhead="none")
    for nat, body in topo.nat_gateways.items():
        if body.get("allocation_id"):
            eip = reference(body["allocation_id"], "aws_eip", nat)
            dot.edge(eip, nat, id=f"{eip}->nat", style="dashed", arrowhead="none")
    for balancer, body in topo.balancers.items():
        for mapping in body.get("subnet_mapping") or []:
            if mapping.get("allocation_id"):
                eip = reference(mapping["allocation_id"], "aws_eip", balancer)
                dot.edge(eip, balancer, id=f"{eip}->balancer", style="dashed",
                         arrowhead="none")
        listeners = [listener for listener in topo.listeners.values()
                     if reference(listener.get("load_balancer_arn"), "aws_lb",
                                  balancer) == balancer]
        ports = sorted({listener.get("port") for listener in listeners})
        groups = {reference(action.get("target_group_arn"), "aws_lb_target_group", balancer)
                  for listener in listeners for action in listener.get("default_action", [])}
        targets = sorted({reference(a.get("target_id"), "aws_instance", balancer)
                          for a in topo.balancer_targets.values()
                          if reference(a.get("target_group_arn"), "aws_lb_target_group",
                                       balancer) in groups}, key=topo.host)
        for target in targets:
            dot.edge(balancer, target, id=f"{balancer}->{target}", color="#1f6fb2",
                     label="tcp " + ", ".join(map(str, ports)))
    for attachment, body in topo.attachments.items():
        volume = reference(body.get("volume_id"), "aws_ebs_volume", attachment)
        instance = reference(body.get("instance_id"), "aws_instance", attachment)
        dot.edge(instance, volume, id=attachment, color="#7b3fa0", fontcolor="#7b3fa0",
                 arrowhead="none", label=f"attached as {body.get('device_name', '?')}")
    return dot.source()


def _cloud_subnet(dot: Dot, topo: Topology, subnet: str) -> None:
    fill = PUBLIC_FILL if topo.subnet_is_public(subnet) else PRIVATE_FILL
    label = f"{topo.subnet_title(subnet)}\n{_name_tag(topo.subnets[subnet], subnet)}"
    dot.open_cluster(_cluster(subnet), id=subnet, style="filled,rounded", color="#999999",
                     fillcolor=fill, label=label)
    # An invisible point gives a route arrow somewhere to end even in an empty subnet.
    dot.node(f"{subnet}.anchor", label="", shape="point", style="invis", width="0")
    for nat, body in topo.nat_gateways.items():
        if reference(body.get("subnet_id"), "aws_subnet", nat) == subnet:
            dot.node(nat, id=nat, label=f"NAT gateway\n{_name_tag(body, nat)}")
    for balancer, body in topo.balancers.items():
        if subnet in topo.balancer_subnets(balancer)[:1]:
            dot.node(balancer, id=balancer,
                     label=f"Network Load Balancer\n{body.get('name', balancer)}")
    hosts = topo.sorted_hosts(a for a, s in topo.subnet_of.items() if s == subnet)
    for host in hosts:
        body = topo.instances[host]
        root = body.get("root_block_device") or {}
        dot.node(host, id=host, label=f"EC2 {topo.host(host)}\n{body.get('instance_type', '?')}"
                                      f"\nroot {root.get('volume_type', 'gp2')} "
                                      f"{root.get('volume_size', '?')} GiB")
    dot.same_rank([f"{subnet}.anchor", *hosts])
    dot.close_cluster()


def _natural(text: str) -> list:
    """Sort APP-2 before APP-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


RENDERERS = {"implementation": implementation_dot, "cloud": cloud_dot}


def render_svg(dot_source: str, dot_binary: str) -> bytes:
    """Lay out one DOT source with Graphviz and return the SVG."""
    result = subprocess.run([dot_binary, "-Tsvg"], input=dot_source.encode(),
                            capture_output=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"dot failed: {message[0] if message else result.returncode}")
    return result.stdout


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--environment", default="production",
                        help="the environment stack to draw (default: production)")
    parser.add_argument("--stacks-dir", type=Path, default=DEFAULT_STACKS,
                        help="folder of synthesized stacks (default: $CDKTF_OUTDIR/stacks or "
                             "cdktf.out/stacks)")
    parser.add_argument("--outdir", type=Path, default=REPO / "docs",
                        help="where implementation.svg and cloud.svg go (default: docs/)")
    parser.add_argument("--format", choices=("svg", "dot"), default="svg",
                        help="svg (default) or the Graphviz dot sources")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        stack = load_stack(args.stacks_dir, args.environment)
        sources = {view: RENDERERS[view](stack) for view in VIEWS}
        dot_binary = None
        if args.format == "svg":
            dot_binary = shutil.which("dot")
            if not dot_binary:
                raise InputError("Graphviz `dot` not found; install it (apt-get install "
                                 "graphviz, brew install graphviz) or use --format dot")
        outputs = {view: (render_svg(source, dot_binary) if dot_binary else source.encode())
                   for view, source in sources.items()}
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        # A hand-edited or foreign JSON file: say so in one line rather than a traceback.
        print(f"error: {args.stacks_dir / args.environment / 'cdk.tf.json'}: not a stack this "
              f"script understands ({type(error).__name__}: {error}); run `make synth` again",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        args.outdir.mkdir(parents=True, exist_ok=True)
        for view, content in outputs.items():
            path = args.outdir / f"{view}.{args.format}"
            path.write_bytes(content)
            print(f"wrote {path}")
    except OSError as error:
        print(f"error: cannot write into {args.outdir}: {error.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
