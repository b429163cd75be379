#!/usr/bin/env python3
"""A minimal Rapha trainer in numpy: blob-detector features + logistic regression.

Features per record: the strongest responses of a difference-of-boxes filter (a cheap blob
detector) at two scales, after windowing. The model is trained by gradient descent with class
balancing, then scores the validation records; the node computes the metrics.

Run inside a Rapha sandbox (RAPHA_DATA_SOCKET is set), or point it at a socket:
    python3 logreg.py --socket /path/to/data.sock
"""

import argparse
import time

import numpy as np

from rapha_trainer import Client, Cohort, outputs

SIDE = 64


def preprocess(meta, pixels):
    frames, rows, cols, samples = meta.shape
    img = pixels[frames // 2].astype(np.float32).mean(axis=-1)
    img = img * float(meta.attr("rescale_slope", 1.0)) + float(meta.attr("rescale_intercept", 0.0))
    lo, hi = np.percentile(img, [1, 99])
    img = np.clip((img - lo) / max(hi - lo, 1e-3), 0, 1)
    # Bright bone and dark air would dominate a blob filter: flatten both to the tissue level.
    body = img[img > 0.1]
    med = float(np.median(body)) if body.size else 0.5
    img = np.where((img > med * 1.6) | (img < med * 0.5), med, img)
    # area resize to SIDE x SIDE
    r_idx = (np.arange(rows) * SIDE // rows)
    c_idx = (np.arange(cols) * SIDE // cols)
    out = np.zeros((SIDE, SIDE), np.float32)
    cnt = np.zeros((SIDE, SIDE), np.float32)
    np.add.at(out, (r_idx[:, None], c_idx[None, :]), img)
    np.add.at(cnt, (r_idx[:, None], c_idx[None, :]), 1)
    return out / np.maximum(cnt, 1)


def box(img, k):
    s = np.cumsum(np.cumsum(np.pad(img, ((k + 1, k), (k + 1, k)), mode="edge"), 0), 1)
    n = 2 * k + 1
    return (s[n:, n:] - s[:-n, n:] - s[n:, :-n] + s[:-n, :-n]) / (n * n)


def features(img):
    f = [1.0]
    for inner, outer in ((2, 6), (3, 9)):
        dob = box(img, inner) - box(img, outer)
        flat = np.sort(dob.ravel())
        f += [flat[-1], flat[-5], flat[-20], float(dob.std())]
        f += [-flat[0], -flat[4]]
    return np.array(f, np.float64)


def load(client, metas):
    # records() keeps several fetches in flight; a record the node cannot serve is skipped.
    by_index = {m.index: m for m in metas}
    xs, keep = [], []
    for rec in client.records([m.index for m in metas], skip_unavailable=True):
        m = by_index[rec.index]
        xs.append(features(preprocess(m, rec.pixels)))
        keep.append(m)
    return np.array(xs), keep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket")
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    t0 = time.time()
    client = Client.connect("numpy-logreg 0.1", args.socket)
    cohort = Cohort.load(client)
    train = list(cohort.train())
    x, kept = load(client, train)
    y = np.array([m.label for m in kept], np.float64)
    mu, sd = x[:, 1:].mean(0), x[:, 1:].std(0) + 1e-9
    x[:, 1:] = (x[:, 1:] - mu) / sd
    w = np.zeros(x.shape[1])
    pos = max(y.sum(), 1.0)
    weight = np.where(y > 0.5, len(y) / (2 * pos), len(y) / (2 * max(len(y) - pos, 1.0)))
    for step in range(args.steps):
        p = 1 / (1 + np.exp(-x @ w))
        grad = x.T @ ((p - y) * weight) / len(y) + 1e-3 * w
        w -= 0.5 * grad
        if step % 500 == 0:
            loss = float(np.mean(weight * -(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))))
            client.progress(step=step, loss=loss)
    val = list(cohort.validation())
    xv, kept_v = load(client, val)
    scores = {}
    if len(kept_v):
        xv[:, 1:] = (xv[:, 1:] - mu) / sd
        scores = {m.index: float(s) for m, s in zip(kept_v, 1 / (1 + np.exp(-xv @ w)))}
    client.predict([(m.index, scores.get(m.index, 0.5)) for m in val])
    outputs.write_safetensors(outputs.out_dir() / "model.safetensors",
                              {"w": w.astype(np.float32), "mu": mu.astype(np.float32), "sd": sd.astype(np.float32)})
    outputs.write_metrics(outputs.out_dir() / "metrics.json",
                          {"steps": args.steps, "train_records": len(kept), "seconds": time.time() - t0})
    client.done()


if __name__ == "__main__":
    main()
