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
//!
//! Frames that only a C decoder reads (JPEG-LS, 12-bit JPEG) go to this source's own sandboxed
//! workers ([`JobDecoders`]): the node runs its jobs in one process, so the workers belong to
//! the job's source, not to a thread or the process; each serves frame after frame of this job
//! only, one per thread decoding at a time, and they end when the source is dropped with the
//! job.
//!
//! Over WADO-RS the transfer syntax is negotiated ([`Wanted`]): the first request names the
//! lossless syntaxes this build decodes and accepts the stored one; when what comes cannot be
//! decoded, a second asks the PACS to transcode to one that can. An instance the PACS serves in
//! none of them is counted `transfer-syntax-not-served`. Both answers pass the same checks.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

use rapha_core::ExclusionCounts;
use rapha_dicom::client::Wanted;
use rapha_dicom::cohort::{verify_served, CohortEntry, InstanceSource};
use rapha_dicom::cohort_file::Entries;
use rapha_dicom::exclusion::reason;
use rapha_dicom::exclusion::ExclusionPolicy;
use rapha_dicom::pixels::{
    DecodeLimits, Instance, JobDecoders, Output, PixelError, Samples, LOSSLESS_TRANSFER_SYNTAXES,
};
use rapha_dicom::record::HASHED_ID_FIELDS;
use rapha_dicom::{DicomError, DicomWebClient};

use crate::error::{EnclaveError, Result};
use crate::identifiers::RawIdentifiers;
use crate::record::{Dtype, FeedRecord, Pixels, RecordSource};

/// Largest Part 10 object fetched for one record.
pub const MAX_INSTANCE_BYTES: u64 = 1 << 30;

/// Fields of `rapha_dicom::Record` that are not attributes besides its hashed identifiers
/// ([`HASHED_ID_FIELDS`]): label and structure.
const NOT_ATTRIBUTES: [&str; 4] = ["label", "modality", "pixel_shape", "transfer_syntax_uid"];

/// Records of a rapha-dicom cohort, fetched on demand.
pub struct DicomSource {
    records: Vec<FeedRecord>,
    /// The approved entries: held, or read from the job's cohort file one at a time when a
    /// record's pixels are fetched (the node's file, checked against its committed digest
    /// when opened and each line again when read; the trainer never reaches it).
    entries: Entries,
    client: Option<DicomWebClient>,
    exclusions: ExclusionPolicy,
    limits: DecodeLimits,
    /// This job's sandboxed decode workers (JPEG-LS, 12-bit JPEG): kept across its frames, at
    /// most one per thread decoding at once, ended with the source (so with the job), never
    /// shared with another job's source.
    decoders: JobDecoders,
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

/// What the trainer learns of a record: hashed ids, label, modality, shape and the
/// allow-listed attributes.
fn feed_record(r: &rapha_dicom::Record) -> FeedRecord {
    let mut attributes = BTreeMap::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(r) {
        for (k, v) in map {
            if !v.is_null()
                && !NOT_ATTRIBUTES.contains(&k.as_str())
                && !HASHED_ID_FIELDS.contains(&k.as_str())
            {
                attributes.insert(k, v);
            }
        }
    }
    let s = r.pixel_shape;
    FeedRecord {
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
    }
}

impl DicomSource {
    /// Builds the source and the guard's identifier set from the cohort's entries. `client`
    /// is needed when any entry is served over DICOMweb. Served objects are checked against the
    /// default (strictest) exclusion policy until [`DicomSource::with_exclusions`] sets the
    /// hospital's.
    pub fn new(entries: &[CohortEntry], client: Option<DicomWebClient>) -> (Self, RawIdentifiers) {
        let mut ids = RawIdentifiers::new();
        let records = entries
            .iter()
            .map(|e| {
                ids.add_expanded(e.raw_identifiers.iter().map(String::as_str));
                feed_record(&e.record)
            })
            .collect();
        (
            Self::of(records, Entries::Held(entries.to_vec()), client),
            ids,
        )
    }

    fn of(records: Vec<FeedRecord>, entries: Entries, client: Option<DicomWebClient>) -> Self {
        Self {
            records,
            entries,
            client,
            exclusions: ExclusionPolicy::default(),
            limits: DecodeLimits {
                max_output_bytes: crate::protocol::MAX_PAYLOAD,
                ..DecodeLimits::default()
            },
            decoders: JobDecoders::new(),
            refused: Mutex::new(BTreeMap::new()),
        }
    }

    /// [`DicomSource::new`] over entries held or in a cohort file: a file's entries are read
    /// once here (for the records and the guard's identifiers) and again one at a time when
    /// their pixels are fetched; none is held.
    ///
    /// # Errors
    /// [`EnclaveError::Cohort`] when an entry of the file cannot be read or is not the one
    /// committed.
    pub fn from_entries(
        entries: Entries,
        client: Option<DicomWebClient>,
    ) -> Result<(Self, RawIdentifiers)> {
        let mut ids = RawIdentifiers::new();
        let mut records = Vec::with_capacity(entries.len());
        for i in 0..entries.len() {
            let Some(e) = entries
                .get(i)
                .map_err(|e| EnclaveError::Cohort(e.to_string()))?
            else {
                break;
            };
            ids.add_expanded(e.raw_identifiers.iter().map(String::as_str));
            records.push(feed_record(&e.record));
        }
        Ok((Self::of(records, entries, client), ids))
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

    /// The object of record `index`: over WADO-RS in one of the syntaxes `wanted` names, or
    /// read from the PACS mount. A PACS error status is kept apart (it may mean "cannot serve
    /// that syntax").
    fn fetch_bytes(
        &self,
        index: usize,
        entry: &CohortEntry,
        wanted: &Wanted,
    ) -> std::result::Result<Vec<u8>, Fetch> {
        let unavailable =
            |reason: String| Fetch::Failed(EnclaveError::RecordUnavailable { index, reason });
        match &entry.source {
            InstanceSource::DicomWeb {
                study_uid,
                series_uid,
                instance_uid,
            } => {
                let client = self
                    .client
                    .as_ref()
                    .ok_or_else(|| unavailable("no DICOMweb client configured".into()))?;
                client
                    .retrieve_instance_bytes(study_uid, series_uid, instance_uid, wanted)
                    .map_err(|e| match e {
                        DicomError::HttpStatus { status, .. }
                            if NOT_SERVABLE_STATUSES.contains(&status) =>
                        {
                            Fetch::Status(e.to_string())
                        }
                        e => unavailable(e.to_string()),
                    })
            }
            InstanceSource::File(path) => {
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
        }
    }

    /// Opens a fetched object, checks it is the approved one, and decodes it. A refusal is
    /// recorded for the rest of the job, except an undecodable transfer syntax, which the
    /// caller may still negotiate away.
    fn open_checked(&self, index: usize, entry: &CohortEntry, bytes: &[u8]) -> Decoded {
        let unavailable = |reason: String| EnclaveError::RecordUnavailable { index, reason };
        let refuse = |e: PixelError| {
            if matches!(e, PixelError::Unsupported(_)) {
                return Decoded::Unsupported(e);
            }
            self.refused_map().insert(index, e.reason());
            Decoded::Done(Err(unavailable(e.to_string())))
        };
        let instance = match Instance::open(bytes, &self.limits) {
            Ok(i) => i,
            Err(e) => return refuse(e),
        };
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
            return Decoded::Done(Err(unavailable(refusal.to_string())));
        }
        let px = match instance.decode_for_job(Output::Stored, &self.decoders) {
            Ok(px) => px,
            Err(e) => return refuse(e),
        };
        let shape = [
            px.frames,
            px.rows,
            px.columns,
            u32::from(px.samples_per_pixel),
        ];
        let (dtype, data) = to_le_bytes(px.data);
        Decoded::Done(
            Pixels::new(dtype, shape, data).ok_or(EnclaveError::RecordUnavailable {
                index,
                reason: "decoded pixel data does not match its shape".into(),
            }),
        )
    }
}

/// Statuses with which a PACS says it cannot serve an instance in the syntaxes asked for
/// (Orthanc answers 500 when it cannot transcode).
const NOT_SERVABLE_STATUSES: [u16; 5] = [400, 406, 415, 500, 501];

/// Why [`DicomSource::fetch_bytes`] brought no object.
enum Fetch {
    /// The PACS answered one of [`NOT_SERVABLE_STATUSES`].
    Status(String),
    Failed(EnclaveError),
}

/// What [`DicomSource::open_checked`] made of a fetched object.
enum Decoded {
    Done(Result<Pixels>),
    /// In a transfer syntax this build cannot decode; not yet recorded as refused.
    Unsupported(PixelError),
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

impl DicomSource {
    /// Records that the PACS could serve record `index` in no syntax the node decodes.
    fn not_served(&self, index: usize, stored: &PixelError, answer: &str) -> EnclaveError {
        self.refused_map()
            .insert(index, reason::TRANSFER_SYNTAX_NOT_SERVED);
        EnclaveError::RecordUnavailable {
            index,
            reason: format!(
                "{stored}; asked to transcode it to a syntax this build decodes, the PACS {answer}"
            ),
        }
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
            .map_err(|e| unavailable(format!("the cohort entry cannot be read: {e}")))?
            .ok_or_else(|| unavailable("no such record".into()))?;
        let entry: &CohortEntry = &entry;
        let dicomweb = matches!(entry.source, InstanceSource::DicomWeb { .. });
        let wanted = if dicomweb {
            Wanted::preferred(LOSSLESS_TRANSFER_SYNTAXES)
        } else {
            Wanted::as_stored()
        };
        let bytes = self
            .fetch_bytes(index, entry, &wanted)
            .map_err(|f| match f {
                Fetch::Status(reason) => EnclaveError::RecordUnavailable { index, reason },
                Fetch::Failed(e) => e,
            })?;
        let first = self.open_checked(index, entry, &bytes);
        drop(bytes);
        let unsupported = match first {
            Decoded::Done(r) => return r,
            Decoded::Unsupported(e) if !dicomweb => e,
            Decoded::Unsupported(e) => {
                // Served in a syntax this build cannot decode: ask the PACS to transcode to
                // one it can (client::Wanted says how), and check and decode what comes anew.
                tracing::info!(
                    record = %entry.record.instance,
                    "served in a transfer syntax this build cannot decode; asking the PACS to transcode"
                );
                let again = self.fetch_bytes(
                    index,
                    entry,
                    &Wanted::transcoded(LOSSLESS_TRANSFER_SYNTAXES),
                );
                match again {
                    Ok(bytes) => match self.open_checked(index, entry, &bytes) {
                        Decoded::Done(r) => return r,
                        Decoded::Unsupported(_) => {
                            return Err(self.not_served(index, &e, "served it again as stored"));
                        }
                    },
                    Err(Fetch::Status(status)) => {
                        return Err(self.not_served(index, &e, &format!("refused ({status})")));
                    }
                    Err(Fetch::Failed(err)) => return Err(err),
                }
            }
        };
        self.refused_map().insert(index, unsupported.reason());
        Err(EnclaveError::RecordUnavailable {
            index,
            reason: unsupported.to_string(),
        })
    }
}
