//! Test helpers: the pydicom corpus, keys, and small Part 10 files written with dicom-rs.

use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use rapha_core::HmacKey;
use rapha_dicom::Pseudonymizer;

/// The pydicom corpus, or `None` (with a loud message) when it is not installed and services
/// are not required.
pub fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("RAPHA_PYDICOM_CORPUS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rapha/pydicom-corpus"))
        })?;
    if dir.join("CT_small.dcm").is_file() {
        return Some(dir);
    }
    if std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!(
            "pydicom corpus missing at {} (run scripts/lib.sh install_all)",
            dir.display()
        );
    }
    eprintln!("SKIPPED: pydicom corpus not installed at {}", dir.display());
    None
}

/// The python of the project's venv (pydicom, numpy), if present.
pub fn python() -> Option<PathBuf> {
    let p = std::env::var_os("RAPHA_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rapha/venv/bin/python"))
        })?;
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("RAPHA_PYTHON missing at {}", p.display());
    }
    eprintln!("SKIPPED: python venv not installed at {}", p.display());
    None
}

/// pydicom's reference for each of `files`, in order (tests/pixels_ref.py: the shape and the
/// SHA-256 of the stored values, with `values` the values themselves, or the error pydicom
/// raised).
pub fn pydicom_reference<P: AsRef<Path>>(
    py: &Path,
    files: &[P],
    values: bool,
) -> Vec<serde_json::Value> {
    let stdout = rapha_testkit::command::stdout_of(
        std::process::Command::new(py)
            // Named from the crate directory's parent so rapha-decode's tests can share this file.
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../rapha-dicom/tests/pixels_ref.py"
            ))
            .args(values.then_some("--values"))
            .args(files.iter().map(AsRef::as_ref)),
    );
    let refs: Vec<serde_json::Value> = String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(refs.len(), files.len());
    refs
}

pub fn key(byte: u8) -> Pseudonymizer {
    Pseudonymizer::new(HmacKey::from_bytes([byte; 32]))
}

/// What a synthetic instance carries.
#[derive(Clone)]
pub struct Inst {
    pub patient_id: &'static str,
    pub patient_name: &'static str,
    pub birth_date: &'static str,
    pub accession: &'static str,
    pub study_uid: &'static str,
    pub series_uid: &'static str,
    pub sop_uid: &'static str,
    pub study_date: &'static str,
    pub modality: &'static str,
    pub sop_class: &'static str,
    pub burned_in: Option<&'static str>,
    pub referenced_sop: Option<&'static str>,
}

impl Inst {
    pub fn ct(n: u32) -> Self {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        Self {
            patient_id: "PAT-0042",
            patient_name: "DOE^JOHN",
            birth_date: "19230417",
            accession: "ACC20240001",
            study_uid: "1.2.826.0.1.3680043.8.498.1",
            series_uid: "1.2.826.0.1.3680043.8.498.1.1",
            sop_uid: leak(format!("1.2.826.0.1.3680043.8.498.1.1.{n}")),
            study_date: "20240105",
            modality: "CT",
            sop_class: "1.2.840.10008.5.1.4.1.1.2",
            burned_in: Some("NO"),
            referenced_sop: None,
        }
    }
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// Writes a 4x4 16-bit CT-like instance with PHI in the standard places, a nested sequence and
/// free text.
pub fn write_instance(path: &Path, i: &Inst) {
    let mut o = InMemDicomObject::new_empty();
    put(&mut o, tags::SOP_CLASS_UID, VR::UI, i.sop_class);
    put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, i.sop_uid);
    put(&mut o, tags::STUDY_DATE, VR::DA, i.study_date);
    put(&mut o, tags::ACCESSION_NUMBER, VR::SH, i.accession);
    put(&mut o, tags::MODALITY, VR::CS, i.modality);
    put(
        &mut o,
        tags::INSTITUTION_NAME,
        VR::LO,
        "St Elsewhere General",
    );
    put(
        &mut o,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        "HOUSE^GREGORY",
    );
    put(
        &mut o,
        tags::STUDY_DESCRIPTION,
        VR::LO,
        "CT CHEST for John Doe",
    );
    put(&mut o, tags::SERIES_DESCRIPTION, VR::LO, "AXIAL 5mm");
    put(
        &mut o,
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        "Scanner 9000",
    );
    put(&mut o, tags::PATIENT_NAME, VR::PN, i.patient_name);
    put(&mut o, tags::PATIENT_ID, VR::LO, i.patient_id);
    put(&mut o, tags::PATIENT_BIRTH_DATE, VR::DA, i.birth_date);
    put(&mut o, tags::PATIENT_SEX, VR::CS, "M");
    // OtherPatientIDs: retired in the standard, still written by older systems.
    #[allow(deprecated)]
    put(&mut o, tags::OTHER_PATIENT_I_DS, VR::LO, "NHS-943-476-5919");
    put(&mut o, tags::SLICE_THICKNESS, VR::DS, "5.0");
    put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, i.study_uid);
    put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, i.series_uid);
    put(
        &mut o,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        "-125.0\\-125.0\\42.5",
    );
    put(
        &mut o,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        "1\\0\\0\\0\\1\\0",
    );
    put(
        &mut o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        "1.2.826.0.1.3680043.8.498.9",
    );
    put(&mut o, tags::SLICE_LOCATION, VR::DS, "42.5");
    put(
        &mut o,
        tags::IMAGE_COMMENTS,
        VR::LT,
        "patient John Doe called back",
    );
    if let Some(r) = i.referenced_sop {
        let mut item = InMemDicomObject::new_empty();
        put(
            &mut item,
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            "1.2.840.10008.5.1.4.1.1.2",
        );
        put(&mut item, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, r);
        o.put(DataElement::new(
            tags::REFERENCED_IMAGE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
    }
    o.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    put(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    o.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(4u16),
    ));
    o.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(4u16),
    ));
    put(&mut o, tags::PIXEL_SPACING, VR::DS, "0.5\\0.5");
    o.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16u16),
    ));
    o.put(DataElement::new(
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(12u16),
    ));
    o.put(DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        PrimitiveValue::from(11u16),
    ));
    o.put(DataElement::new(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    if let Some(b) = i.burned_in {
        put(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, b);
    }
    put(&mut o, tags::WINDOW_CENTER, VR::DS, "40");
    put(&mut o, tags::WINDOW_WIDTH, VR::DS, "400");
    put(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    put(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
    put(&mut o, tags::RESCALE_TYPE, VR::LO, "HU");
    let px: Vec<u16> = (0..16u16).map(|v| v * 100).collect();
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(px.into()),
    ));
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid(i.sop_class)
                .media_storage_sop_instance_uid(i.sop_uid),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

/// The PHI planted by [`write_instance`] and its reformatted variants.
pub fn planted_phi(i: &Inst) -> Vec<String> {
    let mut v: Vec<String> = vec![
        i.patient_id.into(),
        i.patient_name.into(),
        "DOE JOHN".into(),
        "John Doe".into(),
        "JOHN DOE".into(),
        "Doe, John".into(),
        i.birth_date.into(),
        "1923-04-17".into(),
        "17/04/1923".into(),
        i.accession.into(),
        i.study_uid.into(),
        i.series_uid.into(),
        i.sop_uid.into(),
        "1.2.826.0.1.3680043.8.498.9".into(),
        "St Elsewhere".into(),
        "HOUSE".into(),
        "NHS-943-476-5919".into(),
        "called back".into(),
        "CT CHEST".into(),
        "Scanner 9000".into(),
        "20240105".into(),
        "2024-01-05".into(),
    ];
    if let Some(r) = i.referenced_sop {
        v.push(r.into());
    }
    v
}
