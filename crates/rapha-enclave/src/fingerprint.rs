//! Fingerprints of fed pixel bytes, to find records copied verbatim into outputs.
//!
//! Each record's pixel bytes, as fed, are hashed with a rolling *gear* hash
//! (`h = (h << 1) + GEAR[byte]`, so `h` depends on the last 64 bytes only). A position is an
//! *anchor* when the top bits of `h` are zero — chosen by content, not position, so a block
//! copied to any offset of an output has the same anchors. Low-entropy windows (flat
//! background) are skipped: they occur in honest weights too. Scanning an output computes the
//! same hash at every offset (a shift, an add and a table load per byte) and looks up only
//! anchors, so a copied block of a few KiB is found with near certainty at memory speed.

use std::collections::HashMap;

/// Bytes that determine one hash value (the bits of a `u64` shifted through).
pub const WINDOW: usize = 64;
/// On average one position in this many is an anchor.
pub const ANCHOR_EVERY: u64 = 256;
/// Upper bound on stored fingerprints (memory: ~24 bytes each).
pub const MAX_FINGERPRINTS: usize = 8 << 20;
/// Windows with fewer distinct byte values than this are not fingerprinted.
const MIN_DISTINCT: usize = 12;
const ANCHOR_SHIFT: u32 = 64 - ANCHOR_EVERY.trailing_zeros();

const fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = splitmix(i as u64 ^ 0x5241_5048_4100_0000); // "RAPHA"
        i += 1;
    }
    t
};

#[inline]
fn is_anchor(h: u64) -> bool {
    h >> ANCHOR_SHIFT == 0
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

/// Calls `f(window_start, hash)` for every anchor of `bytes` whose full window lies inside
/// `bytes`. Returns early with `Some(x)` when `f` does.
#[inline]
fn for_each_anchor<T>(bytes: &[u8], mut f: impl FnMut(usize, u64) -> Option<T>) -> Option<T> {
    let mut h = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        h = (h << 1).wrapping_add(GEAR[b as usize]);
        if i + 1 >= WINDOW && is_anchor(h) {
            if let Some(x) = f(i + 1 - WINDOW, h) {
                return Some(x);
            }
        }
    }
    None
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
