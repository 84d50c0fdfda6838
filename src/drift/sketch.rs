//! Mergeable quantile sketches (DDSketch, relative accuracy 2%, values below 0.001 in
//! magnitude counted as zero) for
//! reference profiles built from all rows, and for drift windows kept as
//! sketches (`drift.window_mode: sketch`) when raw values would take too much
//! memory. Statistics on a sketch read its quantile function on a grid;
//! their tolerance against the exact statistics is tested (docs/drift.md).

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

/// At most this many points are read from a sketch to stand for its
/// distribution (a sketch of fewer values gives one point per value).
pub const MAX_POINTS: usize = 1_000;

/// A DDSketch with the operations drift needs.
#[derive(Clone, Serialize, Deserialize)]
pub struct Sketch(DDSketch);

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch")
            .field("count", &self.count())
            .finish()
    }
}

impl PartialEq for Sketch {
    fn eq(&self, other: &Self) -> bool {
        self.count() == other.count() && self.quantiles(16) == other.quantiles(16)
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::new()
    }
}

impl Sketch {
    /// 2% relative accuracy, magnitudes below 0.001 as zero, at most 2,048
    /// bins (a pane of standardised values takes about 4 KB).
    pub fn new() -> Sketch {
        Sketch(DDSketch::new(Config::new(0.02, 2048, 1e-3)))
    }

    pub fn add(&mut self, x: f64) {
        if x.is_finite() {
            self.0.add(x);
        }
    }

    /// Adds another sketch's values (the union of the two inputs).
    pub fn merge(&mut self, other: &Sketch) {
        // Only fails on sketches with different configurations; ours share one.
        let _ = self.0.merge(&other.0);
    }

    pub fn count(&self) -> usize {
        self.0.count()
    }

    /// Approximate memory of the sketch's bins (bytes).
    pub fn bin_bytes(&self) -> usize {
        self.0.length() * std::mem::size_of::<u64>()
    }

    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q.clamp(0.0, 1.0)).ok().flatten()
    }

    /// The quantiles at `(i + 0.5) / n`, i = 0..n: the sketch's distribution
    /// as `n` equally likely points (ascending).
    pub fn quantiles(&self, n: usize) -> Vec<f64> {
        (0..n)
            .filter_map(|i| self.quantile((i as f64 + 0.5) / n as f64))
            .collect()
    }

    /// The sketch's values as points (ascending): one per value, each at its
    /// bin's representative value, up to [`MAX_POINTS`] (then equally spaced
    /// quantiles).
    pub fn points(&self) -> Vec<f64> {
        let n = self.count();
        if n == 0 {
            return Vec::new();
        }
        if n <= MAX_POINTS {
            if n == 1 {
                return self.quantile(0.5).into_iter().collect();
            }
            // Rank i is read at q = (i + 0.5) / (n - 1), inside rank i's step.
            let mut out: Vec<f64> = (0..n)
                .filter_map(|i| self.quantile(((i as f64 + 0.5) / (n - 1) as f64).min(1.0)))
                .collect();
            out.sort_by(f64::total_cmp);
            return out;
        }
        self.quantiles(MAX_POINTS)
    }
}

/// A sketch of values standardised by a reference's center and scale:
/// DDSketch's error is relative to a value's magnitude, so a feature that
/// lives far from zero in a narrow band (0.05 to 0.10) would fall into a few
/// bins; centred and scaled, its values spread around zero where the bins are
/// fine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scaled {
    pub sketch: Sketch,
    pub center: f64,
    pub scale: f64,
}

impl Scaled {
    /// `scale` must be above zero (1 is used otherwise).
    pub fn new(center: f64, scale: f64) -> Scaled {
        Scaled {
            sketch: Sketch::new(),
            center,
            scale: if scale > 0.0 && scale.is_finite() {
                scale
            } else {
                1.0
            },
        }
    }

    pub fn add(&mut self, x: f64) {
        self.sketch.add((x - self.center) / self.scale);
    }

    /// Merges a sketch standardised the same way.
    pub fn merge(&mut self, other: &Scaled) {
        self.sketch.merge(&other.sketch);
    }

    pub fn count(&self) -> usize {
        self.sketch.count()
    }

    /// The distribution as points on the original scale (see [`Sketch::points`]).
    pub fn points(&self) -> Vec<f64> {
        self.sketch
            .points()
            .into_iter()
            .map(|y| y * self.scale + self.center)
            .collect()
    }
}

/// The KS statistic between a sorted sample and a sketch.
pub fn ks(reference: &[f64], window: &Scaled) -> Option<f64> {
    super::stats::ks_statistic(reference, &window.points())
}

/// The Wasserstein distance between a sorted sample and a sketch.
pub fn wasserstein(reference: &[f64], window: &Scaled) -> Option<f64> {
    super::stats::wasserstein(reference, &window.points())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rng: &mut fastrand::Rng, kind: u32, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| match kind % 3 {
                0 => rng.f64() * 100.0 - 50.0,
                1 => (-rng.f64().max(1e-12).ln()) * 3.0,
                _ => {
                    let (u, v) = (rng.f64().max(1e-12), rng.f64());
                    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * 10.0 + 40.0
                }
            })
            .collect()
    }

    /// Merging the sketches of two samples gives the sketch of their union:
    /// every quantile within the sketch's error bound (2%, or 0.001 near zero) of the
    /// union's (200 random cases; in fact equal, as the bins are the same).
    #[test]
    fn merging_equals_sketching_the_union() {
        let mut rng = fastrand::Rng::with_seed(9);
        for case in 0..200 {
            let (na, nb) = (1 + rng.usize(0..2000), 1 + rng.usize(0..2000));
            let a = sample(&mut rng, case, na);
            let b = sample(&mut rng, case / 3 + 1, nb);
            let (mut sa, mut sb, mut su) = (Sketch::new(), Sketch::new(), Sketch::new());
            a.iter().for_each(|x| sa.add(*x));
            b.iter().for_each(|x| sb.add(*x));
            a.iter().chain(&b).for_each(|x| su.add(*x));
            sa.merge(&sb);
            assert_eq!(sa.count(), su.count());
            for i in 0..=100 {
                let q = i as f64 / 100.0;
                let (m, u) = (sa.quantile(q).unwrap(), su.quantile(q).unwrap());
                assert!(
                    (m - u).abs() <= 0.02 * u.abs() + 1e-3,
                    "case {case} q {q}: {m} vs {u}"
                );
            }
        }
    }

    /// A sketch's quantiles are within 2% (relative, or 0.001 near zero) of the exact ones.
    #[test]
    fn quantiles_within_the_relative_error_bound() {
        let mut rng = fastrand::Rng::with_seed(4);
        let mut v = sample(&mut rng, 1, 5000);
        let mut s = Sketch::new();
        v.iter().for_each(|x| s.add(*x));
        v.sort_by(f64::total_cmp);
        for i in 1..100 {
            let q = i as f64 / 100.0;
            let rank = (q * (v.len() - 1) as f64) as usize;
            let exact = v[rank];
            let got = s.quantile(q).unwrap();
            assert!(
                (got - exact).abs() <= 0.0201 * exact.abs() + 1e-3,
                "q {q}: {got} vs {exact}"
            );
        }
    }
}
