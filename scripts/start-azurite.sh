#!/usr/bin/env bash
# Installs Azurite (npm, cached) and starts its blob service on 127.0.0.1:10000, then makes
# the test container. Prints the env line the HSM tests read.
#   scripts/start-azurite.sh            start (idempotent: reuses a running one)
#   scripts/start-azurite.sh stop       stop the one this script started
# AZURITE_PORT, AZURITE_DATA: another instance (its own port and data); AZURITE_ACCESS_LOG=1
# keeps Azurite's request log (one line per request) in $AZURITE_DATA/azurite.log.
set -euo pipefail
CACHE="${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}/azurite"
DATA="${AZURITE_DATA:-/tmp/lustrekit-azurite}"
PORT="${AZURITE_PORT:-10000}"
CONTAINER="${LUSTREKIT_TEST_AZURE_CONTAINER:-lustrekit-test}"
PIDFILE="$DATA/azurite.pid"

if [[ "${1:-}" == stop ]]; then
    [[ -f "$PIDFILE" ]] && kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"; exit 0
fi
mkdir -p "$CACHE" "$DATA"
if [[ ! -x "$CACHE/node_modules/.bin/azurite-blob" || ! -d "$CACHE/node_modules/@azure/storage-blob" ]]; then
    echo "installing azurite@3 and @azure/storage-blob into $CACHE" >&2
    (cd "$CACHE" && npm install --silent --no-audit --no-fund azurite@3 @azure/storage-blob@12 >&2)
fi
quiet=--silent
[[ "${AZURITE_ACCESS_LOG:-}" == 1 ]] && quiet=
if ! (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; then
    nohup "$CACHE/node_modules/.bin/azurite-blob" --location "$DATA" --blobHost 127.0.0.1 \
        --blobPort "$PORT" --skipApiVersionCheck --loose $quiet >"$DATA/azurite.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.2; done
fi
# The well-known development account and key (public, Azurite's documented default).
(cd "$CACHE" && CONTAINER="$CONTAINER" PORT="$PORT" node -e '
const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");
const acct = "devstoreaccount1";
const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const svc = new BlobServiceClient(`http://127.0.0.1:${process.env.PORT}/${acct}`, new StorageSharedKeyCredential(acct, key));
svc.getContainerClient(process.env.CONTAINER).createIfNotExists().then(() => process.exit(0), (e) => { console.error(e.message); process.exit(1); });
')
echo "LUSTREKIT_TEST_AZURITE=1"
