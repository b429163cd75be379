#!/usr/bin/env bash
# PyTorch example image benchmarks (issue 16; not run in CI). Needs root, runc, umoci, anvil.
#   1. node-computed AUC of the PyTorch example on a 300-study synthetic cohort (rapha-demo
#      run --example pytorch --studies 300; target >= 0.85), with its job time;
#   2. verify + unpack of the image by the node's code (pytorch_bench unpack: verify_bundle +
#      unpack_rootfs, peak RSS; targets <= 1.0x `umoci raw unpack` of the same image, 64 MiB)
#      against `umoci raw unpack` and `umoci unpack` (which adds an mtree manifest), best of
#      RUNS with a warm page cache;
#   3. container start to first record for the Python trainer (target <= 1 s) and the
#      trainer's records/s through the Python SDK vs local .npy files in the same container
#      (bench/pytorch_feed.py; target >= 0.7x).
# Usage: bench/pytorch.sh [STUDIES=300]   (RUNS=3 by default)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$RAPHA_ROOT"
studies="${1:-300}"
RUNS="${RUNS:-3}"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/rapha-bench-pytorch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

step "Building the image (cached) and the release binaries"
image="$(trainers/pytorch-lesion/build.sh)"
cargo build --release -q -p rapha-demo --bin rapha-demo --example pytorch_bench
bin="$CARGO_TARGET_DIR/release"
note "image $image: $(du -h "$image" | cut -f1)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

step "1. Node-computed AUC, $studies studies"
RAPHA_DEMO_PYTORCH_IMAGE="$image" "$bin/rapha-demo" run --example pytorch --studies "$studies" \
    --json --out "$work/demo" >"$work/demo.json" 2>"$work/demo.err" || true
python3 - "$work/demo.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
m = s["metrics"]
print(f"    outcome {s['outcome']}, AUC {m.get('auc')}, job {s['timings'].get('job_seconds')} s "
      f"(trainer running {s['timings'].get('running_seconds')} s), released {s['released']}")
print(f"    metrics {json.dumps(m)}")
PY

step "2. Verify + unpack vs umoci ($RUNS runs each, best)"
mkdir -p "$work/layout"
tar -xf "$image" -C "$work/layout"
cat "$image" >/dev/null # warm page cache for both sides
best_ours=999999 rss=0
for _ in $(seq "$RUNS"); do
    rm -rf "$work/u"
    mkdir -p "$work/u"
    line="$("$bin/examples/pytorch_bench" unpack "$image" "$work/u" | tee /dev/stderr | tail -1)"
    s="${line#seconds=}"; s="${s%% *}"; r="${line##*rss_kib=}"
    awk -v a="$s" -v b="$best_ours" 'BEGIN {exit !(a < b)}' && best_ours=$s
    [ "$r" -gt "$rss" ] && rss=$r
done
tag="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])' "$work/layout/index.json")"
timeit() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}'; }
best_raw=999999 best_full=999999
for _ in $(seq "$RUNS"); do
    rm -rf "$work/r" "$work/f"
    t=$(timeit umoci raw unpack --image "$work/layout:$tag" "$work/r")
    awk -v a="$t" -v b="$best_raw" 'BEGIN {exit !(a < b)}' && best_raw=$t
    t=$(timeit umoci unpack --image "$work/layout:$tag" "$work/f")
    awk -v a="$t" -v b="$best_full" 'BEGIN {exit !(a < b)}' && best_full=$t
done
rm -rf "$work/r" "$work/f" "$work/u"
awk -v o="$best_ours" -v r="$best_raw" -v f="$best_full" -v m="$rss" 'BEGIN {
    printf "    rapha verify+unpack %.2f s, umoci raw unpack %.2f s (ratio %.2f), umoci unpack %.2f s (ratio %.2f); node peak RSS %.1f MiB\n", o, r, o / r, f, o / f, m / 1024 }'

step "3. Container start to first record, records/s through the SDK vs .npy"
mkdir -p "$work/fs"
"$bin/examples/pytorch_bench" unpack "$image" "$work/fs" >/dev/null
"$bin/examples/pytorch_bench" feed "$work/fs/rootfs" "$studies"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
