"""The environment's alarms and where they go: backups late or behind, hosts failing EC2's
status checks (and recovered automatically), all mailed through one SNS topic."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from core.cdk import (CloudwatchMetricAlarm, Construct, DataAwsCallerIdentity, KmsKey,
                      SnsTopic, SnsTopicSubscription)
from modules.key_policy import account_administers_key


@dataclass(frozen=True)
class AlarmsConfig:
    """Inputs of :class:`Alarms`.

    name: prefix of the topic and alarm names. region: the hosts' region (EC2's recover
    action names it). email: the subscriber (AWS mails a confirmation link first).
    environment: the metrics' ``Environment`` dimension. namespace: where DB-01 publishes
    ``BackupAgeSeconds`` and ``ArchiveLagSeconds``. backup_age_seconds,
    archive_lag_seconds: above these, the backup alarms go off. instances: host name ->
    instance ID, each given a system status-check alarm that recovers the instance.
    """

    name: str
    region: str
    email: str
    environment: str
    namespace: str
    backup_age_seconds: int = 26 * 3600
    archive_lag_seconds: int = 300
    instances: dict[str, str] = field(default_factory=dict)


def publisher_statements(namespace: str) -> list[dict]:
    """IAM statements to publish metrics into ``namespace`` only (PutMetricData has no
    resource: the namespace condition is the only way to narrow it)."""
    return [{"actions": ["cloudwatch:PutMetricData"], "resources": ["*"],
             "condition": [{"test": "StringEquals", "variable": "cloudwatch:namespace",
                            "values": [namespace]}]}]


class Alarms(Construct):
    """SNS topic (encrypted with a key CloudWatch may use) + e-mail subscription + alarms.

    The backup alarms count missing data as breaching: DB-01 publishes about every minute
    (judged over five-minute periods, which a late report never leaves empty), so silence
    means DB-01, PostgreSQL or a repository cannot be read, which is as bad as late.
    The status-check alarm runs EC2's ``recover``: the instance moves to healthy hardware
    with the same ID, addresses, volumes and metadata. EC2 supports it on EBS-only types
    (t3, t3a, t4g, m5, c5, r5... and their Graviton and AMD peers), not on types with
    instance-store volumes (m5d, i3...) or bare metal.
    """

    def __init__(self, scope: Construct, id: str, config: AlarmsConfig):
        super().__init__(scope, id)
        account = DataAwsCallerIdentity(self, "account")
        # A key policy, not an IAM policy: its Resource "*" is this key alone.
        key_policy = json.dumps({"Version": "2012-10-17", "Statement": [
            account_administers_key(account.account_id),
            # Alarms publish to an encrypted topic only with the topic key's consent.
            {"Sid": "CloudWatchPublishesAlarms", "Effect": "Allow",
             "Principal": {"Service": "cloudwatch.amazonaws.com"},
             "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
             "Condition": {"StringEquals": {"aws:SourceAccount": account.account_id}}},
        ]})
        key = KmsKey(self, "key", description=f"Encrypts the {config.name} alerts topic",
                     enable_key_rotation=True, deletion_window_in_days=7,
                     policy=key_policy)
        topic = SnsTopic(self, "topic", name=f"{config.name}-alerts",
                         kms_master_key_id=key.arn)
        SnsTopicSubscription(self, "email", topic_arn=topic.arn, protocol="email",
                             endpoint=config.email)
        self.topic_arn = topic.arn
        notify = [topic.arn]
        dimensions = {"Environment": config.environment}
        CloudwatchMetricAlarm(
            self, "backup-age", alarm_name=f"{config.name}-db-backup-late",
            alarm_description="DB-01: no good backup in one of its repositories for "
                              f"{config.backup_age_seconds // 3600} h, or no report at all",
            namespace=config.namespace, metric_name="BackupAgeSeconds",
            dimensions=dimensions, statistic="Maximum", period=300, evaluation_periods=1,
            comparison_operator="GreaterThanThreshold", threshold=config.backup_age_seconds,
            treat_missing_data="breaching", alarm_actions=notify, ok_actions=notify)
        CloudwatchMetricAlarm(
            self, "archive-lag", alarm_name=f"{config.name}-db-wal-archive-behind",
            alarm_description="DB-01: a WAL segment has waited more than "
                              f"{config.archive_lag_seconds} s to be archived, or no report",
            namespace=config.namespace, metric_name="ArchiveLagSeconds",
            # Five-minute periods: the publisher's timer drifts to 60-65 s, so a one-minute
            # period is sometimes empty, and an empty period counts as breaching. A
            # five-minute period always holds four or more reports while DB-01 publishes,
            # and its Maximum still shows a lag above the threshold within that period.
            dimensions=dimensions, statistic="Maximum", period=300, evaluation_periods=1,
            comparison_operator="GreaterThanThreshold", threshold=config.archive_lag_seconds,
            treat_missing_data="breaching", alarm_actions=notify, ok_actions=notify)
        recover = f"arn:aws:automate:{config.region}:ec2:recover"
        for host, instance_id in config.instances.items():
            CloudwatchMetricAlarm(
                self, f"{host.lower()}-system-check",
                alarm_name=f"{config.name}-{host}-system-check",
                alarm_description=f"{host} failed EC2's system status check: recovering it "
                                  "onto healthy hardware",
                namespace="AWS/EC2", metric_name="StatusCheckFailed_System",
                dimensions={"InstanceId": instance_id}, statistic="Maximum", period=60,
                evaluation_periods=2, comparison_operator="GreaterThanThreshold",
                threshold=0, alarm_actions=[recover, *notify], ok_actions=notify)
