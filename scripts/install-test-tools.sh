#!/usr/bin/env bash
# Installs the real system tools the test suite drives: PostgreSQL and pgBackRest (backups and
# point-in-time recovery), cloud-init (user-data schema), ShellCheck, Graphviz (diagrams), the
# disk tools the NFS volume script uses (fdisk, e2fsprogs), nfs-kernel-server (`exportfs`
# semantics), HAProxy (stands in for the Network Load Balancer) and OpenSSL (certificates).
# Caddy is not here: the dev requirements bring the production build from PyPI.
# Debian/Ubuntu, as root (CI) or through sudo.
set -euo pipefail
packages=(postgresql pgbackrest cloud-init shellcheck graphviz fdisk e2fsprogs curl
          nfs-kernel-server haproxy openssl)
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
for service in postgresql haproxy nfs-kernel-server rpcbind; do
    $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
done
