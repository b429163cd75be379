#!/usr/bin/env bash
# Enclave runtime benchmark (not run in CI). Needs root + runc + gcc.
#  1. feed throughput through the SDKs (Rust Client::records pipelined and Client::fetch
#     lock-step; the Python SDK's records()/fetch() when RAPHA_PYTHON is set) as ratios to
#     decoding the same records in-process (crates/rapha-trainer-sdk/examples/feed_bench.rs,
#     helper bench/enclave_feed.py);
#  2. the raw protocol feed, container start to first record (runc), output guard scan rate
#     (crates/rapha-enclave/examples/enclave_bench.rs).
# The machine's load average is printed before and after: ratios from a loaded machine
# understate the feed (it uses two cores, the in-process decode one).
# Usage: bench/enclave.sh [STUDIES=200]
#   RAPHA_FEED_BENCH_PASSES=N  passes per feed reader (default 15)
#   RAPHA_FEED_BENCH_PACS=1    the SDK feed bench fetches records from Orthanc over WADO-RS
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cargo build --release -q -p rapha-trainer-sdk --example feed_bench
cargo build --release -q -p rapha-enclave --example enclave_bench
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$CARGO_TARGET_DIR/release/examples/feed_bench" "${1:-200}"
"$CARGO_TARGET_DIR/release/examples/enclave_bench" "${1:-200}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
