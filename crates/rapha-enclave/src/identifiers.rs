//! The cohort's raw identifiers, searched for in every output and log byte stream (**I4**).
//!
//! The runtime knows the raw PatientIDs, names, accession numbers, UIDs and birth dates of the
//! records it fed; the trainer only ever saw hashes. Any of them appearing in an output means
//! something leaked around the pseudonymiser (a trainer that guessed, or was handed, PHI), so
//! the whole output set is refused. One Aho-Corasick automaton searches all of them at once,
//! ASCII case-insensitively. Birth dates are expanded to common written formats.
//! The values themselves never appear in a verdict: only their kind.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::Serialize;
use zeroize::Zeroize;

/// Identifiers shorter than this are not searched: they would match by chance in binary
/// weights (a 4-byte string matches a random byte stream about once per 4 GiB).
pub const MIN_IDENTIFIER_LEN: usize = 4;

/// What kind of identifier was found (the value is never reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum IdentifierKind {
    PatientId,
    PatientName,
    AccessionNumber,
    Uid,
    BirthDate,
    Other,
    /// Not an identifier: the start of a DICOM Part 10 file meta group (`DICM` 02 00)
    /// embedded anywhere in a stream.
    DicomMagic,
}

/// Raw identifiers of one cohort. Zeroized on drop; no `Debug`.
#[derive(Default)]
pub struct RawIdentifiers {
    entries: Vec<(IdentifierKind, String)>,
}

impl Drop for RawIdentifiers {
    fn drop(&mut self) {
        for (_, s) in &mut self.entries {
            s.zeroize();
        }
    }
}

impl RawIdentifiers {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one identifier of a kind (blank values are ignored; birth dates and person names
    /// are expanded).
    pub fn add(&mut self, kind: IdentifierKind, value: &str) {
        let v = value.trim();
        if v.is_empty() {
            return;
        }
        match kind {
            IdentifierKind::BirthDate => {
                for d in birth_date_variants(v) {
                    self.entries.push((kind, d));
                }
            }
            IdentifierKind::PatientName => {
                self.entries.push((kind, v.to_owned()));
                // DICOM PN: Family^Given^Middle^Prefix^Suffix. Also look for written forms.
                let parts: Vec<&str> = v
                    .split('^')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .collect();
                if parts.len() >= 2 {
                    self.entries.push((kind, parts.join(" ")));
                    self.entries
                        .push((kind, format!("{} {}", parts[1], parts[0])));
                    self.entries
                        .push((kind, format!("{}, {}", parts[0], parts[1])));
                }
            }
            _ => self.entries.push((kind, v.to_owned())),
        }
    }

    /// Number of search patterns.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is nothing to search for.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Builds the searcher. Identifiers shorter than [`MIN_IDENTIFIER_LEN`] are skipped and
    /// counted.
    ///
    /// # Errors
    /// Only if the automaton cannot be built (pattern set too large).
    pub fn searcher(&self) -> Result<IdentifierSearcher, aho_corasick::BuildError> {
        let mut kinds = vec![IdentifierKind::DicomMagic];
        let mut patterns: Vec<&[u8]> = vec![b"DICM\x02\x00"];
        let mut skipped = 0;
        for (kind, v) in &self.entries {
            if v.len() < MIN_IDENTIFIER_LEN {
                skipped += 1;
                continue;
            }
            kinds.push(*kind);
            patterns.push(v.as_bytes());
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(patterns)?;
        Ok(IdentifierSearcher { ac, kinds, skipped })
    }
}

/// Common written forms of a DICOM DA birth date `YYYYMMDD`.
fn birth_date_variants(v: &str) -> Vec<String> {
    let b = v.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return vec![v.to_owned()];
    }
    let (y, m, d) = (&v[0..4], &v[4..6], &v[6..8]);
    vec![
        v.to_owned(),
        format!("{y}-{m}-{d}"),
        format!("{y}/{m}/{d}"),
        format!("{y}.{m}.{d}"),
        format!("{d}/{m}/{y}"),
        format!("{m}/{d}/{y}"),
        format!("{d}.{m}.{y}"),
        format!("{d}-{m}-{y}"),
        format!("{m}-{d}-{y}"),
        format!("{d}{m}{y}"),
        format!("{m}{d}{y}"),
    ]
}

/// A compiled multi-pattern search over the cohort's identifiers.
pub struct IdentifierSearcher {
    ac: AhoCorasick,
    kinds: Vec<IdentifierKind>,
    skipped: usize,
}

impl std::fmt::Debug for IdentifierSearcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifierSearcher")
            .field("patterns", &self.kinds.len())
            .field("skipped_short", &self.skipped)
            .finish()
    }
}

/// An identifier found in a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentifierHit {
    pub kind: IdentifierKind,
    pub offset: usize,
}

impl IdentifierSearcher {
    /// The first identifier found in `bytes`.
    pub fn find(&self, bytes: &[u8]) -> Option<IdentifierHit> {
        let m = self.ac.find(bytes)?;
        let kind = self
            .kinds
            .get(m.pattern().as_usize())
            .copied()
            .unwrap_or(IdentifierKind::Other);
        Some(IdentifierHit {
            kind,
            offset: m.start(),
        })
    }

    /// The first hit of each identifier kind found in `bytes`, in order of appearance.
    pub fn find_each_kind(&self, bytes: &[u8]) -> Vec<IdentifierHit> {
        let mut out: Vec<IdentifierHit> = Vec::new();
        for m in self.ac.find_iter(bytes) {
            let kind = self
                .kinds
                .get(m.pattern().as_usize())
                .copied()
                .unwrap_or(IdentifierKind::Other);
            if !out.iter().any(|h| h.kind == kind) {
                out.push(IdentifierHit {
                    kind,
                    offset: m.start(),
                });
            }
        }
        out
    }

    /// Identifiers too short to search for.
    pub fn skipped_short(&self) -> usize {
        self.skipped
    }
}
