"""The S3 bucket that holds every environment's Terraform state."""
from __future__ import annotations

from dataclasses import dataclass

from core.cdk import (Construct, DataAwsIamPolicyDocument, KmsAlias, KmsKey, S3Bucket,
                      S3BucketLifecycleConfiguration, S3BucketPolicy, S3LifecycleAbortUpload,
                      S3LifecycleFilter, S3LifecycleNoncurrentExpiration, S3LifecycleRule)
from modules.parameter_key import key_policy
from modules.private_bucket import make_private, tls_only


def state_key_alias(project: str) -> str:
    """The alias of the state's KMS key: the S3 backend of every environment names it."""
    return f"alias/{project}-terraform-state"


@dataclass(frozen=True)
class StateBucketConfig:
    """Inputs of :class:`StateBucket`.

    bucket: the bucket's name.
    account_id: the account whose IAM administers and uses the state's KMS key.
    region: the bucket's region (S3 calls KMS from there).
    key_alias: the alias of that key, which every S3 backend names (``kms_key_id``).
    noncurrent_version_days: how long old state versions are kept (the undo history).
    """

    bucket: str
    account_id: str
    region: str
    key_alias: str
    noncurrent_version_days: int = 90


class StateBucket(Construct):
    """Versioned, private, TLS-only bucket encrypted with its own KMS key; never destroyed by
    Terraform."""

    def __init__(self, scope: Construct, id: str, config: StateBucketConfig):
        super().__init__(scope, id)
        # The account's IAM decides who uses the key, and only through S3: each pipeline role
        # is allowed its own environment's objects (github_oidc.py).
        use_through_s3 = {
            "Sid": "UseThroughS3", "Effect": "Allow", "Resource": "*",
            "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
            "Principal": {"AWS": f"arn:aws:iam::{config.account_id}:root"},
            "Condition": {"StringEquals": {
                "kms:ViaService": f"s3.{config.region}.amazonaws.com"}}}
        key = KmsKey(self, "key", description=f"Terraform state in {config.bucket}",
                     enable_key_rotation=True, deletion_window_in_days=30,
                     policy=key_policy(config.account_id, [use_through_s3]),
                     lifecycle={"prevent_destroy": True})
        KmsAlias(self, "key-alias", name=config.key_alias, target_key_id=key.key_id)
        bucket = S3Bucket(self, "bucket", bucket=config.bucket,
                          lifecycle={"prevent_destroy": True})
        # No bucket key: KMS then sees each object's ARN, which the roles' policies scope to
        # their environment's prefix.
        make_private(self, bucket.id, kms_key_arn=key.arn, bucket_key=False)
        S3BucketLifecycleConfiguration(self, "lifecycle", bucket=bucket.id, rule=[
            S3LifecycleRule(
                id="expire-old-state-versions", status="Enabled",
                filter=[S3LifecycleFilter(prefix="")],
                noncurrent_version_expiration=[S3LifecycleNoncurrentExpiration(
                    noncurrent_days=config.noncurrent_version_days)],
                abort_incomplete_multipart_upload=[S3LifecycleAbortUpload(
                    days_after_initiation=7)])])
        policy = DataAwsIamPolicyDocument(self, "tls-only", statement=[tls_only(bucket.arn)])
        S3BucketPolicy(self, "policy", bucket=bucket.id, policy=policy.json)
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.key_arn = key.arn
