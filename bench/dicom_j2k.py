"""Writes the JPEG 2000 and HTJ2K variants of a bench corpus's native files.

  dicom_j2k.py NATIVE_DIR J2K_DIR HTJ2K_DIR

JPEG 2000 lossless (1.2.840.10008.1.2.4.90) by pydicom with pylibjpeg-openjpeg (OpenJPEG's
encoder); HTJ2K lossless (1.2.840.10008.1.2.4.201) by Debian's `ojph_compress` (OpenJPH), one
codestream per frame. Single-sample unsigned images only (OpenJPH 0.9 misreads signed raw input).
"""
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, UID

HTJ2K_LOSSLESS = UID("1.2.840.10008.1.2.4.201")


def htj2k_frame(arr, bits, tmp):
    raw = os.path.join(tmp, "in.yuv")
    out = os.path.join(tmp, "out.j2c")
    (arr.astype("<u2") if bits > 8 else arr.astype("u1")).tofile(raw)
    rows, cols = arr.shape
    subprocess.run(
        ["ojph_compress", "-i", raw, "-o", out, "-dims", f"{{{cols},{rows}}}", "-num_comps", "1",
         "-signed", "false", "-bit_depth", str(bits), "-downsamp", "{1,1}", "-reversible", "true"],
        check=True, capture_output=True)
    return pathlib.Path(out).read_bytes()


def main(native, j2k, htj2k):
    native, j2k, htj2k = map(pathlib.Path, (native, j2k, htj2k))
    j2k.mkdir(parents=True, exist_ok=True)
    htj2k.mkdir(parents=True, exist_ok=True)
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for p in sorted(native.glob("*.dcm")):
            ds = pydicom.dcmread(p)
            if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("PixelRepresentation", 0)) != 0:
                continue
            arr = ds.pixel_array
            frames = arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]
            bits = int(ds.BitsStored)
            a = pydicom.dcmread(p)
            a.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
            a.save_as(j2k / p.name, enforce_file_format=True)
            b = pydicom.dcmread(p)
            b.PixelData = encapsulate([htj2k_frame(f, bits, tmp) for f in frames])
            b["PixelData"].VR = "OB"
            b.file_meta.TransferSyntaxUID = HTJ2K_LOSSLESS
            b.save_as(htj2k / p.name, enforce_file_format=True)
            n += 1
    print(f"    {n} files in JPEG 2000 and HTJ2K")


if __name__ == "__main__":
    main(*sys.argv[1:4])
