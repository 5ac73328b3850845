"""Least privilege, evaluated: who can read each secret, reach the other environment's hosts
or make an administrator, from the synthesized policies, the vendored AWS managed policies,
the permissions boundaries and the KMS key policies (tests/infra/iam_policy.py)."""
from __future__ import annotations

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
    ((arn, policy),) = stacks.key_policies(environment).items()
    return arn, policy


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
            for path, is_open in admin_paths(roles[name], target, stacks.boundary).items():
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
                                                         {}).values()}
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
