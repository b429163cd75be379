#!/usr/bin/env bash
# Builds a Rust trainer of this repository as a static binary and lays out its scratch rootfs:
#   ROOTFS/trainer   (the only file in the image)
# Usage: scripts/build-static-trainer.sh CRATE_DIR BINARY ROOTFS_DIR
# (trainers/lesion-classifier/build.sh and crates/rapha-demo/hostile-trainer/build.sh call it.)
set -euo pipefail
crate="${1:?usage: build-static-trainer.sh CRATE_DIR BINARY ROOTFS_DIR}"
binary="${2:?usage: build-static-trainer.sh CRATE_DIR BINARY ROOTFS_DIR}"
out="${3:?usage: build-static-trainer.sh CRATE_DIR BINARY ROOTFS_DIR}"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/rapha/target}/trainers"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
    --manifest-path "$crate/Cargo.toml" --target x86_64-unknown-linux-gnu --target-dir "$target_dir" >&2
mkdir -p "$out"
install -m 0755 "$target_dir/x86_64-unknown-linux-gnu/release/$binary" "$out/trainer"
echo "$out/trainer"
