"""Independent check of a generated cohort with pydicom: every file parses, its pixel data
decodes (native and RLE) to the shape its header declares, and its header matches the
manifest. Prints one JSON summary line; exits non-zero on the first mismatch."""
import json
import sys

import pydicom

root = sys.argv[1]
manifest = json.load(open(f"{root}/manifest.json"))
phi = set(manifest["phi"])
summary = {"files": 0, "rle": 0, "native": 0, "rgb": 0, "private_creator": 0, "sequences": 0}
for study in manifest["studies"]:
    for inst in study["instances"]:
        ds = pydicom.dcmread(f"{root}/{inst['path']}")
        ts = str(ds.file_meta.TransferSyntaxUID)
        assert ts == inst["transfer_syntax"], (inst["path"], ts)
        arr = ds.pixel_array
        want = (ds.Rows, ds.Columns) if ds.SamplesPerPixel == 1 else (ds.Rows, ds.Columns, 3)
        assert arr.shape == want, (inst["path"], arr.shape, want)
        assert (ds.Rows, ds.Columns) == (inst["rows"], inst["columns"])
        assert ds.SOPInstanceUID == inst["sop_instance_uid"]
        assert ds.StudyInstanceUID == study["study_instance_uid"]
        assert ds.PatientID == study["patient_id"] and ds.AccessionNumber == study["accession_number"]
        for kw in ["PatientName", "PatientID", "OtherPatientIDs", "IssuerOfPatientID",
                   "PatientBirthDate", "AccessionNumber", "StudyInstanceUID",
                   "SeriesInstanceUID", "SOPInstanceUID", "InstitutionName",
                   "InstitutionAddress", "ReferringPhysicianName", "OperatorsName",
                   "StationName", "StudyDescription", "ProtocolName", "SeriesDescription",
                   "StudyDate", "StudyTime"]:
            assert str(ds.data_element(kw).value) in phi, (kw, ds.data_element(kw).value)
        if "FrameOfReferenceUID" in ds:
            assert ds.FrameOfReferenceUID in phi
        ref = ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID
        req = ds.RequestAttributesSequence[0]
        assert ref in phi and req.RequestedProcedureID in phi and req.AccessionNumber in phi
        summary["sequences"] += 1
        block = ds.private_block(0x0011, "RAPHA SYNTH PRIVATE")
        assert block[0x10].value == study["patient_id"]
        summary["private_creator"] += 1
        flag = ds.get("BurnedInAnnotation")
        assert flag == inst["burned_in_annotation_flag"], (inst["path"], flag)
        summary["files"] += 1
        summary["rle" if ts == "1.2.840.10008.1.2.5" else "native"] += 1
        summary["rgb"] += ds.SamplesPerPixel == 3
print(json.dumps(summary))
