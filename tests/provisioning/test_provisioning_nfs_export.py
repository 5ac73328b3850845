"""NFS-01's export and DB-01's mount options, read the way Linux reads them.

The export line is loaded by the real ``exportfs`` (nfs-kernel-server) in a private mount
namespace, where ``/etc/exports`` and ``/var/lib/nfs`` are the test's own files: the export
table it writes (``etab``) holds every option the kernel would apply, defaults included
(``secure``, ``root_squash``...). DB-01's mount options must be ones that export accepts.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from provisioning import user_data
from provisioning.cloud_config import file_text
from tests.provisioning.conftest import written_file
from tests.tools import _missing, require_tool

pytestmark = pytest.mark.e2e


def exported_options(export_text: str, tmp_path) -> dict[str, dict[str, str]]:
    """``{client: {option: value}}`` of each export, as the real exportfs resolves them."""
    exportfs = require_tool("exportfs", "nfs-kernel-server")
    unshare = require_tool("unshare", "util-linux")
    # Root, for a private mount namespace over /etc/exports: CI's runner has password-less sudo.
    become_root = []
    if os.geteuid() != 0:
        if subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
            _missing("exportfs needs root (a private mount namespace over /etc/exports)")
        become_root = ["sudo", "-n"]
    root = tmp_path / "srv-nfs"
    (root / user_data.BACKUP_SUBDIR).mkdir(parents=True)
    state = tmp_path / "state"
    state.mkdir()
    exports = tmp_path / "exports"
    exports.write_text(export_text.replace(user_data.NFS_ROOT, str(root)))
    # mp= exports only a mounted volume: give the export root a file system of its own.
    script = (f"set -e; mount -t tmpfs tmpfs {root}; mkdir {root}/{user_data.BACKUP_SUBDIR}; "
              f"mount --bind {state} /var/lib/nfs; mount --bind {exports} /etc/exports; "
              f"{exportfs} -ra; cat /var/lib/nfs/etab")
    result = subprocess.run([*become_root, unshare, "--mount", "--propagation", "private",
                             "sh", "-c", script],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), f"exportfs complained: {result.stderr}"
    table = {}
    for line in result.stdout.splitlines():
        path, entry = line.split("\t")
        assert path == f"{root}/{user_data.BACKUP_SUBDIR}"
        client, options = re.fullmatch(r"(.+)\((.*)\)", entry).groups()
        table[client] = dict(option.partition("=")[::2] for option in options.split(","))
    return table


def mount_options(cloud_config: dict) -> dict[str, str]:
    """DB-01's NFS mount options, from wherever its user data mounts NFS-01's export:
    the systemd mount unit, else (older versions) db-backup's own default."""
    units = [entry["content"] for entry in cloud_config["write_files"]
             if entry["path"].endswith(".mount") and "Type=nfs" in entry["content"]]
    if units:
        (unit,) = units
        options = re.search(r"^Options=(.+)$", unit, re.M)[1]
    else:
        options = re.search(r'NFS_OPTIONS:=([^}]*)\}', file_text("db-backup.sh")).group(1)
    return dict(option.partition("=")[::2] for option in options.split(","))


def test_db01_mount_options_are_accepted_by_nfs01_export(production, cloud_configs, tmp_path):
    table = exported_options(user_data.nfs_exports(production), tmp_path)
    db_address = production.private_ips("db")[0]
    assert list(table) == [f"{db_address}/32"], "exported to DB-01 alone"
    export = table[f"{db_address}/32"]
    client = mount_options(cloud_configs["db"])
    # secure: the server refuses requests from source ports >= 1024, which noresvport uses.
    if "secure" in export:
        assert "noresvport" not in client, (
            "DB-01 mounts with noresvport while NFS-01 exports with 'secure': every mount fails")
    else:
        assert "insecure" in export
    # NFS-01 serves NFSv4 only (vers3=n): the client must ask for version 4.
    assert client["nfsvers"].startswith("4")
    assert "rw" in export and "all_squash" in export
    assert (export["anonuid"], export["anongid"]) == tuple(user_data.BACKUP_OWNER.split(":"))


def test_db01_mounts_nfs01_export_once_with_those_options(production, cloud_configs):
    unit = written_file(cloud_configs["db"], f"/etc/systemd/system/{user_data.BACKUP_MOUNT_UNIT}")
    assert f"What={user_data.nfs_source(production)}\n" in unit["content"]
    assert f"Options={user_data.NFS_MOUNT_OPTIONS}\n" in unit["content"]
    assert "mount -t" not in file_text("db-backup.sh")
