#!/bin/bash
# boot-step: run one first-boot step of this host so that its failure is loud.
#
#   boot-step NAME [--attempts N] [--retry-seconds S] -- COMMAND [ARG...]
#
# Each step of a host's first boot is a file in /var/lib/cloud/scripts/per-instance/
# (NN-NAME, written by user data) that cloud-init runs once, in order, and that calls this.
# The step runs as the transient systemd unit boot-NAME.service, its output in the journal
# (journalctl -u boot-NAME):
#   - it succeeds: the unit finishes and is unloaded;
#   - it fails (after N attempts, S seconds apart): the unit is left failed
#     (`systemctl --failed`), this exits 1 so that cloud-init reports the step's file by name
#     (`cloud-init status --long`: "Runparts: 1 failures (NN-NAME)"), and every later step
#     of the boot does not run, saying which step failed (and exits 0, so that cloud-init
#     names only the step that failed). The failed step's last log lines are repeated in
#     /var/log/cloud-init-output.log.
# A step already done is not run again, so after fixing the cause an operator resumes the
# boot with: sudo rm /var/lib/platform-boot/failed; sudo run-parts /var/lib/cloud/scripts/per-instance
#
#   boot-step --complete
#
# The boot's last script: records that every step succeeded in BOOT_STATE_DIR/complete
# (unless one failed). cloud-init's own status is fixed for the whole boot and stays "error"
# after a resumed boot; the rolling update's readiness check reads this file instead.
set -euo pipefail

: "${SYSTEMD_RUN:=systemd-run}"
: "${SYSTEMCTL:=systemctl}"
: "${JOURNALCTL:=journalctl}"
: "${BOOT_STATE_DIR:=/var/lib/platform-boot}"

readonly USAGE="usage: boot-step NAME [--attempts N] [--retry-seconds S] -- COMMAND [ARG...] | --complete"

log() { printf 'boot-step: %s\n' "$*"; }
die() { printf 'boot-step: error: %s\n' "$*" >&2; exit 1; }

if [[ ${1:-} == --complete && $# -eq 1 ]]; then
    mkdir -p "$BOOT_STATE_DIR"
    if [[ -f $BOOT_STATE_DIR/failed ]]; then
        printf 'boot-step: the boot is not complete: boot step %s failed\n' \
            "$(cat "$BOOT_STATE_DIR/failed")" >&2
        exit 0
    fi
    date -u +%Y-%m-%dT%H:%M:%SZ >"$BOOT_STATE_DIR/complete"
    log "every boot step is done"
    exit 0
fi

name=${1:-}
[[ $name =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || die "$USAGE"
shift
attempts=1
retry_seconds=30
while (($#)); do
    case $1 in
        --attempts) attempts=${2:-}; shift 2 || die "$USAGE" ;;
        --retry-seconds) retry_seconds=${2:-}; shift 2 || die "$USAGE" ;;
        --) shift; break ;;
        *) die "$USAGE" ;;
    esac
done
(($#)) || die "$USAGE"
[[ $attempts =~ ^[1-9][0-9]*$ && $retry_seconds =~ ^[0-9]+$ ]] || die "$USAGE"

unit="boot-$name.service"
mkdir -p "$BOOT_STATE_DIR"
if [[ -f $BOOT_STATE_DIR/failed ]]; then
    # Not a failure of its own: cloud-init's error then names the one step that failed.
    printf 'boot-step: %s not run: boot step %s failed before it\n' "$name" \
        "$(cat "$BOOT_STATE_DIR/failed")" >&2
    exit 0
fi
if grep -qxF -- "$name" "$BOOT_STATE_DIR/done" 2>/dev/null; then
    log "$name: done at an earlier run"
    exit 0
fi

attempt=1
while true; do
    # A unit name can be used again only once its failed state is cleared.
    "$SYSTEMCTL" reset-failed "$unit" >/dev/null 2>&1 || true
    log "$name: starting (attempt $attempt of $attempts) as $unit"
    # Type=oneshot: no start timeout. --wait returns the command's exit status; a unit that
    # succeeded is unloaded, one that failed stays loaded in the failed state.
    if "$SYSTEMD_RUN" --unit="$unit" --description="First boot step $name" \
        --property=Type=oneshot --setenv=HOME=/root --wait --quiet -- "$@"; then
        printf '%s\n' "$name" >>"$BOOT_STATE_DIR/done"
        log "$name: done"
        exit 0
    fi
    "$JOURNALCTL" --unit="$unit" --lines=30 --no-pager --output=cat 2>/dev/null || true
    ((attempt < attempts)) || break
    log "$name: failed; retrying in ${retry_seconds}s"
    sleep "$retry_seconds"
    attempt=$((attempt + 1))
done
printf '%s\n' "$name" >"$BOOT_STATE_DIR/failed"
die "$name failed (attempt $attempt of $attempts); the boot stops here. See" \
    "systemctl status $unit and /var/log/cloud-init-output.log"
