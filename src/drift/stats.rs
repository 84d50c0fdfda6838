//! Drift statistics: plain functions over samples and binned counts, each
//! following SciPy's or Evidently's definition (named on the function) so the
//! tests can compare with them.

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Empty bins get this share before PSI and Jensen-Shannon take logarithms
/// (Evidently's choice).
pub const EMPTY_BIN_SHARE: f64 = 0.0001;

/// `scipy.stats.ks_2samp`'s statistic: the largest distance between the two
/// empirical distribution functions. Both slices must be sorted ascending and
/// free of NaN. None when either is empty.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut d: f64 = 0.0;
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n1 - j as f64 / n2).abs());
    }
    Some(d)
}

/// Above this many pairs (`n1 · n2`), [`ks_pvalue`] uses the limiting
/// distribution instead of the exact one (which costs `n1 · n2` steps).
pub const KS_EXACT_LIMIT: usize = 100_000;

/// Two-sided p-value of a two-sample KS statistic `d`: exact (the share of
/// orderings of the pooled samples whose ECDFs come as far apart, as
/// `scipy.stats.ks_2samp(method="exact")`, small values without
/// cancellation) when `n1 · n2 ≤ KS_EXACT_LIMIT`;
/// otherwise the limiting Kolmogorov distribution with Stephens' correction
/// (`λ = (√n + 0.12 + 0.11/√n)·d`, `n = n1·n2/(n1+n2)`).
pub fn ks_pvalue(d: f64, n1: usize, n2: usize) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    if n1.saturating_mul(n2) <= KS_EXACT_LIMIT {
        return ks_pvalue_exact(d, n1, n2);
    }
    let en = (n1 as f64 * n2 as f64) / (n1 + n2) as f64;
    let sq = en.sqrt();
    let lambda = (sq + 0.12 + 0.11 / sq) * d;
    kolmogorov_sf(lambda)
}

/// `P(D ≥ d)` under the null hypothesis, exactly as
/// `scipy.stats.ks_2samp(method="exact")` computes it: `d` is first
/// rounded to a multiple of `1/lcm(n1, n2)`, then the share of merged
/// orderings whose ECDFs come at least that far apart is computed
/// *directly*, never as `1 − P(inside)`, which cancels to 0 for every
/// strongly drifted feature (SciPy gives 1.8e-28 where `1 − inside` gives 0).
/// Equal sizes: SciPy's `_compute_prob_outside_square` (an alternating
/// series in Horner form). Otherwise: its `_compute_outer_prob_inside_method`,
/// Viehmann's recursion for the outside share (arXiv:2102.08037) over a
/// sliding window of the lattice column. Both are ported step by step, so
/// the results agree with SciPy's to rounding, tails included.
pub fn ks_pvalue_exact(d: f64, n1: usize, n2: usize) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (m, n) = (n1 as i64, n2 as i64);
    let g = gcd(m, n);
    let lcm = (m / g) * n;
    let h = (d * lcm as f64).round() as i64;
    if h <= 0 {
        return 1.0;
    }
    let p = if m == n {
        prob_outside_square(m, h)
    } else {
        outer_prob_inside_method(m, n, g, h)
    };
    p.clamp(0.0, 1.0)
}

/// `⌈a / b⌉` for `a ≥ 0`, `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// SciPy's `_compute_prob_outside_square(n, h)`: `P(D_{n,n} ≥ h/n)` as
/// `2·A0·(1 − A1·(1 − A2·(…)))`, each `Ak` a product of `h` ratios.
fn prob_outside_square(n: i64, h: i64) -> f64 {
    let mut p = 0.0;
    let mut k = n / h;
    while k >= 0 {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// SciPy's `_compute_outer_prob_inside_method(m, n, g, h)`: the share of
/// lattice paths from (0, 0) to (m, n) that leave `|x/m − y/n| < h/lcm`,
/// one column at a time over the window of cells that can still be inside.
fn outer_prob_inside_method(m: i64, n: i64, g: i64, h: i64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = (m / g, n / g);
    let (mut minj, mut maxj) = (0i64, ceil_div(h, mg).min(n + 1));
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for x in a.iter_mut().take(maxj as usize).skip(minj as usize) {
        *x = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((ng * i - h).div_euclid(mg) + 1).max(0).min(n);
        maxj = ceil_div(ng * i + h, mg).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let prev = a
                .get((jj + minj - lastminj) as usize)
                .copied()
                .unwrap_or(1.0);
            val = (prev * i as f64 + val * j as f64) / (i + j) as f64;
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            let to = (from + (lastlen - curlen) as usize).min(a.len());
            for x in &mut a[from.min(to)..to] {
                *x = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// `Q(λ) = 2 Σ (-1)^(k-1) exp(-2 k² λ²)`, the Kolmogorov survival function.
pub fn kolmogorov_sf(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += sign * term;
        if term < 1e-16 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// `scipy.stats.wasserstein_distance(u, v)`: the area between the two
/// empirical distribution functions. Both sorted ascending.
pub fn wasserstein(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut area = 0.0;
    let mut x = a[0].min(b[0]);
    while i < a.len() || j < b.len() {
        // Step both CDFs past x.
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(p), Some(q)) => p.min(*q),
            (Some(p), None) => *p,
            (None, Some(q)) => *q,
            (None, None) => break,
        };
        area += (i as f64 / n1 - j as f64 / n2).abs() * (next - x);
        x = next;
    }
    Some(area)
}

/// Evidently's "normed Wasserstein": the distance divided by the reference's
/// standard deviation (population, `np.std`). None for a constant reference.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> Option<f64> {
    let sd = std_dev(reference)?;
    if sd == 0.0 {
        return None;
    }
    wasserstein(reference, current).map(|w| w / sd)
}

/// Population standard deviation (`np.std`).
pub fn std_dev(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    Some((v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt())
}

/// Shares of counts, empty bins replaced by [`EMPTY_BIN_SHARE`].
pub fn shares(counts: &[f64]) -> Option<Vec<f64>> {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return None;
    }
    Some(
        counts
            .iter()
            .map(|c| if *c > 0.0 { c / total } else { EMPTY_BIN_SHARE })
            .collect(),
    )
}

/// Population Stability Index of binned counts: `Σ (c − r) ln(c / r)` over
/// the shares, empty bins at [`EMPTY_BIN_SHARE`].
pub fn psi(reference: &[f64], current: &[f64]) -> Option<f64> {
    let r = shares(reference)?;
    let c = shares(current)?;
    Some(r.iter().zip(&c).map(|(r, c)| (c - r) * (c / r).ln()).sum())
}

/// `scipy.spatial.distance.jensenshannon(p, q)` (natural logarithm) of the
/// binned shares; SciPy normalises each vector to sum to one.
pub fn jensen_shannon(reference: &[f64], current: &[f64]) -> Option<f64> {
    let norm = |v: Vec<f64>| {
        let s: f64 = v.iter().sum();
        v.into_iter().map(|x| x / s).collect::<Vec<f64>>()
    };
    let p = norm(shares(reference)?);
    let q = norm(shares(current)?);
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .map(|(x, y)| if *x > 0.0 { x * (x / y).ln() } else { 0.0 })
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    let js = (kl(&p, &m) + kl(&q, &m)) / 2.0;
    Some(js.max(0.0).sqrt())
}

/// Hellinger distance of the binned shares: `√(Σ (√p − √q)²) / √2`.
pub fn hellinger(reference: &[f64], current: &[f64]) -> Option<f64> {
    let p = shares(reference)?;
    let q = shares(current)?;
    let ps: f64 = p.iter().sum();
    let qs: f64 = q.iter().sum();
    let s: f64 = p
        .iter()
        .zip(&q)
        .map(|(a, b)| ((a / ps).sqrt() - (b / qs).sqrt()).powi(2))
        .sum();
    Some(s.sqrt() / std::f64::consts::SQRT_2)
}

/// `scipy.stats.chisquare(f_obs=current, f_exp=reference scaled to the
/// current total)`: the statistic and its p-value (k − 1 degrees of freedom).
/// Categories absent from the reference get [`EMPTY_BIN_SHARE`] of it.
pub fn chi_squared(reference: &[f64], current: &[f64]) -> Option<(f64, f64)> {
    if reference.len() < 2 || reference.len() != current.len() {
        return None;
    }
    let n: f64 = current.iter().sum();
    if n <= 0.0 {
        return None;
    }
    let expected: Vec<f64> = shares(reference)?;
    let es: f64 = expected.iter().sum();
    let stat: f64 = current
        .iter()
        .zip(&expected)
        .map(|(o, e)| {
            let e = e / es * n;
            (o - e) * (o - e) / e
        })
        .sum();
    let dist = ChiSquared::new((reference.len() - 1) as f64).ok()?;
    Some((stat, dist.sf(stat)))
}

/// Counts of `values` in the bins given by `edges` (ascending inner edges:
/// bin 0 is `< edges[0]`, bin i is `[edges[i-1], edges[i])`, the last is
/// `>= edges[last]`), as `np.histogram` over `[-inf, edges..., inf]` would
/// count them with right-open bins.
pub fn bin_counts(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0.0; edges.len() + 1];
    for v in values {
        counts[bin_of(*v, edges)] += 1.0;
    }
    counts
}

/// The bin of one value (see [`bin_counts`]).
pub fn bin_of(v: f64, edges: &[f64]) -> usize {
    edges.partition_point(|e| *e <= v)
}

/// Quantile bin edges from a sorted sample: the distinct values at `i/bins`
/// (`np.quantile`, linear interpolation), i = 1..bins-1.
pub fn quantile_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    let mut edges: Vec<f64> = (1..bins)
        .map(|i| quantile(sorted, i as f64 / bins as f64))
        .collect();
    edges.dedup();
    edges
}

/// `np.quantile(sorted, q)` with linear interpolation.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = q * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Multiple-testing correction of p-values: which ones stay significant at
/// `alpha`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    None,
    Bonferroni,
    /// Benjamini–Hochberg false discovery rate.
    Fdr,
}

pub fn significant(pvalues: &[f64], alpha: f64, correction: Correction) -> Vec<bool> {
    let m = pvalues.len();
    match correction {
        Correction::None => pvalues.iter().map(|p| *p < alpha).collect(),
        Correction::Bonferroni => pvalues.iter().map(|p| *p < alpha / m as f64).collect(),
        Correction::Fdr => {
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by(|a, b| pvalues[*a].total_cmp(&pvalues[*b]));
            // The largest rank k with p_(k) <= k/m * alpha; all up to it are significant.
            let mut cut = 0;
            for (rank, &i) in order.iter().enumerate() {
                if pvalues[i] <= (rank + 1) as f64 / m as f64 * alpha {
                    cut = rank + 1;
                }
            }
            let mut out = vec![false; m];
            for &i in &order[..cut] {
                out[i] = true;
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_and_wasserstein_on_small_samples() {
        let a = [1.0, 2.0, 3.0];
        let b = [2.0, 3.0, 4.0, 5.0];
        // F_a - F_b at x=1: 1/3; x=2: 2/3-1/4; x=3: 1-2/4 = 0.5.
        assert!((ks_statistic(&a, &b).unwrap() - 0.5).abs() < 1e-15);
        // scipy.stats.wasserstein_distance([0,1,3],[5,6,8]) = 5.0
        assert!((wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]).unwrap() - 5.0).abs() < 1e-12);
        // wasserstein_distance([0, 1], [0, 1, 1, 1]) = 0.25
        assert!((wasserstein(&[0.0, 1.0], &[0.0, 1.0, 1.0, 1.0]).unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(ks_statistic(&a, &a), Some(0.0));
        assert_eq!(ks_statistic(&[], &a), None);
    }

    #[test]
    fn exact_ks_pvalues() {
        // scipy.stats.ks_2samp([1,2,3], [4,5,6]).pvalue = 0.1 (1 - 18/20).
        assert!((ks_pvalue_exact(1.0, 3, 3) - 0.1).abs() < 1e-12);
        // ks_2samp([1,2,3,4], [2.5,5,6]): D = 2/3, p = 0.4.
        let d = ks_statistic(&[1.0, 2.0, 3.0, 4.0], &[2.5, 5.0, 6.0]).unwrap();
        assert!((d - 2.0 / 3.0).abs() < 1e-12);
        assert!((ks_pvalue_exact(d, 4, 3) - 0.4).abs() < 1e-12);
        assert_eq!(ks_pvalue_exact(0.0, 5, 5), 1.0);
    }

    /// Tails included: `scipy.stats._stats_py._attempt_exact_2kssamp(n1, n2,
    /// gcd, d, "two-sided")` (SciPy 1.17.1), compared by relative error,
    /// since an absolute tolerance says nothing about 1e-158.
    #[test]
    fn exact_ks_pvalues_in_the_tails_equal_scipy() {
        let scipy = [
            (3, 3, 1.0, 0.09999999999999999),
            (4, 3, 0.6666666666666666, 0.39999999999999997),
            (100, 100, 0.5, 1.0024645454361508e-11),
            (100, 100, 0.9, 4.958889584060123e-43),
            (200, 150, 0.6, 3.266110981199099e-29),
            (500, 200, 0.8, 7.325883600450102e-93),
            (300, 333, 0.95, 1.1274346447397678e-158),
            (50, 70, 0.1, 0.9026789638270555),
            (1000, 100, 0.7, 1.9921095411887889e-44),
            (569, 175, 0.62, 4.354476134658988e-49),
            (200, 500, 1.0, 7.945950170240135e-181),
            (250, 400, 0.3, 1.0253330047847161e-12),
        ];
        for (n1, n2, d, want) in scipy {
            let got = ks_pvalue_exact(d, n1, n2);
            assert!(got > 0.0, "({n1}, {n2}, {d}): 0 where SciPy gives {want:e}");
            let rel = (got - want).abs() / want;
            assert!(
                rel < 1e-12,
                "({n1}, {n2}, {d}): {got:e} vs SciPy {want:e} (rel {rel:e})"
            );
            // Symmetric in the two sizes.
            assert_eq!(got, ks_pvalue_exact(d, n2, n1));
        }
    }

    #[test]
    fn kolmogorov_distribution_values() {
        // Q(1.0) = 0.26999967..., Q(1.36) ≈ 0.0494 (the 5% critical value).
        assert!((kolmogorov_sf(1.0) - 0.269_999_671).abs() < 1e-8);
        assert!((kolmogorov_sf(1.358) - 0.05).abs() < 1e-3);
        assert_eq!(kolmogorov_sf(0.0), 1.0);
    }

    #[test]
    fn binned_distances() {
        let r = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(psi(&r, &r), Some(0.0));
        assert_eq!(jensen_shannon(&r, &r), Some(0.0));
        assert!(hellinger(&r, &r).unwrap().abs() < 1e-12);
        let c = [40.0, 30.0, 20.0, 10.0];
        // PSI = Σ (c-r) ln(c/r) = 2·(0.3·ln4 + 0.1·ln(1.5)).
        let want = 2.0 * (0.3 * 4f64.ln() + 0.1 * 1.5f64.ln());
        assert!((psi(&r, &c).unwrap() - want).abs() < 1e-12);
        let (stat, p) = chi_squared(&r, &r).unwrap();
        assert_eq!(stat, 0.0);
        assert!((p - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bins_and_quantiles() {
        let sorted: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), 50.0);
        assert_eq!(quantile_edges(&sorted, 4), vec![25.0, 50.0, 75.0]);
        assert_eq!(
            bin_counts(&[-1.0, 25.0, 49.9, 80.0, 1e9], &[25.0, 50.0, 75.0]),
            vec![1.0, 2.0, 0.0, 2.0]
        );
    }

    #[test]
    fn corrections() {
        let p = [0.001, 0.01, 0.03, 0.2];
        assert_eq!(
            significant(&p, 0.05, Correction::None),
            vec![true, true, true, false]
        );
        assert_eq!(
            significant(&p, 0.05, Correction::Bonferroni),
            vec![true, true, false, false]
        );
        // BH: 0.001<=0.0125, 0.01<=0.025, 0.03<=0.0375, 0.2>0.05.
        assert_eq!(
            significant(&p, 0.05, Correction::Fdr),
            vec![true, true, true, false]
        );
    }

    /// On samples from one distribution, KS at α = 0.05 rejects about 5% of
    /// the time (fixed seeds; 400 trials; the bound is 5% + 3 standard errors).
    #[test]
    fn ks_false_positive_rate_on_undrifted_data() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut normal = || {
            let (u, v) = (rng.f64().max(1e-12), rng.f64());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let trials = 400;
        let mut rejected = 0;
        for _ in 0..trials {
            let mut a: Vec<f64> = (0..500).map(|_| normal()).collect();
            let mut b: Vec<f64> = (0..300).map(|_| normal()).collect();
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            let d = ks_statistic(&a, &b).unwrap();
            if ks_pvalue(d, a.len(), b.len()) < 0.05 {
                rejected += 1;
            }
        }
        let rate = rejected as f64 / trials as f64;
        let bound = 0.05 + 3.0 * (0.05f64 * 0.95 / trials as f64).sqrt();
        assert!(rate <= bound, "false-positive rate {rate} above {bound}");
        assert!(
            rate > 0.01,
            "a test that never rejects is broken too: {rate}"
        );
    }
}
