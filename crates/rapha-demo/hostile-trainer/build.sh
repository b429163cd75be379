#!/usr/bin/env bash
# Builds the demo's hostile example trainer as a static binary and lays out its rootfs:
#   ROOTFS/trainer   (the only file in the image)
# Usage: crates/rapha-demo/hostile-trainer/build.sh ROOTFS_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh ROOTFS_DIR}"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/rapha/target}/trainers"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
    --manifest-path "$here/Cargo.toml" --target x86_64-unknown-linux-gnu --target-dir "$target_dir" >&2
mkdir -p "$out"
install -m 0755 "$target_dir/x86_64-unknown-linux-gnu/release/hostile-example" "$out/trainer"
echo "$out/trainer"
