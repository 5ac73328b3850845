#!/usr/bin/env python3
"""Estimate the monthly AWS bill of each environment from its synthesized Terraform JSON.

    python scripts/cost.py                      # every environment stack in cdktf.out/stacks
    python scripts/cost.py production --format markdown
    python scripts/cost.py --update-doc docs/local-development.md

What is priced is what runs whether anybody uses it or not: EC2 instances, their detailed
monitoring, EBS root and data volumes, NAT gateway and Network Load Balancer hours and public
IPv4 addresses (Elastic IPs; AWS bills every public IPv4 address by the hour since February
2024). With two load balancers, a note says what high availability adds: the second LB host
and the Network Load Balancer. Prices are the
on-demand list prices of the stack's region in ``data/aws-prices.json``, whose ``as_of`` date
is printed with every table. Usage-based charges (data transfer, NAT data processing, log
ingestion...) are named under the table, not guessed.

Exit status 2, with one line on stderr, for a missing stack, or a region, instance type or
volume type that the price file does not know.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PRICES = REPO / "data" / "aws-prices.json"
# Where `make synth` (python main.py) writes, honouring the same CDKTF_OUTDIR override.
DEFAULT_STACKS = Path(os.environ.get("CDKTF_OUTDIR", "cdktf.out")) / "stacks"
EXIT_BAD_INPUT = 2
CENT = Decimal("0.01")

# What AWS does when the JSON leaves a field out (aws provider defaults).
DEFAULT_EBS_TYPE = "gp2"
# The root volume of an AMI whose size is not set: Ubuntu's images are 8 GiB.
ASSUMED_ROOT_GB = 8

_REFERENCE = re.compile(r"^\$\{(?P<type>[a-z0-9_]+)\.(?P<name>[A-Za-z0-9_-]+)\.[a-z_]+\}$")
_REGION_KEYS = ("ec2_instance_hour", "ebs_gb_month", "nat_gateway_hour", "nat_gateway_gb",
                "public_ipv4_hour", "cloudwatch_metric_month", "nlb_hour", "nlb_lcu_hour")


class CostError(Exception):
    """Input that cannot be priced; the message is the one line shown to the user."""


@dataclass
class Line:
    """One row of the estimate."""

    item: str
    resources: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    per: str
    monthly: Decimal

    def quantity_text(self) -> str:
        return f"{self.quantity} {self.unit}" if self.unit else f"{self.quantity}"

    def price_text(self) -> str:
        return f"{self.unit_price} /{self.per}"


@dataclass
class Estimate:
    """The monthly estimate of one stack."""

    environment: str
    region: str
    as_of: str
    currency: str
    hours_per_month: int
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_included: list[str] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        # The sum of the rounded lines, so the table adds up for its reader.
        return sum((line.monthly for line in self.lines), Decimal("0.00"))


# ---------------------------------------------------------------------------------- inputs

def load_prices(path: Path) -> dict:
    """The price file, numbers as :class:`Decimal`; :class:`CostError` if malformed."""
    try:
        prices = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal,
                            parse_int=Decimal)
    except FileNotFoundError:
        raise CostError(f"{path} not found; it holds the prices (see data/aws-prices.json)")
    except (OSError, ValueError) as error:
        raise CostError(f"{path}: not readable as JSON ({error})")
    problems = []
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(prices.get("as_of", ""))):
        problems.append("as_of must be a date, YYYY-MM-DD")
    for key in ("hours_per_month", "detailed_monitoring_metrics_per_instance"):
        if not isinstance(prices.get(key), Decimal) or prices[key] <= 0:
            problems.append(f"{key} must be a positive number")
    regions = prices.get("regions")
    if not isinstance(regions, dict) or not regions:
        problems.append("regions must map region names to their prices")
        regions = {}
    for region, table in regions.items():
        missing = [key for key in _REGION_KEYS if key not in (table or {})]
        if missing:
            problems.append(f"regions.{region} lacks {', '.join(missing)}")
            continue
        for key in _REGION_KEYS:
            values = table[key].values() if isinstance(table[key], dict) else [table[key]]
            if not all(isinstance(v, Decimal) and v >= 0 for v in values):
                problems.append(f"regions.{region}.{key}: prices must be numbers >= 0")
    if problems:
        raise CostError(f"{path}: {problems[0]}")
    return prices


def stack_path(stacks_dir: Path, name: str) -> Path:
    return stacks_dir / name / "cdk.tf.json"


def load_stack(stacks_dir: Path, name: str) -> dict:
    """The parsed ``cdk.tf.json`` of one stack; :class:`CostError` if missing or unreadable."""
    path = stack_path(stacks_dir, name)
    if not path.is_file():
        known = synthesized_stacks(stacks_dir)
        if not known:
            raise CostError(f"{path} not found: run `make synth` first")
        raise CostError(f"{path} not found; synthesized stacks: {', '.join(known)} "
                        "(run `make synth` after adding an environment)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CostError(f"{path}: not readable as JSON ({error}); run `make synth` again")


def synthesized_stacks(stacks_dir: Path) -> list[str]:
    if not stacks_dir.is_dir():
        return []
    return sorted(p.name for p in stacks_dir.iterdir() if (p / "cdk.tf.json").is_file())


def environment_stacks(stacks_dir: Path) -> list[str]:
    """The synthesized stacks that run hosts: every environment, not the bootstrap stack."""
    names = []
    for name in synthesized_stacks(stacks_dir):
        if load_stack(stacks_dir, name).get("resource", {}).get("aws_instance"):
            names.append(name)
    return names


# -------------------------------------------------------------------------------- estimate

def _resources(stack: dict, kind: str) -> dict[str, dict]:
    return {f"{kind}.{name}": body
            for name, body in sorted(stack.get("resource", {}).get(kind, {}).items())}


def _target(value) -> str | None:
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    return f"{match['type']}.{match['name']}" if match else None


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def compact(names: list[str]) -> str:
    """``LB-01, APP-1, APP-2, APP-3`` -> ``APP-1..3, LB-01``: runs of numbered names shortened."""
    parts: list[str] = []
    run: list[tuple[str, int, str]] = []

    def flush() -> None:
        if len(run) > 2:
            parts.append(f"{run[0][2]}..{run[-1][1]}")
        else:
            parts.extend(name for _, _, name in run)
        run.clear()

    for name in sorted(set(names), key=_natural):
        match = re.fullmatch(r"(.*?)(\d+)", name)
        if match and run and run[-1][0] == match[1] and run[-1][1] + 1 == int(match[2]):
            run.append((match[1], int(match[2]), name))
            continue
        flush()
        if match:
            run.append((match[1], int(match[2]), name))
        else:
            parts.append(name)
    flush()
    return ", ".join(parts)


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def estimate(stack: dict, environment: str, prices: dict, prices_path: Path) -> Estimate:
    """Price one synthesized stack; :class:`CostError` names what the price file lacks."""
    providers = stack.get("provider", {}).get("aws") or [{}]
    region = providers[0].get("region")
    if not region:
        raise CostError(f"{environment}: the stack names no AWS region (provider.aws.region)")
    table = prices["regions"].get(region)
    if table is None:
        known = ", ".join(sorted(prices["regions"]))
        raise CostError(f"{environment}: no prices for region {region} in {prices_path.name} "
                        f"(it knows {known}); add the region's on-demand prices")
    hours = prices["hours_per_month"]
    result = Estimate(environment=environment, region=region, as_of=str(prices["as_of"]),
                      currency=prices.get("currency", "USD"), hours_per_month=int(hours))

    instances = _resources(stack, "aws_instance")
    names = {address: _host_name(body, address, environment)
             for address, body in instances.items()}
    by_type: dict[str, list[str]] = {}
    for address, body in instances.items():
        by_type.setdefault(str(body.get("instance_type", "?")), []).append(address)
    for instance_type in sorted(by_type, key=lambda t: table["ec2_instance_hour"].get(t, 0)):
        price = table["ec2_instance_hour"].get(instance_type)
        if price is None:
            known = ", ".join(table["ec2_instance_hour"])
            raise CostError(f"{environment}: no price for instance type {instance_type} in "
                            f"{region} in {prices_path.name} (it knows {known}); add its "
                            "on-demand Linux price")
        members = by_type[instance_type]
        count = Decimal(len(members))
        result.lines.append(Line(
            f"EC2 {instance_type}", compact([names[a] for a in members]), count, "",
            price, "hour", _money(count * price * hours)))

    monitored = [a for a, body in instances.items() if body.get("monitoring")]
    if monitored:
        metrics = Decimal(len(monitored)) * prices["detailed_monitoring_metrics_per_instance"]
        price = table["cloudwatch_metric_month"]
        result.lines.append(Line(
            "EC2 detailed monitoring", f"{len(monitored)} instances", metrics, "metrics",
            price, "metric-month", _money(metrics * price)))

    roots: dict[str, list[tuple[str, Decimal]]] = {}
    for address, body in instances.items():
        root = body.get("root_block_device") or {}
        if isinstance(root, list):
            root = root[0] if root else {}
        size = root.get("volume_size")
        if size is None:
            size = ASSUMED_ROOT_GB
            result.notes.append(f"{names[address]}: root volume size not set; "
                                f"assumed {ASSUMED_ROOT_GB} GiB")
        roots.setdefault(str(root.get("volume_type", DEFAULT_EBS_TYPE)), []).append(
            (names[address], Decimal(size)))
    for volume_type, volumes in sorted(roots.items()):
        price = _ebs_price(table, volume_type, environment, region, prices_path)
        size = sum((gb for _, gb in volumes), Decimal(0))
        sizes = {gb for _, gb in volumes}
        who = (f"{len(volumes)} hosts x {sizes.pop()} GiB" if len(sizes) == 1
               else compact([n for n, _ in volumes]))
        result.lines.append(Line(
            f"EBS {volume_type} root volumes", who, size, "GiB", price, "GiB-month",
            _money(size * price)))

    for address, body in _resources(stack, "aws_ebs_volume").items():
        volume_type = str(body.get("type", DEFAULT_EBS_TYPE))
        price = _ebs_price(table, volume_type, environment, region, prices_path)
        size = Decimal(body.get("size", 0))
        result.lines.append(Line(
            f"EBS {volume_type} volume", _tag_name(body, address), size, "GiB", price,
            "GiB-month", _money(size * price)))
        if volume_type == "gp3" and (int(body.get("iops", 3000)) > 3000
                                     or int(body.get("throughput", 125)) > 125):
            result.notes.append(f"{_tag_name(body, address)}: IOPS or throughput above the "
                                "gp3 baseline is not priced")

    nat_gateways = _resources(stack, "aws_nat_gateway")
    if nat_gateways:
        count = Decimal(len(nat_gateways))
        price = table["nat_gateway_hour"]
        result.lines.append(Line(
            "NAT gateway", ", ".join(_tag_name(b, a) for a, b in nat_gateways.items()), count,
            "", price, "hour", _money(count * price * hours)))

    balancers = _resources(stack, "aws_lb")
    if balancers:
        count = Decimal(len(balancers))
        price = table["nlb_hour"]
        result.lines.append(Line(
            "Network Load Balancer", ", ".join(str(b.get("name", a)) for a, b in
                                               balancers.items()),
            count, "", price, "hour", _money(count * price * hours)))
        result.notes.append(_high_availability(instances, names, table, prices,
                                               result.lines[-1].monthly))

    addresses = _public_ipv4(stack, instances, names, nat_gateways, balancers)
    if addresses:
        count = Decimal(len(addresses))
        price = table["public_ipv4_hour"]
        result.lines.append(Line(
            "Public IPv4 addresses", ", ".join(addresses), count, "", price, "hour",
            _money(count * price * hours)))

    result.not_included = ["data transfer out of AWS"]
    if balancers:
        result.not_included.append(
            f"Network Load Balancer capacity units ({table['nlb_lcu_hour']}/NLCU-hour)")
    if nat_gateways:
        result.not_included.append(
            f"NAT gateway data processing ({table['nat_gateway_gb']}/GB)")
    if _resources(stack, "aws_flow_log") or _resources(stack, "aws_cloudwatch_log_group"):
        result.not_included.append("CloudWatch Logs ingestion and storage (VPC flow logs)")
    if any(str(b.get("instance_type", "")).startswith(("t2.", "t3", "t4g."))
           for b in instances.values()):
        result.not_included.append("burstable CPU credits above the baseline")
    buckets = len(_resources(stack, "aws_s3_bucket"))
    result.not_included.append("EBS snapshots and S3 storage (the state bucket"
                               + (f" and this environment's {buckets} bucket(s)" if buckets
                                  else "") + ")")
    return result


def _high_availability(instances: dict, names: dict, table: dict, prices: dict,
                       balancer_monthly: Decimal) -> str:
    """What the second and later LB hosts and the NLB cost, as one note."""
    hours = prices["hours_per_month"]
    lbs = sorted((a for a, b in instances.items() if (b.get("tags") or {}).get("Role") == "lb"),
                 key=lambda a: _natural(names[a]))
    extra = Decimal(0)
    for address in lbs[1:]:
        body = instances[address]
        extra += _money(table["ec2_instance_hour"][str(body.get("instance_type"))] * hours)
        if body.get("monitoring"):
            extra += _money(prices["detailed_monitoring_metrics_per_instance"]
                            * table["cloudwatch_metric_month"])
        root = body.get("root_block_device") or {}
        root = (root[0] if root else {}) if isinstance(root, list) else root
        extra += _money(Decimal(root.get("volume_size", ASSUMED_ROOT_GB)) * table[
            "ebs_gb_month"].get(str(root.get("volume_type", DEFAULT_EBS_TYPE)), 0))
    extra_names = compact([names[a] for a in lbs[1:]]) or "no second LB"
    # With one LB its Elastic IP is its only address; with the NLB holding that one, every
    # LB needs an address of its own to reach the internet.
    addresses = sum(1 for a in lbs if instances[a].get("associate_public_ip_address"))
    address_cost = _money(table["public_ipv4_hour"] * hours * addresses)
    total = extra + balancer_monthly + address_cost
    return (f"high availability adds {total:,.2f} a month: "
            f"{extra_names} (instance, monitoring, root volume) {extra:,.2f}, the Network "
            f"Load Balancer {balancer_monthly:,.2f} before its capacity units, and the LBs' "
            f"{addresses} own public IPv4 addresses {address_cost:,.2f}")


def _ebs_price(table: dict, volume_type: str, environment: str, region: str,
               prices_path: Path) -> Decimal:
    price = table["ebs_gb_month"].get(volume_type)
    if price is None:
        known = ", ".join(table["ebs_gb_month"])
        raise CostError(f"{environment}: no price for EBS volume type {volume_type} in {region} "
                        f"in {prices_path.name} (it knows {known}); add its price per GiB-month")
    return price


def _tag_name(body: dict, address: str) -> str:
    return (body.get("tags") or {}).get("Name") or address


def _host_name(body: dict, address: str, environment: str) -> str:
    return _tag_name(body, address).removeprefix(f"{environment}-")


def _public_ipv4(stack: dict, instances: dict, names: dict, nat_gateways: dict,
                 balancers: dict) -> list[str]:
    """Who holds a public IPv4 address: every Elastic IP, and hosts given one automatically."""
    nat_of = {_target(b.get("allocation_id")): a for a, b in nat_gateways.items()}
    balancer_of = {_target(mapping.get("allocation_id")): a for a, b in balancers.items()
                   for mapping in b.get("subnet_mapping") or []}
    holders, with_eip = [], set()
    for address, body in _resources(stack, "aws_eip").items():
        instance = _target(body.get("instance"))
        if instance in names:
            with_eip.add(instance)
            holders.append(f"{names[instance]} (Elastic IP)")
        elif address in nat_of:
            holders.append("NAT gateway (Elastic IP)")
        elif address in balancer_of:
            holders.append("Network Load Balancer (Elastic IP)")
        else:
            holders.append(f"{_tag_name(body, address)} (Elastic IP)")
    subnets = _resources(stack, "aws_subnet")
    for address, body in instances.items():
        automatic = body.get("associate_public_ip_address")
        if automatic is None:
            subnet = subnets.get(_target(body.get("subnet_id")) or "", {})
            automatic = bool(subnet.get("map_public_ip_on_launch"))
        # An Elastic IP replaces the address given at launch, which is then released.
        if automatic and address not in with_eip:
            holders.append(f"{names[address]} (assigned at launch)")
    return holders


# --------------------------------------------------------------------------------- output

HEADERS = ("item", "resources", "quantity", "unit price", "per month")


def _rows(result: Estimate) -> list[tuple[str, ...]]:
    return [(line.item, line.resources, line.quantity_text(), line.price_text(),
             f"{line.monthly:,.2f}") for line in result.lines]


def _caption(result: Estimate, markdown: bool) -> str:
    name = f"**{result.environment}**" if markdown else result.environment
    return (f"{name} ({result.region}): monthly estimate in {result.currency}, on-demand prices "
            f"as of {result.as_of}, {result.hours_per_month} hours a month")


def format_text(result: Estimate) -> str:
    rows = _rows(result)
    total = ("total", "", "", "", f"{result.total:,.2f}")
    widths = [max(len(row[i]) for row in [HEADERS, *rows, total]) for i in range(len(HEADERS))]
    right = (False, False, True, True, True)

    def render(row) -> str:
        cells = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [_caption(result, False), "", render(HEADERS), rule, *map(render, rows), rule,
             render(total)]
    lines += [f"note: {note}" for note in result.notes]
    lines.append(f"not included (usage-based): {', '.join(result.not_included)}")
    return "\n".join(lines) + "\n"


def format_markdown(result: Estimate) -> str:
    lines = [_caption(result, True), "", "| " + " | ".join(HEADERS) + " |",
             "|---|---|--:|--:|--:|"]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    lines.append(f"| **total** | | | | **{result.total:,.2f}** |")
    lines.append("")
    lines += [f"Note: {note}." for note in result.notes]
    lines.append(f"Not included, as they depend on use: {', '.join(result.not_included)}.")
    return "\n".join(lines) + "\n"


def as_json(result: Estimate) -> dict:
    document = asdict(result)
    document["total"] = result.total
    return json.loads(json.dumps(document, default=str))


def update_doc(path: Path, results: list[Estimate]) -> bool:
    """Replace each ``<!-- cost:ENV -->`` ... ``<!-- /cost:ENV -->`` block; True if changed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CostError(f"{path}: cannot read ({error.strerror})")
    updated = text
    for result in results:
        begin, end = f"<!-- cost:{result.environment} -->", f"<!-- /cost:{result.environment} -->"
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
        if not pattern.search(updated):
            raise CostError(f"{path}: no {begin} ... {end} block to update")
        block = f"{begin}\n{format_markdown(result)}{end}"
        updated = pattern.sub(lambda _: block, updated)
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


# ------------------------------------------------------------------------------------ CLI

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("environments", nargs="*", metavar="ENVIRONMENT",
                        help="stacks to price (default: every synthesized environment)")
    parser.add_argument("--stacks-dir", type=Path, default=DEFAULT_STACKS,
                        help="folder of synthesized stacks (default: $CDKTF_OUTDIR/stacks or "
                             "cdktf.out/stacks)")
    parser.add_argument("--prices", type=Path, default=DEFAULT_PRICES,
                        help="price file (default: data/aws-prices.json)")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    parser.add_argument("--update-doc", type=Path, metavar="FILE",
                        help="rewrite the <!-- cost:ENV --> blocks of FILE instead of printing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        prices = load_prices(args.prices)
        names = args.environments or environment_stacks(args.stacks_dir)
        if not names:
            raise CostError(f"{args.stacks_dir}: no synthesized environment; run `make synth` "
                            "first")
        results = [estimate(load_stack(args.stacks_dir, name), name, prices, args.prices)
                   for name in names]
        if args.update_doc:
            changed = update_doc(args.update_doc, results)
            print(f"{'updated' if changed else 'unchanged'}: {args.update_doc}")
            return 0
    except CostError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (InvalidOperation, TypeError, ValueError) as error:
        print(f"error: a value in the stack or the price file is not a number ({error})",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except (AttributeError, KeyError) as error:
        # A hand-edited or foreign JSON file: say so in one line rather than a traceback.
        print(f"error: a stack or the price file does not have the expected shape "
              f"({type(error).__name__}: {error}); run `make synth` again", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.format == "json":
        print(json.dumps([as_json(r) for r in results], indent=2))
    else:
        render = format_markdown if args.format == "markdown" else format_text
        print("\n".join(render(r) for r in results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
