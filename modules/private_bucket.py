"""What every bucket of the project has: versioned, encrypted, private, owner-enforced, TLS only.

One way to make a bucket private, used by the state bucket, the backup copy and the LBs'
certificate store. The constructs are made in the caller's scope under fixed ids, so their
Terraform addresses stay those of the bucket's own module.
"""
from __future__ import annotations

from typing import Optional

from core.cdk import (Construct, S3BucketOwnershipControls, S3BucketPublicAccessBlock,
                      S3BucketServerSideEncryptionConfigurationA, S3BucketVersioningA,
                      S3EncryptionByDefault, S3EncryptionRule)


def make_private(scope: Construct, bucket_id: str, *, kms_key_arn: Optional[str] = None,
                 bucket_key: bool = True) -> None:
    """Version, encrypt (SSE-KMS; ``kms_key_arn`` None: the account's aws/s3 key), block
    every public access and enforce the bucket owner on the bucket ``bucket_id``.

    bucket_key: S3 Bucket Keys cut KMS calls; off where KMS must see each object's ARN.
    """
    S3BucketVersioningA(scope, "versioning", bucket=bucket_id,
                        versioning_configuration={"status": "Enabled"})
    S3BucketServerSideEncryptionConfigurationA(
        scope, "encryption", bucket=bucket_id,
        rule=[S3EncryptionRule(
            apply_server_side_encryption_by_default=S3EncryptionByDefault(
                sse_algorithm="aws:kms", kms_master_key_id=kms_key_arn),
            bucket_key_enabled=bucket_key)])
    S3BucketPublicAccessBlock(scope, "public-access-block", bucket=bucket_id,
                              block_public_acls=True, block_public_policy=True,
                              ignore_public_acls=True, restrict_public_buckets=True)
    S3BucketOwnershipControls(scope, "ownership", bucket=bucket_id,
                              rule={"object_ownership": "BucketOwnerEnforced"})


def tls_only(bucket_arn: str) -> dict:
    """The bucket policy statement that refuses every request not made over TLS."""
    return {"sid": "DenyInsecureTransport", "effect": "Deny", "actions": ["s3:*"],
            "resources": [bucket_arn, f"{bucket_arn}/*"],
            "principals": [{"type": "*", "identifiers": ["*"]}],
            "condition": [{"test": "Bool", "variable": "aws:SecureTransport",
                           "values": ["false"]}]}
