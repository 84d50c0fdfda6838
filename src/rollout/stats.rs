//! The tests behind the canary gate, written to match SciPy's definitions
//! (checked against SciPy in tests/it/rollout.rs).

use statrs::distribution::{ContinuousCDF, Normal};

fn normal_sf(z: f64) -> f64 {
    Normal::standard().sf(z)
}

/// One-sided p-value of a pooled two-proportion z-test for "the first
/// proportion is greater than the second" (`x` successes of `n`). Its
/// square is the Pearson chi-square of the 2x2 table without continuity
/// correction (SciPy's `chi2_contingency(..., correction=False)`). None
/// without samples; 0.5 when both proportions are 0 or both are 1.
pub fn two_proportion_p_greater(x1: f64, n1: f64, x2: f64, n2: f64) -> Option<f64> {
    if n1 <= 0.0 || n2 <= 0.0 {
        return None;
    }
    let pooled = (x1 + x2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 || !se.is_finite() {
        return Some(0.5);
    }
    Some(normal_sf((x1 / n1 - x2 / n2) / se))
}

/// One-sided p-value of the Mann-Whitney U test for "x tends to be greater
/// than y", from per-bin counts of both samples over the same ordered bins
/// (every value in one bin is a tie). Normal approximation with tie
/// correction and continuity correction: SciPy's
/// `mannwhitneyu(x, y, alternative="greater", method="asymptotic")` on the
/// bin indices. None when either sample is empty or every value ties.
pub fn mann_whitney_binned_p_greater(x: &[u64], y: &[u64]) -> Option<f64> {
    let (nx, ny) = (x.iter().sum::<u64>() as f64, y.iter().sum::<u64>() as f64);
    if nx == 0.0 || ny == 0.0 || x.len() != y.len() {
        return None;
    }
    let n = nx + ny;
    let (mut below, mut rank_sum, mut ties) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let t = (a + b) as f64;
        if t == 0.0 {
            continue;
        }
        let mid_rank = below + (t + 1.0) / 2.0;
        rank_sum += *a as f64 * mid_rank;
        ties += t * t * t - t;
        below += t;
    }
    let u = rank_sum - nx * (nx + 1.0) / 2.0;
    let mu = nx * ny / 2.0;
    let s = (nx * ny / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))).sqrt();
    if s == 0.0 || !s.is_finite() {
        return None;
    }
    Some(normal_sf((u - mu - 0.5) / s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // 90/100 against 80/100: z = 0.1 / sqrt(0.85 * 0.15 * 0.02) = 1.98029508...; SciPy: norm.sf(z) = 0.023835190328
        let p = two_proportion_p_greater(90.0, 100.0, 80.0, 100.0).unwrap();
        assert!((p - 0.023_835_190_328).abs() < 1e-9, "{p}");
        assert_eq!(two_proportion_p_greater(5.0, 5.0, 7.0, 7.0), Some(0.5));
        assert_eq!(two_proportion_p_greater(1.0, 0.0, 1.0, 2.0), None);
        // Identical bins: no evidence either way (p near 0.5, above it by the continuity correction).
        let p = mann_whitney_binned_p_greater(&[10, 20, 5], &[10, 20, 5]).unwrap();
        assert!(p > 0.5 && p < 0.6, "{p}");
        // Clearly shifted up.
        assert!(mann_whitney_binned_p_greater(&[0, 5, 30], &[30, 5, 0]).unwrap() < 1e-6);
        assert_eq!(mann_whitney_binned_p_greater(&[0, 3, 0], &[0, 4, 0]), None);
    }
}
