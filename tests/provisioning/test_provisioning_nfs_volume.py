"""nfs-volume on real filesystem images: format a blank volume, never anything else.

The script runs as NFS-01 runs it, with DEVICE naming an image file instead of the NVMe
device found by volume ID, and FSTAB and MOUNT_POINT in a temporary directory.
"""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.tools import require_tool
from tests.provisioning.conftest import run_script

IMAGE_SIZE = 32 * 1024 * 1024


def blkid(image: Path, tag: str) -> str:
    return subprocess.run(["blkid", "--probe", "--match-tag", tag, "--output", "value",
                           str(image)], capture_output=True, text=True).stdout.strip()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def volume(tmp_path, clean_env):
    """A blank 32 MiB image (a new EBS volume reads as zeros) and the script's environment."""
    for tool in ("blkid", "mkfs.ext4", "debugfs"):
        require_tool(tool)
    image = tmp_path / "volume.img"
    with image.open("wb") as stream:
        stream.truncate(IMAGE_SIZE)
    env = {**clean_env, "DEVICE": str(image), "FSTAB": str(tmp_path / "fstab"),
           "MOUNT_POINT": str(tmp_path / "srv-nfs")}
    return image, env


def test_a_blank_volume_gets_an_ext4_filesystem_and_an_fstab_entry(volume):
    image, env = volume

    result = run_script("nfs-volume.sh", "--no-mount", env=env, check=True)

    assert "is blank: creating an ext4 filesystem" in result.stdout
    assert blkid(image, "TYPE") == "ext4"
    assert blkid(image, "LABEL") == "nfs-backups"
    uuid = blkid(image, "UUID")
    assert Path(env["FSTAB"]).read_text() == (
        f"UUID={uuid} {env['MOUNT_POINT']} ext4 "
        "defaults,nofail,x-systemd.device-timeout=120s 0 2\n")


def test_running_again_neither_formats_nor_duplicates_the_fstab_entry(volume):
    image, env = volume
    run_script("nfs-volume.sh", "--no-mount", env=env, check=True)
    first = (blkid(image, "UUID"), digest(image), Path(env["FSTAB"]).read_text())

    again = run_script("nfs-volume.sh", "--no-mount", env=env, check=True)

    assert "creating" not in again.stdout
    assert "holds a ext4 filesystem" in again.stdout
    assert (blkid(image, "UUID"), digest(image), Path(env["FSTAB"]).read_text()) == first


def test_a_volume_with_a_filesystem_and_data_is_never_touched(volume, tmp_path):
    image, env = volume
    content = tmp_path / "content"
    content.mkdir()
    (content / "app-20260101T030000Z.dump").write_text("yesterday's backup")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "restored", "-d", str(content), str(image)],
                   check=True)
    before = digest(image)

    result = run_script("nfs-volume.sh", "--no-mount", env=env, check=True)

    assert "creating" not in result.stdout
    assert digest(image) == before  # not one byte written
    assert blkid(image, "LABEL") == "restored"
    backup = subprocess.run(["debugfs", "-R", "cat /app-20260101T030000Z.dump", str(image)],
                            capture_output=True, text=True, check=True).stdout
    assert backup == "yesterday's backup"
    assert f"UUID={blkid(image, 'UUID')} " in Path(env["FSTAB"]).read_text()


@pytest.mark.parametrize("content", ["swap", "partition table", "unknown data"])
def test_a_volume_holding_anything_else_is_refused_and_left_as_it_is(volume, content):
    image, env = volume
    if content == "swap":
        subprocess.run(["mkswap", str(image)], check=True, capture_output=True)
    elif content == "partition table":
        require_tool("sfdisk", "fdisk")
        subprocess.run(["sfdisk", "--quiet", str(image)], input="label: dos\n,,L\n",
                       text=True, check=True, capture_output=True)
    else:
        with image.open("r+b") as stream:
            stream.seek(4096)
            stream.write(b"customer data that no tool recognises" * 100)
    before = digest(image)

    result = run_script("nfs-volume.sh", "--no-mount", env=env)

    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("nfs-volume: error:")
    assert ("not formatting it" in message) if content == "unknown data" else (
        "left untouched" in message)
    assert digest(image) == before
    assert not Path(env["FSTAB"]).exists()


def test_the_fstab_entry_replaces_an_older_one_for_the_mount_point_only(volume):
    image, env = volume
    fstab = Path(env["FSTAB"])
    fstab.write_text("LABEL=cloudimg-rootfs / ext4 discard,errors=remount-ro 0 1\n"
                     f"UUID=0000-old {env['MOUNT_POINT']} ext4 defaults 0 2\n"
                     "tmpfs /scratch tmpfs defaults 0 0\n")

    run_script("nfs-volume.sh", "--no-mount", env=env, check=True)

    lines = fstab.read_text().splitlines()
    assert lines[:2] == ["LABEL=cloudimg-rootfs / ext4 discard,errors=remount-ro 0 1",
                         "tmpfs /scratch tmpfs defaults 0 0"]
    assert lines[2].startswith(f"UUID={blkid(image, 'UUID')} {env['MOUNT_POINT']} ext4 ")
    assert len(lines) == 3


def test_the_volume_id_must_be_an_ebs_volume_id(clean_env):
    result = run_script("nfs-volume.sh", env={**clean_env, "VOLUME_ID": "../../dev/sda"})

    assert result.returncode == 1
    assert "is not an EBS volume ID" in result.stderr


def test_a_volume_that_never_appears_is_reported(clean_env):
    env = {**clean_env, "VOLUME_ID": "vol-0fedcba9876543210", "DEVICE_WAIT_SECONDS": "0"}

    result = run_script("nfs-volume.sh", env=env)

    assert result.returncode == 1
    assert "vol-0fedcba9876543210 did not appear within 0s" in result.stderr


@pytest.mark.e2e
def test_the_volume_is_mounted_with_the_backup_directory_on_it(volume, tmp_path):
    """The whole script, mount included, on a loop device (needs root and loop devices)."""
    image, env = volume
    attach = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                            text=True)
    if attach.returncode != 0:
        pytest.skip(f"no loop device here: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    mount_point = Path(env["MOUNT_POINT"])
    try:
        result = run_script("nfs-volume.sh", env={**env, "DEVICE": device})
        if "mount" in result.stderr and "permission" in result.stderr.lower():
            pytest.skip(f"cannot mount here: {result.stderr.strip()}")
        assert result.returncode == 0, result.stderr
        assert subprocess.run(["mountpoint", "-q", str(mount_point)]).returncode == 0
        backups = mount_point / "backups"
        status = backups.stat()
        assert (status.st_uid, status.st_gid, status.st_mode & 0o777) == (34, 34, 0o750)
        assert (mount_point / "lost+found").is_dir()  # the volume's root, not the empty folder
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)
        subprocess.run(["losetup", "--detach", device], capture_output=True)
