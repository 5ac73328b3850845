"""The IAM identity of one kind of host: reachable through SSM, nothing else by default."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.cdk import (Construct, DataAwsIamPolicyDocument, IamInstanceProfile, IamRole,
                      IamRolePolicy, IamRolePolicyAttachment)

SSM_MANAGED_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"


@dataclass(frozen=True)
class HostRoleConfig:
    """Inputs of :class:`HostRole`.

    name: the IAM role and instance profile name.
    statements: extra IAM policy statements (``actions``, ``resources``) for this role only.
    """

    name: str
    statements: list[dict] = field(default_factory=list)


class HostRole(Construct):
    """IAM role + instance profile with the SSM managed policy: shell access without SSH."""

    def __init__(self, scope: Construct, id: str, config: HostRoleConfig):
        super().__init__(scope, id)
        trust = DataAwsIamPolicyDocument(self, "trust", statement=[{
            "actions": ["sts:AssumeRole"],
            "principals": [{"type": "Service", "identifiers": ["ec2.amazonaws.com"]}],
        }])
        role = IamRole(self, "role", name=config.name, assume_role_policy=trust.json)
        IamRolePolicyAttachment(self, "ssm", role=role.name, policy_arn=SSM_MANAGED_POLICY)
        if config.statements:
            permissions = DataAwsIamPolicyDocument(self, "permissions",
                                                   statement=config.statements)
            IamRolePolicy(self, "policy", role=role.id, name=f"{config.name}-permissions",
                          policy=permissions.json)
        profile = IamInstanceProfile(self, "profile", name=config.name, role=role.name)
        self.instance_profile_name = profile.name
        self.role_arn = role.arn
