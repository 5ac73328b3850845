"""One EC2 host, hardened the same way whatever its role."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Optional

from core.cdk import Construct, DataAwsAmi, Eip, Instance

# Ubuntu 24.04 LTS, published by Canonical: cloud-init, the SSM agent and current PostgreSQL,
# Docker and NFS packages in its archive, and security updates until 2029.
UBUNTU_OWNER = "099720692109"
# Canonical names its images by Debian architecture; EC2 filters by its own name.
UBUNTU_ARCHITECTURES = {"x86_64": "amd64", "arm64": "arm64"}
UBUNTU_IMAGE_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{}-server-*"


class UbuntuAmi(Construct):
    """The newest Ubuntu 24.04 LTS image for one architecture, looked up at plan time.

    architecture: EC2's name, ``x86_64`` or ``arm64`` (Graviton instance types).
    """

    def __init__(self, scope: Construct, id: str, architecture: str = "x86_64"):
        super().__init__(scope, id)
        image = DataAwsAmi(self, "image", most_recent=True, owners=[UBUNTU_OWNER], filter=[
            {"name": "name",
             "values": [UBUNTU_IMAGE_NAME.format(UBUNTU_ARCHITECTURES[architecture])]},
            {"name": "architecture", "values": [architecture]},
            {"name": "virtualization-type", "values": ["hvm"]},
        ])
        self.id = image.id


# The placeholder a CDK token (a reference such as a volume ID) takes inside a Python string,
# the same in cdktf and CDK Terrain; the engine replaces it with ${resource.attribute}.
_CDK_TOKEN = re.compile(r"\$\{TfToken\[[^\]]+\]\}")
# Backslash, quote and every control character, escaped as HCL reads them.
_HCL_ESCAPES = str.maketrans({
    **{chr(code): f"\\u{code:04x}" for code in range(0x20)},
    "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _hcl_literal(text: str) -> str:
    """``text`` inside an HCL quoted string: escaped, and ``${``/``%{`` made literal."""
    escaped = text.translate(_HCL_ESCAPES)
    escaped = escaped.replace("${", "$${").replace("%{", "%%{")
    # "$$${" or "%%%{" could be read two ways; no host file needs one.
    if "$$$" in escaped or "%%%" in escaped:
        raise ValueError("user data may not contain '$${' or '%%{'")
    return escaped


def user_data_digest(text: str) -> str:
    """SHA-256 of user data as generated, each reference it holds counted as a placeholder.

    Computed here rather than by Terraform so the plan carries the user data once, not twice;
    a reference's value (NFS-01's volume ID) changing shows in the plan by itself.
    """
    return hashlib.sha256(_CDK_TOKEN.sub("${reference}", text).encode()).hexdigest()


def terraform_string(text: str) -> str:
    """An HCL quoted string of ``text``: literal, except the CDK tokens it contains.

    cdktf's Fn helpers refuse or mangle text with quotes, backslashes or ``${`` (any shell
    script), so the user data's function calls are written as Terraform expressions here.
    """
    parts, position = [], 0
    for token in _CDK_TOKEN.finditer(text):
        parts += [_hcl_literal(text[position:token.start()]), token.group()]
        position = token.end()
    parts.append(_hcl_literal(text[position:]))
    return '"' + "".join(parts) + '"'


@dataclass(frozen=True)
class HostConfig:
    """Inputs of :class:`Host`.

    name: the design's host name (``LB-01``, ``APP-2``...); role: ``lb``, ``app``, ``db``,
    ``nfs`` or ``log``; environment: tagged so the rolling update can find the host.
    private_ip: fixed address in the subnet. user_data: the cloud-config run at first boot.
    protect: refuse API termination and ``terraform destroy`` (hosts that hold data).
    public_address: allocate the environment's Elastic IP here (LB-01 only), so that its
        Terraform address, and the IP itself, survive a change of load balancer count.
    attach_public_address: associate that Elastic IP with this instance; False leaves it to
        the Network Load Balancer's subnet mapping (two LBs).
    public_ip: a public IPv4 address at launch, for a host of a public subnet (the LBs): its
        first boot reaches the internet through the internet gateway. The environment's
        Elastic IP, when attached, takes its place; with two LBs, each keeps its own.
    boot_after: resources that must exist before the host boots, such as its subnet's route
        to the internet (first boot installs packages).
    public_address_after: resources the Elastic IP's association waits for: the VPC's
        internet gateway (AWS refuses the association without one).
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
    attach_public_address: bool = True
    public_ip: bool = False
    boot_after: tuple = ()
    public_address_after: tuple = ()


class Host(Construct):
    """EC2 instance: IMDSv2 only, encrypted gp3 root, SSM instead of SSH, no key pair."""

    def __init__(self, scope: Construct, id: str, config: HostConfig):
        super().__init__(scope, id)
        user_data = terraform_string(config.user_data)
        instance = Instance(
            self, "instance",
            ami=config.ami_id,
            instance_type=config.instance_type,
            subnet_id=config.subnet_id,
            vpc_security_group_ids=[config.security_group_id],
            private_ip=config.private_ip,
            associate_public_ip_address=config.public_ip,
            iam_instance_profile=config.instance_profile,
            # Gzipped by Terraform: the APP hosts' cloud-config is larger than EC2's 16 KB
            # limit as plain text; cloud-init unpacks it.
            user_data_base64=f"${{base64gzip({user_data})}}",
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
                # running host, so the instance ignores it; this tag (of the plain text, so
                # it does not depend on the compressor) makes the change visible in the plan
                # as an in-place tag update (see docs/hosts.md).
                "UserDataSha256": user_data_digest(config.user_data),
            },
            lifecycle={"ignore_changes": ["ami", "user_data_base64"],
                       "prevent_destroy": config.protect},
            depends_on=list(config.boot_after) or None,
        )
        self.role = config.role
        self.instance_id = instance.id
        self.private_ip = instance.private_ip
        self.public_ip: Optional[str] = None
        if config.public_address:
            address = Eip(self, "public-address", domain="vpc",
                          instance=instance.id if config.attach_public_address else None,
                          tags={"Name": f"{config.environment}-{config.name}"},
                          depends_on=list(config.public_address_after) or None)
            self.public_ip = address.public_ip
            self.public_address_id = address.id
