//! Measures of search quality and speed as the ANN field reports them (ann-benchmarks, FAISS
//! benchs): recall@k against ground truth, latency percentiles, QPS.

/// k-recall@k averaged over queries: |top-k found ∩ top-k true| / k (ann-benchmarks'
/// "recall"). `found` is `nq × k_found` ids, `truth` `nq × k_truth` ids, row-major; uses the
/// first `k` of each row (`k` ≤ both widths). Ids of −1 never match.
pub fn recall_at_k(found: &[i64], k_found: usize, truth: &[i64], k_truth: usize, k: usize) -> f64 {
    assert!(k <= k_found && k <= k_truth && k > 0, "invariant: k within both widths");
    let nq = found.len() / k_found;
    if nq == 0 {
        return 0.0;
    }
    let mut hits = 0usize;
    for q in 0..nq {
        let t = &truth[q * k_truth..q * k_truth + k];
        let f = &found[q * k_found..q * k_found + k];
        hits += f.iter().filter(|&&id| id >= 0 && t.contains(&id)).count();
    }
    hits as f64 / (nq * k) as f64
}

/// 1-recall@k (FAISS's "R@k"): fraction of queries whose true nearest neighbour is among the
/// first `k` found.
pub fn one_recall_at_k(found: &[i64], k_found: usize, truth: &[i64], k_truth: usize, k: usize) -> f64 {
    let nq = found.len() / k_found;
    if nq == 0 {
        return 0.0;
    }
    let hits =
        (0..nq).filter(|&q| found[q * k_found..q * k_found + k.min(k_found)].contains(&truth[q * k_truth])).count();
    hits as f64 / nq as f64
}

/// The `p`-th percentile (0–100) of `samples` by nearest rank; 0 for no samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_overlap() {
        let truth = [1, 2, 3, 4, 5, 6];
        let found = [2, 1, 9, 7, 8, 6];
        assert_eq!(recall_at_k(&found, 3, &truth, 3, 3), 3.0 / 6.0);
        assert_eq!(recall_at_k(&found, 3, &truth, 3, 1), 0.0);
        assert_eq!(one_recall_at_k(&found, 3, &truth, 3, 2), 0.5);
    }

    #[test]
    fn percentile_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
    }
}
