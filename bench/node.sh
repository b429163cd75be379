#!/usr/bin/env bash
# Node benchmark (not run in CI): cold start of `rapha-node serve` over a seeded job store,
# and 200 concurrent status polls (wrk) against GET /v1/jobs/{id}, with /healthz as the peer,
# idle and while a job's trainer runs under runc. Needs anvil, Orthanc + DICOMweb, wrk;
# root + runc + gcc for the running-job part.
# Usage: bench/node.sh [JOBS=1000] [WRK_SECONDS=20]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

if ! command -v wrk >/dev/null; then
    step "Installing wrk (Debian) for the load runs"
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends wrk
fi

step "Building rapha-node and the bench driver (release)"
cargo build --release -q -p rapha-node --bin rapha-node --example node_bench

step "Commit $(git -C "$RAPHA_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$CARGO_TARGET_DIR/release/examples/node_bench" "$CARGO_TARGET_DIR/release/rapha-node" \
    "${1:-1000}" "${2:-20}"
step "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
