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

mod font;
mod image;
mod phi;
mod rle;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
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
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    write(&spec.out.join("manifest.json"), &json)?;
    Ok(manifest)
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

/// Study-level values shared by its instances.
struct Study {
    uid: String,
    accession: String,
    date: String,
    time: String,
    description: String,
    study_id: String,
    prior_uid: String,
    requested_procedure_id: String,
    sps_id: String,
    pps_id: String,
    staff: phi::Staff,
    age: String,
}

/// One instance's pixels before encoding.
enum Pixels {
    Mono16(Vec<u16>),
    Rgb8(Vec<u8>),
}

impl StudyCtx<'_> {
    fn plant(&mut self, s: &str) -> String {
        self.phi.insert(s.to_owned());
        s.to_owned()
    }

    fn generate(&mut self) -> Result<StudyEntry, CohortError> {
        let m = self.modality;
        let p = self.patient;
        let date = date(&mut self.rng, 2016, 2026);
        let study_year: u32 = date[..4].parse().unwrap_or(2020);
        let staff = phi::staff(&mut self.rng, p.institution, m.code());
        let mut description = m.study_description().to_owned();
        if self.rng.gen_bool(0.5) {
            // Free text with identifiers, as technologists type them.
            description = format!("{description} FU {} {}", p.family, p.given);
        }
        let study = Study {
            uid: uid(&mut self.rng),
            accession: format!("A{:05}{:04}", self.index, self.rng.gen_range(0..10_000u32)),
            time: time(&mut self.rng),
            description,
            study_id: format!("ST{:06}", self.rng.gen_range(0..1_000_000u32)),
            prior_uid: uid(&mut self.rng),
            requested_procedure_id: format!("RP{:08}", self.rng.gen_range(0..100_000_000u32)),
            sps_id: format!("SPS{:07}", self.rng.gen_range(0..10_000_000u32)),
            pps_id: format!("PPS{:07}", self.rng.gen_range(0..10_000_000u32)),
            age: format!("{:03}Y", study_year.saturating_sub(p.birth_year)),
            date,
            staff,
        };
        for s in [
            &study.uid,
            &study.accession,
            &study.date,
            &study.time,
            &study.description,
            &study.study_id,
            &study.prior_uid,
            &study.requested_procedure_id,
            &study.sps_id,
            &study.pps_id,
            &study.staff.referring,
            &study.staff.operator,
            &study.staff.station,
        ] {
            self.phi.insert(s.clone());
        }

        let has_lesion = m.labelled() && self.rng.gen_bool(POSITIVE_RATE);
        let (n_series, per_series, side) = m.layout();
        let anatomy = image::anatomy(&mut self.rng, side);
        let lesion = has_lesion.then(|| image::lesion(&mut self.rng, &anatomy));

        let mut instances = Vec::new();
        for se in 0..n_series {
            let series_uid = uid(&mut self.rng);
            let frame_uid = uid(&mut self.rng);
            let series_time = time(&mut self.rng);
            let tag = if self.rng.gen_bool(0.3) {
                p.family.as_str()
            } else {
                "ROUTINE"
            };
            let series_desc = self.plant(&format!("{} SERIES {} {tag}", m.code(), se + 1));
            let protocol_no = self.rng.gen_range(1..9);
            let protocol = self.plant(&format!(
                "{} {} PROTOCOL {protocol_no}",
                phi::institution(p.institution)
                    .0
                    .split(' ')
                    .next()
                    .unwrap_or("HOSP"),
                m.code(),
            ));
            self.plant(&series_uid);
            self.plant(&frame_uid);
            self.plant(&series_time);
            for inst in 0..per_series {
                let sop_uid = uid(&mut self.rng);
                self.plant(&sop_uid);
                let content_time = time(&mut self.rng);
                self.plant(&content_time);
                let (pixels, text, flag) = self.pixels(side, &anatomy, lesion.as_ref(), &study)?;
                let rle = self.rng_rle();
                let rel = format!(
                    "dicom/p{:04}/s{:05}/se{}/i{:02}.dcm",
                    self.patient_index,
                    self.index,
                    se + 1,
                    inst + 1
                );
                let entry = InstanceEntry {
                    sop_instance_uid: sop_uid.clone(),
                    series_instance_uid: series_uid.clone(),
                    path: rel.clone(),
                    modality: m.name().to_owned(),
                    burned_in_text: text,
                    burned_in_annotation_flag: flag.map(str::to_owned),
                    transfer_syntax: if rle { RLE_TS } else { NATIVE_TS }.to_owned(),
                    rows: side as u16,
                    columns: side as u16,
                    samples_per_pixel: if matches!(pixels, Pixels::Rgb8(_)) {
                        3
                    } else {
                        1
                    },
                    bits_allocated: if matches!(pixels, Pixels::Rgb8(_)) {
                        8
                    } else {
                        16
                    },
                };
                let obj = self.dataset(
                    &study,
                    &entry,
                    InstanceCtx {
                        series_number: se + 1,
                        instance_number: inst + 1,
                        frame_uid: &frame_uid,
                        series_time: &series_time,
                        content_time: &content_time,
                        series_desc: &series_desc,
                        protocol: &protocol,
                    },
                    pixels,
                );
                let path = self.out.join(&rel);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
                }
                let dicom_err = |detail: String| CohortError::Dicom {
                    path: path.clone(),
                    detail,
                };
                let file = obj
                    .with_meta(
                        FileMetaTableBuilder::new()
                            .transfer_syntax(entry.transfer_syntax.as_str())
                            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                            .implementation_version_name("RAPHA_TESTKIT"),
                    )
                    .map_err(|e| dicom_err(e.to_string()))?;
                let mut bytes = Vec::new();
                file.write_all(&mut bytes)
                    .map_err(|e| dicom_err(e.to_string()))?;
                write(&path, &bytes)?;
                if text {
                    self.burned_in.push(sop_uid.clone());
                }
                instances.push(entry);
            }
        }
        Ok(StudyEntry {
            patient_id: p.id.clone(),
            patient_name: p.name.clone(),
            accession_number: study.accession.clone(),
            study_instance_uid: study.uid.clone(),
            study_date: study.date.clone(),
            modality: m.name().to_owned(),
            label: m.labelled().then_some(u8::from(has_lesion)),
            has_lesion,
            instances,
        })
    }

    fn rng_rle(&mut self) -> bool {
        // Drawn from its own stream for every instance, so the fraction alters nothing else.
        let draw: f32 = self.rle_rng.gen();
        draw < self.rle_fraction
    }

    /// The instance's pixels, whether they carry burned-in text, and the BurnedInAnnotation
    /// flag to write (present-and-true, present-and-false, or absent, as in the wild).
    fn pixels(
        &mut self,
        side: usize,
        anatomy: &image::Anatomy,
        lesion: Option<&image::Lesion>,
        study: &Study,
    ) -> Result<(Pixels, bool, Option<&'static str>), CohortError> {
        let m = self.modality;
        let text = match m {
            Modality::Us | Modality::Sc => true,
            Modality::Cr | Modality::Dx => self.rng.gen_bool(0.35),
            _ => false,
        };
        let flag = match (m, text) {
            (Modality::Us, _) => self.rng.gen_bool(0.7).then_some("YES"),
            (_, true) => self.rng.gen_bool(0.5).then_some("YES"),
            (_, false) => self.rng.gen_bool(0.5).then_some("NO"),
        };
        let p = self.patient;
        let mut lines = vec![
            p.name.clone(),
            format!("ID {}", p.id),
            format!("DOB {}", p.birth_date),
        ];
        lines.push(format!("{} {}", study.date, &study.time[..6]));
        if matches!(m, Modality::Us | Modality::Sc) {
            lines.push(phi::institution(p.institution).0.to_owned());
        }
        let scale = side / 128;
        let pixels = match m {
            Modality::Us => {
                let img = image::ultrasound(&mut self.rng, side, side);
                let mut rgb: Vec<u8> = img
                    .iter()
                    .flat_map(|&t| {
                        let g = (t * 255.0).clamp(0.0, 255.0) as u8;
                        [g, g, g]
                    })
                    .collect();
                burn_rgb(&mut rgb, side, &lines, scale, [255, 255, 160]);
                Pixels::Rgb8(rgb)
            }
            Modality::Sc => {
                let mut rgb = vec![0u8; side * side * 3];
                for px in rgb.chunks_exact_mut(3) {
                    px.copy_from_slice(&[18, 22, 34]);
                }
                // A screen capture: a small rendered image in a panel, text around it.
                let small = image::anatomy(&mut self.rng, side / 2);
                let inner = image::render(&mut self.rng, &small, None, side / 2, side / 2);
                let (ox, oy) = (side / 4, side * 3 / 8);
                for y in 0..side / 2 {
                    for x in 0..side / 2 {
                        let g = (inner[y * (side / 2) + x] * 255.0).clamp(0.0, 255.0) as u8;
                        let o = ((oy + y).min(side - 1) * side + ox + x) * 3;
                        rgb[o..o + 3].copy_from_slice(&[g, g, g]);
                    }
                }
                burn_rgb(&mut rgb, side, &lines, scale, [255, 255, 255]);
                Pixels::Rgb8(rgb)
            }
            _ => {
                let img = image::render(&mut self.rng, anatomy, lesion, side, side);
                let k = m.scale();
                let mut v: Vec<u16> = img
                    .iter()
                    .map(|&t| (t * k).round().clamp(0.0, 4095.0) as u16)
                    .collect();
                if text {
                    let mut y = 2;
                    for line in &lines {
                        font::draw(line, 2, y, scale, side, side, |x, yy| {
                            v[yy * side + x] = 4095
                        });
                        y += font::CELL_H * scale;
                    }
                }
                Pixels::Mono16(v)
            }
        };
        for line in lines.iter().filter(|_| text) {
            self.phi.insert(line.clone());
        }
        Ok((pixels, text, flag))
    }

    fn dataset(
        &self,
        study: &Study,
        entry: &InstanceEntry,
        ic: InstanceCtx<'_>,
        pixels: Pixels,
    ) -> InMemDicomObject {
        let m = self.modality;
        let p = self.patient;
        let (inst_name, inst_addr) = phi::institution(p.institution);
        let mut o = InMemDicomObject::new_empty();
        let s = |o: &mut InMemDicomObject, g: u16, e: u16, vr: VR, v: &str| {
            o.put(DataElement::new(Tag(g, e), vr, PrimitiveValue::from(v)));
        };
        let us = |o: &mut InMemDicomObject, g: u16, e: u16, v: u16| {
            o.put(DataElement::new(
                Tag(g, e),
                VR::US,
                PrimitiveValue::U16(vec![v].into()),
            ));
        };
        s(&mut o, 0x0008, 0x0005, VR::CS, "ISO_IR 100");
        let image_type = match m {
            Modality::Sc => "DERIVED\\SECONDARY",
            Modality::Ct | Modality::Mr => "ORIGINAL\\PRIMARY\\AXIAL",
            _ => "ORIGINAL\\PRIMARY",
        };
        s(&mut o, 0x0008, 0x0008, VR::CS, image_type);
        s(&mut o, 0x0008, 0x0012, VR::DA, &study.date); // InstanceCreationDate
        s(&mut o, 0x0008, 0x0013, VR::TM, ic.content_time);
        s(&mut o, 0x0008, 0x0016, VR::UI, m.sop_class());
        s(&mut o, 0x0008, 0x0018, VR::UI, &entry.sop_instance_uid);
        for e in [0x0020, 0x0021, 0x0022, 0x0023] {
            s(&mut o, 0x0008, e, VR::DA, &study.date); // Study/Series/Acquisition/Content date
        }
        s(&mut o, 0x0008, 0x0030, VR::TM, &study.time);
        s(&mut o, 0x0008, 0x0031, VR::TM, ic.series_time);
        s(&mut o, 0x0008, 0x0032, VR::TM, ic.content_time);
        s(&mut o, 0x0008, 0x0033, VR::TM, ic.content_time);
        s(&mut o, 0x0008, 0x0050, VR::SH, &study.accession);
        s(&mut o, 0x0008, 0x0060, VR::CS, m.code());
        if m == Modality::Sc {
            s(&mut o, 0x0008, 0x0064, VR::CS, "WSD"); // ConversionType
        }
        s(&mut o, 0x0008, 0x0070, VR::LO, "RAPHA SYNTHETIC IMAGING");
        s(&mut o, 0x0008, 0x0080, VR::LO, inst_name);
        s(&mut o, 0x0008, 0x0081, VR::ST, inst_addr);
        s(&mut o, 0x0008, 0x0090, VR::PN, &study.staff.referring);
        s(&mut o, 0x0008, 0x1010, VR::SH, &study.staff.station);
        s(&mut o, 0x0008, 0x1030, VR::LO, &study.description);
        s(&mut o, 0x0008, 0x103E, VR::LO, ic.series_desc);
        s(&mut o, 0x0008, 0x1070, VR::PN, &study.staff.operator);
        // ReferencedStudySequence: a prior exam of the same patient.
        let mut prior = InMemDicomObject::new_empty();
        s(
            &mut prior,
            0x0008,
            0x1150,
            VR::UI,
            "1.2.840.10008.3.1.2.3.1",
        );
        s(&mut prior, 0x0008, 0x1155, VR::UI, &study.prior_uid);
        o.put(DataElement::new(
            Tag(0x0008, 0x1110),
            VR::SQ,
            Value::from(DataSetSequence::from(vec![prior])),
        ));
        s(&mut o, 0x0010, 0x0010, VR::PN, &p.name);
        s(&mut o, 0x0010, 0x0020, VR::LO, &p.id);
        s(&mut o, 0x0010, 0x0021, VR::LO, &p.issuer);
        s(&mut o, 0x0010, 0x0030, VR::DA, &p.birth_date);
        s(&mut o, 0x0010, 0x0040, VR::CS, p.sex);
        s(&mut o, 0x0010, 0x1000, VR::LO, &p.other_id); // OtherPatientIDs
        s(&mut o, 0x0010, 0x1010, VR::AS, &study.age);
        // A vendor's private block that copies identifiers (as real ones do).
        s(&mut o, 0x0011, 0x0010, VR::LO, "RAPHA SYNTH PRIVATE");
        s(&mut o, 0x0011, 0x1010, VR::LO, &p.id);
        s(&mut o, 0x0011, 0x1011, VR::LO, &p.name);
        s(&mut o, 0x0011, 0x1012, VR::LO, &p.other_id);
        if matches!(m, Modality::Ct | Modality::Mr) {
            s(&mut o, 0x0018, 0x0050, VR::DS, "2.5"); // SliceThickness
        }
        s(&mut o, 0x0018, 0x1030, VR::LO, ic.protocol);
        s(&mut o, 0x0020, 0x000D, VR::UI, &study.uid);
        s(&mut o, 0x0020, 0x000E, VR::UI, &entry.series_instance_uid);
        s(&mut o, 0x0020, 0x0010, VR::SH, &study.study_id);
        s(
            &mut o,
            0x0020,
            0x0011,
            VR::IS,
            &ic.series_number.to_string(),
        );
        s(
            &mut o,
            0x0020,
            0x0013,
            VR::IS,
            &ic.instance_number.to_string(),
        );
        if matches!(m, Modality::Ct | Modality::Mr) {
            s(
                &mut o,
                0x0020,
                0x0032,
                VR::DS,
                &format!("-160\\-160\\{}", ic.instance_number * 5),
            );
            s(&mut o, 0x0020, 0x0037, VR::DS, "1\\0\\0\\0\\1\\0");
            s(&mut o, 0x0020, 0x0052, VR::UI, ic.frame_uid); // FrameOfReferenceUID
            s(&mut o, 0x0028, 0x0030, VR::DS, "2.5\\2.5");
        } else {
            s(&mut o, 0x0020, 0x0020, VR::CS, "A\\F"); // PatientOrientation
        }
        let rows = entry.rows;
        let cols = entry.columns;
        let (samples, photometric) = match &pixels {
            Pixels::Rgb8(_) => (3, "RGB"),
            Pixels::Mono16(_) => (1, "MONOCHROME2"),
        };
        us(&mut o, 0x0028, 0x0002, samples);
        s(&mut o, 0x0028, 0x0004, VR::CS, photometric);
        if samples == 3 {
            us(&mut o, 0x0028, 0x0006, 0); // PlanarConfiguration: interleaved
        }
        us(&mut o, 0x0028, 0x0010, rows);
        us(&mut o, 0x0028, 0x0011, cols);
        let (alloc, stored) = match &pixels {
            Pixels::Rgb8(_) => (8, 8),
            Pixels::Mono16(_) => (16, 12),
        };
        us(&mut o, 0x0028, 0x0100, alloc);
        us(&mut o, 0x0028, 0x0101, stored);
        us(&mut o, 0x0028, 0x0102, stored - 1);
        us(&mut o, 0x0028, 0x0103, 0);
        if let Some(flag) = &entry.burned_in_annotation_flag {
            s(&mut o, 0x0028, 0x0301, VR::CS, flag);
        }
        match m {
            Modality::Ct => {
                s(&mut o, 0x0028, 0x1050, VR::DS, "40");
                s(&mut o, 0x0028, 0x1051, VR::DS, "400");
                s(&mut o, 0x0028, 0x1052, VR::DS, "-1024");
                s(&mut o, 0x0028, 0x1053, VR::DS, "1");
            }
            Modality::Mr | Modality::Cr | Modality::Dx => {
                s(&mut o, 0x0028, 0x1050, VR::DS, "1600");
                s(&mut o, 0x0028, 0x1051, VR::DS, "3200");
            }
            _ => {}
        }
        // RequestAttributesSequence: order identifiers, repeated inside an item.
        let mut req = InMemDicomObject::new_empty();
        s(&mut req, 0x0008, 0x0050, VR::SH, &study.accession);
        s(&mut req, 0x0020, 0x000D, VR::UI, &study.uid);
        s(&mut req, 0x0032, 0x1060, VR::LO, &study.description); // RequestedProcedureDescription
        s(&mut req, 0x0040, 0x0009, VR::SH, &study.sps_id);
        s(
            &mut req,
            0x0040,
            0x1001,
            VR::SH,
            &study.requested_procedure_id,
        );
        o.put(DataElement::new(
            Tag(0x0040, 0x0275),
            VR::SQ,
            Value::from(DataSetSequence::from(vec![req])),
        ));
        s(&mut o, 0x0040, 0x0244, VR::DA, &study.date); // PerformedProcedureStepStartDate
        s(&mut o, 0x0040, 0x0253, VR::SH, &study.pps_id);

        let bytes = match pixels {
            Pixels::Rgb8(b) => b,
            Pixels::Mono16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let pixel_tag = Tag(0x7FE0, 0x0010);
        if entry.transfer_syntax == RLE_TS {
            let bps = usize::from(alloc / 8);
            let mut frag = rle::encode_frame(
                &bytes,
                usize::from(rows),
                usize::from(cols),
                usize::from(samples),
                bps,
            );
            if frag.len() % 2 == 1 {
                frag.push(0);
            }
            let seq = PixelFragmentSequence::new(Vec::<u32>::new(), vec![frag]);
            o.put(DataElement::new(pixel_tag, VR::OB, Value::from(seq)));
        } else {
            let vr = if alloc == 8 { VR::OB } else { VR::OW };
            o.put(DataElement::new(
                pixel_tag,
                vr,
                PrimitiveValue::U8(bytes.into()),
            ));
        }
        o
    }
}

struct InstanceCtx<'a> {
    series_number: usize,
    instance_number: usize,
    frame_uid: &'a str,
    series_time: &'a str,
    content_time: &'a str,
    series_desc: &'a str,
    protocol: &'a str,
}

fn burn_rgb(rgb: &mut [u8], side: usize, lines: &[String], scale: usize, color: [u8; 3]) {
    let mut y = 2;
    for line in lines {
        font::draw(line, 2, y, scale.max(1), side, side, |x, yy| {
            let o = (yy * side + x) * 3;
            rgb[o..o + 3].copy_from_slice(&color);
        });
        y += font::CELL_H * scale.max(1);
    }
}
