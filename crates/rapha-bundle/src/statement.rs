//! The in-toto Statement v1 a bundle signs, and its Rapha trainer predicate.
//!
//! ```text
//! { "_type": "https://in-toto.io/Statement/v1",
//!   "subject": [ { "name": "<trainer>", "digest": { "sha256": "<image manifest digest>" } } ],
//!   "predicateType": "https://rapha.dev/trainer/v1",
//!   "predicate": { publisher, trainer {name, version}, entrypoint, env, outputs,
//!                  resources, requested_fields, audit? } }
//! ```
//!
//! `audit` (optional, issue 19) pins the architecture the node's privacy audit loads the
//! released weights into: an ONNX graph at a path in the signed image, with its SHA-256 (the
//! node reads the graph from the image it verified and refuses other bytes), the input the
//! graph takes and what it outputs ([`AuditDecl`]).

use std::collections::BTreeMap;

use rapha_core::{Digest, OutputDecl, ResourceLimits};
use serde::{Deserialize, Serialize};

use crate::error::{BundleError, Result};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Rapha's predicate type.
pub const PREDICATE_TYPE: &str = "https://rapha.dev/trainer/v1";

/// Trainer name and version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerId {
    pub name: String,
    pub version: String,
}

/// What the publisher states about the trainer, signed together with the image digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerPredicate {
    /// Publisher name; must equal the name the hospital's trust store gives the signing key.
    pub publisher: String,
    pub trainer: TrainerId,
    /// argv of the trainer process; equals the image config's Entrypoint + Cmd.
    pub entrypoint: Vec<String>,
    /// Environment `K=V`; equals the image config's Env.
    #[serde(default)]
    pub env: Vec<String>,
    /// Files the trainer may write; anything else is refused by the output guard. A
    /// safetensors output declares its tensors (`[[outputs.tensors]]`): only those leave.
    pub outputs: Vec<OutputDecl>,
    pub resources: ResourceLimits,
    /// Metadata fields asked for beyond the default allow-list.
    #[serde(default)]
    pub requested_fields: Vec<String>,
    /// The graph the node's privacy audit scores the release with; absent: the model cannot
    /// be audited (its receipts say so). Left out of statements that have none, so theirs
    /// are the bytes signed before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditDecl>,
}

/// The largest pinned graph the node reads (the architecture only; the weights are the
/// released safetensors file).
pub const MAX_AUDIT_GRAPH_BYTES: u64 = 64 << 20;
/// The largest image side an audit input may ask for.
pub const MAX_AUDIT_SIDE: u32 = 1024;

/// `[audit]` of `trainer.toml`: what the node's audit runner needs to score the released
/// model (issue 19).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditDecl {
    /// Absolute path of the ONNX graph in the trainer's image (read by the node from the
    /// image it verified, never from what the trainer wrote).
    pub graph: String,
    /// SHA-256 of the graph's bytes: the node refuses any other.
    pub graph_sha256: Digest,
    pub input: AuditInput,
    pub output: AuditOutput,
}

/// What the graph takes: `grey-v1` is one `[1, 1, side, side]` float32 image, each record's
/// first frame resized to `side` × `side` and scaled to [0, 1].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditInput {
    pub kind: AuditInputKind,
    /// 8 to [`MAX_AUDIT_SIDE`].
    pub side: u32,
}

/// The input encodings a runner knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditInputKind {
    #[serde(rename = "grey-v1")]
    GreyV1,
}

/// What the graph's one output is: the positive class's logit or its probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditOutput {
    Logit,
    Probability,
}

impl AuditDecl {
    /// The graph path is absolute, plain (no `.` or `..` component, no NUL, at most 256 bytes)
    /// and the side bounded.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn check(&self) -> std::result::Result<(), String> {
        let g = &self.graph;
        let plain = g.starts_with('/')
            && g.len() <= 256
            && !g.contains('\0')
            && g[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !plain {
            return Err(format!(
                "audit.graph {:?} must be an absolute path in the image of at most 256 bytes, \
                 without empty, '.' or '..' components",
                g.chars().take(80).collect::<String>()
            ));
        }
        if !(8..=MAX_AUDIT_SIDE).contains(&self.input.side) {
            return Err(format!(
                "audit.input.side {} is outside 8 to {MAX_AUDIT_SIDE}",
                self.input.side
            ));
        }
        Ok(())
    }
}

/// What each name a predicate gives may be made of. The DPO's tools print them (the trainer
/// name stands in the approval prompt), so they are short plain ASCII: no control character,
/// escape sequence or look-alike can redraw the DPO's terminal or pass for another name.
const TRAINER_NAME: &str = "1-64 characters from a-z, 0-9, '.', '_' and '-', not starting with '.'";
const VERSION: &str = "1-64 characters from A-Z, a-z, 0-9, '.', '_', '+' and '-'";
const OUTPUT_NAME: &str =
    "a file name of 1-128 characters from A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'";
const FIELD: &str = "a DICOM keyword: 1-64 characters from A-Z, a-z and 0-9";

fn check_text(
    field: &'static str,
    value: &str,
    allowed: &'static str,
    max: usize,
    byte_ok: impl Fn(u8) -> bool,
) -> Result<()> {
    let ok =
        (1..=max).contains(&value.len()) && !value.starts_with('.') && value.bytes().all(byte_ok);
    if ok {
        Ok(())
    } else {
        Err(BundleError::UnsafeName {
            field,
            value: value.to_owned(),
            allowed,
        })
    }
}

/// Checks every name a predicate gives against its alphabet.
fn check_names<'a>(
    name: &str,
    version: &str,
    outputs: impl IntoIterator<Item = &'a OutputDecl>,
    fields: &[String],
) -> Result<()> {
    check_text(
        "trainer name",
        name,
        TRAINER_NAME,
        64,
        |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'),
    )?;
    check_text("trainer version", version, VERSION, 64, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-')
    })?;
    for o in outputs {
        check_text("output name", &o.name, OUTPUT_NAME, 128, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
        })?;
    }
    for f in fields {
        check_text("requested field", f, FIELD, 64, |b| {
            b.is_ascii_alphanumeric()
        })?;
    }
    Ok(())
}

impl TrainerPredicate {
    /// Checks the predicate's names (trainer, version, outputs, requested fields) against
    /// their alphabets.
    ///
    /// # Errors
    /// [`BundleError::UnsafeName`] for the first name outside its alphabet.
    pub fn check_names(&self) -> Result<()> {
        check_names(
            &self.trainer.name,
            &self.trainer.version,
            &self.outputs,
            &self.requested_fields,
        )
    }
}

/// The `trainer.toml` a publisher writes; becomes the predicate at signing time.
///
/// `entrypoint` and `env` may be left out, then they are taken from the image config; when
/// given they must match it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerSpec {
    pub publisher: String,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub requested_fields: Vec<String>,
    #[serde(default)]
    pub resources: ResourceLimits,
    pub outputs: Vec<OutputDecl>,
    /// `[audit]`: the graph the node's privacy audit loads the released weights into.
    #[serde(default)]
    pub audit: Option<AuditDecl>,
}

impl TrainerSpec {
    /// Parses `trainer.toml`.
    ///
    /// # Errors
    /// [`BundleError::Predicate`] with the TOML error.
    pub fn from_toml(text: &str) -> Result<Self> {
        let spec: Self = toml::from_str(text).map_err(|e| BundleError::Predicate(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(BundleError::Predicate(m));
        if self.name.is_empty() || self.version.is_empty() || self.publisher.is_empty() {
            return bad("publisher, name and version must not be empty".into());
        }
        if self.outputs.is_empty() {
            return bad("a trainer must declare at least one output".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for o in &self.outputs {
            let plain = !o.name.is_empty()
                && o.name != "."
                && o.name != ".."
                && !o.name.contains(['/', '\\', '\0']);
            if !plain {
                return bad(format!(
                    "output name {:?} must be a plain file name",
                    o.name
                ));
            }
            if o.max_bytes == 0 {
                return bad(format!("output {:?} has a zero size cap", o.name));
            }
            if !seen.insert(&o.name) {
                return bad(format!("output {:?} is declared twice", o.name));
            }
        }
        check_names(
            &self.name,
            &self.version,
            &self.outputs,
            &self.requested_fields,
        )?;
        check_tensors(&self.outputs).map_err(BundleError::Predicate)?;
        if let Some(a) = &self.audit {
            a.check().map_err(BundleError::Predicate)?;
        }
        Ok(())
    }
}

/// Checks each output's declared tensors ([`rapha_core::release::check_tensors`]): names by
/// the output names' alphabet, dims at least 1, the declared data within the output's cap.
fn check_tensors(outputs: &[OutputDecl]) -> std::result::Result<(), String> {
    rapha_core::release::declared_bits(outputs).map(|_| ())
}

/// An in-toto subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

/// An in-toto Statement v1 with a trainer predicate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

impl Statement {
    /// A statement over `manifest` with `predicate`.
    pub fn new(manifest: Digest, predicate: &TrainerPredicate) -> Result<Self> {
        let predicate = serde_json::to_value(predicate)
            .map_err(|e| BundleError::Predicate(format!("cannot serialise: {e}")))?;
        let name = predicate
            .pointer("/trainer/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            type_: STATEMENT_TYPE.into(),
            subject: vec![Subject {
                name,
                digest: BTreeMap::from([("sha256".to_owned(), manifest.to_hex())]),
            }],
            predicate_type: PREDICATE_TYPE.into(),
            predicate,
        })
    }

    /// Parses and checks a statement: its type, exactly one subject with a sha256 digest, the
    /// predicate type and the predicate's schema. Returns the subject digest and predicate.
    ///
    /// # Errors
    /// [`BundleError::StatementMalformed`] or [`BundleError::UnsupportedPredicateType`].
    pub fn parse_trainer(bytes: &[u8]) -> Result<(Digest, TrainerPredicate)> {
        let bad = |m: String| BundleError::StatementMalformed(m);
        let st: Self = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if st.type_ != STATEMENT_TYPE {
            return Err(bad(format!(
                "_type is {:?}, expected {STATEMENT_TYPE}",
                st.type_
            )));
        }
        if st.predicate_type != PREDICATE_TYPE {
            return Err(BundleError::UnsupportedPredicateType(st.predicate_type));
        }
        let [subject] = st.subject.as_slice() else {
            return Err(bad(format!(
                "{} subjects; exactly one is signed",
                st.subject.len()
            )));
        };
        let hex = subject
            .digest
            .get("sha256")
            .ok_or_else(|| bad("the subject has no sha256 digest".into()))?;
        if hex.len() != 64 || hex.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(format!(
                "subject digest {hex:?} is not 64 lowercase hex digits"
            )));
        }
        let digest: Digest = hex
            .parse()
            .map_err(|_| bad(format!("bad digest {hex:?}")))?;
        let predicate: TrainerPredicate =
            serde_json::from_value(st.predicate).map_err(|e| bad(format!("predicate: {e}")))?;
        predicate.check_names()?;
        check_tensors(&predicate.outputs).map_err(bad)?;
        if let Some(a) = &predicate.audit {
            a.check().map_err(bad)?;
        }
        if subject.name != predicate.trainer.name {
            return Err(bad(format!(
                "subject name {:?} differs from trainer name {:?}",
                subject.name, predicate.trainer.name
            )));
        }
        Ok((digest, predicate))
    }
}
