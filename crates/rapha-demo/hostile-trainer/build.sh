#!/usr/bin/env bash
# Builds the demo's hostile example trainer as a static binary and lays out its rootfs:
#   ROOTFS/trainer   (the only file in the image)
# Usage: crates/rapha-demo/hostile-trainer/build.sh ROOTFS_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../../scripts/build-static-trainer.sh" "$here" hostile-example \
    "${1:?usage: build.sh ROOTFS_DIR}"
