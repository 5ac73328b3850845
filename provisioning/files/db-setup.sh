#!/bin/bash
# db-setup: give the app its PostgreSQL database and user on DB-01. Safe to run again.
#
# The password is the SecureString DB_PASSWORD_PARAMETER in SSM Parameter Store: created at
# random by this host on its first boot, or the existing one when DB-01 is rebuilt, so the
# APP hosts, which read the same parameter, keep working. It never appears in user data, on
# a command line or in PostgreSQL's log.
#
# Settings come from the environment, else from /etc/db/backup.env (written by user data).
set -euo pipefail

readonly CONFIG_FILE=${DB_BACKUP_CONFIG:-/etc/db/backup.env}

# shellcheck source=lib/load-defaults.sh
. "${PLATFORM_LIB:-/usr/local/lib/platform}/load-defaults.sh"
load_defaults "$CONFIG_FILE"

: "${DB_NAME:=app}"
: "${DB_USER:=app}"
: "${DB_OS_USER:=postgres}"
: "${DB_PASSWORD_PARAMETER:?DB_PASSWORD_PARAMETER must name the SSM parameter}"
: "${SSM_PARAMETER:=/usr/local/sbin/ssm-parameter}"
: "${PSQL:=psql}"
: "${WAIT_SECONDS:=300}"

log() { printf 'db-setup: %s\n' "$*"; }
die() { printf 'db-setup: error: %s\n' "$*" >&2; exit 1; }

as_db_user() {
    if [[ -n $DB_OS_USER ]]; then
        runuser -u "$DB_OS_USER" -- "$@"
    else
        "$@"
    fi
}

deadline=$((SECONDS + WAIT_SECONDS))
until as_db_user "$PSQL" -X -q -d postgres -c 'SELECT 1' >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "PostgreSQL did not accept connections within ${WAIT_SECONDS}s"
    sleep 2
done

APP_DB_PASSWORD=$("$SSM_PARAMETER" ensure "$DB_PASSWORD_PARAMETER") ||
    die "cannot read or create $DB_PASSWORD_PARAMETER"
[[ -n $APP_DB_PASSWORD ]] || die "$DB_PASSWORD_PARAMETER is empty"
# psql reads it with \getenv: an environment variable is visible to root and this user only.
export APP_DB_PASSWORD

as_db_user "$PSQL" -X -q -v ON_ERROR_STOP=1 -v app_user="$DB_USER" -v app_db="$DB_NAME" \
    -d postgres <<'SQL'
-- Keep the password out of the server log even if a statement below fails.
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
\getenv app_password APP_DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'app_db') \gexec
-- Only the app (and the superuser) may connect to the app's database.
REVOKE CONNECT, TEMPORARY ON DATABASE :"app_db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"app_db" TO :"app_user";
SQL
log "database $DB_NAME and user $DB_USER ready; password in SSM $DB_PASSWORD_PARAMETER"
