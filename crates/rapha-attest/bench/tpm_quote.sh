#!/usr/bin/env bash
# Quote generation + verification time on swtpm (a measurement for the issue's closing note;
# not run in CI). Usage: crates/rapha-attest/bench/tpm_quote.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/../../.."
source scripts/lib.sh
cargo run -q -p rapha-attest --example tpm_quote_timing -- "${1:-30}"
