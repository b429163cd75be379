//! Statistics helpers shared by tests.

/// Area under the ROC curve of `scores` against binary `labels` (1 = positive), computed as
/// the Mann–Whitney U statistic: the probability that a random positive scores above a random
/// negative, ties counting one half. Returns NaN when either class is empty or the lengths
/// differ. O(n log n).
pub fn auc(scores: &[f64], labels: &[u8]) -> f64 {
    if scores.len() != labels.len() {
        return f64::NAN;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mid-ranks for ties.
    let mut ranks = vec![0.0f64; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = mid;
        }
        i = j + 1;
    }
    let n_pos = labels.iter().filter(|&&l| l != 0).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l != 0)
        .map(|(r, _)| r)
        .sum();
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure
    use super::auc;

    /// The definition, pair by pair.
    fn brute(scores: &[f64], labels: &[u8]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if labels[i] == 1 && labels[j] == 0 {
                    den += 1.0;
                    num += if si > sj {
                        1.0
                    } else if si == sj {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        num / den
    }

    #[test]
    fn auc_matches_the_pairwise_definition_with_ties() {
        assert_eq!(auc(&[1.0, 2.0, 3.0, 4.0], &[0, 0, 1, 1]), 1.0);
        assert_eq!(auc(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 0, 0]), 0.0);
        assert_eq!(auc(&[5.0; 6], &[0, 1, 0, 1, 0, 1]), 0.5);
        let mut x = 7u64;
        for n in [5usize, 17, 64] {
            let mut scores = Vec::new();
            let mut labels = Vec::new();
            for i in 0..n {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                scores.push(((x >> 33) % 7) as f64); // many ties
                labels.push(u8::from(i % 3 == 0));
            }
            assert!((auc(&scores, &labels) - brute(&scores, &labels)).abs() < 1e-12);
        }
    }

    #[test]
    fn auc_is_nan_without_both_classes_or_with_mismatched_lengths() {
        assert!(auc(&[1.0, 2.0], &[1, 1]).is_nan());
        assert!(auc(&[1.0, 2.0], &[0, 1, 1]).is_nan());
    }
}
