#!/usr/bin/env python3
"""Runs inside the PyTorch example's container (bench/pytorch.sh, through
crates/rapha-demo/examples/pytorch_bench.rs): the trainer's records/s through the Python SDK
against reading the same decoded records from local .npy files in the same container.

Passes, each over every record of the cohort, each timed alone:
  1. SDK records() + the trainer's preprocessing (first epoch: the node decodes);
  2. the same again (later epochs: the node's cache);
  3. untimed: save every record to /tmp/npy/<index>.npy;
  4. np.load of every .npy + the same preprocessing;
  5. and 6. passes 2 and 4 without the preprocessing (raw reading).
Prints the figures on stderr (floats and lower-case words only: the node scans logs).
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, "/app")
import train  # noqa: E402  the trainer's own preprocessing
from rapha_trainer import Client, Cohort  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    client = Client.connect("pytorch-feed-bench 0.1")
    cohort = Cohort.load(client)
    metas = cohort.records
    by_index = {m.index: m for m in metas}
    idx = [m.index for m in metas]

    def sdk(prep):
        t, n, nbytes = time.perf_counter(), 0, 0
        for rec in client.records(idx, skip_unavailable=True):
            if prep:
                train.preprocess(by_index[rec.index], rec.pixels)
            n += 1
            nbytes += rec.pixels.nbytes
        return n / (time.perf_counter() - t), nbytes

    def npy(prep):
        t, n = time.perf_counter(), 0
        for i in idx:
            path = f"/tmp/npy/{i}.npy"
            if not os.path.exists(path):
                continue
            px = np.load(path)
            if prep:
                train.preprocess(by_index[i], px)
            n += 1
        return n / (time.perf_counter() - t)

    first, nbytes = sdk(True)
    cached, _ = sdk(True)
    os.makedirs("/tmp/npy", exist_ok=True)
    for rec in client.records(idx, skip_unavailable=True):
        np.save(f"/tmp/npy/{rec.index}.npy", rec.pixels)
    local = npy(True)
    raw_sdk, _ = sdk(False)
    raw_npy = npy(False)
    log(f"records {float(len(idx))} decoded mb {nbytes / 1e6:.1f}")
    log(f"with preprocessing: sdk first epoch {first:.1f} rec/s, sdk later epochs {cached:.1f} rec/s,"
        f" local npy {local:.1f} rec/s: ratios {first / local:.2f} / {cached / local:.2f}")
    log(f"raw reading: sdk {raw_sdk:.1f} rec/s, local npy {raw_npy:.1f} rec/s: ratio {raw_sdk / raw_npy:.2f}")
    val = list(cohort.validation())
    client.predict([(m.index, 0.5) for m in val])
    client.done()


if __name__ == "__main__":
    main()
