#!/usr/bin/env bash
# Installs Python grpcio for the CSI driver's client test (crates/csi/tests/grpc_clients.rs:
# Python grpcio, i.e. gRPC C-core, on a plain unix: target). Idempotent; no generated code is
# needed, so grpcio-tools is not installed.
set -euo pipefail
python="${PYTHON:-python3}"
if "$python" -c 'import grpc' 2>/dev/null; then
    exit 0
fi
"$python" -m pip install --quiet --disable-pip-version-check grpcio
"$python" -c 'import grpc; print("grpcio", grpc.__version__)'
