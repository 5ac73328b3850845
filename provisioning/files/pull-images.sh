#!/bin/bash
# pull-images: pull container images at first boot, retrying while the registry or the way
# out is not reachable yet.
#
#   pull-images IMAGE...
set -euo pipefail

: "${DOCKER:=docker}"
: "${PULL_ATTEMPTS:=30}"
: "${PULL_RETRY_SECONDS:=20}"

for image in "$@"; do
    attempt=1
    until "$DOCKER" pull --quiet "$image"; do
        if ((attempt >= PULL_ATTEMPTS)); then
            printf 'pull-images: error: cannot pull %s after %s attempts\n' "$image" "$attempt" >&2
            exit 1
        fi
        printf 'pull-images: pulling %s failed; retrying in %ss\n' "$image" "$PULL_RETRY_SECONDS"
        sleep "$PULL_RETRY_SECONDS"
        attempt=$((attempt + 1))
    done
done
