#!/usr/bin/env bash
# How testdata/v1 was made. Kept as text: the workspace never builds this directory, and the
# fixtures must never be regenerated (they are what the pre-issue-18 code wrote; later code must
# keep reading them). Recorded for the audit trail only.
#
#   git -C /work/main worktree add --detach /work/wt-v1gen 665d500
#   testdata/v1/generator/run.sh /work/wt-v1gen OUT_DIR
#
# Needs the services of scripts/lib.sh (anvil, runc) and the reference trainer rootfs
# ($HOME/.cache/rapha/reference-trainer, built by trainers/lesion-classifier/build.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wt="${1:?usage: run.sh WORKTREE_AT_665d500 OUT_DIR}"
out="${2:?usage: run.sh WORKTREE_AT_665d500 OUT_DIR}"
[ "$(git -C "$wt" rev-parse --short=7 HEAD)" = 665d500 ] || { echo "worktree is not at 665d500" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR}"
target="$CARGO_TARGET_DIR"
# shellcheck source=/dev/null
source "$wt/scripts/lib.sh"
export CARGO_TARGET_DIR="$target"
work="$(mktemp -d)"
# The failing trainer: a static binary that exits 3.
mkdir -p "$work/exit-rootfs"
rustc --edition 2021 -O -C target-feature=+crt-static -C strip=symbols \
    --target x86_64-unknown-linux-gnu "$here/exit_trainer.rs" -o "$work/exit-rootfs/trainer"
# The hostile example trainer of that commit.
"$wt/crates/rapha-demo/hostile-trainer/build.sh" "$work/hostile-rootfs" >/dev/null
# The generator, as an example of the demo crate of that commit.
cp "$here/v1gen.rs" "$wt/crates/rapha-demo/examples/v1gen.rs"
(cd "$wt" && cargo build --locked -p rapha-demo --example v1gen)
"$CARGO_TARGET_DIR/debug/examples/v1gen" "$out" "$HOME/.cache/rapha/reference-trainer" \
    "$work/hostile-rootfs" "$work/exit-rootfs"
rm -f "$wt/crates/rapha-demo/examples/v1gen.rs"
# The receipts verify with that commit's verifier (run on the copied testdata/v1).
cp "$here/verify_v1.rs" "$wt/crates/rapha-demo/examples/verify_v1.rs"
(cd "$wt" && cargo run -q --locked -p rapha-demo --example verify_v1 -- "$here/..")
rm -f "$wt/crates/rapha-demo/examples/verify_v1.rs"
