//! The two gates: loading the Rego policy, building each gate's input, evaluating it with
//! regorus and turning the result into a [`Decision`].

use std::collections::BTreeMap;
use std::path::Path;

use rapha_core::release::{NoiseK, ReleasePrecision, ReleaseTransform};
use rapha_core::{
    Digest, JobRequest, Outcome, OutputDecl, OutputKind, ResourceBounds, ResourceLimits, Usdc,
};
use serde::{Deserialize, Serialize};

use crate::approval::{ApprovalRecord, DpoPublicKey};
use crate::error::{PolicyError, Result};

/// The default policy shipped with Rapha (`policy/rapha.rego`).
pub const DEFAULT_POLICY: &str = include_str!("../../../policy/rapha.rego");

/// The Rego package every Rapha policy defines.
pub const PACKAGE: &str = "rapha";

/// Which gate of the job path a decision belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gate {
    /// Step 2, before the PACS is queried.
    Admission,
    /// Step 7, before the trainer runs.
    Final,
}

impl Gate {
    /// The rule name in package `rapha`.
    pub const fn rule(self) -> &'static str {
        match self {
            Self::Admission => "admission",
            Self::Final => "final",
        }
    }
}

/// A gate's decision, as it goes into the receipt.
///
/// `digest` binds the decision to exactly what it was computed from: see [`decision_digest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub allow: bool,
    /// Every reason for denial, sorted; empty exactly when `allow` is true.
    pub reasons: Vec<String>,
    pub digest: Digest,
}

/// `SHA-256("rapha-policy-decision-v1" 0x00 gate 0x00 SHA-256(policy source)
/// SHA-256(canonical input JSON) SHA-256(canonical data JSON))`, where canonical JSON is RFC 8785
/// (`rapha_core::jcs`). An auditor holding the policy, input and data recomputes it with any
/// RFC 8785 library.
pub fn decision_digest(gate: Gate, policy: &Digest, input: &Digest, data: &Digest) -> Digest {
    let mut h = Digest::hasher();
    h.update(b"rapha-policy-decision-v1\0");
    h.update(gate.rule().as_bytes());
    h.update(&[0]);
    h.update(policy.as_bytes());
    h.update(input.as_bytes());
    h.update(data.as_bytes());
    h.finish()
}

/// Whether the node runs for real or as a demo. Only production requires attestation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Production,
    Demo,
}

/// One trusted publisher and the trainers of theirs the hospital accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherTrust {
    pub trainers: Vec<String>,
}

/// Limits on what one job may ask the PACS for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeLimits {
    /// Most studies one job may request (its `limit`, or the count of named studies).
    pub max_studies: u64,
    /// Longest StudyDate range, in days.
    pub max_date_range_days: u64,
    /// Modalities made available for training.
    pub modalities: Vec<String>,
}

/// Output types and sizes the hospital releases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputLimits {
    pub kinds: Vec<OutputKind>,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    /// Most bits a job's declared tensors may take (parameters × dtype bits,
    /// [`rapha_core::release::declared_bits`]); the node refuses a job over it at admission
    /// (`release-bits-over-cap`). `None`: no cap beyond the byte caps. Left out when `None`, so
    /// what policy inputs recorded before it say is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_release_bits: Option<u64>,
    /// Most bits one publisher may take from this node over all its jobs: the sum of the
    /// leakage bounds of its admitted jobs ([`rapha_core::release::release_bound`]). The node
    /// refuses a job whose bound would pass it at admission (`publisher-bits-over-cap`).
    /// `None`: [`DEFAULT_MAX_PUBLISHER_BITS`] ([`OutputLimits::publisher_cap`]). Left out when
    /// `None`, so what policy inputs recorded before it say is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_publisher_bits: Option<u64>,
    /// The precision the node releases declared float tensors at (`declared`, `bf16`, `fp16`,
    /// `int8`); `max_release_bits` and the DPO's review count the bits it leaves
    /// ([`rapha_core::release::effective_release_bits`]). Left out when `declared`.
    #[serde(default, skip_serializing_if = "ReleasePrecision::is_declared")]
    pub release_precision: ReleasePrecision,
    /// Node noise on released float tensors: σ = k × RMS of each tensor (0: none). Left out
    /// when 0.
    #[serde(default, skip_serializing_if = "NoiseK::is_none")]
    pub release_noise_k: NoiseK,
}

/// The publisher cap when `[policy.outputs] max_publisher_bits` is not set: 2^28 bits (32 MiB)
/// over the publisher's whole history on the node. That is some 375 jobs of the reference
/// trainer (714,857 bits each) or one model of 8 M F32 parameters, and less than the pixels of
/// one full-resolution CT series (≈ 150 MiB): a publisher cannot take the data it trained on,
/// however it encodes it. A DPO who approves more raises it deliberately.
pub const DEFAULT_MAX_PUBLISHER_BITS: u64 = 1 << 28;

impl OutputLimits {
    /// The publisher cap in force: `max_publisher_bits`, or [`DEFAULT_MAX_PUBLISHER_BITS`].
    pub fn publisher_cap(&self) -> u64 {
        self.max_publisher_bits
            .unwrap_or(DEFAULT_MAX_PUBLISHER_BITS)
    }

    /// What the node does to released float tensors under these limits.
    pub fn release_transform(&self) -> ReleaseTransform {
        ReleaseTransform {
            precision: self.release_precision,
            noise_k: self.release_noise_k,
        }
    }
}

/// Per-publisher job budget over a rolling window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobBudget {
    /// Most jobs a publisher may have admitted within the window.
    pub max_jobs: u64,
    pub window_hours: u64,
}

/// The hospital's policy settings: `data.hospital` for both gates. Built by the node from its
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HospitalPolicy {
    pub mode: Mode,
    pub publishers: BTreeMap<String, PublisherTrust>,
    pub scope: ScopeLimits,
    pub outputs: OutputLimits,
    pub allowed_metadata_fields: Vec<String>,
    pub min_fee: Usdc,
    pub budget: JobBudget,
    pub min_patients: u64,
    pub min_validation_patients: u64,
    /// The node's bounds on a trainer's resource requests (`[trainer.limits]`).
    pub resources: ResourceBounds,
    /// Publishers whose jobs may name a pseudonym linkage group (`[policy] allow_linkage`).
    pub linkage_publishers: Vec<String>,
}

/// Default minimum cohort size (patients).
pub const DEFAULT_MIN_PATIENTS: u64 = 50;
/// Default minimum validation split (patients).
pub const DEFAULT_MIN_VALIDATION_PATIENTS: u64 = 20;

impl HospitalPolicy {
    /// The `data` document the policy sees: `{"hospital": {...}}`.
    pub fn data_json(&self) -> serde_json::Value {
        serde_json::json!({
            "hospital": {
                "mode": self.mode,
                "publishers": self.publishers,
                "scope": self.scope,
                "outputs": self.outputs,
                "allowed_metadata_fields": self.allowed_metadata_fields,
                "min_fee": self.min_fee.base_units(),
                "min_fee_usdc": self.min_fee.to_string(),
                "budget": self.budget,
                "min_patients": self.min_patients,
                "min_validation_patients": self.min_validation_patients,
                "resources": self.resources,
                "linkage_publishers": self.linkage_publishers,
            }
        })
    }
}

/// What the admission gate sees of a query: the scope, never more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryScope {
    pub study_uids: Vec<String>,
    pub accession_numbers: Vec<String>,
    /// Days covered by the StudyDate range (both ends included); `None` when there is none.
    pub date_range_days: Option<u64>,
    pub modalities: Vec<String>,
    pub limit: Option<u32>,
}

/// One earlier job of the same publisher, as the admission gate sees it: facts the node
/// recorded, nothing the trainer chose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PastJob {
    /// Unix seconds at which it was admitted.
    pub admitted_at: u64,
    /// How it ended; `None` while it is in flight.
    pub outcome: Option<Outcome>,
    /// Patients in its cohort, once its trainer has started (the node leaves out a size the
    /// publisher was never shown: the decision digest in its receipts commits to this input).
    pub patients: Option<u64>,
    /// [`rapha_core::CohortQuery::digest`] of its query: equal digests are the same query.
    pub query_digest: Digest,
}

/// What the bundle declares that the admission gate weighs.
#[derive(Clone, Copy, Debug)]
pub struct Declared<'a> {
    pub outputs: &'a [OutputDecl],
    pub resources: &'a ResourceLimits,
}

/// `input` of the admission gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionInput {
    pub publisher: String,
    pub trainer: String,
    pub query: QueryScope,
    pub requested_fields: Vec<String>,
    pub outputs: Vec<OutputDecl>,
    /// The resources the bundle requests (the node has already checked them against its
    /// bounds, `data.hospital.resources`; a policy may weigh them further).
    pub resources: ResourceLimits,
    /// The pseudonym linkage group the request names, if any.
    pub linkage: Option<String>,
    /// Fee in USDC base units.
    pub fee: Usdc,
    /// The same fee as a decimal string, for messages.
    pub fee_usdc: String,
    /// Unix seconds.
    pub now: u64,
    /// Unix seconds at which this publisher's earlier jobs were admitted (those within the
    /// budget window at least).
    pub publisher_history: Vec<u64>,
    /// The same jobs with what the node knows of each.
    pub publisher_jobs: Vec<PastJob>,
}

impl AdmissionInput {
    /// Builds the input from a job request, what its bundle declares and the publisher's
    /// earlier admitted jobs.
    ///
    /// # Errors
    /// [`PolicyError::InvalidDateRange`] for a StudyDate range that is not two valid dates.
    pub fn new(
        request: &JobRequest,
        declared: Declared<'_>,
        now: u64,
        publisher_jobs: Vec<PastJob>,
    ) -> Result<Self> {
        let q = &request.query;
        let date_range_days = match &q.study_date {
            None => None,
            Some(range) => date_range_days(range)?,
        };
        Ok(Self {
            publisher: request.publisher.clone(),
            trainer: request.trainer.clone(),
            query: QueryScope {
                study_uids: q.study_uids.clone(),
                accession_numbers: q.accession_numbers.clone(),
                date_range_days,
                modalities: q.modalities.clone(),
                limit: q.limit,
            },
            requested_fields: request.requested_fields.clone(),
            outputs: declared.outputs.to_vec(),
            resources: declared.resources.clone(),
            linkage: request.linkage.as_ref().map(|g| g.as_str().to_owned()),
            fee: request.fee,
            fee_usdc: request.fee.to_string(),
            now,
            publisher_history: publisher_jobs.iter().map(|j| j.admitted_at).collect(),
            publisher_jobs,
        })
    }
}

/// Days covered by `YYYYMMDD-YYYYMMDD` (both ends included). An open range (`YYYYMMDD-` or
/// `-YYYYMMDD`) or a single date `YYYYMMDD` is bounded only on one side or is one day.
///
/// # Errors
/// [`PolicyError::InvalidDateRange`] for anything else, or an end before the start.
pub fn date_range_days(range: &str) -> Result<Option<u64>> {
    let bad = || PolicyError::InvalidDateRange(range.chars().take(40).collect());
    let (start, end) = match range.split_once('-') {
        Some((s, e)) => (s, e),
        None => (range, range),
    };
    if start.is_empty() || end.is_empty() {
        // Open-ended: unbounded on one side, so there is no finite range to weigh.
        let one = if start.is_empty() { end } else { start };
        day_number(one).ok_or_else(bad)?;
        return Ok(None);
    }
    let (s, e) = (
        day_number(start).ok_or_else(bad)?,
        day_number(end).ok_or_else(bad)?,
    );
    if e < s {
        return Err(bad());
    }
    Ok(Some((e - s + 1) as u64))
}

/// Days since 1970-01-01 of a `YYYYMMDD` date, or `None` if it is not a valid date.
fn day_number(s: &str) -> Option<i64> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = s[0..4].parse().ok()?;
    let m: u8 = s[4..6].parse().ok()?;
    let d: u8 = s[6..8].parse().ok()?;
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some((date - time::OffsetDateTime::UNIX_EPOCH.date()).whole_days())
}

/// What the final gate knows about the DPO approval. Signature checks happen in Rust (Rego
/// has no Ed25519); their verdicts are facts the policy weighs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFacts {
    pub job_digest: Digest,
    pub signature_valid: bool,
    pub signer_trusted: bool,
    pub expires_at: u64,
    pub revoked: bool,
}

impl ApprovalFacts {
    /// Checks a stored approval against the hospital's DPO keys.
    pub fn of(record: &ApprovalRecord, dpo_keys: &[DpoPublicKey]) -> Self {
        let a = &record.approval;
        Self {
            job_digest: a.job_digest,
            signature_valid: a.verify().is_ok(),
            signer_trusted: dpo_keys.contains(&a.dpo_key),
            expires_at: a.expires_at,
            revoked: record.revoked_at.is_some(),
        }
    }
}

/// Verdict of the attestation verifiers for this job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationFacts {
    pub present: bool,
    pub verified: bool,
}

/// The actual cohort, in patients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortFacts {
    pub patients: u64,
    pub validation_patients: u64,
}

/// `input` of the final gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalInput {
    pub job_digest: Digest,
    pub now: u64,
    pub approval: Option<ApprovalFacts>,
    pub attestation: AttestationFacts,
    pub cohort: CohortFacts,
}

/// A compiled Rego policy (package `rapha`) with its source digest.
#[derive(Clone)]
pub struct Policy {
    engine: regorus::Engine,
    digest: Digest,
    name: String,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Policy({}, {})", self.name, self.digest)
    }
}

impl Policy {
    /// Compiles `source` (named `name` in messages).
    ///
    /// # Errors
    /// [`PolicyError::PolicyCompile`] when it does not parse or is not package `rapha`.
    pub fn from_source(name: &str, source: &str) -> Result<Self> {
        let compile = |message: String| PolicyError::PolicyCompile {
            name: name.to_owned(),
            message,
        };
        let mut engine = new_engine();
        let package = engine
            .add_policy(name.to_owned(), source.to_owned())
            .map_err(|e| compile(e.to_string()))?;
        if package != format!("data.{PACKAGE}") {
            return Err(compile(format!(
                "it declares {package}, expected package {PACKAGE}"
            )));
        }
        Ok(Self {
            engine,
            digest: Digest::of(source.as_bytes()),
            name: name.to_owned(),
        })
    }

    /// Reads and compiles a policy file.
    ///
    /// # Errors
    /// [`PolicyError::PolicyIo`], [`PolicyError::PolicyCompile`].
    pub fn load(path: &Path) -> Result<Self> {
        let source = std::fs::read_to_string(path).map_err(|source| PolicyError::PolicyIo {
            path: path.to_owned(),
            source,
        })?;
        Self::from_source(&path.display().to_string(), &source)
    }

    /// The policy shipped with Rapha.
    ///
    /// # Errors
    /// Only if the shipped policy failed to compile, which its tests rule out.
    pub fn builtin() -> Result<Self> {
        Self::from_source("policy/rapha.rego", DEFAULT_POLICY)
    }

    /// SHA-256 of the policy source.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Runs the admission gate.
    ///
    /// # Errors
    /// [`PolicyError::Evaluation`] or [`PolicyError::MalformedDecision`]: the caller refuses
    /// the job.
    pub fn admission(&self, input: &AdmissionInput, hospital: &HospitalPolicy) -> Result<Decision> {
        let input = to_json(Gate::Admission, input)?;
        self.evaluate(Gate::Admission, &input, &hospital.data_json())
    }

    /// Runs the final gate.
    ///
    /// # Errors
    /// As [`Policy::admission`].
    pub fn final_gate(&self, input: &FinalInput, hospital: &HospitalPolicy) -> Result<Decision> {
        let input = to_json(Gate::Final, input)?;
        self.evaluate(Gate::Final, &input, &hospital.data_json())
    }

    /// Evaluates a gate on raw JSON input and data (also used to cross-check other engines).
    ///
    /// # Errors
    /// As [`Policy::admission`].
    pub fn evaluate(
        &self,
        gate: Gate,
        input: &serde_json::Value,
        data: &serde_json::Value,
    ) -> Result<Decision> {
        let eval = |message: String| PolicyError::Evaluation {
            gate: gate.rule(),
            message,
        };
        // A value with no canonical form (an integer past 2^53 - 1) is refused, never rounded.
        let canonical = |what: &str, v: &serde_json::Value| {
            rapha_core::jcs::to_vec(v)
                .map_err(|e| eval(format!("the {what} has no canonical JSON form: {e}")))
        };
        let input_bytes = canonical("input", input)?;
        let data_bytes = canonical("hospital data", data)?;
        let mut engine = self.engine.clone();
        let to_value = |bytes: &[u8]| {
            std::str::from_utf8(bytes)
                .map_err(|e| eval(e.to_string()))
                .and_then(|s| regorus::Value::from_json_str(s).map_err(|e| eval(e.to_string())))
        };
        engine.set_input(to_value(&input_bytes)?);
        engine
            .add_data(to_value(&data_bytes)?)
            .map_err(|e| eval(e.to_string()))?;
        let value = engine
            .eval_rule(format!("data.{PACKAGE}.{}", gate.rule()))
            .map_err(|e| eval(e.to_string()))?;
        let (allow, reasons) = parse_decision(gate, &value)?;
        let digest = decision_digest(
            gate,
            &self.digest,
            &Digest::of(&input_bytes),
            &Digest::of(&data_bytes),
        );
        Ok(Decision {
            allow,
            reasons,
            digest,
        })
    }
}

pub(crate) fn new_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    // A builtin given a wrong type is an error, not a silently undefined rule.
    engine.set_strict_builtin_errors(true);
    engine
}

fn to_json<T: Serialize>(gate: Gate, value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| PolicyError::Evaluation {
        gate: gate.rule(),
        message: e.to_string(),
    })
}

fn parse_decision(gate: Gate, value: &regorus::Value) -> Result<(bool, Vec<String>)> {
    let malformed = || PolicyError::MalformedDecision {
        gate: gate.rule(),
        found: value
            .to_json_str()
            .unwrap_or_else(|_| "an unprintable value".to_owned()),
    };
    let json: serde_json::Value = match value {
        regorus::Value::Undefined => return Err(malformed()),
        v => serde_json::to_value(v).map_err(|_| malformed())?,
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        allow: bool,
        reasons: Vec<String>,
    }
    let raw: Raw = serde_json::from_value(json).map_err(|_| malformed())?;
    // Fail closed on a policy that contradicts itself.
    if raw.allow != raw.reasons.is_empty() {
        return Err(malformed());
    }
    let mut reasons = raw.reasons;
    reasons.sort();
    Ok((raw.allow, reasons))
}
