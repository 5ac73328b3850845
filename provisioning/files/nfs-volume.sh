#!/bin/bash
# nfs-volume: make NFS-01's backup volume ready: find it, give it a filesystem only if it is
# blank, mount it persistently, and create the exported backup directory.
#
#   nfs-volume [--no-mount]
#
# The volume is found by its EBS volume ID (VOLUME_ID): Nitro hosts expose EBS volumes as
# NVMe devices whose serial number is the volume ID, whatever device name EC2 was given.
# DEVICE names the device (or image file) directly instead.
#
# Data is never overwritten: the device is formatted only when blkid finds no signature at
# all AND its first MiB is zeros (a new EBS volume). A filesystem is kept and mounted; any
# other content (a partition table, swap, unknown data) stops the script with an error.
# --no-mount stops after the filesystem and the fstab entry (also what the tests use).
set -euo pipefail

: "${VOLUME_ID:=}"
: "${DEVICE:=}"
: "${MOUNT_POINT:=/srv/nfs}"
: "${BACKUP_SUBDIR:=backups}"
# Every NFS client is squashed to this owner (see the export): Ubuntu's "backup" user.
: "${BACKUP_OWNER:=34:34}"
: "${FSTAB:=/etc/fstab}"
: "${FS_LABEL:=nfs-backups}"
: "${DEVICE_WAIT_SECONDS:=600}"

readonly MOUNTABLE_TYPES=" ext4 xfs "

log() { printf 'nfs-volume: %s\n' "$*"; }
die() { printf 'nfs-volume: error: %s\n' "$*" >&2; exit 1; }

# The NVMe device whose serial is the volume ID without its hyphen (vol-0abc -> vol0abc).
find_device() {
    local serial=${VOLUME_ID//-/} deadline=$((SECONDS + DEVICE_WAIT_SECONDS)) path
    [[ $VOLUME_ID =~ ^vol-[0-9a-f]{8,17}$ ]] || die "VOLUME_ID $VOLUME_ID is not an EBS volume ID"
    # The volume is attached after the instance starts: wait for it to appear.
    while ((SECONDS < deadline)); do
        for path in "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$serial" \
            "$(lsblk --nodeps --noheadings --output PATH,SERIAL 2>/dev/null |
                awk -v serial="$serial" '$2 == serial { print $1; exit }')"; do
            if [[ -n $path && -b $path ]]; then
                readlink -f "$path"
                return 0
            fi
        done
        sleep 5
    done
    die "volume $VOLUME_ID did not appear within ${DEVICE_WAIT_SECONDS}s; is it attached?"
}

# Exit status of blkid -p: 0 a signature was found, 2 none was.
probe() {
    local status=0
    blkid --probe --output export "$1" >/dev/null 2>&1 || status=$?
    case $status in
        0) return 0 ;;
        2) return 1 ;;
        *) die "blkid could not read $1 (exit status $status)" ;;
    esac
}

filesystem_type() { blkid --probe --match-tag TYPE --output value "$1" 2>/dev/null || true; }

ensure_filesystem() {
    local device=$1 type
    if ! probe "$device"; then
        if ! cmp --silent --bytes=1048576 "$device" /dev/zero; then
            die "$device holds data blkid does not recognise; not formatting it"
        fi
        log "$device is blank: creating an ext4 filesystem"
        mkfs.ext4 -q -L "$FS_LABEL" "$device"
    fi
    type=$(filesystem_type "$device")
    [[ -n $type && $MOUNTABLE_TYPES == *" $type "* ]] ||
        die "$device holds ${type:-a partition table or another non-filesystem signature}, not a filesystem this host mounts; left untouched"
    log "$device holds a $type filesystem"
}

# One fstab line for the mount point, by UUID; an older line for it is replaced.
persist_mount() {
    local device=$1 uuid type line
    uuid=$(blkid --probe --match-tag UUID --output value "$device")
    type=$(filesystem_type "$device")
    [[ -n $uuid ]] || die "$device has no filesystem UUID"
    # nofail: NFS-01 still boots (and stays reachable over SSM) if the volume is missing.
    line="UUID=$uuid $MOUNT_POINT $type defaults,nofail,x-systemd.device-timeout=120s 0 2"
    if [[ -f $FSTAB ]] && grep -qxF -- "$line" "$FSTAB"; then
        return 0
    fi
    local updated
    updated=$(mktemp "$FSTAB.XXXXXX")
    if [[ -f $FSTAB ]]; then
        awk -v mount_point="$MOUNT_POINT" '$2 != mount_point' "$FSTAB" >"$updated"
    fi
    printf '%s\n' "$line" >>"$updated"
    chmod 0644 "$updated"
    mv -- "$updated" "$FSTAB"
    log "$FSTAB: $line"
}

mount_volume() {
    mkdir -p "$MOUNT_POINT"
    if ! mountpoint -q "$MOUNT_POINT"; then
        mount --target "$MOUNT_POINT" --fstab "$FSTAB"
    fi
    mountpoint -q "$MOUNT_POINT" || die "$MOUNT_POINT is not mounted"
    # On the volume itself, so that the export cannot exist while the volume is missing.
    install -d -m 0750 -o "${BACKUP_OWNER%:*}" -g "${BACKUP_OWNER#*:}" \
        "$MOUNT_POINT/$BACKUP_SUBDIR"
    log "$MOUNT_POINT mounted; $MOUNT_POINT/$BACKUP_SUBDIR ready"
}

main() {
    local device mount=true
    case ${1:-} in
        --no-mount) mount=false ;;
        "") ;;
        *) die "usage: nfs-volume [--no-mount]" ;;
    esac
    if [[ -n $DEVICE ]]; then
        device=$DEVICE
    else
        device=$(find_device)
    fi
    [[ -e $device ]] || die "$device does not exist"
    ensure_filesystem "$device"
    persist_mount "$device"
    if $mount; then mount_volume; fi
}

main "$@"
