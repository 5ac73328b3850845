"""KMS key policies shared by the constructs that create customer-managed keys."""
from __future__ import annotations


def account_administers_key(account_id: str) -> dict:
    """KMS's default key policy statement: the account's IAM policies decide who uses the
    key (without it, nobody could manage the key again). In a key policy, Resource "*" is
    the key itself."""
    return {"Sid": "AccountAdministersTheKey", "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"}, "Action": "kms:*",
            "Resource": "*"}
