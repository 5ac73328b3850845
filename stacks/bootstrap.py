"""Created once by hand: the state bucket, the app's image repository and the roles the
workflows assume."""
from __future__ import annotations

from core.cdk import (AwsProvider, Construct, DataAwsCallerIdentity, LocalBackend,
                      TerraformOutput, TerraformStack)
from core.settings import Settings
from modules.container_repository import ContainerRepository, ContainerRepositoryConfig
from modules.github_oidc import EnvironmentAccess, GithubOidc, GithubOidcConfig
from modules.permissions_boundary import (PermissionsBoundary, PermissionsBoundaryConfig,
                                          environment_guardrails)
from modules.state_bucket import StateBucket, StateBucketConfig, state_key_alias
from provisioning import parameters

SHARED_ENVIRONMENT_TAG = "Shared"


class BootstrapStack(TerraformStack):
    """State bucket, the app's ECR repository (the pipeline pushes before any environment
    exists) and GitHub OIDC roles for every environment (local state, applied once)."""

    def __init__(self, scope: Construct, id: str, environments: list[Settings]):
        super().__init__(scope, id)
        shared = environments[0]
        # Environment: the deploy roles' guardrails protect a key tagged with an Environment
        # other than theirs. Environment names are lower-case, so none can claim this one.
        AwsProvider(self, "aws", region=shared.region, default_tags=[{"tags": {
            "Project": shared.project, "ManagedBy": "cdktf", "Stack": id,
            "Environment": SHARED_ENVIRONMENT_TAG}}])
        # The bucket cannot hold the state of the stack that creates it.
        LocalBackend(self, path="terraform.tfstate")
        account = DataAwsCallerIdentity(self, "account")
        bucket = StateBucket(self, "state", StateBucketConfig(
            bucket=shared.state_bucket, account_id=account.account_id, region=shared.region,
            key_alias=state_key_alias(shared.project)))
        images = ContainerRepository(self, "app-images", ContainerRepositoryConfig(
            name=shared.app_repository_name))
        access = {}
        for settings in environments:
            guardrails = tuple(environment_guardrails(
                settings.project, settings.environment,
                tuple(other.environment for other in environments if other is not settings),
                bucket.bucket_arn))
            boundary = PermissionsBoundary(self, f"{settings.environment}-boundary",
                                           PermissionsBoundaryConfig(
                                               project=settings.project,
                                               environment=settings.environment,
                                               guardrails=guardrails))
            access[settings.environment] = EnvironmentAccess(
                boundary_arn=boundary.arn, guardrails=guardrails,
                secret_parameter_arns=tuple(
                    f"arn:aws:ssm:*:*:parameter{parameter.name}"
                    for parameter in parameters.catalog(settings) if parameter.secret),
                plan_parameter_arns=(
                    f"arn:aws:ssm:*:*:parameter{parameters.lb_maintenance(settings)}",))
        github = GithubOidc(self, "github", GithubOidcConfig(
            repository=shared.github_repository, project=shared.project,
            environments=access, state_bucket_arn=bucket.bucket_arn,
            state_key_arn=bucket.key_arn,
            existing_provider_arn=shared.github_oidc_provider_arn,
            image_push_statements=images.push_statements))
        TerraformOutput(self, "state_bucket", value=bucket.bucket_name)
        TerraformOutput(self, "app_repository_url", value=images.url,
                        description="Repository variable APP_IMAGE_REPOSITORY")
        TerraformOutput(self, "plan_role_arns", value=github.plan_role_arns,
                        description="Repository variables AWS_PLAN_ROLE_ARN_<ENVIRONMENT>")
        TerraformOutput(self, "deploy_role_arns", value=github.deploy_role_arns,
                        description="AWS_DEPLOY_ROLE_ARN of each GitHub environment")
