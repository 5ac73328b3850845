"""Cloud-config user data for each role, generated from the environment's settings."""
from __future__ import annotations

from typing import Optional

import yaml

from core.settings import Settings


def render(settings: Settings, role: str, host_name: str, *,
           nfs_volume_id: Optional[str] = None) -> str:
    """The cloud-config that turns a fresh Ubuntu host into ``host_name`` of ``role``.

    nfs_volume_id: NFS-01 only, the ID of its backup volume (a Terraform reference).
    """
    document = {
        "hostname": host_name.lower(),
        "package_update": True,
        "package_upgrade": True,
        "packages": ["unattended-upgrades"],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)
