"""The S3 bucket through which the two load balancers share Caddy's certificates.

Only the LB hosts' role may read or write the certificates (they hold private keys): the
role's policy grants it, and the bucket policy refuses every other principal the objects.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.cdk import (Construct, DataAwsIamPolicyDocument, S3Bucket,
                      S3BucketLifecycleConfiguration, S3BucketPolicy, S3LifecycleAbortUpload,
                      S3LifecycleFilter, S3LifecycleNoncurrentExpiration, S3LifecycleRule)
from modules.private_bucket import make_private, tls_only

# S3 bucket_prefix: Terraform appends 26 characters, and names stop at 63.
MAX_BUCKET_PREFIX = 37


@dataclass(frozen=True)
class CertificateStoreConfig:
    """Inputs of :class:`CertificateStore`.

    name: the environment's resource prefix; the bucket name starts with it (shortened to fit)
        and Terraform makes it unique.
    prefix: the key prefix the LBs share, ending in ``/``.
    noncurrent_version_days: how long an overwritten certificate stays recoverable.
    """

    name: str
    prefix: str = "caddy/"
    noncurrent_version_days: int = 30


class CertificateStore(Construct):
    """Versioned, KMS-encrypted, private, TLS-only bucket; ``grant(role_arn)`` gives the LBs
    their access and refuses everyone else."""

    def __init__(self, scope: Construct, id: str, config: CertificateStoreConfig):
        super().__init__(scope, id)
        if not config.prefix.endswith("/") or config.prefix.startswith("/"):
            raise ValueError(f"prefix {config.prefix!r} must end with / and not start with /")
        self._config = config
        head = f"{config.name}-certs"[:MAX_BUCKET_PREFIX - 1].rstrip("-.")
        # Certificates can be obtained again: destroying the environment may empty it.
        bucket = S3Bucket(self, "bucket", bucket_prefix=f"{head}-", force_destroy=True)
        make_private(self, bucket.id)
        S3BucketLifecycleConfiguration(self, "lifecycle", bucket=bucket.id, rule=[
            S3LifecycleRule(
                id="expire-overwritten-certificates", status="Enabled",
                filter=[S3LifecycleFilter(prefix="")],
                noncurrent_version_expiration=[S3LifecycleNoncurrentExpiration(
                    noncurrent_days=config.noncurrent_version_days)],
                abort_incomplete_multipart_upload=[S3LifecycleAbortUpload(
                    days_after_initiation=1)])])
        self.bucket = bucket
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.prefix = config.prefix

    def statements(self) -> list[dict]:
        """The LB role's IAM statements: list, read and write the shared prefix only."""
        return [
            {"actions": ["s3:ListBucket"], "resources": [self.bucket_arn],
             "condition": [{"test": "StringLike", "variable": "s3:prefix",
                            "values": [f"{self.prefix}*"]}]},
            {"actions": ["s3:GetObject", "s3:PutObject"],
             "resources": [f"{self.bucket_arn}/{self.prefix}*"]},
        ]

    def grant(self, role_arn: str) -> None:
        """The bucket policy: TLS only, and the certificates readable by ``role_arn`` alone."""
        arn = self.bucket_arn
        policy = DataAwsIamPolicyDocument(self, "policy-document", statement=[
            tls_only(arn),
            # An administrator's s3:* does not reach the private keys; they may still delete.
            {"sid": "OnlyTheLoadBalancersReadOrWrite", "effect": "Deny",
             "actions": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
             "resources": [f"{arn}/*"],
             "principals": [{"type": "*", "identifiers": ["*"]}],
             "condition": [{"test": "ArnNotEquals", "variable": "aws:PrincipalArn",
                            "values": [role_arn]}]},
        ])
        S3BucketPolicy(self, "policy", bucket=self.bucket.id, policy=policy.json)
