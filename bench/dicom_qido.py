"""QIDO memory benchmark for bench/dicom.sh: Orthanc (started through rapha-testkit serve) with N
one-instance studies; peak RSS of a scoped study search over 1,000 and over N studies."""
import http.client
import io
import json
import subprocess
import sys
import urllib.parse

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

bench_bin, testkit, n, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
srv = subprocess.Popen([testkit, "serve", "orthanc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
info = json.loads(srv.stdout.readline())
u = urllib.parse.urlparse(info["url"])
conn = http.client.HTTPConnection(u.hostname, u.port)


def instance(i):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName = f"P{i:06d}", f"PATIENT^{i:06d}"
    ds.StudyDate, ds.Modality, ds.AccessionNumber = "20240115", "CT", f"A{i:07d}"
    ds.StudyDescription = "CT CHEST " * 4
    ds.Rows = ds.Columns = 1
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\0\0"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


try:
    for i in range(n):
        conn.request("POST", "/instances", body=instance(i), headers={"Content-Type": "application/dicom"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
    out = {"mode": "qido-rss", "small": 1000, "large": n}
    for key, limit in (("small", 1000), ("large", n)):
        q = f"StudyDate=20240101-20240131&ModalitiesInStudy=CT&limit={limit}"
        p = subprocess.run(["/usr/bin/time", "-f", "RSSKB %M", "taskset", "-c", "0", bench_bin, "qido", info["dicomweb"], q],
                           capture_output=True, text=True, check=True)
        res = json.loads(p.stdout.strip().splitlines()[-1])
        out[f"studies_{key}"] = res["studies"]
        out[f"secs_{key}"] = res["secs"]
        out[f"rss_{key}_kb"] = int([l for l in p.stderr.splitlines() if l.startswith("RSSKB")][-1].split()[1])
    print(json.dumps(out))
finally:
    srv.stdin.close()
    srv.wait(timeout=60)
