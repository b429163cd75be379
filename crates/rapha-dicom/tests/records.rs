//! I1 and I3 on files: allow-listed fields present, planted PHI absent in every spelling,
//! exclusions counted by reason, pseudonyms consistent under one key and unlinkable across keys.

use rapha_core::IdDomain;
use rapha_dicom::cohort::{Cohort, CohortBuilder, InstanceSource};
use rapha_dicom::exclusion::{reason, LabelTable, OptOuts};
use rapha_dicom::record::AgeYears;
use rapha_dicom::DicomConfig;

use crate::common::{key, planted_phi, write_instance, Inst};

/// Patient A: two CT instances in a first study and one in a later study that references the
/// first; patient B (opted out); a BurnedInAnnotation YES instance; ultrasound flagged NO;
/// secondary capture labelled CT; and a file that is not DICOM.
fn instances() -> Vec<Inst> {
    let a1 = Inst::ct(1);
    let a2 = Inst::ct(2);
    let a3 = Inst {
        study_uid: "1.2.826.0.1.3680043.8.498.2",
        series_uid: "1.2.826.0.1.3680043.8.498.2.1",
        sop_uid: "1.2.826.0.1.3680043.8.498.2.1.1",
        accession: "ACC20240099",
        study_date: "20240115",
        referenced_sop: Some(a1.sop_uid),
        ..Inst::ct(0)
    };
    let b = Inst {
        patient_id: "PAT-0099",
        patient_name: "ROE^RICHARD",
        accession: "ACC20240200",
        study_uid: "1.2.826.0.1.3680043.8.498.3",
        series_uid: "1.2.826.0.1.3680043.8.498.3.1",
        sop_uid: "1.2.826.0.1.3680043.8.498.3.1.1",
        ..Inst::ct(0)
    };
    let burned = Inst {
        sop_uid: "1.2.826.0.1.3680043.8.498.1.1.50",
        burned_in: Some("YES"),
        ..Inst::ct(0)
    };
    let us = Inst {
        sop_uid: "1.2.826.0.1.3680043.8.498.1.1.60",
        modality: "US",
        sop_class: "1.2.840.10008.5.1.4.1.1.6.1",
        ..Inst::ct(0)
    };
    let sc = Inst {
        sop_uid: "1.2.826.0.1.3680043.8.498.1.1.70",
        sop_class: "1.2.840.10008.5.1.4.1.1.7",
        ..Inst::ct(0)
    };
    vec![a1, a2, a3, b, burned, us, sc]
}

pub fn write_fixture(root: &std::path::Path) -> Vec<Inst> {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let insts = instances();
    for (n, i) in insts.iter().enumerate() {
        write_instance(&root.join(format!("sub/{n}.dcm")), i);
    }
    std::fs::write(root.join("garbage.dcm"), b"this is not dicom at all").unwrap();
    insts
}

fn build(
    root: &std::path::Path,
    config: &DicomConfig,
    key_byte: u8,
    labels: Option<&LabelTable>,
) -> Cohort {
    let pseudo = key(key_byte);
    let optouts = OptOuts::from_ids(["PAT-0099"]);
    let mut b = CohortBuilder::new(&pseudo, config, &optouts);
    if let Some(l) = labels {
        b = b.with_labels(l);
    }
    b.from_dir(root).unwrap()
}

#[test]
fn directory_cohort_keeps_safe_instances_and_counts_every_exclusion() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let c = build(dir.path(), &DicomConfig::default(), 7, None);
    assert_eq!(c.entries.len(), 3, "patient A's three CT instances");
    let ex = &c.exclusions;
    assert_eq!(ex.get(reason::OPTED_OUT), 1);
    assert_eq!(ex.get(reason::BURNED_IN_ANNOTATION), 1);
    assert_eq!(ex.get(reason::AT_RISK_MODALITY), 1);
    assert_eq!(ex.get(reason::AT_RISK_SOP_CLASS), 1);
    assert_eq!(ex.get(reason::MALFORMED), 1);
    assert_eq!(ex.total(), 5);
    // Counts never name a patient.
    let counts = serde_json::to_string(ex.counts()).unwrap();
    assert!(!counts.contains("PAT-"), "{counts}");
    assert!(c
        .entries
        .iter()
        .all(|e| matches!(e.source, InstanceSource::File(_))));
}

#[test]
fn every_allow_listed_field_is_present_where_the_source_has_it() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let c = build(dir.path(), &DicomConfig::default(), 7, None);
    let r = &c.entries[0].record;
    assert_eq!(r.modality, "CT");
    assert_eq!(
        r.sop_class_uid.as_deref(),
        Some("1.2.840.10008.5.1.4.1.1.2")
    );
    assert_eq!(
        r.transfer_syntax_uid.as_deref(),
        Some("1.2.840.10008.1.2.1")
    );
    assert_eq!(
        (r.rows, r.columns, r.samples_per_pixel),
        (Some(4), Some(4), Some(1))
    );
    assert_eq!(
        (
            r.bits_allocated,
            r.bits_stored,
            r.high_bit,
            r.pixel_representation
        ),
        (Some(16), Some(12), Some(11), Some(0))
    );
    assert_eq!(r.photometric_interpretation.as_deref(), Some("MONOCHROME2"));
    assert_eq!(
        (r.rescale_slope, r.rescale_intercept),
        (Some(1.0), Some(-1024.0))
    );
    assert_eq!(r.rescale_type.as_deref(), Some("HU"));
    assert_eq!(r.window_center, Some(vec![40.0]));
    assert_eq!(r.window_width, Some(vec![400.0]));
    assert_eq!(r.pixel_spacing, Some([0.5, 0.5]));
    assert_eq!(r.slice_thickness, Some(5.0));
    assert_eq!(r.slice_location, Some(42.5));
    assert_eq!(
        r.image_orientation_patient,
        Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    );
    assert_eq!(r.image_position_patient, Some([-125.0, -125.0, 42.5]));
    assert!(r.frame_of_reference.is_some() && r.accession.is_some());
    assert_eq!(
        r.age_years,
        Some(AgeYears::NinetyPlus),
        "born 1923, scanned 2024"
    );
    assert_eq!(
        r.pixel_shape,
        rapha_dicom::record::PixelShape {
            rows: 4,
            columns: 4,
            frames: 1,
            samples: 1
        }
    );
    assert_eq!(r.days_since_first_study, Some(0));
    // Off by default (policy-gated): sex, manufacturer model, free text.
    assert_eq!(r.sex, None);
    assert_eq!(r.manufacturer_model, None);
    assert!(r.text.is_empty());
    // The later study of the same patient is 10 days on.
    let later = c
        .entries
        .iter()
        .find(|e| e.record.references.len() == 1)
        .unwrap();
    assert_eq!(later.record.days_since_first_study, Some(10));
}

#[test]
fn policy_opts_fields_in_and_identifier_bearing_text_is_still_dropped() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let mut config = DicomConfig::default();
    config.fields.sex = true;
    config.fields.manufacturer_model = true;
    config.fields.free_text = vec![
        "SeriesDescription".into(),
        "StudyDescription".into(),
        "ImageComments".into(),
    ];
    config.validate().unwrap();
    let c = build(dir.path(), &config, 7, None);
    let r = &c.entries[0].record;
    assert_eq!(r.sex, Some(rapha_dicom::record::Sex::Male));
    assert_eq!(r.manufacturer_model.as_deref(), Some("Scanner 9000"));
    assert_eq!(
        r.text.get("SeriesDescription").map(String::as_str),
        Some("AXIAL 5mm")
    );
    // "CT CHEST for John Doe" and "patient John Doe called back" carry the patient's name.
    assert!(!r.text.contains_key("StudyDescription"));
    assert!(!r.text.contains_key("ImageComments"));

    let mut bad = DicomConfig::default();
    bad.fields.free_text = vec!["PatientName".into()];
    let err = bad.validate().unwrap_err().to_string();
    assert!(
        err.contains("PatientName") && err.contains("cannot be opted in"),
        "{err}"
    );
}

#[test]
fn planted_phi_is_absent_from_every_record_in_every_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let insts = write_fixture(dir.path());
    let mut config = DicomConfig::default();
    config.fields.free_text = vec!["StudyDescription".into(), "ImageComments".into()];
    let c = build(dir.path(), &config, 7, None);
    let mut phi: Vec<String> = insts.iter().flat_map(planted_phi).collect();
    phi.extend(["ROE^RICHARD", "Richard Roe", "PAT-0099"].map(String::from));
    for e in &c.entries {
        let json = serde_json::to_string(&e.record).unwrap().to_lowercase();
        for p in &phi {
            assert!(
                !json.contains(&p.to_lowercase()),
                "record contains PHI {p:?}: {json}"
            );
        }
        // The node-side identifier list does carry them, so the output guard can scan for them.
        for must in [
            "PAT-0042",
            "DOE^JOHN",
            "DOE JOHN",
            "John Doe",
            "19230417",
            "1923-04-17",
            "17/04/1923",
            "ACC20240001",
        ] {
            if must == "ACC20240001" && e.record.references.len() == 1 {
                continue; // the later study has its own accession number
            }
            assert!(
                e.raw_identifiers.iter().any(|r| r == must),
                "raw identifiers lack {must:?}"
            );
        }
        assert!(
            e.raw_identifiers
                .iter()
                .any(|r| r == "1.2.826.0.1.3680043.8.498.9"),
            "frame of reference UID"
        );
    }
}

#[test]
fn pseudonyms_are_consistent_per_patient_and_unlinkable_across_keys() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let c7 = build(dir.path(), &DicomConfig::default(), 7, None);
    let c7b = build(dir.path(), &DicomConfig::default(), 7, None);
    let c8 = build(dir.path(), &DicomConfig::default(), 8, None);
    let p = c7.entries[0].record.patient;
    assert!(
        c7.entries.iter().all(|e| e.record.patient == p),
        "one patient, one pseudonym"
    );
    assert_eq!(p, key(7).hash(IdDomain::Patient, "PAT-0042"));
    for (a, b) in c7.entries.iter().zip(&c7b.entries) {
        assert_eq!(a.record, b.record, "same key, same records across runs");
    }
    for (a, b) in c7.entries.iter().zip(&c8.entries) {
        assert_ne!(a.record.patient, b.record.patient);
        assert_ne!(a.record.instance, b.record.instance);
    }
    // Studies differ, series within a study agree, instances are distinct.
    assert_eq!(c7.entries[0].record.study, c7.entries[1].record.study);
    assert_ne!(c7.entries[0].record.study, c7.entries[2].record.study);
    assert_ne!(c7.entries[0].record.instance, c7.entries[1].record.instance);
    // A reference inside a sequence maps exactly like the instance it points at.
    let later = c7
        .entries
        .iter()
        .find(|e| e.record.references.len() == 1)
        .unwrap();
    let target = c7
        .entries
        .iter()
        .find(|e| e.record.instance == later.record.references[0]);
    assert!(
        target.is_some(),
        "ReferencedSOPInstanceUID hashes like SOPInstanceUID"
    );
    // Domains separate equal strings.
    assert_ne!(
        key(7).hash(IdDomain::Patient, "X1"),
        key(7).hash(IdDomain::Accession, "X1")
    );
}

#[test]
fn labels_join_by_accession_number_and_opt_out_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let labels_path = dir.path().join("labels.csv");
    std::fs::write(
        &labels_path,
        "AccessionNumber,label\nACC20240001,1\nACC20240099,0\n",
    )
    .unwrap();
    let labels = LabelTable::load(&labels_path).unwrap();
    let c = build(
        dir.path().join("sub").as_path(),
        &DicomConfig::default(),
        7,
        Some(&labels),
    );
    let got: Vec<Option<u8>> = c.entries.iter().map(|e| e.record.label).collect();
    assert_eq!(got, vec![Some(1), Some(1), Some(0)]);

    let opt = dir.path().join("optouts.csv");
    std::fs::write(
        &opt,
        "PatientID\nPAT-0042\n# withdrawn 2024\n\"PAT-0099\"\n",
    )
    .unwrap();
    let optouts = OptOuts::load(&opt).unwrap();
    assert_eq!(optouts.len(), 2);
    let pseudo = key(7);
    let cfg = DicomConfig::default();
    let c = CohortBuilder::new(&pseudo, &cfg, &optouts)
        .from_dir(&dir.path().join("sub"))
        .unwrap();
    assert!(c.entries.is_empty());
    assert_eq!(c.exclusions.get(reason::OPTED_OUT), 4);

    // A bad label is refused with its line; a first row that is neither a header naming both
    // columns nor data is refused too (it used to be skipped as a header).
    std::fs::write(&labels_path, "ACC1,1\nACC2,x\n").unwrap();
    assert!(LabelTable::load(&labels_path)
        .unwrap_err()
        .to_string()
        .contains("line 2"));
    std::fs::write(&labels_path, "ACC1,yes\nACC2,1\n").unwrap();
    assert!(LabelTable::load(&labels_path)
        .unwrap_err()
        .to_string()
        .contains("line 1"));
}

#[test]
fn allowing_a_class_explicitly_keeps_it_but_never_burned_in_yes() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let mut config = DicomConfig::default();
    config.exclusions.allow_classes = vec!["US".into(), "1.2.840.10008.5.1.4.1.1.7".into()];
    let c = build(dir.path(), &config, 7, None);
    assert_eq!(c.entries.len(), 5);
    assert_eq!(c.exclusions.get(reason::BURNED_IN_ANNOTATION), 1);
    assert_eq!(c.exclusions.get(reason::AT_RISK_MODALITY), 0);
}
