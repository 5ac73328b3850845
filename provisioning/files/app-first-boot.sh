#!/bin/bash
# app-first-boot: at an APP host's first boot, start the image the last rolling update
# recorded (DEPLOYED_IMAGE_PARAMETER), else app.image (CONFIGURED_IMAGE), else nothing.
set -euo pipefail

# shellcheck source=lib/load-defaults.sh
. "${PLATFORM_LIB:-/usr/local/lib/platform}/load-defaults.sh"
load_defaults "${APP_DEPLOY_CONFIG:-/etc/app/deploy.env}"
: "${DEPLOYED_IMAGE_PARAMETER:?is not set}" "${CONFIGURED_IMAGE:=}"

log() { printf 'app-first-boot: %s\n' "$*"; }
errors=$(mktemp)
trap 'rm -f -- "$errors"' EXIT
if image=$("${SSM_PARAMETER:-/usr/local/sbin/ssm-parameter}" get \
    "$DEPLOYED_IMAGE_PARAMETER" 2>"$errors"); then
    log "starting $image, the image the last rolling update deployed"
elif grep -q ParameterNotFound "$errors"; then
    image=$CONFIGURED_IMAGE
    if [[ -z $image ]]; then
        log "no image yet: the next rolling update starts the app"
        exit 0
    fi
    log "no rolling update has run yet: starting app.image $image"
else
    # SSM unreachable or refused: fail, so that the boot step is retried, then named.
    cat "$errors" >&2
    exit 1
fi
exec "${APP_DEPLOY:-/usr/local/bin/app-deploy}" "$image"
