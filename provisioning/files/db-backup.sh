#!/bin/bash
# db-backup: DB-01's backups with pgBackRest, in two repositories: repo1 on NFS-01 (mounted
# Usage is code, not a header comment: user data leaves comment lines out.
set -euo pipefail

usage() {
    printf '%s\n' \
        "db-backup: DB-01's backups with pgBackRest, in two repositories: repo1 on NFS-01 (mounted" \
        "at BACKUP_MOUNT), repo2 in the environment's S3 bucket. WAL is archived continuously by" \
        "PostgreSQL's archive_command; these commands take, check and restore the backups." \
        '' \
        '  db-backup init                       create the stanza in both repositories (first boot)' \
        '  db-backup backup full|diff [--repo 1|2]' \
        '                                       a backup to repo1, then to repo2 (the timers run it)' \
        '  db-backup check                      pgbackrest check and verify, expire old dumps (daily)' \
        '  db-backup info                       the backups and WAL of each repository' \
        '  db-backup restore --latest|--to TIME [--repo 1|2]' \
        '                                       stop PostgreSQL, restore the cluster to the newest' \
        '                                       archived WAL or to TIME ("2026-12-01 10:31:07+00"),' \
        '                                       start it and wait until it accepts writes' \
        '' \
        'The daily pg_dump files of earlier versions stay restorable until they age out:' \
        '  db-backup dumps | dump | dump-restore NAME|PATH|latest' \
        '' \
        'A dump is written to a hidden temporary file, checked with pg_restore --list and only then' \
        'renamed to DB-YYYYMMDDTHHMMSSZ.dump: a file with that name is always complete.' \
        '' \
        'Settings come from the environment, else from /etc/db/backup.env (written by user data).' \
        'With NFS_SOURCE empty, BACKUP_DIR is used without checking that NFS-01 is mounted there.'
}

readonly CONFIG_FILE=${DB_BACKUP_CONFIG:-/etc/db/backup.env}

# shellcheck source=lib/load-defaults.sh
. "${PLATFORM_LIB:-/usr/local/lib/platform}/load-defaults.sh"
load_defaults "$CONFIG_FILE"

: "${DB_NAME:=app}"
: "${DB_OS_USER:=postgres}"
: "${NFS_SOURCE:=}"
: "${BACKUP_MOUNT:=/mnt/backups}"
: "${BACKUP_DIR:=$BACKUP_MOUNT}"
: "${RETENTION_DAYS:=14}"
: "${PG_DUMP:=pg_dump}"
: "${PG_RESTORE:=pg_restore}"
: "${PGBACKREST:=pgbackrest}"
: "${PGBACKREST_CONFIG:=/etc/pgbackrest/pgbackrest.conf}"
: "${STANZA:=main}"
: "${PG_DATA:=/var/lib/postgresql/16/main}"
: "${CLUSTER_UNIT:=postgresql@16-main.service}"
: "${SYSTEMCTL:=systemctl}"
: "${PSQL:=psql}"
: "${RESTORE_WAIT_SECONDS:=3600}"

readonly STAMP_PATTERN='^[0-9]{8}T[0-9]{6}Z$'
partial=""

log() { printf 'db-backup: %s\n' "$*"; }
die() { printf 'db-backup: error: %s\n' "$*" >&2; exit 1; }

cleanup() {
    [[ -z $partial ]] || rm -f -- "$partial"
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

pgbackrest() {
    as_db_user "$PGBACKREST" "--config=$PGBACKREST_CONFIG" "--stanza=$STANZA" "$@"
}

# NFS-01's export is mounted by systemd (mnt-backups.mount); repo1 and the dumps live there.
require_mount() {
    [[ -z $NFS_SOURCE ]] || mountpoint -q "$BACKUP_MOUNT" ||
        die "$BACKUP_MOUNT is not mounted: is NFS-01 up? (systemctl status mnt-backups.mount)"
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

dump() {
    local stamp final
    require_mount
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

dumps() {
    local file
    require_mount
    while read -r file; do
        printf '%s\t%s bytes\n' "${file##*/}" "$(stat -c %s "$file")"
    done < <(backups)
}

dump_restore() {
    local choice=${1:-} file
    [[ -n $choice ]] || die "usage: db-backup dump-restore NAME|PATH|latest"
    require_mount
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

init() {
    local attempt
    # stanza-create is refused while an asynchronous archive-push holds its lock: try again.
    for attempt in 1 2 3 4 5; do
        if pgbackrest stanza-create; then
            log "stanza $STANZA ready in every repository"
            return 0
        fi
        sleep $((attempt * 5))
    done
    die "stanza-create failed; if this is a rebuilt DB-01, restore it: db-backup restore --latest"
}

backup() {
    local type=${1:-} repos=(1 2) repo failed=()
    [[ $type == full || $type == diff ]] || die "usage: db-backup backup full|diff [--repo 1|2]"
    if [[ ${2:-} == --repo ]]; then
        [[ ${3:-} == 1 || ${3:-} == 2 ]] || die "--repo is 1 (NFS-01) or 2 (S3), not '${3:-}'"
        repos=("$3")
    fi
    # One repository at a time, each to the end: a dead NFS-01 must not cost the S3 copy.
    for repo in "${repos[@]}"; do
        if pgbackrest "--repo=$repo" "--type=$type" backup; then
            log "$type backup to repo$repo done"
        else
            failed+=("repo$repo")
        fi
    done
    ((${#failed[@]} == 0)) || die "$type backup failed in ${failed[*]}"
}

check() {
    local repo failed=()
    pgbackrest check || failed+=("check")
    for repo in 1 2; do
        pgbackrest "--repo=$repo" verify || failed+=("verify repo$repo")
    done
    if [[ -z $NFS_SOURCE ]] || mountpoint -q "$BACKUP_MOUNT"; then
        delete_expired
    fi
    ((${#failed[@]} == 0)) || die "failed: ${failed[*]}"
    log "archive and backups of $STANZA check out in every repository"
}

wait_until_open() {
    local deadline=$((SECONDS + RESTORE_WAIT_SECONDS)) state
    until state=$(as_db_user "$PSQL" -X -A -t -q -d postgres \
        -c 'SELECT pg_is_in_recovery()' 2>/dev/null) && [[ $state == f ]]; do
        ((SECONDS < deadline)) ||
            die "PostgreSQL did not finish recovery within ${RESTORE_WAIT_SECONDS}s; see its log"
        sleep 1
    done
}

restore() {
    local target="" repo=1 options
    while (($#)); do
        case $1 in
            --latest) target=latest ;;
            --to) target=${2:-}; shift ;;
            --repo) repo=${2:-}; shift ;;
            *) die "usage: db-backup restore --latest|--to TIME [--repo 1|2]" ;;
        esac
        shift
    done
    [[ -n $target ]] || die "usage: db-backup restore --latest|--to TIME [--repo 1|2]"
    [[ $repo == 1 || $repo == 2 ]] || die "--repo is 1 (NFS-01) or 2 (S3), not '$repo'"
    if [[ $target != latest ]]; then
        date -u -d "$target" >/dev/null 2>&1 ||
            die "--to '$target' is not a time such as '2026-12-01 10:31:07+00'"
    fi
    # WAL comes from the same repository as the backup: with NFS-01 gone, repo2 alone.
    options=("--repo=$repo" --delta
        "--recovery-option=restore_command=$PGBACKREST --config=$PGBACKREST_CONFIG --stanza=$STANZA --repo=$repo archive-get %f \"%p\"")
    if [[ $target == latest ]]; then
        options+=(--type=default)
    else
        options+=(--type=time "--target=$target" --target-action=promote)
    fi
    log "stopping $CLUSTER_UNIT"
    "$SYSTEMCTL" stop "$CLUSTER_UNIT"
    if [[ ! -d $PG_DATA ]]; then
        install -d -m 0700 ${DB_OS_USER:+-o "$DB_OS_USER" -g "$DB_OS_USER"} "$PG_DATA"
    fi
    log "restoring $PG_DATA from repo$repo to ${target/latest/the newest archived WAL}"
    pgbackrest "${options[@]}" restore || die "pgbackrest restore failed; $CLUSTER_UNIT stopped"
    "$SYSTEMCTL" start "$CLUSTER_UNIT"
    wait_until_open
    log "restored from repo$repo; PostgreSQL is open for writes"
}

case ${1:-} in
    init) init ;;
    backup) backup "${2:-}" "${3:-}" "${4:-}" ;;
    check) check ;;
    info) pgbackrest info ;;
    restore) shift; restore "$@" ;;
    dump) dump ;;
    dumps) dumps ;;
    dump-restore) dump_restore "${2:-}" ;;
    *)
        usage >&2
        exit 2
        ;;
esac
