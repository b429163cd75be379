"""Peer side of bench/dicom.sh: the same corpus through dicognito, pydicom/deid, plain pydicom
reads and pydicom pixel decoding, single process (one core). Prints one JSON object per mode."""
import json
import pathlib
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import pydicom  # noqa: E402


def files(d):
    return sorted(str(p) for p in pathlib.Path(d).rglob("*.dcm"))


def run(mode, d):
    fs = files(d)
    t = time.perf_counter()
    n = 0
    out_bytes = 0
    if mode == "pydicom-read":
        for f in fs:
            pydicom.dcmread(f, stop_before_pixels=True)
            n += 1
    elif mode == "dicognito":
        from dicognito.anonymizer import Anonymizer

        anon = Anonymizer(seed="rapha-bench")
        for f in fs:
            ds = pydicom.dcmread(f)
            anon.anonymize(ds)
            n += 1
    elif mode == "deid":
        from deid.dicom import get_identifiers, replace_identifiers

        # deid's default recipe, in memory (save=False), one file at a time as a pipeline would.
        for f in fs:
            ids = get_identifiers([f])
            replace_identifiers(dicom_files=[f], ids=ids, save=False)
            n += 1
    elif mode in ("pydicom-decode-j2k", "pydicom-decode-htj2k", "pydicom-decode-jls", "pydicom-decode-jpeg12"):
        # pylibjpeg-openjpeg (JPEG 2000 / HTJ2K) or pylibjpeg-libjpeg (JPEG-LS, 12-bit JPEG).
        blobs = [pydicom.dcmread(f) for f in fs]
        t = time.perf_counter()
        for ds in blobs:
            arr = pydicom.pixels.pixel_array(ds, as_rgb=False, decoding_plugin="pylibjpeg")
            out_bytes += arr.nbytes
            n += 1
    elif mode in ("pydicom-decode-rle", "pydicom-decode-native"):
        want_rle = mode.endswith("rle")
        blobs = []
        for f in fs:
            ds = pydicom.dcmread(f)
            if (ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5") == want_rle:
                blobs.append(ds)
        t = time.perf_counter()
        for ds in blobs:
            # numpy RLE decoder (pydicom's own), stored values.
            arr = pydicom.pixels.pixel_array(ds, as_rgb=False, decoding_plugin="pydicom") if want_rle else ds.pixel_array
            out_bytes += arr.nbytes
            n += 1
    secs = time.perf_counter() - t
    print(json.dumps({"mode": mode, "files": n, "decoded_bytes": out_bytes, "secs": secs}))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
