"""The S3 copy of DB-01's backups, its key, the alarms and who may do what, on the synthesized
JSON of both environments (synthesized once per session)."""
from __future__ import annotations

import fnmatch
import json
import re

import pytest

from core.settings import (ARCHIVE_LAG_ALARM_SECONDS, BACKUP_AGE_ALARM_SECONDS,
                           BACKUP_METRIC_NAMESPACE, ROLES, load_environment)
from provisioning.cloud_config import file_text
from provisioning.pgbackrest import S3Repository, config_text, Cluster

ENVIRONMENTS = ["production", "staging"]


def only(mapping: dict, pattern: str) -> tuple[str, dict]:
    matches = [(key, value) for key, value in mapping.items() if re.match(pattern, key)]
    assert len(matches) == 1, (pattern, list(mapping))
    return matches[0]


def ref(kind: str, key: str, attribute: str) -> str:
    return f"${{{kind}.{key}.{attribute}}}"


class Stack:
    def __init__(self, document: dict):
        self.resources = document["resource"]
        self.policies = document["data"]["aws_iam_policy_document"]
        self.bucket_key, self.bucket = only(self.resources["aws_s3_bucket"], r"backup-bucket_")
        self.bucket_arn = ref("aws_s3_bucket", self.bucket_key, "arn")
        self.bucket_id = ref("aws_s3_bucket", self.bucket_key, "id")
        self.key_key, self.key = only(self.resources["aws_kms_key"], r"backup-bucket_key_")
        self.key_arn = ref("aws_kms_key", self.key_key, "arn")

    def for_bucket(self, kind: str) -> dict:
        (value,) = [v for v in self.resources[kind].values() if v["bucket"] == self.bucket_id]
        return value

    def role_arn(self, role: str) -> str:
        key, _ = only(self.resources["aws_iam_role"], rf"{role}-identity_role_")
        return ref("aws_iam_role", key, "arn")

    def identity_statements(self, role: str) -> list[dict]:
        found = [policy for key, policy in self.policies.items()
                 if key.startswith(f"{role}-identity_permissions_")]
        return found[0]["statement"] if found else []

    def bucket_policy(self) -> list[dict]:
        policy = self.for_bucket("aws_s3_bucket_policy")["policy"]
        key = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(.+)\.json\}", policy)[1]
        return self.policies[key]["statement"]


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def stack(request, stack_json):
    return request.param, Stack(stack_json(request.param))


def matches(patterns: list[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def allowed(stack: Stack, role: str, action: str, resource: str, *, tls: bool = True) -> bool:
    """IAM's verdict for a host role's request on the bucket: its own policy must allow it
    and no Deny of the bucket policy may apply (the conditions the policies use)."""
    if not any(matches(s["actions"], action) and matches(s["resources"], resource)
               for s in stack.identity_statements(role)):
        return False
    context = {"aws:PrincipalArn": stack.role_arn(role), "aws:SecureTransport": str(tls).lower()}
    for statement in stack.bucket_policy():
        if statement["effect"] != "Deny" or not matches(statement["actions"], action):
            continue
        if not matches(statement["resources"], resource):
            continue
        applies = True
        for condition in statement.get("condition", []):
            value = context[condition["variable"]]
            if condition["test"] in ("Bool", "StringEquals", "ArnEquals"):
                applies &= value in condition["values"]
            elif condition["test"] in ("ArnNotEquals", "StringNotEquals"):
                applies &= value not in condition["values"]
            else:
                raise AssertionError(f"condition {condition['test']} not modelled")
        if applies:
            return False
    return True


def test_the_bucket_is_versioned_encrypted_with_its_own_key_and_private(stack):
    environment, s = stack
    settings = load_environment(environment)
    assert s.bucket["bucket"] == settings.backup_bucket
    assert s.bucket["lifecycle"]["prevent_destroy"] is settings.protect_data
    assert s.for_bucket("aws_s3_bucket_versioning")["versioning_configuration"] == {
        "status": "Enabled"}
    (rule,) = s.for_bucket("aws_s3_bucket_server_side_encryption_configuration")["rule"]
    assert rule["apply_server_side_encryption_by_default"] == {
        "sse_algorithm": "aws:kms", "kms_master_key_id": s.key_arn}
    assert rule["bucket_key_enabled"] is True
    assert s.key["enable_key_rotation"] is True
    block = s.for_bucket("aws_s3_bucket_public_access_block")
    assert all(block[flag] is True for flag in ("block_public_acls", "block_public_policy",
                                                "ignore_public_acls", "restrict_public_buckets"))


def test_deleted_backups_expire_after_the_retention_and_current_ones_never_by_age(stack):
    environment, s = stack
    (rule,) = s.for_bucket("aws_s3_bucket_lifecycle_configuration")["rule"]
    days = load_environment(environment).backups.retention_days
    assert rule["status"] == "Enabled" and rule["filter"] == [{"prefix": ""}]
    assert rule["noncurrent_version_expiration"] == [{"noncurrent_days": days}]
    # pgBackRest expires current objects itself; an age rule would delete archive.info.
    assert rule["expiration"] == [{"expired_object_delete_marker": True}]
    assert rule["abort_incomplete_multipart_upload"] == [{"days_after_initiation": 7}]


def test_only_db01_writes_and_nobody_erases_versions(stack):
    _, s = stack
    objects = f"{s.bucket_arn}/*"
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:GetObject"):
        assert allowed(s, "db", action, objects), action
        assert not allowed(s, "db", action, objects, tls=False), action
    assert allowed(s, "db", "s3:ListBucket", s.bucket_arn)
    assert not allowed(s, "db", "s3:DeleteObjectVersion", objects)
    for role in ROLES:
        if role != "db":
            for action in ("s3:PutObject", "s3:DeleteObject", "s3:GetObject"):
                assert not allowed(s, role, action, objects), (role, action)
    # Whatever another principal's own policy allows, the bucket denies its writes.
    (deny,) = [st for st in s.bucket_policy() if st.get("sid") == "OnlyTheDatabaseHostWrites"]
    assert deny["principals"] == [{"type": "*", "identifiers": ["*"]}]
    assert {"s3:PutObject", "s3:DeleteObject"} <= set(deny["actions"])
    assert deny["condition"] == [{"test": "ArnNotEquals", "variable": "aws:PrincipalArn",
                                  "values": [s.role_arn("db")]}]
    # Nor may any other principal read them (a deploy role's PowerUserAccess would).
    (deny,) = [st for st in s.bucket_policy() if st.get("sid") == "OnlyTheDatabaseHostReads"]
    assert deny["principals"] == [{"type": "*", "identifiers": ["*"]}]
    assert {"s3:GetObject", "s3:GetObjectVersion"} <= set(deny["actions"])
    assert deny["resources"] == [objects]
    assert deny["condition"] == [{"test": "ArnNotEquals", "variable": "aws:PrincipalArn",
                                  "values": [s.role_arn("db")]}]


def test_db01_reaches_this_bucket_and_key_only(stack):
    _, s = stack
    statements = s.identity_statements("db")
    storage = [st for st in statements if any(a.startswith(("s3:", "kms:"))
                                              for a in st["actions"])]
    resources = {r for st in storage for r in st["resources"]}
    assert resources == {s.bucket_arn, f"{s.bucket_arn}/*", s.key_arn}
    assert {a for st in storage for a in st["actions"]} == {
        "s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject",
        "s3:DeleteObject", "kms:Decrypt", "kms:GenerateDataKey"}
    (metrics,) = [st for st in statements if "cloudwatch:PutMetricData" in st["actions"]]
    assert metrics["condition"] == [{"test": "StringEquals", "variable": "cloudwatch:namespace",
                                     "values": [BACKUP_METRIC_NAMESPACE]}]
    for role in ROLES:
        if role != "db":
            # Other roles may have buckets of their own (the LBs' certificates), not this one.
            granted = {r for st in s.identity_statements(role) for r in st.get("resources", [])}
            assert not granted & {s.bucket_arn, f"{s.bucket_arn}/*", s.key_arn}, role
            assert not any(a.startswith("cloudwatch:")
                           for st in s.identity_statements(role) for a in st["actions"]), role


def test_backup_alarms_watch_what_db01_publishes_and_mail_the_configured_address(stack):
    environment, s = stack
    settings = load_environment(environment)
    alarms = s.resources["aws_cloudwatch_metric_alarm"]
    (topic_key, topic), = s.resources["aws_sns_topic"].items()
    topic_arn = ref("aws_sns_topic", topic_key, "arn")
    (subscription,) = s.resources["aws_sns_topic_subscription"].values()
    assert (subscription["protocol"], subscription["endpoint"], subscription["topic_arn"]) == (
        "email", settings.alerts.email, topic_arn)
    assert topic["kms_master_key_id"].startswith("${aws_kms_key.alarms_key_")
    publisher = file_text("backup_metrics.py")
    for metric, threshold in (("BackupAgeSeconds", BACKUP_AGE_ALARM_SECONDS),
                              ("ArchiveLagSeconds", ARCHIVE_LAG_ALARM_SECONDS)):
        (alarm,) = [a for a in alarms.values() if a.get("metric_name") == metric]
        assert f'"{metric}"' in publisher
        assert (alarm["namespace"], alarm["dimensions"]) == (
            BACKUP_METRIC_NAMESPACE, {"Environment": environment})
        assert alarm["threshold"] == threshold
        assert alarm["comparison_operator"] == "GreaterThanThreshold"
        assert alarm["statistic"] == "Maximum"
        # Silence (DB-01 gone, a repository unreadable) is as bad as a late backup.
        assert alarm["treat_missing_data"] == "breaching"
        assert alarm["alarm_actions"] == [topic_arn] == alarm["ok_actions"]
    assert BACKUP_AGE_ALARM_SECONDS == 26 * 3600 and ARCHIVE_LAG_ALARM_SECONDS == 5 * 60


def alarm_states(alarm: dict, reports: dict[float, float], until: float) -> list[tuple]:
    """What CloudWatch decides at the end of each period up to ``until``: (time, ALARM?),
    from reports {time in seconds: value}, with the alarm's period, statistic Maximum,
    M of N and missing data as it says."""
    period, n = alarm["period"], alarm["evaluation_periods"]
    m = alarm.get("datapoints_to_alarm", n)
    states = []
    for end in range(period * n, int(until) + 1, period):
        breaching = 0
        for start in range(end - period * n, end, period):
            values = [v for t, v in reports.items() if start <= t < start + period]
            if values:
                breaching += max(values) > alarm["threshold"]
            else:
                breaching += alarm["treat_missing_data"] == "breaching"
        states.append((end, breaching >= m))
    return states


def test_archive_lag_alarm_ignores_a_late_report_but_not_a_lag_or_a_dead_publisher(stack):
    _, s = stack
    (alarm,) = [a for a in s.resources["aws_cloudwatch_metric_alarm"].values()
                if a.get("metric_name") == "ArchiveLagSeconds"]
    hour = 3 * 3600
    # The timer fires 60 to 65 s apart (OnUnitActiveSec=1min, AccuracySec=5s), so some
    # minutes hold no report at all.
    healthy, t = {}, 0.0
    while t < hour:
        healthy[t] = 10.0
        t += 65.0
    assert not any(state for _, state in alarm_states(alarm, healthy, hour))

    # Archiving falls behind from minute 60: lag grows by one second a second.
    behind = {t: (10.0 if t < 3600 else t - 3600) for t in healthy}
    crossed = 3600 + ARCHIVE_LAG_ALARM_SECONDS
    first = min(end for end, state in alarm_states(alarm, behind, hour) if state)
    assert crossed < first <= crossed + 5 * 60

    # The publisher dies at minute 60: an alarm within about 5 minutes of silence.
    dead = {t: v for t, v in healthy.items() if t < 3600}
    first = min(end for end, state in alarm_states(alarm, dead, hour) if state)
    assert first - max(dead) <= 10 * 60


def test_cloudwatch_may_use_the_alerts_topic_key_and_the_account_keeps_both_keys(stack):
    _, s = stack
    # The alerts topic's key and the backup bucket's (the parameters' key has its own test).
    policies = {key: json.loads(value["policy"])
                for key, value in s.resources["aws_kms_key"].items()
                if key.startswith(("alarms_key_", "backup-bucket_key_"))}
    assert len(policies) == 2
    (alerts,) = [p for key, p in policies.items() if key.startswith("alarms_key_")]
    (statement,) = [st for st in alerts["Statement"]
                    if st["Sid"] == "CloudWatchPublishesAlarms"]
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert set(statement["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    for policy in policies.values():
        (admin,) = [st for st in policy["Statement"] if st["Sid"] == "AccountAdministersTheKey"]
        assert re.fullmatch(r"arn:aws:iam::\$\{data\.aws_caller_identity\.[\w-]+"
                            r"\.account_id\}:root", admin["Principal"]["AWS"])
        assert not any(st.get("Principal") == "*" for st in policy["Statement"])


def test_every_host_is_recovered_when_it_fails_its_system_status_check(stack):
    environment, s = stack
    settings = load_environment(environment)
    instances = {key.split("_")[0]: ref("aws_instance", key, "id")
                 for key in s.resources["aws_instance"]}
    checks = {a["dimensions"]["InstanceId"]: a
              for a in s.resources["aws_cloudwatch_metric_alarm"].values()
              if a.get("metric_name") == "StatusCheckFailed_System"}
    assert set(checks) == set(instances.values())
    assert len(checks) == sum(len(settings.host_names(role)) for role in ROLES)
    for alarm in checks.values():
        assert alarm["namespace"] == "AWS/EC2"
        assert f"arn:aws:automate:{settings.region}:ec2:recover" in alarm["alarm_actions"]
        assert alarm["comparison_operator"] == "GreaterThanThreshold" and alarm["threshold"] == 0


def test_db01_pgbackrest_names_the_bucket_terraform_creates(stack, cloud_config_for):
    environment, s = stack
    settings = load_environment(environment)
    conf = cloud_config_for(settings)
    assert f"repo2-s3-bucket={s.bucket['bucket']}\n" in conf
    assert f"repo2-s3-region={settings.region}\n" in conf
    assert "repo2-s3-key-type=auto\n" in conf
    assert conf == config_text(
        cluster=Cluster(data_directory="/var/lib/postgresql/16/main"),
        repo1_path="/mnt/backups/pgbackrest",
        s3=S3Repository(bucket=settings.backup_bucket, region=settings.region),
        retention_days=settings.backups.retention_days)


@pytest.fixture(scope="module")
def cloud_config_for():
    import yaml

    from provisioning import user_data

    def conf(settings) -> str:
        document = yaml.safe_load(user_data.render(settings, "db", "DB-01"))
        (entry,) = [e for e in document["write_files"]
                    if e["path"] == "/etc/pgbackrest/pgbackrest.conf"]
        return entry["content"]
    return conf
