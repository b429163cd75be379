"""Reference pixel arrays from pydicom for the decode comparison test.

Reads file paths from argv, prints one JSON object per file: the shape as
[frames, rows, columns, samples] and the SHA-256 of the stored values as little-endian
float64 in C order, or the error pydicom raised (e.g. no handler for a codec). With
`--values` before the paths, also the values themselves (a list of numbers in that order), for
lossy syntaxes compared within a tolerance. Compressed syntaxes are decoded by pydicom's
pylibjpeg plugins (pylibjpeg-openjpeg for JPEG 2000 and HTJ2K, pylibjpeg-libjpeg for JPEG-LS
and 12-bit JPEG), the reference decoders.
"""
import hashlib
import json
import sys

import numpy as np
import pydicom

args = sys.argv[1:]
values = bool(args) and args[0] == "--values"
if values:
    args = args[1:]

for path in args:
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
        flat = np.ascontiguousarray(arr, dtype="<f8").reshape(-1).tobytes()
        out["sha256"] = hashlib.sha256(flat).hexdigest()
        if values:
            out["values"] = np.asarray(arr, dtype="<f8").reshape(-1).tolist()
        out["size"] = int(arr.size)
    except Exception as e:  # noqa: BLE001 - report, the Rust side decides
        out["error"] = f"{type(e).__name__}: {e}"[:200]
    print(json.dumps(out))
