"""GitHub Actions' identity in AWS: short-lived credentials through OIDC, no stored keys."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from core.cdk import (Construct, DataAwsIamOpenidConnectProvider, DataAwsIamPolicyDocument,
                      IamOpenidConnectProvider, IamPolicy, IamRole, IamRolePolicy,
                      IamRolePolicyAttachment, IamStatement, Postcondition)
from modules.permissions_boundary import bucket_stem

GITHUB_ISSUER = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"
POWER_USER_POLICY = "arn:aws:iam::aws:policy/PowerUserAccess"
SSM_MANAGED_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
# The only AWS managed policies a deploy role may attach to the roles it manages.
ATTACHABLE_POLICIES = (SSM_MANAGED_POLICY,)
# The services whose roles the environments create (hosts, VPC flow logs).
ROLE_SERVICES = ("ec2.amazonaws.com", "vpc-flow-logs.amazonaws.com")

# What planning an environment stack reads: its resources' descriptions and tags, never data.
# Resource -> actions; "*" for the actions IAM cannot scope to a resource. A new kind of
# resource in the environment stacks adds its read actions here.
PLAN_READS = {
    "*": ["ec2:DescribeAccountAttributes", "ec2:DescribeAddresses",
          "ec2:DescribeAddressesAttribute", "ec2:DescribeAvailabilityZones",
          "ec2:DescribeFlowLogs", "ec2:DescribeImages",
          "ec2:DescribeInstanceCreditSpecifications", "ec2:DescribeInstanceStatus",
          "ec2:DescribeInstanceTypes", "ec2:DescribeInstances",
          "ec2:DescribeInternetGateways", "ec2:DescribeNatGateways",
          "ec2:DescribeNetworkAcls", "ec2:DescribeNetworkInterfaces",
          "ec2:DescribePrefixLists", "ec2:DescribeRegions", "ec2:DescribeRouteTables",
          "ec2:DescribeSecurityGroupRules", "ec2:DescribeSecurityGroups",
          "ec2:DescribeSubnets", "ec2:DescribeTags", "ec2:DescribeVolumes",
          "ec2:DescribeVpcEndpoints", "ec2:DescribeVpcs", "ec2:GetEbsEncryptionByDefault",
          "logs:DescribeLogGroups", "kms:ListAliases", "elasticloadbalancing:Describe*",
          "sns:GetSubscriptionAttributes"],
    "arn:aws:ec2:*:*:instance/*": ["ec2:DescribeInstanceAttribute"],
    "arn:aws:ec2:*:*:vpc/*": ["ec2:DescribeVpcAttribute"],
    "arn:aws:logs:*:*:log-group:*": ["logs:ListTagsLogGroup", "logs:ListTagsForResource"],
    "arn:aws:kms:*:*:key/*": ["kms:DescribeKey", "kms:GetKeyPolicy",
                              "kms:GetKeyRotationStatus", "kms:ListResourceTags"],
    # DescribeImages: the data source's most_recent_image_tags (tags and digests only).
    "arn:aws:ecr:*:*:repository/*": ["ecr:DescribeRepositories", "ecr:ListTagsForResource",
                                     "ecr:DescribeImages"],
    "arn:aws:cloudwatch:*:*:alarm:*": ["cloudwatch:DescribeAlarms",
                                       "cloudwatch:ListTagsForResource"],
    "arn:aws:sns:*:*:*": ["sns:GetTopicAttributes", "sns:ListTagsForResource"],
}
# What refreshing an aws_s3_bucket and its settings' resources reads, on the environment's
# buckets only: HeadBucket is authorized as s3:ListBucket. Settings, never objects.
BUCKET_READS = ["s3:ListBucket", "s3:GetBucketAcl", "s3:GetBucketCORS", "s3:GetBucketLocation",
                "s3:GetBucketLogging", "s3:GetBucketObjectLockConfiguration",
                "s3:GetBucketOwnershipControls", "s3:GetBucketPolicy",
                "s3:GetBucketPublicAccessBlock", "s3:GetBucketRequestPayment",
                "s3:GetBucketTagging", "s3:GetBucketVersioning", "s3:GetBucketWebsite",
                "s3:GetAccelerateConfiguration", "s3:GetEncryptionConfiguration",
                "s3:GetLifecycleConfiguration", "s3:GetReplicationConfiguration"]
ROLE_READS = ["iam:GetRole", "iam:GetRolePolicy", "iam:ListRolePolicies",
              "iam:ListAttachedRolePolicies", "iam:GetInstanceProfile",
              "iam:ListInstanceProfilesForRole"]
# Changing a role's permissions: allowed only while the role keeps the environment's boundary.
ROLE_PERMISSION_CHANGES = ["iam:CreateRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy",
                           "iam:DetachRolePolicy", "iam:PutRolePermissionsBoundary"]
ROLE_UPKEEP = ["iam:DeleteRole", "iam:UpdateRole", "iam:TagRole", "iam:UntagRole",
               "iam:UpdateAssumeRolePolicy", "iam:CreateInstanceProfile",
               "iam:DeleteInstanceProfile", "iam:TagInstanceProfile",
               "iam:UntagInstanceProfile", "iam:AddRoleToInstanceProfile",
               "iam:RemoveRoleFromInstanceProfile"]
POLICY_CHANGES = ["iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion",
                  "iam:SetDefaultPolicyVersion", "iam:TagPolicy", "iam:UntagPolicy"]


@dataclass(frozen=True)
class EnvironmentAccess:
    """What one environment's roles are given.

    boundary_arn: the permissions boundary every role the deploy role manages must carry.
    guardrails: deny statements shared with the boundary (``permissions_boundary.py``).
    secret_parameter_arns: the environment's secrets, which neither of its roles may read.
    plan_parameter_arns: plain parameters the plan role reads (the LBs out for maintenance,
        which the drift check names).
    """

    boundary_arn: str
    guardrails: tuple[Union[dict, IamStatement], ...]
    secret_parameter_arns: tuple[str, ...] = ()
    plan_parameter_arns: tuple[str, ...] = ()


@dataclass(frozen=True)
class GithubOidcConfig:
    """Inputs of :class:`GithubOidc`.

    repository: ``owner/name`` whose workflows may assume the roles.
    project: prefix of every environment's resource names.
    environments: one plan role and one deploy role are made for each, with its access.
    state_bucket_arn: the Terraform state bucket.
    state_key_arn: the KMS key that encrypts the state.
    existing_provider_arn: the account's GitHub OIDC provider when it exists already (an
        account holds one per issuer); None creates it.
    image_push_statements: IAM statements that let a deploy role push the app image; each
        deploy role gets them as a separate policy.
    """

    repository: str
    project: str
    environments: dict[str, EnvironmentAccess]
    state_bucket_arn: str
    state_key_arn: str
    existing_provider_arn: Optional[str] = None
    image_push_statements: tuple[Union[dict, IamStatement], ...] = ()


class GithubOidc(Construct):
    """The OIDC provider and, per environment, a read-only plan role and a deploy role.

    The plan role is assumable from pull requests and from ``main`` (the drift check); the
    deploy role only from a job running in the GitHub environment of the same name, whose
    deployment branches are restricted to ``main`` (see the README). docs/pipeline.md says
    what each may and may not do.
    """

    def __init__(self, scope: Construct, id: str, config: GithubOidcConfig):
        super().__init__(scope, id)
        provider = self._provider(config)
        self.plan_role_arns: dict[str, str] = {}
        self.deploy_role_arns: dict[str, str] = {}
        repo = f"repo:{config.repository}"
        for environment, access in config.environments.items():
            plan = self._role(config, environment, "plan", provider.arn,
                              [f"{repo}:pull_request", f"{repo}:ref:refs/heads/main"])
            self._policy(plan, environment, "plan",
                         _plan_statements(config, environment, access))
            deploy = self._role(config, environment, "deploy", provider.arn,
                                [f"{repo}:environment:{environment}"])
            # Everything but IAM; the statements below add the IAM it needs and take away
            # what would reach beyond its environment or past the boundary.
            IamRolePolicyAttachment(self, f"{environment}-deploy-power-user", role=deploy.name,
                                    policy_arn=POWER_USER_POLICY)
            self._policy(deploy, environment, "deploy",
                         _deploy_statements(config, environment, access))
            # A managed policy of their own: IAM caps a role's inline policies at 10,240
            # characters together, and the guardrails grow with every environment. No deploy
            # role may change any IAM policy.
            guardrails = IamPolicy(
                self, f"{environment}-deploy-guardrails",
                name=f"github-{config.project}-{environment}-deploy-guardrails",
                description=f"What {environment}'s deploy role may never do",
                policy=DataAwsIamPolicyDocument(
                    self, f"{environment}-deploy-guardrails-document",
                    statement=list(access.guardrails)).json)
            IamRolePolicyAttachment(self, f"{environment}-deploy-guardrails-attachment",
                                    role=deploy.name, policy_arn=guardrails.arn)
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


def _state_statements(config: GithubOidcConfig, environment: str) -> list[dict]:
    """Reading the environment's state and taking its lock: both roles."""
    objects = f"{config.state_bucket_arn}/{environment}/*"
    return [
        {"sid": "ListState", "actions": ["s3:ListBucket"],
         "resources": [config.state_bucket_arn],
         "condition": [{"test": "StringLike", "variable": "s3:prefix",
                        "values": [f"{environment}/*"]}]},
        {"sid": "ReadState", "actions": ["s3:GetObject"], "resources": [objects]},
        # SSE-KMS: S3 asks KMS on the role's behalf, for this environment's objects only.
        {"sid": "StateKey", "actions": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
         "resources": [config.state_key_arn],
         "condition": [{"test": "StringLike", "variable": "kms:EncryptionContext:aws:s3:arn",
                        "values": [objects]}]},
    ]


def _plan_statements(config: GithubOidcConfig, environment: str,
                     access: EnvironmentAccess) -> list[dict]:
    prefix = f"{config.project}-{environment}"
    statements = [
        *({"sid": f"Describe{number}", "actions": actions, "resources": [resource]}
          for number, (resource, actions) in enumerate(PLAN_READS.items())),
        {"sid": "ReadBucketSettings", "actions": BUCKET_READS,
         "resources": [f"arn:aws:s3:::{bucket_stem(config.project, environment)}*"]},
        {"sid": "ReadRoles", "actions": ROLE_READS,
         "resources": [f"arn:aws:iam::*:role/{prefix}-*",
                       f"arn:aws:iam::*:instance-profile/{prefix}-*"]},
        # No lock: a pull request controls the workflow that assumes this role, and could
        # hold or break the lock an apply takes. Plans run with -lock=false.
        *_state_statements(config, environment),
    ]
    if access.plan_parameter_arns:
        statements.append({"sid": "ReadPlainParameters", "actions": ["ssm:GetParameter"],
                           "resources": list(access.plan_parameter_arns)})
    return statements


def _deploy_statements(config: GithubOidcConfig, environment: str,
                       access: EnvironmentAccess) -> list[dict]:
    prefix = f"{config.project}-{environment}"
    roles = [f"arn:aws:iam::*:role/{prefix}-*"]
    own = [*roles, f"arn:aws:iam::*:instance-profile/{prefix}-*"]
    keeps_boundary = {"test": "ArnEquals", "variable": "iam:PermissionsBoundary",
                      "values": [access.boundary_arn]}
    statements = [
        {"sid": "RolesWithTheBoundary", "actions": ROLE_PERMISSION_CHANGES,
         "resources": roles, "condition": [keeps_boundary]},
        {"sid": "AttachOnlyListedPolicies", "actions": ["iam:AttachRolePolicy"],
         "resources": roles,
         "condition": [keeps_boundary,
                       {"test": "ArnLike", "variable": "iam:PolicyARN",
                        "values": list(ATTACHABLE_POLICIES)}]},
        {"sid": "RoleUpkeep", "actions": ROLE_UPKEEP + ROLE_READS, "resources": own},
        {"sid": "PassRolesToHostsAndFlowLogs", "actions": ["iam:PassRole"], "resources": roles,
         "condition": [{"test": "StringEquals", "variable": "iam:PassedToService",
                        "values": list(ROLE_SERVICES)}]},
        *_state_statements(config, environment),
        {"sid": "WriteState", "actions": ["s3:PutObject", "s3:DeleteObject"],
         "resources": [f"{config.state_bucket_arn}/{environment}/*"]},
        {"sid": "BoundaryStays", "effect": "Deny",
         "actions": ["iam:DeleteRolePermissionsBoundary"], "resources": ["*"]},
        {"sid": "BoundaryIsOurs", "effect": "Deny",
         "actions": ["iam:PutRolePermissionsBoundary"], "resources": ["*"],
         "condition": [{"test": "ArnNotEquals", "variable": "iam:PermissionsBoundary",
                        "values": [access.boundary_arn]}]},
        {"sid": "BoundaryUnchanged", "effect": "Deny", "actions": POLICY_CHANGES,
         "resources": [access.boundary_arn]},
        # It may rewrite the trust of its environment's roles (RoleUpkeep); assuming one
        # would give it what the hosts read, their secrets included. It needs no other role.
        {"sid": "AssumesNoRole", "effect": "Deny", "actions": ["sts:AssumeRole"],
         "resources": ["*"]},
    ]
    if access.secret_parameter_arns:
        # Applying never needs a secret's value; the hosts create and read them.
        statements.append({"sid": "SecretsNever", "effect": "Deny",
                           "actions": ["ssm:GetParameter*"],
                           "resources": list(access.secret_parameter_arns)})
    return statements
