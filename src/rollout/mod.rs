//! Model updates: comparing a candidate model version with a baseline
//! (`GET /v1/gate`, shaped for Argo Rollouts' web metric provider and
//! Flagger's webhooks), and shadow traffic (`shadow`).
//!
//! The gate reads the same series `/metrics` serves: accuracy and labelled
//! rows per version (`modelwatch.quality.accuracy`, `modelwatch.quality.samples`
//! of one window), results per version (`modelwatch.model.requests`) and
//! durations per version (`modelwatch.model.request.duration`).

pub mod shadow;
pub mod stats;

use serde::Serialize;

use crate::alerts::figures::{histogram_quantile, Figures, Labels, Raw};
use crate::config::alerts::GateConfig;
use crate::telemetry::names::{self, attr};

/// One question to the gate.
#[derive(Debug, Clone, Default)]
pub struct GateRequest {
    pub baseline: String,
    pub candidate: String,
    /// Empty: every model.
    pub model: String,
    /// The quality window read for accuracy.
    pub window: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub value: Option<f64>,
    pub samples: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub baseline: Side,
    pub candidate: Side,
    /// Candidate minus baseline (latency: candidate p95 / baseline p95).
    pub difference: Option<f64>,
    pub limit: f64,
    pub test: &'static str,
    /// One-sided: the probability of a difference at least this bad if the versions were alike.
    pub p_value: Option<f64>,
    pub reason: String,
    /// Latency: the bucket bounds and each side's count per bucket (the evidence of the test).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bins: Option<Bins>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bins {
    pub upper_bounds: Vec<f64>,
    pub baseline: Vec<u64>,
    pub candidate: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateAnswer {
    pub verdict: Verdict,
    pub model: String,
    pub baseline: String,
    pub candidate: String,
    pub window: String,
    pub alpha: f64,
    pub min_samples: u64,
    pub checks: Vec<Check>,
    pub reasons: Vec<String>,
}

fn version_matches(labels: &Labels, model: &str, version: &str) -> bool {
    labels.get(attr::MODEL_VERSION).map(String::as_str) == Some(version)
        && (model.is_empty() || labels.get(attr::MODEL).map(String::as_str) == Some(model))
}

fn scalar(r: &Raw) -> f64 {
    match r {
        Raw::Scalar(v) => *v,
        _ => 0.0,
    }
}

/// Correct and labelled rows of one version in `window`.
fn accuracy_counts(f: &Figures, model: &str, version: &str, window: &str) -> (f64, u64) {
    let w: Labels = [(attr::WINDOW.to_string(), window.to_string())].into();
    let samples = f.series(&names::QUALITY_SAMPLES, &w);
    let accuracy = f.series(&names::QUALITY_ACCURACY, &w);
    let (mut correct, mut n) = (0.0, 0u64);
    for s in samples
        .iter()
        .filter(|s| version_matches(&s.labels, model, version))
    {
        let rows = scalar(&s.raw).round() as u64;
        // A window below quality.min_samples has no accuracy series: its rows count as unknown.
        if let Some(a) = accuracy.iter().find(|a| a.labels == s.labels) {
            correct += (scalar(&a.raw) * rows as f64).round();
            n += rows;
        }
    }
    (correct, n)
}

fn error_counts(f: &Figures, model: &str, version: &str) -> (f64, u64) {
    let (mut errors, mut n) = (0.0, 0.0);
    for s in f
        .series(&names::MODEL_REQUESTS, &Labels::new())
        .iter()
        .filter(|s| version_matches(&s.labels, model, version))
    {
        let v = scalar(&s.raw);
        n += v;
        if s.labels.get(attr::RESULT).map(String::as_str) == Some("error") {
            errors += v;
        }
    }
    (errors, n as u64)
}

/// Per-bucket (not cumulative) counts of one version's durations.
fn latency_bins(f: &Figures, model: &str, version: &str) -> (Vec<f64>, Vec<u64>) {
    let series = f.series(&names::MODEL_REQUEST_DURATION, &Labels::new());
    let total = crate::alerts::figures::sum(
        series
            .iter()
            .filter(|s| version_matches(&s.labels, model, version))
            .map(|s| &s.raw),
    );
    let Some(Raw::Histogram {
        bounds, cumulative, ..
    }) = total
    else {
        return (Vec::new(), Vec::new());
    };
    let counts = cumulative
        .iter()
        .scan(0, |below, c| {
            let n = c - *below;
            *below = *c;
            Some(n)
        })
        .collect();
    (bounds, counts)
}

fn cumulative(counts: &[u64]) -> Vec<u64> {
    counts
        .iter()
        .scan(0, |acc, c| {
            *acc += c;
            Some(*acc)
        })
        .collect()
}

/// Answers one gate question from the figures.
pub fn evaluate(f: &Figures, req: &GateRequest, cfg: &GateConfig) -> GateAnswer {
    let (b, c, model) = (&req.baseline, &req.candidate, &req.model);
    let min = cfg.min_samples;
    let mut checks = Vec::new();
    let short = |side: &str, version: &str, have: u64, what: &str| {
        format!("not enough samples yet: {side} {version} has {have} of {min} {what}")
    };
    let enough = |nb: u64, nc: u64, what: &str| -> Option<String> {
        if nb < min {
            Some(short("baseline", b, nb, what))
        } else if nc < min {
            Some(short("candidate", c, nc, what))
        } else {
            None
        }
    };

    // Accuracy: a one-sided two-proportion z-test (is the candidate less accurate?).
    if cfg.checks.iter().any(|x| x == "accuracy") {
        let spec = Proportion {
            name: "accuracy",
            test: "two-proportion z-test, one-sided (candidate less accurate)",
            samples: "labelled rows",
            max: cfg.max_accuracy_drop,
            lower_is_worse: true,
            fail: |c, pc, worse, b, pb, max, p| {
                format!("accuracy of {c} is {pc:.4}, {worse:.4} below {b}'s {pb:.4} (more than {max}; p = {p:.3e})")
            },
            pass: |c, pc, b, pb| format!("accuracy of {c} is {pc:.4} against {b}'s {pb:.4}"),
        };
        let base = accuracy_counts(f, model, b, &req.window);
        let cand = accuracy_counts(f, model, c, &req.window);
        checks.push(spec.check(base, cand, b, c, cfg.alpha, &enough));
    }

    // Error rate: a one-sided two-proportion z-test (more errors?).
    if cfg.checks.iter().any(|x| x == "error_rate") {
        let spec = Proportion {
            name: "error_rate",
            test: "two-proportion z-test, one-sided (candidate fails more often)",
            samples: "requests",
            max: cfg.max_error_rate_increase,
            lower_is_worse: false,
            fail: |c, pc, worse, b, pb, _max, p| {
                format!(
                    "error rate of {c} is {pc:.4}, {worse:.4} above {b}'s {pb:.4} (p = {p:.3e})"
                )
            },
            pass: |c, pc, b, pb| format!("error rate of {c} is {pc:.4} against {b}'s {pb:.4}"),
        };
        let base = error_counts(f, model, b);
        let cand = error_counts(f, model, c);
        checks.push(spec.check(base, cand, b, c, cfg.alpha, &enough));
    }

    // Latency: Mann-Whitney U on the binned durations, one-sided (slower?),
    // and the p95 ratio as the effect size.
    if cfg.checks.iter().any(|x| x == "latency") {
        let (bounds_b, bins_b) = latency_bins(f, model, b);
        let (bounds_c, bins_c) = latency_bins(f, model, c);
        let (nb, nc) = (bins_b.iter().sum::<u64>(), bins_c.iter().sum::<u64>());
        let bounds = if bounds_b.is_empty() {
            bounds_c.clone()
        } else {
            bounds_b.clone()
        };
        let p95 = |bins: &[u64]| histogram_quantile(0.95, &bounds, &cumulative(bins));
        let (qb, qc) = (p95(&bins_b), p95(&bins_c));
        let mut check = Check {
            name: "latency",
            verdict: Verdict::Inconclusive,
            baseline: Side { value: qb, samples: nb },
            candidate: Side { value: qc, samples: nc },
            difference: qc.zip(qb).and_then(|(c, b)| (b > 0.0).then(|| c / b)),
            limit: cfg.max_latency_ratio,
            test: "Mann-Whitney U on binned durations, one-sided (candidate slower), tie-corrected; value: p95 in seconds",
            p_value: None,
            reason: String::new(),
            bins: None,
        };
        match enough(nb, nc, "requests") {
            Some(r) => check.reason = r,
            None if bounds_b != bounds_c => {
                check.reason = "the versions' duration buckets differ".into()
            }
            None => {
                let p = stats::mann_whitney_binned_p_greater(&bins_c, &bins_b);
                check.p_value = p;
                let ratio = check.difference.unwrap_or(1.0);
                let significant = p.is_some_and(|p| p < cfg.alpha);
                (check.verdict, check.reason) = if ratio > cfg.max_latency_ratio && significant {
                    (Verdict::Fail, format!("latency p95 of {c} is {:.4}s, {ratio:.2}x {b}'s {:.4}s (more than {}x; p = {:.3e})", qc.unwrap_or(0.0), qb.unwrap_or(0.0), cfg.max_latency_ratio, p.unwrap_or(0.0)))
                } else {
                    (
                        Verdict::Pass,
                        format!(
                            "latency p95 of {c} is {:.4}s against {b}'s {:.4}s",
                            qc.unwrap_or(0.0),
                            qb.unwrap_or(0.0)
                        ),
                    )
                };
                check.bins = Some(Bins {
                    upper_bounds: bounds.clone(),
                    baseline: bins_b,
                    candidate: bins_c,
                });
            }
        }
        checks.push(check);
    }

    let verdict = if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if checks.is_empty() || checks.iter().any(|c| c.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    let reasons = checks
        .iter()
        .filter(|x| x.verdict == verdict || verdict == Verdict::Pass)
        .map(|x| format!("{}: {}", x.name, x.reason))
        .collect();
    GateAnswer {
        verdict,
        model: req.model.clone(),
        baseline: b.clone(),
        candidate: c.clone(),
        window: req.window.clone(),
        alpha: cfg.alpha,
        min_samples: min,
        checks,
        reasons,
    }
}

/// A comparison of two proportions (accuracy, error rate): what it is
/// called, which direction is worse, and how its verdict reads.
struct Proportion {
    name: &'static str,
    test: &'static str,
    samples: &'static str,
    /// The largest difference in the worse direction that still passes.
    max: f64,
    lower_is_worse: bool,
    fail: fn(&str, f64, f64, &str, f64, f64, f64) -> String,
    pass: fn(&str, f64, &str, f64) -> String,
}

impl Proportion {
    /// Fails when the candidate is worse by more than `max` and the one-sided
    /// two-proportion z-test says so at `alpha`; inconclusive while `enough` says why not.
    fn check(
        &self,
        (xb, nb): (f64, u64),
        (xc, nc): (f64, u64),
        b: &str,
        c: &str,
        alpha: f64,
        enough: &dyn Fn(u64, u64, &str) -> Option<String>,
    ) -> Check {
        let (pb, pc) = (ratio(xb, nb), ratio(xc, nc));
        let mut check = Check {
            name: self.name,
            verdict: Verdict::Inconclusive,
            baseline: Side {
                value: pb,
                samples: nb,
            },
            candidate: Side {
                value: pc,
                samples: nc,
            },
            difference: pc.zip(pb).map(|(c, b)| c - b),
            limit: if self.lower_is_worse {
                -self.max
            } else {
                self.max
            },
            test: self.test,
            p_value: None,
            reason: String::new(),
            bins: None,
        };
        if let Some(r) = enough(nb, nc, self.samples) {
            check.reason = r;
            return check;
        }
        let (nb, nc) = (nb as f64, nc as f64);
        let p = if self.lower_is_worse {
            stats::two_proportion_p_greater(xb, nb, xc, nc)
        } else {
            stats::two_proportion_p_greater(xc, nc, xb, nb)
        };
        check.p_value = p;
        let (vb, vc) = (pb.unwrap_or(0.0), pc.unwrap_or(0.0));
        let worse = if self.lower_is_worse {
            vb - vc
        } else {
            vc - vb
        };
        (check.verdict, check.reason) = if worse > self.max && p.is_some_and(|p| p < alpha) {
            (
                Verdict::Fail,
                (self.fail)(c, vc, worse, b, vb, self.max, p.unwrap_or(0.0)),
            )
        } else {
            (Verdict::Pass, (self.pass)(c, vc, b, vb))
        };
        check
    }
}

fn ratio(x: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| x / n as f64)
}
