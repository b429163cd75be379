#!/usr/bin/env bash
# Console benchmark (not run in CI): the DPO console's approval queue page with JOBS jobs in
# the job store, every one waiting for a decision, loaded LOADS times over loopback.
# Target (issue 20): <= 200 ms per load with 1,000 jobs.
# Usage: bench/console.sh [JOBS=1000] [LOADS=30]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

step "Building the console bench driver (release)"
cargo build --release -q -p rapha-node --example console_bench

step "Commit $(git -C "$RAPHA_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$CARGO_TARGET_DIR/release/examples/console_bench" "${1:-1000}" "${2:-30}"
step "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
