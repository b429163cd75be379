#!/usr/bin/env bash
# rapha-dicom benchmark (not run in CI): metadata extraction + pseudonymization vs dicognito and
# pydicom/deid, disk-read baseline, pixel decode vs pydicom (native, RLE, and the native files
# re-encoded in JPEG 2000 and HTJ2K, decoded by pydicom's pylibjpeg-openjpeg plugin, and in
# JPEG-LS and 12-bit JPEG by DCMTK, decoded by pylibjpeg-libjpeg; rapha decodes those two and HTJ2K in its
# sandboxed worker, the files of a set as one job's: its long-lived workers), QIDO peak RSS at 1k
# vs 10k studies.
# Everything single-process on one core (taskset -c 0). Prints ratios at the end.
#   bench/dicom.sh [STUDIES] [QIDO_STUDIES]    defaults: 600 studies (~2,100 files), 10000
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
STUDIES="${1:-600}"
QIDO_STUDIES="${2:-10000}"
WORK="$RAPHA_CACHE/bench/dicom-$STUDIES"
VENV="$RAPHA_CACHE/bench-venv"
PIN="taskset -c 0"

step "peer tools in $VENV (pydicom, dicognito, deid)"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import dicognito, deid" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "pydicom==3.0.2" "numpy<3" dicognito deid
fi
if ! "$VENV/bin/python" -c "import openjpeg, libjpeg" 2>/dev/null; then
    "$VENV/bin/pip" install -q --disable-pip-version-check "pylibjpeg==2.1.0" "pylibjpeg-openjpeg==2.6.0" \
        "pylibjpeg-libjpeg==2.5.0"
fi
command -v dcmcjpls >/dev/null || { echo "dcmcjpls missing: apt-get install dcmtk" >&2; exit 1; }
PY="$VENV/bin/python"

step "build (release)"
cargo build -q --release -p rapha-dicom --example dicom_bench
cargo build -q --release -p rapha-decode --bin rapha-decode
export RAPHA_DECODE_WORKER="$CARGO_TARGET_DIR/release/rapha-decode"
cargo build -q --release -p rapha-testkit
BIN="$CARGO_TARGET_DIR/release/examples/dicom_bench"
TK="$CARGO_TARGET_DIR/release/rapha-testkit"

if [ ! -f "$WORK/manifest.json" ]; then
    step "corpus: $STUDIES synthetic studies, half RLE"
    rm -rf "$WORK"
    "$TK" cohort --studies "$STUDIES" --seed 7 --out "$WORK" --rle-fraction 0.5
fi
NFILES=$(find "$WORK/dicom" -name '*.dcm' | wc -l)
note "$NFILES files, $(du -sh "$WORK/dicom" | cut -f1)"
KEY="$WORK/hmac.key"
[ -f "$KEY" ] || { head -c 32 /dev/urandom >"$KEY"; chmod 600 "$KEY"; }

OUT="$WORK/results.jsonl"
: >"$OUT"
warm() { cat "$WORK"/dicom/*/* >/dev/null 2>&1 || find "$WORK/dicom" -type f -exec cat {} + >/dev/null; }
step "runs (page cache warm, one core)"
warm
$PIN "$BIN" read "$WORK/dicom" | tee -a "$OUT"
$PIN "$BIN" metadata "$WORK/dicom" "$KEY" | tee -a "$OUT"
$PIN "$PY" "$(dirname "$0")/dicom_peers.py" pydicom-read "$WORK/dicom" | tee -a "$OUT"
$PIN "$PY" "$(dirname "$0")/dicom_peers.py" dicognito "$WORK/dicom" | tee -a "$OUT"
$PIN "$PY" "$(dirname "$0")/dicom_peers.py" deid "$WORK/dicom" | tee -a "$OUT"

# Decode: split the corpus into RLE and native files.
mkdir -p "$WORK/rle" "$WORK/native"
if [ -z "$(ls -A "$WORK/rle")" ]; then
    "$PY" - "$WORK" <<'PY'
import os, pathlib, sys, pydicom
w = pathlib.Path(sys.argv[1])
for p in sorted((w / "dicom").rglob("*.dcm")):
    ts = pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
    dest = w / ("rle" if ts == "1.2.840.10008.1.2.5" else "native") / "_".join(p.relative_to(w / "dicom").parts)
    os.link(p, dest)
PY
fi
if [ ! -d "$WORK/j2k" ]; then
    step "JPEG 2000 and HTJ2K copies of the native files"
    "$PY" "$(dirname "$0")/dicom_j2k.py" "$WORK/native" "$WORK/j2k" "$WORK/htj2k"
fi
if [ ! -d "$WORK/jls" ]; then
    step "JPEG-LS and 12-bit JPEG copies of the native files"
    "$PY" "$(dirname "$0")/dicom_jls.py" "$WORK/native" "$WORK/jls" "$WORK/jpeg12"
fi
for kind in rle native j2k htj2k jls jpeg12; do
    $PIN "$BIN" decode "$WORK/$kind" | sed "s/\"decode\"/\"decode-$kind\"/" | tee -a "$OUT"
    $PIN "$PY" "$(dirname "$0")/dicom_peers.py" "pydicom-decode-$kind" "$WORK/$kind" | tee -a "$OUT"
done

if [ "$QIDO_STUDIES" -gt 0 ]; then
    step "QIDO peak RSS: Orthanc with $QIDO_STUDIES studies"
    "$PY" "$(dirname "$0")/dicom_qido.py" "$BIN" "$TK" "$QIDO_STUDIES" "$WORK" | tee -a "$OUT"
fi

step "ratios"
"$PY" - "$OUT" <<'PY'
import json, sys
r = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line); r[d["mode"]] = d
rate = lambda m: r[m]["files"] / r[m]["secs"]
mbs = lambda m: r[m]["decoded_bytes"] / r[m]["secs"] / 1e6
print(f"rapha metadata+pseudonyms: {rate('metadata'):.0f} files/s")
print(f"  vs dicognito {rate('dicognito'):.0f} files/s: x{rate('metadata')/rate('dicognito'):.1f} (target >= 20)")
print(f"  vs pydicom/deid {rate('deid'):.0f} files/s: x{rate('metadata')/rate('deid'):.1f}")
print(f"  vs reading the files {rate('read'):.0f} files/s: {100*rate('metadata')/rate('read'):.0f}% (target >= 50%)")
print(f"  (pydicom header read alone: {rate('pydicom-read'):.0f} files/s)")
for k in ("rle", "native", "j2k", "htj2k", "jls", "jpeg12"):
    a, b = mbs(f"decode-{k}"), mbs(f"pydicom-decode-{k}")
    print(f"decode {k}: rapha {a:.0f} MB/s vs pydicom {b:.0f} MB/s: x{a/b:.1f}")
if "qido-rss" in r:
    q = r["qido-rss"]
    print(f"QIDO peak RSS: {q['rss_small_kb']/1024:.1f} MB at {q['small']} studies, {q['rss_large_kb']/1024:.1f} MB at {q['large']} studies: +{(q['rss_large_kb']-q['rss_small_kb'])/1024:.1f} MB (target <= 20)")
PY
