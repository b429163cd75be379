#!/usr/bin/env python3
"""PyTorch example trainer for Rapha: the reference trainer's lesion task in PyTorch.

The same task, network and preprocessing as the reference trainer
(trainers/lesion-classifier/src/main.rs): records come over the node's record feed through the
Python SDK (sdk/python/rapha_trainer), a small CNN learns whether the synthetic lesion is
present, the validation records are scored and the scores submitted; the node computes the
released metrics from them. Writes to /out, the only writable place besides /tmp:

- model.safetensors  the weights (through the SDK: never torch.save, whose pickles execute
                     code when loaded and which the node refuses);
  (the node releases its own re-serialisation of the tensors trainer.toml declares; ONNX
  graphs, which carry free text, are not released, so none is written here);
- metrics.json       self-reported figures (epochs, loss curve, records, seconds).

Usage: train.py [--epochs N] [--seed S] [--batch B] [--lr LR] [--threads T] [--limit N]
       train.py --predict WEIGHTS.safetensors   (score the validation records, no training)
Defaults come from the environment too (RAPHA_EPOCHS, RAPHA_SEED, ...), then argv.

Inside the sandbox the root is read-only, there is no network, threads count against the
pids limit and /tmp is a small RAM disk: the image's entrypoint sets OMP_NUM_THREADS and runs
python3 -B (no bytecode written), and nothing here writes outside /out.
"""

import argparse
import importlib
import os
import sys
import threading
import time

import numpy as np

from rapha_trainer import Client, Cohort, RefusedError, outputs

SIDE = 64


def args_from(argv):
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=int(env("RAPHA_EPOCHS", "25")))
    ap.add_argument("--seed", type=int, default=int(env("RAPHA_SEED", "7")))
    ap.add_argument("--batch", type=int, default=int(env("RAPHA_BATCH", "16")))
    ap.add_argument("--lr", type=float, default=float(env("RAPHA_LR", "1e-3")))
    ap.add_argument("--threads", type=int, default=int(env("OMP_NUM_THREADS", "2")))
    ap.add_argument("--limit", type=int, default=int(env("RAPHA_LIMIT", "0")),
                    help="train on at most N records (0: all)")
    ap.add_argument("--predict", metavar="WEIGHTS")
    ap.add_argument("--socket", help="record feed socket (default: $RAPHA_DATA_SOCKET)")
    return ap.parse_args(argv)


def resize_area(img, side):
    rows, cols = img.shape
    r_idx = np.arange(rows) * side // max(rows, 1)
    c_idx = np.arange(cols) * side // max(cols, 1)
    out = np.zeros((side, side), np.float32)
    cnt = np.zeros((side, side), np.float32)
    np.add.at(out, (r_idx[:, None], c_idx[None, :]), img)
    np.add.at(cnt, (r_idx[:, None], c_idx[None, :]), 1)
    return out / np.maximum(cnt, 1)


def preprocess(meta, pixels):
    """A normalised SIDE x SIDE grey image, as the reference trainer makes it: middle frame,
    colour averaged, rescale applied, the record's window when it frames the image (else a
    robust percentile window), area-resized, bone and air flattened to the tissue level."""
    frames = meta.shape[0]
    img = pixels[frames // 2].astype(np.float32).mean(axis=-1)
    img = img * float(meta.attr("rescale_slope", 1.0)) + float(meta.attr("rescale_intercept", 0.0))
    sample = np.sort(img.ravel()[::7])

    def pick(q):
        return float(sample[int((len(sample) - 1) * q)]) if len(sample) else 0.0

    lo, hi = pick(0.01), pick(0.99)
    c, w = meta.attr("window_center"), meta.attr("window_width")
    try:
        c, w = float(c), float(w)
    except (TypeError, ValueError):
        c = w = None
    if w is not None and w > 1.0:
        wlo, whi = c - w / 2, c + w / 2
        if wlo <= pick(0.25) and whi >= pick(0.75):
            lo, hi = wlo, whi
    img = np.clip((img - lo) / max(hi - lo, 1e-3), 0.0, 1.0)
    img = resize_area(img, SIDE)
    body = img[img > 0.1]
    if body.size >= 16:
        med = float(np.sort(body)[body.size // 2])
        img = np.where((img < med * 0.5) | (img > med * 1.6), med, img)
        sd = max(float(np.sqrt(np.mean((img - med) ** 2))), 1e-3)
        img = (img - med) / sd
    return img.astype(np.float32)


class TorchLoader:
    """Imports torch on a thread while the main thread reads and preprocesses records (which
    needs only numpy): loading PyTorch takes seconds, and the node decodes records meanwhile.
    Started once the feed is flowing (the import holds the interpreter lock for long
    stretches, which would delay the first request). One extra thread, within the pids
    limit."""

    def __init__(self):
        self._box = {}
        self._thread = threading.Thread(target=self._load, name="import-torch", daemon=True)

    def start(self):
        if self._thread.ident is None:
            self._thread.start()

    def _load(self):
        try:
            self._box["torch"] = importlib.import_module("torch")
        except BaseException as e:  # re-raised on the main thread by get()
            self._box["error"] = e

    def get(self):
        self.start()
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["torch"]


def make_net(torch):
    """Three 3x3 convolutions, global max and mean pooling (the lesion can be anywhere; its
    presence is what matters), one linear logit. Tensor names and shapes are the reference
    trainer's, so either trainer's weights load in the other."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 8, 3)
            self.c2 = nn.Conv2d(8, 16, 3)
            self.c3 = nn.Conv2d(16, 32, 3)
            self.fc = nn.Linear(64, 1)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
            x = torch.relu(self.c3(x)).flatten(2)
            pooled = torch.cat([torch.amax(x, dim=2), torch.mean(x, dim=2)], dim=1)
            return self.fc(pooled).squeeze(1)

    return Net()


def init_weights(torch, net, seed):
    """He-uniform convolutions, zero biases, a zero final layer: training starts at logit 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(net.named_parameters()):
            if name.startswith("fc.") or name.endswith(".bias"):
                p.zero_()
            else:
                bound = (6.0 / max(p[0].numel(), 1)) ** 0.5
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)


def load_images(client, metas, on_first=None):
    """Preprocessed images in the order of `metas`; None for a record the node could not
    decode (the protocol lets a trainer skip it). Fetches are pipelined by the SDK.
    `on_first` is called once the first record has arrived."""
    out = {}
    for rec in client.records([m.index for m in metas], skip_unavailable=True):
        out[rec.index] = rec.pixels
        if on_first is not None:
            on_first()
            on_first = None
    return [preprocess(m, out[m.index]) if m.index in out else None for m in metas]


def score(torch, net, images):
    scores = []
    net.eval()
    with torch.no_grad():
        for i in range(0, len(images), 64):
            chunk = images[i:i + 64]
            present = [im for im in chunk if im is not None]
            probs = iter(torch.sigmoid(net(torch.from_numpy(np.stack(present))[:, None])).tolist()
                         if present else [])
            # A record the node could not decode gets the uninformative score.
            scores += [next(probs) if im is not None else 0.5 for im in chunk]
    return scores


def train(torch, net, metas, imgs, client, a, started):
    nn = torch.nn
    data = [(im, float(m.label)) for im, m in zip(imgs, metas) if im is not None]
    x_all = torch.from_numpy(np.stack([d[0] for d in data]))[:, None]
    y_all = torch.tensor([d[1] for d in data])
    pos = max(float(y_all.sum()), 1.0)
    neg = max(len(data) - pos, 1.0)
    # Balanced classes: each carries half of the loss.
    w_all = torch.where(y_all > 0.5, len(data) / (2 * pos), len(data) / (2 * neg))
    print(f"training on {len(data)} records ({int(pos)} positive), "
          f"{time.time() - started:.1f} s after start", file=sys.stderr)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    rng = np.random.default_rng(a.seed)
    curve = []
    net.train()
    for epoch in range(a.epochs):
        total = 0.0
        for batch in np.array_split(rng.permutation(len(data)),
                                    max(1, -(-len(data) // max(1, a.batch)))):
            idx = torch.from_numpy(batch)
            x = x_all[idx]
            flips = rng.integers(0, 4, len(batch))
            for j, f in enumerate(flips):
                # x[j] is [1, SIDE, SIDE]: bit 1 flips the rows, bit 2 the columns.
                dims = [d for bit, d in ((1, 1), (2, 2)) if f & bit]
                if dims:
                    x[j] = torch.flip(x[j], dims)
            y, w = y_all[idx], w_all[idx]
            loss = (nn.functional.binary_cross_entropy_with_logits(net(x), y, reduction="none")
                    * w).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(batch)
        curve.append(total / len(data))
        client.progress(epoch=epoch + 1, loss=curve[-1])
        print(f"epoch {epoch + 1}/{a.epochs}: train loss {curve[-1]:.4f}", file=sys.stderr)
    out = outputs.out_dir()
    outputs.write_safetensors(out / "model.safetensors",
                              {k: v.detach().numpy() for k, v in net.state_dict().items()})
    outputs.write_metrics(out / "metrics.json", {
        "epochs": a.epochs, "train_loss": curve[-1] if curve else 0.0,
        "train_records": len(data), "seconds": time.time() - started, "loss_curve": curve,
    })


def main(argv):
    started = time.time()
    a = args_from(argv)
    loader = TorchLoader()
    client = Client.connect("pytorch-lesion 0.1", a.socket)
    cohort = Cohort.load(client)
    metas = [] if a.predict else list(cohort.train())[:a.limit or None]
    imgs = load_images(client, metas, on_first=loader.start)
    torch = loader.get()
    torch.set_num_threads(max(1, a.threads))
    torch.set_num_interop_threads(1)
    torch.manual_seed(a.seed)
    net = make_net(torch)
    init_weights(torch, net, a.seed)
    if a.predict:
        weights = outputs.read_safetensors(a.predict)
        net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    else:
        train(torch, net, metas, imgs, client, a, started)
    val = list(cohort.validation())
    scores = score(torch, net, load_images(client, val))
    accepted, remaining = client.predict([(m.index, s) for m, s in zip(val, scores)])
    print(f"submitted {accepted} validation scores ({remaining} remaining), "
          f"{time.time() - started:.1f} s after start", file=sys.stderr)
    client.done()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except RefusedError as e:
        print(f"pytorch-lesion: {e}", file=sys.stderr)
        sys.exit(1)
