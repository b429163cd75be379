//! Fingerprints of fed pixel bytes, to find records copied verbatim into outputs.
//!
//! Each record's pixel bytes, as fed, are hashed with a rolling polynomial hash over
//! [`WINDOW`]-byte windows. A window is an *anchor* when its mixed hash falls in a fixed
//! 1-in-[`ANCHOR_EVERY`] class — chosen by content, not position, so a block copied to any
//! offset of an output has the same anchors. Low-entropy windows (flat background) are
//! skipped: they occur in honest weights too. Scanning an output computes the same rolling
//! hash at every offset and looks up only anchors, so a copied block of a few KiB is found
//! with near certainty while the scan stays a multiply-add per byte.

use std::collections::HashMap;

/// Window length in bytes.
pub const WINDOW: usize = 32;
/// On average one window in this many is an anchor.
pub const ANCHOR_EVERY: u64 = 256;
/// Upper bound on stored fingerprints (memory: ~24 bytes each).
pub const MAX_FINGERPRINTS: usize = 8 << 20;
/// Windows with fewer distinct byte values than this are not fingerprinted.
const MIN_DISTINCT: usize = 12;

const BASE: u64 = 0x100_0000_01b3; // odd 64-bit multiplier (FNV prime)
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

fn base_pow_window() -> u64 {
    let mut p = 1u64;
    for _ in 0..WINDOW - 1 {
        p = p.wrapping_mul(BASE);
    }
    p
}

#[inline]
fn is_anchor(h: u64) -> bool {
    (h.wrapping_mul(MIX) >> 56) < (256 / ANCHOR_EVERY)
}

fn distinct_enough(w: &[u8]) -> bool {
    let mut seen = [false; 256];
    let mut n = 0;
    for &b in w {
        if !seen[b as usize] {
            seen[b as usize] = true;
            n += 1;
            if n >= MIN_DISTINCT {
                return true;
            }
        }
    }
    false
}

/// Calls `f(offset, hash)` for every anchor window of `bytes` (offset = window start).
/// Returns early with `Some(x)` when `f` does.
fn for_each_anchor<T>(bytes: &[u8], mut f: impl FnMut(usize, u64) -> Option<T>) -> Option<T> {
    if bytes.len() < WINDOW {
        return None;
    }
    let top = base_pow_window();
    let mut h = 0u64;
    for &b in &bytes[..WINDOW] {
        h = h.wrapping_mul(BASE).wrapping_add(u64::from(b));
    }
    let mut start = 0usize;
    loop {
        if is_anchor(h) {
            if let Some(x) = f(start, h) {
                return Some(x);
            }
        }
        let end = start + WINDOW;
        if end >= bytes.len() {
            return None;
        }
        h = h
            .wrapping_sub(u64::from(bytes[start]).wrapping_mul(top))
            .wrapping_mul(BASE)
            .wrapping_add(u64::from(bytes[end]));
        start += 1;
    }
}

/// The fingerprints of every record fed so far.
#[derive(Debug, Default, Clone)]
pub struct Fingerprints {
    /// anchor hash → record index it came from.
    anchors: HashMap<u64, u32>,
    saturated: bool,
}

/// A fed block found in a scanned stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelHit {
    pub record: u32,
    pub offset: usize,
}

impl Fingerprints {
    /// Adds the anchors of one record's fed pixel bytes.
    pub fn add_record(&mut self, record: u32, bytes: &[u8]) {
        let anchors = &mut self.anchors;
        let saturated = &mut self.saturated;
        for_each_anchor(bytes, |off, h| {
            if anchors.len() >= MAX_FINGERPRINTS {
                *saturated = true;
                return Some(());
            }
            if distinct_enough(&bytes[off..off + WINDOW]) {
                anchors.entry(h).or_insert(record);
            }
            None
        });
    }

    /// Number of stored anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True when nothing has been fingerprinted.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// True when the fingerprint budget ran out (later records were only partly covered).
    pub fn saturated(&self) -> bool {
        self.saturated
    }

    /// The first fed block found in `bytes`.
    pub fn find(&self, bytes: &[u8]) -> Option<PixelHit> {
        if self.anchors.is_empty() {
            return None;
        }
        for_each_anchor(bytes, |off, h| {
            let record = *self.anchors.get(&h)?;
            distinct_enough(&bytes[off..off + WINDOW]).then_some(PixelHit {
                record,
                offset: off,
            })
        })
    }
}
