//! The receipt body, schemas `rapha-receipt/2` (written now) and `rapha-receipt/1` (written
//! before issue 18, still verified), documented in `docs/receipts.md`.
//!
//! | | `rapha-receipt/1` | `rapha-receipt/2` |
//! |---|---|---|
//! | `outcome` | completed, refused, failed | also violated, trainer-failed |
//! | `reason` | free text | one code of `rapha_core::ReasonCode`, of the outcome's codes |
//! | `timestamps` | milliseconds | whole minutes (in milliseconds) |
//! | `outputs` | completed jobs | completed jobs only (checked) |
//! | `leakage` | never | the job's leakage bound, from issue 19 on (absent before; checked) |
//! | `audit` | never | the node's privacy audit of a completed job, from issue 19 on (absent before; checked) |
//!
//! Nothing in a v2 body is chosen by the trainer after it saw data except what a completed job
//! releases on purpose (its declared files' digests and sizes, the node-computed metrics).
//!
//! Plain data only (digests, strings, numbers), so the crates that fill it (policy, attest,
//! enclave, node) need not be dependencies of this one and an auditor reads one small crate.
//! Every struct refuses unknown fields: a body cannot carry something the schema never named.

use std::collections::BTreeMap;

use rapha_core::release::LeakageBound;
use rapha_core::{Digest, ExclusionCounts, FeeSplit, JobId, Outcome, ReasonCode, Usdc};
use serde::{Deserialize, Serialize};

use crate::error::{ReceiptError, Result};
use crate::{jcs, Address};

/// The first schema (before issue 18): still read and verified, never written for a new job.
pub const SCHEMA_V1: &str = "rapha-receipt/1";
/// The schema of receipts written now.
pub const SCHEMA_V2: &str = "rapha-receipt/2";
/// The schema new receipts use ([`SCHEMA_V2`]).
pub const SCHEMA: &str = SCHEMA_V2;
/// One minute in milliseconds: v2 timestamps are multiples of it.
pub const MINUTE_MS: u64 = 60_000;

/// `ms` truncated to the whole minute, as v2 receipts carry times.
pub const fn to_minute(ms: u64) -> u64 {
    ms - ms % MINUTE_MS
}

/// What one job (completed, refused or failed) proves. Serialised once to RFC 8785 canonical
/// JSON; those bytes are signed, logged and hashed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    /// [`SCHEMA_V2`] (or [`SCHEMA_V1`] for a receipt written before issue 18).
    pub schema: String,
    pub job_id: JobId,
    pub outcome: Outcome,
    /// v2: a code of `rapha_core::ReasonCode` (see [`ReceiptBody::reason_code`]) that belongs
    /// to `outcome`; v1: why the job was refused or failed, in words.
    pub reason: String,
    pub node: NodeIdentity,
    /// Publisher name as in the hospital's trust store.
    pub publisher: String,
    /// Trainer name as signed in the bundle.
    pub trainer: String,
    /// Digest of the bundle's OCI image manifest that ran (or would have run).
    pub bundle_manifest: Digest,
    /// `JobRequest::digest()` of the submitted request.
    pub job_request: Digest,
    pub policy: PolicyDecisions,
    /// The DPO's approval; `None` when the job was refused before approval.
    pub dpo_approval: Option<DpoApproval>,
    pub attestation: Attestation,
    /// `None` when the job was refused before the cohort was built.
    pub cohort: Option<CohortCommitment>,
    /// The enclave runtime's signed output manifest; `None` if the trainer never ran.
    pub outputs: Option<OutputManifest>,
    pub payment: Payment,
    pub timestamps: Timestamps,
    /// The runtime's confinement: `sgx-gramine`, `runc` or `none-development`.
    pub confinement: String,
    /// The bound on what the publisher learns from the job, and its running total (issue 19).
    /// Absent from receipts written before it (so their bytes are unchanged) and from those of
    /// jobs refused before admission (they ended on the bundle and the request alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leakage: Option<Leakage>,
    /// The node's membership-inference audit of what a completed job released (issue 19), or
    /// why there is none. Absent from receipts written before it and from jobs that released
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

/// The node's privacy audit of a released model (docs/receipts.md, "The privacy audit"): the
/// loss-based membership attack on records the trainer never received (non-members) and as
/// many of its training records (members), scored by the hospital's runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", deny_unknown_fields)]
#[non_exhaustive]
pub enum Audit {
    #[serde(rename = "measured")]
    Measured {
        /// AUC of members against non-members on the model's confidence in the true label:
        /// 0.5 when the model treats them alike.
        attack_auc: f64,
        /// Its 95% confidence interval.
        ci_low: f64,
        ci_high: f64,
        members: u64,
        non_members: u64,
        /// SHA-256 of the runner binary that scored the records.
        runner: Digest,
        /// SHA-256 of the graph the signed predicate pins (`[audit] graph`).
        graph: Digest,
    },
    #[serde(rename = "not available")]
    NotAvailable {
        /// One of [`Audit::REASONS`].
        reason: String,
    },
}

impl Audit {
    /// Why an audit is not available: no runner configured on the node, no graph pinned by
    /// the predicate, a graph in the image that is not the pinned one, no labelled audit or training records, or the runner failed (it could
    /// not load or run the model, ran past its time, or left records unscored).
    pub const REASONS: [&'static str; 7] = [
        "no-runner",
        "no-pinned-graph",
        "graph-mismatch",
        "no-audit-split",
        "runner-failed",
        "runner-timeout",
        "incomplete-scores",
    ];

    /// Whether the figures are an attack's: finite, in [0, 1], the AUC within its CI, both
    /// sides non-empty; or the reason one of [`Audit::REASONS`].
    ///
    /// # Errors
    /// What is not.
    pub fn check(&self) -> std::result::Result<(), String> {
        match self {
            Audit::Measured {
                attack_auc,
                ci_low,
                ci_high,
                members,
                non_members,
                ..
            } => {
                let unit = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
                if !(unit(*attack_auc) && unit(*ci_low) && unit(*ci_high)) {
                    return Err("audit figures are not numbers in [0, 1]".into());
                }
                if !(ci_low <= attack_auc && attack_auc <= ci_high) {
                    return Err(format!(
                        "audit attack AUC {attack_auc} is outside its CI [{ci_low}, {ci_high}]"
                    ));
                }
                if *members == 0 || *non_members == 0 {
                    return Err("an audit needs members and non-members".into());
                }
                Ok(())
            }
            Audit::NotAvailable { reason } => {
                if Audit::REASONS.contains(&reason.as_str()) {
                    Ok(())
                } else {
                    Err(format!(
                        "audit reason {:?} is not a class of the vocabulary",
                        reason.chars().take(60).collect::<String>()
                    ))
                }
            }
        }
    }
}

/// The leakage bound of a job as its receipt states it (docs/receipts.md, "The leakage
/// bound"), computed by `rapha_core::release::release_bound` at admission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leakage {
    /// The bound in bits, term by term, and their total.
    pub bound: LeakageBound,
    /// Distinct patients of the cohort fed; `None` when the trainer never started.
    pub patients: Option<u64>,
    /// `bound.total / patients`, rounded up; `None` without patients.
    pub per_patient: Option<u64>,
    /// The publisher's bits on this node after this job: the bounds of its admitted jobs.
    pub publisher_bits: u64,
    /// The publisher's cap when this job was admitted (`[policy.outputs] max_publisher_bits`).
    pub publisher_cap: u64,
}

impl Leakage {
    /// Whether the figures agree: the terms add up to the total, the per-patient figure is
    /// the total over the patients rounded up, and the running total holds this job's bound
    /// and is within the cap.
    ///
    /// # Errors
    /// What does not add up.
    pub fn check(&self) -> std::result::Result<(), String> {
        let b = &self.bound;
        if b.sum() != Some(b.total) {
            return Err(format!(
                "leakage terms do not add up to their total {}",
                b.total
            ));
        }
        let expected = self.patients.and_then(|p| b.per_patient(p));
        if self.per_patient != expected {
            return Err(format!(
                "leakage per patient {:?} is not the total {} over {:?} patients",
                self.per_patient, b.total, self.patients
            ));
        }
        if self.publisher_bits < b.total || self.publisher_bits > self.publisher_cap {
            return Err(format!(
                "publisher bits {} do not hold this job's {} within the cap {}",
                self.publisher_bits, b.total, self.publisher_cap
            ));
        }
        Ok(())
    }
}

/// Which node issued the receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    /// The address of the node's signing key; the receipt signature must recover to it.
    #[serde(with = "rapha_eth::address::checksummed")]
    pub address: Address,
    /// The hospital's name for the node (free text chosen by the hospital, never PHI).
    pub name: String,
}

/// One policy evaluation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDecision {
    pub allow: bool,
    pub reasons: Vec<String>,
    /// Digest binding the policy, its input and the data it saw.
    pub digest: Digest,
}

/// Admission (step 2) and final gate (step 7) decisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDecisions {
    pub admission: PolicyDecision,
    /// `None` when the job stopped before the final gate.
    #[serde(rename = "final")]
    pub final_gate: Option<PolicyDecision>,
}

/// The DPO's signed approval of the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoApproval {
    /// The approver's public key or key id, as the policy crate records it; for a passkey
    /// approval `passkey:` and the credential id (base64url).
    pub signer: String,
    /// The approval signature, hex or base64 as the policy crate records it; for a passkey
    /// approval the assertion signature (base64url).
    pub signature: String,
    /// The WebAuthn assertion of a passkey approval, which `rapha verify` checks offline.
    /// Absent for an Ed25519 key-file approval (and from every receipt written before
    /// passkeys, whose bytes are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey: Option<PasskeyApproval>,
}

/// A passkey approval as the receipt carries it (docs/receipts.md, "Passkey approvals").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyApproval {
    /// The job digest (v2) the DPO approved; the challenge is recomputed from it.
    pub job_digest: Digest,
    /// The WebAuthn relying-party id the assertion is scoped to.
    pub rp_id: String,
    pub assertion: crate::webauthn::Assertion,
    /// Log index of the last DPO credential entry when the node verified the approval: the
    /// credential set at that entry is the one the approval is checked against.
    pub credentials_at: u64,
}

impl DpoApproval {
    /// The `signer` a passkey approval by `credential_id` records.
    pub fn passkey_signer(credential_id: &crate::webauthn::B64u) -> String {
        format!("passkey:{credential_id}")
    }
}

/// Attestation evidence, or the explicit statement that there was none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Attestation {
    /// Development run without hardware attestation. Never valid in production.
    NoneDevelopment,
    /// Hardware evidence, each item verified.
    Verified { evidence: Vec<AttestationEvidence> },
    /// The job ended before attestation.
    NotReached,
}

/// One piece of attestation evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationEvidence {
    /// `tpm2-quote`, `sgx-dcap-quote`, ….
    pub kind: String,
    /// SHA-256 of the evidence bytes.
    pub digest: Digest,
    /// The verifier's result, e.g. `ok`, `ok-sw-hardening-needed`, or the refusal.
    pub result: String,
}

/// What the trainer was fed, without naming anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortCommitment {
    /// RFC 9162 root over the sorted hashed instance ids fed to the trainer.
    pub merkle_root: Digest,
    /// Number of instances fed (the number of leaves under `merkle_root`).
    pub instances: u64,
    /// Instances fed, by modality.
    pub by_modality: BTreeMap<String, u64>,
    /// Instances excluded, by reason (opt-outs included).
    pub exclusions: ExclusionCounts,
}

/// The enclave runtime's signed manifest of what left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputManifest {
    /// `passed` or `rejected: <reason>` as the output guard reported it.
    pub guard_verdict: String,
    /// Files released (empty when the guard rejected the outputs).
    pub files: Vec<OutputFile>,
    /// Node-computed validation metrics. Finite numbers only.
    pub metrics: BTreeMap<String, f64>,
    /// The runtime's per-job public key (hex), bound into the attestation.
    pub runtime_public_key: String,
    /// The runtime's signature over its manifest (hex).
    pub signature: String,
}

/// One released file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFile {
    pub name: String,
    pub sha256: Digest,
    pub bytes: u64,
}

/// Payment terms. Amounts are decimal strings of USDC base units (JSON numbers are doubles).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payment {
    pub chain_id: u64,
    /// The escrow contract (the EIP-712 `verifyingContract`).
    #[serde(with = "rapha_eth::address::checksummed")]
    pub escrow: Address,
    /// The USDC token contract.
    #[serde(with = "rapha_eth::address::checksummed")]
    pub token: Address,
    /// The hospital's payout address.
    #[serde(with = "rapha_eth::address::checksummed")]
    pub payout: Address,
    #[serde(with = "base_units")]
    pub fee: Usdc,
    #[serde(with = "base_units")]
    pub hospital_share: Usdc,
    #[serde(with = "base_units")]
    pub protocol_share: Usdc,
}

impl Payment {
    /// Payment terms with the split of **I7** computed by [`FeeSplit::of`].
    pub fn new(chain_id: u64, escrow: Address, token: Address, payout: Address, fee: Usdc) -> Self {
        let split = FeeSplit::of(fee);
        Self {
            chain_id,
            escrow,
            token,
            payout,
            fee,
            hospital_share: split.hospital,
            protocol_share: split.protocol,
        }
    }
}

/// Unix times in milliseconds; in v2 each a whole minute ([`to_minute`]), so the trainer's
/// timing reaches the publisher only at that resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamps {
    pub submitted_ms: u64,
    /// When the trainer started; `None` if it never did.
    pub started_ms: Option<u64>,
    pub finished_ms: u64,
}

mod base_units {
    use rapha_core::Usdc;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Usdc, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.base_units().to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Usdc, D::Error> {
        let s = String::deserialize(d)?;
        // Canonical decimal only: no sign, no leading zeros, no spaces.
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(serde::de::Error::custom(
                "amount must be a decimal string of base units",
            ));
        }
        s.parse::<u64>()
            .map(Usdc::from_base_units)
            .map_err(|_| serde::de::Error::custom("amount does not fit in 64 bits"))
    }
}

impl ReceiptBody {
    /// The canonical bytes that are signed, logged and hashed.
    ///
    /// # Errors
    /// [`ReceiptError::Canonicalize`] for a non-finite metric or an integer past 2^53;
    /// [`ReceiptError::InconsistentBody`] when [`ReceiptBody::check`] fails.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>> {
        self.check()?;
        jcs::to_vec_of(self)
    }

    /// The reason as a code of the fixed vocabulary: always `Some` for a v2 body that passed
    /// [`ReceiptBody::check`]; for a v1 body only when its text happens to be a code.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        ReasonCode::parse(&self.reason)
    }

    /// Whether the body is of the first schema (before issue 18).
    pub fn is_v1(&self) -> bool {
        self.schema == SCHEMA_V1
    }

    /// Checks what the schema alone cannot: the schema id, finite metrics, the fee split of
    /// **I7**, that the cohort counts add up, and for v2 that the reason is a code of the
    /// outcome, the times whole minutes and outputs only on a completed job.
    ///
    /// # Errors
    /// [`ReceiptError::UnsupportedSchema`], [`ReceiptError::InconsistentBody`].
    pub fn check(&self) -> Result<()> {
        let bad = |s: String| Err(ReceiptError::InconsistentBody(s));
        match self.schema.as_str() {
            SCHEMA_V1 => {
                if !matches!(
                    self.outcome,
                    Outcome::Completed | Outcome::Refused | Outcome::Failed
                ) {
                    return bad(format!(
                        "outcome {} does not exist in schema {SCHEMA_V1}",
                        self.outcome
                    ));
                }
            }
            SCHEMA_V2 => self.check_v2()?,
            other => {
                return Err(ReceiptError::UnsupportedSchema {
                    found: other.chars().take(60).collect(),
                    expected: "rapha-receipt/1 or rapha-receipt/2",
                })
            }
        }
        let p = &self.payment;
        let split = FeeSplit::of(p.fee);
        if p.hospital_share != split.hospital || p.protocol_share != split.protocol {
            return bad(format!(
                "fee split {} / {} of fee {} is not the 70/30 split {} / {}",
                p.hospital_share, p.protocol_share, p.fee, split.hospital, split.protocol
            ));
        }
        if let Some(c) = &self.cohort {
            let sum = c
                .by_modality
                .values()
                .try_fold(0u64, |a, b| a.checked_add(*b));
            if sum != Some(c.instances) {
                return bad(format!(
                    "cohort counts by modality do not add up to {} instances",
                    c.instances
                ));
            }
        }
        if let Some(o) = &self.outputs {
            if let Some((k, _)) = o.metrics.iter().find(|(_, v)| !v.is_finite()) {
                return bad(format!("metric {k:?} is not a finite number"));
            }
        }
        if let Some(l) = &self.leakage {
            if self.is_v1() {
                return bad(format!("schema {SCHEMA_V1} has no leakage bound"));
            }
            l.check().or_else(bad)?;
        }
        if let Some(a) = &self.audit {
            if self.is_v1() {
                return bad(format!("schema {SCHEMA_V1} has no audit"));
            }
            if self.outputs.is_none() {
                return bad("an audit without released outputs".into());
            }
            a.check().or_else(bad)?;
        }
        Ok(())
    }

    fn check_v2(&self) -> Result<()> {
        let bad = |s: String| Err(ReceiptError::InconsistentBody(s));
        let Some(code) = self.reason_code() else {
            return bad(format!(
                "reason {:?} is not a code of the fixed vocabulary",
                self.reason.chars().take(60).collect::<String>()
            ));
        };
        if code.outcome() != self.outcome {
            return bad(format!(
                "reason {code} belongs to outcome {}, not {}",
                code.outcome(),
                self.outcome
            ));
        }
        let t = &self.timestamps;
        for (name, ms) in [
            ("submitted_ms", Some(t.submitted_ms)),
            ("started_ms", t.started_ms),
            ("finished_ms", Some(t.finished_ms)),
        ] {
            if let Some(ms) = ms.filter(|ms| ms % MINUTE_MS != 0) {
                return bad(format!("{name} {ms} is not a whole minute"));
            }
        }
        if self.outputs.is_some() && self.outcome != Outcome::Completed {
            return bad(format!(
                "a {} job releases nothing, but the body lists outputs",
                self.outcome
            ));
        }
        Ok(())
    }

    /// Parses body bytes and checks that they are exactly the canonical form of what they
    /// decode to, so two different byte strings never stand for one body.
    ///
    /// # Errors
    /// [`ReceiptError::Malformed`], [`ReceiptError::NotCanonical`], and those of
    /// [`ReceiptBody::check`].
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self> {
        Self::parse_canonical(bytes).map(|(body, _)| body)
    }

    /// As [`ReceiptBody::from_canonical_bytes`], also returning the JSON value the bytes
    /// encode (the verifier compares the file's human copy with it).
    pub(crate) fn parse_canonical(bytes: &[u8]) -> Result<(Self, serde_json::Value)> {
        let body: Self = serde_json::from_slice(bytes)
            .map_err(|e| ReceiptError::Malformed(format!("receipt body: {e}")))?;
        body.check()?;
        let value = serde_json::to_value(&body)
            .map_err(|_| ReceiptError::Canonicalize("body does not serialize to JSON"))?;
        if jcs::to_vec(&value)? != bytes {
            return Err(ReceiptError::NotCanonical);
        }
        Ok((body, value))
    }
}
