#!/usr/bin/env bash
# Bundle verification vs sha256sum over the same blobs (issue #5: within 1.5x, memory flat).
#
#   bench/bundle.sh            # ~500 MB image (plus a ~50 MB one to show memory is flat)
#   SIZES_MB="100" RUNS=5 bench/bundle.sh
#
# Builds the release `rapha`, makes a rootfs of incompressible data, builds + signs a bundle,
# writes a trust store, then times `rapha bundle verify` and `sha256sum blobs/sha256/*` with
# a warm page cache, best of RUNS, and reports peak RSS of each. Not run in CI.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$RAPHA_ROOT"

SIZES_MB=${SIZES_MB:-"50 500"}
RUNS=${RUNS:-3}
work="$(mktemp -d "${TMPDIR:-/tmp}/rapha-bench-bundle.XXXXXX")"
trap 'rm -rf "$work"' EXIT

step "cargo build --release -p rapha-cli"
cargo build --release -q -p rapha-cli
rapha="$CARGO_TARGET_DIR/release/rapha"

have_time_v=0
if /usr/bin/time -v true >/dev/null 2>&1; then have_time_v=1; fi

# Runs "$@" and prints "<seconds> <peak_rss_kib>".
measure() {
    local t0 t1 rss
    if [ "$have_time_v" = 1 ]; then
        t0=$(date +%s.%N)
        /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null
        t1=$(date +%s.%N)
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
    else
        # Fallback: poll VmHWM from /proc while the command runs.
        t0=$(date +%s.%N)
        "$@" >/dev/null &
        local pid=$! hwm=0 v
        while kill -0 "$pid" 2>/dev/null; do
            v=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v
            sleep 0.05
        done
        wait "$pid"
        t1=$(date +%s.%N)
        rss=$hwm
    fi
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", b - a}') $rss"
}

best() { # best time and the peak RSS seen over RUNS runs of "$@"
    local bt=999999 br=0 out t r
    for _ in $(seq "$RUNS"); do
        out=$(measure "$@")
        t=${out% *}
        r=${out#* }
        if awk -v a="$t" -v b="$bt" 'BEGIN {exit !(a < b)}'; then bt=$t; fi
        if [ "$r" -gt "$br" ]; then br=$r; fi
    done
    echo "$bt $br"
}

"$rapha" keygen --out "$work/pub.key" >/dev/null
mkdir -p "$work/store"
{
    echo 'name = "example-ai"'
    echo 'key = """'
    cat "$work/pub.key.pub"
    echo '"""'
    echo 'trainers = ["*"]'
} >"$work/store/example-ai.toml"

printf '\n%-8s %-12s %-12s %-8s %-14s %-14s\n' "size" "verify(s)" "sha256sum(s)" "ratio" "verify RSS" "sha256sum RSS"
for mb in $SIZES_MB; do
    root="$work/rootfs-$mb"
    mkdir -p "$root"
    printf '#!/bin/sh\n' >"$root/trainer"
    chmod 0755 "$root/trainer"
    # Files of 64 MiB (and a remainder) of random bytes: gzip cannot shrink them, so the
    # layer blob is about the requested size.
    left=$mb i=0
    while [ "$left" -gt 0 ]; do
        chunk=$(( left > 64 ? 64 : left ))
        head -c "$((chunk * 1024 * 1024))" /dev/urandom >"$root/weights-$i.bin"
        left=$((left - chunk)) i=$((i + 1))
    done
    "$rapha" bundle build --rootfs "$root" --entrypoint /trainer --out "$work/layout-$mb" >/dev/null
    "$rapha" bundle sign --key "$work/pub.key" --image "$work/layout-$mb" \
        --predicate trainers/lesion-classifier/trainer.toml --out "$work/bundle-$mb" >/dev/null
    rm -rf "$root" "$work/layout-$mb"
    bundle="$work/bundle-$mb"
    blob_bytes=$(du -sb "$bundle/blobs/sha256" | cut -f1)
    cat "$bundle"/blobs/sha256/* >/dev/null # warm the page cache for both sides

    v=$(best "$rapha" bundle verify --trust-store "$work/store" "$bundle")
    s=$(best sha256sum "$bundle"/blobs/sha256/*)
    vt=${v% *} vr=${v#* } st=${s% *} sr=${s#* }
    ratio=$(awk -v a="$vt" -v b="$st" 'BEGIN {printf "%.3f", a / b}')
    printf '%-8s %-12.3f %-12.3f %-8.2f %-14s %-14s\n' "$((blob_bytes / 1048576))MiB" "$vt" "$st" "$ratio" "${vr}KiB" "${sr}KiB"
    rm -rf "$bundle"
done
echo
echo "ratio = rapha bundle verify / sha256sum over the same blobs (target <= 1.5);"
echo "RSS = peak resident set size; flat across sizes means verification streams."
