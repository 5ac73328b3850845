"""Two load balancers (production) behind a Network Load Balancer, on the synthesized JSON.

The NLB keeps the environment's Elastic IP, passes TCP 80 and 443 through to both LBs,
health-checks each Caddy and drains a deregistered one; the LBs share Caddy's certificates
through an S3 prefix that only their role may read.
"""
import json

import pytest

from core.settings import (LB_DEREGISTRATION_DELAY_SECONDS, LB_HEALTH_PATH, LB_HEALTH_PORT,
                           load_environment)
from tests.infra.test_environment import ref, resources


@pytest.fixture(scope="module")
def production(stack_json):
    return stack_json("production")


def key_of(stack: dict, kind: str, prefix: str) -> str:
    (key,) = [k for k in resources(stack, kind) if k.startswith(prefix)]
    return key


def lb_instances(stack: dict) -> dict[str, str]:
    """Host name -> reference to its instance ID, for the LB hosts."""
    return {body["tags"]["Name"].split("-", 1)[1]: ref("aws_instance", key)
            for key, body in resources(stack, "aws_instance").items()
            if body["tags"]["Role"] == "lb"}


def test_lb_02_is_tagged_like_lb_01_at_its_own_fixed_address(production):
    hosts = {body["tags"]["Name"]: body for body in resources(production, "aws_instance").values()
             if body["tags"]["Role"] == "lb"}
    assert sorted(hosts) == ["production-LB-01", "production-LB-02"]
    assert [hosts[n]["private_ip"] for n in sorted(hosts)] == ["10.0.1.10", "10.0.1.11"]
    assert {h["subnet_id"] for h in hosts.values()} == {
        ref("aws_subnet", key_of(production, "aws_subnet", "network_public"))}
    first, second = (hosts[n] for n in sorted(hosts))
    assert (first["tags"]["Role"], first["tags"]["Environment"]) == (
        second["tags"]["Role"], second["tags"]["Environment"])
    assert first["vpc_security_group_ids"] == second["vpc_security_group_ids"]
    assert first["iam_instance_profile"] == second["iam_instance_profile"]


def test_the_nlb_holds_the_environments_elastic_ip_in_the_public_subnet(production):
    (balancer,) = resources(production, "aws_lb").values()
    assert balancer["load_balancer_type"] == "network" and balancer["internal"] is False
    eip = key_of(production, "aws_eip", "LB-01_public-address")
    assert balancer["subnet_mapping"] == [{
        "subnet_id": ref("aws_subnet", key_of(production, "aws_subnet", "network_public")),
        "allocation_id": ref("aws_eip", eip)}]
    assert "instance" not in resources(production, "aws_eip")[eip]
    # The address DNS points at is the same output, whatever the LB count.
    assert production["output"]["lb_public_ip"]["value"] == ref("aws_eip", eip, "public_ip")


def test_the_elastic_ip_keeps_its_terraform_address_whatever_the_lb_count(stack_json):
    """Changing load_balancer.count re-associates the address; it never replaces it."""
    keys = {name: [k for k in resources(stack_json(name), "aws_eip") if not k.startswith(
        "network_")] for name in ("production", "staging")}
    assert keys["production"] == keys["staging"] and len(keys["staging"]) == 1


def test_tcp_80_and_443_pass_through_to_both_lbs(production):
    balancer = ref("aws_lb", key_of(production, "aws_lb", "network-load-balancer"), "arn")
    groups = resources(production, "aws_lb_target_group")
    listeners = resources(production, "aws_lb_listener").values()
    assert sorted((listener["port"], listener["protocol"]) for listener in listeners) == [
        (80, "TCP"), (443, "TCP")]
    routes = {}
    for listener in listeners:
        assert listener["load_balancer_arn"] == balancer
        (action,) = listener["default_action"]
        assert action["type"] == "forward"
        group_key = action["target_group_arn"].split(".")[1]
        group = groups[group_key]
        assert (group["port"], group["protocol"]) == (listener["port"], "TCP")
        assert group["target_type"] == "instance" and group["preserve_client_ip"] == "true"
        routes[listener["port"]] = ref("aws_lb_target_group", group_key, "arn")
    attachments = {(a["target_group_arn"], a["target_id"], a["port"])
                   for a in resources(production, "aws_lb_target_group_attachment").values()}
    assert attachments == {(routes[port], instance, port) for port in (80, 443)
                           for instance in lb_instances(production).values()}


def test_each_caddy_is_health_checked_and_drained_when_deregistered(production):
    for group in resources(production, "aws_lb_target_group").values():
        check = group["health_check"]
        assert (check["protocol"], check["port"], check["path"], check["matcher"]) == (
            "HTTP", str(LB_HEALTH_PORT), LB_HEALTH_PATH, "200")
        # A dead Caddy is out within two probes of AWS's shortest interval.
        assert check["interval"] * check["unhealthy_threshold"] <= 10
        assert check["timeout"] < check["interval"]
        assert group["deregistration_delay"] == str(LB_DEREGISTRATION_DELAY_SECONDS)
        assert group["connection_termination"] is False


def test_the_health_check_reaches_what_each_lb_answers_itself(production, tmp_path):
    """The port and path the NLB probes are the ones Caddy's health server answers."""
    from provisioning import user_data

    settings = load_environment("production")
    for host in settings.host_names("lb"):
        config = user_data.load_balancer_config(settings, host)
        server = config["apps"]["http"]["servers"]["lb-health"]
        assert server["listen"] == [f":{LB_HEALTH_PORT}"]
        (route,) = server["routes"]
        assert route["match"] == [{"path": [LB_HEALTH_PATH]}]
        assert route["handle"][0]["status_code"] == 200


def certificate_bucket(stack: dict) -> tuple[str, dict]:
    ((key, bucket),) = [(key, bucket) for key, bucket in resources(stack, "aws_s3_bucket").items()
                        if key.startswith("lb-certificates_")]
    return key, bucket


def test_the_certificate_bucket_is_private_encrypted_and_versioned(production):
    key, bucket = certificate_bucket(production)
    assert bucket["bucket_prefix"].startswith("webapp-production-certs")
    bucket_id = ref("aws_s3_bucket", key)

    def of_bucket(kind: str) -> dict:
        (body,) = [b for b in resources(production, kind).values() if b["bucket"] == bucket_id]
        return body

    encryption = of_bucket("aws_s3_bucket_server_side_encryption_configuration")
    assert encryption["rule"][0]["apply_server_side_encryption_by_default"][
        "sse_algorithm"] == "aws:kms"
    block = of_bucket("aws_s3_bucket_public_access_block")
    assert all(
        block[flag] is True for flag in ("block_public_acls", "block_public_policy",
                                         "ignore_public_acls", "restrict_public_buckets"))
    versioning = of_bucket("aws_s3_bucket_versioning")
    assert versioning["versioning_configuration"]["status"] == "Enabled"


def test_only_the_lb_role_reads_or_writes_the_certificate_prefix(production):
    key, _ = certificate_bucket(production)
    arn = ref("aws_s3_bucket", key, "arn")
    documents = production["data"]["aws_iam_policy_document"]
    s3_grants = {}
    for name, document in documents.items():
        for statement in document["statement"]:
            for action in statement.get("actions", []):
                if (action.startswith("s3:") and statement.get("effect", "Allow") == "Allow"
                        and any(r.startswith(arn) for r in statement["resources"])):
                    s3_grants.setdefault(name.split("-identity")[0], set()).add(
                        (action, tuple(statement["resources"])))
    assert s3_grants == {"lb": {("s3:ListBucket", (arn,)),
                                ("s3:GetObject", (f"{arn}/caddy/*",)),
                                ("s3:PutObject", (f"{arn}/caddy/*",))}}
    lb_policy = next(d for k, d in documents.items() if k.startswith("lb-identity_permissions"))
    (listing,) = [s for s in lb_policy["statement"] if s["actions"] == ["s3:ListBucket"]]
    assert listing["condition"] == [{"test": "StringLike", "variable": "s3:prefix",
                                     "values": ["caddy/*"]}]

    (policy,) = [p for p in resources(production, "aws_s3_bucket_policy").values()
                 if p["bucket"] == ref("aws_s3_bucket", key)]
    document_key = policy["policy"].split(".")[2]
    statements = {s["sid"]: s for s in documents[document_key]["statement"]}
    assert statements["DenyInsecureTransport"]["condition"][0]["values"] == ["false"]
    others = statements["OnlyTheLoadBalancersReadOrWrite"]
    assert others["effect"] == "Deny" and "s3:GetObject" in others["actions"]
    lb_role = next(k for k, r in resources(production, "aws_iam_role").items()
                   if r["name"] == "webapp-production-lb")
    assert others["condition"] == [{"test": "ArnNotEquals", "variable": "aws:PrincipalArn",
                                    "values": [ref("aws_iam_role", lb_role, "arn")]}]


def test_both_lbs_sync_the_bucket_their_user_data_names(production):
    """Each LB's boot pulls the shared certificates before Caddy starts; LB-02 waits for
    LB-01's only when there is a domain (none in the default configuration)."""
    key, _ = certificate_bucket(production)
    for body in resources(production, "aws_instance").values():
        if body["tags"]["Role"] != "lb":
            continue
        assert f"${{aws_s3_bucket.{key}.bucket}}" in body["user_data_base64"]


def test_one_lb_has_no_nlb_no_bucket_and_no_health_rule(stack_json):
    staging = stack_json("staging")
    for kind in ("aws_lb", "aws_lb_target_group", "aws_lb_listener",
                 "aws_lb_target_group_attachment"):
        assert kind not in staging["resource"], kind
    # DB-01's backup copy is the one bucket left.
    assert [key for key in resources(staging, "aws_s3_bucket")
            if not key.startswith("backup-bucket_")] == []
    assert "cert-sync" not in json.dumps(staging)
