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

/// Identifiers shorter than this are not searched at all: they match text by chance.
pub const MIN_IDENTIFIER_LEN: usize = 4;
/// In binary streams (tensor data, ONNX, non-pickle zip entries) only identifiers at least
/// this long are searched. Case-insensitive 4-byte patterns would match gigabytes of float
/// weights by chance (about once per 2^28 bytes per pattern); 6 bytes brings that to about
/// once per 2^42 bytes per pattern, so an honest trainer is not refused for noise.
pub const MIN_BINARY_IDENTIFIER_LEN: usize = 6;

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
    /// An identifier from the cohort builder's expanded list (kind not recorded there).
    Other,
    /// Not an identifier: the start of a DICOM Part 10 file meta group (`DICM` 02 00)
    /// embedded anywhere in a stream.
    DicomMagic,
}

impl IdentifierKind {
    /// Words for a verdict (never the value).
    pub const fn label(self) -> &'static str {
        match self {
            Self::PatientId => "patient id",
            Self::PatientName => "patient name",
            Self::AccessionNumber => "accession number",
            Self::Uid => "DICOM UID",
            Self::BirthDate => "birth date",
            Self::Other => "identifier",
            Self::DicomMagic => "DICOM file meta header",
        }
    }
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

    /// Adds identifiers already expanded by the cohort builder (rapha-dicom's
    /// `raw_identifiers`: names, dates and ids in their written variants).
    pub fn add_expanded<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) {
        for v in values {
            let v = v.trim();
            if !v.is_empty() {
                self.entries.push((IdentifierKind::Other, v.to_owned()));
            }
        }
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
        let build = |pats: &[&[u8]]| {
            // A full DFA: thousands of patterns defeat the prefilters, and the NFA walk is
            // several times slower than one table lookup per byte. Memory is bounded by the
            // pattern bytes (a cohort's identifiers: a few MiB of tables at most).
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                .start_kind(aho_corasick::StartKind::Both)
                .build(pats)
        };
        let ac = build(&patterns)?;
        let mut binary_kinds = Vec::new();
        let mut binary_patterns: Vec<&[u8]> = Vec::new();
        for (k, p) in kinds.iter().zip(&patterns) {
            if p.len() >= MIN_BINARY_IDENTIFIER_LEN {
                binary_kinds.push(*k);
                binary_patterns.push(p);
            }
        }
        let ac_binary = build(&binary_patterns)?;
        let prefilter = Prefilter::new(&binary_patterns);
        Ok(IdentifierSearcher {
            ac,
            kinds,
            ac_binary,
            binary_kinds,
            prefilter,
            skipped,
        })
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
    ac_binary: AhoCorasick,
    binary_kinds: Vec<IdentifierKind>,
    prefilter: Prefilter,
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

/// Exact 6-byte (ASCII-lowercased) prefixes of the binary patterns, with a bitset of every
/// 4-byte window at offsets 0, 1 and 2 of each prefix. Any 6-byte prefix occurrence contains
/// one of those windows at a position divisible by 3, so the scan reads one 4-byte word per
/// 3 input bytes, with no dependency between iterations, and checks exact prefixes only on a
/// bitset hit.
struct Prefilter {
    bits: Vec<u64>,
    prefixes: std::collections::HashSet<u64>,
    max_len: usize,
}

const PREFIX: usize = MIN_BINARY_IDENTIFIER_LEN;
const STRIDE: usize = PREFIX - 4 + 1;
const BITSET_BITS: u32 = 20;

/// ASCII-lowercases the four bytes of a word at once.
#[inline]
fn lower4(x: u32) -> u32 {
    let heptets = x & 0x7f7f_7f7f;
    let gt_z = heptets.wrapping_add(0x2525_2525); // 0x7f - b'Z'
    let ge_a = heptets.wrapping_add(0x3f3f_3f3f); // 0x80 - b'A'
    let upper = !x & (ge_a ^ gt_z) & 0x8080_8080;
    x | (upper >> 2)
}

#[inline]
fn bit_of(w: u32) -> usize {
    (w.wrapping_mul(0x9e37_79b1) >> (32 - BITSET_BITS)) as usize
}

fn prefix_key(b: &[u8]) -> u64 {
    b.iter()
        .take(PREFIX)
        .fold(0u64, |k, c| (k << 8) | u64::from(c.to_ascii_lowercase()))
}

impl Prefilter {
    fn new(patterns: &[&[u8]]) -> Self {
        let mut bits = vec![0u64; (1usize << BITSET_BITS) / 64];
        let mut prefixes = std::collections::HashSet::new();
        let mut max_len = 0;
        for p in patterns {
            max_len = max_len.max(p.len());
            let Some(pre) = p.get(..PREFIX) else { continue };
            prefixes.insert(prefix_key(pre));
            for o in 0..STRIDE {
                let mut w = [0u8; 4];
                w.copy_from_slice(&pre[o..o + 4]);
                let i = bit_of(lower4(u32::from_le_bytes(w)));
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        Self {
            bits,
            prefixes,
            max_len,
        }
    }

    /// Calls `f(start)`, in increasing order, for every offset whose next 6 bytes are a
    /// pattern prefix.
    #[inline]
    fn candidates(&self, bytes: &[u8], mut f: impl FnMut(usize)) {
        if self.prefixes.is_empty() || bytes.len() < PREFIX {
            return;
        }
        let mut i = 0;
        while i + 4 <= bytes.len() {
            let mut w = [0u8; 4];
            w.copy_from_slice(&bytes[i..i + 4]);
            let bit = bit_of(lower4(u32::from_le_bytes(w)));
            if self.bits[bit / 64] & (1 << (bit % 64)) != 0 {
                for o in (0..STRIDE).rev() {
                    let Some(start) = i.checked_sub(o) else {
                        continue;
                    };
                    if let Some(pre) = bytes.get(start..start + PREFIX) {
                        if self.prefixes.contains(&prefix_key(pre)) {
                            f(start);
                        }
                    }
                }
            }
            i += STRIDE;
        }
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
    /// `binary` streams are searched for identifiers of at least
    /// [`MIN_BINARY_IDENTIFIER_LEN`] bytes only.
    pub fn find_each_kind(&self, bytes: &[u8], binary: bool) -> Vec<IdentifierHit> {
        let mut out: Vec<IdentifierHit> = Vec::new();
        let mut push = |kind: IdentifierKind, offset: usize| {
            if !out.iter().any(|h| h.kind == kind) {
                out.push(IdentifierHit { kind, offset });
            }
        };
        if !binary {
            for m in self.ac.find_iter(bytes) {
                push(
                    self.kinds
                        .get(m.pattern().as_usize())
                        .copied()
                        .unwrap_or(IdentifierKind::Other),
                    m.start(),
                );
            }
            return out;
        }
        // Binary streams: every pattern is at least MIN_BINARY_IDENTIFIER_LEN long, so a
        // 6-byte prefix filter finds the few candidate offsets at memory speed, and the
        // automaton confirms each candidate on a short slice.
        self.prefilter.candidates(bytes, |start| {
            let end = start
                .saturating_add(self.prefilter.max_len)
                .min(bytes.len());
            let input =
                aho_corasick::Input::new(&bytes[start..end]).anchored(aho_corasick::Anchored::Yes);
            if let Ok(Some(m)) = self.ac_binary.try_find(input) {
                push(
                    self.binary_kinds
                        .get(m.pattern().as_usize())
                        .copied()
                        .unwrap_or(IdentifierKind::Other),
                    start,
                );
            }
        });
        out.sort_by_key(|h| h.offset);
        out
    }

    /// Identifiers too short to search for.
    pub fn skipped_short(&self) -> usize {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lower4_lowercases_exactly_ascii_letters_in_every_lane() {
        for b in 0..=255u8 {
            for lane in 0..4 {
                let mut w = [b'z', 0x80, b'A', b'@'];
                w[lane] = b;
                let mut want = w;
                want.iter_mut().for_each(|c| *c = c.to_ascii_lowercase());
                assert_eq!(
                    super::lower4(u32::from_le_bytes(w)).to_le_bytes(),
                    want,
                    "byte {b:#x} lane {lane}"
                );
            }
        }
    }
}
