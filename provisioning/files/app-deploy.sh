#!/bin/bash
# app-deploy: move this APP host's app container to another image without losing a request.
# Usage is code, not a header comment: user data leaves comment lines out.
# The rolling update (rollout/contract.py) relies on exactly this behaviour. Settings come
# from the environment, else from /etc/app/deploy.env, which the host's user data writes.
set -euo pipefail

usage() {
    printf '%s\n' \
        "app-deploy: move this APP host's app container to another image without losing a request." \
        '' \
        '  app-deploy IMAGE        drain (unless drained already), pull, stop the old container' \
        '                          gracefully, start IMAGE, wait for its health, undrain; on failure' \
        '                          restore the old image and exit 1 with one line on stderr' \
        '  app-deploy --rollback   the same, back to the image recorded as previous' \
        '  app-deploy drain        set the drain switch and wait until the load balancer has' \
        '                          stopped sending requests (DRAIN_SECONDS after it was set)' \
        '  app-deploy undrain      clear the drain switch' \
        '  app-deploy status       one JSON line: {"image", "previous", "drained", "healthy"}'
}

readonly CONFIG_FILE=${APP_DEPLOY_CONFIG:-/etc/app/deploy.env}

# shellcheck source=lib/load-defaults.sh
. "${PLATFORM_LIB:-/usr/local/lib/platform}/load-defaults.sh"
load_defaults "$CONFIG_FILE"

: "${APP_CONTAINER:=app}"
: "${APP_PORT:=5000}"
: "${APP_HEALTH_URL:=http://127.0.0.1:${APP_PORT}/health}"
: "${APP_ENV_FILE:=/etc/app/app.env}"
: "${RUN_DIR:=/run/app}"
: "${DRAIN_FILE:=$RUN_DIR/drain}"
: "${LOCK_FILE:=$RUN_DIR/deploy.lock}"
: "${STATE_DIR:=/var/lib/app-deploy}"
: "${DRAIN_SECONDS:=10}"
: "${HEALTH_TIMEOUT:=120}"
: "${HEALTH_POLL_SECONDS:=1}"
: "${STOP_TIMEOUT:=30}"
: "${DOCKER:=docker}"
: "${SSM_PARAMETER:=/usr/local/sbin/ssm-parameter}"
: "${REGISTRY_LOGIN:=/usr/local/sbin/registry-login}"
: "${DB_PASSWORD_PARAMETER:=}"
: "${PASSWORD_WAIT_SECONDS:=0}"
: "${DB_HOST:=}" "${DB_PORT:=5432}" "${DB_NAME:=}" "${DB_USER:=}"

# [registry[:port]/]path[:tag][@digest]: the path is lower case, the registry and tag need
# not be (Docker's grammar; deploy.yml and the rolling update accept the same tags).
readonly IMAGE_PATTERN='^([A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?/)?[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[a-z0-9]+:[a-f0-9]{32,})?$'
readonly SECONDS_PATTERN='^[0-9]+(\.[0-9]+)?$'
ENV_FILE=""

log() { printf 'app-deploy: %s\n' "$*"; }
# The one line on stderr the caller reports; nothing else goes to stderr.
fail() { printf 'app-deploy: %s\n' "$*" >&2; exit 1; }
cleanup() { [[ -z $ENV_FILE ]] || rm -f -- "$ENV_FILE"; }
trap cleanup EXIT

for setting in DRAIN_SECONDS HEALTH_TIMEOUT HEALTH_POLL_SECONDS STOP_TIMEOUT \
    PASSWORD_WAIT_SECONDS; do
    [[ ${!setting} =~ $SECONDS_PATTERN ]] || fail "$setting must be a number of seconds"
done

json_string() {
    local text=${1//\\/\\\\}
    if [[ -z $1 ]]; then printf 'null'; else printf '"%s"' "${text//\"/\\\"}"; fi
}

# The version an image runs, reported by the app in every answer: its tag or digest.
image_version() {
    local name=${1##*/}
    if [[ $1 == *@* ]]; then
        printf '%s' "${1##*@}"
    elif [[ $name == *:* ]]; then
        printf '%s' "${name##*:}"
    else
        printf 'latest'
    fi
}

container_image() {
    "$DOCKER" inspect --format '{{.Config.Image}}' "$APP_CONTAINER" 2>/dev/null || true
}

container_running() {
    [[ $("$DOCKER" inspect --format '{{.State.Running}}' "$APP_CONTAINER" 2>/dev/null) == true ]]
}

app_healthy() {
    curl --fail --silent --output /dev/null --max-time 2 "$APP_HEALTH_URL"
}

previous_image() { cat "$STATE_DIR/previous" 2>/dev/null || true; }

take_lock() {
    mkdir -p "$RUN_DIR"
    exec 9>"$LOCK_FILE"
    flock 9
}

# Seconds still to wait so that DRAIN_SECONDS have passed since the switch was set.
drain_wait_left() {
    awk -v drain="$DRAIN_SECONDS" -v set_at="$(stat -c %.9Y "$DRAIN_FILE")" \
        -v now="$(date +%s.%N)" \
        'BEGIN { left = drain - (now - set_at); if (left > 0) printf "%.3f", left; else print 0 }'
}

set_drain_switch() {
    mkdir -p "$RUN_DIR"
    # An existing switch keeps its time: the wait counts from when it was first set.
    [[ -e $DRAIN_FILE ]] || : >"$DRAIN_FILE"
}

drain() {
    local left
    set_drain_switch
    left=$(drain_wait_left)
    if [[ $left != 0 ]]; then
        log "drain switch set; waiting ${left}s for the load balancer and in-flight requests"
        sleep "$left"
    fi
}

undrain() {
    rm -f -- "$DRAIN_FILE"
}

# undrain_if_set_by_us true|false: a switch the caller set (the rolling update) stays set.
undrain_if_set_by_us() {
    if [[ $1 == true ]]; then undrain; fi
}

wait_healthy() {
    local deadline
    deadline=$(awk -v now="$(date +%s.%N)" -v t="$HEALTH_TIMEOUT" \
        'BEGIN { printf "%.3f", now + t }')
    until app_healthy; do
        if awk -v deadline="$deadline" -v now="$(date +%s.%N)" 'BEGIN { exit !(now >= deadline) }'
        then
            return 1
        fi
        sleep "$HEALTH_POLL_SECONDS"
    done
}

db_password() {
    [[ -n $DB_PASSWORD_PARAMETER ]] || return 0
    "$SSM_PARAMETER" get "$DB_PASSWORD_PARAMETER" --wait "$PASSWORD_WAIT_SECONDS"
}

pull() {
    # ECR: a fresh login token from the instance role (nothing stored outlives 12 hours).
    "$REGISTRY_LOGIN" "$1" || log "cannot log in to the registry of $1"
    if "$DOCKER" pull --quiet "$1" >/dev/null 2>&1; then
        return 0
    fi
    # A registry outage must not block a rollback to an image this host already holds.
    if "$DOCKER" image inspect "$1" >/dev/null 2>&1; then
        log "cannot pull $1; using the copy already on this host"
        return 0
    fi
    return 1
}

stop_app() {
    if "$DOCKER" inspect "$APP_CONTAINER" >/dev/null 2>&1; then
        log "stopping the app container (up to ${STOP_TIMEOUT}s for in-flight requests)"
        "$DOCKER" stop --time "${STOP_TIMEOUT%.*}" "$APP_CONTAINER" >/dev/null 2>&1 || true
        "$DOCKER" rm --force "$APP_CONTAINER" >/dev/null 2>&1 || true
    fi
}

# start_app IMAGE PASSWORD: the password goes through a file on tmpfs, never a command line.
start_app() {
    local image=$1 status=0
    local options=(--detach --name "$APP_CONTAINER" --restart unless-stopped
        --publish "$APP_PORT:$APP_PORT" --stop-timeout "${STOP_TIMEOUT%.*}"
        --security-opt no-new-privileges
        --env "APP_VERSION=$(image_version "$image")" --env "PORT=$APP_PORT"
        --env "DB_HOST=$DB_HOST" --env "DB_PORT=$DB_PORT" --env "DB_NAME=$DB_NAME"
        --env "DB_USER=$DB_USER")
    ENV_FILE=$(mktemp "$RUN_DIR/app-env.XXXXXX")
    printf 'DB_PASSWORD=%s\n' "$2" >"$ENV_FILE"
    options+=(--env-file "$ENV_FILE")
    if [[ -r $APP_ENV_FILE ]]; then
        options+=(--env-file "$APP_ENV_FILE")
    fi
    log "starting $image"
    "$DOCKER" run "${options[@]}" "$image" >/dev/null || status=$?
    rm -f -- "$ENV_FILE"
    ENV_FILE=""
    return "$status"
}

# Keep the running and the previous image of the app's repository; delete older ones.
prune_images() {
    local keep_current=$1 keep_previous=$2 repository=${1%[:@]*} image
    while read -r image; do
        if [[ $image == "$keep_current" || $image == "$keep_previous" ||
            ${image%[:@]*} != "$repository" ]]; then
            continue
        fi
        if "$DOCKER" rmi "$image" >/dev/null 2>&1; then log "deleted old image $image"; fi
    done < <("$DOCKER" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null || true)
}

deploy() {
    local target=$1 current drained_here=false reason="" password=""
    [[ $target =~ $IMAGE_PATTERN ]] || fail "not an image name: $target"
    take_lock
    current=$(container_image)
    if [[ $current == "$target" ]] && app_healthy; then
        log "$target is already running and healthy"
        return 0
    fi
    if [[ ! -e $DRAIN_FILE ]]; then
        drained_here=true
        # With no app serving there is nothing to wait for: the first deploy starts at once.
        if container_running; then drain; else set_drain_switch; fi
    fi

    # Everything that can fail without touching the running container comes first.
    log "pulling $target"
    if ! pull "$target"; then
        undrain_if_set_by_us "$drained_here"
        fail "cannot pull $target; ${current:-nothing} still running"
    fi
    if ! password=$(db_password); then
        undrain_if_set_by_us "$drained_here"
        fail "cannot read the database password ($DB_PASSWORD_PARAMETER); ${current:-nothing} still running"
    fi

    stop_app
    if ! start_app "$target" "$password"; then
        reason="$target did not start"
    elif ! wait_healthy; then
        reason="$target failed its health check within ${HEALTH_TIMEOUT}s"
    fi

    if [[ -z $reason ]]; then
        mkdir -p "$STATE_DIR"
        if [[ -n $current && $current != "$target" ]]; then
            printf '%s\n' "$current" >"$STATE_DIR/previous"
        fi
        undrain_if_set_by_us "$drained_here"
        log "$target is running and healthy"
        prune_images "$target" "$(previous_image)"
        return 0
    fi

    log "$reason; its last log lines:"
    "$DOCKER" logs --tail 20 "$APP_CONTAINER" 2>&1 || true
    if [[ -z $current ]]; then
        # Nothing to go back to: leave it running, it may become healthy (the database of a
        # fresh environment can come up after its app hosts). Caddy only sends it requests
        # once its health check passes.
        undrain_if_set_by_us "$drained_here"
        fail "$reason; no previous image to restore, left it running"
    fi
    stop_app
    if start_app "$current" "$password" && wait_healthy; then
        undrain_if_set_by_us "$drained_here"
        fail "$reason; restored $current"
    fi
    # The drain switch stays set: this host must not rejoin until someone looks at it.
    fail "$reason; restoring $current failed too, host left drained"
}

status() {
    local drained=false healthy=false
    [[ -e $DRAIN_FILE ]] && drained=true
    app_healthy && healthy=true
    printf '{"image": %s, "previous": %s, "drained": %s, "healthy": %s}\n' \
        "$(json_string "$(container_image)")" "$(json_string "$(previous_image)")" \
        "$drained" "$healthy"
}

main() {
    case ${1:-} in
        status) status ;;
        drain) take_lock; drain ;;
        undrain) take_lock; undrain ;;
        --rollback)
            local previous
            previous=$(previous_image)
            [[ -n $previous ]] || fail "no previous image recorded on this host"
            deploy "$previous"
            ;;
        "" | -h | --help)
            usage
            [[ -n ${1:-} ]] || exit 2
            ;;
        -*) fail "unknown option: $1 (see app-deploy --help)" ;;
        *) deploy "$1" ;;
    esac
}

main "$@"
