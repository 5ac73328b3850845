"""The environment's own KMS key for SecureString parameters: its key policy names the readers.

With the AWS managed key ``aws/ssm`` any principal of the account that may call
``ssm:GetParameter`` decrypts every SecureString. Under this key a role decrypts only the
parameters its key-policy statement lists (SSM passes the parameter's ARN as the encryption
context), so the IAM policies and the key policy each stop a host reading another's secrets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import json

from core.cdk import Construct, KmsAlias, KmsKey

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


def key_policy(root_account_id: str, statements: list[dict]) -> str:
    """A key policy's JSON: administration by the account's IAM, then ``statements``.

    Written as JSON, not through aws_iam_policy_document: scanners read every such document as
    an identity policy, where ``Resource: *`` means every resource; in a key policy it means
    this key.
    """
    administration = {
        "Sid": "KeyAdministration", "Effect": "Allow", "Action": KEY_ADMINISTRATION,
        "Resource": "*", "Principal": {"AWS": f"arn:aws:iam::{root_account_id}:root"}}
    return json.dumps({"Version": "2012-10-17", "Statement": [administration, *statements]})


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
        uses = [("Write", arn, parameters, WRITE) for arn, parameters in config.writers.items()]
        uses += [("Read", arn, parameters, READ) for arn, parameters in config.readers.items()]
        statements = [{
            "Sid": f"{purpose}Parameters{number}", "Effect": "Allow", "Action": actions,
            "Resource": "*", "Principal": {"AWS": role_arn},
            "Condition": {
                "StringEquals": {"kms:ViaService": f"ssm.{config.region}.amazonaws.com"},
                "StringLike": {"kms:EncryptionContext:PARAMETER_ARN": parameters}},
        } for number, (purpose, role_arn, parameters, actions) in enumerate(uses)]
        key = KmsKey(self, "key", description=f"SecureString parameters ({config.alias})",
                     enable_key_rotation=True,
                     deletion_window_in_days=config.deletion_window_days,
                     policy=key_policy(config.account_id, statements))
        KmsAlias(self, "alias", name=config.alias, target_key_id=key.key_id)
        self.key_arn = key.arn
