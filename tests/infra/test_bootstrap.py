"""The bootstrap stack: the state bucket and the roles GitHub Actions assumes."""
import json
from pathlib import Path

import pytest

from tests.infra.test_environment import resources

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bootstrap(stack_json):
    return stack_json("bootstrap")


def only(stack: dict, kind: str) -> dict:
    (resource,) = resources(stack, kind).values()
    return resource


def test_bootstrap_keeps_its_own_state_locally(bootstrap):
    assert bootstrap["terraform"]["backend"] == {"local": {"path": "terraform.tfstate"}}


def test_state_bucket_is_versioned_encrypted_private_and_kept(bootstrap):
    assert only(bootstrap, "aws_s3_bucket")["lifecycle"] == {"prevent_destroy": True}
    versioning = only(bootstrap, "aws_s3_bucket_versioning")
    assert versioning["versioning_configuration"] == {"status": "Enabled"}
    (rule,) = only(bootstrap, "aws_s3_bucket_server_side_encryption_configuration")["rule"]
    (key_id,) = resources(bootstrap, "aws_kms_key")
    assert rule["apply_server_side_encryption_by_default"] == {
        "sse_algorithm": "aws:kms", "kms_master_key_id": f"${{aws_kms_key.{key_id}.arn}}"}
    # Per-object encryption context: the roles' policies scope the key to their prefix.
    assert rule["bucket_key_enabled"] is False
    block = only(bootstrap, "aws_s3_bucket_public_access_block")
    assert all(block[flag] is True for flag in (
        "block_public_acls", "block_public_policy", "ignore_public_acls",
        "restrict_public_buckets"))
    (lifecycle,) = only(bootstrap, "aws_s3_bucket_lifecycle_configuration")["rule"]
    assert lifecycle["noncurrent_version_expiration"] == [{"noncurrent_days": 90}]
    assert lifecycle["abort_incomplete_multipart_upload"] == [{"days_after_initiation": 7}]


def test_state_bucket_refuses_plain_http(bootstrap):
    documents = bootstrap["data"]["aws_iam_policy_document"]
    (statement,) = next(d for k, d in documents.items() if k.startswith("state_tls-only"))[
        "statement"]
    assert statement["effect"] == "Deny" and statement["actions"] == ["s3:*"]
    assert statement["condition"] == [{"test": "Bool", "variable": "aws:SecureTransport",
                                       "values": ["false"]}]


def trust_subjects(bootstrap: dict, environment: str, purpose: str) -> list[str]:
    documents = bootstrap["data"]["aws_iam_policy_document"]
    document = next(d for k, d in documents.items()
                    if k.startswith(f"github_{environment}-{purpose}-trust"))
    (statement,) = document["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    conditions = {c["variable"]: c for c in statement["condition"]}
    assert conditions["token.actions.githubusercontent.com:aud"]["values"] == [
        "sts.amazonaws.com"]
    subject = conditions["token.actions.githubusercontent.com:sub"]
    assert subject["test"] == "StringEquals"  # no wildcards in who may assume the role
    return subject["values"]


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_plan_role_serves_pull_requests_and_main(bootstrap, environment):
    assert trust_subjects(bootstrap, environment, "plan") == [
        "repo:example-org/web-platform:pull_request",
        "repo:example-org/web-platform:ref:refs/heads/main"]


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_deploy_role_serves_only_its_github_environment(bootstrap, environment):
    assert trust_subjects(bootstrap, environment, "deploy") == [
        f"repo:example-org/web-platform:environment:{environment}"]


def test_deploy_role_cannot_manage_the_github_roles(bootstrap):
    roles = {r["name"] for r in resources(bootstrap, "aws_iam_role").values()}
    assert roles == {f"github-webapp-{env}-{purpose}" for env in ("production", "staging")
                     for purpose in ("plan", "deploy")}
    documents = json.dumps(bootstrap["data"]["aws_iam_policy_document"])
    assert "role/webapp-production-*" in documents
    assert not any(name.startswith("webapp-") for name in roles)


def test_plan_role_reads_descriptions_and_writes_nothing(bootstrap):
    """Who reads what is evaluated in test_least_privilege.py; here, the shape. Not even the
    state lock: a pull request could hold it against every deploy."""
    attachments = {a["role"]: a["policy_arn"] for a in
                   resources(bootstrap, "aws_iam_role_policy_attachment").values()}
    assert not any("plan" in role for role in attachments)  # no ReadOnlyAccess
    plan = policy_document(bootstrap, "github_production-plan-permissions")
    actions = {a for s in plan["statement"] for a in s["actions"]}
    assert not {a for a in actions if a.split(":")[1].startswith(
        ("Put", "Delete", "Create", "Update", "Tag", "Untag"))}
    assert not any(a.startswith(("secretsmanager:", "dynamodb:")) for a in actions)
    # One plain parameter: the LBs out for maintenance, which the drift check names.
    (reads,) = (s for s in plan["statement"] if any(a.startswith("ssm:") for a in s["actions"]))
    assert reads["actions"] == ["ssm:GetParameter"]
    assert reads["resources"] == ["arn:aws:ssm:*:*:parameter/webapp/production/lb/maintenance"]


def test_outputs_name_the_role_arns_for_the_workflows(bootstrap):
    assert {"state_bucket", "plan_role_arns", "deploy_role_arns"} <= set(bootstrap["output"])


def test_deploy_role_can_undo_every_tag_it_can_set(bootstrap):
    """Removing a tag key from a role or an instance profile calls iam:Untag*: without it the
    apply fails halfway. Every IAM action named is one IAM really has (botocore's model)."""
    import botocore.session

    operations = set(botocore.session.get_session().get_service_model("iam").operation_names)
    documents = bootstrap["data"]["aws_iam_policy_document"]
    for environment in ("production", "staging"):
        document = next(d for k, d in documents.items()
                        if k.startswith(f"github_{environment}-deploy-permissions"))
        actions = {a for s in document["statement"] for a in s["actions"]
                   if a.startswith("iam:")}
        names = {a.removeprefix("iam:") for a in actions}
        # iam:PassRole is a permission, not an API call.
        assert names - {"PassRole"} <= operations, names - operations
        tagging = {n for n in names if n.startswith(("Tag", "Untag"))}
        assert {"TagRole", "UntagRole", "TagInstanceProfile", "UntagInstanceProfile"} <= tagging
        for name in tagging:
            pair = "T" + name[3:] if name.startswith("Untag") else "Unt" + name[1:]
            assert pair in names, f"{environment}: iam:{name} without iam:{pair}"


EXISTING_PROVIDER = ("arn:aws:iam::123456789012:oidc-provider/"
                     "token.actions.githubusercontent.com")


def trust_principals(stack: dict) -> set[str]:
    documents = stack["data"]["aws_iam_policy_document"]
    return {identifier for key, document in documents.items() if "-trust" in key
            for statement in document["statement"]
            for principal in statement["principals"]
            for identifier in principal["identifiers"]}


def test_bootstrap_creates_githubs_oidc_provider_by_default(bootstrap):
    provider_key, provider = next(iter(
        resources(bootstrap, "aws_iam_openid_connect_provider").items()))
    assert provider["url"] == "https://token.actions.githubusercontent.com"
    assert provider["client_id_list"] == ["sts.amazonaws.com"]
    assert "aws_iam_openid_connect_provider" not in bootstrap["data"]
    assert trust_principals(bootstrap) == {
        f"${{aws_iam_openid_connect_provider.{provider_key}.arn}}"}


@pytest.fixture(scope="module")
def bootstrap_reusing_a_provider():
    from core.cdk import Testing
    from core.settings import load_environments
    from stacks.bootstrap import BootstrapStack

    environments = [settings.model_copy(update={"github_oidc_provider_arn": EXISTING_PROVIDER})
                    for settings in load_environments(["production", "staging"])]
    return json.loads(Testing.synth(BootstrapStack(Testing.app(), "bootstrap", environments)))


def test_bootstrap_reuses_an_existing_oidc_provider_when_configured(
        bootstrap_reusing_a_provider):
    stack = bootstrap_reusing_a_provider
    assert "aws_iam_openid_connect_provider" not in stack["resource"]
    ((key, provider),) = stack["data"]["aws_iam_openid_connect_provider"].items()
    assert provider["arn"] == EXISTING_PROVIDER
    # The plan stops with the reason when the ARN names another issuer or lacks STS.
    (check,) = provider["lifecycle"]["postcondition"]
    assert 'contains(self.client_id_list, "sts.amazonaws.com")' in check["condition"]
    assert "github_oidc_provider_arn" in check["error_message"]
    assert trust_principals(stack) == {f"${{data.aws_iam_openid_connect_provider.{key}.arn}}"}
    assert len(resources(stack, "aws_iam_role")) == 4


def write_config(directory, name: str, **changes) -> None:
    import yaml

    document = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    document.update(changes)
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(document))


@pytest.mark.parametrize("value, expected", [
    ("arn:aws:iam::123456789012:oidc-provider/gitlab.com",
     "github_oidc_provider_arn: expected the ARN of the account's GitHub OIDC provider"),
    ("token.actions.githubusercontent.com", "github_oidc_provider_arn: expected the ARN"),
])
def test_a_provider_arn_that_is_not_githubs_is_refused_in_one_line(tmp_path, value, expected):
    from core.settings import ConfigError, load_environment

    write_config(tmp_path, "staging", github_oidc_provider_arn=value)
    with pytest.raises(ConfigError) as error:
        load_environment("staging", tmp_path)
    (problem,) = error.value.problems
    assert expected in problem


def test_every_environment_must_name_the_same_provider(tmp_path):
    from core.settings import ConfigError, load_environments

    write_config(tmp_path, "staging", github_oidc_provider_arn=EXISTING_PROVIDER)
    write_config(tmp_path, "production")
    with pytest.raises(ConfigError) as error:
        load_environments(["production", "staging"], tmp_path)
    (problem,) = error.value.problems
    assert problem.startswith("github_oidc_provider_arn: environments disagree")


def policy_document(stack: dict, key_start: str) -> dict:
    documents = stack["data"]["aws_iam_policy_document"]
    return next(d for k, d in documents.items() if k.startswith(key_start))


def test_the_app_image_repository_is_immutable_scanned_encrypted_and_expires_old_images(
        bootstrap):
    (key, repository), = resources(bootstrap, "aws_ecr_repository").items()
    assert repository["name"] == "webapp/app"  # one per project, shared by the environments
    assert repository["image_tag_mutability"] == "IMMUTABLE"
    assert repository["image_scanning_configuration"] == {"scan_on_push": True}
    assert repository["encryption_configuration"] == [{"encryption_type": "KMS"}]
    assert repository["lifecycle"]["prevent_destroy"] is True
    (lifecycle,) = resources(bootstrap, "aws_ecr_lifecycle_policy").values()
    assert lifecycle["repository"] == f"${{aws_ecr_repository.{key}.name}}"
    (rule,) = json.loads(lifecycle["policy"])["rules"]
    assert rule["action"] == {"type": "expire"}
    assert rule["selection"]["countType"] == "imageCountMoreThan"
    assert rule["selection"]["tagStatus"] == "tagged"
    assert bootstrap["output"]["app_repository_url"]["value"] == (
        f"${{aws_ecr_repository.{key}.repository_url}}")


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_each_deploy_role_may_push_to_the_app_repository_only(bootstrap, environment):
    (key,) = resources(bootstrap, "aws_ecr_repository")
    document = policy_document(bootstrap, f"github_{environment}-push-app-image-permissions")
    allows = [s for s in document["statement"] if s.get("effect", "Allow") == "Allow"]
    by_resource = {tuple(s["resources"]): set(s["actions"]) for s in allows}
    assert by_resource == {
        ("*",): {"ecr:GetAuthorizationToken"},
        (f"${{aws_ecr_repository.{key}.arn}}",): {
            "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
            "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
            "ecr:BatchGetImage", "ecr:DescribeImages"}}
    # Whatever else the role may do (test_least_privilege.py evaluates it), on the
    # repository it may only push and read.
    (only_pushed,) = (s for s in document["statement"] if s.get("sid") == "ImagesOnlyPushed")
    assert only_pushed["effect"] == "Deny" and "actions" not in only_pushed
    assert only_pushed["resources"] == [f"${{aws_ecr_repository.{key}.arn}}"]
    assert {"ecr:PutImage", "ecr:BatchGetImage"} <= set(only_pushed["not_actions"])
    policies = [p for p in resources(bootstrap, "aws_iam_role_policy").values()
                if p["name"] == "push-app-image-permissions"]
    assert len(policies) == 2
    # The plan roles never push.
    from modules.container_repository import LOGIN_ACTION, PUSH_ACTIONS

    plan = policy_document(bootstrap, f"github_{environment}-plan-permissions")
    granted = {a for s in plan["statement"] for a in s["actions"]}
    # DescribeImages only reads tags and digests: refreshing the repository data source
    # (its most_recent_image_tags) needs it.
    assert not ({LOGIN_ACTION, *PUSH_ACTIONS} - {"ecr:DescribeImages"}) & granted


def test_every_ecr_action_granted_exists_in_ecr():
    """Checked against botocore's ECR model: a misspelt action grants nothing, silently."""
    import botocore.session

    from modules.container_repository import LOGIN_ACTION, PULL_ACTIONS, PUSH_ACTIONS

    operations = set(botocore.session.get_session().get_service_model("ecr").operation_names)
    for action in {LOGIN_ACTION, *PULL_ACTIONS, *PUSH_ACTIONS}:
        assert action.removeprefix("ecr:") in operations, action
