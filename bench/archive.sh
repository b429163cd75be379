#!/usr/bin/env bash
# A hospital-sized archive from a real PACS (not run in CI; issue 17 item 5): a synthetic cohort
# of mixed modalities stored in four transfer syntaxes (a quarter each: uncompressed, JPEG 2000
# lossless, JPEG-LS lossless, HTJ2K lossless) is loaded into Orthanc; then, single core
# (taskset -c 0), the node's cohort build (QIDO-RS + WADO-RS metadata, exclusions, records,
# pseudonyms: time and peak RSS), one feed pass (every kept instance retrieved over WADO-RS with
# the transfer syntax negotiated, and decoded), and the same files decoded from local disk.
#   bench/archive.sh [STUDIES...]    default: 1000 10000 (about 3.6 instances per study)
# Corpora are cached in $RAPHA_CACHE/bench/archive-N (10,000 studies: ~1.5 GB, ~40 min to make).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000 10000)
SYNTAXES=(1.2.840.10008.1.2.1 1.2.840.10008.1.2.4.90 1.2.840.10008.1.2.4.80 1.2.840.10008.1.2.4.201)

step "build (release)"
# Two builds: a target flag (--example) would leave the other packages' binaries unbuilt.
cargo build -q --release -p rapha-dicom --example dicom_bench
cargo build -q --release -p rapha-decode -p rapha-testkit
export RAPHA_DECODE_WORKER="$CARGO_TARGET_DIR/release/rapha-decode"
BIN="$CARGO_TARGET_DIR/release/examples/dicom_bench"
TK="$CARGO_TARGET_DIR/release/rapha-testkit"

for N in "${SIZES[@]}"; do
    WORK="$RAPHA_CACHE/bench/archive-$N"
    PART=$(( (N + 3) / 4 ))
    for i in 0 1 2 3; do
        ts="${SYNTAXES[$i]}"
        if [ ! -f "$WORK/part$i/manifest.json" ]; then
            step "corpus $N: $PART studies in $ts"
            rm -rf "$WORK/part$i"
            "$TK" cohort --studies "$PART" --seed $(( 100 + i )) --out "$WORK/part$i" \
                --transfer-syntax "$ts" >/dev/null
        fi
    done
    step "archive of $N studies: load into Orthanc, cohort build, feed pass, local decode"
    python3 "$(dirname "$0")/archive.py" "$BIN" "$TK" "$N" "$WORK" | tee "$WORK/result.json"
done
