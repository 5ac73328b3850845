#!/bin/bash
# log-stack: start Elasticsearch and Kibana on LOG-01 and prepare them for the app's logs.
# Usage is code, not a header comment: user data leaves comment lines out.
# Settings come from the environment, else from /etc/logging/log-stack.env (user data).
set -euo pipefail

usage() {
    printf '%s\n' \
        "log-stack: start Elasticsearch and Kibana on LOG-01 and prepare them for the app's logs." \
        '' \
        '  log-stack up        make the TLS certificates, size the JVMs, fetch or create the' \
        '                      passwords (SSM), start both containers, then configure' \
        '                      Elasticsearch: users, the writer role Filebeat uses, the index' \
        '                      template and the lifecycle policy that deletes old logs; and' \
        "                      Kibana's data view. Safe to run again." \
        '  log-stack certificates' \
        "                      first run: a CA and Elasticsearch's HTTPS certificate for" \
        '                      ES_ADDRESS (CERT_DIR); every run: publish the CA certificate to the' \
        '                      SSM parameter CA_PARAMETER, where Filebeat on the APP hosts reads it' \
        '  log-stack memory    print the heap sizes this host gets, in MiB'
}

readonly CONFIG_FILE=${LOG_STACK_CONFIG:-/etc/logging/log-stack.env}

# shellcheck source=lib/load-defaults.sh
. "${PLATFORM_LIB:-/usr/local/lib/platform}/load-defaults.sh"
load_defaults "$CONFIG_FILE"

: "${STACK_DIR:=/opt/logging}"
: "${RUN_DIR:=/run/logging}"
: "${MEMINFO:=/proc/meminfo}"
: "${ES_URL:=https://127.0.0.1:9200}"
: "${ES_ADDRESS:=}"
: "${CERT_DIR:=/etc/logging/certs}"
: "${CA_PARAMETER:=}"
: "${CERT_DAYS:=825}"
# Elasticsearch's user and group inside its container: it must read its private key.
: "${ES_KEY_OWNER:=1000:0}"
: "${KIBANA_URL:=http://127.0.0.1:5601}"
: "${SSM_PARAMETER:=/usr/local/sbin/ssm-parameter}"
: "${PARAMETER_PREFIX:=}"
: "${WRITER_USER:=filebeat_writer}"
: "${WAIT_SECONDS:=900}"

log() { printf 'log-stack: %s\n' "$*"; }
die() { printf 'log-stack: error: %s\n' "$*" >&2; exit 1; }

# Elasticsearch gets about half the memory minus what Kibana needs; the other half is the
# page cache Lucene lives on. Kibana's Node.js heap is capped so the two fit together.
memory() {
    local total_mib kibana_mib es_mib
    total_mib=$(awk '/^MemTotal:/ { print int($2 / 1024) }' "$MEMINFO")
    [[ -n $total_mib ]] || die "cannot read MemTotal from $MEMINFO"
    if ((total_mib < 3072)); then kibana_mib=512; else kibana_mib=768; fi
    es_mib=$((total_mib / 2 - kibana_mib))
    ((es_mib >= 512)) || es_mib=512
    printf 'ES_HEAP_MB=%s\nKIBANA_HEAP_MB=%s\n' "$es_mib" "$kibana_mib"
}

# The CA signs one certificate and its key is then deleted: nothing else can ever be signed
# with it. Renewal (after CERT_DAYS): remove CERT_DIR, run `log-stack up`, restart Filebeat.
make_certificates() {
    local work
    work=$(mktemp -d "$CERT_DIR/.new.XXXXXX")
    (
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -days "$CERT_DAYS" -subj "/CN=Elasticsearch CA on $ES_ADDRESS" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=$ES_ADDRESS" -keyout "$work/http.key" -out "$work/http.csr" 2>/dev/null
        # The APP hosts connect to the address; Kibana (same host) to "elasticsearch".
        printf '%s\n' "subjectAltName=IP:$ES_ADDRESS,IP:127.0.0.1,DNS:localhost,DNS:elasticsearch" \
            'basicConstraints=critical,CA:FALSE' \
            'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"$work/http.ext"
        openssl x509 -req -in "$work/http.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -days "$CERT_DAYS" \
            -extfile "$work/http.ext" -out "$work/http.crt" 2>/dev/null
    ) || { rm -rf -- "$work"; die "cannot make the certificates in $CERT_DIR"; }
    rm -f -- "$work/ca.key" "$work/http.csr" "$work/http.ext"
    chmod 0644 "$work/ca.crt" "$work/http.crt"
    chown "$ES_KEY_OWNER" "$work/http.key"
    chmod 0440 "$work/http.key"
    mv -- "$work/ca.crt" "$work/http.crt" "$work/http.key" "$CERT_DIR/"
    rmdir -- "$work"
    log "made a CA and the HTTPS certificate of $ES_ADDRESS"
}

certificates() {
    [[ -n $ES_ADDRESS ]] || die "ES_ADDRESS must be LOG-01's private address"
    install -d -m 0755 "$CERT_DIR"
    if [[ ! -s $CERT_DIR/ca.crt || ! -s $CERT_DIR/http.crt || ! -s $CERT_DIR/http.key ]]; then
        make_certificates
    fi
    if [[ -n $CA_PARAMETER ]]; then
        "$SSM_PARAMETER" put "$CA_PARAMETER" --file "$CERT_DIR/ca.crt" ||
            die "cannot publish the CA certificate to $CA_PARAMETER"
        log "CA certificate published to SSM $CA_PARAMETER"
    fi
}

# secret NAME: the value of PARAMETER_PREFIX/NAME, created at random on first use.
secret() {
    [[ -n $PARAMETER_PREFIX ]] || die "PARAMETER_PREFIX must name the SSM path of the secrets"
    "$SSM_PARAMETER" ensure "$PARAMETER_PREFIX/$1"
}

write_compose_env() {
    local env_file=$RUN_DIR/compose.env elastic kibana_system encryption_key heap
    # One assignment each: a failed lookup stops the script instead of writing an empty value.
    elastic=$(secret elastic-password)
    kibana_system=$(secret kibana-system-password)
    encryption_key=$(secret kibana-encryption-key)
    heap=$(memory)
    install -d -m 0700 "$RUN_DIR"
    umask 077
    printf '%s\nELASTIC_PASSWORD=%s\nKIBANA_SYSTEM_PASSWORD=%s\nKIBANA_ENCRYPTION_KEY=%s\n' \
        "$heap" "$elastic" "$kibana_system" "$encryption_key" >"$env_file.new"
    mv -- "$env_file.new" "$env_file"
    # curl reads the superuser's credentials from a file, never from its command line.
    printf 'user = "elastic:%s"\n' "$elastic" >"$RUN_DIR/curl-auth"
}

compose() {
    docker compose --project-directory "$STACK_DIR" --file "$STACK_DIR/compose.yaml" \
        --env-file "$RUN_DIR/compose.env" "$@"
}

# request METHOD URL [BODY-FILE|-]: a call with the superuser's credentials; the body comes
# from a file, or from stdin with "-".
request() {
    local method=$1 url=$2 body=${3:-}
    local options=(--silent --show-error --fail-with-body --max-time 60
        --config "$RUN_DIR/curl-auth" --cacert "$CERT_DIR/ca.crt" --request "$method"
        --header 'Content-Type: application/json' --header 'kbn-xsrf: log-stack')
    if [[ -n $body ]]; then options+=(--data-binary "@$body"); fi
    curl "${options[@]}" "$url" >/dev/null
}

wait_for() {
    local what=$1 url=$2 deadline=$((SECONDS + WAIT_SECONDS))
    until curl --silent --fail --output /dev/null --max-time 5 --config "$RUN_DIR/curl-auth" \
        --cacert "$CERT_DIR/ca.crt" "$url"; do
        ((SECONDS < deadline)) || die "$what did not answer within ${WAIT_SECONDS}s"
        sleep 5
    done
    log "$what is up"
}

configure_elasticsearch() {
    local kibana_system writer
    kibana_system=$(secret kibana-system-password)
    writer=$(secret filebeat-password)
    log "setting the kibana_system password"
    printf '{"password": "%s"}' "$kibana_system" |
        request POST "$ES_URL/_security/user/kibana_system/_password" -
    log "lifecycle policy, index template and writer role for the app's logs"
    request PUT "$ES_URL/_ilm/policy/app-logs" "$STACK_DIR/ilm-policy.json"
    request PUT "$ES_URL/_index_template/app-logs" "$STACK_DIR/index-template.json"
    request PUT "$ES_URL/_security/role/app_logs_writer" "$STACK_DIR/writer-role.json"
    printf '{"password": "%s", "roles": ["app_logs_writer"], "full_name": "Filebeat on the APP hosts"}' \
        "$writer" | request PUT "$ES_URL/_security/user/$WRITER_USER" -
}

up() {
    certificates
    write_compose_env
    log "starting Elasticsearch"
    compose up --detach --wait elasticsearch
    wait_for Elasticsearch "$ES_URL/_cluster/health?wait_for_status=yellow&timeout=5s"
    configure_elasticsearch
    log "starting Kibana"
    compose up --detach --wait kibana
    wait_for Kibana "$KIBANA_URL/api/status"
    request POST "$KIBANA_URL/api/data_views/data_view" "$STACK_DIR/data-view.json"
    log "ready: Kibana on port 5601, user elastic, password in SSM $PARAMETER_PREFIX/elastic-password"
}

case ${1:-} in
    up) up ;;
    certificates) certificates ;;
    memory) memory ;;
    *)
        usage >&2
        exit 2
        ;;
esac
