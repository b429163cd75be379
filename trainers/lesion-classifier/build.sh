#!/usr/bin/env bash
# Builds the reference trainer as a static binary and lays out its scratch rootfs:
#   ROOTFS/trainer   (the only file in the image)
# Usage: trainers/lesion-classifier/build.sh ROOTFS_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../scripts/build-static-trainer.sh" "$here" lesion-classifier \
    "${1:?usage: build.sh ROOTFS_DIR}"
