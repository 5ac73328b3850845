#!/bin/bash
# install-packages: apply pending updates and install Ubuntu packages at first boot,
# retrying until the archive can be reached.
#
#   install-packages PACKAGE...
#
# A private host boots before its way out may exist (the NAT gateway of a fresh environment
# takes minutes), so apt is retried for APT_WAIT_SECONDS instead of failing once, as
# cloud-init's own package step would.
set -euo pipefail

: "${APT_GET:=apt-get}"
: "${APT_WAIT_SECONDS:=1800}"
: "${APT_RETRY_SECONDS:=15}"

export DEBIAN_FRONTEND=noninteractive
# Ubuntu's needrestart would ask which services to restart; nothing is serving yet.
export NEEDRESTART_SUSPEND=1
readonly OPTIONS=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold)
deadline=$((SECONDS + APT_WAIT_SECONDS))

# retry DESCRIPTION COMMAND...: run until it succeeds or the deadline passes.
retry() {
    local description=$1
    shift
    until "$@"; do
        if ((SECONDS >= deadline)); then
            printf 'install-packages: error: %s kept failing for %ss\n' "$description" \
                "$APT_WAIT_SECONDS" >&2
            exit 1
        fi
        printf 'install-packages: %s failed; retrying in %ss\n' "$description" \
            "$APT_RETRY_SECONDS"
        sleep "$APT_RETRY_SECONDS"
    done
}

# --error-on=any: an unreachable archive is an error, not a warning with exit status 0.
retry "apt-get update" "$APT_GET" "${OPTIONS[@]}" --error-on=any update
retry "apt-get upgrade" "$APT_GET" "${OPTIONS[@]}" upgrade
if (($#)); then
    retry "installing $*" "$APT_GET" "${OPTIONS[@]}" --no-install-recommends install "$@"
fi
printf 'install-packages: installed %s\n' "${*:-nothing (updates only)}"
