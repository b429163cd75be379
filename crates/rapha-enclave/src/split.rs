//! Deterministic train/validation split by hashed patient id.
//!
//! Patients (never records) are ordered by `SHA-256("rapha-split-v1" || patient)`, and the
//! first `round(n * percent / 100)` patients form the validation split. Every record of a
//! patient lands on the same side, so no patient is in both; the order depends only on the
//! hashed ids, so the node, an auditor and a re-run all get the same split.

use std::collections::{BTreeSet, HashSet};

use rapha_core::HashedId;
use sha2::{Digest as _, Sha256};

use crate::record::FeedRecord;

/// Which side of the split a record is on: the protocol's.
pub use rapha_protocol::Split;

fn split_key(patient: &HashedId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"rapha-split-v1");
    h.update(patient.as_bytes());
    h.finalize().into()
}

/// The split of each record (same order as `records`).
pub fn split_records(records: &[FeedRecord], validation_percent: u8) -> Vec<Split> {
    let patients: BTreeSet<HashedId> = records.iter().map(|r| r.patient).collect();
    let mut ordered: Vec<([u8; 32], HashedId)> =
        patients.into_iter().map(|p| (split_key(&p), p)).collect();
    ordered.sort_unstable();
    let pct = usize::from(validation_percent.min(100));
    let k = (ordered.len() * pct + 50) / 100;
    let validation: HashSet<HashedId> = ordered.iter().take(k).map(|(_, p)| *p).collect();
    records
        .iter()
        .map(|r| {
            if validation.contains(&r.patient) {
                Split::Validation
            } else {
                Split::Train
            }
        })
        .collect()
}
