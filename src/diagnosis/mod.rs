//! Diagnosis: when a model gets worse, which of the data, the model or the
//! environment explains it. [`diagnose`] is a pure function of the figures
//! the other parts already keep (quality windows with their segments, drift
//! and data quality, CBPE, versions first seen, environment changes, cgroup
//! and GPU readings, anomalies); each rule is written out in
//! docs/diagnosis.md with its test.

pub mod cli;

use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::json;

use crate::anomaly::AnomalySnapshot;
use crate::drift::segments::{Layout, Layouts};
use crate::drift::DriftSnapshot;
use crate::quality::engine::{ModelFigures, WindowFigures};
use crate::quality::segments::SegmentCounts;
use crate::resources::environment::{Change, ChangeLog, SeenModels};
use crate::resources::ResourceSnapshot;
use crate::rollout::stats::two_proportion_p_greater;

/// A verdict's cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    Data,
    Model,
    Environment,
}

impl Cause {
    pub const ALL: [Cause; 3] = [Cause::Data, Cause::Model, Cause::Environment];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Data => "data",
            Cause::Model => "model",
            Cause::Environment => "environment",
        }
    }
}

/// A finding's score at or above which its cause can be the verdict.
pub const THRESHOLD: f64 = 0.5;
/// The least fall of accuracy that counts (with p below [`SIGNIFICANCE`]).
pub const MIN_DROP: f64 = 0.02;
/// The p-value below which a fall of accuracy is more than chance.
pub const SIGNIFICANCE: f64 = 0.01;
/// Rows a segment needs, now, before it is reported.
pub const MIN_SEGMENT_ROWS: u64 = 10;
/// Findings listed per diagnosis.
pub const MAX_FINDINGS: usize = 12;

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub cause: Cause,
    /// `drift`, `data_quality`, `segment`, `covariate_shift`, `estimate_diverged`,
    /// `prediction_drift`, `concept_drift`,
    /// `version`, `environment_change`, `cpu_throttling`, `memory`, `gpu`,
    /// `upstream`, `anomaly`.
    pub kind: &'static str,
    /// 0 to 1: how strongly it points at its cause.
    pub score: f64,
    pub summary: String,
    pub figures: serde_json::Value,
    /// The period it covers, milliseconds since the Unix epoch.
    pub from_ms: u64,
    pub to_ms: u64,
}

/// How accuracy moved: the window against the reference period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityChange {
    pub reference_accuracy: Option<f64>,
    pub reference_labelled: u64,
    pub accuracy: Option<f64>,
    pub labelled: u64,
    /// One-sided p-value of "the reference's accuracy is greater".
    pub p_value: Option<f64>,
    /// The fall is at least `MIN_DROP` and its p-value below `SIGNIFICANCE`.
    pub fell: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_accuracy: Option<f64>,
    /// False when realized accuracy fell and CBPE's estimate did not follow.
    pub estimate_trustworthy: bool,
}

/// The answer of `/v1/diagnose`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    pub model: String,
    pub model_version: String,
    pub window: String,
    /// `data`, `model`, `environment`; `none` when nothing scores
    /// `THRESHOLD`; `unknown` when what is missing could hide a cause.
    pub verdict: String,
    pub summary: String,
    /// The highest finding score of each cause.
    pub scores: std::collections::BTreeMap<&'static str, f64>,
    /// What the diagnosis could not see (no labels, no drift reference, ...).
    pub missing: Vec<String>,
    pub quality: Option<QualityChange>,
    pub findings: Vec<Finding>,
}

/// Everything [`diagnose`] reads, borrowed from the running parts.
pub struct Inputs<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub window: &'a str,
    pub window_ms: u64,
    pub now_ms: u64,
    pub min_samples: usize,
    /// Every version of the model in the quality snapshot.
    pub quality: &'a [ModelFigures],
    pub quality_enabled: bool,
    pub drift: Option<&'a DriftSnapshot>,
    pub layout: Option<&'a Layout>,
    pub anomaly: Option<&'a AnomalySnapshot>,
    pub resources: Option<&'a ResourceSnapshot>,
    /// The readiness probe's last result.
    pub upstream: Option<&'a crate::admin::readiness::ReadinessSnapshot>,
    pub changes: &'a [Change],
    /// (model, version, first seen), in the order they were first seen.
    pub versions: &'a [(String, String, u64)],
    /// Requests and errors per model version since start.
    pub traffic: &'a [crate::admin::history::ModelTraffic],
}

fn window_of<'a>(m: &'a ModelFigures, window: &str) -> Option<&'a WindowFigures> {
    m.windows.iter().find(|w| w.window == window)
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The diagnosis of one model version over one window.
pub fn diagnose(i: &Inputs<'_>) -> Diagnosis {
    let from = i.now_ms.saturating_sub(i.window_ms);
    let mut findings: Vec<Finding> = Vec::new();
    let mut missing = Vec::new();
    let mut finding = |cause, kind, score: f64, summary: String, figures| {
        findings.push(Finding {
            cause,
            kind,
            score: round(score.clamp(0.0, 1.0)),
            summary,
            figures,
            from_ms: from,
            to_ms: i.now_ms,
        })
    };

    // What drifted, for this version.
    let drift = i.drift.and_then(|d| {
        d.models
            .iter()
            .find(|m| m.model == i.model && m.model_version == i.version)
    });
    // The inputs that drifted by the dataset verdict (p-values corrected
    // across features); the model's own outputs are not inputs.
    let (outputs_drifted, drifted): (Vec<&str>, Vec<&str>) = drift
        .iter()
        .flat_map(|d| d.drifted_features.iter().map(String::as_str))
        .partition(|f| *f == "prediction" || f.starts_with("llm."));

    // The symptom: accuracy in the window against the reference period.
    let this = i
        .quality
        .iter()
        .find(|m| m.model == i.model && m.model_version == i.version);
    let w = this.and_then(|m| window_of(m, i.window));
    let quality = this
        .zip(w)
        .map(|(m, w)| quality_change(m, w, i.min_samples));
    if !i.quality_enabled {
        missing.push("quality is off: no accuracy to diagnose".to_string());
    } else if this.is_none() {
        missing.push(format!(
            "no predictions of {} {} in the quality store",
            i.model, i.version
        ));
    } else if w.is_some_and(|w| !w.enough_labels) {
        missing.push(format!(
            "labels: {} of the window's predictions are labelled, {} needed for figures",
            w.map_or(0, |w| w.labelled),
            i.min_samples
        ));
    }
    if i.drift.is_none() {
        missing.push("drift is off: no view of the inputs".to_string());
    } else if drift.is_none() {
        missing.push("no drift reference for this model yet".to_string());
    }
    let fell = quality.as_ref().is_some_and(|q| q.fell);
    let mut trustworthy = true;

    // Data: features that drifted, ranked by their statistic.
    if let Some(d) = drift {
        let mut features: Vec<_> = d
            .features
            .iter()
            .filter(|f| drifted.contains(&f.feature.as_str()))
            .collect();
        features.sort_by(|a, b| b.statistic.total_cmp(&a.statistic));
        for f in features.iter().take(5) {
            finding(
                Cause::Data,
                "drift",
                if fell { 0.7 } else { 0.6 },
                format!(
                    "{} drifted ({}, statistic {:.3}, {} rows against {})",
                    f.feature,
                    test_score(f.method, f.score),
                    f.statistic,
                    f.window,
                    f.reference
                ),
                json!({"feature": f.feature, "method": f.method, "score": f.score,
                       "statistic": f.statistic, "threshold": f.threshold,
                       "window": f.window, "reference": f.reference}),
            );
        }
        // Outputs that moved: explained by the inputs when they moved too,
        // else the model answers differently to the same inputs.
        for f in d
            .features
            .iter()
            .filter(|f| outputs_drifted.contains(&f.feature.as_str()))
        {
            let (cause, score, why) = if drifted.is_empty() {
                (
                    Cause::Model,
                    0.55,
                    "while no input drifted: the model answers the same inputs differently",
                )
            } else {
                (Cause::Data, 0.3, "with the inputs")
            };
            finding(
                cause,
                "prediction_drift",
                score,
                format!(
                    "{} drifted {why} ({}, statistic {:.3})",
                    f.feature,
                    test_score(f.method, f.score),
                    f.statistic
                ),
                json!({"feature": f.feature, "method": f.method, "score": f.score,
                       "statistic": f.statistic, "window": f.window, "reference": f.reference}),
            );
        }
        // Data quality: an issue in at least a tenth of the recent values,
        // and at least twice (plus 5 points) its share before them.
        for issue in &d.issues {
            if issue.window_rows == 0 {
                continue;
            }
            let rate = issue.window_count as f64 / issue.window_rows as f64;
            let jumped = issue.earlier_rate.is_none_or(|e| rate >= 2.0 * e + 0.05);
            if rate >= 0.1 && jumped {
                finding(
                    Cause::Data,
                    "data_quality",
                    if fell { 0.7 } else { 0.6 },
                    format!(
                        "{}: {} in {:.0}% of the last {} values{}",
                        issue.feature,
                        issue.issue.as_str(),
                        rate * 100.0,
                        issue.window_rows,
                        issue
                            .earlier_rate
                            .map_or(String::new(), |e| format!(" ({:.1}% before)", e * 100.0))
                    ),
                    json!({"feature": issue.feature, "issue": issue.issue.as_str(),
                           "count": issue.window_count, "rows": issue.window_rows,
                           "rate": round(rate), "earlier_rate": issue.earlier_rate.map(round)}),
                );
            }
        }
    }

    let labelled = quality.as_ref().is_some_and(|q| q.accuracy.is_some());
    if let Some(q) = quality
        .as_ref()
        .filter(|q| q.accuracy.is_some() && q.reference_accuracy.is_none())
    {
        missing.push(format!(
            "reference period: {} labelled rows, {} needed to compare accuracy with",
            q.reference_labelled, i.min_samples
        ));
    }
    if let (Some(q), Some(m), Some(w), true) = (&quality, this, w, labelled) {
        // Data or model: where the loss is, and whether CBPE followed it.
        if q.fell {
            match i.layout {
                Some(layout) if !w.segments.bins.is_empty() => {
                    for s in segments(&m.segment_reference, &w.segments, layout, &drifted) {
                        finding(s.cause, "segment", s.score, s.summary, s.figures);
                    }
                }
                _ => missing.push(
                    "segments: predictions carry no feature bins (no drift reference when they were made)"
                        .to_string(),
                ),
            }
            let (r, a) = (
                q.reference_accuracy.unwrap_or(0.0),
                q.accuracy.unwrap_or(0.0),
            );
            let drop = r - a;
            if let Some(e) = q.estimated_accuracy {
                let figures =
                    json!({"estimated": round(e), "realized": round(a), "reference": round(r)});
                if e - a >= (drop / 2.0).max(0.05) {
                    trustworthy = false;
                    if drifted.is_empty() {
                        finding(
                            Cause::Model,
                            "concept_drift",
                            0.8,
                            format!(
                                "estimated accuracy {e:.3} while realized fell to {a:.3}, and no input drifted: the relation between inputs and labels changed (concept drift): retrain; CBPE's estimate is not to be trusted now"
                            ),
                            figures,
                        );
                    } else {
                        finding(
                            Cause::Data,
                            "estimate_diverged",
                            0.4,
                            format!(
                                "estimated accuracy {e:.3} while realized fell to {a:.3}: the drifted inputs took rows where the model is confidently wrong; CBPE's estimate is not to be trusted now"
                            ),
                            figures,
                        );
                    }
                } else if r - e >= drop / 2.0 {
                    finding(
                        Cause::Data,
                        "covariate_shift",
                        0.7,
                        format!(
                            "estimated accuracy fell with realized ({r:.3} to {e:.3} estimated, {a:.3} realized): the inputs moved (covariate shift)"
                        ),
                        figures,
                    );
                }
            }
        }
    } else if let (Some(m), Some(w)) = (this, w) {
        // No labels yet: CBPE alone.
        let reference = m.segment_reference.accuracy();
        if let (Some(e), Some(r)) = (w.estimated.as_ref(), reference) {
            if r - e.accuracy >= 0.05 {
                finding(
                    Cause::Data,
                    "covariate_shift",
                    0.6,
                    format!(
                        "no labels yet, and estimated accuracy fell from {r:.3} to {:.3}: the inputs moved",
                        e.accuracy
                    ),
                    json!({"estimated": round(e.accuracy), "reference": round(r)}),
                );
            }
        }
    }
    let quality = quality.map(|q| QualityChange {
        estimate_trustworthy: trustworthy,
        ..q
    });

    // Model: a version first seen in the window, against the one before it.
    version_findings(i, from, &mut finding);

    // Environment.
    if let Some(r) = i.resources {
        for (who, ratio, cg) in [
            (
                "modelwatch's container",
                r.cpu_throttled_ratio,
                r.cgroup.as_ref(),
            ),
            (
                "the model server",
                r.model_server_cpu_throttled_ratio,
                r.model_server_cgroup.as_ref(),
            ),
        ] {
            if let Some(ratio) = ratio.filter(|r| *r >= 0.2) {
                finding(
                    Cause::Environment,
                    "cpu_throttling",
                    0.6 + 0.3 * ratio,
                    format!(
                        "{who} is CPU-throttled in {:.0}% of its periods (limit {} cores)",
                        ratio * 100.0,
                        cg.and_then(|c| c.cpu_limit_cores)
                            .map_or("none".to_string(), |c| format!("{c:.2}"))
                    ),
                    json!({"who": who, "throttled_ratio": round(ratio),
                           "cpu_limit_cores": cg.and_then(|c| c.cpu_limit_cores)}),
                );
            }
            if let Some(c) = cg {
                if let (Some(u), Some(l)) = (c.memory_usage_bytes, c.memory_limit_bytes) {
                    let share = u as f64 / l as f64;
                    if share >= 0.9 {
                        finding(
                            Cause::Environment,
                            "memory",
                            0.6,
                            format!("{who} uses {:.0}% of its memory limit", share * 100.0),
                            json!({"who": who, "usage_bytes": u, "limit_bytes": l}),
                        );
                    }
                }
                if c.oom_kills.is_some_and(|k| k > 0) {
                    finding(
                        Cause::Environment,
                        "memory",
                        0.7,
                        format!("{who}: {} out-of-memory kills", c.oom_kills.unwrap_or(0)),
                        json!({"who": who, "oom_kills": c.oom_kills}),
                    );
                }
            }
        }
        for g in &r.gpus {
            // Hardware, thermal and power-brake slowdowns; not the power
            // cap or clock settings a busy GPU runs under by design.
            let hard: Vec<&String> = g
                .throttle_reasons
                .iter()
                .filter(|t| t.ends_with("slowdown"))
                .collect();
            if !hard.is_empty() || g.xid_errors.is_some_and(|x| x > 0) {
                finding(
                    Cause::Environment,
                    "gpu",
                    0.7,
                    format!(
                        "GPU {}: throttled ({}), {} XID errors",
                        g.index,
                        hard.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        g.xid_errors.unwrap_or(0)
                    ),
                    json!({"gpu": g.index, "throttle_reasons": hard, "xid_errors": g.xid_errors}),
                );
            }
        }
    }
    if let Some(u) = i.upstream.filter(|u| !u.up && u.checked_at.is_some()) {
        finding(
            Cause::Environment,
            "upstream",
            0.8,
            format!(
                "the model server is unreachable ({} probe of {}: {})",
                u.probe,
                u.target,
                u.last_error.as_deref().unwrap_or("no answer")
            ),
            json!({"target": u.target, "probe": u.probe, "error": u.last_error, "checked_at": u.checked_at}),
        );
    }
    if let Some(a) = i.anomaly {
        for s in a
            .series
            .iter()
            .filter(|s| s.point.anomaly && (s.model.is_empty() || s.model == i.model))
            .filter(|s| s.series.contains("latency") || s.series.contains("error"))
        {
            finding(
                Cause::Environment,
                "anomaly",
                0.55,
                format!(
                    "{} is anomalous: {:.4} (EWMA z {:.1})",
                    s.series,
                    s.point.value,
                    s.point.ewma.unwrap_or(0.0)
                ),
                json!({"series": s.series, "value": s.point.value, "ewma_z": s.point.ewma, "mad_z": s.point.mad}),
            );
        }
    }

    // A change of the environment is a cause when something went wrong
    // with it: accuracy fell, or a resource, anomaly or version finding.
    let symptom = fell
        || findings
            .iter()
            .any(|f| f.score >= THRESHOLD && f.kind != "drift");
    for c in i
        .changes
        .iter()
        .filter(|c| c.time_ms >= from && !c.component.starts_with("model:"))
    {
        findings.push(Finding {
            cause: Cause::Environment,
            kind: "environment_change",
            score: if symptom { 0.6 } else { 0.4 },
            summary: format!(
                "{} changed: {} -> {}",
                c.component,
                c.before.as_deref().unwrap_or("(none)"),
                c.after.as_deref().unwrap_or("(none)")
            ),
            figures: json!({"component": c.component, "before": c.before, "after": c.after, "time_ms": c.time_ms}),
            from_ms: from,
            to_ms: i.now_ms,
        });
    }

    findings.sort_by(|a, b| b.score.total_cmp(&a.score));
    findings.truncate(MAX_FINDINGS);
    let mut scores = std::collections::BTreeMap::new();
    for c in Cause::ALL {
        let best = findings
            .iter()
            .filter(|f| f.cause == c)
            .map(|f| f.score)
            .fold(0.0, f64::max);
        scores.insert(c.as_str(), best);
    }
    let top = findings.first().filter(|f| f.score >= THRESHOLD);
    let no_labels = !labelled && i.quality_enabled;
    let (verdict, summary) = match top {
        Some(f) => (f.cause.as_str().to_string(), f.summary.clone()),
        None if no_labels || !i.quality_enabled => (
            "unknown".to_string(),
            format!(
                "no cause found, but {}",
                missing
                    .first()
                    .map_or("figures are missing", |m| m.as_str())
            ),
        ),
        None => (
            "none".to_string(),
            "no cause above the threshold".to_string(),
        ),
    };
    let summary = match (&quality, top) {
        (Some(q), Some(_)) if q.fell => format!(
            "accuracy fell from {:.3} to {:.3}; {summary}",
            q.reference_accuracy.unwrap_or(0.0),
            q.accuracy.unwrap_or(0.0)
        ),
        (_, Some(_)) if no_labels && this.is_some() => {
            format!("no labels yet, so accuracy is not known; {summary}")
        }
        _ => summary,
    };
    Diagnosis {
        model: i.model.to_string(),
        model_version: i.version.to_string(),
        window: i.window.to_string(),
        verdict,
        summary,
        scores,
        missing,
        quality,
        findings,
    }
}

/// A drift verdict's figure in words: a p-value for the tests, else the distance.
fn test_score(method: &str, score: f64) -> String {
    match method {
        "ks" | "chi2" => format!("{method} p {score:.1e}"),
        _ => format!("{method} {score:.3}"),
    }
}

fn quality_change(m: &ModelFigures, w: &WindowFigures, min: usize) -> QualityChange {
    let r = &m.segment_reference;
    let accuracy = w.accuracy.filter(|_| w.enough_labels);
    let reference = r.accuracy().filter(|_| r.labelled as usize >= min);
    let p = match (reference, accuracy) {
        (Some(_), Some(a)) => two_proportion_p_greater(
            r.correct as f64,
            r.labelled as f64,
            a * w.labelled as f64,
            w.labelled as f64,
        ),
        _ => None,
    };
    let fell = match (reference, accuracy, p) {
        (Some(r), Some(a), Some(p)) => r - a >= MIN_DROP && p < SIGNIFICANCE,
        _ => false,
    };
    QualityChange {
        reference_accuracy: reference.map(round),
        reference_labelled: r.labelled,
        accuracy: accuracy.map(round),
        labelled: w.labelled,
        p_value: p,
        fell,
        estimated_accuracy: w.estimated.as_ref().map(|e| round(e.accuracy)),
        estimate_trustworthy: true,
    }
}

struct Segment {
    cause: Cause,
    score: f64,
    summary: String,
    figures: serde_json::Value,
    share: f64,
}

/// The bins that hold most of the loss. A bin's excess errors are its
/// errors now beyond what the reference period's overall accuracy would
/// make of its rows; over one feature's bins they add up to the whole loss,
/// so each bin's share of it is its part of the fall. A segment whose own
/// accuracy fell (p below `SIGNIFICANCE`) while no input drifted is the
/// model (the relation changed there); any other is data: its feature
/// drifted, another did (correlated features share rows), or it only
/// holds more rows than before with its accuracy unchanged (the mix moved).
fn segments(
    reference: &SegmentCounts,
    now: &SegmentCounts,
    layout: &Layout,
    drifted: &[&str],
) -> Vec<Segment> {
    let Some(acc_ref) = reference.accuracy() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (f, bins) in now.bins.iter().enumerate() {
        let Some(feature) = layout.features.get(f) else {
            continue;
        };
        let labelled: u64 = bins.iter().map(|b| b[0]).sum();
        let correct: u64 = bins.iter().map(|b| b[1]).sum();
        let total = labelled as f64 * acc_ref - correct as f64;
        if total <= 0.0 {
            continue;
        }
        for (b, [n, c]) in bins.iter().enumerate() {
            if *n < MIN_SEGMENT_ROWS {
                continue;
            }
            let excess = (*n - *c) as f64 - *n as f64 * (1.0 - acc_ref);
            let share = excess / total;
            if share < 0.3 {
                continue;
            }
            let [rn, rc] = reference.bin(f, b);
            let p = two_proportion_p_greater(rc as f64, rn as f64, *c as f64, *n as f64);
            let acc_now = *c as f64 / *n as f64;
            let acc_bin_ref = (rn > 0).then(|| rc as f64 / rn as f64);
            let fell_here = p.is_some_and(|p| p < SIGNIFICANCE);
            let is_drifted = drifted.contains(&feature.name.as_str());
            // Where inputs drifted, a segment of another feature can hold
            // the drifted rows (correlated features): the data explains it.
            let cause = if drifted.is_empty() && fell_here {
                Cause::Model
            } else {
                Cause::Data
            };
            let what = layout.describe(f, b as u8);
            let summary = format!(
                "{:.0}% of the loss is in rows with {what}: accuracy {} -> {acc_now:.3} over {n} rows{}{}",
                share.min(1.0) * 100.0,
                acc_bin_ref.map_or("(no reference rows)".to_string(), |a| format!("{a:.3}")),
                p.map_or(String::new(), |p| format!(" (p {p:.2e})")),
                match cause {
                    Cause::Model => ": no input drifted, so the relation between inputs and labels changed there (concept drift)",
                    _ if is_drifted => ": the feature drifted",
                    _ if fell_here => ": inputs drifted (other features)",
                    _ => ": more rows fall there than before",
                }
            );
            out.push(Segment {
                cause,
                score: 0.5 + 0.4 * share.min(1.0),
                figures: json!({
                    "feature": feature.name, "bin": b, "segment": what,
                    "share_of_loss": round(share), "rows": n, "correct": c,
                    "accuracy": round(acc_now), "reference_rows": rn,
                    "reference_accuracy": acc_bin_ref.map(round), "p_value": p,
                    "feature_drifted": is_drifted,
                }),
                summary,
                share,
            });
        }
    }
    out.sort_by(|a, b| b.share.total_cmp(&a.share));
    out.truncate(5);
    out
}

fn version_findings(
    i: &Inputs<'_>,
    from: u64,
    finding: &mut impl FnMut(Cause, &'static str, f64, String, serde_json::Value),
) {
    let Some(at) = i
        .versions
        .iter()
        .position(|(m, v, _)| m == i.model && v == i.version)
    else {
        return;
    };
    let first = i.versions[at].2;
    // The version before: the one of this model first seen last before it.
    let previous = i.versions[..at].iter().rev().find(|(m, _, _)| m == i.model);
    let Some((_, prev, _)) = previous else {
        return;
    };
    if first < from {
        return;
    }
    let figures = |v: &str| {
        i.quality
            .iter()
            .find(|m| m.model == i.model && m.model_version == v)
            .and_then(|m| window_of(m, i.window))
            .filter(|w| w.enough_labels)
            .and_then(|w| w.accuracy.map(|a| (a, w.labelled)))
    };
    let traffic = |v: &str| {
        i.traffic
            .iter()
            .find(|t| t.model == i.model && t.model_version == v)
            .map(|t| (t.requests, t.errors))
    };
    let mut score: f64 = 0.3;
    let mut why = Vec::new();
    let mut figs = json!({"version": i.version, "previous": prev, "first_seen_ms": first});
    if let (Some((a, n)), Some((pa, pn))) = (figures(i.version), figures(prev)) {
        let p = two_proportion_p_greater(pa * pn as f64, pn as f64, a * n as f64, n as f64);
        figs["accuracy"] = json!(round(a));
        figs["previous_accuracy"] = json!(round(pa));
        figs["p_value"] = json!(p);
        if pa - a >= MIN_DROP && p.is_some_and(|p| p < SIGNIFICANCE) {
            score = 0.9;
            why.push(format!("accuracy {a:.3} against {prev}'s {pa:.3}"));
        }
    }
    if let (Some((r, e)), Some((pr, pe))) = (traffic(i.version), traffic(prev)) {
        let p = two_proportion_p_greater(e as f64, r as f64, pe as f64, pr as f64);
        figs["errors"] = json!(e);
        figs["requests"] = json!(r);
        figs["previous_errors"] = json!(pe);
        figs["previous_requests"] = json!(pr);
        if r > 0
            && pr > 0
            && e as f64 / r as f64 >= pe as f64 / pr as f64 + 0.02
            && p.is_some_and(|p| p < SIGNIFICANCE)
        {
            score = 0.9;
            why.push(format!(
                "{:.1}% of its requests failed against {prev}'s {:.1}%",
                100.0 * e as f64 / r as f64,
                100.0 * pe as f64 / pr as f64
            ));
        }
    }
    let summary = if why.is_empty() {
        format!(
            "version {} was first seen in the window (after {prev}); no worse so far",
            i.version
        )
    } else {
        format!(
            "version {} was first seen in the window (after {prev}): {}",
            i.version,
            why.join("; ")
        )
    };
    finding(Cause::Model, "version", score, summary, figs);
}

/// Whether an alert on `figure` (an OpenTelemetry metric name) is about
/// something the diagnosis explains: quality, drift, data quality,
/// anomalies, per-version requests and errors, request durations.
pub fn explains(figure: &str) -> bool {
    let name = crate::config::alerts::find_figure(figure).map_or(figure, |m| m.name);
    [
        "modelwatch.quality.",
        "modelwatch.drift.",
        "modelwatch.data_quality.",
        "modelwatch.anomaly.",
        "modelwatch.model.",
        "http.server.request.duration",
        "modelwatch.upstream.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A diagnosis as alert annotations: `diagnosis` (verdict: summary) and
/// `diagnosis_findings` (the top three findings, one a line).
pub fn annotations(d: &Diagnosis) -> crate::alerts::figures::Labels {
    let mut a = crate::alerts::figures::Labels::new();
    a.insert("diagnosis".into(), format!("{}: {}", d.verdict, d.summary));
    let top: Vec<String> = d
        .findings
        .iter()
        .take(3)
        .map(|f| {
            format!(
                "[{} {:.2}] {}: {}",
                f.cause.as_str(),
                f.score,
                f.kind,
                f.summary
            )
        })
        .collect();
    if !top.is_empty() {
        a.insert("diagnosis_findings".into(), top.join("\n"));
    }
    a
}

/// Where the admin server, the alerts and the gauge read the figures from.
#[derive(Clone, Default)]
pub struct Sources {
    pub quality: Option<Arc<RwLock<crate::quality::Snapshot>>>,
    pub drift: Option<Arc<RwLock<DriftSnapshot>>>,
    pub layouts: Option<Layouts>,
    pub anomaly: Option<Arc<RwLock<AnomalySnapshot>>>,
    pub resources: Option<Arc<RwLock<ResourceSnapshot>>>,
    pub readiness: Option<Arc<crate::admin::readiness::Readiness>>,
    pub changes: Arc<ChangeLog>,
    pub versions: Arc<SeenModels>,
    pub registry: Option<prometheus::Registry>,
}

/// What a diagnosis is asked for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub model: Option<String>,
    pub version: Option<String>,
    pub window: Option<String>,
}

impl Sources {
    /// Diagnoses every model version the quality or drift figures know (or
    /// the one `q` names) over `q.window` (default: the first quality window).
    /// `traffic`: read per-version errors from the registry (not from
    /// inside a collection, which the registry's own gather runs).
    pub fn diagnose(
        &self,
        q: &Query,
        config: &crate::config::Config,
        traffic: bool,
    ) -> Result<Vec<Diagnosis>, String> {
        let windows: Vec<(String, u64)> = config
            .quality
            .windows
            .iter()
            .map(|w| (crate::config::window_name(*w), w.as_millis() as u64))
            .collect();
        let (window, window_ms) = match &q.window {
            None => windows
                .first()
                .cloned()
                .unwrap_or_else(|| ("1h".to_string(), 3_600_000)),
            Some(w) => windows
                .iter()
                .find(|(n, _)| n == w)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "window {w:?} is not a quality window; quality.windows are {}",
                        windows
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?,
        };
        let quality = self
            .quality
            .as_ref()
            .map(|s| s.read().expect("poisoned").models.clone())
            .unwrap_or_default();
        let drift = self
            .drift
            .as_ref()
            .map(|s| s.read().expect("poisoned").clone());
        let anomaly = self
            .anomaly
            .as_ref()
            .map(|s| s.read().expect("poisoned").clone());
        let resources = self
            .resources
            .as_ref()
            .map(|s| s.read().expect("poisoned").clone());
        let changes = self.changes.list();
        let versions = self.versions.first_seen();
        let upstream = self.readiness.as_ref().map(|r| r.snapshot());
        let traffic = self
            .registry
            .as_ref()
            .filter(|_| traffic)
            .map(|r| {
                crate::admin::history::model_traffic(&crate::alerts::figures::Figures::gather(r))
            })
            .unwrap_or_default();
        let mut pairs: Vec<(String, String)> = quality
            .iter()
            .map(|m| (m.model.clone(), m.model_version.clone()))
            .chain(drift.iter().flat_map(|d| {
                d.models
                    .iter()
                    .map(|m| (m.model.clone(), m.model_version.clone()))
            }))
            .collect();
        pairs.sort();
        pairs.dedup();
        pairs.retain(|(m, v)| {
            q.model.as_ref().is_none_or(|x| x == m) && q.version.as_ref().is_none_or(|x| x == v)
        });
        if pairs.is_empty() {
            if let Some(m) = &q.model {
                pairs.push((m.clone(), q.version.clone().unwrap_or_default()));
            }
        }
        let now = crate::quality::engine::now_ms();
        Ok(pairs
            .iter()
            .map(|(model, version)| {
                let layout = self
                    .layouts
                    .as_ref()
                    .and_then(|l| l.read().expect("poisoned").get(model).cloned());
                diagnose(&Inputs {
                    model,
                    version,
                    window: &window,
                    window_ms,
                    now_ms: now,
                    min_samples: config.quality.min_samples,
                    quality: &quality,
                    quality_enabled: self.quality.is_some(),
                    drift: drift.as_ref(),
                    layout: layout.as_deref(),
                    anomaly: anomaly.as_ref(),
                    resources: resources.as_ref(),
                    upstream: upstream.as_ref(),
                    changes: &changes,
                    versions: &versions,
                    traffic: &traffic,
                })
            })
            .collect())
    }
}

/// `modelwatch.diagnosis.cause`: each cause's score per model version,
/// computed at each collection over the first quality window.
pub fn register_gauge(
    meter: &opentelemetry::metrics::Meter,
    sources: Sources,
    config: impl Fn() -> Arc<crate::config::Config> + Send + Sync + 'static,
) {
    use crate::telemetry::names::{attr, DIAGNOSIS_CAUSE};
    use opentelemetry::KeyValue;
    crate::telemetry::f64_gauge(meter, DIAGNOSIS_CAUSE, move |o| {
        let config = config();
        let Ok(all) = sources.diagnose(&Query::default(), &config, false) else {
            return;
        };
        for d in all {
            for (cause, score) in &d.scores {
                o.observe(
                    *score,
                    &[
                        KeyValue::new(attr::MODEL, d.model.clone()),
                        KeyValue::new(attr::MODEL_VERSION, d.model_version.clone()),
                        KeyValue::new(attr::CAUSE, *cause),
                    ],
                );
            }
        }
    });
}

#[cfg(test)]
mod tests;
