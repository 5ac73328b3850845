"""One EC2 host, hardened the same way whatever its role."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from core.cdk import Construct, DataAwsAmi, Eip, Fn, Instance

# Ubuntu 24.04 LTS, published by Canonical: cloud-init, the SSM agent and current PostgreSQL,
# Docker and NFS packages in its archive, and security updates until 2029.
UBUNTU_OWNER = "099720692109"
UBUNTU_IMAGE_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"


class UbuntuAmi(Construct):
    """The newest Ubuntu 24.04 LTS image for x86_64, looked up at plan time."""

    def __init__(self, scope: Construct, id: str):
        super().__init__(scope, id)
        image = DataAwsAmi(self, "image", most_recent=True, owners=[UBUNTU_OWNER], filter=[
            {"name": "name", "values": [UBUNTU_IMAGE_NAME]},
            {"name": "architecture", "values": ["x86_64"]},
            {"name": "virtualization-type", "values": ["hvm"]},
        ])
        self.id = image.id


@dataclass(frozen=True)
class HostConfig:
    """Inputs of :class:`Host`.

    name: the design's host name (``LB-01``, ``APP-2``...); role: ``lb``, ``app``, ``db``,
    ``nfs`` or ``log``; environment: tagged so the rolling update can find the host.
    private_ip: fixed address in the subnet. user_data: the cloud-config run at first boot.
    protect: refuse API termination and ``terraform destroy`` (hosts that hold data).
    public_address: give the host an Elastic IP (LB-01 only).
    """

    name: str
    role: str
    environment: str
    instance_type: str
    ami_id: str
    subnet_id: str
    security_group_id: str
    private_ip: str
    instance_profile: str
    user_data: str
    root_volume_gb: int = 20
    protect: bool = False
    public_address: bool = False


class Host(Construct):
    """EC2 instance: IMDSv2 only, encrypted gp3 root, SSM instead of SSH, no key pair."""

    def __init__(self, scope: Construct, id: str, config: HostConfig):
        super().__init__(scope, id)
        instance = Instance(
            self, "instance",
            ami=config.ami_id,
            instance_type=config.instance_type,
            subnet_id=config.subnet_id,
            vpc_security_group_ids=[config.security_group_id],
            private_ip=config.private_ip,
            iam_instance_profile=config.instance_profile,
            user_data=config.user_data,
            monitoring=True,
            ebs_optimized=True,
            disable_api_termination=config.protect,
            metadata_options={"http_endpoint": "enabled", "http_tokens": "required",
                              "http_put_response_hop_limit": 1,
                              "instance_metadata_tags": "disabled"},
            root_block_device={"volume_type": "gp3", "volume_size": config.root_volume_gb,
                               "encrypted": True, "delete_on_termination": True},
            tags={
                "Name": f"{config.environment}-{config.name}",
                "Role": config.role,
                "Environment": config.environment,
                # User data runs at first boot only. A change must not silently replace a
                # running host, so the instance ignores it; this tag makes the change visible
                # in the plan as an in-place tag update (see the README).
                "UserDataSha256": Fn.sha256(config.user_data),
            },
            lifecycle={"ignore_changes": ["ami", "user_data"],
                       "prevent_destroy": config.protect},
        )
        self.role = config.role
        self.instance_id = instance.id
        self.private_ip = instance.private_ip
        self.availability_zone = instance.availability_zone
        self.public_ip: Optional[str] = None
        if config.public_address:
            address = Eip(self, "public-address", domain="vpc", instance=instance.id,
                          tags={"Name": f"{config.environment}-{config.name}"})
            self.public_ip = address.public_ip
