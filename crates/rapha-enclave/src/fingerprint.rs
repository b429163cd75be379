//! Fingerprints of fed pixel bytes, to find records copied verbatim into outputs.
//!
//! Each record's pixel bytes, as fed, are hashed with a rolling *gear* hash
//! (`h = (h << 1) + GEAR[byte]`, so `h` depends on the last 64 bytes only). A position is an
//! *anchor* when the top bits of `h` are zero — chosen by content, not position, so a block
//! copied to any offset of an output has the same anchors. Low-entropy windows (flat
//! background) are skipped: they occur in honest weights too. Scanning an output computes the
//! same hash at every offset (a shift, an add and a table load per byte) and looks up only
//! anchors, so a copied block of a few KiB is found with near certainty at memory speed.
//!
//! Fingerprinting a fed record is on the feed's critical path (it shares the CPU with decoding
//! and the trainer), so it does as little as it can there: [`Collector::add_record`] appends
//! each new anchor to a list, and [`Collector::seal`] builds the lookup table once feeding has
//! ended, off that path (no hash-table probe, cache miss or rehash per anchor while the
//! trainer waits). It also takes anchors at even offsets of the
//! record only, at twice the anchor rate, which keeps one anchor per [`RECORD_ANCHOR_EVERY`]
//! record bytes. The scan still tests every offset, so a copied block is found at any
//! alignment in the output. Even offsets let the record side advance two bytes per step
//! through a table of byte pairs (`h = (h << 2) + PAIR[b0, b1]`, the same value as two gear
//! steps), and it runs four independent chains over four stretches of the record at once: a
//! gear hash forgets everything older than [`WINDOW`] bytes, so a chain started 64 bytes
//! before its stretch reaches exactly the values a single pass would.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Bytes that determine one hash value (the bits of a `u64` shifted through).
pub const WINDOW: usize = 64;
/// On average one position in this many is an anchor (scanned outputs: every position;
/// records: even positions only).
pub const ANCHOR_EVERY: u64 = 128;
/// On average one record byte in this many starts a stored anchor.
pub const RECORD_ANCHOR_EVERY: u64 = 2 * ANCHOR_EVERY;
/// Upper bound on stored fingerprints (memory: ~24 bytes each in the sealed table, 16 bytes
/// each while collecting, repeats included until they are compacted away; sealing holds both
/// for a moment, about 400 MiB at the bound). About 2 GiB of distinct pixel bytes fill it at
/// the full anchor rate; past that the anchors of *every* record are thinned (see
/// [`Collector::add_record`]), so later records are covered as densely as earlier ones.
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

/// Two gear steps at once: `PAIR[b0 | b1 << 8] = (GEAR[b0] << 1) + GEAR[b1]`, so
/// `(h << 2) + PAIR[..]` is `h` after `b0` then `b1` (512 KiB, built on first use).
fn pair_table() -> &'static [u64] {
    static PAIR: std::sync::OnceLock<Box<[u64]>> = std::sync::OnceLock::new();
    PAIR.get_or_init(|| {
        (0..=u16::MAX)
            .map(|x| {
                let [b0, b1] = x.to_le_bytes();
                (GEAR[b0 as usize] << 1).wrapping_add(GEAR[b1 as usize])
            })
            .collect()
    })
}

#[inline]
fn is_anchor(h: u64) -> bool {
    h >> ANCHOR_SHIFT == 0
}

/// Thinning levels of a full collector: level `l` keeps one anchor in `2^l`.
const MAX_LEVEL: u32 = ANCHOR_SHIFT - 8;

/// True when anchor `h` is kept at thinning level `level`: its `level` bits below the
/// anchor bits are zero too, which holds for one anchor in `2^level`, chosen by content (a
/// copied block keeps the same ones).
#[inline]
fn kept_at(h: u64, level: u32) -> bool {
    h >> (ANCHOR_SHIFT - level) == 0
}

/// True when `w` holds at least [`MIN_DISTINCT`] distinct byte values.
fn distinct_enough(w: &[u8]) -> bool {
    // A 256-bit set of the byte values seen, counted after each 16 bytes: a noisy window
    // usually has enough after the first 16 or 32 (the count only grows, so stopping early
    // gives the same answer as counting the whole window).
    let mut seen = [0u64; 4];
    for chunk in w.chunks(16) {
        for &b in chunk {
            seen[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        if seen.iter().map(|s| s.count_ones() as usize).sum::<usize>() >= MIN_DISTINCT {
            return true;
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

/// Calls `f(window_start, hash)` for the anchors of `bytes` that start at an even offset, in
/// increasing offset order, without repeats: an anchor whose hash equals the previous
/// anchor's is skipped. A run of flat background makes every (even) position an anchor with
/// one and the same hash; reporting it once keeps such runs at hashing speed.
fn for_each_new_anchor(bytes: &[u8], mut f: impl FnMut(usize, u64) -> Option<()>) {
    const LANES: usize = 4;
    /// Pair steps before a chain's first full window.
    const WARM: usize = WINDOW / 2 - 1;
    let pair = pair_table();
    let mut last = None;
    let mut report = |off: usize, hash: u64| {
        if last == Some(hash) {
            return None;
        }
        last = Some(hash);
        f(off, hash)
    };
    // One chain over `bytes[from..]` (from even), reporting window starts from `from` on.
    let single = |from: usize, report: &mut dyn FnMut(usize, u64) -> Option<()>| {
        let mut h = 0u64;
        for (k, p) in bytes[from..].chunks_exact(2).enumerate() {
            h = (h << 2).wrapping_add(pair[usize::from(u16::from_le_bytes([p[0], p[1]]))]);
            if k >= WARM && is_anchor(h) && report(from + 2 * (k - WARM), h).is_some() {
                return true;
            }
        }
        false
    };
    // Window starts 0 .. len - WINDOW (even); lane j takes `seg` of them from j * seg.
    let starts = bytes.len().saturating_sub(WINDOW - 1);
    let seg = (starts / LANES) & !1;
    if seg < 1024 {
        single(0, &mut report);
        return;
    }
    let lane = |j: usize| bytes[j * seg..(j + 1) * seg + WINDOW - 2].chunks_exact(2);
    let mut found: [Vec<(usize, u64)>; LANES] = Default::default();
    let step = |h: u64, p: &[u8]| {
        (h << 2).wrapping_add(pair[usize::from(u16::from_le_bytes([p[0], p[1]]))])
    };
    // Four locals, not an array, so the chains stay in registers.
    let (mut h0, mut h1, mut h2, mut h3) = (0u64, 0u64, 0u64, 0u64);
    let body = lane(0).zip(lane(1)).zip(lane(2)).zip(lane(3));
    for (k, (((a, b), c), d)) in body.enumerate() {
        h0 = step(h0, a);
        h1 = step(h1, b);
        h2 = step(h2, c);
        h3 = step(h3, d);
        // One well-predicted branch for all four lanes: anchors are rare.
        if k >= WARM && is_anchor(h0.min(h1).min(h2.min(h3))) {
            for (j, (hj, out)) in [h0, h1, h2, h3]
                .into_iter()
                .zip(found.iter_mut())
                .enumerate()
            {
                if is_anchor(hj) && out.last().is_none_or(|&(_, prev)| prev != hj) {
                    out.push((j * seg + 2 * (k - WARM), hj));
                }
            }
        }
    }
    for (off, hash) in found.into_iter().flatten() {
        if report(off, hash).is_some() {
            return;
        }
    }
    // The window starts no lane reached.
    single(LANES * seg, &mut report);
}

/// The first `f(window_start, hash)` that is `Some`, over every anchor of `bytes` in offset
/// order, like [`for_each_anchor`] with an early return, but with four hash chains over four
/// stretches interleaved (a scan is one shift, add and table load per byte: the chains run
/// side by side instead of one after another).
fn first_anchor_hit<T>(bytes: &[u8], f: impl Fn(usize, u64) -> Option<T>) -> Option<T> {
    const LANES: usize = 4;
    const WARM: usize = WINDOW - 1;
    let starts = bytes.len().saturating_sub(WARM);
    let seg = starts / LANES;
    if seg < 1024 {
        return for_each_anchor(bytes, f);
    }
    // Lane j hashes bytes j*seg .. (j+1)*seg + WARM: window starts j*seg .. (j+1)*seg.
    let lane = |j: usize| &bytes[j * seg..(j + 1) * seg + WARM];
    let (l0, l1, l2, l3) = (lane(0), lane(1), lane(2), lane(3));
    let g = |b: u8| GEAR[b as usize];
    let (mut h0, mut h1, mut h2, mut h3) = (0u64, 0u64, 0u64, 0u64);
    for k in 0..WARM {
        h0 = (h0 << 1).wrapping_add(g(l0[k]));
        h1 = (h1 << 1).wrapping_add(g(l1[k]));
        h2 = (h2 << 1).wrapping_add(g(l2[k]));
        h3 = (h3 << 1).wrapping_add(g(l3[k]));
    }
    let mut hits: [Option<T>; LANES] = Default::default();
    let body = l0[WARM..]
        .iter()
        .zip(&l1[WARM..])
        .zip(&l2[WARM..])
        .zip(&l3[WARM..]);
    for (k, (((&a, &b), &c), &d)) in body.enumerate() {
        h0 = (h0 << 1).wrapping_add(g(a));
        h1 = (h1 << 1).wrapping_add(g(b));
        h2 = (h2 << 1).wrapping_add(g(c));
        h3 = (h3 << 1).wrapping_add(g(d));
        if is_anchor(h0.min(h1).min(h2.min(h3))) {
            for (j, (hj, hit)) in [h0, h1, h2, h3]
                .into_iter()
                .zip(hits.iter_mut())
                .enumerate()
            {
                if hit.is_none() && is_anchor(hj) {
                    *hit = f(j * seg + k, hj);
                }
            }
            if hits[0].is_some() {
                break; // nothing can come before lane 0's first hit
            }
        }
    }
    if let Some(hit) = hits.into_iter().flatten().next() {
        return Some(hit);
    }
    let tail = LANES * seg;
    for_each_anchor(&bytes[tail..], |off, h| f(tail + off, h))
}

/// Hashes anchor values, which are already uniformly mixed gear hashes with their top bits
/// zero: one multiply spreads them over the table (SipHash would cost more than the lookup).
#[derive(Debug, Default, Clone, Copy)]
pub struct AnchorHasher(u64);

impl Hasher for AnchorHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(26);
    }
}

/// The fingerprints of the fed records, sealed for lookups ([`Collector::seal`]).
#[derive(Debug, Default, Clone)]
pub struct Fingerprints {
    /// anchor hash → a record it came from.
    anchors: HashMap<u64, u32, BuildHasherDefault<AnchorHasher>>,
    /// Thinning level the anchors were kept at.
    level: u32,
}

/// A fed block found in a scanned stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelHit {
    pub record: u32,
    pub offset: usize,
}

/// Collects the anchors of records as they are fed; [`Collector::seal`] turns them into
/// [`Fingerprints`].
#[derive(Debug, Clone)]
pub struct Collector {
    /// (anchor hash, record) as found, repeats included until a compaction.
    anchors: Vec<(u64, u32)>,
    /// Entries `anchors` may hold ([`MAX_FINGERPRINTS`]).
    budget: usize,
    /// Anchors are kept at this thinning level ([`kept_at`]); it rises when the budget is
    /// nearly full of distinct anchors.
    level: u32,
}

impl Default for Collector {
    fn default() -> Self {
        Self::with_budget(MAX_FINGERPRINTS)
    }
}

impl Collector {
    /// A collector that keeps at most `budget` anchors.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            anchors: Vec::new(),
            budget,
            level: 0,
        }
    }

    /// Adds the anchors of one record's fed pixel bytes.
    ///
    /// An anchor with the hash of the previous anchor, or of a recently rejected uniform
    /// window, is that window again (flat or low-noise background) and is not looked at twice.
    ///
    /// When the budget is nearly full of distinct anchors, the collector thins them: it keeps
    /// only the anchors of the next level ([`kept_at`], one in two), those already collected
    /// and those to come. Every record, early or late, is then covered at the same rate; a
    /// copied block must be twice as long per level to be found with the same certainty (at
    /// level 0, 4 KiB holds about 16 anchors).
    pub fn add_record(&mut self, record: u32, bytes: &[u8]) {
        let Self {
            anchors,
            budget,
            level,
        } = self;
        // Hashes of windows recently found too uniform to fingerprint, so that background
        // noise with few values is not re-examined at each of its (many equal) anchors. A
        // 56-bit hash equal to a rejected one is taken to be the same window.
        let mut rejected = [u64::MAX; 64];
        for_each_new_anchor(bytes, |off, h| {
            if !kept_at(h, *level) {
                return None;
            }
            let slot = (h as usize) % rejected.len();
            if rejected[slot] == h {
                return None;
            }
            if !distinct_enough(&bytes[off..off + WINDOW]) {
                rejected[slot] = h;
                return None;
            }
            if anchors.len() >= *budget {
                compact(anchors);
                // Nearly full of distinct anchors: thin them (compacting again after every
                // few anchors would cost more than they are worth).
                while anchors.len() >= *budget - *budget / 8 && *level < MAX_LEVEL {
                    *level += 1;
                    let l = *level;
                    anchors.retain(|&(a, _)| kept_at(a, l));
                }
                if !kept_at(h, *level) || anchors.len() >= *budget {
                    return None;
                }
            }
            anchors.push((h, record));
            None
        });
    }

    /// The lookup table of every anchor collected. Where records share an anchor (the same
    /// 64 bytes), it names the lowest record index.
    pub fn seal(mut self) -> Fingerprints {
        compact(&mut self.anchors);
        let mut map = HashMap::with_capacity_and_hasher(self.anchors.len(), Default::default());
        map.extend(self.anchors);
        Fingerprints {
            anchors: map,
            level: self.level,
        }
    }
}

/// Sorts `anchors` and keeps one entry per hash (the lowest record).
fn compact(anchors: &mut Vec<(u64, u32)>) {
    anchors.sort_unstable();
    anchors.dedup_by_key(|a| a.0);
}

impl Fingerprints {
    /// The fingerprints of `records` (index, fed bytes), collected and sealed at once.
    pub fn of<'b>(records: impl IntoIterator<Item = (u32, &'b [u8])>) -> Self {
        let mut c = Collector::default();
        for (index, bytes) in records {
            c.add_record(index, bytes);
        }
        c.seal()
    }

    /// Number of stored anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True when nothing has been fingerprinted.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// The thinning level the anchors were kept at: 0 when the budget held every anchor,
    /// `l` when one in `2^l` was kept (of every record alike).
    pub fn level(&self) -> u32 {
        self.level
    }

    /// The first fed block found in `bytes`.
    pub fn find(&self, bytes: &[u8]) -> Option<PixelHit> {
        if self.anchors.is_empty() {
            return None;
        }
        first_anchor_hit(bytes, |off, h| {
            if !kept_at(h, self.level) {
                return None; // thinned away: not in the table
            }
            let record = *self.anchors.get(&h)?;
            distinct_enough(&bytes[off..off + WINDOW]).then_some(PixelHit {
                record,
                offset: off,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure
    use super::*;

    /// The single-byte-step anchors at even window starts, repeats of the previous anchor's
    /// hash removed: what the record side must report.
    fn anchors_single(bytes: &[u8]) -> Vec<(usize, u64)> {
        let mut v: Vec<(usize, u64)> = Vec::new();
        for_each_anchor(bytes, |o, h| -> Option<()> {
            if o % 2 == 0 && v.last().is_none_or(|&(_, p)| p != h) {
                v.push((o, h));
            }
            None
        });
        v
    }

    fn anchors_lanes(bytes: &[u8]) -> Vec<(usize, u64)> {
        let mut v = Vec::new();
        for_each_new_anchor(bytes, |o, h| {
            v.push((o, h));
            None
        });
        v
    }

    fn noise(st: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *st ^= *st << 13;
                *st ^= *st >> 7;
                *st ^= *st << 17;
                (*st >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn four_lane_pass_finds_exactly_the_single_pass_anchors_in_order() {
        let mut st = 0x0123_4567_89ab_cdefu64;
        for len in [
            0, 63, 64, 4095, 4096, 4097, 4159, 4160, 10_001, 65_536, 100_003,
        ] {
            let bytes = noise(&mut st, len);
            let single = anchors_single(&bytes);
            assert_eq!(anchors_lanes(&bytes), single, "length {len}");
            if len > 10_000 {
                assert!(
                    single.len() > 10,
                    "length {len}: too few anchors to mean anything"
                );
            }
        }
    }

    #[test]
    fn flat_runs_that_are_anchors_are_reported_once_per_run() {
        // A flat run of a 16-bit sample value: find one whose window is an anchor, then put
        // runs of it between noise.
        let window_hash = |pair: [u8; 2]| {
            let mut h = 0u64;
            for i in 0..WINDOW {
                h = (h << 1).wrapping_add(GEAR[pair[i % 2] as usize]);
            }
            h
        };
        let pair = (0..=u16::MAX)
            .map(u16::to_le_bytes)
            .find(|&p| is_anchor(window_hash(p)))
            .expect("some 16-bit value has an anchor flat window");
        let mut st = 7u64;
        let mut bytes = Vec::new();
        for run in [2500, 150, 4500] {
            bytes.extend(noise(&mut st, 3000));
            for _ in 0..run {
                bytes.extend_from_slice(&pair);
            }
        }
        bytes.extend(noise(&mut st, 3000));
        let single = anchors_single(&bytes);
        assert_eq!(anchors_lanes(&bytes), single);
        let in_runs = |o: usize| bytes[o..o + WINDOW].chunks(2).all(|c| c == pair);
        let reports = single.iter().filter(|&&(o, _)| in_runs(o)).count();
        let mut every = 0;
        for_each_anchor(&bytes, |o, _| -> Option<()> {
            every += usize::from(in_runs(o));
            None
        });
        assert!(every > 3000, "{every} anchors in the flat runs");
        assert!(
            (3..=6).contains(&reports),
            "{reports} reports of three flat runs"
        );
    }

    #[test]
    fn four_lane_scan_finds_the_first_hit_of_the_single_pass() {
        let mut st = 11u64;
        for len in [100, 4158, 4159, 4160, 5000, 70_001, 200_000] {
            let bytes = noise(&mut st, len);
            let all = anchors_all(&bytes);
            // Hits chosen among the anchors: none, the first, one per lane region, the last.
            let picks: Vec<Vec<usize>> = if all.is_empty() {
                vec![vec![]]
            } else {
                vec![
                    vec![],
                    vec![all[0].0],
                    vec![all[all.len() / 2].0, all[all.len() - 1].0],
                    vec![all[all.len() - 1].0],
                    all.iter().map(|a| a.0).step_by(7).collect(),
                ]
            };
            for pick in picks {
                let f = |off: usize, _h: u64| pick.contains(&off).then_some(off);
                assert_eq!(
                    first_anchor_hit(&bytes, f),
                    for_each_anchor(&bytes, f),
                    "length {len}, hits at {pick:?}"
                );
            }
        }
    }

    fn anchors_all(bytes: &[u8]) -> Vec<(usize, u64)> {
        let mut v = Vec::new();
        for_each_anchor(bytes, |o, h| -> Option<()> {
            v.push((o, h));
            None
        });
        v
    }

    #[test]
    fn record_anchor_density_is_one_in_record_anchor_every_bytes() {
        let mut st = 3u64;
        let bytes = noise(&mut st, 1 << 20);
        let n = anchors_lanes(&bytes).len() as f64;
        let expected = (1 << 20) as f64 / RECORD_ANCHOR_EVERY as f64;
        assert!(
            (n - expected).abs() < expected * 0.1,
            "{n} anchors, expected ~{expected}"
        );
    }

    #[test]
    fn sealing_keeps_one_anchor_per_window_naming_the_lowest_record() {
        let mut st = 5u64;
        let a = noise(&mut st, 50_000);
        let b = noise(&mut st, 50_000);
        let once = Fingerprints::of([(0, &a[..])]).len();
        assert!(once > 100, "{once} anchors");
        // The same bytes fed as records 7 and 2, and again as 7: one anchor each.
        let mut c = Collector::default();
        for (i, r) in [(7, &a), (2, &a), (9, &b), (7, &a)] {
            c.add_record(i, r);
        }
        let fp = c.seal();
        assert_eq!(fp.len(), once + Fingerprints::of([(0, &b[..])]).len());
        assert_eq!(fp.find(&a[1000..6000]).map(|h| h.record), Some(2));
        assert_eq!(fp.find(&b[1000..6000]).map(|h| h.record), Some(9));
        assert_eq!(fp.level(), 0);
    }

    #[test]
    fn the_budget_bounds_the_anchors_and_repeats_do_not_spend_it() {
        let mut st = 6u64;
        let record = noise(&mut st, 100_000);
        let per_record = Fingerprints::of([(0, &record[..])]).len();
        // Repeats of one record are compacted away: far more anchors found than the budget
        // holds, never thinned.
        let mut c = Collector::with_budget(2 * per_record);
        for i in 0..50 {
            c.add_record(i, &record);
        }
        let fp = c.seal();
        assert_eq!(fp.len(), per_record);
        assert_eq!(fp.level(), 0);
    }

    #[test]
    fn past_the_budget_every_record_is_thinned_alike_and_still_found() {
        let mut st = 7u64;
        let records: Vec<Vec<u8>> = (0..10).map(|_| noise(&mut st, 100_000)).collect();
        let per_record = Fingerprints::of([(0, &records[0][..])]).len();
        let budget = 3 * per_record;
        let mut c = Collector::with_budget(budget);
        for (i, r) in records.iter().enumerate() {
            c.add_record(i as u32, r);
        }
        let fp = c.seal();
        // Ten records' anchors in a budget of three: thinned twice (one in four kept).
        assert_eq!(fp.level(), 2);
        assert!(fp.len() <= budget, "{} anchors kept", fp.len());
        assert!(fp.len() >= budget / 2, "{} anchors kept", fp.len());
        // The first record and the last are covered alike: a 20 KB block of each is found.
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                fp.find(&r[30_000..50_000]).map(|h| h.record),
                Some(i as u32),
                "record {i}"
            );
        }
        // Each record kept about a tenth of the anchors.
        let mut per = [0usize; 10];
        for &rec in fp.anchors.values() {
            per[rec as usize] += 1;
        }
        let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
        assert!(*lo * 2 > *hi, "uneven coverage {per:?}");
    }

    #[test]
    fn record_bytes_copied_anywhere_are_found_and_flat_background_is_not() {
        let mut st = 99u64;
        let mut record = noise(&mut st, 20_000);
        record.extend(std::iter::repeat_n(0u8, 50_000));
        let fp = Fingerprints::of([(3, &record[..])]);
        // Copied from odd and even record offsets to odd and even output offsets.
        for (from, at) in [(1234, 777), (1235, 778), (1235, 777), (8000, 64)] {
            let mut output = noise(&mut st, at);
            output.extend_from_slice(&record[from..from + 4096]);
            output.extend(noise(&mut st, 100));
            assert_eq!(
                fp.find(&output).map(|h| h.record),
                Some(3),
                "{from} -> {at}"
            );
        }
        assert_eq!(fp.find(&[0u8; 60_000]), None);
    }
}
