//! Deterministic train/validation split by hashed patient id.
//!
//! Patients (never records) are ordered by `SHA-256("rapha-split-v1" || patient)`, and the
//! first `round(n * percent / 100)` patients form the validation split. Every record of a
//! patient lands on the same side, so no patient is in both; the order depends only on the
//! hashed ids, so the node, an auditor and a re-run all get the same split.
//!
//! Before that split, a job the node can audit (issue 19: a runner configured and a graph the
//! predicate pins) holds back an audit split: the first `k` patients ordered by
//! `SHA-256("rapha-audit-v1" || patient)` ([`audit_holdout`]). Their records are never listed
//! to nor fetchable by the trainer ([`crate::record::Subset`] serves the others); the node's
//! privacy audit scores them as the non-members of its membership-inference attack. The
//! cohort commitment covers every record, audit split included.

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

fn audit_key(patient: &HashedId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"rapha-audit-v1");
    h.update(patient.as_bytes());
    h.finalize().into()
}

/// Patients of an audit split of `fraction` of `patients`, rounded to nearest: 0 when the
/// fraction is not in (0, 1) or the result is below `minimum` (an audit of fewer patients
/// says nothing, and the job then keeps all its records for the trainer).
pub fn audit_patient_count(patients: usize, fraction: f64, minimum: usize) -> usize {
    if !(fraction > 0.0 && fraction < 1.0) {
        return 0;
    }
    // patients * fraction < patients, so the cast back cannot overflow.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let k = (patients as f64 * fraction).round() as usize;
    if k < minimum.max(1) || k >= patients {
        0
    } else {
        k
    }
}

/// Which records are held back for the audit (same order as `records`): every record of the
/// first `patients` patients by their audit key, so one patient's records never straddle the
/// audit and the trainer's splits.
pub fn audit_holdout(records: &[FeedRecord], patients: usize) -> Vec<bool> {
    let all: BTreeSet<HashedId> = records.iter().map(|r| r.patient).collect();
    let mut ordered: Vec<([u8; 32], HashedId)> =
        all.into_iter().map(|p| (audit_key(&p), p)).collect();
    ordered.sort_unstable();
    let held: HashSet<HashedId> = ordered.iter().take(patients).map(|(_, p)| *p).collect();
    records.iter().map(|r| held.contains(&r.patient)).collect()
}
