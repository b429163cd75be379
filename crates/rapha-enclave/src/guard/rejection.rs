//! What a refusal says and to whom (**I4**): where a rule fired ([`Place`], built from
//! structure, never from a name the trainer chose inside an archive) and which rule
//! ([`Rejection`]). Only [`Rejection::rule`], a fixed vocabulary, reaches the publisher;
//! [`Rejection::audit_line`] is the hospital's audit trail; the `Display` text quotes the
//! trainer's names and is never persisted or logged.

use rapha_core::{Digest, OutputDecl, OutputKind};
use serde::Serialize;

use super::BudgetKind;
use crate::identifiers::IdentifierKind;

/// Where in the output set a rule fired, as the guard builds it: a file of `/out` or a
/// captured log stream, and a zip entry of it by its index in the archive. An entry's name is
/// the trainer's choice and is never part of a place, so nothing derived from a place can
/// carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Place {
    /// The file's name in `/out` (the trainer's choice unless it is a declared output), or
    /// `stdout` / `stderr`.
    pub file: String,
    /// The zip entry, by its index in the archive.
    pub entry: Option<usize>,
    /// The finding is in the entry's name rather than its bytes.
    pub in_name: bool,
}

impl Place {
    /// A whole file (or captured log stream).
    pub fn file(name: impl Into<String>) -> Self {
        Self {
            file: name.into(),
            entry: None,
            in_name: false,
        }
    }

    /// The bytes of entry `index` of the zip archive `file`.
    pub fn entry(file: impl Into<String>, index: usize) -> Self {
        Self {
            entry: Some(index),
            ..Self::file(file)
        }
    }

    /// The name of entry `index` of the zip archive `file`.
    pub fn entry_name(file: impl Into<String>, index: usize) -> Self {
        Self {
            in_name: true,
            ..Self::entry(file, index)
        }
    }

    /// The place as the audit trail shows it: the file as a declared output's name or a log
    /// stream's, else `sha256:<16 hex>` of the name the trainer chose; then `!"<entry N>"` and
    /// ` name` as the node built them.
    pub fn audit_name(&self, outputs: &[OutputDecl]) -> String {
        let node_made = outputs.iter().any(|d| d.name == self.file)
            || self.file == "stdout"
            || self.file == "stderr";
        let mut shown = if node_made {
            format!("{:?}", self.file)
        } else {
            format!(
                "sha256:{}",
                &Digest::of(self.file.as_bytes()).to_hex()[..16]
            )
        };
        if let Some(i) = self.entry {
            shown.push_str(&format!("!\"<entry {i}>\""));
        }
        if self.in_name {
            shown.push_str(" name");
        }
        shown
    }
}

/// The hospital's in-memory wording (trainer-chosen file names included): never persisted.
impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file)?;
        if let Some(i) = self.entry {
            write!(f, "!<entry {i}>")?;
        }
        if self.in_name {
            f.write_str(" name")?;
        }
        Ok(())
    }
}

/// A whole file (or log stream) of this name.
impl PartialEq<str> for Place {
    fn eq(&self, other: &str) -> bool {
        self.entry.is_none() && !self.in_name && self.file == other
    }
}

/// One reason the output set was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "rule", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rejection {
    #[error("{name:?}: DICOM file names (.dcm/.dicom) are never released")]
    DicomName { name: String },
    #[error("an output name contains a path separator, control character or is not UTF-8")]
    BadName { shown: String },
    #[error("{name:?} is not a declared output of this bundle")]
    Undeclared { name: String },
    #[error("{name:?} is a {kind}, not a regular file")]
    NotRegular { name: String, kind: String },
    #[error("{name:?} has {links} hard links; outputs must be single regular files")]
    HardLink { name: String, links: u64 },
    #[error("{name:?} is {size} bytes, over its declared cap of {cap}")]
    TooLarge { name: String, size: u64, cap: u64 },
    #[error("outputs total {size} bytes, over the bundle's total cap of {cap}")]
    TotalTooLarge { size: u64, cap: u64 },
    #[error("more than {max} entries in /out")]
    TooManyEntries { max: usize },
    #[error("{name} contains a DICOM object ({how})")]
    DicomContent { name: Place, how: String },
    #[error("{name:?} is not a valid {kind:?} file: {detail}")]
    BadFormat {
        name: String,
        kind: OutputKind,
        detail: String,
    },
    #[error("{stream} contains a raw {} of this cohort (offset {offset})", kind.label())]
    Identifier {
        stream: Place,
        kind: IdentifierKind,
        offset: usize,
    },
    #[error("{stream} contains a verbatim block of a fed record's pixels (offset {offset})")]
    PixelBlock { stream: Place, offset: usize },
    #[error("{name:?} could not be read: {detail}")]
    Unreadable { name: String, detail: String },
    #[error("{stream} exceeded its capture cap of {cap} bytes")]
    LogOverflow { stream: String, cap: usize },
    #[error("{name:?} is a {kind:?} output, which the node does not re-serialise and release")]
    NotReleasable { name: String, kind: OutputKind },
    #[error("{name:?} holds {count} tensors its declaration does not name")]
    UndeclaredTensor { name: String, count: usize },
    #[error("{name:?} lacks its declared tensor {tensor:?}")]
    MissingTensor { name: String, tensor: String },
    #[error("{name:?}: tensor {tensor:?} differs from its declared dtype or shape")]
    TensorMismatch { name: String, tensor: String },
    #[error("{name:?} holds a NaN or an infinity")]
    NonFinite {
        name: String,
        /// The declared tensor (none: a metrics value).
        tensor: Option<String>,
    },
    #[error(
        "the guard's {} budget ({limit} {}) ran out before the whole output set was checked",
        what.label(),
        what.unit()
    )]
    Budget { what: BudgetKind, limit: u64 },
}

impl Rejection {
    /// Every rule code [`Rejection::rule`] returns.
    pub const RULES: [&'static str; 22] = [
        "dicom-name",
        "bad-name",
        "undeclared-output",
        "not-regular-file",
        "hard-link",
        "output-over-cap",
        "outputs-over-total-cap",
        "too-many-entries",
        "dicom-content",
        "bad-format",
        "identifier",
        "pixel-block",
        "unreadable-output",
        "log-overflow",
        "inflate-budget",
        "scan-budget",
        "time-budget",
        "not-releasable",
        "undeclared-tensor",
        "missing-tensor",
        "tensor-mismatch",
        "non-finite",
    ];

    /// The rule that refused the output, from a fixed vocabulary ([`Rejection::RULES`]):
    /// what may be recorded where the trainer's own strings (file, entry and tensor names,
    /// offsets, which identifier) must not go. The `Display` text has those details and is
    /// for the hospital's audit trail only.
    pub const fn rule(&self) -> &'static str {
        match self {
            Self::DicomName { .. } => "dicom-name",
            Self::BadName { .. } => "bad-name",
            Self::Undeclared { .. } => "undeclared-output",
            Self::NotRegular { .. } => "not-regular-file",
            Self::HardLink { .. } => "hard-link",
            Self::TooLarge { .. } => "output-over-cap",
            Self::TotalTooLarge { .. } => "outputs-over-total-cap",
            Self::TooManyEntries { .. } => "too-many-entries",
            Self::DicomContent { .. } => "dicom-content",
            Self::BadFormat { .. } => "bad-format",
            Self::Identifier { .. } => "identifier",
            Self::PixelBlock { .. } => "pixel-block",
            Self::Unreadable { .. } => "unreadable-output",
            Self::LogOverflow { .. } => "log-overflow",
            Self::Budget {
                what: BudgetKind::Inflate,
                ..
            } => "inflate-budget",
            Self::Budget {
                what: BudgetKind::Scan,
                ..
            } => "scan-budget",
            Self::Budget {
                what: BudgetKind::Time,
                ..
            } => "time-budget",
            Self::NotReleasable { .. } => "not-releasable",
            Self::UndeclaredTensor { .. } => "undeclared-tensor",
            Self::MissingTensor { .. } => "missing-tensor",
            Self::TensorMismatch { .. } => "tensor-mismatch",
            Self::NonFinite { .. } => "non-finite",
        }
    }
}

impl Rejection {
    /// The rejection as one line for the hospital's audit trail and the DPO's view: the rule,
    /// and where it fired ([`Place::audit_name`]: a declared output's name, a captured log
    /// stream, a zip entry's index, or the SHA-256 prefix of a file name the trainer chose),
    /// never the trainer's bytes: a file or entry name can carry an identifier or pixel
    /// values, and the audit trail may be shipped to an audit repository outside the PACS
    /// network. Parser details, which can quote a file's content, are withheld.
    pub fn audit_line(&self, outputs: &[OutputDecl]) -> String {
        let named = |n: &str| Place::file(n).audit_name(outputs);
        let rule = self.rule();
        match self {
            Self::DicomName { name }
            | Self::Undeclared { name }
            | Self::NotRegular { name, .. }
            | Self::HardLink { name, .. }
            | Self::TooLarge { name, .. }
            | Self::Unreadable { name, .. } => format!("{rule}: {}", named(name)),
            Self::BadName { .. } => format!("{rule}: a name that is not clean UTF-8"),
            Self::TotalTooLarge { size, cap } => format!("{rule}: {size} bytes, cap {cap}"),
            Self::TooManyEntries { max } => format!("{rule}: more than {max}"),
            Self::DicomContent { name, how } => {
                format!("{rule}: {} ({how})", name.audit_name(outputs))
            }
            Self::BadFormat { name, kind, .. } => {
                format!("{rule}: {} is not a valid {kind:?} file", named(name))
            }
            Self::Identifier {
                stream,
                kind,
                offset,
            } => format!(
                "{rule}: a raw {} in {} at offset {offset}",
                kind.label(),
                stream.audit_name(outputs)
            ),
            Self::PixelBlock { stream, offset } => {
                format!("{rule}: {} at offset {offset}", stream.audit_name(outputs))
            }
            Self::LogOverflow { stream, cap } => {
                format!("{rule}: {} over {cap} bytes", named(stream))
            }
            Self::Budget { limit, what } => format!("{rule}: {limit} {}", what.unit()),
            Self::NotReleasable { name, kind } => format!("{rule}: {} ({kind:?})", named(name)),
            // Tensor names here are the declaration's (signed before the run), never the
            // trainer's.
            Self::UndeclaredTensor { name, count } => {
                format!("{rule}: {count} in {}", named(name))
            }
            Self::MissingTensor { name, tensor } | Self::TensorMismatch { name, tensor } => {
                format!("{rule}: {tensor:?} of {}", named(name))
            }
            Self::NonFinite { name, tensor } => match tensor {
                Some(t) => format!("{rule}: {t:?} of {}", named(name)),
                None => format!("{rule}: {}", named(name)),
            },
        }
    }
}
