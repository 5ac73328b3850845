"""The S3 bucket that holds every environment's Terraform state."""
from __future__ import annotations

from dataclasses import dataclass

from core.cdk import (Construct, DataAwsIamPolicyDocument, S3Bucket,
                      S3BucketLifecycleConfiguration, S3BucketOwnershipControls, S3BucketPolicy,
                      S3BucketPublicAccessBlock, S3BucketServerSideEncryptionConfigurationA,
                      S3BucketVersioningA, S3EncryptionByDefault, S3EncryptionRule,
                      S3LifecycleAbortUpload, S3LifecycleFilter, S3LifecycleNoncurrentExpiration,
                      S3LifecycleRule)


@dataclass(frozen=True)
class StateBucketConfig:
    """Inputs of :class:`StateBucket`.

    noncurrent_version_days: how long old state versions are kept (the undo history).
    """

    bucket: str
    noncurrent_version_days: int = 90


class StateBucket(Construct):
    """Versioned, encrypted, private, TLS-only bucket; never destroyed by Terraform."""

    def __init__(self, scope: Construct, id: str, config: StateBucketConfig):
        super().__init__(scope, id)
        bucket = S3Bucket(self, "bucket", bucket=config.bucket,
                          lifecycle={"prevent_destroy": True})
        S3BucketVersioningA(self, "versioning", bucket=bucket.id,
                            versioning_configuration={"status": "Enabled"})
        S3BucketServerSideEncryptionConfigurationA(
            self, "encryption", bucket=bucket.id,
            rule=[S3EncryptionRule(
                apply_server_side_encryption_by_default=S3EncryptionByDefault(
                    sse_algorithm="aws:kms"),
                bucket_key_enabled=True)])
        S3BucketPublicAccessBlock(self, "public-access-block", bucket=bucket.id,
                                  block_public_acls=True, block_public_policy=True,
                                  ignore_public_acls=True, restrict_public_buckets=True)
        S3BucketOwnershipControls(self, "ownership", bucket=bucket.id,
                                  rule={"object_ownership": "BucketOwnerEnforced"})
        S3BucketLifecycleConfiguration(self, "lifecycle", bucket=bucket.id, rule=[
            S3LifecycleRule(
                id="expire-old-state-versions", status="Enabled",
                filter=[S3LifecycleFilter(prefix="")],
                noncurrent_version_expiration=[S3LifecycleNoncurrentExpiration(
                    noncurrent_days=config.noncurrent_version_days)],
                abort_incomplete_multipart_upload=[S3LifecycleAbortUpload(
                    days_after_initiation=7)])])
        tls_only = DataAwsIamPolicyDocument(self, "tls-only", statement=[{
            "sid": "DenyInsecureTransport",
            "effect": "Deny",
            "actions": ["s3:*"],
            "resources": [bucket.arn, f"{bucket.arn}/*"],
            "principals": [{"type": "*", "identifiers": ["*"]}],
            "condition": [{"test": "Bool", "variable": "aws:SecureTransport",
                           "values": ["false"]}],
        }])
        S3BucketPolicy(self, "policy", bucket=bucket.id, policy=tls_only.json)
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
