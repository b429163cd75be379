//! Synthetic DICOM cohort: realistic-looking studies with PHI planted everywhere a real study
//! carries it, burned-in text, a learnable lesion signal, a hospital label table and opt-outs.
//!
//! ```text
//! OUT/dicom/pNNNN/sNNNNN/seN/iNN.dcm   Part 10 files (explicit VR LE, or RLE Lossless)
//! OUT/labels.csv                       AccessionNumber,label   (CT/MR/CR/DX studies)
//! OUT/optouts.csv                      PatientID               (patients who opted out)
//! OUT/manifest.json                    CohortManifest: studies, every PHI string, burned-in
//! ```
//!
//! Everything derives from the seed through ChaCha streams (one per patient, study and
//! decision), and nothing reads the clock, so a seed gives the same bytes on every run.

mod codec;
mod enhanced;
mod font;
mod image;
mod multiframe;
mod phi;
mod rle;
mod study;

pub use codec::{encodable, transcode_cohort, transcode_mixed};
pub use enhanced::{enhance_cohort, ENHANCED_CT, ENHANCED_MR};
pub use multiframe::{
    multiframe_cohort, CINE_FRAMES, CINE_FRAME_TIME_MS, CINE_FRAME_TIME_VECTOR, XA,
};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Explicit VR Little Endian.
pub const NATIVE_TS: &str = "1.2.840.10008.1.2.1";
/// RLE Lossless.
pub const RLE_TS: &str = "1.2.840.10008.1.2.5";

/// Fraction of labelled studies that carry a lesion (drawn per study).
const POSITIVE_RATE: f64 = 0.4;
/// Fraction of patients who opted out of secondary use.
const OPT_OUT_RATE: f64 = 0.1;
/// Modality of study `i` is `PLAN[i % 10]`: 8 of 10 studies are labelled (CT/MR/CR/DX).
const PLAN: [Modality; 10] = [
    Modality::Ct,
    Modality::Mr,
    Modality::Cr,
    Modality::Dx,
    Modality::Us,
    Modality::Ct,
    Modality::Mr,
    Modality::Dx,
    Modality::Sc,
    Modality::Cr,
];
/// Fixed so the file meta group does not change with the library version.
const IMPLEMENTATION_CLASS_UID: &str = "2.25.245593941358163263460126094128453957712";

/// What to generate.
#[derive(Debug, Clone)]
pub struct CohortSpec {
    pub studies: usize,
    pub seed: u64,
    pub out: PathBuf,
    /// Fraction of instances written as RLE Lossless instead of native (0.0 by default).
    pub rle_fraction: f32,
    /// Permute the labels among labelled studies (a cohort whose labels carry no signal).
    pub label_shuffle: bool,
}

impl CohortSpec {
    pub fn new(studies: usize, seed: u64, out: impl Into<PathBuf>) -> CohortSpec {
        CohortSpec {
            studies,
            seed,
            out: out.into(),
            rle_fraction: 0.0,
            label_shuffle: false,
        }
    }
}

/// What was generated; also written to `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortManifest {
    pub seed: u64,
    pub generator: String,
    pub rle_fraction: f32,
    pub label_shuffle: bool,
    pub instance_count: usize,
    pub studies: Vec<StudyEntry>,
    /// Every PHI string planted anywhere (headers, sequences, private tags, burned-in text),
    /// sorted and de-duplicated.
    pub phi: Vec<String>,
    /// SOPInstanceUIDs whose pixels carry burned-in text.
    pub burned_in: Vec<String>,
    /// PatientIDs listed in optouts.csv.
    pub opted_out_patients: Vec<String>,
    /// The transfer syntax every instance was re-encoded in ([`transcode_cohort`]), or the
    /// syntaxes of a mixed cohort comma-separated ([`transcode_mixed`]); absent when
    /// instances are as generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_syntax: Option<String>,
    /// Whether CT and MR series were merged into enhanced multi-frame objects
    /// ([`enhance_cohort`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enhanced: bool,
    /// Whether CR and DX images were merged into multi-frame CR, DX and XA cine objects
    /// ([`multiframe_cohort`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multiframe: bool,
}

impl CohortManifest {
    /// AccessionNumbers of the labelled studies, in `labels.csv` order: what a scoped job
    /// query over this cohort names.
    pub fn labelled_accessions(&self) -> Vec<String> {
        self.studies
            .iter()
            .filter(|s| s.label.is_some())
            .map(|s| s.accession_number.clone())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyEntry {
    pub patient_id: String,
    pub patient_name: String,
    /// PatientSex and PatientBirthDate as written (planted values: the birth date is also in
    /// [`CohortManifest::phi`]); empty in manifests written before they were listed.
    #[serde(default)]
    pub patient_sex: String,
    #[serde(default)]
    pub patient_birth_date: String,
    pub accession_number: String,
    pub study_instance_uid: String,
    pub study_date: String,
    pub modality: String,
    /// The label in labels.csv (after shuffling, if asked); `None` for US and SC studies,
    /// which the label table does not cover.
    pub label: Option<u8>,
    /// Ground truth: whether the images carry a lesion.
    pub has_lesion: bool,
    pub instances: Vec<InstanceEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceEntry {
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    /// Relative to the cohort's root directory.
    pub path: String,
    pub modality: String,
    pub burned_in_text: bool,
    /// The BurnedInAnnotation (0028,0301) value written, if any.
    pub burned_in_annotation_flag: Option<String>,
    pub transfer_syntax: String,
    pub rows: u16,
    pub columns: u16,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
}

/// Cohort generation failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CohortError {
    #[error("invalid cohort request: {0}")]
    InvalidSpec(String),
    #[error("cannot {what} {path}: {source}", path = path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build DICOM file {path}: {detail}", path = path.display())]
    Dicom { path: PathBuf, detail: String },
    #[error("cannot serialise the manifest: {0}")]
    Json(#[from] serde_json::Error),
    /// An outside encoder (`rapha-testkit cohort --transfer-syntax`) is missing or failed.
    #[error("{tool}: {detail}")]
    Tool { tool: String, detail: String },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CohortError + 'a {
    move |source| CohortError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modality {
    Ct,
    Mr,
    Cr,
    Dx,
    Us,
    Sc,
}

impl Modality {
    fn code(self) -> &'static str {
        match self {
            Modality::Ct => "CT",
            Modality::Mr => "MR",
            Modality::Cr => "CR",
            Modality::Dx => "DX",
            Modality::Us => "US",
            Modality::Sc => "OT",
        }
    }

    /// The modality written in (0008,0060); SC studies use OT, as capture devices do.
    fn name(self) -> &'static str {
        match self {
            Modality::Sc => "SC",
            m => m.code(),
        }
    }

    fn sop_class(self) -> &'static str {
        match self {
            Modality::Ct => "1.2.840.10008.5.1.4.1.1.2",
            Modality::Mr => "1.2.840.10008.5.1.4.1.1.4",
            Modality::Cr => "1.2.840.10008.5.1.4.1.1.1",
            Modality::Dx => "1.2.840.10008.5.1.4.1.1.1.1",
            Modality::Us => "1.2.840.10008.5.1.4.1.1.6.1",
            Modality::Sc => "1.2.840.10008.5.1.4.1.1.7",
        }
    }

    fn labelled(self) -> bool {
        matches!(
            self,
            Modality::Ct | Modality::Mr | Modality::Cr | Modality::Dx
        )
    }

    /// (series, instances per series, image side)
    fn layout(self) -> (usize, usize, usize) {
        match self {
            Modality::Ct | Modality::Mr => (2, 3, 128),
            Modality::Cr => (1, 2, 256),
            Modality::Dx => (2, 1, 256),
            Modality::Us => (1, 3, 128),
            Modality::Sc => (1, 1, 256),
        }
    }

    /// Stored value per tissue unit (16-bit monochrome modalities).
    fn scale(self) -> f32 {
        match self {
            Modality::Ct => 3000.0,
            Modality::Mr => 1200.0,
            _ => 4000.0,
        }
    }

    fn study_description(self) -> &'static str {
        match self {
            Modality::Ct => "CT THORAX ABDOMEN WITH CONTRAST",
            Modality::Mr => "MR ABDOMEN LIVER PROTOCOL",
            Modality::Cr => "CR CHEST PA AND LATERAL",
            Modality::Dx => "DX CHEST PORTABLE",
            Modality::Us => "US ABDOMEN COMPLETE",
            Modality::Sc => "SECONDARY CAPTURE DOSE REPORT",
        }
    }
}

/// Per-purpose ChaCha streams, so e.g. the RLE fraction never changes image content.
fn stream(seed: u64, kind: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((kind << 40) | index as u64);
    rng
}

const STREAM_PATIENT: u64 = 1;
const STREAM_STUDY: u64 = 2;
const STREAM_LABELS: u64 = 3;
const STREAM_OPTOUT: u64 = 4;
const STREAM_RLE: u64 = 5;

fn uid(rng: &mut ChaCha8Rng) -> String {
    // 2.25.<128-bit decimal>: at most 44 characters, no leading zero.
    format!("2.25.{}", rng.gen::<u128>() | (1u128 << 120))
}

fn date(rng: &mut ChaCha8Rng, from_year: u32, to_year: u32) -> String {
    format!(
        "{:04}{:02}{:02}",
        rng.gen_range(from_year..to_year),
        rng.gen_range(1..13u32),
        rng.gen_range(1..29u32)
    )
}

fn time(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{:02}{:02}{:02}.{:06}",
        rng.gen_range(7..20u32),
        rng.gen_range(0..60u32),
        rng.gen_range(0..60u32),
        rng.gen_range(0..1_000_000u32)
    )
}

/// Generates the cohort described by `spec` into `spec.out` (which must not already hold a
/// cohort). Deterministic: the same spec gives the same bytes.
pub fn generate(spec: &CohortSpec) -> Result<CohortManifest, CohortError> {
    if spec.studies == 0 {
        return Err(CohortError::InvalidSpec(
            "at least one study is needed".into(),
        ));
    }
    if !(0.0..=1.0).contains(&spec.rle_fraction) {
        return Err(CohortError::InvalidSpec(format!(
            "rle fraction {} is not between 0 and 1",
            spec.rle_fraction
        )));
    }
    let dicom_dir = spec.out.join("dicom");
    if dicom_dir.exists() {
        return Err(CohortError::InvalidSpec(format!(
            "{} already exists; generate into an empty directory",
            dicom_dir.display()
        )));
    }
    std::fs::create_dir_all(&dicom_dir).map_err(io_err("create", &dicom_dir))?;

    let n_patients = spec.studies.div_ceil(3).max(1);
    let patients: Vec<phi::Patient> = (0..n_patients)
        .map(|p| phi::patient(&mut stream(spec.seed, STREAM_PATIENT, p), p))
        .collect();
    let mut phi_set = BTreeSet::new();
    for p in &patients {
        for s in [
            &p.id,
            &p.name,
            &p.given,
            &p.family,
            &p.other_id,
            &p.issuer,
            &p.birth_date,
        ] {
            phi_set.insert(s.clone());
        }
        let (inst, addr) = phi::institution(p.institution);
        phi_set.insert(inst.to_owned());
        phi_set.insert(addr.to_owned());
    }

    let mut rle_rng = stream(spec.seed, STREAM_RLE, 0);
    let mut studies = Vec::with_capacity(spec.studies);
    let mut burned_in = Vec::new();
    for i in 0..spec.studies {
        let patient = &patients[i % n_patients];
        let mut ctx = StudyCtx {
            rng: stream(spec.seed, STREAM_STUDY, i),
            index: i,
            patient_index: i % n_patients,
            patient,
            modality: PLAN[i % PLAN.len()],
            out: &spec.out,
            rle_fraction: spec.rle_fraction,
            rle_rng: &mut rle_rng,
            phi: &mut phi_set,
            burned_in: &mut burned_in,
        };
        studies.push(ctx.generate()?);
    }

    // Labels: the ground truth, optionally permuted among the labelled studies.
    let mut labels: Vec<u8> = studies
        .iter()
        .filter_map(|s| s.label.map(|_| u8::from(s.has_lesion)))
        .collect();
    if spec.label_shuffle {
        labels.shuffle(&mut stream(spec.seed, STREAM_LABELS, 0));
    }
    let mut it = labels.into_iter();
    for s in studies.iter_mut().filter(|s| s.label.is_some()) {
        s.label = it.next();
    }

    let mut order: Vec<usize> = (0..n_patients).collect();
    order.shuffle(&mut stream(spec.seed, STREAM_OPTOUT, 0));
    let n_out =
        ((n_patients as f64 * OPT_OUT_RATE).ceil() as usize).min(n_patients.saturating_sub(1));
    let mut opted: Vec<usize> = order
        .into_iter()
        .take(n_out.max(usize::from(n_patients >= 3)))
        .collect();
    opted.sort_unstable();
    let opted_out_patients: Vec<String> = opted.iter().map(|&p| patients[p].id.clone()).collect();

    let mut labels_csv = String::from("AccessionNumber,label\n");
    for s in &studies {
        if let Some(l) = s.label {
            labels_csv.push_str(&format!("{},{l}\n", s.accession_number));
        }
    }
    write(&spec.out.join("labels.csv"), labels_csv.as_bytes())?;
    let mut optouts = String::from("PatientID\n");
    for p in &opted_out_patients {
        optouts.push_str(p);
        optouts.push('\n');
    }
    write(&spec.out.join("optouts.csv"), optouts.as_bytes())?;

    let manifest = CohortManifest {
        seed: spec.seed,
        generator: format!("rapha-testkit cohort {}", env!("CARGO_PKG_VERSION")),
        rle_fraction: spec.rle_fraction,
        label_shuffle: spec.label_shuffle,
        instance_count: studies.iter().map(|s| s.instances.len()).sum(),
        studies,
        phi: phi_set.into_iter().collect(),
        burned_in,
        opted_out_patients,
        transfer_syntax: None,
        enhanced: false,
        multiframe: false,
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    write(&spec.out.join("manifest.json"), &json)?;
    Ok(manifest)
}

/// Writes `obj` as a Part 10 file at `path` in transfer syntax `ts`, with the testkit's
/// implementation identity in its meta group (the re-encoding and enhancing passes).
fn write_part10(
    obj: dicom_object::InMemDicomObject,
    path: &Path,
    ts: &str,
    (sop_class, sop): (&str, &str),
) -> Result<(), CohortError> {
    let dicom_err = |detail: String| CohortError::Dicom {
        path: path.to_path_buf(),
        detail,
    };
    let file = obj
        .with_meta(
            dicom_object::meta::FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name("RAPHA_TESTKIT"),
        )
        .map_err(|e| dicom_err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| dicom_err(e.to_string()))?;
    write(path, &bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CohortError> {
    std::fs::write(path, bytes).map_err(io_err("write", path))
}

struct StudyCtx<'a> {
    rng: ChaCha8Rng,
    index: usize,
    patient_index: usize,
    patient: &'a phi::Patient,
    modality: Modality,
    out: &'a Path,
    rle_fraction: f32,
    rle_rng: &'a mut ChaCha8Rng,
    phi: &'a mut BTreeSet<String>,
    burned_in: &'a mut Vec<String>,
}
