#!/usr/bin/env bash
# Demo job vs the same trainer run directly (issue 12's benchmark; not run in CI). Needs root,
# runc and anvil (scripts/demo installs them).
#
#   ratio = demo job wall time / direct trainer wall time          target <= 1.15
#
# demo job wall time: `rapha-demo run --json`, timings.job_seconds = from the job's submission
#   to the in-process node until it is settled on the local chain (bundle check, policy,
#   scoped cohort query on the embedded PACS, DPO approval, escrow deposit, simulated
#   attestation, the trainer under runc fed over WADO-RS, output guard, receipt, payout).
# direct trainer wall time: the same reference trainer binary with the same arguments
#   (--epochs E, default batch) started as a plain process and fed the same records, already
#   decoded in memory, over trainer protocol v1 by a minimal bench-only server
#   (crates/rapha-demo/examples/direct_trainer.rs): no runc, no PACS, no guard, no chain.
# Outside both clocks: cohort generation, the trainer build, anvil start-up, and (direct side)
# fetching and decoding the records (shown as decode_s: what the demo's feed does on the
# trainer's request, over WADO-RS from the embedded PACS, inside its `running` time).
#
# self_s_d/r: the trainer's own measure of its run (metrics.json "seconds", connect to outputs)
# on the direct side / in the demo job: a gap between running_s and it is time around the
# trainer (container start, output guard); a gap between the two self_s is the trainer itself
# running slower or faster (in the container, or the shared machine's load at that moment).
#
# Usage: bench/demo.sh [RUNS] [STUDIES] [EPOCHS]   (default: 3 runs, 120 studies, 25 epochs,
#        the demo's defaults)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
runs="${1:-3}"
studies="${2:-120}"
epochs="${3:-25}"
py="$(command -v python3)"

step "Building rapha-demo and the direct peer (release), and the reference trainer"
cargo build --release -q -p rapha-demo --bin rapha-demo --example direct_trainer
trainer_dir="$RAPHA_CACHE/reference-trainer"
trainers/lesion-classifier/build.sh "$trainer_dir" >/dev/null
demo="$CARGO_TARGET_DIR/release/rapha-demo"
direct="$CARGO_TARGET_DIR/release/examples/direct_trainer"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

field() { "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v.get(k) if isinstance(v,dict) else None
print("" if v is None else v)' "$1" "$2"; }

step "$runs runs: $studies studies, --epochs $epochs (machine: $(nproc) cores, shared)"
printf '%-4s %-16s %10s %10s %10s %8s %9s %13s %8s %s\n' run "load(1,5,15)" demo_job_s running_s direct_s ratio decode_s self_s_d/r rec_d/r auc_d/r
ratios=()
jobs=()
directs=()
around=()
decodes=()
for i in $(seq 1 "$runs"); do
    load="$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
    run_demo() {
        RAPHA_DEMO_REFERENCE_TRAINER="$trainer_dir" "$demo" run --studies "$studies" \
            --epochs "$epochs" --json --out "$work/demo" >"$work/demo.json" 2>"$work/demo.log" || {
            echo "demo run $i failed; its log:"; cat "$work/demo.log"; exit 1; }
    }
    run_direct() {
        "$direct" --studies "$studies" -- "$trainer_dir/trainer" --epochs "$epochs" \
            >"$work/direct.json" 2>"$work/direct.log" || {
            echo "direct run $i failed; its log:"; cat "$work/direct.log"; exit 1; }
    }
    # Alternate which side goes first, so a load change on the shared machine during a pair
    # does not always favour the same side.
    if [ $((i % 2)) -eq 1 ]; then run_demo; run_direct; else run_direct; run_demo; fi
    job="$(field "$work/demo.json" timings.job_seconds)"
    running="$(field "$work/demo.json" timings.running_seconds)"
    dsec="$(field "$work/direct.json" trainer_seconds)"
    rec_demo="$(field "$work/demo.json" cohort.instances_used)"
    rec_direct="$(field "$work/direct.json" records_fed)"
    auc_demo="$(field "$work/demo.json" metrics.auc)"
    auc_direct="$(field "$work/direct.json" auc)"
    ratio="$("$py" -c "print(f'{$job/$dsec:.3f}')")"
    ratios+=("$ratio")
    jobs+=("$job")
    directs+=("$dsec")
    decode="$(field "$work/direct.json" decode_seconds)"
    self_direct="$(field "$work/direct.json" trainer_self_seconds)"
    self_demo="$(field "$work/demo/released/metrics.json" seconds)"
    selfs="$("$py" -c "print(f'{float($self_direct):.1f}/{float($self_demo):.1f}')")"
    printf '%-4s %-16s %10.2f %10.2f %10.2f %8s %9.2f %13s %8s %s\n' "$i" "$load" "$job" "$running" "$dsec" \
        "$ratio" "$decode" "$selfs" "$rec_direct/$rec_demo" "$("$py" -c "print(f'{float($auc_direct):.3f}/{float($auc_demo):.3f}')")"
    around+=("$("$py" -c "print($job - float($self_demo))")")
    decodes+=("$decode")
    if [ "$rec_demo" != "$rec_direct" ]; then
        echo "WARNING: the direct run fed $rec_direct records, the demo job used $rec_demo"
    fi
    {
        echo "run $i demo job states (seconds after submission):"
        "$py" -c 'import json,sys
for s in json.load(open(sys.argv[1]))["timings"]["states"]: print("    %8.2f  %s" % (s["at_seconds"], s["state"]))' "$work/demo.json"
    } >>"$work/states.txt"
done
cat "$work/states.txt"
"$py" - "${ratios[*]}" "${jobs[*]}" "${directs[*]}" "${around[*]}" "${decodes[*]}" <<'PY'
import statistics, sys
r, j, d, a, dec = ([float(x) for x in a.split()] for a in sys.argv[1:6])
print(f"\nratio demo job / direct trainer, per pair: median {statistics.median(r):.3f}, "
      f"min {min(r):.3f}, max {max(r):.3f} over {len(r)} runs (target <= 1.15)")
print(f"demo job {statistics.median(j):.2f} s median ({min(j):.2f}-{max(j):.2f}); direct trainer "
      f"{statistics.median(d):.2f} s median ({min(d):.2f}-{max(d):.2f}); "
      f"ratio of medians {statistics.median(j)/statistics.median(d):.3f}, "
      f"ratio of minima {min(j)/min(d):.3f}")
# The trainer's own run time swings with the shared machine's load; Rapha's time around it
# (job wall time minus the trainer's self-reported seconds) does not.
# The feed's WADO-RS fetch + decode happens inside the trainer's own seconds; it is added
# back from the direct side's (untimed) measure of the same work.
m = statistics.median(a) + statistics.median(dec)
dm = statistics.median(d)
print(f"Rapha's time around the trainer (demo job - trainer's own seconds + fetch/decode): "
      f"median {m:.2f} s; at the direct trainer's median {dm:.2f} s that is a ratio of "
      f"{(dm + m) / dm:.3f}")
PY
