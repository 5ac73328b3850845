"""Least privilege, evaluated: who can read each secret, reach the other environment's hosts
or make an administrator, from the synthesized policies, the vendored AWS managed policies,
the permissions boundaries and the KMS key policies (tests/infra/iam_policy.py)."""
from __future__ import annotations

from typing import Optional

import pytest

from tests.infra import iam_policy
from tests.infra.iam_policy import ACCOUNT, REGION, Principal, Request, Stacks, decide

ENVIRONMENTS = ("production", "staging")
HOST_ROLES = ("lb", "app", "db", "nfs", "log")
ADMIN_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"

# The design: each parameter and the host roles of its own environment that read it. Nobody
# else, no pipeline role included, reads any of them.
READERS = {
    "db/password": {"db", "app"},
    "logs/elastic-password": {"log"},
    "logs/kibana-system-password": {"log"},
    "logs/kibana-encryption-key": {"log"},
    "logs/filebeat-password": {"log", "app"},
}
# Not secrets (a CA certificate): among the hosts, read by the APP hosts only; the deploy
# role of the environment, which may read every plain parameter of it, reads them too.
PUBLIC = {"log-ca/certificate": {"log", "app"}}


@pytest.fixture(scope="module")
def stacks(stack_json) -> Stacks:
    return Stacks({name: stack_json(name) for name in ("bootstrap", *ENVIRONMENTS)})


@pytest.fixture(scope="module")
def roles(stacks) -> dict[str, Principal]:
    return stacks.roles()


def principals(roles) -> list[tuple[str, str, str]]:
    """(environment, kind, role name) of every role the matrix covers."""
    rows = [(env, f"host:{role}", f"webapp-{env}-{role}")
            for env in ENVIRONMENTS for role in HOST_ROLES]
    rows += [(env, "flow-logs", f"webapp-{env}-flow-logs") for env in ENVIRONMENTS]
    rows += [(env, purpose, f"github-webapp-{env}-{purpose}")
             for env in ENVIRONMENTS for purpose in ("deploy", "plan")]
    assert {name for _, _, name in rows} == set(roles), "a role the matrix does not cover"
    return rows


def parameter_arn(environment: str, name: str) -> str:
    return f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/webapp/{environment}/{name}"


def parameter_key(stacks: Stacks, environment: str) -> tuple[str, list]:
    """The key that encrypts the environment's SecureStrings: the one its alias names."""
    (alias,) = (alias for alias in stacks.stacks[environment]["resource"]["aws_kms_alias"]
                .values() if alias["name"] == f"alias/webapp-{environment}-parameters")
    key = alias["target_key_id"].split(".")[1]
    arn = stacks.resolve(environment, f"${{aws_kms_key.{key}.arn}}")
    return arn, stacks.key_policies(environment)[arn]


def can_get(principal: Principal, environment: str, name: str) -> bool:
    return decide(principal, Request("ssm:GetParameter", parameter_arn(environment, name)))


def can_decrypt(stacks, principal: Principal, environment: str, name: str) -> bool:
    key_arn, key_policy = parameter_key(stacks, environment)
    return decide(principal, Request("kms:Decrypt", key_arn, {
        "kms:ViaService": f"ssm.{REGION}.amazonaws.com",
        "kms:EncryptionContext:PARAMETER_ARN": parameter_arn(environment, name)}), key_policy)


def test_each_secret_is_read_by_its_readers_only(stacks, roles):
    outcome, intended = {}, {}
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            for parameter, readers in {**READERS, **PUBLIC}.items():
                cell = (name, target, parameter)
                secret = parameter in READERS
                outcome[cell] = can_get(roles[name], target, parameter) and (
                    not secret or can_decrypt(stacks, roles[name], target, parameter))
                intended[cell] = env == target and (
                    kind.removeprefix("host:") in readers
                    or (kind == "deploy" and parameter in PUBLIC))
    assert outcome == intended


def test_iam_and_the_key_policy_each_stop_every_other_reader(stacks, roles):
    """Either layer alone keeps a secret: a mistake in one is not a leak."""
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            for parameter, readers in READERS.items():
                if env == target and kind.removeprefix("host:") in readers:
                    continue
                cell = (name, target, parameter)
                assert not can_get(roles[name], target, parameter), cell
                assert not can_decrypt(stacks, roles[name], target, parameter), cell


def test_host_writers_encrypt_only_their_own_parameters(stacks, roles):
    key_arn, key_policy = parameter_key(stacks, "production")

    def encrypt(role, parameter):
        return decide(roles[f"webapp-production-{role}"], Request("kms:Encrypt", key_arn, {
            "kms:ViaService": f"ssm.{REGION}.amazonaws.com",
            "kms:EncryptionContext:PARAMETER_ARN": parameter_arn("production", parameter)}),
            key_policy)
    assert encrypt("db", "db/password") and encrypt("log", "logs/elastic-password")
    assert not encrypt("app", "db/password") and not encrypt("db", "logs/elastic-password")
    # Not through SSM: no encryption context, no key.
    assert not decide(roles["webapp-production-db"], Request("kms:Decrypt", key_arn),
                      key_policy)


HOST_ACTIONS = ("ssm:SendCommand", "ssm:StartSession", "ec2:TerminateInstances")


def reach_host(principal: Principal, host_environment: str, action: str) -> bool:
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0{host_environment[:4]}0000000001"
    return decide(principal, Request(action, instance, {
        "ssm:resourceTag/Environment": host_environment,
        "aws:ResourceTag/Environment": host_environment}))


def test_no_role_reaches_the_other_environments_hosts(roles):
    outcome, intended = {}, {}
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            for action in HOST_ACTIONS:
                outcome[(name, target, action)] = reach_host(roles[name], target, action)
                # Only the deploy role runs commands on, or replaces, its own hosts.
                intended[(name, target, action)] = kind == "deploy" and env == target
    assert outcome == intended


def test_a_deploy_role_cannot_retag_the_other_environments_hosts(roles):
    for env in ENVIRONMENTS:
        deploy = roles[f"github-webapp-{env}-deploy"]
        for target in ENVIRONMENTS:
            instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0{target[:4]}"
            retag = Request("ec2:CreateTags", instance, {
                "aws:ResourceTag/Environment": target, "aws:RequestTag/Environment": env})
            assert decide(deploy, retag) == (env == target)
        # Tagging an instance it is creating (no tags yet) stays possible.
        assert decide(deploy, Request("ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:"
                                      "instance/*", {"ec2:CreateAction": "RunInstances"}))


def test_an_untagged_instance_is_nobodys(roles):
    for env in ENVIRONMENTS:
        deploy = roles[f"github-webapp-{env}-deploy"]
        assert not decide(deploy, Request("ssm:SendCommand",
                                          f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1"))


def boundary_arn(environment: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:policy/webapp-{environment}-role-boundary"


def admin_paths(principal: Principal, environment: str, boundary_of) -> dict[str, bool]:
    """Each way to an administrator role from ``principal``, and whether it is open."""
    role = f"arn:aws:iam::{ACCOUNT}:role/webapp-{environment}-admin"
    bounded = {"iam:PermissionsBoundary": boundary_arn(environment)}
    paths = {
        "CreateRole without a boundary": decide(principal, Request("iam:CreateRole", role)),
        "CreateRole with another boundary": decide(principal, Request(
            "iam:CreateRole", role, {"iam:PermissionsBoundary": ADMIN_POLICY})),
        "AttachRolePolicy AdministratorAccess": decide(principal, Request(
            "iam:AttachRolePolicy", role, {**bounded, "iam:PolicyARN": ADMIN_POLICY})),
        "DeleteRolePermissionsBoundary": decide(principal, Request(
            "iam:DeleteRolePermissionsBoundary", role, bounded)),
        "PutRolePermissionsBoundary to another policy": decide(principal, Request(
            "iam:PutRolePermissionsBoundary", role,
            {"iam:PermissionsBoundary": ADMIN_POLICY})),
        "CreatePolicyVersion of the boundary": decide(principal, Request(
            "iam:CreatePolicyVersion", boundary_arn(environment))),
        "UpdateAssumeRolePolicy of a pipeline role": decide(principal, Request(
            "iam:UpdateAssumeRolePolicy",
            f"arn:aws:iam::{ACCOUNT}:role/github-webapp-{environment}-deploy")),
    }
    # A role made with the boundary and an inline "*" policy gets only what the boundary
    # leaves: no IAM, nothing of the other environment.
    if decide(principal, Request("iam:PutRolePolicy", role, bounded)) and decide(
            principal, Request("iam:CreateRole", role, bounded)):
        made = Principal(arn=role, identity=iam_policy.from_iam_json(
            {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
            boundary=boundary_of(boundary_arn(environment)))
        other = next(e for e in ENVIRONMENTS if e != environment)
        paths["PutRolePolicy * then use it"] = any([
            decide(made, Request("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/x")),
            decide(made, Request("iam:AttachRolePolicy", role)),
            decide(made, Request("sts:AssumeRole",
                                 f"arn:aws:iam::{ACCOUNT}:role/github-webapp-{other}-deploy")),
            reach_host(made, other, "ssm:SendCommand"),
            can_get(made, other, "db/password"),
        ])
    return paths


def test_no_role_can_create_an_administrator(stacks, roles):
    open_paths = {}
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            for path, is_open in admin_paths(roles[name], target, stacks.customer_policy).items():
                if is_open:
                    open_paths[(name, target, path)] = True
    assert open_paths == {}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_deploy_role_still_manages_its_hosts_roles_within_the_boundary(roles, environment):
    """The counterpart of the denials above: an apply can still create the host roles."""
    deploy = roles[f"github-webapp-{environment}-deploy"]
    role = f"arn:aws:iam::{ACCOUNT}:role/webapp-{environment}-app"
    bounded = {"iam:PermissionsBoundary": boundary_arn(environment)}
    assert decide(deploy, Request("iam:CreateRole", role, bounded))
    assert decide(deploy, Request("iam:PutRolePolicy", role, bounded))
    assert decide(deploy, Request("iam:AttachRolePolicy", role, {
        **bounded, "iam:PolicyARN": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}))
    assert decide(deploy, Request("iam:PassRole", role,
                                  {"iam:PassedToService": "ec2.amazonaws.com"}))
    assert not decide(deploy, Request("iam:PassRole", role,
                                      {"iam:PassedToService": "lambda.amazonaws.com"}))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_role_an_environment_creates_carries_its_boundary(stack_json, environment):
    for role in stack_json(environment)["resource"]["aws_iam_role"].values():
        assert role["permissions_boundary"].endswith(
            f":policy/webapp-{environment}-role-boundary"), role["name"]


def test_pipeline_roles_touch_only_their_own_state(stacks, roles):
    (bucket,) = stacks.stacks["bootstrap"]["resource"]["aws_s3_bucket"].values()
    for env in ENVIRONMENTS:
        for purpose in ("plan", "deploy"):
            principal = roles[f"github-webapp-{env}-{purpose}"]
            for target in ENVIRONMENTS:
                state = f"arn:aws:s3:::{bucket['bucket']}/{target}/terraform.tfstate"
                assert decide(principal, Request("s3:GetObject", state)) == (env == target)
                writes = decide(principal, Request("s3:PutObject", state))
                assert writes == (env == target and purpose == "deploy")
                lock = f"{state}.tflock"
                for action in ("s3:PutObject", "s3:DeleteObject"):
                    assert decide(principal, Request(action, lock)) == (
                        env == target and purpose == "deploy"), (env, purpose, action)


def test_plan_roles_read_no_data(roles):
    """No object of another bucket, no item of any table, no secret, no log event."""
    for env in ENVIRONMENTS:
        plan = roles[f"github-webapp-{env}-plan"]
        for action, resource in [
                ("s3:GetObject", "arn:aws:s3:::any-bucket/any-object"),
                ("dynamodb:GetItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/any"),
                ("dynamodb:Scan", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/any"),
                ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:"
                                                  f"{ACCOUNT}:secret:any"),
                ("ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/any"),
                ("logs:GetLogEvents", "*"), ("ec2:GetPasswordData", "*")]:
            assert not decide(plan, Request(action, resource)), (env, action)
        assert decide(plan, Request("ec2:DescribeInstances", "*"))
        # The one parameter it reads: which LBs are out for maintenance (the drift check).
        for target in ENVIRONMENTS:
            assert decide(plan, Request("ssm:GetParameter", parameter_arn(
                target, "lb/maintenance"))) == (target == env), (env, target)


def test_the_evaluator_refuses_a_condition_it_does_not_model():
    principal = Principal(arn="arn:aws:iam::1:role/r", identity=iam_policy.from_iam_json({
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                       "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}}}]}))
    with pytest.raises(NotImplementedError, match="DateGreaterThan"):
        decide(principal, Request("s3:GetObject", "arn:aws:s3:::b/k"))


def test_the_evaluator_follows_iams_rules():
    """Deny wins over Allow; NotAction/NotResource; absent keys; a boundary caps."""
    allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    principal = Principal(arn="arn:aws:iam::1:role/r", identity=iam_policy.from_iam_json({
        "Statement": [allow_all, {"Effect": "Deny", "NotAction": "s3:*",
                                  "NotResource": "arn:aws:ec2:*:*:instance/i-1"},
                      {"Effect": "Deny", "Action": "ec2:StopInstances", "Resource": "*",
                       "Condition": {"StringNotEquals": {"aws:ResourceTag/Env": "a"}}}]}))
    assert decide(principal, Request("S3:GETOBJECT", "arn:aws:s3:::b/k"))
    assert not decide(principal, Request("ec2:TerminateInstances", "arn:aws:ec2:r:1:instance/i-2"))
    assert decide(principal, Request("ec2:TerminateInstances", "arn:aws:ec2:r:1:instance/i-1"))
    assert not decide(principal, Request("ec2:StopInstances", "arn:aws:ec2:r:1:instance/i-1"))
    assert decide(principal, Request("ec2:StopInstances", "arn:aws:ec2:r:1:instance/i-1",
                                     {"aws:ResourceTag/Env": "a"}))
    principal.boundary = iam_policy.from_iam_json({"Statement": [
        {"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}]})
    assert decide(principal, Request("s3:GetObject", "arn:aws:s3:::b/k"))
    assert not decide(principal, Request("s3:PutObject", "arn:aws:s3:::b/k"))


def test_every_attached_managed_policy_is_vendored_with_its_date(stacks):
    attached = {a["policy_arn"] for content in stacks.stacks.values()
                for a in content.get("resource", {}).get("aws_iam_role_policy_attachment",
                                                         {}).values()
                if a["policy_arn"].startswith(iam_policy.AWS_MANAGED_PREFIX)}
    assert attached == {"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
                        "arn:aws:iam::aws:policy/PowerUserAccess"}
    for arn in attached | {ADMIN_POLICY}:
        assert iam_policy.managed_policy(arn)


def test_parliament_finds_nothing_in_any_synthesized_policy(stacks):
    from parliament import analyze_policy_string

    findings = {}
    for stack, key, statements in stacks.all_documents():
        if any(s.in_resource_policy for s in statements):
            continue  # trust and key policies: parliament lints identity policies
        policy = analyze_policy_string(iam_policy.policy_json(statements))
        if policy.findings:
            findings[(stack, key)] = [str(f) for f in policy.findings]
    assert findings == {}
    assert len(list(stacks.all_documents())) > 20  # every document was read


# ---------------------------------------------------------------------------- keys

KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/"
# The key policy AWS gives its managed key aws/ebs (GetKeyPolicy on alias/aws/ebs): every
# principal of the account may use it through EC2. Encrypted volumes without a key of their
# own (every host's root and data volumes) use it, and EC2 creates a grant on it for each.
EBS_KEY_POLICY = iam_policy.from_iam_json({"Statement": [
    {"Sid": "Allow access through EBS for all principals in the account that are authorized "
            "to use EBS", "Effect": "Allow", "Principal": {"AWS": "*"},
     "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                "kms:CreateGrant", "kms:DescribeKey"], "Resource": "*",
     "Condition": {"StringEquals": {"kms:CallerAccount": ACCOUNT,
                                    "kms:ViaService": f"ec2.{REGION}.amazonaws.com"}}},
    {"Sid": "Allow direct access to key metadata to the account", "Effect": "Allow",
     "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
     "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
     "Resource": "*"}]})
THROUGH_EC2 = {"kms:ViaService": f"ec2.{REGION}.amazonaws.com", "kms:CallerAccount": ACCOUNT,
               "kms:GrantIsForAWSResource": "true"}


def keys(stacks: Stacks, stack: str) -> list[tuple[str, list, Optional[str]]]:
    """(ARN, key policy, Environment tag or None) of every KMS key of ``stack``."""
    policies = stacks.key_policies(stack)
    return [(arn, policies[arn],
             stacks.tags(stack, "aws_kms_key", key).get("Environment"))
            for key in stacks.stacks[stack]["resource"]["aws_kms_key"]
            for arn in [stacks.resolve(stack, f"${{aws_kms_key.{key}.arn}}")]]


def tagged(environment_tag: Optional[str], **context) -> dict:
    """A request context on a resource carrying ``environment_tag`` (None: no such tag)."""
    if environment_tag is not None:
        context["aws:ResourceTag/Environment"] = environment_tag
    return context


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_deploy_role_launches_hosts_with_the_aws_managed_ebs_key(roles, environment):
    """RunInstances and CreateVolume make EC2 create a grant on aws/ebs, which has no tags."""
    for name in (f"github-webapp-{environment}-deploy", f"webapp-{environment}-app"):
        role = roles[name]
        through_ec2 = decide(role, Request("kms:CreateGrant", KEY_ARN + "aws-ebs",
                                           THROUGH_EC2), EBS_KEY_POLICY)
        assert through_ec2 == name.endswith("-deploy"), name
        # Not through EC2, the key policy refuses.
        assert not decide(role, Request("kms:CreateGrant", KEY_ARN + "aws-ebs"),
                          EBS_KEY_POLICY)


def test_no_direct_grant_on_any_key_and_none_on_another_environments(stacks, roles):
    """A grant made directly would let its grantee decrypt, the deploy role's own
    environment's secrets included, whatever the key policy names; EC2's grant for the volumes
    it encrypts stays possible on the role's own keys."""
    for env in ENVIRONMENTS:
        deploy = roles[f"github-webapp-{env}-deploy"]
        for stack in ("bootstrap", *ENVIRONMENTS):
            for arn, policy, environment_tag in keys(stacks, stack):
                own = environment_tag == env
                for context in ({}, {"kms:GrantIsForAWSResource": "false"}, THROUGH_EC2):
                    request = Request("kms:CreateGrant", arn, tagged(environment_tag,
                                                                     **context))
                    assert decide(deploy, request, policy) == (own and context is THROUGH_EC2), \
                        (env, arn, context)


def test_no_role_uses_another_environments_keys(stacks, roles):
    """The backup and alert keys let the account's IAM decide; the deploy roles have kms:*."""
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            if target == env:
                continue
            for arn, policy, environment_tag in keys(stacks, target):
                for action in ("kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom"):
                    assert not decide(roles[name], Request(action, arn, tagged(
                        environment_tag, **{"kms:ViaService": f"s3.{REGION}.amazonaws.com"})),
                        policy), (name, arn, action)


def test_the_state_key_belongs_to_no_environment(stacks):
    ((_, _, environment_tag),) = keys(stacks, "bootstrap")
    # Environment names are lower-case (core/settings.py): no environment can be this one.
    assert environment_tag and environment_tag != environment_tag.lower()


def test_a_deploy_role_cannot_retag_another_environments_key(stacks, roles):
    """Retagging a key Environment=<own> would make it the role's to disable or delete."""
    for env in ENVIRONMENTS:
        deploy = roles[f"github-webapp-{env}-deploy"]
        for stack in ("bootstrap", *ENVIRONMENTS):
            for arn, policy, environment_tag in keys(stacks, stack):
                own = environment_tag == env
                retag = Request("kms:TagResource", arn, tagged(
                    environment_tag, **{"aws:RequestTag/Environment": env,
                                        "aws:TagKeys": ["Environment"]}))
                untag = Request("kms:UntagResource", arn, tagged(
                    environment_tag, **{"aws:TagKeys": ["Environment"]}))
                other_tag = Request("kms:TagResource", arn, tagged(
                    environment_tag, **{"aws:RequestTag/Project": "webapp",
                                        "aws:TagKeys": ["Project"]}))
                assert decide(deploy, retag, policy) == own, (env, arn)
                assert decide(deploy, untag, policy) == own, (env, arn)
                assert decide(deploy, other_tag, policy) == own, (env, arn)
                disable = Request("kms:DisableKey", arn, tagged(environment_tag))
                assert decide(deploy, disable, policy) == own, (env, arn)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_deploy_role_tags_its_keys_with_its_environment_only(stacks, roles, environment):
    deploy = roles[f"github-webapp-{environment}-deploy"]
    other = next(e for e in ENVIRONMENTS if e != environment)
    # CreateKey with Tags: KMS also asks for kms:TagResource, from IAM alone (no key yet).
    for action in ("kms:CreateKey", "kms:TagResource"):
        assert decide(deploy, Request(action, "*", {"aws:RequestTag/Environment": environment,
                                                    "aws:TagKeys": ["Environment"]}))
    assert not decide(deploy, Request("kms:TagResource", "*", {
        "aws:RequestTag/Environment": other, "aws:TagKeys": ["Environment"]}))
    for arn, policy, environment_tag in keys(stacks, environment):
        assert not decide(deploy, Request("kms:TagResource", arn, tagged(
            environment_tag, **{"aws:RequestTag/Environment": other})), policy)


def aliases(stacks: Stacks, stack: str) -> list[str]:
    return [f"arn:aws:kms:{REGION}:{ACCOUNT}:{alias['name']}"
            for alias in stacks.stacks[stack]["resource"]["aws_kms_alias"].values()]


def test_a_deploy_role_manages_its_own_aliases_only(stacks, roles):
    for env in ENVIRONMENTS:
        deploy = roles[f"github-webapp-{env}-deploy"]
        own_keys = keys(stacks, env)
        for stack in ("bootstrap", *ENVIRONMENTS):
            for alias in aliases(stacks, stack):
                for action in ("kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"):
                    assert decide(deploy, Request(action, alias)) == (stack == env), alias
                    # The key side of the same call, on the environment's own keys.
                    for arn, policy, environment_tag in own_keys:
                        assert decide(deploy, Request(action, arn, tagged(environment_tag)),
                                      policy)
        # Pointing an alias of its own at another environment's key: the key side refuses.
        for stack in ("bootstrap", *ENVIRONMENTS):
            for arn, policy, environment_tag in keys(stacks, stack):
                assert decide(deploy, Request("kms:UpdateAlias", arn, tagged(
                    environment_tag)), policy) == (stack == env)


# ---------------------------------------------------------------------------- buckets

BUCKET_SETTINGS_CHANGES = (
    "s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:PutLifecycleConfiguration",
    "s3:PutBucketVersioning", "s3:PutEncryptionConfiguration", "s3:PutBucketPublicAccessBlock",
    "s3:DeleteBucket", "s3:PutBucketOwnershipControls", "s3:PutReplicationConfiguration",
    "s3:PutBucketAcl", "s3:PutBucketTagging", "s3:PutBucketObjectLockConfiguration",
    "s3:PutAccelerateConfiguration", "s3:PutBucketLogging", "s3:PutBucketNotification",
    "s3:PutBucketCORS", "s3:PutBucketWebsite", "s3:DeleteBucketWebsite",
    "s3:PutIntelligentTieringConfiguration", "s3:PutInventoryConfiguration",
    "s3:PutAnalyticsConfiguration", "s3:PutMetricsConfiguration",
    "s3:PutBucketRequestPayment", "s3:DeleteBucketOwnershipControls")


def buckets(stacks: Stacks, stack: str) -> list[str]:
    return [f"arn:aws:s3:::{iam_policy.bucket_name(block)}"
            for block in stacks.stacks[stack]["resource"]["aws_s3_bucket"].values()]


def test_a_deploy_role_changes_only_its_own_buckets_settings(stacks, roles):
    """Not the state bucket, not the other environment's buckets (their policies guard
    their objects)."""
    outcome, intended = {}, {}
    for env in ENVIRONMENTS:
        deploy = roles[f"github-webapp-{env}-deploy"]
        for stack in ("bootstrap", *ENVIRONMENTS):
            for bucket in buckets(stacks, stack):
                for action in BUCKET_SETTINGS_CHANGES:
                    outcome[(env, bucket, action)] = decide(deploy, Request(action, bucket))
                    intended[(env, bucket, action)] = stack == env
    assert outcome == intended


def test_no_role_touches_the_other_environments_objects(stacks, roles):
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            if target == env:
                continue
            for bucket in buckets(stacks, target):
                for action in ("s3:GetObject", "s3:GetObjectVersion", "s3:PutObject",
                               "s3:DeleteObject", "s3:GetObjectAcl", "s3:PutObjectAcl"):
                    assert not decide(roles[name], Request(action, f"{bucket}/backup.info")), (
                        name, bucket, action)


# ---------------------------------------------------------------------------- disks, roles

def test_no_role_copies_the_other_environments_disks(roles):
    """A snapshot or an image of a host is a copy of its data."""
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            for action, resource in (
                    ("ec2:CreateSnapshot", "volume/vol-0123456789abcdef0"),
                    ("ec2:CreateSnapshots", "instance/i-0123456789abcdef0"),
                    ("ec2:CreateImage", "instance/i-0123456789abcdef0")):
                arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:{resource}"
                copied = decide(roles[name], Request(action, arn, tagged(target)))
                assert copied == (kind == "deploy" and env == target), (name, target, action)
                assert not decide(roles[name], Request(action, arn)), (name, action)


def test_a_deploy_role_assumes_no_role(roles):
    """It may rewrite its hosts' roles' trust (iam:UpdateAssumeRolePolicy), so it must not be
    able to assume them: a host role reads secrets the deploy role may not."""
    for env in ENVIRONMENTS:
        deploy = roles[f"github-webapp-{env}-deploy"]
        for target in ENVIRONMENTS:
            for role in (*HOST_ROLES, "flow-logs"):
                assert not decide(deploy, Request(
                    "sts:AssumeRole", f"arn:aws:iam::{ACCOUNT}:role/webapp-{target}-{role}"))


def test_the_evaluator_reads_bool_if_exists_as_aws_does():
    principal = Principal(arn="arn:aws:iam::1:role/r", identity=iam_policy.from_iam_json({
        "Statement": [{"Effect": "Allow", "Action": "kms:CreateGrant", "Resource": "*"},
                      {"Effect": "Deny", "Action": "kms:CreateGrant", "Resource": "*",
                       "Condition": {"BoolIfExists": {"kms:GrantIsForAWSResource": "false"}}}]}))
    grant = "kms:CreateGrant"
    assert not decide(principal, Request(grant, "*"))
    assert not decide(principal, Request(grant, "*", {"kms:GrantIsForAWSResource": "false"}))
    assert decide(principal, Request(grant, "*", {"kms:GrantIsForAWSResource": "True"}))


# ---------------------------------------------------------------------------- plan refresh

def _named(service: str, resource: str):
    """The ARNs of a resource named by its ``name`` (or ``alarm_name``)."""
    def arns(stacks, env, block):
        name = stacks.resolve(env, block.get("name") or block["alarm_name"])
        return [f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}{name}"]
    return arns


def _bucket(stacks, env, block) -> list[str]:
    """A bucket's ARN, from the bucket itself or from the resource that configures it."""
    name = (iam_policy.bucket_name(block) if "bucket_prefix" in block
            else stacks.resolve(env, block["bucket"]))
    return [f"arn:aws:s3:::{name}"]


def _role(stacks, env, block) -> list[str]:
    name = block["name"] if "assume_role_policy" in block else stacks.resolve(
        env, block["role"]).rsplit("/", 1)[-1]
    return [f"arn:aws:iam::{ACCOUNT}:role/{name}"]


def _key(stacks, env, block) -> list[str]:
    return [arn for arn, _, _ in keys(stacks, env)]


ANY = None
# What the AWS provider (6.x) calls when it refreshes each kind of resource of the
# environment stacks: resource type -> [(ARNs of the call, actions)]; ANY: actions IAM does
# not scope ("*"). From the provider's Read functions (internal/service/<service>/<type>.go).
REFRESH_READS = {
    "aws_vpc": [(ANY, ["ec2:DescribeVpcs", "ec2:DescribeRouteTables", "ec2:DescribeNetworkAcls",
                       "ec2:DescribeSecurityGroups"]),
                (lambda s, e, b: [f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-0a"],
                 ["ec2:DescribeVpcAttribute"])],
    "aws_subnet": [(ANY, ["ec2:DescribeSubnets"])],
    "aws_internet_gateway": [(ANY, ["ec2:DescribeInternetGateways"])],
    "aws_eip": [(ANY, ["ec2:DescribeAddresses", "ec2:DescribeAddressesAttribute"])],
    "aws_nat_gateway": [(ANY, ["ec2:DescribeNatGateways"])],
    "aws_route_table": [(ANY, ["ec2:DescribeRouteTables"])],
    "aws_route": [(ANY, ["ec2:DescribeRouteTables"])],
    "aws_route_table_association": [(ANY, ["ec2:DescribeRouteTables"])],
    "aws_flow_log": [(ANY, ["ec2:DescribeFlowLogs"])],
    "aws_default_security_group": [(ANY, ["ec2:DescribeSecurityGroups"])],
    "aws_default_network_acl": [(ANY, ["ec2:DescribeNetworkAcls"])],
    "aws_default_route_table": [(ANY, ["ec2:DescribeRouteTables"])],
    "aws_security_group": [(ANY, ["ec2:DescribeSecurityGroups"])],
    "aws_vpc_security_group_ingress_rule": [(ANY, ["ec2:DescribeSecurityGroupRules"])],
    "aws_vpc_security_group_egress_rule": [(ANY, ["ec2:DescribeSecurityGroupRules"])],
    "aws_instance": [(ANY, ["ec2:DescribeInstances", "ec2:DescribeVolumes",
                            "ec2:DescribeInstanceCreditSpecifications",
                            "ec2:DescribeInstanceTypes", "ec2:DescribeNetworkInterfaces"]),
                     (lambda s, e, b: [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0a"],
                      ["ec2:DescribeInstanceAttribute"])],
    "aws_ebs_volume": [(ANY, ["ec2:DescribeVolumes"])],
    "aws_volume_attachment": [(ANY, ["ec2:DescribeVolumes"])],
    "aws_lb": [(ANY, ["elasticloadbalancing:DescribeLoadBalancers",
                      "elasticloadbalancing:DescribeLoadBalancerAttributes",
                      "elasticloadbalancing:DescribeCapacityReservation",
                      "elasticloadbalancing:DescribeTags"])],
    "aws_lb_listener": [(ANY, ["elasticloadbalancing:DescribeListeners",
                               "elasticloadbalancing:DescribeListenerAttributes",
                               "elasticloadbalancing:DescribeTags"])],
    "aws_lb_target_group": [(ANY, ["elasticloadbalancing:DescribeTargetGroups",
                                   "elasticloadbalancing:DescribeTargetGroupAttributes",
                                   "elasticloadbalancing:DescribeTags"])],
    "aws_lb_target_group_attachment": [(ANY, ["elasticloadbalancing:DescribeTargetHealth"])],
    "aws_cloudwatch_log_group": [(ANY, ["logs:DescribeLogGroups"]),
                                 (_named("logs", "log-group:"), ["logs:ListTagsForResource"])],
    "aws_cloudwatch_metric_alarm": [(_named("cloudwatch", "alarm:"),
                                     ["cloudwatch:DescribeAlarms",
                                      "cloudwatch:ListTagsForResource"])],
    "aws_sns_topic": [(_named("sns", ""), ["sns:GetTopicAttributes",
                                           "sns:ListTagsForResource"])],
    "aws_sns_topic_subscription": [(ANY, ["sns:GetSubscriptionAttributes"])],
    "aws_kms_key": [(_key, ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus",
                            "kms:ListResourceTags"])],
    "aws_kms_alias": [(ANY, ["kms:ListAliases"])],
    "aws_iam_role": [(_role, ["iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy",
                              "iam:ListAttachedRolePolicies"])],
    "aws_iam_role_policy": [(_role, ["iam:GetRolePolicy"])],
    "aws_iam_role_policy_attachment": [(_role, ["iam:ListAttachedRolePolicies"])],
    "aws_iam_instance_profile": [(lambda s, e, b: [
        f"arn:aws:iam::{ACCOUNT}:instance-profile/{b['name']}"], ["iam:GetInstanceProfile"])],
    # HeadBucket is authorized as s3:ListBucket.
    "aws_s3_bucket": [(_bucket, [
        "s3:ListBucket", "s3:GetBucketPolicy", "s3:GetBucketAcl", "s3:GetBucketCORS",
        "s3:GetBucketWebsite", "s3:GetBucketVersioning", "s3:GetAccelerateConfiguration",
        "s3:GetBucketRequestPayment", "s3:GetBucketLogging", "s3:GetLifecycleConfiguration",
        "s3:GetReplicationConfiguration", "s3:GetEncryptionConfiguration",
        "s3:GetBucketObjectLockConfiguration", "s3:GetBucketTagging"])],
    "aws_s3_bucket_lifecycle_configuration": [(_bucket, ["s3:GetLifecycleConfiguration"])],
    "aws_s3_bucket_ownership_controls": [(_bucket, ["s3:GetBucketOwnershipControls"])],
    "aws_s3_bucket_policy": [(_bucket, ["s3:GetBucketPolicy"])],
    "aws_s3_bucket_public_access_block": [(_bucket, ["s3:GetBucketPublicAccessBlock"])],
    "aws_s3_bucket_server_side_encryption_configuration": [
        (_bucket, ["s3:GetEncryptionConfiguration"])],
    "aws_s3_bucket_versioning": [(_bucket, ["s3:GetBucketVersioning"])],
}
DATA_READS = {
    "aws_ami": [(ANY, ["ec2:DescribeImages"])],
    "aws_ecr_repository": [(lambda s, e, b: [
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{b['name']}"],
        ["ecr:DescribeRepositories", "ecr:ListTagsForResource", "ecr:DescribeImages"])],
    "aws_caller_identity": [],  # sts:GetCallerIdentity needs no permission
    "aws_iam_policy_document": [],  # computed by Terraform itself
}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_plan_role_refreshes_every_resource_of_its_environment(stacks, roles, environment):
    content = stacks.stacks[environment]
    assert set(content["resource"]) <= set(REFRESH_READS), "a resource type without its reads"
    assert set(content["data"]) <= set(DATA_READS), "a data source without its reads"
    plan = roles[f"github-webapp-{environment}-plan"]
    key_policies = stacks.key_policies(environment)
    refused = []
    for section, table in (("resource", REFRESH_READS), ("data", DATA_READS)):
        for kind, blocks in content[section].items():
            for block in blocks.values():
                for arns_of, actions in table[kind]:
                    for arn in (["*"] if arns_of is ANY else arns_of(stacks, environment,
                                                                     block)):
                        for action in actions:
                            if not decide(plan, Request(action, arn), key_policies.get(arn)):
                                refused.append((kind, action, arn))
    assert refused == []


def test_the_refresh_table_lists_only_what_the_environments_hold(stacks):
    held = {kind for env in ENVIRONMENTS for kind in stacks.stacks[env]["resource"]}
    assert held == set(REFRESH_READS)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_plan_role_reads_only_its_own_buckets_settings(stacks, roles, environment):
    plan = roles[f"github-webapp-{environment}-plan"]
    for stack in ("bootstrap", *ENVIRONMENTS):
        for bucket in buckets(stacks, stack):
            assert decide(plan, Request("s3:GetBucketPolicy", bucket)) == (stack == environment)
            for action in ("s3:GetObject", "s3:GetObjectVersion", "s3:PutBucketPolicy"):
                assert not decide(plan, Request(action, f"{bucket}/backup.info")), action
                assert not decide(plan, Request(action, bucket)), action


# ------------------------------------------------------------ the other environment, whole

def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


# What PowerUserAccess allows on another environment's resources beyond its hosts, each with
# the resource it is authorized on and the tag keys its service puts in the request context
# (AWS's service authorization reference). Each is a way to take over the environment's
# endpoint, open its network, replace a host or blind its alarms.
ON_TAGGED_RESOURCES = [
    ("ec2:AuthorizeSecurityGroupIngress", _arn("ec2", "security-group/sg-0a"), "ec2"),
    ("ec2:ModifySecurityGroupRules", _arn("ec2", "security-group/sg-0a"), "ec2"),
    ("ec2:AssociateAddress", _arn("ec2", "elastic-ip/eipalloc-0a"), "ec2"),
    ("ec2:DisassociateAddress", _arn("ec2", "elastic-ip/eipalloc-0a"), "ec2"),
    ("ec2:ModifyNetworkInterfaceAttribute", _arn("ec2", "network-interface/eni-0a"), "ec2"),
    ("ec2:CreateRoute", _arn("ec2", "route-table/rtb-0a"), "ec2"),
    ("ec2:DeleteRoute", _arn("ec2", "route-table/rtb-0a"), "ec2"),
    ("ec2:CreateVpcPeeringConnection", _arn("ec2", "vpc/vpc-0a"), "ec2"),
    ("ec2:DeleteNatGateway", _arn("ec2", "natgateway/nat-0a"), "ec2"),
    # The VPC's default ACL and main route table: adopted by the stack, so tagged too.
    ("ec2:CreateNetworkAclEntry", _arn("ec2", "network-acl/acl-0a"), "ec2"),
    ("ec2:ReplaceRoute", _arn("ec2", "route-table/rtb-0b"), "ec2"),
    ("ec2:CreateReplaceRootVolumeTask", _arn("ec2", "instance/i-0a"), "ec2"),
    ("ec2:DisassociateIamInstanceProfile", _arn("ec2", "instance/i-0a"), "ec2"),
    ("ec2:GetConsoleOutput", _arn("ec2", "instance/i-0a"), "ec2"),
    ("ec2-instance-connect:SendSSHPublicKey", _arn("ec2", "instance/i-0a"), "ec2-only"),
    ("elasticloadbalancing:RegisterTargets",
     _arn("elasticloadbalancing", "targetgroup/web-https/0a"), "aws"),
    ("elasticloadbalancing:ModifyListener",
     _arn("elasticloadbalancing", "listener/net/web/0a/0b"), "aws"),
    ("elasticloadbalancing:DeleteLoadBalancer",
     _arn("elasticloadbalancing", "loadbalancer/net/web/0a"), "aws"),
    ("cloudwatch:DeleteAlarms", _arn("cloudwatch", "alarm:backup-age"), "aws"),
    ("cloudwatch:DisableAlarmActions", _arn("cloudwatch", "alarm:backup-age"), "aws"),
    ("sns:SetTopicAttributes", _arn("sns", "alerts"), "aws"),
    ("sns:DeleteTopic", _arn("sns", "alerts"), "aws"),
    ("logs:DeleteLogGroup", _arn("logs", "log-group:flow-logs"), "aws"),
    ("ssm:AddTagsToResource", _arn("ssm", "parameter/webapp/x/app/image"), "ssm"),
]
TAG_KEYS = {"aws": ("aws:ResourceTag",), "ec2": ("aws:ResourceTag", "ec2:ResourceTag"),
            "ec2-only": ("ec2:ResourceTag",), "ssm": ("aws:ResourceTag", "ssm:resourceTag")}


def on(environment: str, keys: str) -> dict:
    return {f"{key}/Environment": environment for key in TAG_KEYS[keys]}


def test_no_role_touches_any_resource_of_the_other_environment(roles):
    outcome, intended = {}, {}
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            for action, resource, keys in ON_TAGGED_RESOURCES:
                outcome[(name, target, action)] = decide(
                    roles[name], Request(action, resource, on(target, keys)))
                intended[(name, target, action)] = kind == "deploy" and env == target
    assert outcome == intended


# Authorized on a document, a window or a path rather than on each host or parameter: a
# tag-keyed deny cannot hold them, so nobody may.
NEVER = [
    ("ssm:CreateAssociation", _arn("ssm", "document/AWS-RunShellScript")),
    ("ssm:UpdateAssociation", _arn("ssm", "association/0a")),
    ("ssm:StartAssociationsOnce", _arn("ssm", "association/0a")),
    ("ssm:RegisterTaskWithMaintenanceWindow", _arn("ssm", "maintenancewindow/mw-0a")),
    ("ssm:StartAutomationExecution", _arn("ssm", "automation-definition/AWS-RunShellScript")),
    ("ssm:CreateDocument", _arn("ssm", "document/anything")),
    *(("ssm:GetParametersByPath", _arn("ssm", f"parameter{path}"))
      for path in ("/", "/webapp", "/webapp/production", "/webapp/staging",
                   "/webapp/production/db", "/webapp/staging/logs")),
]


def test_nobody_runs_standing_commands_or_reads_parameters_by_path(roles):
    allowed = {(name, action, resource) for name in roles for action, resource in NEVER
               if decide(roles[name], Request(action, resource))}
    assert allowed == set()


APP_REPOSITORY = _arn("ecr", "repository/webapp/app")
IMAGE_REWRITES = ["ecr:PutImageTagMutability", "ecr:BatchDeleteImage", "ecr:SetRepositoryPolicy",
                  "ecr:DeleteRepositoryPolicy", "ecr:PutLifecyclePolicy", "ecr:DeleteRepository",
                  "ecr:PutImageScanningConfiguration", "ecr:TagResource",
                  "ecr:ReplicateImage"]


def test_every_deploy_role_pushes_images_and_none_can_rewrite_one(roles):
    """Every environment runs the images of one repository (tagged Environment=Shared): a
    staging deploy role that could make a tag mutable, delete an image or share the repository
    would choose what production runs."""
    shared = {"aws:ResourceTag/Environment": "Shared"}
    for env, kind, name in principals(roles):
        push = decide(roles[name], Request("ecr:PutImage", APP_REPOSITORY, shared))
        assert push == (kind == "deploy"), name
        pull = decide(roles[name], Request("ecr:BatchGetImage", APP_REPOSITORY, shared))
        assert pull == (kind == "deploy" or name.endswith("-app")), name
        for action in IMAGE_REWRITES:
            assert not decide(roles[name], Request(action, APP_REPOSITORY, shared)), \
                (name, action)
        assert not decide(roles[name], Request("ecr:PutReplicationConfiguration", "*")), name
        assert not decide(roles[name], Request("ecr:PutRegistryPolicy", "*")), name


def test_the_other_environments_untagged_parameters_are_out_of_reach(roles):
    """The hosts create their secrets: no tags, so the path keeps them."""
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            for action in ("ssm:AddTagsToResource", "ssm:UnlabelParameterVersion",
                           "ssm:PutParameter", "ssm:DeleteParameter"):
                reached = decide(roles[name], Request(action, parameter_arn(target, "db/x")))
                if target != env:
                    assert not reached, (name, target, action)


def test_nothing_is_created_or_retagged_as_another_environments(roles):
    """A staging instance tagged Environment=production would be found by production's
    rollout; a staging key so tagged would pass production's guardrails."""
    for env, kind, name in principals(roles):
        for target in ENVIRONMENTS:
            for action, resource in (
                    ("ec2:RunInstances", _arn("ec2", "instance/*")),
                    ("ec2:CreateTags", _arn("ec2", "instance/i-0a")),
                    ("ec2:CreateTags", _arn("ec2", "security-group/sg-0a")),
                    ("elasticloadbalancing:AddTags",
                     _arn("elasticloadbalancing", "targetgroup/web/0a")),
                    ("ssm:AddTagsToResource", _arn("ssm", "parameter/webapp/x"))):
                context = {"aws:RequestTag/Environment": target, "aws:TagKeys": ["Environment"],
                           **on(env, "ec2" if action.startswith("ec2") else "aws")}
                if action == "ec2:RunInstances":
                    context = {k: v for k, v in context.items() if "ResourceTag" not in k}
                allowed = decide(roles[name], Request(action, resource, context))
                if target != env:
                    assert not allowed, (name, target, action)
                elif kind == "deploy":
                    assert allowed, (name, target, action)
