#!/usr/bin/env bash
# Enclave runtime benchmark (not run in CI): feed throughput vs in-process decode, container
# start to first record (runc), output guard scan rate. Needs root + runc + gcc.
# Usage: bench/enclave.sh [STUDIES]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cargo run --release -q -p rapha-enclave --example enclave_bench -- "${1:-40}"
