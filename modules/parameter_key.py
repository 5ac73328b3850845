"""The environment's own KMS key for SecureString parameters: its key policy names the readers.

With the AWS managed key ``aws/ssm`` any principal of the account that may call
``ssm:GetParameter`` decrypts every SecureString. Under this key a role decrypts only the
parameters its key-policy statement lists (SSM passes the parameter's ARN as the encryption
context), so the IAM policies and the key policy each stop a host reading another's secrets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.cdk import Construct, DataAwsIamPolicyDocument, KmsAlias, KmsKey

# Everything an administrator does with a key, and nothing that encrypts or decrypts: the
# account (IAM) manages the key, only the statements below use it.
KEY_ADMINISTRATION = [
    "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
    "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
    "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
]
READ = ["kms:Decrypt"]
WRITE = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]


@dataclass(frozen=True)
class ParameterKeyConfig:
    """Inputs of :class:`ParameterKey`.

    alias: the key's alias (``alias/...``), which the hosts pass to ``ssm-parameter``.
    account_id: the account whose IAM administers the key.
    region: the key's region (SSM calls KMS from there).
    readers: role ARN -> parameter ARNs (wildcards allowed) it may decrypt.
    writers: role ARN -> parameter ARNs it may encrypt and decrypt.
    deletion_window_days: how long a deleted key can still be recovered.
    """

    alias: str
    account_id: str
    region: str
    readers: dict[str, list[str]] = field(default_factory=dict)
    writers: dict[str, list[str]] = field(default_factory=dict)
    deletion_window_days: int = 30


class ParameterKey(Construct):
    """A symmetric key with yearly rotation, an alias, and a key policy naming each user."""

    def __init__(self, scope: Construct, id: str, config: ParameterKeyConfig):
        super().__init__(scope, id)
        statements = [{
            "sid": "KeyAdministration",
            "actions": KEY_ADMINISTRATION,
            "resources": ["*"],
            "principals": [{"type": "AWS",
                            "identifiers": [f"arn:aws:iam::{config.account_id}:root"]}],
        }]
        uses = [("Write", arn, parameters, WRITE) for arn, parameters in config.writers.items()]
        uses += [("Read", arn, parameters, READ) for arn, parameters in config.readers.items()]
        for number, (purpose, role_arn, parameters, actions) in enumerate(uses):
            statements.append({
                "sid": f"{purpose}Parameters{number}",
                "actions": actions,
                "resources": ["*"],
                "principals": [{"type": "AWS", "identifiers": [role_arn]}],
                "condition": [
                    {"test": "StringEquals", "variable": "kms:ViaService",
                     "values": [f"ssm.{config.region}.amazonaws.com"]},
                    {"test": "StringLike", "variable": "kms:EncryptionContext:PARAMETER_ARN",
                     "values": parameters},
                ],
            })
        policy = DataAwsIamPolicyDocument(self, "key-policy", statement=statements)
        key = KmsKey(self, "key", description=f"SecureString parameters ({config.alias})",
                     enable_key_rotation=True,
                     deletion_window_in_days=config.deletion_window_days,
                     policy=policy.json)
        KmsAlias(self, "alias", name=config.alias, target_key_id=key.key_id)
        self.key_arn = key.arn
