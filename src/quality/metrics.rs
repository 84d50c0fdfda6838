//! The maths of model quality: plain functions over slices, no I/O. Each
//! figure follows scikit-learn's definition (named on each function) so that
//! the integration tests can compare with it to 1e-9.

use serde::Serialize;

/// A confusion matrix over `k` classes: `cells[actual * k + predicted]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize)]
pub struct Confusion {
    pub k: usize,
    pub cells: Vec<f64>,
}

/// Precision, recall, F1 and support of one class (or an average).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: f64,
}

impl Confusion {
    pub fn new(k: usize) -> Confusion {
        Confusion {
            k,
            cells: vec![0.0; k * k],
        }
    }

    /// Grows to `k` classes, keeping the counts.
    pub fn grow(&mut self, k: usize) {
        if k <= self.k {
            return;
        }
        let mut cells = vec![0.0; k * k];
        for a in 0..self.k {
            for p in 0..self.k {
                cells[a * k + p] = self.cells[a * self.k + p];
            }
        }
        self.k = k;
        self.cells = cells;
    }

    pub fn add(&mut self, actual: usize, predicted: usize, weight: f64) {
        self.grow(actual.max(predicted) + 1);
        self.cells[actual * self.k + predicted] += weight;
    }

    pub fn get(&self, actual: usize, predicted: usize) -> f64 {
        self.cells[actual * self.k + predicted]
    }

    pub fn total(&self) -> f64 {
        self.cells.iter().sum()
    }

    /// `accuracy_score`.
    pub fn accuracy(&self) -> Option<f64> {
        let n = self.total();
        if n == 0.0 {
            return None;
        }
        Some((0..self.k).map(|c| self.get(c, c)).sum::<f64>() / n)
    }

    /// Classes that occur as an actual or a predicted value (scikit-learn's
    /// `unique_labels(y_true, y_pred)`).
    pub fn present(&self) -> Vec<usize> {
        (0..self.k)
            .filter(|&c| (0..self.k).any(|o| self.get(c, o) > 0.0 || self.get(o, c) > 0.0))
            .collect()
    }

    /// One class against the rest, with scikit-learn's `zero_division=0`.
    pub fn class(&self, c: usize) -> Prf {
        let tp = self.get(c, c);
        let actual: f64 = (0..self.k).map(|p| self.get(c, p)).sum();
        let predicted: f64 = (0..self.k).map(|a| self.get(a, c)).sum();
        prf(tp, predicted - tp, actual - tp)
    }

    /// `precision_recall_fscore_support(average="macro")` over present classes.
    pub fn macro_avg(&self) -> Option<Prf> {
        let present = self.present();
        if present.is_empty() {
            return None;
        }
        let n = present.len() as f64;
        let mut out = Prf {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            support: 0.0,
        };
        for c in present {
            let p = self.class(c);
            out.precision += p.precision / n;
            out.recall += p.recall / n;
            out.f1 += p.f1 / n;
            out.support += p.support;
        }
        Some(out)
    }

    /// `average="weighted"`: each class weighted by its support.
    pub fn weighted_avg(&self) -> Option<Prf> {
        let total = self.total();
        if total == 0.0 {
            return None;
        }
        let mut out = Prf {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            support: total,
        };
        for c in self.present() {
            let p = self.class(c);
            let w = p.support / total;
            out.precision += p.precision * w;
            out.recall += p.recall * w;
            out.f1 += p.f1 * w;
        }
        Some(out)
    }
}

/// Precision, recall and F1 from counts (`zero_division=0`). F1 is
/// `2 TP / (2 TP + FP + FN)`, as scikit-learn computes it.
pub fn prf(tp: f64, fp: f64, fn_: f64) -> Prf {
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Prf {
        precision: div(tp, tp + fp),
        recall: div(tp, tp + fn_),
        f1: div(2.0 * tp, 2.0 * tp + fp + fn_),
        support: tp + fn_,
    }
}

/// `roc_auc_score` for one binary problem from exact scores: the
/// Mann–Whitney statistic with tied scores counted as one half. None when
/// either class is absent.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (mid-)ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        let pos_in_run = order[i..=j].iter().filter(|&&r| positive[r]).count();
        rank_sum += mid * pos_in_run as f64;
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// AUC from binned scores: `pos[b]` and `neg[b]` count rows whose score fell
/// into bin `b` (ascending). Rows in one bin count as tied. Equal to
/// `roc_auc_score` on scores rounded down to their bin.
pub fn roc_auc_binned(pos: &[u64], neg: &[u64]) -> Option<f64> {
    let p: u64 = pos.iter().sum();
    let n: u64 = neg.iter().sum();
    if p == 0 || n == 0 {
        return None;
    }
    let mut below = 0.0;
    let mut acc = 0.0;
    for (pb, nb) in pos.iter().zip(neg) {
        acc += *pb as f64 * (below + 0.5 * *nb as f64);
        below += *nb as f64;
    }
    Some(acc / (p as f64 * n as f64))
}

/// The bin of a score in `[0, 1]` among `bins` equal bins (out-of-range scores clamp).
pub fn score_bin(score: f64, bins: usize) -> usize {
    if score.is_nan() || score <= 0.0 {
        return 0;
    }
    ((score * bins as f64).floor() as usize).min(bins - 1)
}

/// One row's contribution to `log_loss`: `-ln(p)` of the true class's
/// probability, clipped to `[eps, 1 - eps]` as scikit-learn does.
pub fn log_loss_term(p_true: f64) -> f64 {
    let eps = f64::EPSILON;
    -(p_true.clamp(eps, 1.0 - eps)).ln()
}

/// Regression errors (`mean_absolute_error`, `root_mean_squared_error`,
/// `mean_absolute_percentage_error`, `r2_score`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegressionFigures {
    pub mae: f64,
    pub rmse: f64,
    pub mape: f64,
    pub r2: Option<f64>,
}

/// The figures of `(prediction, label)` pairs; None when empty.
pub fn regression(pairs: &[(f64, f64)]) -> Option<RegressionFigures> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let mut abs = 0.0;
    let mut sq = 0.0;
    let mut ape = 0.0;
    let mut mean = 0.0;
    for (p, y) in pairs {
        abs += (y - p).abs();
        sq += (y - p) * (y - p);
        ape += ape_term(*p, *y);
        mean += y;
    }
    mean /= n;
    let ss_tot: f64 = pairs.iter().map(|(_, y)| (y - mean) * (y - mean)).sum();
    Some(RegressionFigures {
        mae: abs / n,
        rmse: (sq / n).sqrt(),
        mape: ape / n,
        r2: r2_from(sq, ss_tot, pairs.len()),
    })
}

/// `|y - p| / max(|y|, eps)`, scikit-learn's MAPE term.
pub fn ape_term(p: f64, y: f64) -> f64 {
    (y - p).abs() / y.abs().max(f64::EPSILON)
}

/// R² from the residual and total sums of squares, with scikit-learn's
/// `force_finite`: a constant label gives 1 for a perfect fit, else 0.
/// None for fewer than two rows (undefined in scikit-learn).
pub fn r2_from(ss_res: f64, ss_tot: f64, n: usize) -> Option<f64> {
    if n < 2 {
        return None;
    }
    if ss_tot == 0.0 {
        return Some(if ss_res == 0.0 { 1.0 } else { 0.0 });
    }
    Some(1.0 - ss_res / ss_tot)
}

/// Isotonic (non-decreasing) regression of `y` on `x`, predicting by linear
/// interpolation and clipping outside the fitted range: scikit-learn's
/// `IsotonicRegression(out_of_bounds="clip")`, ported step by step (equal
/// `x` values are averaged first; then pool-adjacent-violators) so the
/// fitted values are the same to the last bit.
#[derive(Debug, Clone, PartialEq)]
pub struct Isotonic {
    xs: Vec<f64>,
    ys: Vec<f64>,
}

impl Isotonic {
    /// Fits on pairs; None when there are none.
    pub fn fit(x: &[f64], y: &[f64]) -> Option<Isotonic> {
        if x.is_empty() {
            return None;
        }
        let mut order: Vec<usize> = (0..x.len()).collect();
        // lexsort((y, x)): by x, then y.
        order.sort_by(|&a, &b| x[a].total_cmp(&x[b]).then(y[a].total_cmp(&y[b])));
        // _make_unique: one point per distinct x, y averaged with weights.
        let mut ux: Vec<f64> = Vec::new();
        let mut uy: Vec<f64> = Vec::new();
        let mut uw: Vec<f64> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let xi = x[order[i]];
            let mut sum = 0.0;
            let mut w = 0.0;
            let mut j = i;
            while j < order.len() && x[order[j]] == xi {
                sum += y[order[j]];
                w += 1.0;
                j += 1;
            }
            ux.push(xi);
            uy.push(sum / w);
            uw.push(w);
            i = j;
        }
        pava(&mut uy, &mut uw);
        Some(Isotonic { xs: ux, ys: uy })
    }

    /// `np.interp` of `x` (clipped to the fitted range) over the fitted points.
    pub fn predict(&self, x: f64) -> f64 {
        let xs = &self.xs;
        let n = xs.len();
        if n == 1 || x <= xs[0] || x.is_nan() {
            return self.ys[0];
        }
        if x >= xs[n - 1] {
            return self.ys[n - 1];
        }
        // First index with xs[j] > x.
        let j = xs.partition_point(|v| *v <= x);
        let (x0, x1, y0, y1) = (xs[j - 1], xs[j], self.ys[j - 1], self.ys[j]);
        let slope = (y1 - y0) / (x1 - x0);
        slope * (x - x0) + y0
    }
}

/// scikit-learn's `_inplace_contiguous_isotonic_regression`.
fn pava(y: &mut [f64], w: &mut [f64]) {
    let n = y.len();
    let mut target: Vec<usize> = (0..n).collect();
    let mut i = 0;
    while i < n {
        let mut k = target[i] + 1;
        if k == n {
            break;
        }
        if y[i] < y[k] {
            i = k;
            continue;
        }
        let mut sum_wy = w[i] * y[i];
        let mut sum_w = w[i];
        loop {
            let prev_y = y[k];
            sum_wy += w[k] * y[k];
            sum_w += w[k];
            k = target[k] + 1;
            if k == n || prev_y < y[k] {
                y[i] = sum_wy / sum_w;
                w[i] = sum_w;
                target[i] = k - 1;
                target[k - 1] = i;
                if i > 0 {
                    i = target[i - 1];
                }
                break;
            }
        }
    }
    let mut i = 0;
    while i < n {
        let k = target[i] + 1;
        let v = y[i];
        for item in y.iter_mut().take(k).skip(i + 1) {
            *item = v;
        }
        i = k;
    }
}

/// Score calibration for confidence-based performance estimation: one
/// isotonic map per class (one-vs-rest), fitted on a labelled reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Binary problems calibrate only the positive class's score.
    pub binary_positive: Option<usize>,
    pub per_class: Vec<Option<Isotonic>>,
}

impl Calibration {
    /// Fits on reference rows `(actual class, scores by class)`. `k` classes;
    /// with `binary_positive` set (two classes), one map for that class.
    pub fn fit(rows: &[(usize, &[f64])], k: usize, binary_positive: Option<usize>) -> Calibration {
        let fit_class = |c: usize| {
            let (x, y): (Vec<f64>, Vec<f64>) = rows
                .iter()
                .filter_map(|(a, s)| s.get(c).map(|v| (*v, (*a == c) as u8 as f64)))
                .unzip();
            Isotonic::fit(&x, &y)
        };
        let per_class = match binary_positive {
            Some(pos) => (0..k)
                .map(|c| if c == pos { fit_class(c) } else { None })
                .collect(),
            None => (0..k).map(fit_class).collect(),
        };
        Calibration {
            binary_positive,
            per_class,
        }
    }

    /// Calibrated probabilities by class for one row's scores. Multi-class
    /// rows are normalised to sum to one.
    pub fn probabilities(&self, scores: &[f64]) -> Vec<f64> {
        let k = self.per_class.len();
        if let Some(pos) = self.binary_positive {
            let p = match (&self.per_class[pos], scores.get(pos)) {
                (Some(iso), Some(s)) => iso.predict(*s),
                (None, Some(s)) => *s,
                _ => 0.0,
            };
            let mut out = vec![0.0; k];
            out[pos] = p;
            out[1 - pos.min(1)] = 1.0 - p;
            return out;
        }
        let mut out: Vec<f64> = (0..k)
            .map(|c| match (&self.per_class[c], scores.get(c)) {
                (Some(iso), Some(s)) => iso.predict(*s),
                _ => 0.0,
            })
            .collect();
        let sum: f64 = out.iter().sum();
        if sum > 0.0 {
            for v in &mut out {
                *v /= sum;
            }
        }
        out
    }
}

/// Expected confusion matrix (CBPE, as NannyML describes it): each row adds
/// its calibrated probability of every actual class to the cell of the class
/// the model predicted. Accuracy, precision, recall and F1 follow from it as
/// from a realized matrix.
pub fn expected_confusion<'a>(
    calibration: &Calibration,
    rows: impl Iterator<Item = (usize, &'a [f64])>,
) -> Confusion {
    let mut m = Confusion::new(calibration.per_class.len());
    for (predicted, scores) in rows {
        for (actual, p) in calibration.probabilities(scores).into_iter().enumerate() {
            if p != 0.0 {
                m.add(actual, predicted, p);
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confusion(pairs: &[(usize, usize)]) -> Confusion {
        let mut m = Confusion::new(0);
        for (a, p) in pairs {
            m.add(*a, *p, 1.0);
        }
        m
    }

    #[test]
    fn classification_figures_match_hand_computed_values() {
        // y_true = [0,0,1,1,2,2], y_pred = [0,1,1,1,2,0]
        let m = confusion(&[(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 0)]);
        assert_eq!(m.accuracy(), Some(4.0 / 6.0));
        let c0 = m.class(0);
        assert_eq!((c0.precision, c0.recall), (0.5, 0.5));
        let c1 = m.class(1);
        assert_eq!((c1.precision, c1.recall), (2.0 / 3.0, 1.0));
        assert!((c1.f1 - 0.8).abs() < 1e-15);
        let macro_ = m.macro_avg().unwrap();
        assert!((macro_.recall - (0.5 + 1.0 + 0.5) / 3.0).abs() < 1e-15);
        let weighted = m.weighted_avg().unwrap();
        assert!((weighted.recall - 4.0 / 6.0).abs() < 1e-15);
    }

    #[test]
    fn zero_division_gives_zero_like_scikit_learn() {
        // Class 1 never predicted: precision 0, not NaN.
        let m = confusion(&[(0, 0), (1, 0)]);
        let c1 = m.class(1);
        assert_eq!((c1.precision, c1.recall, c1.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn auc_counts_ties_as_half() {
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.5, 0.6], &[true, true]), None);
        // Binned: the same data rounded to 10 bins.
        let mut pos = vec![0; 10];
        let mut neg = vec![0; 10];
        for (s, p) in [(0.1, false), (0.4, false), (0.35, true), (0.8, true)] {
            let b = score_bin(s, 10);
            if p {
                pos[b] += 1
            } else {
                neg[b] += 1
            }
        }
        assert_eq!(roc_auc_binned(&pos, &neg), Some(0.75));
        assert_eq!(score_bin(1.0, 10), 9);
        assert_eq!(score_bin(-1.0, 10), 0);
    }

    #[test]
    fn regression_figures() {
        let r = regression(&[(2.5, 3.0), (0.0, -0.5), (2.0, 2.0), (8.0, 7.0)]).unwrap();
        // scikit-learn's documented examples: MAE 0.5, R² 0.9486081370449679.
        assert!((r.mae - 0.5).abs() < 1e-15);
        assert!((r.r2.unwrap() - 0.948_608_137_044_967_9).abs() < 1e-12);
        assert!((r.rmse - 0.375f64.sqrt()).abs() < 1e-15);
        assert_eq!(r2_from(0.0, 0.0, 3), Some(1.0));
        assert_eq!(r2_from(1.0, 0.0, 3), Some(0.0));
        assert_eq!(regression(&[]), None);
    }

    #[test]
    fn isotonic_pools_violators_and_interpolates() {
        let iso = Isotonic::fit(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(iso.predict(2.0), 2.5);
        assert_eq!(iso.predict(3.0), 2.5);
        assert_eq!(iso.predict(3.5), 3.25);
        assert_eq!(iso.predict(0.0), 1.0);
        assert_eq!(iso.predict(9.0), 4.0);
        // Equal x values are averaged first.
        let iso = Isotonic::fit(&[1.0, 1.0, 2.0], &[0.0, 1.0, 1.0]).unwrap();
        assert_eq!(iso.predict(1.0), 0.5);
    }

    #[test]
    fn expected_confusion_from_calibrated_scores() {
        // A perfectly calibrated reference: the map is the identity on its points.
        let reference: Vec<(usize, Vec<f64>)> = vec![
            (0, vec![1.0, 0.0]),
            (1, vec![0.0, 1.0]),
            (0, vec![0.5, 0.5]),
            (1, vec![0.5, 0.5]),
        ];
        let rows: Vec<(usize, &[f64])> =
            reference.iter().map(|(a, s)| (*a, s.as_slice())).collect();
        let cal = Calibration::fit(&rows, 2, Some(1));
        let analysis = [(1usize, vec![0.25, 0.75]), (0usize, vec![0.9, 0.1])];
        let m = expected_confusion(&cal, analysis.iter().map(|(p, s)| (*p, s.as_slice())));
        // Row 1: predicted 1, P(actual 1) = 0.75; row 2: predicted 0, P(actual 1) = 0.1.
        assert!((m.get(1, 1) - 0.75).abs() < 1e-15);
        assert!((m.get(0, 1) - 0.25).abs() < 1e-15);
        assert!((m.get(1, 0) - 0.1).abs() < 1e-15);
        assert!((m.accuracy().unwrap() - (0.75 + 0.9) / 2.0).abs() < 1e-15);
    }
}
