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
