"""The EBS volume that holds the daily backups, attached to NFS-01."""
from __future__ import annotations

from dataclasses import dataclass

from core.cdk import Construct, EbsVolume, VolumeAttachment

# The device name asked of EC2. Nitro hosts expose the volume as NVMe whatever this says:
# NFS-01 finds it by volume ID (the NVMe serial), never by this name.
DEVICE_NAME = "/dev/sdf"


@dataclass(frozen=True)
class NfsStorageConfig:
    """Inputs of :class:`NfsStorage`.

    size_gb: the volume size (the design's 50 GB). protect: refuse ``terraform destroy``.
    """

    name: str
    environment: str
    availability_zone: str
    size_gb: int = 50
    protect: bool = True


class NfsStorage(Construct):
    """Encrypted gp3 volume in NFS-01's availability zone; :meth:`attach` mounts it on NFS-01.

    The volume exists before its host because NFS-01's user data names the volume ID.
    """

    def __init__(self, scope: Construct, id: str, config: NfsStorageConfig):
        super().__init__(scope, id)
        volume = EbsVolume(
            self, "volume", availability_zone=config.availability_zone, size=config.size_gb,
            type="gp3", encrypted=True,
            tags={"Name": config.name, "Role": "nfs", "Environment": config.environment},
            lifecycle={"prevent_destroy": config.protect})
        self.volume_id = volume.id

    def attach(self, instance_id: str) -> None:
        """Attach the volume to NFS-01."""
        # Stop NFS-01 before a detach so the filesystem is never pulled from under a mount.
        VolumeAttachment(self, "attachment", device_name=DEVICE_NAME, volume_id=self.volume_id,
                         instance_id=instance_id, stop_instance_before_detaching=True)
