#!/usr/bin/env bash
# Compiles the escrow contracts with solc-js (npm `solc`, pinned in scripts/lib.sh) and writes
# one artifact per contract (ABI + creation and runtime bytecode) to OUT_DIR (default:
# contracts/artifacts, which is committed). The Rust bindings are generated from these files;
# a test rebuilds them into a temp dir and compares, so the committed artifact always matches
# the source.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../scripts/lib.sh
source "$HERE/../scripts/lib.sh"
OUT_DIR="${1:-$HERE/artifacts}"
mkdir -p "$OUT_DIR"
if [ ! -f "$RAPHA_SOLCJS" ]; then
    echo "solc-js not found at $RAPHA_SOLCJS (run scripts/lib.sh install_npm_packages)" >&2
    exit 1
fi
exec node "$HERE/build.js" "$RAPHA_SOLCJS" "$RAPHA_NODE_MODULES" "$HERE" "$OUT_DIR"
