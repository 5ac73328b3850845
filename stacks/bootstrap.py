"""Created once by hand: the state bucket, the app's image repository and the roles the
workflows assume."""
from __future__ import annotations

from core.cdk import AwsProvider, Construct, LocalBackend, TerraformOutput, TerraformStack
from core.settings import Settings
from modules.container_repository import ContainerRepository, ContainerRepositoryConfig
from modules.github_oidc import GithubOidc, GithubOidcConfig
from modules.state_bucket import StateBucket, StateBucketConfig


class BootstrapStack(TerraformStack):
    """State bucket, the app's ECR repository (the pipeline pushes before any environment
    exists) and GitHub OIDC roles for every environment (local state, applied once)."""

    def __init__(self, scope: Construct, id: str, environments: list[Settings]):
        super().__init__(scope, id)
        shared = environments[0]
        AwsProvider(self, "aws", region=shared.region, default_tags=[{"tags": {
            "Project": shared.project, "ManagedBy": "cdktf", "Stack": id}}])
        # The bucket cannot hold the state of the stack that creates it.
        LocalBackend(self, path="terraform.tfstate")
        bucket = StateBucket(self, "state", StateBucketConfig(bucket=shared.state_bucket))
        images = ContainerRepository(self, "app-images", ContainerRepositoryConfig(
            name=shared.app_repository_name))
        github = GithubOidc(self, "github", GithubOidcConfig(
            repository=shared.github_repository, project=shared.project,
            environments=tuple(env.environment for env in environments),
            state_bucket_arn=bucket.bucket_arn,
            existing_provider_arn=shared.github_oidc_provider_arn,
            image_push_statements=images.push_statements))
        TerraformOutput(self, "state_bucket", value=bucket.bucket_name)
        TerraformOutput(self, "app_repository_url", value=images.url,
                        description="Repository variable APP_IMAGE_REPOSITORY")
        TerraformOutput(self, "plan_role_arns", value=github.plan_role_arns,
                        description="Repository variables AWS_PLAN_ROLE_ARN_<ENVIRONMENT>")
        TerraformOutput(self, "deploy_role_arns", value=github.deploy_role_arns,
                        description="AWS_DEPLOY_ROLE_ARN of each GitHub environment")
