"""scripts/cost.py: monthly totals from the synthesized JSON and the dated price file."""
from __future__ import annotations

import copy
import datetime
import json
import re
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

import cost
from core.settings import load_environment

from .conftest import REPO_ROOT, SCRIPTS

PRICES = REPO_ROOT / "data" / "aws-prices.json"

# A price file with round numbers, so that every expected figure below is checkable by hand.
KNOWN_PRICES = {
    "as_of": "2026-01-31",
    "currency": "USD",
    "hours_per_month": 730,
    "detailed_monitoring_metrics_per_instance": 7,
    "regions": {"xx-test-1": {
        "ec2_instance_hour": {"t3.micro": 0.01, "t3.large": 0.1},
        "ebs_gb_month": {"gp3": 0.1, "gp2": 0.2},
        "nat_gateway_hour": 0.05,
        "nat_gateway_gb": 0.05,
        "public_ipv4_hour": 0.005,
        "cloudwatch_metric_month": 0.3,
        "nlb_hour": 0.02,
        "nlb_lcu_hour": 0.006,
    }},
}


def ref(kind: str, name: str) -> str:
    return f"${{{kind}.{name}.id}}"


def small_stack() -> dict:
    """Two t3.micro and one t3.large; 10 + 10 + 30 GiB roots, a 50 GiB gp3 and a 5 GiB gp2
    volume, one NAT gateway and its Elastic IP, an Elastic IP on `web-1`, and `web-2` in a
    subnet that gives public addresses at launch."""
    def host(name, kind, size, subnet, monitoring=True):
        return {"instance_type": kind, "monitoring": monitoring,
                "subnet_id": ref("aws_subnet", subnet),
                "root_block_device": {"volume_type": "gp3", "volume_size": size},
                "tags": {"Name": f"test-{name}"}}
    return {
        "provider": {"aws": [{"region": "xx-test-1"}]},
        "resource": {
            "aws_subnet": {"public": {"map_public_ip_on_launch": True},
                           "private": {"map_public_ip_on_launch": False}},
            "aws_instance": {"web1": host("web-1", "t3.micro", 10, "public"),
                             "web2": host("web-2", "t3.micro", 10, "public"),
                             "big": host("big-1", "t3.large", 30, "private", monitoring=False)},
            "aws_ebs_volume": {"data": {"size": 50, "type": "gp3", "tags": {"Name": "data"}},
                               "old": {"size": 5, "tags": {"Name": "old"}}},
            "aws_nat_gateway": {"nat": {"allocation_id": ref("aws_eip", "nat"),
                                        "tags": {"Name": "nat"}}},
            "aws_eip": {"nat": {"domain": "vpc"},
                        "web": {"domain": "vpc", "instance": ref("aws_instance", "web1")}},
        },
    }


@pytest.fixture
def known_prices(tmp_path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(KNOWN_PRICES))
    return path


def test_totals_from_known_prices(known_prices):
    result = cost.estimate(small_stack(), "test", cost.load_prices(known_prices), known_prices)
    lines = {line.item: (line.resources, str(line.quantity), str(line.monthly))
             for line in result.lines}
    assert lines == {
        "EC2 t3.micro": ("web-1, web-2", "2", "14.60"),            # 2 x 0.01 x 730
        "EC2 t3.large": ("big-1", "1", "73.00"),                   # 0.1 x 730
        "EC2 detailed monitoring": ("2 instances", "14", "4.20"),  # 2 x 7 metrics x 0.30
        "EBS gp3 root volumes": ("big-1, web-1, web-2", "50", "5.00"),  # 50 GiB x 0.1
        "EBS gp3 volume": ("data", "50", "5.00"),
        "EBS gp2 volume": ("old", "5", "1.00"),                    # the provider's default type
        "NAT gateway": ("nat", "1", "36.50"),                      # 0.05 x 730
        # web-1's Elastic IP replaces its launch address; web-2 keeps the one it was given.
        "Public IPv4 addresses": ("NAT gateway (Elastic IP), web-1 (Elastic IP), "
                                  "web-2 (assigned at launch)", "3", "10.95"),  # 3 x 0.005 x 730
    }
    assert result.total == Decimal("150.25")
    assert result.as_of == "2026-01-31" and result.region == "xx-test-1"
    assert "NAT gateway data processing (0.05/GB)" in result.not_included


def test_production_total_follows_from_its_configuration_and_the_price_file(stack_json):
    settings = load_environment("production")
    prices = json.loads(PRICES.read_text(), parse_float=Decimal, parse_int=Decimal)
    table = prices["regions"][settings.region]
    hours = prices["hours_per_month"]
    hosts = {role: len(settings.host_names(role)) for role in ("lb", "app", "db", "nfs", "log")}
    by_type: dict[str, int] = {}
    for role, count in hosts.items():
        kind = getattr(settings.instance_types, role)
        by_type[kind] = by_type.get(kind, 0) + count
    count = sum(hosts.values())

    def money(value: Decimal) -> Decimal:
        return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)

    root_gb = sum(body["root_block_device"]["volume_size"]
                  for body in stack_json("production")["resource"]["aws_instance"].values())
    expected = sum([
        *(money(n * table["ec2_instance_hour"][kind] * hours) for kind, n in by_type.items()),
        money(count * prices["detailed_monitoring_metrics_per_instance"]
              * table["cloudwatch_metric_month"]),
        money(root_gb * table["ebs_gb_month"]["gp3"]),
        money(settings.nfs.volume_size_gb * table["ebs_gb_month"]["gp3"]),
        money(table["nat_gateway_hour"] * hours),
        # The Network Load Balancer in front of the two LBs.
        money(table["nlb_hour"] * hours) if hosts["lb"] > 1 else Decimal(0),
        money(2 * table["public_ipv4_hour"] * hours),  # the environment's Elastic IP, the NAT's
        # With two LBs, each also has its own address (the NLB holds the Elastic IP).
        money(hosts["lb"] * table["public_ipv4_hour"] * hours) if hosts["lb"] > 1
        else Decimal(0),
    ])
    result = cost.estimate(stack_json("production"), "production", cost.load_prices(PRICES),
                           PRICES)
    assert result.total == expected
    assert len([line for line in result.lines if line.item.startswith("EC2 t3")]) == len(by_type)


def test_two_lbs_price_the_nlb_and_say_what_high_availability_adds(known_prices):
    stack = small_stack()
    resources = stack["resource"]
    for name in ("web1", "web2"):
        resources["aws_instance"][name]["tags"]["Role"] = "lb"
        resources["aws_instance"][name]["associate_public_ip_address"] = True
    del resources["aws_eip"]["web"]["instance"]
    resources["aws_lb"] = {"nlb": {"name": "nlb-test", "load_balancer_type": "network",
                                   "subnet_mapping": [{"allocation_id": ref("aws_eip", "web")}]}}

    result = cost.estimate(stack, "test", cost.load_prices(known_prices), known_prices)

    lines = {line.item: (line.resources, str(line.monthly)) for line in result.lines}
    assert lines["Network Load Balancer"] == ("nlb-test", "14.60")  # 0.02 x 730
    assert lines["Public IPv4 addresses"][0].startswith(
        "NAT gateway (Elastic IP), Network Load Balancer (Elastic IP)")
    # web-2: 7.30 (0.01 x 730) + 2.10 (7 metrics x 0.30) + 1.00 (10 GiB x 0.1); NLB 14.60;
    # each LB's own address: 2 x public_ipv4_hour x 730.
    addresses = (2 * cost.load_prices(known_prices)["regions"]["xx-test-1"]["public_ipv4_hour"]
                 * 730).quantize(Decimal("0.01"))
    assert result.notes == [f"high availability adds {Decimal('25.00') + addresses:,.2f} a "
                            "month: web-2 (instance, monitoring, root volume) 10.40, the "
                            "Network Load Balancer 14.60 before its capacity units, and the "
                            f"LBs' 2 own public IPv4 addresses {addresses:,.2f}"]
    assert "Network Load Balancer capacity units (0.006/NLCU-hour)" in result.not_included


def run_script(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "cost.py"), *map(str, arguments)],
                          capture_output=True, text=True, check=False, cwd=REPO_ROOT)


def test_command_prints_a_table_per_environment_with_the_price_date(cdktf_out):
    result = run_script("--stacks-dir", cdktf_out / "stacks")
    assert result.returncode == 0, result.stderr
    as_of = json.loads(PRICES.read_text())["as_of"]
    captions = re.findall(r"^(\w+) \((\S+)\): monthly estimate in USD, on-demand prices as of "
                          r"(\S+), 730 hours a month$", result.stdout, re.MULTILINE)
    assert captions == [("production", "eu-west-1", as_of), ("staging", "eu-west-1", as_of)]
    for block in result.stdout.split("\n\n")[1::2]:
        rows = [line for line in block.splitlines()
                if re.match(r"^(EC2|EBS|NAT|Network|Public)", line)]
        total = re.search(r"^total\s+([\d,.]+)$", block, re.MULTILINE)
        assert rows and total
        figures = [Decimal(row.split()[-1].replace(",", "")) for row in rows]
        assert sum(figures) == Decimal(total[1].replace(",", ""))
    assert "bootstrap" not in result.stdout


def test_json_output_adds_up(cdktf_out):
    result = run_script("--stacks-dir", cdktf_out / "stacks", "staging", "--format", "json")
    assert result.returncode == 0, result.stderr
    (staging,) = json.loads(result.stdout)
    assert staging["environment"] == "staging"
    assert sum(Decimal(line["monthly"]) for line in staging["lines"]) == Decimal(staging["total"])
    ec2 = {line["item"]: line["quantity"] for line in staging["lines"]
           if line["item"].startswith("EC2 t3")}
    # Staging: LB, 2 APP and NFS are t3.micro; DB-01 and LOG-01 (log: t3.small) are t3.small.
    assert ec2 == {"EC2 t3.micro": "4", "EC2 t3.small": "2"}


def _stacks_with(tmp_path: Path, stack: dict) -> Path:
    folder = tmp_path / "stacks" / "production"
    folder.mkdir(parents=True)
    (folder / "cdk.tf.json").write_text(json.dumps(stack))
    return tmp_path / "stacks"


def test_unknown_region_is_one_line_and_exit_status_2(stack_json, tmp_path):
    stack = copy.deepcopy(stack_json("production"))
    stack["provider"]["aws"][0]["region"] = "ap-south-2"
    result = run_script("--stacks-dir", _stacks_with(tmp_path, stack))
    assert result.returncode == 2
    assert result.stderr == ("error: production: no prices for region ap-south-2 in "
                             "aws-prices.json (it knows eu-central-1, eu-west-1, us-east-1, "
                             "us-west-2); add the region's on-demand prices\n")
    assert result.stdout == ""


def test_unknown_instance_type_is_one_line_and_exit_status_2(stack_json, tmp_path):
    stack = copy.deepcopy(stack_json("production"))
    next(iter(stack["resource"]["aws_instance"].values()))["instance_type"] = "m7i.large"
    result = run_script("--stacks-dir", _stacks_with(tmp_path, stack))
    assert result.returncode == 2
    assert result.stderr.startswith("error: production: no price for instance type m7i.large "
                                    "in eu-west-1 in aws-prices.json (it knows t3.nano")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("arguments, message", [
    (["--stacks-dir", "nowhere/stacks"], "run `make synth` first"),
    (["qa"], "synthesized stacks: bootstrap, production, staging"),
    (["--prices", "nowhere.json"], "nowhere.json not found"),
])
def test_bad_input_is_one_line_and_exit_status_2(arguments, message, cdktf_out):
    if "--stacks-dir" not in arguments:
        arguments = ["--stacks-dir", cdktf_out / "stacks", *arguments]
    result = run_script(*arguments)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.update(as_of="last week"), "as_of must be a date"),
    (lambda p: p["regions"]["xx-test-1"].pop("nat_gateway_hour"), "lacks nat_gateway_hour"),
    (lambda p: p["regions"]["xx-test-1"]["ebs_gb_month"].update(gp3="cheap"),
     "prices must be numbers"),
])
def test_a_malformed_price_file_is_rejected(damage, message, tmp_path):
    prices = copy.deepcopy(KNOWN_PRICES)
    damage(prices)
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(prices))
    with pytest.raises(cost.CostError, match=message):
        cost.load_prices(path)


def test_price_file_is_dated_and_covers_the_configured_regions_and_types():
    prices = cost.load_prices(PRICES)
    as_of = datetime.date.fromisoformat(prices["as_of"])
    assert as_of <= datetime.date.today()
    assert prices["hours_per_month"] == 730
    for path in sorted((REPO_ROOT / "config").glob("*.yaml")):
        settings = load_environment(path.stem)
        table = prices["regions"][settings.region]
        for role in ("lb", "app", "db", "nfs", "log"):
            assert getattr(settings.instance_types, role) in table["ec2_instance_hour"]
        assert "gp3" in table["ebs_gb_month"]


def test_names_are_compacted_into_runs():
    assert cost.compact(["LB-01", "APP-1", "APP-2", "APP-3", "NFS-01"]) == (
        "APP-1..3, LB-01, NFS-01")
    assert cost.compact(["APP-2", "APP-1"]) == "APP-1, APP-2"
    assert cost.compact([f"APP-{n}" for n in range(1, 51)]) == "APP-1..50"
    assert cost.compact(["APP-1", "APP-2", "APP-3", "APP-5"]) == "APP-1..3, APP-5"


def test_every_cost_table_in_the_docs_is_current(stack_json):
    """Tables between <!-- cost:ENV --> markers (docs/local-development.md, and the README if
    it carries one) are the command's output for today's synthesis and prices."""
    prices = cost.load_prices(PRICES)
    blocks = {}
    for path in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        if path.is_file():
            for environment, table in re.findall(
                    r"<!-- cost:([\w-]+) -->\n(.*?)<!-- /cost:\1 -->",
                    path.read_text(encoding="utf-8"), re.DOTALL):
                blocks[(path.relative_to(REPO_ROOT).as_posix(), environment)] = table
    assert ("docs/local-development.md", "production") in blocks
    for (path, environment), table in blocks.items():
        result = cost.estimate(stack_json(environment), environment, prices, PRICES)
        assert table == cost.format_markdown(result), (
            f"the {environment} cost table in {path} is stale: run `make synth && python "
            f"scripts/cost.py {environment} --update-doc {path}`")


def test_update_doc_rewrites_only_the_marked_block(cdktf_out, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Costs\n\nbefore\n<!-- cost:staging -->\nold table\n<!-- /cost:staging -->"
                   "\nafter\n")
    result = run_script("--stacks-dir", cdktf_out / "stacks", "staging", "--update-doc", doc)
    assert result.returncode == 0 and result.stdout == f"updated: {doc}\n"
    text = doc.read_text()
    assert text.startswith("# Costs\n\nbefore\n<!-- cost:staging -->\n**staging**")
    assert text.endswith("<!-- /cost:staging -->\nafter\n") and "old table" not in text
    again = run_script("--stacks-dir", cdktf_out / "stacks", "staging", "--update-doc", doc)
    assert again.stdout == f"unchanged: {doc}\n" and doc.read_text() == text
    missing = run_script("--stacks-dir", cdktf_out / "stacks", "production", "--update-doc",
                         doc)
    assert missing.returncode == 2 and "no <!-- cost:production -->" in missing.stderr
