"""Writes the JPEG-LS and 12-bit JPEG variants of a bench corpus's native files.

  dicom_jls.py NATIVE_DIR JLS_DIR JPEG12_DIR

JPEG-LS lossless (1.2.840.10008.1.2.4.80) by DCMTK's `dcmcjpls` (its CharLS), JPEG extended
12-bit (1.2.840.10008.1.2.4.51) by DCMTK's `dcmcjpeg +ee` (its 12-bit IJG), both Debian's
`dcmtk`. Single-sample files of 16 bits allocated and at most 12 stored only, so every file of
both sets goes to rapha's sandboxed decoder (8-bit extended JPEG is decoded in process).
"""
import pathlib
import subprocess
import sys

import pydicom


def main(native, jls, jpeg12):
    native, jls, jpeg12 = map(pathlib.Path, (native, jls, jpeg12))
    jls.mkdir(parents=True, exist_ok=True)
    jpeg12.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in sorted(native.glob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.BitsAllocated) != 16 or int(ds.BitsStored) > 12:
            continue
        subprocess.run(["dcmcjpls", str(p), str(jls / p.name)], check=True, capture_output=True)
        subprocess.run(["dcmcjpeg", "+ee", str(p), str(jpeg12 / p.name)], check=True, capture_output=True)
        n += 1
    print(f"    {n} files in JPEG-LS and 12-bit JPEG")


if __name__ == "__main__":
    main(*sys.argv[1:4])
