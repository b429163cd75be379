//! From a scoped query (or a directory of files) to the cohort: one [`CohortEntry`] per kept
//! instance and the exclusion counts by reason. Metadata only: pixels are never read here.
//!
//! ```text
//!  ScopedQuery ─QIDO studies (paged)─▶ series ─WADO-RS metadata─▶ Attrs ─┐
//!  directory ─Part 10 header (stops before PixelData)────────────▶ Attrs ─┤
//!                                                                        ▼
//!            exclusions (burned-in, at-risk class, opt-out, malformed) ─▶ Record
//!            + raw identifiers (node-side only) ─▶ day offsets per patient, labels
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rapha_core::demographics::{Demographics, SexBin};
use rapha_core::{ExclusionCounts, HashedId};
use serde::{Deserialize, Serialize};

use crate::attrs::{tag, Attrs};
use crate::client::{Budget, DicomWebClient};
use crate::cohort_file::{CohortFileRef, CohortFileWriter};
use crate::config::DicomConfig;
use crate::date::Date;
use crate::exclusion::{reason, ExclusionPolicy, LabelTable, OptOuts};
use crate::pseudonym::Pseudonymizer;
use crate::record::{extract, AgeYears, Record, Sex};
use crate::scope::ScopedQuery;
use crate::{DicomError, Result};

/// Where the enclave runtime fetches an instance's pixels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceSource {
    DicomWeb {
        study_uid: String,
        series_uid: String,
        instance_uid: String,
    },
    File(PathBuf),
}

/// One kept instance. `source`, `raw_identifiers` and `approved` stay on the node: the runtime
/// uses the first to fetch pixels, gives the second to the output guard, and checks the
/// object the PACS serves against the third; only `record` goes to the trainer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CohortEntry {
    pub record: Record,
    pub source: InstanceSource,
    pub raw_identifiers: Vec<String>,
    /// Who and what the approved instance is (absent in cohorts stored before fetch-time
    /// checks existed; see [`CohortEntry::approved`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<ApprovedInstance>,
    /// PatientSex as the instance states it, node-side (the record holds it only when the
    /// policy allows): counted in the DPO's cohort summary ([`Patients`]). Absent in cohorts
    /// stored before the summary counted it, and when the instance states none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
}

/// The identity of an approved instance, raw (node-side only, like `raw_identifiers`): what
/// the object served at fetch time must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovedInstance {
    pub patient_id: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_class_uid: Option<String>,
    pub modality: String,
}

impl ApprovedInstance {
    /// The identity an instance's header states (`None` when an identifier is missing).
    pub fn of(attrs: &Attrs) -> Option<Self> {
        let need = |t| attrs.text(t).map(str::to_owned);
        Some(Self {
            patient_id: need(tag::PATIENT_ID)?,
            study_uid: need(tag::STUDY_INSTANCE_UID)?,
            series_uid: need(tag::SERIES_INSTANCE_UID)?,
            sop_instance_uid: need(tag::SOP_INSTANCE_UID)?,
            sop_class_uid: need(tag::SOP_CLASS_UID),
            modality: need(tag::MODALITY)?,
        })
    }
}

impl CohortEntry {
    /// The approved identity: stored with the entry, or for an entry stored without one, what
    /// its source and record still say (the DICOMweb UIDs, the SOP class and modality; the
    /// patient is then checked against the entry's raw identifiers).
    pub fn approved(&self) -> ApprovedInstance {
        if let Some(a) = &self.approved {
            return a.clone();
        }
        let (study_uid, series_uid, sop_instance_uid) = match &self.source {
            InstanceSource::DicomWeb {
                study_uid,
                series_uid,
                instance_uid,
            } => (study_uid.clone(), series_uid.clone(), instance_uid.clone()),
            InstanceSource::File(_) => Default::default(),
        };
        ApprovedInstance {
            patient_id: String::new(),
            study_uid,
            series_uid,
            sop_instance_uid,
            sop_class_uid: self.record.sop_class_uid.clone(),
            modality: self.record.modality.clone(),
        }
    }

    /// Whether this entry's patient is on `optouts` (by the stored PatientID; for an entry
    /// stored without one, by any of its raw identifiers, which include the PatientID).
    pub fn opted_out(&self, optouts: &OptOuts) -> bool {
        match &self.approved {
            Some(a) => optouts.contains(&a.patient_id),
            None => self.raw_identifiers.iter().any(|r| optouts.contains(r)),
        }
    }
}

/// An identity field of a served object that must be the approved instance's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    SopInstance,
    Series,
    Study,
    Patient,
    SopClass,
    Modality,
}

impl Identity {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::SopInstance => "SOP instance",
            Self::Series => "series",
            Self::Study => "study",
            Self::Patient => "patient",
            Self::SopClass => "SOP class",
            Self::Modality => "modality",
        }
    }

    /// The counted reason of a mismatch.
    pub fn reason(self) -> &'static str {
        match self {
            Self::SopInstance => reason::SERVED_INSTANCE_MISMATCH,
            Self::Series => reason::SERVED_SERIES_MISMATCH,
            Self::Study => reason::SERVED_STUDY_MISMATCH,
            Self::Patient => reason::SERVED_PATIENT_MISMATCH,
            Self::SopClass => reason::SERVED_SOP_CLASS_MISMATCH,
            Self::Modality => reason::SERVED_MODALITY_MISMATCH,
        }
    }
}

/// Why an object served at fetch time was refused: it is not the approved instance, or its own
/// header now meets an exclusion rule. [`FetchRefusal::reason`] is the counted reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchRefusal {
    /// The served object's identity differs from the approved instance's (never the values).
    #[error("the PACS served an object whose {} is not the approved instance's", .0.name())]
    Mismatch(Identity),
    /// The served object's own header meets an exclusion rule (burned-in annotation, at-risk
    /// modality or SOP class, video).
    #[error("the served object is excluded by its own header: {reason}")]
    Excluded { reason: &'static str },
}

impl FetchRefusal {
    /// The counted reason (`served-…-mismatch`, or the exclusion reason).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Mismatch(what) => what.reason(),
            Self::Excluded { reason } => reason,
        }
    }
}

/// Checks the header of an object served at fetch time against the approved cohort entry:
/// SOP instance, series, study, patient, SOP class and modality must be the approved ones,
/// and the exclusion rules (`policy`, with the served transfer syntax) applied to the served
/// header must pass. Runs before any pixel of the object is decoded.
///
/// # Errors
/// The first [`FetchRefusal`].
pub fn verify_served(
    entry: &CohortEntry,
    served: &Attrs,
    transfer_syntax: Option<&str>,
    policy: &ExclusionPolicy,
) -> std::result::Result<(), FetchRefusal> {
    let a = entry.approved();
    let same = |t: crate::attrs::TagU32, want: &str| {
        served.text(t).map(crate::attrs::trim_dicom) == Some(crate::attrs::trim_dicom(want))
    };
    let mismatch = |what| Err(FetchRefusal::Mismatch(what));
    if !same(tag::SOP_INSTANCE_UID, &a.sop_instance_uid) && !a.sop_instance_uid.is_empty() {
        return mismatch(Identity::SopInstance);
    }
    if !same(tag::SERIES_INSTANCE_UID, &a.series_uid) && !a.series_uid.is_empty() {
        return mismatch(Identity::Series);
    }
    if !same(tag::STUDY_INSTANCE_UID, &a.study_uid) && !a.study_uid.is_empty() {
        return mismatch(Identity::Study);
    }
    let patient_ok = match &entry.approved {
        Some(a) => same(tag::PATIENT_ID, &a.patient_id),
        None => served
            .text(tag::PATIENT_ID)
            .is_some_and(|p| entry.raw_identifiers.iter().any(|r| r == p)),
    };
    if !patient_ok {
        return mismatch(Identity::Patient);
    }
    let class_ok = match &a.sop_class_uid {
        Some(c) => same(tag::SOP_CLASS_UID, c),
        None => served.text(tag::SOP_CLASS_UID).is_none(),
    };
    if !class_ok {
        return mismatch(Identity::SopClass);
    }
    if !same(tag::MODALITY, &a.modality) {
        return mismatch(Identity::Modality);
    }
    if let Some(reason) = policy.check(served, transfer_syntax) {
        return Err(FetchRefusal::Excluded { reason });
    }
    Ok(())
}

/// Drops the entries of patients on `optouts`. Returns how many entries were dropped.
pub fn drop_opted_out(entries: &mut Vec<CohortEntry>, optouts: &OptOuts) -> u64 {
    let before = entries.len();
    entries.retain(|e| !e.opted_out(optouts));
    (before - entries.len()) as u64
}

/// What the node calls when a run starts: re-reads the opt-out list from its file (a patient
/// may have opted out after the DPO approved the cohort) and drops the entries of every patient
/// on it, before any record is listed or fed. Returns how many entries were dropped.
///
/// # Errors
/// [`DicomError::ListFile`] when the list cannot be re-read: the run must not start on a list
/// it could not check.
pub fn drop_opted_out_now(entries: &mut Vec<CohortEntry>, optouts: &OptOuts) -> Result<u64> {
    let current = optouts.reload()?;
    Ok(drop_opted_out(entries, &current))
}

/// Exclusion counts by reason. Never names a patient.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusions {
    counts: ExclusionCounts,
}

impl Exclusions {
    /// Counts one excluded instance.
    pub fn add(&mut self, reason: &str) {
        *self.counts.entry(reason.to_owned()).or_insert(0) += 1;
    }

    /// Instances excluded for `reason`.
    pub fn get(&self, reason: &str) -> u64 {
        self.counts.get(reason).copied().unwrap_or(0)
    }

    /// All excluded instances.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The counts.
    pub fn counts(&self) -> &ExclusionCounts {
        &self.counts
    }

    /// Into the shared receipt type.
    pub fn into_counts(self) -> ExclusionCounts {
        self.counts
    }
}

/// The result of building a cohort.
#[derive(Clone, Debug, Default)]
pub struct Cohort {
    pub entries: Vec<CohortEntry>,
    pub exclusions: Exclusions,
}

/// Builds cohorts under one key, config, opt-out list and (optional) label table.
pub struct CohortBuilder<'a> {
    pseudo: &'a Pseudonymizer,
    config: &'a DicomConfig,
    optouts: &'a OptOuts,
    labels: Option<&'a LabelTable>,
    max_instances: Option<u64>,
}

/// The cohort's distinct pseudonymous patients, with what their kept instances say of sex and
/// age at study: the cohort summary's histograms count each patient once ([`Demographics`]).
/// A patient's age is the one at their earliest study here (the youngest stated); their sex
/// is unknown when no instance states it or two state different ones.
#[derive(Debug, Default)]
pub struct Patients(BTreeMap<HashedId, Seen>);

#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    sex: SexSeen,
    /// Age at study / 10, 9 for 90 and over.
    decade: Option<u8>,
}

#[derive(Clone, Copy, Debug, Default)]
enum SexSeen {
    #[default]
    Unstated,
    Stated(Sex),
    Conflicting,
}

impl Patients {
    /// Notes one kept instance.
    pub fn add(&mut self, e: &CohortEntry) {
        let seen = self.0.entry(e.record.patient).or_default();
        seen.sex = match (seen.sex, e.sex.or(e.record.sex)) {
            (s, None) => s,
            (SexSeen::Unstated, Some(x)) => SexSeen::Stated(x),
            (SexSeen::Stated(y), Some(x)) if x == y => SexSeen::Stated(x),
            _ => SexSeen::Conflicting,
        };
        let decade = e.record.age_years.map(|a| match a {
            AgeYears::Years(y) => y / 10,
            AgeYears::NinetyPlus => 9,
        });
        seen.decade = match (seen.decade, decade) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Distinct patients.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patients by sex and by age decade.
    pub fn demographics(&self) -> Demographics {
        let mut d = Demographics::default();
        for s in self.0.values() {
            let sex = match s.sex {
                SexSeen::Stated(Sex::Female) => SexBin::Female,
                SexSeen::Stated(Sex::Male) => SexBin::Male,
                SexSeen::Stated(Sex::Other) => SexBin::Other,
                SexSeen::Unstated | SexSeen::Conflicting => SexBin::Unknown,
            };
            d.add(sex, s.decade);
        }
        d
    }
}

struct Candidate {
    entry: CohortEntry,
    study_date: Option<Date>,
}

/// Where a build puts the instances it keeps: held in memory ([`Cohort`]) or written to a
/// cohort file as they come ([`CohortFileWriter`]).
trait Sink {
    fn kept(&self) -> u64;
    fn keep(&mut self, c: Candidate) -> Result<()>;
}

impl Sink for Vec<Candidate> {
    fn kept(&self) -> u64 {
        self.len() as u64
    }
    fn keep(&mut self, c: Candidate) -> Result<()> {
        self.push(c);
        Ok(())
    }
}

impl Sink for CohortFileWriter {
    fn kept(&self) -> u64 {
        self.len()
    }
    fn keep(&mut self, c: Candidate) -> Result<()> {
        self.push(c.entry, c.study_date)
    }
}

/// A cohort built to a file ([`CohortBuilder::from_dicomweb_to_file`]): what to commit for
/// the file, and the exclusion counts.
#[derive(Clone, Debug)]
pub struct FileCohort {
    pub file: CohortFileRef,
    pub exclusions: Exclusions,
}

impl<'a> CohortBuilder<'a> {
    /// A builder.
    pub fn new(pseudo: &'a Pseudonymizer, config: &'a DicomConfig, optouts: &'a OptOuts) -> Self {
        Self {
            pseudo,
            config,
            optouts,
            labels: None,
            max_instances: None,
        }
    }

    /// Stops the build with [`DicomError::TooManyInstances`] as soon as it would keep more
    /// than `n` instances: every kept instance is stored with the cohort (and held in memory
    /// by the builds that return a [`Cohort`]), and a query within the scope limits (studies, dates) can still match millions of them.
    pub fn with_max_instances(mut self, n: u64) -> Self {
        self.max_instances = Some(n);
        self
    }

    /// Keeps `c` in `sink`, unless that would pass the instance cap.
    fn keep(&self, sink: &mut dyn Sink, c: Candidate) -> Result<()> {
        if let Some(limit) = self.max_instances {
            if sink.kept() >= limit {
                return Err(DicomError::TooManyInstances { limit });
            }
        }
        sink.keep(c)
    }

    /// Attaches the hospital's label table (keyed by AccessionNumber).
    pub fn with_labels(mut self, labels: &'a LabelTable) -> Self {
        self.labels = Some(labels);
        self
    }

    /// Decides one instance: `Ok(candidate)` to keep, `Err(reason)` to exclude.
    fn consider(
        &self,
        attrs: &Attrs,
        transfer_syntax: Option<&str>,
        source: InstanceSource,
    ) -> std::result::Result<Candidate, &'static str> {
        if let Some(r) = self.config.exclusions.check(attrs, transfer_syntax) {
            return Err(r);
        }
        if attrs
            .text(tag::PATIENT_ID)
            .is_some_and(|p| self.optouts.contains(p))
        {
            return Err(reason::OPTED_OUT);
        }
        let ex = match extract(attrs, transfer_syntax, self.pseudo, &self.config.fields) {
            Ok(ex) => ex,
            Err(_) => return Err(reason::MISSING_IDENTIFIERS),
        };
        if ex.record.rows.is_none() || ex.record.columns.is_none() {
            return Err(reason::NOT_AN_IMAGE);
        }
        let mut record = ex.record;
        record.label = match (self.labels, ex.accession.as_deref()) {
            (Some(t), Some(a)) => t.get(a),
            _ => None,
        };
        Ok(Candidate {
            entry: CohortEntry {
                record,
                source,
                raw_identifiers: ex.raw_identifiers,
                approved: ApprovedInstance::of(attrs),
                sex: ex.sex,
            },
            study_date: ex.study_date,
        })
    }

    fn finish(candidates: Vec<Candidate>, exclusions: Exclusions) -> Cohort {
        // Day offsets: per patient, from the earliest study date in this cohort.
        let mut first: HashMap<HashedId, Date> = HashMap::new();
        for c in &candidates {
            if let Some(d) = c.study_date {
                let e = first.entry(c.entry.record.patient).or_insert(d);
                *e = (*e).min(d);
            }
        }
        let entries = candidates
            .into_iter()
            .map(|mut c| {
                c.entry.record.days_since_first_study =
                    match (c.study_date, first.get(&c.entry.record.patient)) {
                        (Some(d), Some(f)) => u32::try_from((d - *f).whole_days()).ok(),
                        _ => None,
                    };
                c.entry
            })
            .collect();
        Cohort {
            entries,
            exclusions,
        }
    }

    /// Builds the cohort from every regular file under `dir` (recursively, in path order).
    /// Files that are not parseable DICOM are counted as `malformed`; the walk goes on.
    ///
    /// # Errors
    /// [`DicomError::Io`] when the directory cannot be listed.
    pub fn from_dir(&self, dir: &Path) -> Result<Cohort> {
        let mut kept = Vec::new();
        let exclusions = self.dir_into(dir, &mut kept)?;
        Ok(Self::finish(kept, exclusions))
    }

    /// [`CohortBuilder::from_dir`] with the kept entries written to a cohort file at `path`
    /// as they are kept (nothing is held per instance; see [`crate::cohort_file`]).
    ///
    /// # Errors
    /// Those of [`CohortBuilder::from_dir`], and writing the file.
    pub fn from_dir_to_file(&self, dir: &Path, path: &Path) -> Result<FileCohort> {
        let mut w = CohortFileWriter::create(path)?;
        let exclusions = self.dir_into(dir, &mut w)?;
        Ok(FileCohort {
            file: w.finish()?,
            exclusions,
        })
    }

    fn dir_into(&self, dir: &Path, sink: &mut dyn Sink) -> Result<Exclusions> {
        let files = rapha_core::fs::walk_files(dir).map_err(|e| DicomError::Io {
            path: e.path,
            source: e.source,
        })?;
        let mut exclusions = Exclusions::default();
        for path in files {
            match read_header(&path) {
                Ok((attrs, ts)) => {
                    match self.consider(&attrs, ts.as_deref(), InstanceSource::File(path)) {
                        Ok(c) => self.keep(sink, c)?,
                        Err(r) => exclusions.add(r),
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "file excluded as malformed");
                    exclusions.add(reason::MALFORMED);
                }
            }
        }
        Ok(exclusions)
    }

    /// Builds the cohort from the PACS: scoped study search, then the series of each study and
    /// their WADO-RS metadata (headers only).
    ///
    /// The whole build is one [`Budget`] of the config's `[dicom.pacs]` limits: a total
    /// deadline and a QIDO-RS page allowance, besides each request's own time and size
    /// limits (the client's).
    ///
    /// # Errors
    /// HTTP, status and DICOM JSON errors from the PACS, the limits above and the instance
    /// cap ([`CohortBuilder::with_max_instances`]) stop the build: a partial cohort is never
    /// returned as if it were whole.
    pub fn from_dicomweb(&self, client: &DicomWebClient, query: &ScopedQuery) -> Result<Cohort> {
        let mut kept = Vec::new();
        let exclusions = self.dicomweb_into(client, query, &mut kept)?;
        Ok(Self::finish(kept, exclusions))
    }

    /// [`CohortBuilder::from_dicomweb`] with the kept entries written to a cohort file at
    /// `path` as they are kept: what the build holds does not grow with the cohort (one
    /// study's series metadata at a time, and each patient's earliest study date). Nothing
    /// is at `path` unless the whole build succeeded.
    ///
    /// # Errors
    /// Those of [`CohortBuilder::from_dicomweb`], and writing the file.
    pub fn from_dicomweb_to_file(
        &self,
        client: &DicomWebClient,
        query: &ScopedQuery,
        path: &Path,
    ) -> Result<FileCohort> {
        let mut w = CohortFileWriter::create(path)?;
        let exclusions = self.dicomweb_into(client, query, &mut w)?;
        Ok(FileCohort {
            file: w.finish()?,
            exclusions,
        })
    }

    fn dicomweb_into(
        &self,
        client: &DicomWebClient,
        query: &ScopedQuery,
        sink: &mut dyn Sink,
    ) -> Result<Exclusions> {
        let mut exclusions = Exclusions::default();
        let budget = Budget::new(&self.config.pacs);
        let outside = client.for_each_study_within(&budget, query, &mut |study| {
            for series in client.search_series_within(&budget, &study, query.page_size())? {
                let Some(series_uid) = series.text(tag::SERIES_INSTANCE_UID).map(str::to_owned)
                else {
                    exclusions.add(reason::MISSING_IDENTIFIERS);
                    continue;
                };
                for inst in client.series_metadata_within(Some(&budget), &study, &series_uid)? {
                    let inst_uid = inst
                        .text(tag::SOP_INSTANCE_UID)
                        .unwrap_or_default()
                        .to_owned();
                    // The series must belong to the study we asked for.
                    if inst.text(tag::STUDY_INSTANCE_UID) != Some(study.uid()) {
                        exclusions.add(reason::OUTSIDE_SCOPE);
                        continue;
                    }
                    let source = InstanceSource::DicomWeb {
                        study_uid: study.uid().to_owned(),
                        series_uid: series_uid.clone(),
                        instance_uid: inst_uid,
                    };
                    match self.consider(&inst, None, source) {
                        Ok(c) => self.keep(sink, c)?,
                        Err(r) => exclusions.add(r),
                    }
                }
            }
            Ok(())
        })?;
        for _ in 0..outside {
            exclusions.add(reason::OUTSIDE_SCOPE);
        }
        Ok(exclusions)
    }
}

/// Reads a Part 10 file's header, stopping before the pixel data. The bytes are checked
/// before they are parsed ([`crate::guard`]): lengths, nesting depth and header count, and a
/// deflated data set is inflated with a cap first.
///
/// # Errors
/// [`DicomError::MalformedFile`] for anything refused or that dicom-rs cannot parse.
pub fn read_header(path: &Path) -> Result<(Attrs, Option<String>)> {
    use std::io::Read;
    let bad = |reason: String| DicomError::MalformedFile {
        path: path.to_owned(),
        reason,
    };
    let io = |e| DicomError::Io {
        path: path.to_owned(),
        source: e,
    };
    let limits = crate::guard::Limits::default();
    let mut file = std::fs::File::open(path).map_err(io)?;
    let total = usize::try_from(file.metadata().map_err(io)?.len())
        .map_err(|_| bad("file too large".into()))?;
    // Read only as far as the PixelData header: the pixels are not needed for metadata.
    let mut buf = Vec::new();
    let mut want = 64 * 1024;
    loop {
        let target = want.min(total);
        (&mut file)
            .take((target - buf.len()) as u64)
            .read_to_end(&mut buf)
            .map_err(io)?;
        let whole = if buf.len() < target { buf.len() } else { total };
        let scan = crate::guard::scan_header(&buf, whole, &limits);
        match scan.map_err(|e| bad(e.to_string()))? {
            crate::guard::Scan::NeedMore if buf.len() < total && buf.len() == target => want *= 4,
            crate::guard::Scan::NeedMore => return Err(bad("file ends inside its header".into())),
            crate::guard::Scan::PixelDataAt(_) | crate::guard::Scan::Complete => break,
        }
    }
    header_of(&buf, &limits).map_err(bad)
}

/// [`read_header`] for bytes in memory (a Part 10 file with or without the preamble).
///
/// # Errors
/// Why the bytes are not a parseable DICOM file.
pub fn read_header_bytes(bytes: &[u8]) -> std::result::Result<(Attrs, Option<String>), String> {
    let limits = crate::guard::Limits::default();
    crate::guard::check(
        &crate::guard::prepare(bytes, &limits).map_err(|e| e.to_string())?,
        &limits,
    )
    .map_err(|e| e.to_string())?;
    header_of(bytes, &limits)
}

/// Inflates a deflated data set (with the cap), checks the header structure up to the pixel
/// data, and parses it. The transfer syntax reported is the one the file names.
fn header_of(
    bytes: &[u8],
    limits: &crate::guard::Limits,
) -> std::result::Result<(Attrs, Option<String>), String> {
    let ts = crate::guard::transfer_syntax(bytes).unwrap_or_default();
    let prepared = crate::guard::prepare(bytes, limits).map_err(|e| e.to_string())?;
    if let std::borrow::Cow::Owned(inflated) = &prepared {
        crate::guard::scan_header(inflated, inflated.len(), limits).map_err(|e| e.to_string())?;
    }
    let (mut attrs, _) = parse_header(&prepared)?;
    attrs.set_text(tag::TRANSFER_SYNTAX_UID, "UI", &[ts.as_str()]);
    Ok((attrs, Some(ts)))
}

/// Parses a header whose structure the guard has checked (the bytes may stop after the
/// PixelData element's header).
fn parse_header(bytes: &[u8]) -> std::result::Result<(Attrs, Option<String>), String> {
    let body = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        &bytes[128..]
    } else {
        bytes
    };
    let obj = std::panic::catch_unwind(|| {
        dicom_object::OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Never)
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .from_reader(body)
    })
    .map_err(|_| "parser rejected the file".to_owned())?
    .map_err(|e| e.to_string())?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_owned();
    let mut attrs = Attrs::from_object(&obj);
    attrs.set_text(tag::TRANSFER_SYNTAX_UID, "UI", &[ts.as_str()]);
    Ok((attrs, Some(ts)))
}
/// Summary for humans: kept instances and exclusions by reason.
pub fn summary(cohort: &Cohort) -> BTreeMap<String, u64> {
    let mut m = cohort.exclusions.counts().clone();
    m.insert("kept".into(), cohort.entries.len() as u64);
    m
}
