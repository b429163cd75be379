"""Reference pixel arrays from pydicom for the decode comparison test.

Reads file paths from argv, prints one JSON object per file: the shape as
[frames, rows, columns, samples] and the SHA-256 of the stored values as little-endian
float64 in C order, or the error pydicom raised (e.g. no handler for a codec).
"""
import hashlib
import json
import sys

import numpy as np
import pydicom

for path in sys.argv[1:]:
    out = {"file": path}
    try:
        ds = pydicom.dcmread(path)
        # Stored values, no colour conversion, so both sides compare the same numbers.
        arr = pydicom.pixels.pixel_array(ds, as_rgb=False) if hasattr(pydicom, "pixels") else ds.pixel_array
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        shape = [frames, int(ds.Rows), int(ds.Columns), spp]
        out["shape"] = shape
        out["photometric"] = str(getattr(ds, "PhotometricInterpretation", ""))
        out["sha256"] = hashlib.sha256(np.ascontiguousarray(arr, dtype="<f8").reshape(-1).tobytes()).hexdigest()
        out["size"] = int(arr.size)
    except Exception as e:  # noqa: BLE001 - report, the Rust side decides
        out["error"] = f"{type(e).__name__}: {e}"[:200]
    print(json.dumps(out))
