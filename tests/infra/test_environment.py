"""The synthesized environment stacks against every row of the design's tables."""
import ipaddress
import json

import pytest

from core.cdk import Testing
from core.settings import load_environment
from stacks.environment import EnvironmentStack

SEED_TYPES = {"lb": "t3.micro", "app": "t3.micro", "db": "t3.small", "nfs": "t3.micro",
              "log": "t3.medium"}

# (group, port, peer): the design's security-group table, plus the health agent port (5001)
# that lets a host leave the load balancer without a Caddy reload.
DESIGN_INGRESS = {
    ("SG-LB", 80, "0.0.0.0/0"), ("SG-LB", 443, "0.0.0.0/0"),
    ("SG-APP", 5000, "SG-LB"), ("SG-APP", 5001, "SG-LB"),
    ("SG-DB", 5432, "SG-APP"),
    ("SG-NFS", 2049, "SG-DB"),
    ("SG-LOG", 9200, "SG-APP"), ("SG-LOG", 5601, "192.0.2.0/24"),
}


def resources(stack: dict, kind: str) -> dict:
    return stack.get("resource", {}).get(kind, {})


def ref(kind: str, logical_id: str, attribute: str = "id") -> str:
    return f"${{{kind}.{logical_id}.{attribute}}}"


def group_names(stack: dict) -> dict[str, str]:
    """Reference to each security group -> its Name tag (SG-LB, ...)."""
    return {ref("aws_security_group", key): group["tags"]["Name"]
            for key, group in resources(stack, "aws_security_group").items()}


def rules(stack: dict, kind: str) -> set[tuple]:
    names = group_names(stack)
    found = set()
    for rule in resources(stack, kind).values():
        assert rule["from_port"] == rule["to_port"], "port ranges are never opened"
        assert rule["ip_protocol"] == "tcp"
        assert rule.get("description"), "every rule says why it exists"
        peer = rule.get("cidr_ipv4") or names[rule["referenced_security_group_id"]]
        found.add((names[rule["security_group_id"]], rule["from_port"], peer))
    return found


def instances_by_role(stack: dict) -> dict[str, list[dict]]:
    by_role: dict[str, list[dict]] = {}
    for instance in resources(stack, "aws_instance").values():
        by_role.setdefault(instance["tags"]["Role"], []).append(instance)
    return by_role


@pytest.fixture(scope="module")
def production(stack_json):
    return stack_json("production")


def test_vpc_and_subnets_have_the_design_addresses(production):
    (vpc,) = resources(production, "aws_vpc").values()
    assert vpc["cidr_block"] == "10.0.0.0/16"
    subnets = {s["tags"]["Name"].rsplit("-", 1)[1]: s
               for s in resources(production, "aws_subnet").values()}
    assert subnets["public"]["cidr_block"] == "10.0.1.0/24"
    assert subnets["private"]["cidr_block"] == "10.0.2.0/24"
    assert all(s["map_public_ip_on_launch"] is False for s in subnets.values())
    assert {s["availability_zone"] for s in subnets.values()} == {"eu-west-1a"}


def test_private_subnet_leaves_through_a_nat_gateway_and_public_through_the_igw(production):
    (nat,) = resources(production, "aws_nat_gateway").values()
    assert "public" in nat["subnet_id"]
    targets = {r.get("gateway_id", "") + r.get("nat_gateway_id", "")
               for r in resources(production, "aws_route").values()}
    assert any("aws_internet_gateway" in t for t in targets)
    assert any("aws_nat_gateway" in t for t in targets)


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_every_host_boots_only_once_its_way_out_exists(stack_json, environment):
    """First boot installs packages and pulls images: a public host (an LB) needs a public
    address and the internet gateway's route, a private one the NAT gateway's route."""
    stack = stack_json(environment)
    routes = resources(stack, "aws_route")
    (nat_route,) = [k for k, r in routes.items() if "nat_gateway_id" in r]
    (igw_route,) = [k for k, r in routes.items() if "gateway_id" in r]
    (public_subnet,) = [k for k in resources(stack, "aws_subnet") if "public" in k]
    (association,) = [k for k, a in resources(stack, "aws_route_table_association").items()
                      if a["subnet_id"] == ref("aws_subnet", public_subnet)]
    lbs = 0
    for instance in resources(stack, "aws_instance").values():
        name = instance["tags"]["Name"]
        if instance["subnet_id"] == ref("aws_subnet", public_subnet):
            lbs += 1
            assert instance["tags"]["Role"] == "lb", name
            assert instance.get("associate_public_ip_address") is True, name
            assert instance["depends_on"] == [f"aws_route.{igw_route}",
                                              f"aws_route_table_association.{association}"]
        else:
            assert not instance.get("associate_public_ip_address"), name
            assert instance["depends_on"] == [f"aws_route.{nat_route}"], name
    assert lbs == load_environment(environment).load_balancer.count


def test_default_security_group_is_closed_and_flow_logs_are_on(production):
    (default,) = resources(production, "aws_default_security_group").values()
    assert default["ingress"] == [] and default["egress"] == []
    (flow_log,) = resources(production, "aws_flow_log").values()
    assert flow_log["traffic_type"] == "ALL"


def test_the_vpcs_untagged_defaults_are_adopted_with_awss_content(production):
    """Adopted so that they carry the Environment tag the other environment's deploy role is
    kept out by; with the rules AWS gives them, so that no traffic changes."""
    (acl,) = resources(production, "aws_default_network_acl").values()
    (vpc,) = resources(production, "aws_vpc")
    assert acl["default_network_acl_id"] == f"${{aws_vpc.{vpc}.default_network_acl_id}}"
    for direction in ("ingress", "egress"):
        assert acl[direction] == [{"rule_no": 100, "action": "allow", "protocol": "-1",
                                   "cidr_block": "0.0.0.0/0", "from_port": 0, "to_port": 0}]
    assert acl["lifecycle"] == {"ignore_changes": ["subnet_ids"]}
    (main,) = resources(production, "aws_default_route_table").values()
    assert main["default_route_table_id"] == f"${{aws_vpc.{vpc}.default_route_table_id}}"
    assert main["route"] == []
    # Every subnet has a route table of its own: the main one carries no traffic.
    assert len(resources(production, "aws_route_table_association")) == 2


@pytest.mark.parametrize("environment, lb_hosts, app_hosts, log_type", [
    ("production", 2, 3, "t3.medium"), ("staging", 1, 2, "t3.small")])
def test_instance_types_and_counts(stack_json, environment, lb_hosts, app_hosts, log_type):
    by_role = instances_by_role(stack_json(environment))
    assert {role: len(hosts) for role, hosts in by_role.items()} == {
        "lb": lb_hosts, "app": app_hosts, "db": 1, "nfs": 1, "log": 1}
    expected = dict(SEED_TYPES, log=log_type)
    for role, hosts in by_role.items():
        assert {h["instance_type"] for h in hosts} == {expected[role]}, role
    names = sorted(h["tags"]["Name"] for h in by_role["app"])
    assert names == [f"{environment}-APP-{i}" for i in range(1, app_hosts + 1)]


def test_hosts_sit_in_their_subnets_with_fixed_addresses(production):
    by_role = instances_by_role(production)
    private = ipaddress.ip_network("10.0.2.0/24")
    for role, hosts in by_role.items():
        for host in hosts:
            subnet = "public" if role == "lb" else "private"
            assert f"network_{subnet}_" in host["subnet_id"], host["tags"]["Name"]
            if role != "lb":
                assert ipaddress.ip_address(host["private_ip"]) in private
    assert [h["private_ip"] for h in by_role["app"]] == ["10.0.2.20", "10.0.2.21", "10.0.2.22"]


def test_with_one_lb_only_lb_01_has_a_public_address(stack_json):
    staging = stack_json("staging")
    eips = resources(staging, "aws_eip").values()
    lb_key = next(k for k, h in resources(staging, "aws_instance").items()
                  if h["tags"]["Role"] == "lb")
    attached = [e for e in eips if "instance" in e]
    assert [e["instance"] for e in attached] == [ref("aws_instance", lb_key)]
    # Its launch address (replaced by the Elastic IP once attached) lets it boot before then.
    assert {k for k, h in resources(staging, "aws_instance").items()
            if h.get("associate_public_ip_address")} == {lb_key}
    assert "aws_lb" not in staging["resource"]


def test_with_two_lbs_the_elastic_ip_is_the_nlbs_and_each_lb_has_its_own_way_out(production):
    """The NLB holds the Elastic IP; each LB still needs an address of its own to reach the
    internet (packages, its Caddy image, SSM, S3, ACME) through the internet gateway."""
    assert [e for e in resources(production, "aws_eip").values() if "instance" in e] == []
    assert sorted(h["tags"]["Name"] for h in resources(production, "aws_instance").values()
                  if h.get("associate_public_ip_address")) == [
        "production-LB-01", "production-LB-02"]


def test_security_groups_open_exactly_the_design(production, stack_json):
    # Two LBs add one rule: the NLB's health checks of Caddy, from the NLB's subnet.
    assert rules(production, "aws_vpc_security_group_ingress_rule") == DESIGN_INGRESS | {
        ("SG-LB", 8080, "10.0.1.0/24")}
    assert len(resources(production, "aws_vpc_security_group_ingress_rule")) == 9
    staging = stack_json("staging")
    assert rules(staging, "aws_vpc_security_group_ingress_rule") == DESIGN_INGRESS
    assert len(resources(staging, "aws_vpc_security_group_ingress_rule")) == 8
    assert sorted(group_names(production).values()) == [
        "SG-APP", "SG-DB", "SG-LB", "SG-LOG", "SG-NFS"]
    # Every group is defined inline-free: rules only as separate resources.
    for group in resources(production, "aws_security_group").values():
        assert "ingress" not in group and "egress" not in group


def test_egress_is_narrow(production):
    egress = rules(production, "aws_vpc_security_group_egress_rule")
    internet_ports = {port for _, port, peer in egress if peer == "0.0.0.0/0"}
    assert internet_ports == {80, 443}
    internal = {rule for rule in egress if rule[2] != "0.0.0.0/0"}
    assert internal == {("SG-LB", 5000, "SG-APP"), ("SG-LB", 5001, "SG-APP"),
                        ("SG-APP", 5432, "SG-DB"), ("SG-APP", 9200, "SG-LOG"),
                        ("SG-DB", 2049, "SG-NFS")}


def test_no_ssh_anywhere(production, stack_json):
    for name in ("production", "staging"):
        stack = stack_json(name)
        assert "aws_key_pair" not in stack.get("resource", {})
        for instance in resources(stack, "aws_instance").values():
            assert "key_name" not in instance
        for kind in ("aws_vpc_security_group_ingress_rule", "aws_vpc_security_group_egress_rule"):
            assert all(r["from_port"] != 22 for r in resources(stack, kind).values())


def test_every_host_is_hardened(production):
    for instance in resources(production, "aws_instance").values():
        name = instance["tags"]["Name"]
        assert instance["metadata_options"]["http_tokens"] == "required", name
        root = instance["root_block_device"]
        assert root["encrypted"] is True and root["volume_type"] == "gp3", name
        assert instance["monitoring"] is True and instance["ebs_optimized"] is True, name
        assert instance["iam_instance_profile"].startswith("${aws_iam_instance_profile."), name
        assert instance["ami"].startswith("${data.aws_ami."), name
        assert {"Name", "Role", "Environment", "UserDataSha256"} <= set(instance["tags"])
        assert instance["lifecycle"]["ignore_changes"] == ["ami", "user_data_base64"], name


def test_every_host_role_can_use_ssm(production):
    attachments = resources(production, "aws_iam_role_policy_attachment").values()
    ssm = [a for a in attachments if a["policy_arn"].endswith("/AmazonSSMManagedInstanceCore")]
    profiles = resources(production, "aws_iam_instance_profile")
    assert len(ssm) == len(profiles) == 5


def test_ami_is_current_ubuntu_lts_from_canonical(production):
    (ami,) = production["data"]["aws_ami"].values()
    assert ami["owners"] == ["099720692109"] and ami["most_recent"] is True
    names = next(f["values"] for f in ami["filter"] if f["name"] == "name")
    assert names == ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]


def test_nfs_volume_is_50_gb_encrypted_and_attached_to_nfs_01(production):
    (volume,) = resources(production, "aws_ebs_volume").values()
    assert volume["size"] == 50 and volume["type"] == "gp3" and volume["encrypted"] is True
    assert volume["availability_zone"] == "eu-west-1a"
    (attachment,) = resources(production, "aws_volume_attachment").values()
    nfs_key = next(k for k, h in resources(production, "aws_instance").items()
                   if h["tags"]["Role"] == "nfs")
    assert attachment["instance_id"] == ref("aws_instance", nfs_key)
    volume_key = next(iter(resources(production, "aws_ebs_volume")))
    assert attachment["volume_id"] == ref("aws_ebs_volume", volume_key)


@pytest.mark.parametrize("environment, protected", [("production", True), ("staging", False)])
def test_hosts_holding_data_are_protected_in_production(stack_json, environment, protected):
    stack = stack_json(environment)
    for instance in resources(stack, "aws_instance").values():
        holds_data = instance["tags"]["Role"] in ("db", "nfs")
        assert instance["disable_api_termination"] is (protected and holds_data)
        assert instance["lifecycle"]["prevent_destroy"] is (protected and holds_data)
    (volume,) = resources(stack, "aws_ebs_volume").values()
    assert volume["lifecycle"]["prevent_destroy"] is protected


def test_state_lives_in_s3_with_locking(production):
    backend = production["terraform"]["backend"]["s3"]
    assert backend == {"bucket": "example-org-web-platform-tfstate", "encrypt": True,
                       "key": "production/terraform.tfstate", "region": "eu-west-1",
                       "use_lockfile": True,
                       # The bootstrap's state key, as the README says (SSE-KMS, not SSE-S3).
                       "kms_key_id": "alias/webapp-terraform-state"}


def test_outputs_give_the_rolling_update_what_it_needs(production):
    outputs = production["output"]
    assert {"lb_public_ip", "hosts", "kibana_url", "db_password_parameter"} <= set(outputs)
    hosts = outputs["hosts"]["value"]
    assert sorted(hosts) == ["APP-1", "APP-2", "APP-3", "DB-01", "LB-01", "LB-02", "LOG-01",
                             "NFS-01"]
    assert hosts["APP-2"]["role"] == "app"
    assert hosts["APP-2"]["instance_id"].startswith("${aws_instance.")
    assert outputs["kibana_url"]["value"] == "http://10.0.2.12:5601"


def test_each_secret_is_written_by_its_owner_and_read_by_its_users(production):
    documents = production["data"]["aws_iam_policy_document"]
    grants = {}
    for key, document in documents.items():
        for statement in document["statement"]:
            if statement.get("effect") == "Deny":
                continue  # evaluated in tests/infra/test_least_privilege.py
            for action in statement.get("actions", []):
                if action.startswith("ssm:") and "Parameter" in action:
                    grants.setdefault(key.split("-identity")[0], set()).add(action)
    assert grants == {"db": {"ssm:PutParameter", "ssm:GetParameter"},
                      "log": {"ssm:PutParameter", "ssm:GetParameter"},
                      "app": {"ssm:GetParameter"}}
    app_reads = next(d for k, d in documents.items() if k.startswith("app-identity"))
    (statement,) = [s for s in app_reads["statement"] if s["actions"] == ["ssm:GetParameter"]]
    assert [r.rsplit(":parameter", 1)[1] for r in statement["resources"]] == [
        "/webapp/production/db/password", "/webapp/production/logs/filebeat-password",
        "/webapp/production/log-ca/certificate", "/webapp/production/app/image"]


def test_testing_api_sees_the_same_architecture():
    """cdktf's own Testing helpers, on a stack built under Testing.app()."""
    settings = load_environment("staging")
    synthesized = Testing.synth(EnvironmentStack(Testing.app(), settings))
    assert Testing.to_have_resource_with_properties(
        synthesized, "aws_instance",
        {"instance_type": "t3.small", "metadata_options": {"http_tokens": "required"}})
    assert Testing.to_have_resource_with_properties(
        synthesized, "aws_ebs_volume", {"size": 20, "encrypted": True})
    assert not Testing.to_have_resource_with_properties(
        synthesized, "aws_instance", {"key_name": "anything"})
    assert len(json.loads(synthesized)["resource"]["aws_instance"]) == 6


def test_graviton_hosts_boot_an_arm64_image():
    """t4g is arm64 (Graviton): its hosts get Canonical's arm64 image, the others amd64."""
    settings = load_environment("staging")
    settings = settings.model_copy(update={
        "instance_types": settings.instance_types.model_copy(update={"db": "t4g.small"})})
    stack = json.loads(Testing.synth(EnvironmentStack(Testing.app(), settings)))
    images = {}
    for key, ami in stack["data"]["aws_ami"].items():
        filters = {f["name"]: f["values"] for f in ami["filter"]}
        images[f"${{data.aws_ami.{key}.id}}"] = (*filters["architecture"], *filters["name"])
    used = {(host["tags"]["Role"], images[host["ami"]])
            for host in resources(stack, "aws_instance").values()}
    x86 = ("x86_64", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*")
    arm = ("arm64", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-*")
    assert used == {("app", x86), ("lb", x86), ("db", arm), ("nfs", x86), ("log", x86)}


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_lb_01s_address_is_associated_only_once_the_internet_gateway_exists(stack_json,
                                                                            environment):
    """AWS refuses to associate an Elastic IP with an instance of a VPC with no internet
    gateway; without the dependency Terraform may try both at once. The NLB (two LBs)
    references the address, so it waits for the gateway too."""
    stack = stack_json(environment)
    (gateway_key,) = resources(stack, "aws_internet_gateway")
    addresses = resources(stack, "aws_eip")
    (key,) = [k for k in addresses if k.startswith("LB-01_")]
    assert f"aws_internet_gateway.{gateway_key}" in addresses[key].get("depends_on", [])


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_the_nat_gateway_cannot_take_a_load_balancers_address(stack_json, environment):
    """LB-01's fixed address (and those kept for more load balancers, .10-.19) must be free
    when the instance is created: the NAT gateway, created first, is pinned elsewhere."""
    stack = stack_json(environment)
    settings = load_environment(environment)
    public = ipaddress.ip_network(settings.network.public_subnet_cidr)
    kept_for_load_balancers = {str(public[offset]) for offset in range(10, 20)}
    (nat,) = resources(stack, "aws_nat_gateway").values()
    assert nat.get("private_ip"), "left to AWS, the NAT may take any free address"
    address = ipaddress.ip_address(nat["private_ip"])
    assert address in public
    # AWS keeps the first four addresses and the last of every subnet.
    assert public[4] <= address < public[-1]
    assert nat["private_ip"] not in kept_for_load_balancers
    instance_addresses = {i["private_ip"] for i in resources(stack, "aws_instance").values()}
    assert nat["private_ip"] not in instance_addresses
    assert settings.private_ips("lb")[0] in kept_for_load_balancers


def host_policy(stack: dict, role: str) -> list[dict]:
    documents = stack["data"]["aws_iam_policy_document"]
    document = next((d for k, d in documents.items()
                     if k.startswith(f"{role}-identity_permissions")), {"statement": []})
    return document["statement"]


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_app_hosts_pull_from_the_projects_ecr_repository_only(stack_json, environment):
    stack = stack_json(environment)
    ((key, repository),) = stack["data"]["aws_ecr_repository"].items()
    assert repository["name"] == "webapp/app"
    ecr = {tuple(s["resources"]): set(s["actions"]) for s in host_policy(stack, "app")
           if any(a.startswith("ecr:") for a in s["actions"])}
    assert ecr == {("*",): {"ecr:GetAuthorizationToken"},
                   (f"${{data.aws_ecr_repository.{key}.arn}}",): {
                       "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"}}
    for role in ("lb", "db", "nfs", "log"):
        assert not any(a.startswith("ecr:") for s in host_policy(stack, role)
                       for a in s["actions"]), role
