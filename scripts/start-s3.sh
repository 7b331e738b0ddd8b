#!/usr/bin/env bash
# Builds (once, cached in ~/.cargo/bin) and starts a single-node Garage S3 server on
# 127.0.0.1:3900 with a bucket and a key, then prints the env lines the HSM tests read:
#   eval "$(scripts/start-s3.sh)"
#   scripts/start-s3.sh stop
set -euo pipefail
VERSION="${GARAGE_VERSION:-2.5.0}"
DATA="${GARAGE_DATA:-/tmp/lustrekit-garage}"
BUCKET="${LUSTREKIT_TEST_S3_BUCKET:-lustrekit-test}"
PIDFILE="$DATA/garage.pid"
export PATH="$HOME/.cargo/bin:$PATH"

if [[ "${1:-}" == stop ]]; then
    [[ -f "$PIDFILE" ]] && kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"; exit 0
fi
if ! garage --version 2>/dev/null | grep -q "$VERSION"; then
    echo "building garage $VERSION (about 11 minutes on 2 cores)" >&2
    nice -n 10 cargo install garage --locked --version "$VERSION" >&2
fi
mkdir -p "$DATA/meta" "$DATA/data"
CONF="$DATA/garage.toml"
if [[ ! -f "$CONF" ]]; then
    cat >"$CONF" <<TOML
metadata_dir = "$DATA/meta"
data_dir = "$DATA/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:3900"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:3903"
TOML
fi
G() { garage -c "$CONF" "$@"; }
if ! (exec 3<>/dev/tcp/127.0.0.1/3900) 2>/dev/null; then
    nohup garage -c "$CONF" server >"$DATA/garage.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 100); do G status >/dev/null 2>&1 && break; sleep 0.2; done
fi
if ! G layout show 2>/dev/null | grep -q "Current cluster layout version: [1-9]"; then
    NODE=$(G status 2>/dev/null | awk '/^[0-9a-f]{16}/ {print $1; exit}')
    G layout assign -z dc1 -c 10G "$NODE" >&2
    G layout apply --version 1 >&2
fi
G bucket info "$BUCKET" >/dev/null 2>&1 || G bucket create "$BUCKET" >&2
if [[ ! -f "$DATA/key.env" ]]; then
    OUT=$(G key create lustrekit-test)
    KID=$(echo "$OUT" | awk '/Key ID/ {print $NF; exit}')
    SEC=$(echo "$OUT" | awk '/Secret key/ {print $NF; exit}')
    G bucket allow --read --write --owner "$BUCKET" --key "$KID" >&2
    printf 'LUSTREKIT_TEST_S3_ACCESS_KEY=%s\nLUSTREKIT_TEST_S3_SECRET_KEY=%s\n' "$KID" "$SEC" >"$DATA/key.env"
fi
echo "export LUSTREKIT_TEST_S3_ENDPOINT=http://127.0.0.1:3900"
echo "export LUSTREKIT_TEST_S3_BUCKET=$BUCKET"
echo "export LUSTREKIT_TEST_S3_REGION=garage"
sed 's/^/export /' "$DATA/key.env"
