"""The project's Amazon ECR repository: the pipeline pushes the app image, hosts pull it."""
from __future__ import annotations

import json
from dataclasses import dataclass

from core.cdk import Construct, EcrEncryption, EcrLifecyclePolicy, EcrRepository, IamStatement

# What a pusher needs beyond ecr:GetAuthorizationToken (which has no resource-level scope);
# BatchGetImage and DescribeImages also let the pipeline check that a tag exists.
PUSH_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
                "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
                "ecr:BatchGetImage", "ecr:DescribeImages"]
PULL_ACTIONS = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
LOGIN_ACTION = "ecr:GetAuthorizationToken"
# Reading the repository's own settings, for the plan.
READ_ACTIONS = ["ecr:DescribeRepositories", "ecr:ListImages", "ecr:ListTagsForResource",
                "ecr:GetLifecyclePolicy", "ecr:GetRepositoryPolicy",
                "ecr:DescribeImageScanFindings"]
# Settings of the whole registry that would copy every image elsewhere or let images in
# from elsewhere.
REGISTRY_CHANGES = ["ecr:PutReplicationConfiguration", "ecr:PutRegistryPolicy",
                    "ecr:DeleteRegistryPolicy", "ecr:PutRegistryScanningConfiguration",
                    "ecr:CreatePullThroughCacheRule", "ecr:UpdatePullThroughCacheRule",
                    "ecr:DeletePullThroughCacheRule", "ecr:CreateRepositoryCreationTemplate",
                    "ecr:UpdateRepositoryCreationTemplate", "ecr:PutAccountSetting"]


@dataclass(frozen=True)
class ContainerRepositoryConfig:
    """Inputs of :class:`ContainerRepository`.

    name: the repository name, e.g. ``webapp/app``.
    images_kept: how many tagged images are kept; older ones expire (each is a commit of
        main the pipeline built, so this is also how far back a rollback can go).
    """

    name: str
    images_kept: int = 100


class ContainerRepository(Construct):
    """Immutable tags, scanned on push, encrypted with KMS, old images expired; kept on
    ``terraform destroy`` (the images running in every environment live here)."""

    def __init__(self, scope: Construct, id: str, config: ContainerRepositoryConfig):
        super().__init__(scope, id)
        repository = EcrRepository(
            self, "repository", name=config.name,
            # A tag is a commit: it can never be pushed again with other content.
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            # The account's AWS managed key for ECR: pullers need no KMS permission.
            encryption_configuration=[EcrEncryption(encryption_type="KMS")],
            force_delete=False, lifecycle={"prevent_destroy": True})
        EcrLifecyclePolicy(self, "lifecycle", repository=repository.name, policy=json.dumps({
            "rules": [{
                "rulePriority": 1,
                "description": f"Keep the newest {config.images_kept} tagged images",
                # Tagged images only: an image's attestations (SBOM, provenance) are untagged
                # manifests that belong to it, and must not expire on their own.
                "selection": {"tagStatus": "tagged", "tagPatternList": ["*"],
                              "countType": "imageCountMoreThan",
                              "countNumber": config.images_kept},
                "action": {"type": "expire"},
            }]}, indent=None, sort_keys=True))
        self.arn = repository.arn
        self.url = repository.repository_url
        # The login token has no resource-level scope; everything else is this repository's.
        # The denies hold whatever else a pusher is allowed (a deploy role has
        # PowerUserAccess): every environment runs these images, so no environment's role may
        # make a tag mutable, delete an image, expire or share them, or replicate the registry.
        self.push_statements = (
            {"actions": [LOGIN_ACTION], "resources": ["*"]},
            {"actions": PUSH_ACTIONS, "resources": [repository.arn]},
            IamStatement(sid="ImagesOnlyPushed", effect="Deny",
                         not_actions=sorted({*PUSH_ACTIONS, *PULL_ACTIONS, *READ_ACTIONS}),
                         resources=[repository.arn]),
            {"sid": "RegistryUnchanged", "effect": "Deny", "actions": REGISTRY_CHANGES,
             "resources": ["*"]})


def pull_statements(repository_arn: str) -> list[dict]:
    """IAM statements that let a host pull from the repository, and nothing more."""
    return [{"actions": [LOGIN_ACTION], "resources": ["*"]},
            {"actions": PULL_ACTIONS, "resources": [repository_arn]}]
