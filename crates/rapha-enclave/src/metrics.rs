//! Validation metrics computed by the node from the trainer's predictions and the labels the
//! trainer never saw.
//!
//! These are the figures that leave and go into the receipt; anything the trainer says about
//! itself is kept apart as self-reported. AUC counts ties as one half; its 95% confidence
//! interval is a percentile bootstrap over records with a seed derived from the job, so the
//! figures are reproducible by anyone holding the same predictions.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

/// Bootstrap resamples for the AUC confidence interval.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// The node-computed validation metrics, rounded to 3 decimals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationMetrics {
    pub auc: f64,
    pub auc_ci95: [f64; 2],
    pub accuracy: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    /// Labelled validation records.
    pub n: usize,
    /// Validation patients.
    pub patients: usize,
}

/// Why no metrics were released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Withheld {
    #[error("the validation split has {patients} patients, fewer than the required {minimum}")]
    TooFewPatients { patients: usize, minimum: usize },
    #[error("the trainer predicted {predicted} of {required} labelled validation records")]
    MissingPredictions { predicted: usize, required: usize },
    #[error("the validation split has labels of one class only; AUC is undefined")]
    OneClass,
}

/// Rounds to 3 decimals (half away from zero).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// ROC AUC of `(label, score)` pairs with ties counted half (Mann-Whitney U / (P·N)).
/// `None` when one class is absent.
pub fn auc(pairs: &[(u8, f64)]) -> Option<f64> {
    let mut sorted: Vec<(f64, u8)> = pairs.iter().map(|&(l, s)| (s, l)).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = sorted.iter().filter(|p| p.1 == 1).count();
    let neg = sorted.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    // Sum of (1-based, tie-averaged) ranks of positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * sorted[i..=j].iter().filter(|p| p.1 == 1).count() as f64;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Computes the metrics, or says why they are withheld.
///
/// `pairs` are `(label, score)` of labelled validation records that have a prediction;
/// `required` is the number of labelled validation records; `seed` seeds the bootstrap.
pub fn compute(
    pairs: &[(u8, f64)],
    required: usize,
    patients: usize,
    minimum_patients: usize,
    seed: [u8; 32],
) -> Result<ValidationMetrics, Withheld> {
    if patients < minimum_patients {
        return Err(Withheld::TooFewPatients {
            patients,
            minimum: minimum_patients,
        });
    }
    if pairs.len() < required {
        return Err(Withheld::MissingPredictions {
            predicted: pairs.len(),
            required,
        });
    }
    let auc_value = auc(pairs).ok_or(Withheld::OneClass)?;
    let (mut tp, mut tn, mut fp, mut fneg) = (0usize, 0usize, 0usize, 0usize);
    for &(label, score) in pairs {
        match (label == 1, score >= 0.5) {
            (true, true) => tp += 1,
            (true, false) => fneg += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut aucs = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    let mut sample = Vec::with_capacity(pairs.len());
    for _ in 0..BOOTSTRAP_RESAMPLES {
        sample.clear();
        for _ in 0..pairs.len() {
            let i = (rng.next_u64() % pairs.len() as u64) as usize;
            sample.push(pairs[i]);
        }
        // A resample with one class has no AUC; it is skipped, as is usual.
        if let Some(a) = auc(&sample) {
            aucs.push(a);
        }
    }
    aucs.sort_by(f64::total_cmp);
    let pick = |q: f64| -> f64 {
        if aucs.is_empty() {
            return auc_value;
        }
        let idx = ((aucs.len() - 1) as f64 * q).round() as usize;
        aucs[idx.min(aucs.len() - 1)]
    };
    Ok(ValidationMetrics {
        auc: round3(auc_value),
        auc_ci95: [round3(pick(0.025)), round3(pick(0.975))],
        accuracy: round3(ratio(tp + tn, pairs.len())),
        sensitivity: round3(ratio(tp, tp + fneg)),
        specificity: round3(ratio(tn, tn + fp)),
        n: pairs.len(),
        patients,
    })
}
