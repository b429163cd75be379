"""Writing outputs the node's guard accepts: numeric metrics.json and F32 safetensors."""

import json
import math
import os
import struct
from pathlib import Path
from typing import Dict

import numpy as np

from ._protocol import MAX_CURVE, METRICS_KEYS, OUT_DIR_IN_CONTAINER, OUT_ENV

# The protocol's metrics schema (generated from crates/rapha-protocol): the node's output guard
# refuses any other key.
METRIC_KEYS = frozenset(METRICS_KEYS)


def out_dir() -> Path:
    return Path(os.environ.get(OUT_ENV, OUT_DIR_IN_CONTAINER))


def write_metrics(path, metrics: Dict[str, object]) -> None:
    """Numbers only (strings can carry PHI); *_curve keys take lists of at most 10,000."""
    clean = {}
    for k, v in metrics.items():
        if k not in METRIC_KEYS:
            raise ValueError(f"metrics.json: {k!r} is not a key of the metrics schema")
        if k.endswith("_curve"):
            vals = [float(x) for x in v]
            if len(vals) > MAX_CURVE or not all(math.isfinite(x) for x in vals):
                raise ValueError(f"metrics.json: {k} must be at most 10,000 finite numbers")
            clean[k] = vals
        else:
            x = float(v)
            if not math.isfinite(x):
                raise ValueError(f"metrics.json: {k} is not finite")
            clean[k] = x
    Path(path).write_text(json.dumps(clean))


def write_safetensors(path, tensors: Dict[str, np.ndarray]) -> None:
    # A deliberate duplicate (issue 23): scripts/model_corpus.py writes safetensors itself, the
    # way PyTorch's exporters do, as an independent witness for the output guard; this package
    # is installed into trainers and carries no repository scripts.
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path) -> Dict[str, np.ndarray]:
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise ValueError(f"{name}: only F32 tensors are supported")
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype="<f4").reshape(t["shape"])
    return out


