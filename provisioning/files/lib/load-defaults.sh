# Sourced by the host scripts (app-deploy, db-backup, db-setup, log-stack), installed once per
# host at /usr/local/lib/platform/load-defaults.sh.
#
# load_defaults FILE: export the KEY=VALUE lines of FILE (written by user data); a variable
# already set in the environment wins, which is how the tests and an operator override one.
load_defaults() {
    local key value
    [[ -r $1 ]] || return 0
    while IFS='=' read -r key value; do
        [[ $key =~ ^[A-Z][A-Z0-9_]*$ ]] || continue
        [[ -n ${!key+set} ]] || export "$key=$value"
    done <"$1"
}
