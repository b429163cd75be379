//! DPO approvals: the Ed25519 keys, the signed approval bound to one job digest, and what the
//! DPO reviews before signing.
//!
//! The job digest covers the job request and the cohort commitment, so a changed job or a
//! changed cohort has a different digest and needs a new approval.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rapha_core::demographics::Demographics;
use rapha_core::release::{NoiseK, ReleasePrecision};
use rapha_core::{Digest, ExclusionCounts, JobId, JobRequest, ResourceBounds, ResourceLimits};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::error::{PolicyError, Result};
use crate::keys::{is_dev_key, read_secret_hex, DEV_KEY_PREFIX};

/// Domain separation of approval signatures.
const APPROVAL_CONTEXT: &[u8] = b"rapha-dpo-approval-v1\0";
/// Domain separation of job digests.
const JOB_CONTEXT: &[u8] = b"rapha-job-v1\0";

/// Which job digest an approval signs. Stored with each review (`digest_version`), so a job keeps
/// the version it was reviewed under: an approval of a v1 digest for a job in flight when the
/// node was upgraded is still honoured. New reviews use [`JobDigestVersion::CURRENT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum JobDigestVersion {
    /// `SHA-256("rapha-job-v1" 0x00 ‖ SHA-256(request as serde_json writes it) ‖ commitment)`:
    /// the digest of the first release; only Rapha's own serialisation recomputes it.
    V1,
    /// SHA-256 of the RFC 8785 (JCS) bytes of
    /// `{"cohort": "<commitment hex>", "request": <request>, "version": "rapha-job/2"}`: any
    /// JCS library recomputes it from the request and the commitment.
    V2,
}

impl JobDigestVersion {
    /// The version new reviews use.
    pub const CURRENT: Self = Self::V2;

    /// The version's number as stored (1, 2).
    pub const fn number(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The digest of `job` over `cohort_commitment` in this version.
    ///
    /// # Errors
    /// [`PolicyError::NotCanonical`] (v2 only) for a request with no RFC 8785 form (an integer
    /// past 2^53 - 1); admission refuses such a request before any review.
    pub fn digest(self, job: &JobRequest, cohort_commitment: &Digest) -> Result<Digest> {
        match self {
            Self::V1 => Ok(job_digest_v1(job, cohort_commitment)),
            Self::V2 => job_digest_v2(job, cohort_commitment),
        }
    }

    fn v1() -> Self {
        Self::V1
    }
}

impl Serialize for JobDigestVersion {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

impl<'de> Deserialize<'de> for JobDigestVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match u64::deserialize(d)? {
            1 => Ok(Self::V1),
            2 => Ok(Self::V2),
            n => Err(serde::de::Error::custom(format!(
                "job digest version {n} is newer than this node supports (versions 1 and 2)"
            ))),
        }
    }
}

/// What the DPO reviews and approves: the job and a summary of the cohort it would train on,
/// and which job digest the approval signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    pub job: JobRequest,
    pub cohort: CohortSummary,
    /// Absent in reviews written before versions: those are [`JobDigestVersion::V1`].
    #[serde(default = "JobDigestVersion::v1")]
    pub digest_version: JobDigestVersion,
    /// The resources the trainer's bundle requests and the node's bounds they were checked
    /// against. Absent from reviews recorded before they were shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceReview>,
    /// The other admitted jobs of the linkage group this job names, oldest first (their
    /// records join this job's): the DPO sees whether their queries differ from this one.
    /// Empty for a job of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linkage_jobs: Vec<LinkedJob>,
    /// What the trainer image's layers hold, as the node counted them when it admitted the
    /// job. Absent from reviews recorded before it was shown (and outside the job digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageReview>,
    /// What the bundle's declared tensors can carry, as the node counted them at admission.
    /// Absent from reviews recorded before it was shown (and outside the job digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseReview>,
}

/// What the DPO sees of a job's release channel: the parameters its outputs declare, the bits
/// they take at their declared dtypes, and the hospital's cap on them (`[policy.outputs]
/// max_release_bits`), if any; with a release precision or node noise (`[policy.outputs]
/// release_precision`, `release_noise_k`), those settings and the bits the released tensors
/// can then carry, which the cap applies to. The node applies the settings recorded here when
/// the job runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseReview {
    pub parameters: u64,
    pub bits: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bits: Option<u64>,
    /// The job's leakage bound, term by term (issue 19); absent from reviews recorded before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<rapha_core::release::LeakageBound>,
    /// The publisher's bits on this node with this job's bound charged, and its cap then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherBits>,
    /// Absent: declared (and from reviews recorded before the setting existed).
    #[serde(default, skip_serializing_if = "ReleasePrecision::is_declared")]
    pub precision: ReleasePrecision,
    /// Absent: no noise.
    #[serde(default, skip_serializing_if = "NoiseK::is_none")]
    pub noise_k: NoiseK,
    /// The bits the released tensors can carry at `precision` with `noise_k`
    /// ([`rapha_core::release::effective_release_bits`]); absent when they are `bits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_bits: Option<u64>,
}

/// A publisher's running total of leakage bounds on the node, and the cap it is held to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherBits {
    /// Σ the bounds of its admitted jobs, this one's included.
    pub bits: u64,
    /// `[policy.outputs] max_publisher_bits` when the job was admitted.
    pub cap: u64,
}

impl ReleaseReview {
    /// The bits the released tensors can carry: `released_bits`, else `bits`.
    pub fn effective_bits(&self) -> u64 {
        self.released_bits.unwrap_or(self.bits)
    }

    /// What the node does to the released float tensors of this job.
    pub fn transform(&self) -> rapha_core::release::ReleaseTransform {
        rapha_core::release::ReleaseTransform {
            precision: self.precision,
            noise_k: self.noise_k,
        }
    }
}

/// What the DPO sees of the trainer's image: how much it holds and what the node's unpacker
/// changes in it (setuid/setgid bits cleared). Counts only: no name a publisher chose.
// A deliberate duplicate (issue 23) of most of rapha-bundle's `unpack::ImageContents`
// (crates/rapha-bundle/src/unpack.rs), which the node maps into this at admission. This one
// is the stored record of what a DPO reviewed (its fields and names are the approval store's
// format, unknown fields refused), that one the unpacker's own count; the policy crate does
// not link the bundle unpacker, so one struct cannot serve both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageReview {
    pub layers: u64,
    /// Tar entries over all layers.
    pub entries: u64,
    /// Uncompressed layer bytes.
    pub bytes: u64,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Symlinks with an absolute target (kept; they resolve inside the container).
    pub absolute_symlinks: u64,
    pub hard_links: u64,
    pub whiteouts: u64,
    /// Files and directories whose setuid or setgid bit the node clears when it unpacks the
    /// image (the trainer runs with no capabilities and `noNewPrivileges` anyway).
    pub setuid_setgid_cleared: u64,
}

/// Another admitted job of the same linkage group, as the DPO reviews it beside this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkedJob {
    pub job_id: JobId,
    /// Its state on the node when this job was reviewed (`awaiting-approval`, `settled`, …).
    pub state: String,
    /// [`rapha_core::CohortQuery::digest`] of its query.
    pub query_digest: Digest,
    /// Whether it asked exactly this job's query.
    pub same_query: bool,
}

/// What the DPO sees of a trainer's resources: the request and the node's bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceReview {
    pub requested: ResourceLimits,
    pub bounds: ResourceBounds,
}

impl ReviewRequest {
    /// A review of `job` over `cohort` under the current job digest version.
    pub fn new(job: JobRequest, cohort: CohortSummary) -> Self {
        Self {
            job,
            cohort,
            digest_version: JobDigestVersion::CURRENT,
            resources: None,
            linkage_jobs: Vec::new(),
            image: None,
            release: None,
        }
    }

    /// The digest an approval is bound to, in the review's version.
    ///
    /// # Errors
    /// As [`JobDigestVersion::digest`].
    pub fn job_digest(&self) -> Result<Digest> {
        self.digest_version
            .digest(&self.job, &self.cohort.commitment)
    }
}

/// The job digest new reviews use ([`JobDigestVersion::CURRENT`]).
///
/// # Errors
/// As [`JobDigestVersion::digest`].
pub fn job_digest(job: &JobRequest, cohort_commitment: &Digest) -> Result<Digest> {
    JobDigestVersion::CURRENT.digest(job, cohort_commitment)
}

/// Job digest v1: `SHA-256("rapha-job-v1" 0x00 request-digest cohort-commitment)`.
pub fn job_digest_v1(job: &JobRequest, cohort_commitment: &Digest) -> Digest {
    let mut h = Digest::hasher();
    h.update(JOB_CONTEXT);
    h.update(job.digest().as_bytes());
    h.update(cohort_commitment.as_bytes());
    h.finish()
}

/// Job digest v2: SHA-256 of the RFC 8785 bytes of
/// `{"cohort": "<commitment hex>", "request": <request as JSON>, "version": "rapha-job/2"}`.
///
/// # Errors
/// [`PolicyError::NotCanonical`] for a request with no RFC 8785 form.
pub fn job_digest_v2(job: &JobRequest, cohort_commitment: &Digest) -> Result<Digest> {
    let doc = serde_json::json!({
        "cohort": cohort_commitment.to_hex(),
        "request": job,
        "version": JOB_DIGEST_V2,
    });
    rapha_core::jcs::digest_of(&doc).map_err(|e| PolicyError::NotCanonical {
        job: job.job_id,
        reason: e.to_string(),
    })
}

/// The `version` member of the v2 job digest document.
pub const JOB_DIGEST_V2: &str = "rapha-job/2";

/// Which job digest a job uses, as the node records it in its job store when it submits the
/// review (the `review` artifact). Reads both forms: a bare digest string (what nodes wrote
/// before versions: v1) and `{"job_digest": …, "digest_version": n}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct JobDigestRef {
    pub job_digest: Digest,
    pub digest_version: JobDigestVersion,
}

impl<'de> Deserialize<'de> for JobDigestRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Tagged {
            job_digest: Digest,
            digest_version: JobDigestVersion,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Bare(Digest),
            Tagged(Tagged),
        }
        Ok(match Stored::deserialize(d)? {
            Stored::Bare(job_digest) => Self {
                job_digest,
                digest_version: JobDigestVersion::V1,
            },
            Stored::Tagged(t) => Self {
                job_digest: t.job_digest,
                digest_version: t.digest_version,
            },
        })
    }
}

/// Cohort summary shown to the DPO. Counts only; never an identifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortSummary {
    /// Merkle root of the hashed instance ids (the cohort commitment).
    pub commitment: Digest,
    pub patients: u64,
    pub train_patients: u64,
    pub validation_patients: u64,
    pub studies: u64,
    pub instances: u64,
    /// Instances per modality.
    pub modalities: BTreeMap<String, u64>,
    /// Instances excluded, by reason.
    pub exclusions: ExclusionCounts,
    /// The patients by sex and by age decade (each counted once). Absent from summaries
    /// stored before the node counted them. Shown with counts below five as "<5"; never in a
    /// receipt or anything the publisher reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demographics: Option<Demographics>,
}

/// A DPO's Ed25519 signing key. Zeroized on drop; no `Debug`/`Display` that prints it.
pub struct DpoSigningKey(SigningKey);

impl DpoSigningKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// A development key: its seed starts with [`DEV_KEY_PREFIX`], so production refuses it.
    pub fn generate_dev() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed[..]);
        seed[..DEV_KEY_PREFIX.len()].copy_from_slice(DEV_KEY_PREFIX);
        Self(SigningKey::from_bytes(&seed))
    }

    /// Wraps a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// Reads a key file: 64 hex digits of the seed and an optional newline, mode 0600 or
    /// stricter.
    ///
    /// # Errors
    /// [`PolicyError::KeyFile`] for loose permissions or a malformed file (the message never
    /// contains key bytes), [`PolicyError::KeyIo`].
    pub fn load(path: &Path) -> Result<Self> {
        let seed = read_secret_hex(path)?;
        Ok(Self::from_seed(&seed))
    }

    /// The seed, for writing the key file. Callers must not log it.
    pub fn expose_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// Whether this is a development key.
    pub fn is_dev(&self) -> bool {
        is_dev_key(&self.expose_seed()[..])
    }

    pub fn public(&self) -> DpoPublicKey {
        DpoPublicKey(self.0.verifying_key())
    }

    /// Signs an approval of `job_digest`, valid from `issued_at` until `expires_at` (Unix
    /// seconds).
    ///
    /// # Errors
    /// [`PolicyError::ExpiryBeforeIssue`] if `expires_at <= issued_at`.
    pub fn approve(&self, job_digest: Digest, issued_at: u64, expires_at: u64) -> Result<Approval> {
        if expires_at <= issued_at {
            return Err(PolicyError::ExpiryBeforeIssue { job: job_digest });
        }
        let dpo_key = self.public();
        let msg = approval_message(&job_digest, issued_at, expires_at, &dpo_key);
        let signature = hex::encode(self.0.sign(&msg).to_bytes());
        Ok(Approval {
            job_digest,
            issued_at,
            expires_at,
            dpo_key,
            signature,
        })
    }
}

/// A DPO's Ed25519 public key; serialises as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DpoPublicKey(VerifyingKey);

impl DpoPublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }
}

impl fmt::Debug for DpoPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DpoPublicKey({})", self.to_hex())
    }
}

impl fmt::Display for DpoPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for DpoPublicKey {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || PolicyError::InvalidPublicKey(s.chars().take(80).collect());
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| bad())?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| bad())
    }
}

impl Serialize for DpoPublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for DpoPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A DPO's signed approval of one job digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub job_digest: Digest,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds; the approval is invalid from this moment on.
    pub expires_at: u64,
    pub dpo_key: DpoPublicKey,
    /// Ed25519 signature (128 hex digits) over
    /// `"rapha-dpo-approval-v1" 0x00 job_digest issued_at(u64 BE) expires_at(u64 BE) dpo_key`.
    pub signature: String,
}

impl Approval {
    /// Checks the signature against the key the approval names (strict Ed25519: no malleable
    /// signatures, no small-order keys). Whether that key is a trusted DPO key is the caller's
    /// question (see [`Approval::signed_by_one_of`]).
    ///
    /// # Errors
    /// [`PolicyError::BadSignature`].
    pub fn verify(&self) -> Result<()> {
        let bad = || PolicyError::BadSignature {
            job: self.job_digest,
        };
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig).map_err(|_| bad())?;
        let msg = approval_message(
            &self.job_digest,
            self.issued_at,
            self.expires_at,
            &self.dpo_key,
        );
        self.dpo_key
            .0
            .verify_strict(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| bad())?;
        if self.expires_at <= self.issued_at {
            return Err(PolicyError::ExpiryBeforeIssue {
                job: self.job_digest,
            });
        }
        Ok(())
    }

    /// Whether the signature verifies and the signer is one of `keys`.
    pub fn signed_by_one_of(&self, keys: &[DpoPublicKey]) -> bool {
        keys.contains(&self.dpo_key) && self.verify().is_ok()
    }
}

fn approval_message(job: &Digest, issued_at: u64, expires_at: u64, key: &DpoPublicKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(APPROVAL_CONTEXT.len() + 32 + 16 + 32);
    m.extend_from_slice(APPROVAL_CONTEXT);
    m.extend_from_slice(job.as_bytes());
    m.extend_from_slice(&issued_at.to_be_bytes());
    m.extend_from_slice(&expires_at.to_be_bytes());
    m.extend_from_slice(key.0.as_bytes());
    m
}

/// An approval as stored, with its revocation and start state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRecord {
    pub approval: Approval,
    /// Unix seconds at which the DPO revoked it.
    pub revoked_at: Option<u64>,
    /// Unix seconds at which the job started (from then on it cannot be revoked).
    pub started_at: Option<u64>,
}
