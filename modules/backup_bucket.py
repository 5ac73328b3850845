"""The S3 bucket of DB-01's second pgBackRest repository: the copy that outlives NFS-01."""
from __future__ import annotations

import json
from dataclasses import dataclass

from core.cdk import (Construct, DataAwsCallerIdentity, DataAwsIamPolicyDocument, KmsAlias, KmsKey,
                      S3Bucket, S3BucketLifecycleConfiguration, S3BucketPolicy,
                      S3LifecycleAbortUpload, S3LifecycleExpiration, S3LifecycleFilter,
                      S3LifecycleNoncurrentExpiration, S3LifecycleRule)
from modules.key_policy import account_administers_key
from modules.private_bucket import make_private, tls_only

# What a writer does to a repository's objects; everyone but the writer is denied these.
# The database's pages and WAL: only DB-01 (a restore runs there) reads them.
READ_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes"]
WRITE_ACTIONS = ["s3:PutObject", "s3:DeleteObject", "s3:PutObjectAcl",
                 "s3:PutObjectVersionAcl", "s3:PutObjectRetention", "s3:PutObjectLegalHold",
                 "s3:RestoreObject"]


@dataclass(frozen=True)
class BackupBucketConfig:
    """Inputs of :class:`BackupBucket`.

    bucket: the bucket's name (``Settings.backup_bucket``).
    noncurrent_version_days: how long an object pgBackRest deleted or replaced stays
        recoverable as a noncurrent version (the backup retention: an undo window against a
        mistaken or malicious delete).
    protect: refuse ``terraform destroy`` of the bucket and its key.
    """

    bucket: str
    noncurrent_version_days: int = 14
    protect: bool = True


class BackupBucket(Construct):
    """Versioned, KMS-encrypted (its own key), private, TLS-only; written by one role only.

    Current objects are expired by pgBackRest's own retention, never by a lifecycle rule:
    ``archive.info`` is written once per stanza and a rule on age would delete it, and with
    DB-01 gone the last backups must stay, however old. Noncurrent versions (what pgBackRest
    deleted) expire after ``noncurrent_version_days``. :meth:`restrict_to` names the
    only writer.
    """

    def __init__(self, scope: Construct, id: str, config: BackupBucketConfig):
        super().__init__(scope, id)
        self._config = config
        # KMS's default key policy, written out: the account's IAM policies decide, and
        # DB-01's role is granted this key alone.
        account = DataAwsCallerIdentity(self, "account")
        key = KmsKey(self, "key", description=f"Encrypts the backups in {config.bucket}",
                     enable_key_rotation=True, deletion_window_in_days=30,
                     policy=json.dumps({"Version": "2012-10-17", "Statement": [
                         account_administers_key(account.account_id)]}),
                     lifecycle={"prevent_destroy": config.protect})
        KmsAlias(self, "alias", name=f"alias/{config.bucket}", target_key_id=key.key_id)
        bucket = S3Bucket(self, "bucket", bucket=config.bucket,
                          lifecycle={"prevent_destroy": config.protect})
        make_private(self, bucket.id, kms_key_arn=key.arn)
        S3BucketLifecycleConfiguration(self, "lifecycle", bucket=bucket.id, rule=[
            S3LifecycleRule(
                id="expire-deleted-backups", status="Enabled",
                filter=[S3LifecycleFilter(prefix="")],
                noncurrent_version_expiration=[S3LifecycleNoncurrentExpiration(
                    noncurrent_days=config.noncurrent_version_days)],
                expiration=[S3LifecycleExpiration(expired_object_delete_marker=True)],
                abort_incomplete_multipart_upload=[S3LifecycleAbortUpload(
                    days_after_initiation=7)])])
        self._bucket = bucket
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.key_arn = key.arn

    def writer_statements(self) -> list[dict]:
        """IAM statements for the repository's writer: this bucket and this key, nothing else.

        No ``s3:DeleteObjectVersion``: the writer's deletes leave noncurrent versions behind.
        """
        return [
            {"actions": ["s3:ListBucket", "s3:GetBucketLocation"],
             "resources": [self.bucket_arn]},
            {"actions": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "resources": [f"{self.bucket_arn}/*"]},
            {"actions": ["kms:Decrypt", "kms:GenerateDataKey"], "resources": [self.key_arn]},
        ]

    def restrict_to(self, writer_role_arn: str) -> None:
        """The bucket policy: TLS only, and every principal but ``writer_role_arn`` denied
        every read and write of the backups, whatever its own IAM policies allow (a deploy
        role's PowerUserAccess reads any object of the account otherwise)."""
        arn = self.bucket_arn
        policy = DataAwsIamPolicyDocument(self, "bucket-policy", statement=[
            tls_only(arn),
            {"sid": "OnlyTheDatabaseHostWrites", "effect": "Deny", "actions": WRITE_ACTIONS,
             "resources": [f"{arn}/*"],
             "principals": [{"type": "*", "identifiers": ["*"]}],
             "condition": [{"test": "ArnNotEquals", "variable": "aws:PrincipalArn",
                            "values": [writer_role_arn]}]},
            {"sid": "OnlyTheDatabaseHostReads", "effect": "Deny", "actions": READ_ACTIONS,
             "resources": [f"{arn}/*"],
             "principals": [{"type": "*", "identifiers": ["*"]}],
             "condition": [{"test": "ArnNotEquals", "variable": "aws:PrincipalArn",
                            "values": [writer_role_arn]}]},
            # Not even the writer may erase history: old versions go by the lifecycle rule.
            {"sid": "NobodyDeletesVersions", "effect": "Deny",
             "actions": ["s3:DeleteObjectVersion"], "resources": [f"{arn}/*"],
             "principals": [{"type": "*", "identifiers": ["*"]}]},
        ])
        S3BucketPolicy(self, "policy", bucket=self._bucket.id, policy=policy.json)
