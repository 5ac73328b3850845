"""GitHub Actions' identity in AWS: short-lived credentials through OIDC, no stored keys."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from core.cdk import (Construct, DataAwsIamOpenidConnectProvider, DataAwsIamPolicyDocument,
                      IamOpenidConnectProvider, IamRole, IamRolePolicy,
                      IamRolePolicyAttachment, Postcondition)

GITHUB_ISSUER = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"
READ_ONLY_POLICY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
POWER_USER_POLICY = "arn:aws:iam::aws:policy/PowerUserAccess"


@dataclass(frozen=True)
class GithubOidcConfig:
    """Inputs of :class:`GithubOidc`.

    repository: ``owner/name`` whose workflows may assume the roles.
    project: prefix of every environment's resource names.
    environments: one plan role and one deploy role are made for each.
    state_bucket_arn: the Terraform state bucket.
    existing_provider_arn: the account's GitHub OIDC provider when it exists already (an
        account holds one per issuer); None creates it.
    image_push_statements: IAM statements that let a deploy role push the app image; each
        deploy role gets them as a separate policy.
    """

    repository: str
    project: str
    environments: tuple[str, ...]
    state_bucket_arn: str
    existing_provider_arn: Optional[str] = None
    image_push_statements: tuple[dict, ...] = ()


class GithubOidc(Construct):
    """The OIDC provider and, per environment, a read-only plan role and a deploy role.

    The plan role is assumable from pull requests and from ``main`` (the drift check); the
    deploy role only from a job running in the GitHub environment of the same name, whose
    deployment branches are restricted to ``main`` (see the README).
    """

    def __init__(self, scope: Construct, id: str, config: GithubOidcConfig):
        super().__init__(scope, id)
        provider = self._provider(config)
        self.plan_role_arns: dict[str, str] = {}
        self.deploy_role_arns: dict[str, str] = {}
        repo = f"repo:{config.repository}"
        for environment in config.environments:
            prefix = f"{config.project}-{environment}"
            state_objects = f"{config.state_bucket_arn}/{environment}/*"
            plan = self._role(config, environment, "plan", provider.arn,
                              [f"{repo}:pull_request", f"{repo}:ref:refs/heads/main"])
            IamRolePolicyAttachment(self, f"{environment}-plan-read-only", role=plan.name,
                                    policy_arn=READ_ONLY_POLICY)
            self._policy(plan, environment, "plan", [
                # A plan takes the state lock: it writes the lock object and nothing else.
                {"actions": ["s3:PutObject", "s3:DeleteObject"],
                 "resources": [f"{state_objects}.tflock"]},
                # ReadOnlyAccess could read SecureString parameters such as the database
                # password; a plan never needs them.
                {"effect": "Deny", "actions": ["ssm:GetParameter*"],
                 "resources": [f"arn:aws:ssm:*:*:parameter/{config.project}/*"]},
            ])
            deploy = self._role(config, environment, "deploy", provider.arn,
                                [f"{repo}:environment:{environment}"])
            IamRolePolicyAttachment(self, f"{environment}-deploy-power-user", role=deploy.name,
                                    policy_arn=POWER_USER_POLICY)
            # PowerUserAccess excludes IAM; the environment creates its own host roles, flow
            # log role and instance profiles, all named with its prefix.
            own_roles = [f"arn:aws:iam::*:role/{prefix}-*",
                         f"arn:aws:iam::*:instance-profile/{prefix}-*"]
            self._policy(deploy, environment, "deploy", [
                {"actions": ["iam:CreateRole", "iam:DeleteRole", "iam:GetRole",
                             "iam:UpdateRole", "iam:TagRole", "iam:UntagRole",
                             "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy",
                             "iam:GetRolePolicy", "iam:DeleteRolePolicy",
                             "iam:AttachRolePolicy", "iam:DetachRolePolicy",
                             "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
                             "iam:ListInstanceProfilesForRole", "iam:PassRole",
                             "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile",
                             "iam:GetInstanceProfile", "iam:TagInstanceProfile",
                             "iam:UntagInstanceProfile",
                             "iam:AddRoleToInstanceProfile",
                             "iam:RemoveRoleFromInstanceProfile"],
                 "resources": own_roles},
                {"actions": ["s3:PutObject", "s3:DeleteObject"],
                 "resources": [state_objects]},
            ])
            if config.image_push_statements:
                # Its own policy: pushing the app image stays the pipeline's, whatever else
                # the deploy role may do.
                self._policy(deploy, environment, "push-app-image",
                             list(config.image_push_statements))
            self.plan_role_arns[environment] = plan.arn
            self.deploy_role_arns[environment] = deploy.arn

    def _provider(self, config: GithubOidcConfig):
        if config.existing_provider_arn is None:
            return IamOpenidConnectProvider(self, "provider", url=f"https://{GITHUB_ISSUER}",
                                            client_id_list=[STS_AUDIENCE])
        # Read, not managed: its other users keep it. The plan stops here, with the reason,
        # if it is not GitHub's or does not admit STS as an audience.
        return DataAwsIamOpenidConnectProvider(
            self, "provider", arn=config.existing_provider_arn,
            lifecycle={"postcondition": [Postcondition(
                condition=f'${{contains(self.client_id_list, "{STS_AUDIENCE}") && '
                          f'endswith(self.url, "{GITHUB_ISSUER}")}}',
                error_message=f"github_oidc_provider_arn must name GitHub's OIDC provider "
                              f"({GITHUB_ISSUER}) with {STS_AUDIENCE} among its audiences")]})

    def _role(self, config: GithubOidcConfig, environment: str, purpose: str,
              provider_arn: str, subjects: list[str]) -> IamRole:
        trust = DataAwsIamPolicyDocument(self, f"{environment}-{purpose}-trust", statement=[{
            "actions": ["sts:AssumeRoleWithWebIdentity"],
            "principals": [{"type": "Federated", "identifiers": [provider_arn]}],
            "condition": [
                {"test": "StringEquals", "variable": f"{GITHUB_ISSUER}:aud",
                 "values": [STS_AUDIENCE]},
                {"test": "StringEquals", "variable": f"{GITHUB_ISSUER}:sub",
                 "values": subjects},
            ],
        }])
        # Named outside the environment's prefix, which the deploy role may manage: a deploy
        # role must never be able to rewrite its own trust policy.
        return IamRole(self, f"{environment}-{purpose}",
                       name=f"github-{config.project}-{environment}-{purpose}",
                       assume_role_policy=trust.json, max_session_duration=3600)

    def _policy(self, role: IamRole, environment: str, purpose: str,
                statements: list[dict]) -> None:
        document = DataAwsIamPolicyDocument(self, f"{environment}-{purpose}-permissions",
                                            statement=statements)
        IamRolePolicy(self, f"{environment}-{purpose}-policy", role=role.id,
                      name=f"{purpose}-permissions", policy=document.json)
