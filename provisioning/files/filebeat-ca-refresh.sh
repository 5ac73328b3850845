#!/bin/bash
# filebeat-ca-refresh PARAMETER REGION CA_FILE UNIT: restart Filebeat (UNIT) when LOG-01's CA
# certificate in SSM (PARAMETER) is no longer the one it started with (CA_FILE).
# Filebeat reads the CA only when it starts, and a replaced LOG-01 makes a new CA: without
# this, Filebeat would retry forever against the old one. Run by filebeat-ca-refresh.timer.
set -euo pipefail

: "${SSM_PARAMETER:=/usr/local/sbin/ssm-parameter}"
: "${SYSTEMCTL:=systemctl}"

if (($# != 4)); then
    echo "usage: filebeat-ca-refresh PARAMETER REGION CA_FILE UNIT" >&2
    exit 2
fi
parameter=$1 region=$2 ca_file=$3 unit=$4

# Not running (or still starting): its next start fetches the CA itself.
"$SYSTEMCTL" is-active --quiet "$unit" || exit 0
fetched=$(mktemp "$ca_file.XXXXXX")
trap 'rm -f "$fetched"' EXIT
"$SSM_PARAMETER" get "$parameter" --region "$region" --output "$fetched"
# An empty answer is not a new CA: keep Filebeat on the one it has.
if [[ ! -s $fetched ]] || cmp -s "$fetched" "$ca_file"; then
    exit 0
fi
echo "filebeat-ca-refresh: LOG-01's CA certificate in $parameter changed: restarting $unit"
"$SYSTEMCTL" try-restart "$unit"
