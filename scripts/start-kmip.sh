#!/usr/bin/env bash
# Starts a PyKMIP server for the encryption tests: TLS 1.2 with client-certificate
# authentication on 127.0.0.1:$KMIP_PORT (5696). A CA, a server certificate and a client
# certificate are made with openssl in the state dir on first use. Prints the env lines the
# tests read (endpoint and the PEM files a StorageClass Secret would carry).
#   scripts/start-kmip.sh            start (idempotent: reuses a running one)
#   scripts/start-kmip.sh stop       stop the one this script started
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${KMIP_STATE:-/tmp/lustrekit-kmip}"
PORT="${KMIP_PORT:-5696}"
PIDFILE="$STATE/pykmip.pid"

listening() { (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; }

if [[ "${1:-}" == stop ]]; then
    [[ -f "$PIDFILE" ]] && kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
    for _ in $(seq 50); do listening || break; sleep 0.1; done
    exit 0
fi
server_bin=$(scripts/install-kmip.sh)
mkdir -p "$STATE/pki" "$STATE/policies"
chmod 700 "$STATE"

# Certificates: P-256 keys; the client one carries clientAuth (PyKMIP checks it).
pki="$STATE/pki"
if [[ ! -s "$pki/client.crt" ]]; then
    (
        cd "$pki"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=lustrekit test KMIP CA" -keyout ca.key -out ca.crt \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        for who in server client; do
            if [[ $who == server ]]; then
                ext="subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
            else
                ext="extendedKeyUsage=clientAuth"
            fi
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -subj "/CN=lustrekit-$who" -keyout "$who.key" -out "$who.csr" 2>/dev/null
            printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext" >"$who.ext"
            openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
                -extfile "$who.ext" -out "$who.crt" 2>/dev/null
            rm -f "$who.csr" "$who.ext"
        done
        chmod 600 ./*.key
    )
fi

cat >"$STATE/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$PORT
certificate_path=$pki/server.crt
key_path=$pki/server.key
ca_path=$pki/ca.crt
auth_suite=TLS1.2
enable_tls_client_auth=True
tls_cipher_suites=
    TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
logging_level=INFO
database_path=$STATE/pykmip.db
policy_path=$STATE/policies
CONF

if ! listening; then
    nohup "$server_bin" -f "$STATE/server.conf" -l "$STATE/server.log" >"$STATE/stdout.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 100); do listening && break; sleep 0.2; done
    if ! listening; then
        echo "start-kmip: PyKMIP did not listen on 127.0.0.1:$PORT; see $STATE/server.log" >&2
        tail -5 "$STATE/stdout.log" "$STATE/server.log" >&2 2>/dev/null || true
        exit 1
    fi
fi
echo "LUSTREKIT_TEST_KMIP=127.0.0.1:$PORT"
echo "LUSTREKIT_TEST_KMIP_CA=$pki/ca.crt"
echo "LUSTREKIT_TEST_KMIP_CLIENT_CERT=$pki/client.crt"
echo "LUSTREKIT_TEST_KMIP_CLIENT_KEY=$pki/client.key"
