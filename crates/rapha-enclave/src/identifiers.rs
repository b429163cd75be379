//! The cohort's raw identifiers, searched for in every output and log byte stream (**I4**).
//!
//! The runtime knows the raw PatientIDs, names, accession numbers, UIDs and birth dates of the
//! records it fed; the trainer only ever saw hashes. Any of them appearing in an output means
//! something leaked around the pseudonymiser (a trainer that guessed, or was handed, PHI), so
//! the whole output set is refused. One Aho-Corasick automaton searches all of them at once,
//! ASCII case-insensitively. Birth dates are expanded to common written formats.
//! The values themselves never appear in a verdict: only their kind.
//!
//! How a match counts depends on the identifier's shape ([`Shape`]), so that a patient named
//! Head or Block, or a four-digit StudyID, does not refuse `lm_head`, `blocks.0` or a step
//! count, while everything that identifies someone is still found wherever it is written:
//!
//! | shape | example | counts when |
//! |---|---|---|
//! | anything with a separator or non-ASCII, or letters and digits of 8+ bytes | `Walsh^Bridget`, `1961-04-07`, a UID, `MRN4471923` | found anywhere, any case |
//! | letters and digits, shorter than 8 | `QX7Z2` | a whole token, any case |
//! | digits only | `4471923`, `19610407` | a whole number: not inside a longer number, a decimal fraction or a hex digest |
//! | letters only | `Head`, `WALSH` | a whole word, written as the hospital wrote it, in upper case or in title case (`lm_head`, `head.weight` are code, not a name) |
//!
//! A token is a run of ASCII letters, digits and `_`. The guard decides *where* to look
//! (`crate::guard`): numbers that are a model file's structure (safetensors shapes and
//! offsets, torch storage keys) are not searched.

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

/// Mixed letters and digits at least this long are found anywhere (shorter ones as whole
/// tokens: a hex digest printed in a log holds every short letter-digit string by chance).
pub const ANYWHERE_CODE_LEN: usize = 8;

/// How an identifier is matched (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shape {
    /// Separators, non-ASCII, or letters and digits of [`ANYWHERE_CODE_LEN`]+ bytes.
    Anywhere,
    /// Letters and digits, shorter than [`ANYWHERE_CODE_LEN`]: a whole token, any case.
    Code,
    /// Digits only: a whole number.
    Number,
    /// Letters only: a whole word, as written, upper case or title case.
    Word,
}

impl Shape {
    /// The shape of an identifier value.
    pub fn of(v: &[u8]) -> Self {
        let letters = v.iter().any(u8::is_ascii_alphabetic);
        let digits = v.iter().any(u8::is_ascii_digit);
        if !v.iter().all(u8::is_ascii_alphanumeric) {
            Self::Anywhere
        } else if letters && digits {
            if v.len() >= ANYWHERE_CODE_LEN {
                Self::Anywhere
            } else {
                Self::Code
            }
        } else if digits {
            Self::Number
        } else {
            Self::Word
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
        let mut patterns = vec![Pattern::new(IdentifierKind::DicomMagic, b"DICM\x02\x00")];
        let mut skipped = 0;
        for (kind, v) in &self.entries {
            if v.len() < MIN_IDENTIFIER_LEN {
                skipped += 1;
                continue;
            }
            patterns.push(Pattern::new(*kind, v.as_bytes()));
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
        let all: Vec<&[u8]> = patterns.iter().map(|p| p.value.as_slice()).collect();
        let ac = build(&all)?;
        let binary: Vec<usize> = (0..patterns.len())
            .filter(|&i| patterns[i].value.len() >= MIN_BINARY_IDENTIFIER_LEN)
            .collect();
        let binary_values: Vec<&[u8]> = binary.iter().map(|&i| all[i]).collect();
        let ac_binary = build(&binary_values)?;
        let prefilter = Prefilter::new(&binary_values);
        Ok(IdentifierSearcher {
            ac,
            patterns,
            ac_binary,
            binary,
            prefilter,
            skipped,
        })
    }
}

/// One searched identifier: its kind, value and how a match counts.
struct Pattern {
    kind: IdentifierKind,
    shape: Shape,
    value: Vec<u8>,
    /// [`Shape::Word`]: the spellings that count (as written, upper case, title case).
    spellings: Vec<Vec<u8>>,
}

impl Drop for Pattern {
    fn drop(&mut self) {
        self.value.zeroize();
        for s in &mut self.spellings {
            s.zeroize();
        }
    }
}

/// A byte of a token: an ASCII letter, digit or `_` (code identifiers are made of these).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Hex characters in a row that make a digest (a SHA-256 in hex is 64; 16 is a 64-bit id).
const HEX_DIGEST_LEN: usize = 16;

/// Whether `hay[start..end]` lies in a run of at least [`HEX_DIGEST_LEN`] hex characters
/// with a letter among them (looking at most 64 bytes to each side: bounded work per match).
fn in_hex_digest(hay: &[u8], start: usize, end: usize) -> bool {
    let left = hay[..start]
        .iter()
        .rev()
        .take(4 * HEX_DIGEST_LEN)
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    let right = hay[end..]
        .iter()
        .take(4 * HEX_DIGEST_LEN)
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    let run = &hay[start - left..end + right];
    run.len() >= HEX_DIGEST_LEN && run.iter().any(u8::is_ascii_alphabetic)
}

impl Pattern {
    fn new(kind: IdentifierKind, value: &[u8]) -> Self {
        let shape = if kind == IdentifierKind::DicomMagic {
            Shape::Anywhere
        } else {
            Shape::of(value)
        };
        let spellings = if shape == Shape::Word {
            let upper = value.to_ascii_uppercase();
            let mut title = value.to_ascii_lowercase();
            if let Some(c) = title.first_mut() {
                c.make_ascii_uppercase();
            }
            vec![value.to_vec(), upper, title]
        } else {
            Vec::new()
        };
        Self {
            kind,
            shape,
            value: value.to_vec(),
            spellings,
        }
    }

    /// Whether a case-insensitive match at `hay[start..end]` counts for this identifier.
    fn counts(&self, hay: &[u8], start: usize, end: usize) -> bool {
        let before = start.checked_sub(1).and_then(|i| hay.get(i)).copied();
        let after = hay.get(end).copied();
        let whole_token =
            || !before.is_some_and(is_token_byte) && !after.is_some_and(is_token_byte);
        match self.shape {
            Shape::Anywhere => true,
            Shape::Code => whole_token(),
            Shape::Number => {
                // Not part of a longer number (4471923 in 44719230), not the digits of a
                // decimal fraction or a dotted number (0.4471923, 1.2.4471923): a '.' between
                // digits joins them. Letters may touch it (MRN4471923), but not as part of a
                // hex digest a log printed (every short number is in one by chance).
                let digit_before = before.is_some_and(|b| b.is_ascii_digit());
                let digit_after = after.is_some_and(|b| b.is_ascii_digit());
                let dot_before = before == Some(b'.')
                    && start
                        .checked_sub(2)
                        .and_then(|i| hay.get(i))
                        .is_some_and(u8::is_ascii_digit);
                let dot_after =
                    after == Some(b'.') && hay.get(end + 1).is_some_and(u8::is_ascii_digit);
                !digit_before
                    && !digit_after
                    && !dot_before
                    && !dot_after
                    && !in_hex_digest(hay, start, end)
            }
            Shape::Word => {
                whole_token()
                    && hay
                        .get(start..end)
                        .is_some_and(|m| self.spellings.iter().any(|s| s == m))
            }
        }
    }
}

/// Which identifiers a search looks for, and which numbers it leaves alone.
#[derive(Clone, Copy, Debug)]
pub enum Search<'a> {
    /// Every identifier, as a whole or as its shape allows (logs, metrics, names, text).
    Text,
    /// Identifiers of at least [`MIN_BINARY_IDENTIFIER_LEN`] bytes (tensor data, ONNX).
    Binary,
    /// Every identifier, except [`Shape::Number`] matches that are one of these structural
    /// numbers (a torch archive's storage keys).
    TextExcept(&'a std::collections::BTreeSet<Vec<u8>>),
    /// Only [`Shape::Anywhere`] identifiers (the raw bytes of a pickle, whose strings are
    /// searched one by one as [`Search::Text`]).
    AnywhereOnly,
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
    patterns: Vec<Pattern>,
    ac_binary: AhoCorasick,
    /// Index into `patterns` of each `ac_binary` pattern.
    binary: Vec<usize>,
    prefilter: Prefilter,
    skipped: usize,
}

impl std::fmt::Debug for IdentifierSearcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifierSearcher")
            .field("patterns", &self.patterns.len())
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
    /// The first identifier found in `bytes` ([`Search::Text`]).
    pub fn find(&self, bytes: &[u8]) -> Option<IdentifierHit> {
        self.search(bytes, Search::Text).into_iter().next()
    }

    /// The first hit of each identifier kind found in `bytes`, in order of appearance.
    /// `binary` streams are searched for identifiers of at least
    /// [`MIN_BINARY_IDENTIFIER_LEN`] bytes only.
    pub fn find_each_kind(&self, bytes: &[u8], binary: bool) -> Vec<IdentifierHit> {
        self.search(bytes, if binary { Search::Binary } else { Search::Text })
    }

    /// The first hit of each identifier kind found in `bytes` by `how`, in order of
    /// appearance.
    pub fn search(&self, bytes: &[u8], how: Search<'_>) -> Vec<IdentifierHit> {
        let mut out: Vec<IdentifierHit> = Vec::new();
        let mut push = |p: &Pattern, offset: usize| match out.iter_mut().find(|h| h.kind == p.kind)
        {
            Some(h) if h.offset <= offset => {}
            Some(h) => h.offset = offset,
            None => out.push(IdentifierHit {
                kind: p.kind,
                offset,
            }),
        };
        let structural = |p: &Pattern, m: &[u8]| match how {
            Search::TextExcept(numbers) => p.shape == Shape::Number && numbers.contains(m),
            _ => false,
        };
        if !matches!(how, Search::Binary) {
            // Overlapping: a match that does not count (`head` in `lm_head`) must not hide
            // one that does, starting inside it.
            for m in self.ac.find_overlapping_iter(bytes) {
                let Some(p) = self.patterns.get(m.pattern().as_usize()) else {
                    continue;
                };
                if matches!(how, Search::AnywhereOnly) && p.shape != Shape::Anywhere {
                    continue;
                }
                if p.counts(bytes, m.start(), m.end()) && !structural(p, &bytes[m.start()..m.end()])
                {
                    push(p, m.start());
                }
            }
        } else {
            // Binary streams: every pattern is at least MIN_BINARY_IDENTIFIER_LEN long, so a
            // 6-byte prefix filter finds the few candidate offsets at memory speed, and the
            // automaton confirms each candidate on a short slice.
            self.prefilter.candidates(bytes, |start| {
                let end = start
                    .saturating_add(self.prefilter.max_len)
                    .min(bytes.len());
                for m in self.ac_binary.find_overlapping_iter(&bytes[start..end]) {
                    if m.start() != 0 {
                        continue;
                    }
                    let Some(p) = self
                        .binary
                        .get(m.pattern().as_usize())
                        .and_then(|&i| self.patterns.get(i))
                    else {
                        continue;
                    };
                    if p.counts(bytes, start, start + m.end()) {
                        push(p, start);
                    }
                }
            });
        }
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
