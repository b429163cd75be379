//! The production record source: a cohort built by `rapha-dicom`, pixels fetched per record
//! over WADO-RS (or read from a read-only PACS mount path) and decoded in memory.
//!
//! The Part 10 bytes and the decoded pixels live only in this process's memory for the
//! duration of one fetch; nothing is written to disk. What the trainer learns about a record
//! is the [`FeedRecord`] built here: hashed ids, the label (the feed strips it from
//! validation records), the modality and the allow-listed attributes of `rapha_dicom::Record`
//! — never the instance source, the raw identifiers or any path.
//!
//! What is fetched must be what was approved (**I3**, **I1**). Before any pixel of a fetched
//! object is decoded, its header is checked against the approved cohort entry
//! ([`rapha_dicom::cohort::verify_served`]): SOP instance, series, study, patient, SOP class
//! and modality must be the approved ones, and the exclusion rules (burned-in annotation,
//! at-risk modality or SOP class, video) are applied to the served header itself. A refused
//! record answers `unavailable` for the rest of the job and is counted by reason
//! ([`DicomSource::fetch_refusals`]); the run goes on. So is a served object whose pixels
//! cannot be decoded ([`rapha_dicom::pixels::PixelError::reason`]: a transfer syntax this
//! build has no decoder for is counted apart from broken pixel data). Fetching and parsing are bounded
//! (`[dicom.pacs]` limits on the client, [`DecodeLimits`] on the bytes).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

use rapha_core::ExclusionCounts;
use rapha_dicom::cohort::{verify_served, CohortEntry, InstanceSource};
use rapha_dicom::exclusion::ExclusionPolicy;
use rapha_dicom::pixels::{DecodeLimits, Instance, Output, Samples};
use rapha_dicom::DicomWebClient;

use crate::error::{EnclaveError, Result};
use crate::identifiers::RawIdentifiers;
use crate::record::{Dtype, FeedRecord, Pixels, RecordSource};

/// Largest Part 10 object fetched for one record.
pub const MAX_INSTANCE_BYTES: u64 = 1 << 30;

/// Fields of `rapha_dicom::Record` that are not attributes (ids, label, structure).
const NOT_ATTRIBUTES: [&str; 11] = [
    "patient",
    "study",
    "series",
    "instance",
    "accession",
    "frame_of_reference",
    "references",
    "label",
    "modality",
    "pixel_shape",
    "transfer_syntax_uid",
];

/// Records of a rapha-dicom cohort, fetched on demand.
pub struct DicomSource {
    records: Vec<FeedRecord>,
    entries: Vec<CohortEntry>,
    client: Option<DicomWebClient>,
    exclusions: ExclusionPolicy,
    limits: DecodeLimits,
    /// Records refused at fetch time, with the reason: they stay refused for the job.
    refused: Mutex<BTreeMap<usize, &'static str>>,
}

impl std::fmt::Debug for DicomSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomSource")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

fn dtype_of(r: &rapha_dicom::Record) -> Dtype {
    match (
        r.bits_allocated.unwrap_or(16),
        r.pixel_representation.unwrap_or(0),
    ) {
        (b, _) if b <= 8 => Dtype::U8,
        (16, 1) => Dtype::I16,
        (16, _) => Dtype::U16,
        (_, 1) => Dtype::I32,
        _ => Dtype::U32,
    }
}

impl DicomSource {
    /// Builds the source and the guard's identifier set from the cohort's entries. `client`
    /// is needed when any entry is served over DICOMweb. Served objects are checked against the
    /// default (strictest) exclusion policy until [`DicomSource::with_exclusions`] sets the
    /// hospital's.
    pub fn new(entries: &[CohortEntry], client: Option<DicomWebClient>) -> (Self, RawIdentifiers) {
        let mut ids = RawIdentifiers::new();
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            ids.add_expanded(e.raw_identifiers.iter().map(String::as_str));
            let r = &e.record;
            let mut attributes = BTreeMap::new();
            if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(r) {
                for (k, v) in map {
                    if !v.is_null() && !NOT_ATTRIBUTES.contains(&k.as_str()) {
                        attributes.insert(k, v);
                    }
                }
            }
            let s = r.pixel_shape;
            records.push(FeedRecord {
                instance: r.instance,
                series: r.series,
                study: r.study,
                patient: r.patient,
                label: r.label,
                modality: r.modality.clone(),
                dtype: dtype_of(r),
                shape: [
                    s.frames.max(1),
                    u32::from(s.rows),
                    u32::from(s.columns),
                    u32::from(s.samples.max(1)),
                ],
                attributes,
            });
        }
        (
            Self {
                records,
                entries: entries.to_vec(),
                client,
                exclusions: ExclusionPolicy::default(),
                limits: DecodeLimits {
                    max_output_bytes: crate::protocol::MAX_PAYLOAD,
                    ..DecodeLimits::default()
                },
                refused: Mutex::new(BTreeMap::new()),
            },
            ids,
        )
    }

    /// Applies the hospital's exclusion policy (`[dicom.exclusions]`, the one the cohort was
    /// built with) to served objects.
    #[must_use]
    pub fn with_exclusions(mut self, policy: ExclusionPolicy) -> Self {
        self.exclusions = policy;
        self
    }

    /// Records refused at fetch time so far, counted once per record by reason
    /// (`served-instance-mismatch`, `burned-in-annotation`, …). Never names a patient.
    pub fn fetch_refusals(&self) -> ExclusionCounts {
        let mut counts = ExclusionCounts::new();
        for reason in self.refused_map().values() {
            *counts.entry((*reason).to_owned()).or_insert(0) += 1;
        }
        counts
    }

    fn refused_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, &'static str>> {
        // Every update is one insert: a poisoned map is still whole.
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fetch_bytes(&self, index: usize) -> Result<Vec<u8>> {
        let unavailable = |reason: String| EnclaveError::RecordUnavailable { index, reason };
        match self.entries.get(index).map(|e| &e.source) {
            Some(InstanceSource::DicomWeb {
                study_uid,
                series_uid,
                instance_uid,
            }) => {
                let client = self
                    .client
                    .as_ref()
                    .ok_or_else(|| unavailable("no DICOMweb client configured".into()))?;
                client
                    .retrieve_instance_bytes(study_uid, series_uid, instance_uid)
                    .map_err(|e| unavailable(e.to_string()))
            }
            Some(InstanceSource::File(path)) => {
                let mut bytes = Vec::new();
                std::fs::File::open(path)
                    .and_then(|f| f.take(MAX_INSTANCE_BYTES + 1).read_to_end(&mut bytes))
                    .map_err(|e| unavailable(format!("read failed: {}", e.kind())))?;
                if bytes.len() as u64 > MAX_INSTANCE_BYTES {
                    return Err(unavailable(format!(
                        "the file is larger than {MAX_INSTANCE_BYTES} bytes"
                    )));
                }
                Ok(bytes)
            }
            None => Err(unavailable("no such record".into())),
        }
    }
}

fn to_le_bytes(samples: Samples) -> (Dtype, Vec<u8>) {
    match samples {
        Samples::U8(v) => (Dtype::U8, v),
        Samples::U16(v) => (Dtype::U16, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Samples::I16(v) => (Dtype::I16, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Samples::U32(v) => (Dtype::U32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Samples::I32(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Samples::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    }
}

impl RecordSource for DicomSource {
    fn records(&self) -> &[FeedRecord] {
        &self.records
    }

    fn pixels(&self, index: usize) -> Result<Pixels> {
        let unavailable = |reason: String| EnclaveError::RecordUnavailable { index, reason };
        if let Some(reason) = self.refused_map().get(&index) {
            return Err(unavailable(format!("refused at fetch time ({reason})")));
        }
        let entry = self
            .entries
            .get(index)
            .ok_or_else(|| unavailable("no such record".into()))?;
        let bytes = self.fetch_bytes(index)?;
        // A served object that cannot be parsed or decoded is refused for the rest of the job
        // and counted by why (`undecodable-transfer-syntax` apart from broken data): the same
        // bytes would fail again.
        let undecodable = |e: rapha_dicom::pixels::PixelError| {
            self.refused_map().insert(index, e.reason());
            unavailable(e.to_string())
        };
        let instance = Instance::open(&bytes, &self.limits).map_err(undecodable)?;
        drop(bytes);
        // The served object must be the approved one, and pass the exclusion rules on its own
        // header, before a single pixel is decoded.
        if let Err(refusal) = verify_served(
            entry,
            &instance.attrs(),
            Some(instance.transfer_syntax()),
            &self.exclusions,
        ) {
            tracing::warn!(
                record = %entry.record.instance,
                reason = refusal.reason(),
                "the PACS served an object that is not the approved one; record refused"
            );
            self.refused_map().insert(index, refusal.reason());
            return Err(unavailable(refusal.to_string()));
        }
        let px = instance.decode(Output::Stored).map_err(undecodable)?;
        let shape = [
            px.frames,
            px.rows,
            px.columns,
            u32::from(px.samples_per_pixel),
        ];
        let (dtype, data) = to_le_bytes(px.data);
        Pixels::new(dtype, shape, data).ok_or(EnclaveError::RecordUnavailable {
            index,
            reason: "decoded pixel data does not match its shape".into(),
        })
    }
}
