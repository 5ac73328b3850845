#!/usr/bin/env bash
# Installs the real tools the test suite drives: Caddy (the load balancer), PostgreSQL (backups
# and the reference app), cloud-init (user-data schema), ShellCheck, Graphviz (diagrams), and
# the disk tools the NFS volume script uses (fdisk, e2fsprogs).
# Debian/Ubuntu, as root (CI) or through sudo.
set -euo pipefail
packages=(caddy postgresql cloud-init shellcheck graphviz fdisk e2fsprogs curl)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The Debian packages start their own services; the tests start private instances instead.
for service in caddy postgresql; do
    $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
done
