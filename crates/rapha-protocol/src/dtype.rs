//! What a record's metadata says about its pixels and its side of the split, by the names the
//! wire carries.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Pixel sample type on the wire; all multi-byte values little-endian.
///
/// Deliberately exhaustive (no `#[non_exhaustive]`): a new type is a new protocol version, and
/// every reader of pixels must then handle it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    U8,
    U16,
    I16,
    U32,
    I32,
    F32,
}

/// A dtype name the protocol does not have (at most its first 16 characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype {0:?}")]
pub struct UnknownDtype(pub String);

impl Dtype {
    /// Every dtype of the protocol.
    pub const ALL: [Dtype; 6] = [
        Dtype::U8,
        Dtype::U16,
        Dtype::I16,
        Dtype::U32,
        Dtype::I32,
        Dtype::F32,
    ];

    /// The protocol's name (as serialized).
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "u8",
            Dtype::U16 => "u16",
            Dtype::I16 => "i16",
            Dtype::U32 => "u32",
            Dtype::I32 => "i32",
            Dtype::F32 => "f32",
        }
    }

    /// Bytes per sample.
    pub const fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
        }
    }

    /// Parses the protocol's name (`u8`, `u16`, `i16`, `u32`, `i32`, `f32`).
    ///
    /// # Errors
    /// [`UnknownDtype`] with at most 16 characters of the name (it came from the other side).
    pub fn parse(s: &str) -> Result<Self, UnknownDtype> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDtype(s.chars().take(16).collect()))
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which side of the patient-level split a record is on. Only training records ever carry a
/// label in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
}

impl Split {
    /// Both sides.
    pub const ALL: [Split; 2] = [Split::Train, Split::Validation];

    /// The protocol's name (as serialized).
    pub const fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
        }
    }

    /// Parses the protocol's name; `None` for any other.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}
