//! The job request an AI company submits. Fields may grow; unknown fields are refused so a
//! request cannot smuggle in something the policy never saw.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::{Digest, JobId, PseudonymScope, Usdc};

/// What the trainer asks to be trained on. The scope guard in `rapha-dicom` turns this into a
/// `ScopedQuery` or refuses it (**I2**).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CohortQuery {
    /// Explicit StudyInstanceUIDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub study_uids: Vec<String>,
    /// Explicit AccessionNumbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accession_numbers: Vec<String>,
    /// StudyDate range `YYYYMMDD-YYYYMMDD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_date: Option<String>,
    /// ModalitiesInStudy, e.g. `["CT", "MR"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modalities: Vec<String>,
    /// Upper bound on studies returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl CohortQuery {
    /// Digest of the query's JSON serialisation: how the audit trail and the admission gate's
    /// history name a query without its parameters.
    pub fn digest(&self) -> Digest {
        // Serialising strings, numbers and vectors into a Vec cannot fail.
        Digest::of(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The kind of an output file a trainer declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OutputKind {
    Safetensors,
    Onnx,
    PytorchZip,
    MetricsJson,
}

/// One declared output: file name, kind, size cap and, for a released model file, its
/// tensors ([`crate::release`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputDecl {
    pub name: String,
    pub kind: OutputKind,
    pub max_bytes: u64,
    /// The tensors of a safetensors output: the only ones the node releases, re-written by it.
    /// Left out of the signed statement when empty, so bundles signed before it existed keep
    /// their digest (the node refuses to release such an output at admission).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<crate::release::TensorDecl>,
}

/// Resources the trainer asks for, signed in its bundle. The node admits a job only when each
/// lies within its [`ResourceBounds`], so no value here is trusted before that check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    pub memory_mb: u64,
    pub cpus: u32,
    pub pids: u32,
    pub wall_seconds: u64,
    /// Size of the trainer's `/tmp` (a RAM tmpfs) in MiB. Absent from bundles signed before it
    /// was a declared resource: those get [`DEFAULT_TMP_MB`], the size every trainer had then.
    #[serde(default = "default_tmp_mb")]
    pub tmp_mb: u64,
    /// GPUs the trainer needs (0: none, the default). Which devices it gets is the node's
    /// choice (`[trainer] gpus`), never the bundle's; a job declaring 0 never gets one. Left out
    /// of the signed statement when 0, so bundles signed before it existed keep their digest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpus: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `/tmp` of a bundle that declares none, in MiB.
pub const DEFAULT_TMP_MB: u64 = 64;

fn default_tmp_mb() -> u64 {
    DEFAULT_TMP_MB
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            memory_mb: 2048,
            cpus: 2,
            pids: 64,
            wall_seconds: 1800,
            tmp_mb: DEFAULT_TMP_MB,
            gpus: 0,
        }
    }
}

/// An inclusive range `min..=max` one resource request must fall in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    pub min: u64,
    pub max: u64,
}

impl Bound {
    /// `min..=max`.
    pub const fn new(min: u64, max: u64) -> Self {
        Self { min, max }
    }

    /// Whether `v` lies within the bound.
    pub const fn contains(&self, v: u64) -> bool {
        self.min <= v && v <= self.max
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// The node's bounds on every resource a bundle may request (`[trainer.limits]` of its
/// configuration). A request outside them is refused before anything else of the job runs.
///
/// Each bound is checked on load against [`ResourceBounds::FLOOR`] and
/// [`ResourceBounds::CEILING`]: no bound admits 0 (which runc and tmpfs read as "no limit"), and
/// no admitted value overflows the arithmetic the node and the runtime do on it (MiB to bytes,
/// CPUs to a CFS quota, seconds to an `Instant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceBounds {
    #[serde(default = "ResourceBounds::default_memory_mb")]
    pub memory_mb: Bound,
    #[serde(default = "ResourceBounds::default_cpus")]
    pub cpus: Bound,
    #[serde(default = "ResourceBounds::default_pids")]
    pub pids: Bound,
    #[serde(default = "ResourceBounds::default_wall_seconds")]
    pub wall_seconds: Bound,
    #[serde(default = "ResourceBounds::default_tmp_mb")]
    pub tmp_mb: Bound,
    /// GPUs a job may declare. `None` (the default, and what a node without `[trainer] gpus`
    /// must have) admits only jobs that declare none: `0..=0`. Left out when `None`, so what
    /// reviews and policy inputs recorded before it say is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Bound>,
}

impl Default for ResourceBounds {
    fn default() -> Self {
        Self {
            memory_mb: Self::default_memory_mb(),
            cpus: Self::default_cpus(),
            pids: Self::default_pids(),
            wall_seconds: Self::default_wall_seconds(),
            tmp_mb: Self::default_tmp_mb(),
            gpus: None,
        }
    }
}

/// One resource request outside the node's bound for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    /// The resource's key (`memory_mb`, `cpus`, `pids`, `wall_seconds`, `tmp_mb`, `gpus`).
    pub resource: &'static str,
    pub requested: u64,
    pub bound: Bound,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} = {} is outside this node's range {}",
            self.resource, self.requested, self.bound
        )
    }
}

impl ResourceBounds {
    /// The lowest `min` any bound may have: 1 (0 means "no limit" to runc's memory and pids
    /// controllers and to tmpfs).
    pub const FLOOR: u64 = 1;

    /// The highest `max` each bound may have, in the order of [`ResourceBounds::named`]: 1 TiB
    /// of memory, 1024 CPUs, the kernel's PID_MAX_LIMIT, 30 days, 1 TiB of `/tmp`.
    pub const CEILING: [u64; 5] = [1 << 20, 1024, 1 << 22, 30 * 86_400, 1 << 20];

    /// The most GPUs any node admits for one job.
    pub const MAX_GPUS: u64 = 64;

    /// The GPU bound in force: [`ResourceBounds::gpus`], or `0..=0` (no GPU job) when unset.
    pub fn gpu_bound(&self) -> Bound {
        self.gpus.unwrap_or(Bound::new(0, 0))
    }

    fn default_memory_mb() -> Bound {
        Bound::new(64, 16_384)
    }
    fn default_cpus() -> Bound {
        Bound::new(1, 8)
    }
    fn default_pids() -> Bound {
        Bound::new(8, 1024)
    }
    fn default_wall_seconds() -> Bound {
        Bound::new(10, 86_400)
    }
    fn default_tmp_mb() -> Bound {
        Bound::new(1, 1024)
    }

    /// Each bound with its key.
    pub fn named(&self) -> [(&'static str, Bound); 5] {
        [
            ("memory_mb", self.memory_mb),
            ("cpus", self.cpus),
            ("pids", self.pids),
            ("wall_seconds", self.wall_seconds),
            ("tmp_mb", self.tmp_mb),
        ]
    }

    /// Checks the bounds themselves: `FLOOR <= min <= max <= CEILING` for each.
    ///
    /// # Errors
    /// `(key, message)` for the first bound that is not, the key as `memory_mb.max`.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        for ((name, b), ceiling) in self.named().into_iter().zip(Self::CEILING) {
            if b.min < Self::FLOOR {
                return Err((
                    format!("{name}.min"),
                    format!(
                        "{} would let a trainer ask for {name} = 0, which means \"no limit\"; use at least {}",
                        b.min,
                        Self::FLOOR
                    ),
                ));
            }
            if b.max > ceiling {
                return Err((
                    format!("{name}.max"),
                    format!("{} is above the most any node admits ({ceiling})", b.max),
                ));
            }
            if b.min > b.max {
                return Err((
                    format!("{name}.min"),
                    format!(
                        "{} is above {name}.max ({}): no request could pass",
                        b.min, b.max
                    ),
                ));
            }
        }
        // 0 GPUs is no GPU (not "no limit"): the floor does not apply.
        let g = self.gpu_bound();
        if g.max > Self::MAX_GPUS {
            return Err((
                "gpus.max".into(),
                format!(
                    "{} is above the most any node admits ({})",
                    g.max,
                    Self::MAX_GPUS
                ),
            ));
        }
        if g.min > g.max {
            return Err((
                "gpus.min".into(),
                format!(
                    "{} is above gpus.max ({}): no request could pass",
                    g.min, g.max
                ),
            ));
        }
        Ok(())
    }

    /// Every request of `limits` outside its bound (empty when the job may run).
    pub fn check(&self, limits: &ResourceLimits) -> Vec<OutOfRange> {
        let requested = [
            limits.memory_mb,
            u64::from(limits.cpus),
            u64::from(limits.pids),
            limits.wall_seconds,
            limits.tmp_mb,
        ];
        self.named()
            .into_iter()
            .zip(requested)
            .chain([(("gpus", self.gpu_bound()), u64::from(limits.gpus))])
            .filter(|((_, b), v)| !b.contains(*v))
            .map(|((resource, bound), requested)| OutOfRange {
                resource,
                requested,
                bound,
            })
            .collect()
    }
}

/// A pseudonym linkage group a request may name: jobs of one publisher naming the same group
/// get the same pseudonyms (the rounds of one federated run), where jobs otherwise get their
/// own. 1 to 64 characters of `A-Z a-z 0-9 . _ -`, so it cannot be confused with anything
/// else in the HMAC's domain separation ([`crate::PseudonymScope`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LinkageGroup(String);

impl LinkageGroup {
    /// Longest group name.
    pub const MAX_LEN: usize = 64;

    /// Checks and wraps a group name.
    ///
    /// # Errors
    /// [`CoreError::InvalidLinkageGroup`] for anything but 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub fn new(s: &str) -> Result<Self> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(CoreError::InvalidLinkageGroup(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LinkageGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LinkageGroup {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A job as submitted by the AI company.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub job_id: JobId,
    /// Publisher name as known to the hospital's trust store.
    pub publisher: String,
    /// Trainer name as signed in the bundle's predicate.
    pub trainer: String,
    /// Digest of the bundle's OCI image manifest.
    pub bundle_manifest: Digest,
    pub query: CohortQuery,
    /// Metadata fields the trainer asks for beyond the default allow-list.
    #[serde(default)]
    pub requested_fields: Vec<String>,
    /// Fraction of patients held out for validation, in percent.
    pub validation_percent: u8,
    pub fee: Usdc,
    pub chain_id: u64,
    /// Depositor address (hex), refunded for a refused or failed job.
    pub depositor: String,
    /// A pseudonym linkage group, which the hospital's policy must allow for this publisher.
    /// Absent (the default, and left out of the serialisation, so requests without it keep
    /// their digest): the job's pseudonyms are its own and join no other job's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkage: Option<LinkageGroup>,
}

impl JobRequest {
    /// Digest of the request's JSON serialisation. Field order is fixed by the struct, so the
    /// same request always gives the same digest.
    pub fn digest(&self) -> Digest {
        // Serialising a struct of strings, numbers and vectors into a Vec cannot fail.
        Digest::of(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// The scope of this job's pseudonyms: its linkage group under its publisher when it names
    /// one, else the job itself.
    ///
    /// # Errors
    /// [`CoreError::InvalidPublisherName`] when a linkage group is named by a publisher whose
    /// name could not be told apart inside the scope (the trust store admits no such name).
    pub fn pseudonym_scope(&self) -> Result<PseudonymScope> {
        match &self.linkage {
            None => Ok(PseudonymScope::Job(self.job_id)),
            Some(group) => PseudonymScope::linkage(&self.publisher, group.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> JobRequest {
        JobRequest {
            job_id: JobId::from_bytes([0x11; 16]),
            publisher: "acme-ai".into(),
            trainer: "chest-xray-classifier".into(),
            bundle_manifest: Digest::of(b"manifest"),
            query: CohortQuery {
                accession_numbers: vec!["A1".into(), "A2".into()],
                limit: Some(2),
                ..CohortQuery::default()
            },
            requested_fields: vec![],
            validation_percent: 20,
            fee: Usdc::from_base_units(120_000_000),
            chain_id: 137,
            depositor: "0x0000000000000000000000000000000000000001".into(),
            linkage: None,
        }
    }

    /// The serialisation and digest of this request as the code before `linkage` existed
    /// produced them (commit b042420).
    const V1_JSON: &str = r#"{"job_id":"11111111111111111111111111111111","publisher":"acme-ai","trainer":"chest-xray-classifier","bundle_manifest":"05b3abf2579a5eb66403cd78be557fd860633a1fe2103c7642030defe32c657f","query":{"accession_numbers":["A1","A2"],"limit":2},"requested_fields":[],"validation_percent":20,"fee":120000000,"chain_id":137,"depositor":"0x0000000000000000000000000000000000000001"}"#;
    const V1_DIGEST: &str = "51ca4ef1086e3685ad453231ee2ebe2e1eacebe99575a608815025774671127e";

    #[test]
    fn a_request_without_linkage_serialises_and_digests_as_before() {
        let r = request();
        assert_eq!(serde_json::to_string(&r).unwrap(), V1_JSON);
        assert_eq!(r.digest().to_hex(), V1_DIGEST);
        let parsed: JobRequest = serde_json::from_str(V1_JSON).unwrap();
        assert_eq!(parsed, r);
        assert_eq!(r.pseudonym_scope().unwrap(), PseudonymScope::Job(r.job_id));
    }

    #[test]
    fn a_linkage_group_changes_the_digest_and_the_scope() {
        let mut r = request();
        r.linkage = Some(LinkageGroup::new("fed-run-7").unwrap());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.ends_with(r#","linkage":"fed-run-7"}"#), "{json}");
        assert_ne!(r.digest().to_hex(), V1_DIGEST);
        assert_eq!(serde_json::from_str::<JobRequest>(&json).unwrap(), r);
        assert_eq!(
            r.pseudonym_scope().unwrap().label(),
            "linkage/acme-ai/fed-run-7"
        );
    }

    #[test]
    fn linkage_groups_that_could_blur_the_domain_are_refused_on_parse() {
        for bad in ["", "a/b", "a\0b", "a b", "ü", &"x".repeat(65)] {
            let mut v: serde_json::Value = serde_json::from_str(V1_JSON).unwrap();
            v["linkage"] = serde_json::Value::String(bad.to_owned());
            let err = serde_json::from_value::<JobRequest>(v).unwrap_err();
            assert!(err.to_string().contains("linkage group"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn bounds_refuse_what_runc_reads_as_unlimited_and_what_overflows() {
        let b = ResourceBounds::default();
        b.validate().unwrap();
        assert!(b.check(&ResourceLimits::default()).is_empty());
        let hostile = ResourceLimits {
            memory_mb: 0,
            cpus: 0,
            pids: 0,
            wall_seconds: u64::MAX - 1,
            tmp_mb: u64::MAX,
            gpus: 1,
        };
        let out: Vec<String> = b.check(&hostile).iter().map(ToString::to_string).collect();
        assert_eq!(
            out,
            [
                "memory_mb = 0 is outside this node's range 64..=16384",
                "cpus = 0 is outside this node's range 1..=8",
                "pids = 0 is outside this node's range 8..=1024",
                "wall_seconds = 18446744073709551614 is outside this node's range 10..=86400",
                "tmp_mb = 18446744073709551615 is outside this node's range 1..=1024",
                "gpus = 1 is outside this node's range 0..=0",
            ]
        );
        let mut zero = b.clone();
        zero.pids.min = 0;
        assert_eq!(zero.validate().unwrap_err().0, "pids.min");
        let mut huge = b.clone();
        huge.wall_seconds.max = u64::MAX;
        assert_eq!(huge.validate().unwrap_err().0, "wall_seconds.max");
        let mut empty = b;
        empty.cpus = Bound::new(4, 2);
        assert_eq!(empty.validate().unwrap_err().0, "cpus.min");
    }

    #[test]
    fn a_bundle_signed_before_tmp_mb_existed_still_parses() {
        let r: ResourceLimits =
            serde_json::from_str(r#"{"memory_mb":256,"cpus":1,"pids":32,"wall_seconds":120}"#)
                .unwrap();
        assert_eq!(r.tmp_mb, DEFAULT_TMP_MB);
        assert_eq!(r.gpus, 0);
    }

    #[test]
    fn a_request_without_gpus_serialises_as_before_and_gpu_bounds_are_checked() {
        let r = ResourceLimits::default();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"memory_mb":2048,"cpus":2,"pids":64,"wall_seconds":1800,"tmp_mb":64}"#
        );
        let gpu = ResourceLimits { gpus: 2, ..r };
        assert!(serde_json::to_string(&gpu)
            .unwrap()
            .ends_with(r#","gpus":2}"#));
        let b = ResourceBounds::default();
        assert!(!serde_json::to_string(&b).unwrap().contains("gpus"));
        let mut one = b.clone();
        one.gpus = Some(Bound::new(0, 1));
        one.validate().unwrap();
        assert_eq!(
            one.check(&gpu)[0].to_string(),
            "gpus = 2 is outside this node's range 0..=1"
        );
        assert!(one
            .check(&ResourceLimits {
                gpus: 1,
                ..gpu.clone()
            })
            .is_empty());
        let mut many = b;
        many.gpus = Some(Bound::new(0, 65));
        assert_eq!(many.validate().unwrap_err().0, "gpus.max");
    }
}
