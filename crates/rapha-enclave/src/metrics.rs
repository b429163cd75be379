//! Validation metrics computed by the node from the trainer's predictions and the labels the
//! trainer never saw.
//!
//! These are the figures that leave and go into the receipt; anything the trainer says about
//! itself is kept apart as self-reported. AUC counts ties as one half; its 95% confidence
//! interval is AUC ± 1.96 standard errors by Hanley and McNeil's formula, from the rounded AUC
//! and the class counts alone. (A bootstrap over the records told apart labelings that share
//! their AUC, sensitivity and specificity: nearly every validation label, to the trainer.)

use serde::Serialize;

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

/// The 95% confidence interval of an AUC `a` over `pos` positive and `neg` negative records:
/// `a` ± 1.96 times Hanley and McNeil's standard error, clamped to [0, 1] and rounded. A
/// function of `a` and the counts only, so it tells nothing the AUC does not.
pub fn auc_ci95(a: f64, pos: usize, neg: usize) -> [f64; 2] {
    let (p, n) = (pos as f64, neg as f64);
    if pos == 0 || neg == 0 {
        return [a, a];
    }
    let q1 = a / (2.0 - a);
    let q2 = 2.0 * a * a / (1.0 + a);
    let var = (a * (1.0 - a) + (p - 1.0) * (q1 - a * a) + (n - 1.0) * (q2 - a * a)) / (p * n);
    let half = 1.96 * var.max(0.0).sqrt();
    [round3((a - half).max(0.0)), round3((a + half).min(1.0))]
}

/// Computes the metrics, or says why they are withheld.
///
/// `pairs` are `(label, score)` of labelled validation records that have a prediction;
/// `required` is the number of labelled validation records.
pub fn compute(
    pairs: &[(u8, f64)],
    required: usize,
    patients: usize,
    minimum_patients: usize,
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
    let auc = round3(auc_value);
    Ok(ValidationMetrics {
        auc,
        auc_ci95: auc_ci95(auc, tp + fneg, tn + fp),
        accuracy: round3(ratio(tp + tn, pairs.len())),
        sensitivity: round3(ratio(tp, tp + fneg)),
        specificity: round3(ratio(tn, tn + fp)),
        n: pairs.len(),
        patients,
    })
}

/// The node's membership-inference attack on a released model (issue 19's privacy audit):
/// the loss-based attack, which scores each record by the model's confidence in its true
/// label and guesses "member" for the higher scores. `attack_auc` is the AUC of members
/// (training records) against non-members (the audit split) of the same label on that score,
/// 0.5 when the model treats them alike; its CI is Hanley and McNeil's, as for the validation
/// AUC, with the patients on each side as the sample sizes once the audit has counted them
/// ([`MembershipAttack::over_patients`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MembershipAttack {
    pub attack_auc: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub members: usize,
    pub non_members: usize,
}

impl MembershipAttack {
    /// The same figure with its interval taken over patients instead of records: a patient's
    /// records are alike (one person's images, one label), so records are not independent
    /// draws and an interval over them is too narrow; the patients on each side are.
    /// Hanley and McNeil's formula with the patient counts (at most the record counts) as the
    /// sample sizes.
    #[must_use]
    pub fn over_patients(mut self, member_patients: usize, non_member_patients: usize) -> Self {
        let [lo, hi] = auc_ci95(
            self.attack_auc,
            member_patients.min(self.members),
            non_member_patients.min(self.non_members),
        );
        self.ci_low = lo;
        self.ci_high = hi;
        self
    }
}

/// The model's confidence in a record's true label: `p` for label 1, `1 - p` for label 0.
pub fn true_label_confidence(label: u8, p: f64) -> f64 {
    if label == 1 {
        p
    } else {
        1.0 - p
    }
}

/// The attack over `(label, probability of positive)` of members and of non-members.
///
/// Members are compared with non-members of the same label only (the Mann-Whitney count over
/// same-label pairs, `Σ U_c / Σ m_c·n_c`): confidence in the true label also depends on the
/// label itself (a model leaning to one class is more confident on it), and the training split
/// and the audit split need not hold the labels in the same mix, so a comparison across labels
/// would read that mix as membership. The CI is Hanley and McNeil's over the members and
/// non-members of the labels both sides hold. `None` when either side is empty, a probability
/// is not in [0, 1], or no label occurs on both sides.
pub fn membership_attack(
    members: &[(u8, f64)],
    non_members: &[(u8, f64)],
) -> Option<MembershipAttack> {
    let valid = |s: &&(u8, f64)| s.1.is_finite() && (0.0..=1.0).contains(&s.1);
    if members.is_empty()
        || non_members.is_empty()
        || members.iter().chain(non_members).any(|s| !valid(&s))
    {
        return None;
    }
    let (mut wins, mut weight, mut m_used, mut n_used) = (0.0, 0.0, 0usize, 0usize);
    for label in [0u8, 1] {
        let side = |records: &[(u8, f64)], member: u8| -> Vec<(u8, f64)> {
            records
                .iter()
                .filter(|r| r.0 == label)
                .map(|&(l, p)| (member, true_label_confidence(l, p)))
                .collect()
        };
        let (m, n) = (side(members, 1), side(non_members, 0));
        if m.is_empty() || n.is_empty() {
            continue;
        }
        let pairs = (m.len() * n.len()) as f64;
        let class_auc = auc(&[m.as_slice(), n.as_slice()].concat())?;
        wins += class_auc * pairs;
        weight += pairs;
        m_used += m.len();
        n_used += n.len();
    }
    if weight == 0.0 {
        return None;
    }
    let a = round3(wins / weight);
    let [ci_low, ci_high] = auc_ci95(a, m_used, n_used);
    Some(MembershipAttack {
        attack_auc: a,
        ci_low,
        ci_high,
        members: members.len(),
        non_members: non_members.len(),
    })
}

#[cfg(test)]
mod schema_tests {
    use rapha_core::release::{METRICS_CURVE_KEYS, METRICS_MAX_CURVE, METRICS_SCALAR_KEYS};
    use rapha_protocol::{MAX_CURVE, METRICS_KEYS};

    /// The leakage bound counts `metrics.json` by rapha-core's copy of the schema's shape.
    #[test]
    fn the_bounds_metrics_schema_is_the_protocols() {
        let curves = METRICS_KEYS
            .iter()
            .filter(|k| k.ends_with("_curve"))
            .count();
        assert_eq!(curves as u64, METRICS_CURVE_KEYS);
        assert_eq!((METRICS_KEYS.len() - curves) as u64, METRICS_SCALAR_KEYS);
        assert_eq!(MAX_CURVE as u64, METRICS_MAX_CURVE);
    }
}
