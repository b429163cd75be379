#!/usr/bin/env bash
# Builds the audit runner as a static binary: OUTDIR/runner (the only file its rootfs needs).
# Prints that path on stdout and nothing else.
# Usage: runners/onnx-audit/build.sh OUTDIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../scripts/build-static-trainer.sh" "$here" runner \
    "${1:?usage: build.sh OUTDIR}" runner
