"""The ceiling of every role an environment's deploy role creates, and the limits it shares.

The deploy role may create and change IAM roles named with its environment's prefix only when
they carry this boundary (``github_oidc.py``). Whatever policy it then attaches, such a role
can do no more than the environment's hosts need: never IAM or STS, nor anything of the other
environments' hosts, parameters, keys or state.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Union

from core.cdk import Construct, DataAwsIamPolicyDocument, IamPolicy, IamStatement
from core.settings import BACKUP_METRIC_NAMESPACE
from modules.certificate_store import MAX_BUCKET_PREFIX

# Instance and volume changes that would stop, replace or reach into a host. Each action's
# instance and volume resources support aws:ResourceTag (AWS's service authorization pages).
HOST_MUTATIONS = [
    "ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances",
    "ec2:RebootInstances", "ec2:ModifyInstanceAttribute", "ec2:ModifyInstanceMetadataOptions",
    "ec2:AssociateIamInstanceProfile", "ec2:ReplaceIamInstanceProfileAssociation",
    "ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume", "ec2:ModifyVolume",
    # A snapshot or an image is a copy of the host's disks, readable wherever it is restored.
    "ec2:CreateSnapshot", "ec2:CreateSnapshots", "ec2:CreateImage",
    # A new root volume, or none of the host's role, is a replaced or crippled host.
    "ec2:CreateReplaceRootVolumeTask", "ec2:DisassociateIamInstanceProfile",
]
# Key changes that would let a principal decrypt or destroy another environment's secrets.
# An alias call is authorized on the alias and on its key: this list covers the key side.
KEY_CHANGES = ["kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DisableKey",
               "kms:ReplicateKey", "kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"]
KEY_TAG_CHANGES = ["kms:TagResource", "kms:UntagResource"]
ALIAS_CHANGES = ["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"]
# Changes to a bucket's own settings (policy, ACL, encryption, versioning, lifecycle,
# replication, public access, ownership, logging, deletion); none touches an object.
BUCKET_SETTINGS_CHANGES = [
    "s3:PutBucket*", "s3:DeleteBucket*", "s3:PutLifecycleConfiguration",
    "s3:PutEncryptionConfiguration", "s3:PutReplicationConfiguration",
    "s3:PutAccelerateConfiguration", "s3:PutIntelligentTieringConfiguration",
    "s3:PutInventoryConfiguration", "s3:PutAnalyticsConfiguration",
    "s3:PutMetricsConfiguration",
]
OBJECT_ACCESS = ["s3:GetObject*", "s3:PutObject*", "s3:DeleteObject*"]
REMOTE_SHELL = ["ssm:SendCommand", "ssm:StartSession"]
# Ways to run a command on hosts later, or chosen by tag, that are authorized on a document or
# a window rather than on each host: no environment uses them, so nobody may.
STANDING_COMMANDS = [
    "ssm:CreateAssociation", "ssm:CreateAssociationBatch", "ssm:UpdateAssociation",
    "ssm:StartAssociationsOnce", "ssm:CreateMaintenanceWindow",
    "ssm:RegisterTaskWithMaintenanceWindow", "ssm:UpdateMaintenanceWindowTask",
    "ssm:RegisterTargetWithMaintenanceWindow", "ssm:UpdateMaintenanceWindowTarget",
    "ssm:StartAutomationExecution", "ssm:StartChangeRequestExecution",
    "ssm:CreateDocument", "ssm:UpdateDocument",
]
# Each service's name for a resource's tags in the request context: a deny keyed on one
# misses the services that only fill in another (SSM's documents and hosts, EC2 Instance
# Connect's hosts).
RESOURCE_TAG_KEYS = ("aws:ResourceTag", "ssm:resourceTag", "ec2:ResourceTag")

# The most any role of an environment may ever do: what its hosts and its VPC flow logs need,
# as (resources, actions), "*" where IAM cannot scope the action. The SSM agent's part is
# AmazonSSMManagedInstanceCore without ssm:GetParameter(s) (the parameters come from the
# OwnParameters statement). A host needing a new service adds one line here and one in its
# own role's statements; the environment's buckets and metrics are in PermissionsBoundary.
INSTANCES = ("arn:aws:ec2:*:*:instance/*", "arn:aws:ssm:*:*:managed-instance/*")
CEILING = (
    (("*",), ("ssm:GetDeployablePatchSnapshotForInstance", "ssm:GetManifest",
              "ssm:ListAssociations", "ssm:PutConfigurePackageResult", "ssm:PutInventory",
              "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
              "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
              "ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage",
              "ec2messages:FailMessage", "ec2messages:GetEndpoint", "ec2messages:GetMessages",
              "ec2messages:SendReply", "ecr:GetAuthorizationToken")),
    (INSTANCES, ("ssm:UpdateInstanceInformation", "ssm:ListInstanceAssociations",
                 "ssm:PutComplianceItems")),
    ((*INSTANCES, "arn:aws:ssm:*:*:association/*", "arn:aws:ssm:*:*:document/*"),
     ("ssm:DescribeAssociation",)),
    (("arn:aws:ssm:*:*:document/*",), ("ssm:DescribeDocument", "ssm:GetDocument")),
    (("arn:aws:ssm:*:*:document/*", *INSTANCES), ("ssm:UpdateAssociationStatus",)),
    (("arn:aws:ssm:*:*:association/*", *INSTANCES), ("ssm:UpdateInstanceAssociationStatus",)),
    (("arn:aws:kms:*:*:key/*",), ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")),
    (("arn:aws:ecr:*:*:repository/*",), ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")),
    (("arn:aws:logs:*:*:log-group:*",), ("logs:CreateLogStream", "logs:PutLogEvents",
                                         "logs:DescribeLogStreams")),
)


def bucket_stem(project: str, environment: str) -> str:
    """The start of every bucket name of the environment."""
    return f"{project}-{environment}-"[:MAX_BUCKET_PREFIX - 1]


def boundary_name(project: str, environment: str) -> str:
    """The boundary's policy name. No deploy role may change any IAM policy, whatever its name."""
    return f"{project}-{environment}-role-boundary"


def boundary_arn(account_id: str, project: str, environment: str) -> str:
    return f"arn:aws:iam::{account_id}:policy/{boundary_name(project, environment)}"


def environment_guardrails(project: str, environment: str, others: tuple[str, ...],
                           state_bucket_arn: str) -> list[Union[dict, IamStatement]]:
    """Deny statements that keep a principal of ``environment`` out of every other one:
    dicts, or ``IamStatement`` structs where a key has an underscore.

    Hosts are told apart by their ``Environment`` tag (every resource of an environment stack
    carries it); a host without the tag counts as another environment's.
    """
    not_this_environment = {"test": "StringNotEquals", "variable": "aws:ResourceTag/Environment",
                            "values": [environment]}
    has_environment = {"test": "Null", "variable": "aws:ResourceTag/Environment",
                       "values": ["false"]}
    statements = [
        {"sid": "OwnHostsOnlyShell", "effect": "Deny", "actions": REMOTE_SHELL,
         "resources": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ssm:*:*:managed-instance/*"],
         "condition": [{"test": "StringNotEquals", "variable": "ssm:resourceTag/Environment",
                        "values": [environment]}]},
        {"sid": "OwnHostsOnlyChanges", "effect": "Deny", "actions": HOST_MUTATIONS,
         "resources": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
         "condition": [{"test": "StringNotEquals", "variable": "aws:ResourceTag/Environment",
                        "values": [environment]}]},
        # Retagging another environment's host would make it this one's. Tags set while
        # creating a resource (ec2:CreateAction present) are not changes to deny.
        {"sid": "OwnHostsOnlyTags", "effect": "Deny",
         "actions": ["ec2:CreateTags", "ec2:DeleteTags"],
         "resources": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
         "condition": [{"test": "StringNotEquals", "variable": "aws:ResourceTag/Environment",
                        "values": [environment]},
                       {"test": "Null", "variable": "ec2:CreateAction", "values": ["true"]}]},
        {"sid": "OwnKeysOnly", "effect": "Deny", "actions": KEY_CHANGES,
         "resources": ["arn:aws:kms:*:*:key/*"],
         "condition": [not_this_environment]},
        # A grant made directly lets its grantee use the key, its own environment's secrets
        # included, whatever the key policy says. A service's grant for the resource it
        # encrypts stays possible: EC2 makes one on the AWS managed aws/ebs key for every
        # encrypted volume it creates. IfExists: a call that does not say is made directly.
        {"sid": "NoDirectGrants", "effect": "Deny", "actions": ["kms:CreateGrant"],
         "resources": ["arn:aws:kms:*:*:key/*"],
         "condition": [{"test": "BoolIfExists", "variable": "kms:GrantIsForAWSResource",
                        "values": ["false"]}]},
        {"sid": "OtherKeysNeverGranted", "effect": "Deny", "actions": ["kms:CreateGrant"],
         "resources": ["arn:aws:kms:*:*:key/*"],
         "condition": [not_this_environment, has_environment]},
        # Retagging a key Environment=<this one> would make it this environment's to disable
        # or delete. A key being created has no tags yet, so it is not denied here; the
        # state key carries an Environment no environment has (stacks/bootstrap.py).
        {"sid": "OwnKeyTagsOnly", "effect": "Deny", "actions": KEY_TAG_CHANGES,
         "resources": ["arn:aws:kms:*:*:key/*"],
         "condition": [not_this_environment, has_environment]},
        # Creating or retagging anything as another environment's would make it pass for
        # that environment's: a host the other environment's rollout would find, a key its
        # guardrails would let it use. Resource "*": tags on create are authorized before the
        # resource has an ARN (CreateKey, RunInstances).
        {"sid": "TaggedThisEnvironmentOnly", "effect": "Deny",
         "actions": ["*"], "resources": ["*"],
         "condition": [{"test": "StringNotEquals", "variable": "aws:RequestTag/Environment",
                        "values": [environment]},
                       {"test": "Null", "variable": "aws:RequestTag/Environment",
                        "values": ["false"]}]},
        # The alias side of alias calls; the key side is in OwnKeysOnly.
        # Structs: jsii would drop a dict's ``not_resources``.
        IamStatement(sid="OwnAliasesOnly", effect="Deny", actions=ALIAS_CHANGES,
                     not_resources=[f"arn:aws:kms:*:*:alias/{project}-{environment}-*",
                                    "arn:aws:kms:*:*:key/*"]),
        # The state bucket and the other environments' buckets keep their policies,
        # encryption, versioning and lifecycle whatever PowerUserAccess allows.
        IamStatement(sid="OwnBucketSettingsOnly", effect="Deny",
                     actions=BUCKET_SETTINGS_CHANGES,
                     not_resources=[f"arn:aws:s3:::{bucket_stem(project, environment)}*"]),
        {"sid": "NoStandingCommands", "effect": "Deny", "actions": STANDING_COMMANDS,
         "resources": ["*"]},
        # Authorized on the path asked for, not on the parameters it returns (SSM's docs), so
        # the per-parameter denies would not hold; nothing of the platform reads by path.
        {"sid": "NoParametersByPath", "effect": "Deny",
         "actions": ["ssm:GetParametersByPath"], "resources": ["*"]},
    ]
    if others:
        # Whatever PowerUserAccess allows on a resource of another environment (its security
        # groups, addresses, load balancer, routes, alarms, topic, hosts): every resource of
        # an environment stack carries its Environment tag. Untagged resources are the
        # account's (AMIs, the AWS managed keys) and stay usable.
        statements += [
            {"sid": f"OtherEnvironmentsNever{number}", "effect": "Deny", "actions": ["*"],
             "resources": ["*"],
             "condition": [{"test": "StringEquals", "variable": f"{key}/Environment",
                            "values": list(others)}]}
            for number, key in enumerate(RESOURCE_TAG_KEYS)]
        statements += [
            # By path: the parameters its hosts create carry no tags.
            {"sid": "OtherParametersNever", "effect": "Deny", "actions": ["ssm:*"],
             "resources": [f"arn:aws:ssm:*:*:parameter/{project}/{other}/*"
                           for other in others]},
            {"sid": "OtherStateNever", "effect": "Deny",
             "actions": ["s3:GetObject*", "s3:PutObject*", "s3:DeleteObject*"],
             "resources": [f"{state_bucket_arn}/{other}/*" for other in others]},
            {"sid": "OtherBucketsObjectsNever", "effect": "Deny", "actions": OBJECT_ACCESS,
             "resources": [f"arn:aws:s3:::{bucket_stem(project, other)}*/*"
                           for other in others]},
        ]
    return statements


@dataclass(frozen=True)
class PermissionsBoundaryConfig:
    """Inputs of :class:`PermissionsBoundary`.

    project, environment: name the boundary (``boundary_name``).
    guardrails: the environment's deny statements (``environment_guardrails``).
    """

    project: str
    environment: str
    guardrails: tuple[Union[dict, IamStatement], ...]


class PermissionsBoundary(Construct):
    """A managed policy: what the environment's hosts and flow logs need (``CEILING``), within
    the environment's guardrails; never IAM, STS, Organizations or the account."""

    def __init__(self, scope: Construct, id: str, config: PermissionsBoundaryConfig):
        super().__init__(scope, id)
        allows = [
            *({"sid": f"Ceiling{number}", "actions": list(actions),
               "resources": list(resources)}
              for number, (resources, actions) in enumerate(CEILING)),
            {"sid": "OwnParameters", "actions": ["ssm:GetParameter", "ssm:PutParameter"],
             "resources": [f"arn:aws:ssm:*:*:parameter/{config.project}/"
                           f"{config.environment}/*"]},
            # The LBs' certificate store and DB-01's backup copy: every bucket of the
            # environment is named from its prefix (bucket prefixes are cut to fit S3's 63).
            {"sid": "OwnBuckets", "actions": ["s3:ListBucket", "s3:GetBucketLocation"],
             "resources": [f"arn:aws:s3:::{bucket_stem(config.project, config.environment)}*"]},
            {"sid": "OwnBucketObjects",
             "actions": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "resources": [f"arn:aws:s3:::{bucket_stem(config.project, config.environment)}*/*"]},
            {"sid": "OwnMetrics", "actions": ["cloudwatch:PutMetricData"], "resources": ["*"],
             "condition": [{"test": "StringEquals", "variable": "cloudwatch:namespace",
                            "values": [BACKUP_METRIC_NAMESPACE]}]},
        ]
        allowed = [action for statement in allows for action in statement["actions"]]
        # A deny of actions the ceiling never allows changes nothing in a boundary, and IAM
        # caps a managed policy at 6,144 characters: only the guardrails that take back part
        # of the ceiling go in.
        document = DataAwsIamPolicyDocument(self, "document", statement=[
            *allows, *(g for g in config.guardrails if _denies_any(g, allowed))])
        policy = IamPolicy(self, "policy",
                           name=boundary_name(config.project, config.environment),
                           description=f"Ceiling of the roles {config.environment}'s "
                                       f"deploy role creates", policy=document.json)
        self.arn = policy.arn


def _denies_any(statement: Union[dict, IamStatement], actions: list[str]) -> bool:
    """Whether ``statement`` may deny one of ``actions`` (wildcards on either side); a
    NotAction statement is taken to."""
    if isinstance(statement, dict):
        denied = statement.get("actions") or []
    elif not statement.actions:
        return True
    else:
        denied = statement.actions
    return any(fnmatchcase(action.lower(), pattern.lower()) or
               fnmatchcase(pattern.lower(), action.lower())
               for action in actions for pattern in denied)
