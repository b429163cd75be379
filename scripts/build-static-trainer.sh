#!/usr/bin/env bash
# Builds a Rust program of this repository as a static binary and lays out its scratch rootfs:
#   ROOTFS/trainer   (the only file in the image; NAME instead of trainer when given)
# Usage: scripts/build-static-trainer.sh CRATE_DIR BINARY ROOTFS_DIR [NAME]
# (trainers/lesion-classifier/build.sh, crates/rapha-demo/hostile-trainer/build.sh and
# runners/onnx-audit/build.sh call it.) Cargo's own caching skips an unchanged build: the target
# directory persists under $CARGO_TARGET_DIR (scripts/lib.sh puts it under $RAPHA_CACHE).
set -euo pipefail
usage="usage: build-static-trainer.sh CRATE_DIR BINARY ROOTFS_DIR [NAME]"
crate="${1:?$usage}"
binary="${2:?$usage}"
out="${3:?$usage}"
name="${4:-trainer}"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/rapha/target}/trainers"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --bin "$binary" \
    --manifest-path "$crate/Cargo.toml" --target x86_64-unknown-linux-gnu --target-dir "$target_dir" >&2
mkdir -p "$out"
install -m 0755 "$target_dir/x86_64-unknown-linux-gnu/release/$binary" "$out/$name"
echo "$out/$name"
