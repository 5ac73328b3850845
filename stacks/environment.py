"""One environment of the design: network, security groups, five kinds of host, NFS storage,
the S3 backup copy and the alarms."""
from __future__ import annotations

from core.cdk import (AwsProvider, DataAwsCallerIdentity, DataAwsEcrRepository, IamStatement,
                      S3Backend, TerraformOutput, TerraformStack)
from core.settings import (ARCHIVE_LAG_ALARM_SECONDS, BACKUP_AGE_ALARM_SECONDS,
                           BACKUP_METRIC_NAMESPACE, KIBANA_PORT, ROLES, Settings)
from modules.alarms import Alarms, AlarmsConfig, publisher_statements
from modules.backup_bucket import BackupBucket, BackupBucketConfig
from modules.certificate_store import CertificateStore, CertificateStoreConfig
from modules.container_repository import pull_statements
from modules.host import Host, HostConfig, UbuntuAmi
from modules.host_role import HostRole, HostRoleConfig
from modules.load_balancer import NetworkLoadBalancer, NetworkLoadBalancerConfig
from modules.network import Network, NetworkConfig
from modules.nfs_storage import NfsStorage, NfsStorageConfig
from modules.parameter_key import ParameterKey, ParameterKeyConfig
from modules.permissions_boundary import boundary_arn
from modules.security_groups import SecurityGroups, SecurityGroupsConfig
from modules.state_bucket import state_key_alias
from provisioning import parameters, user_data

# Hosts whose loss loses data: protected from termination when settings.protect_data is on.
DATA_ROLES = ("db", "nfs")


class EnvironmentStack(TerraformStack):
    """Everything one ``config/<environment>.yaml`` describes, in one Terraform state."""

    def __init__(self, scope, settings: Settings):
        super().__init__(scope, settings.environment)
        prefix = settings.name_prefix
        AwsProvider(self, "aws", region=settings.region, default_tags=[{"tags": {
            "Project": settings.project, "Environment": settings.environment,
            "ManagedBy": "cdktf", **settings.tags}}])
        S3Backend(self, bucket=settings.state_bucket, region=settings.region, encrypt=True,
                  key=f"{settings.environment}/terraform.tfstate",
                  kms_key_id=state_key_alias(settings.project))
        # S3-native state locking (Terraform >= 1.10): no DynamoDB table to create.
        self.add_override("terraform.backend.s3.use_lockfile", True)

        # Made by the bootstrap stack: the deploy role manages only roles that carry it.
        account = DataAwsCallerIdentity(self, "account")
        boundary = boundary_arn(account.account_id, settings.project, settings.environment)
        network = Network(self, "network", NetworkConfig(
            name=prefix, vpc_cidr=settings.network.vpc_cidr,
            public_subnet_cidr=settings.network.public_subnet_cidr,
            private_subnet_cidr=settings.network.private_subnet_cidr,
            availability_zone=settings.availability_zone,
            flow_log_retention_days=settings.network.flow_log_retention_days,
            nat_private_ip=settings.nat_private_ip, permissions_boundary=boundary))
        balanced = settings.load_balancer.count > 1
        groups = SecurityGroups(self, "security-groups", SecurityGroupsConfig(
            name=prefix, vpc_id=network.vpc_id, admin_cidr=settings.admin_cidr,
            nlb_subnet_cidr=settings.network.public_subnet_cidr if balanced else None))
        # One image lookup per architecture in use: Graviton types (t4g...) need arm64.
        ubuntu = {arch: UbuntuAmi(self, "ubuntu" if arch == "x86_64" else f"ubuntu-{arch}", arch)
                  for arch in sorted({settings.architecture(role) for role in ROLES})}
        storage = NfsStorage(self, "nfs-storage", NfsStorageConfig(
            name=f"{prefix}-backups", environment=settings.environment,
            availability_zone=settings.availability_zone, size_gb=settings.nfs.volume_size_gb,
            protect=settings.protect_data))

        # Made by the bootstrap stack, shared by the environments: the plan fails here, saying
        # so, if the bootstrap was not applied.
        app_images = DataAwsEcrRepository(self, "app-images",
                                          name=settings.app_repository_name)

        # Two LBs share Caddy's certificates through S3; one keeps them to itself.
        certificates = (CertificateStore(self, "lb-certificates", CertificateStoreConfig(
            name=prefix)) if balanced else None)
        backups = BackupBucket(self, "backup-bucket", BackupBucketConfig(
            bucket=settings.backup_bucket,
            noncurrent_version_days=settings.backups.retention_days,
            protect=settings.protect_data))

        hosts: dict[str, Host] = {}
        identities: dict[str, HostRole] = {}
        for role in ROLES:
            statements = _permissions(settings, role)
            if role == "app":
                # APP hosts pull the app image with their own role: no registry credential.
                statements += pull_statements(app_images.arn)
            if role == "lb" and certificates:
                statements += certificates.statements()
            if role == "db":
                # pgBackRest's repo2 and the backup metrics.
                statements += (backups.writer_statements()
                               + publisher_statements(BACKUP_METRIC_NAMESPACE))
            identity = identities[role] = HostRole(self, f"{role}-identity", HostRoleConfig(
                name=f"{prefix}-{role}", statements=statements, permissions_boundary=boundary))
            if role == "lb" and certificates:
                certificates.grant(identity.role_arn)
            if role == "db":
                backups.restrict_to(identity.role_arn)
            subnet = network.public_subnet_id if role == "lb" else network.private_subnet_id
            for name, address in zip(settings.host_names(role), settings.private_ips(role)):
                hosts[name] = Host(self, name, HostConfig(
                    name=name, role=role, environment=settings.environment,
                    instance_type=getattr(settings.instance_types, role),
                    ami_id=ubuntu[settings.architecture(role)].id, subnet_id=subnet,
                    security_group_id=groups.ids[role],
                    private_ip=address, instance_profile=identity.instance_profile_name,
                    user_data=user_data.render(
                        settings, role, name,
                        nfs_volume_id=storage.volume_id if role == "nfs" else None,
                        certificate_bucket=(certificates.bucket_name
                                            if role == "lb" and certificates else None)),
                    protect=settings.protect_data and role in DATA_ROLES,
                    # The environment's Elastic IP stays in LB-01's construct whatever the
                    # LB count, so the address survives a change of count; with two LBs
                    # the NLB holds it.
                    public_address=name == "LB-01",
                    attach_public_address=not balanced,
                    public_ip=role == "lb",
                    public_address_after=(network.internet_gateway,) if role == "lb" else (),
                    boot_after=tuple(network.public_egress if role == "lb"
                                     else network.private_egress)))
        storage.attach(hosts["NFS-01"].instance_id)
        ParameterKey(self, "parameter-key", ParameterKeyConfig(
            alias=parameters.secret_key_alias(settings), account_id=account.account_id,
            region=settings.region,
            writers={identity.role_arn: _parameter_arns(settings, role, writer=True)
                     for role, identity in identities.items()
                     if _parameter_arns(settings, role, writer=True)},
            readers={identity.role_arn: _parameter_arns(settings, role, reader=True)
                     for role, identity in identities.items()
                     if _parameter_arns(settings, role, reader=True)}))
        if balanced:
            NetworkLoadBalancer(self, "network-load-balancer", NetworkLoadBalancerConfig(
                name=prefix, vpc_id=network.vpc_id, subnet_id=network.public_subnet_id,
                allocation_id=hosts["LB-01"].public_address_id,
                targets={name: hosts[name].instance_id for name in settings.host_names("lb")}))
        Alarms(self, "alarms", AlarmsConfig(
            name=prefix, region=settings.region, email=settings.alerts.email,
            environment=settings.environment, namespace=BACKUP_METRIC_NAMESPACE,
            backup_age_seconds=BACKUP_AGE_ALARM_SECONDS,
            archive_lag_seconds=ARCHIVE_LAG_ALARM_SECONDS,
            instances={name: host.instance_id for name, host in hosts.items()}))

        TerraformOutput(self, "lb_public_ip", value=hosts["LB-01"].public_ip,
                        description="Point the domain's DNS A record here (the NLB's "
                        "address with two LBs, LB-01's with one)")
        TerraformOutput(self, "hosts", description="Every host by name: role, ID, address",
                        value={name: {"role": host.role, "instance_id": host.instance_id,
                                      "private_ip": host.private_ip}
                               for name, host in hosts.items()})
        TerraformOutput(self, "kibana_url",
                        value=f"http://{settings.private_ips('log')[0]}:{KIBANA_PORT}",
                        description="Reach it through SSM port forwarding or the admin network")
        TerraformOutput(self, "db_password_parameter", value=parameters.db_password(settings))
        TerraformOutput(self, "backup_bucket", value=backups.bucket_name,
                        description="pgBackRest's repo2: DB-01's backups and WAL in S3")


def _parameter_arns(settings: Settings, role: str, *, writer: bool = False,
                    reader: bool = False) -> list[str]:
    """The ARNs of the parameters ``role`` writes, or reads without writing them."""
    return [f"arn:aws:ssm:{settings.region}:*:parameter{parameter.name}"
            for parameter in parameters.catalog(settings)
            if (writer and parameter.writer == role)
            or (reader and role in parameter.readers and parameter.writer != role)]


def _permissions(settings: Settings, role: str) -> list:
    """IAM statements beyond SSM access, per role: the parameters it writes and reads.

    Built from provisioning/parameters.py's catalog. AmazonSSMManagedInstanceCore allows
    ssm:GetParameter(s) on every parameter of the account: the explicit deny takes back all
    but the role's own, and the environment's key policy names the same parameters.
    """
    written = _parameter_arns(settings, role, writer=True)
    readable = written + _parameter_arns(settings, role, reader=True)
    statements = []
    if written:
        statements.append({"sid": "WriteOwnParameters",
                           "actions": ["ssm:PutParameter", "ssm:GetParameter"],
                           "resources": written})
    if readable != written:
        statements.append({"sid": "ReadSharedParameters", "actions": ["ssm:GetParameter"],
                           "resources": readable[len(written):]})
    # A struct, not a dict: jsii drops the snake_case keys of dicts inside lists.
    statements.append(IamStatement(sid="NoOtherParameters", effect="Deny",
                                   actions=["ssm:GetParameter*"],
                                   **({"not_resources": readable} if readable
                                      else {"resources": ["*"]})))
    return statements
