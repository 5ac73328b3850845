#!/bin/bash
# app-first-boot: start the app a new APP host should run, at its first boot.
#
# The image is the one the last successful rolling update recorded in SSM Parameter Store
# (DEPLOYED_IMAGE_PARAMETER), so that a host created later (host_count raised, an instance
# replaced) joins on the version the others serve; before any rollout, the configured
# app.image (CONFIGURED_IMAGE); with neither, nothing: the next rolling update deploys it.
# Settings come from the environment, else from /etc/app/deploy.env.
set -euo pipefail

readonly CONFIG_FILE=${APP_DEPLOY_CONFIG:-/etc/app/deploy.env}

# shellcheck source=lib/load-defaults.sh
. "${PLATFORM_LIB:-/usr/local/lib/platform}/load-defaults.sh"
load_defaults "$CONFIG_FILE"

: "${DEPLOYED_IMAGE_PARAMETER:?is not set}"
: "${CONFIGURED_IMAGE:=}"
: "${SSM_PARAMETER:=/usr/local/sbin/ssm-parameter}"
: "${APP_DEPLOY:=/usr/local/bin/app-deploy}"

log() { printf 'app-first-boot: %s\n' "$*"; }

errors=$(mktemp)
trap 'rm -f -- "$errors"' EXIT
if image=$("$SSM_PARAMETER" get "$DEPLOYED_IMAGE_PARAMETER" 2>"$errors"); then
    log "starting $image, the image the last rolling update deployed"
elif grep -q ParameterNotFound "$errors"; then
    image=$CONFIGURED_IMAGE
    if [[ -z $image ]]; then
        log "no rolling update has run yet and app.image is not set: the next rolling" \
            "update starts the app"
        exit 0
    fi
    log "no rolling update has run yet: starting app.image $image"
else
    # Not a missing parameter (no network yet, no permission): fail, so that the boot step
    # is retried and, in the end, named as failed.
    cat "$errors" >&2
    exit 1
fi
exec "$APP_DEPLOY" "$image"
