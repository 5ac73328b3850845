#!/bin/bash
# db-backup: the app database's backups on NFS-01, taken and restored on DB-01.
#
#   db-backup create          dump the database (pg_dump -Fc) to NFS-01, then delete the
#                             backups older than RETENTION_DAYS (the daily timer runs this)
#   db-backup list            the backups, oldest first
#   db-backup restore NAME    restore a backup (a file name from `list`, a path, or
#                             `latest`) over the database, in one transaction
#
# A backup is written to a hidden temporary file, checked with pg_restore --list and only
# then renamed to DB-YYYYMMDDTHHMMSSZ.dump: a file with that name is always complete. On any
# failure the command exits non-zero and deletes nothing but its own temporary file.
#
# Settings come from the environment, else from /etc/db/backup.env (written by user data).
# With NFS_SOURCE empty, BACKUP_DIR is used as it is (the tests use a local directory).
set -euo pipefail

readonly CONFIG_FILE=${DB_BACKUP_CONFIG:-/etc/db/backup.env}

# shellcheck source=lib/load-defaults.sh
. "${PLATFORM_LIB:-/usr/local/lib/platform}/load-defaults.sh"
load_defaults "$CONFIG_FILE"

: "${DB_NAME:=app}"
: "${DB_OS_USER:=postgres}"
: "${NFS_SOURCE:=}"
: "${NFS_OPTIONS:=nfsvers=4.2,hard,timeo=600,retrans=2,resvport}"
: "${BACKUP_MOUNT:=/mnt/backups}"
: "${BACKUP_DIR:=$BACKUP_MOUNT}"
: "${RETENTION_DAYS:=14}"
: "${PG_DUMP:=pg_dump}"
: "${PG_RESTORE:=pg_restore}"

readonly STAMP_PATTERN='^[0-9]{8}T[0-9]{6}Z$'
mounted_here=false
partial=""

log() { printf 'db-backup: %s\n' "$*"; }
die() { printf 'db-backup: error: %s\n' "$*" >&2; exit 1; }

cleanup() {
    [[ -z $partial ]] || rm -f -- "$partial"
    if $mounted_here && ! umount "$BACKUP_MOUNT"; then
        log "warning: could not unmount $BACKUP_MOUNT"
    fi
}
trap cleanup EXIT

[[ $RETENTION_DAYS =~ ^[1-9][0-9]*$ ]] || die "RETENTION_DAYS must be a whole number >= 1"

# Database tools run as the database's OS user (peer authentication on the local socket).
as_db_user() {
    if [[ -n $DB_OS_USER ]]; then
        runuser -u "$DB_OS_USER" -- "$@"
    else
        "$@"
    fi
}

# NFS-01's export is mounted only while a command needs it.
mount_backups() {
    [[ -n $NFS_SOURCE ]] || return 0
    mkdir -p "$BACKUP_MOUNT"
    if ! mountpoint -q "$BACKUP_MOUNT"; then
        mount -t nfs4 -o "$NFS_OPTIONS" "$NFS_SOURCE" "$BACKUP_MOUNT" ||
            die "cannot mount $NFS_SOURCE on $BACKUP_MOUNT"
        mounted_here=true
    fi
}

# The complete backups of DB_NAME, oldest first (the time stamp sorts as text).
backups() {
    local file stamp
    for file in "$BACKUP_DIR/$DB_NAME"-*.dump; do
        [[ -f $file ]] || continue
        stamp=${file##*/"$DB_NAME"-}
        stamp=${stamp%.dump}
        # Anything else in the directory is not ours to list or delete.
        [[ $stamp =~ $STAMP_PATTERN ]] && printf '%s\n' "$file"
    done
    return 0
}

delete_expired() {
    local cutoff file stamp
    cutoff=$(date -u -d "@$(($(date +%s) - RETENTION_DAYS * 86400))" +%Y%m%dT%H%M%SZ)
    while read -r file; do
        stamp=${file##*/"$DB_NAME"-}
        stamp=${stamp%.dump}
        if [[ $stamp < $cutoff ]]; then
            rm -f -- "$file"
            log "deleted $file (older than $RETENTION_DAYS days)"
        fi
    done < <(backups)
}

create() {
    local stamp final
    mount_backups
    [[ -d $BACKUP_DIR && -w $BACKUP_DIR ]] || die "$BACKUP_DIR is missing or not writable"
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    final="$BACKUP_DIR/$DB_NAME-$stamp.dump"
    [[ ! -e $final ]] || die "$final already exists"
    partial="$BACKUP_DIR/.$DB_NAME-$stamp.dump.partial"
    log "dumping database $DB_NAME to $final"
    # The file is opened by this shell (root), so the dump never needs write access to NFS.
    as_db_user "$PG_DUMP" --format=custom --no-password "$DB_NAME" >"$partial" ||
        die "pg_dump of $DB_NAME failed; no backup written, older backups kept"
    "$PG_RESTORE" --list "$partial" >/dev/null ||
        die "the dump of $DB_NAME is not a readable archive; older backups kept"
    sync -- "$partial"
    mv -- "$partial" "$final"
    partial=""
    log "wrote $final ($(stat -c %s "$final") bytes)"
    delete_expired
}

list() {
    local file
    mount_backups
    while read -r file; do
        printf '%s\t%s bytes\n' "${file##*/}" "$(stat -c %s "$file")"
    done < <(backups)
}

restore() {
    local choice=${1:-} file
    [[ -n $choice ]] || die "usage: db-backup restore NAME|PATH|latest"
    mount_backups
    if [[ $choice == latest ]]; then
        file=$(backups | tail -n 1)
        [[ -n $file ]] || die "no backup of $DB_NAME in $BACKUP_DIR"
    elif [[ $choice == */* ]]; then
        file=$choice
    else
        file="$BACKUP_DIR/$choice"
    fi
    [[ -f $file ]] || die "no such backup: $file (see: db-backup list)"
    "$PG_RESTORE" --list "$file" >/dev/null || die "$file is not a readable pg_dump archive"
    log "restoring $file over database $DB_NAME"
    # --clean drops each object of the backup before re-creating it; one transaction, so a
    # failed restore leaves the database as it was.
    as_db_user "$PG_RESTORE" --clean --if-exists --single-transaction --exit-on-error \
        --no-password --dbname "$DB_NAME" <"$file" ||
        die "restore of $file failed; database $DB_NAME left unchanged"
    log "restored $DB_NAME from $file"
}

case ${1:-} in
    create) create ;;
    list) list ;;
    restore) restore "${2:-}" ;;
    *)
        sed -n '2,10s/^# \{0,1\}//p' "$0" >&2
        exit 2
        ;;
esac
