use super::*;
use crate::drift::profile::Kind;
use crate::drift::segments::{Bins, SegmentFeature};
use crate::drift::{FeatureDrift, ModelDrift};
use crate::quality::engine::Estimated;

const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

fn layout() -> Layout {
    Layout {
        features: vec![
            SegmentFeature {
                name: "radius".into(),
                bins: Bins::Numeric(vec![10.0, 17.8]),
            },
            SegmentFeature {
                name: "texture".into(),
                bins: Bins::Numeric(vec![20.0]),
            },
        ],
    }
}

/// Counts from rows given as (radius bin, texture bin, how many, correct).
fn counts(rows: &[(u8, u8, u64, u64)]) -> SegmentCounts {
    let mut c = SegmentCounts::default();
    for (r, t, n, ok) in rows {
        for i in 0..*n {
            c.add(&[*r, *t], i < *ok);
        }
    }
    c
}

fn model(version: &str, reference: SegmentCounts, now: SegmentCounts) -> ModelFigures {
    let w = WindowFigures {
        window: "1h".into(),
        predictions: now.labelled,
        labelled: now.labelled,
        enough_labels: now.labelled >= 50,
        accuracy: now.accuracy(),
        segments: now,
        ..WindowFigures::default()
    };
    ModelFigures {
        model: "bc".into(),
        model_version: version.into(),
        task: "classification",
        classes: vec!["0".into(), "1".into()],
        positive_class: None,
        reference_rows: reference.labelled as usize,
        calibrated: true,
        windows: vec![w],
        segment_reference: reference,
    }
}

fn with_estimate(mut m: ModelFigures, accuracy: f64) -> ModelFigures {
    m.windows[0].estimated = Some(Estimated {
        rows: 100,
        accuracy,
        macro_avg: None,
        binary: None,
        gap: None,
    });
    m
}

fn drift(drifted: &[&str]) -> DriftSnapshot {
    let feature = |name: &str| FeatureDrift {
        feature: name.into(),
        kind: Kind::Numeric,
        method: "ks",
        score: if drifted.contains(&name) { 1e-9 } else { 0.4 },
        statistic: if drifted.contains(&name) { 0.5 } else { 0.05 },
        threshold: 0.05,
        drifted: drifted.contains(&name),
        window: 500,
        reference: 500,
    };
    DriftSnapshot {
        models: vec![ModelDrift {
            model: "bc".into(),
            model_version: "v1".into(),
            reference: "profile",
            features: vec![feature("radius"), feature("texture")],
            drifted_features: drifted.iter().map(|s| s.to_string()).collect(),
            ..ModelDrift::default()
        }],
        features_dropped: 0,
    }
}

struct Case {
    quality: Vec<ModelFigures>,
    drift: Option<DriftSnapshot>,
    resources: Option<ResourceSnapshot>,
    upstream: Option<crate::admin::readiness::ReadinessSnapshot>,
    changes: Vec<Change>,
    versions: Vec<(String, String, u64)>,
    anomaly: Option<AnomalySnapshot>,
    traffic: Vec<crate::admin::history::ModelTraffic>,
    version: &'static str,
}

impl Case {
    fn new(quality: Vec<ModelFigures>) -> Case {
        Case {
            quality,
            drift: Some(drift(&[])),
            resources: None,
            upstream: None,
            changes: Vec::new(),
            versions: vec![("bc".into(), "v1".into(), NOW - 10 * HOUR)],
            anomaly: None,
            traffic: Vec::new(),
            version: "v1",
        }
    }

    /// v2 first seen a quarter of an hour ago, after v1; requests and
    /// errors since start of each.
    fn new_version(mut self, v1: (u64, u64), v2: (u64, u64)) -> Case {
        self.version = "v2";
        self.versions
            .push(("bc".into(), "v2".into(), NOW - HOUR / 4));
        let traffic = |v: &str, (requests, errors)| crate::admin::history::ModelTraffic {
            model: "bc".into(),
            model_version: v.into(),
            requests,
            errors,
            latency_p50_seconds: None,
            latency_p95_seconds: None,
        };
        self.traffic = vec![traffic("v1", v1), traffic("v2", v2)];
        self
    }

    fn run(&self) -> Diagnosis {
        let layout = layout();
        diagnose(&Inputs {
            model: "bc",
            version: self.version,
            window: "1h",
            window_ms: HOUR,
            now_ms: NOW,
            min_samples: 50,
            quality: &self.quality,
            quality_enabled: true,
            drift: self.drift.as_ref(),
            layout: Some(&layout),
            anomaly: self.anomaly.as_ref(),
            resources: self.resources.as_ref(),
            upstream: self.upstream.as_ref(),
            changes: &self.changes,
            versions: &self.versions,
            traffic: &self.traffic,
        })
    }
}

/// The reference period: 400 rows, 96% right, spread over the bins.
fn healthy() -> SegmentCounts {
    counts(&[
        (0, 0, 100, 97),
        (1, 0, 100, 96),
        (1, 1, 100, 96),
        (2, 1, 100, 95),
    ])
}

#[test]
fn covariate_shift_names_the_drifted_features_and_the_segment() {
    // Most rows now have a large radius, where the model was always weaker.
    let now = counts(&[(0, 0, 20, 19), (1, 1, 30, 29), (2, 1, 250, 190)]);
    let mut case = Case::new(vec![with_estimate(model("v1", healthy(), now), 0.80)]);
    case.drift = Some(drift(&["radius", "texture"]));
    let d = case.run();
    assert_eq!(d.verdict, "data", "{d:#?}");
    let q = d.quality.as_ref().unwrap();
    assert!(q.fell && q.estimate_trustworthy, "{q:?}");
    let top = &d.findings[0];
    assert_eq!((top.cause, top.kind), (Cause::Data, "segment"), "{d:#?}");
    assert_eq!(top.figures["segment"], "radius >= 17.8");
    assert!(top.figures["share_of_loss"].as_f64().unwrap() > 0.9);
    assert!(
        d.summary.starts_with("accuracy fell from 0.960 to 0.793"),
        "{}",
        d.summary
    );
    let drifted: Vec<&str> = d
        .findings
        .iter()
        .filter(|f| f.kind == "drift")
        .map(|f| f.figures["feature"].as_str().unwrap())
        .collect();
    assert_eq!(drifted, ["radius", "texture"]);
    assert!(d.findings.iter().any(|f| f.kind == "covariate_shift"));
    assert_eq!(d.scores["model"], 0.0);
}

#[test]
fn concept_drift_in_one_segment_with_a_confident_estimate_is_the_model() {
    // Same mix of inputs; labels flipped for most large-radius rows.
    let now = counts(&[
        (0, 0, 100, 97),
        (1, 0, 100, 96),
        (1, 1, 100, 96),
        (2, 1, 100, 40),
    ]);
    let case = Case::new(vec![with_estimate(model("v1", healthy(), now), 0.95)]);
    let d = case.run();
    assert_eq!(d.verdict, "model", "{d:#?}");
    let q = d.quality.as_ref().unwrap();
    assert!(!q.estimate_trustworthy);
    let kinds: Vec<&str> = d.findings.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&"concept_drift"), "{kinds:?}");
    let seg = d.findings.iter().find(|f| f.kind == "segment").unwrap();
    assert_eq!(seg.cause, Cause::Model);
    assert_eq!(seg.figures["segment"], "radius >= 17.8");
    assert_eq!(seg.figures["reference_accuracy"], 0.95);
    assert_eq!(d.scores["data"], 0.0);
}

#[test]
fn a_new_worse_version_is_the_model() {
    let v1 = model("v1", healthy(), healthy());
    // v2's own reference period is as bad as now: only the side-by-side shows it.
    let bad = counts(&[
        (0, 0, 100, 70),
        (1, 0, 100, 72),
        (1, 1, 100, 71),
        (2, 1, 100, 69),
    ]);
    let v2 = model("v2", bad.clone(), bad);
    let mut case = Case::new(vec![v1, v2]).new_version((1000, 2), (1000, 3));
    let d = case.run();
    assert_eq!(d.verdict, "model", "{d:#?}");
    let f = &d.findings[0];
    assert_eq!(f.kind, "version");
    assert_eq!(f.figures["previous"], "v1");
    assert!(
        f.summary.contains("accuracy 0.705 against v1's 0.960"),
        "{}",
        f.summary
    );
    // The version before it is old news: no version finding for v1.
    case.version = "v1";
    assert!(case.run().findings.iter().all(|f| f.kind != "version"));
}

#[test]
fn a_version_failing_its_requests_is_the_model_even_without_labels() {
    let d = Case::new(vec![]).new_version((1000, 2), (400, 200)).run();
    assert_eq!(d.verdict, "model", "{d:#?}");
    assert!(d.findings[0]
        .summary
        .contains("50.0% of its requests failed"));
}

#[test]
fn throttling_and_a_server_upgrade_are_the_environment() {
    let mut case = Case::new(vec![model("v1", healthy(), healthy())]);
    case.changes = vec![
        Change {
            time_ms: NOW - 60_000,
            component: "model_server:llama.cpp".into(),
            before: Some("b4000".into()),
            after: Some("b4100".into()),
        },
        // Older than the window: not part of it.
        Change {
            time_ms: NOW - 2 * HOUR,
            component: "kernel".into(),
            before: Some("6.1".into()),
            after: Some("6.2".into()),
        },
    ];
    case.resources = Some(ResourceSnapshot {
        model_server_cgroup: Some(crate::resources::cgroup::CgroupStats {
            cpu_limit_cores: Some(0.1),
            ..Default::default()
        }),
        model_server_cpu_throttled_ratio: Some(0.8),
        ..Default::default()
    });
    let d = case.run();
    assert_eq!(d.verdict, "environment", "{d:#?}");
    assert_eq!(d.findings[0].kind, "cpu_throttling");
    assert!(d.findings[0]
        .summary
        .contains("the model server is CPU-throttled in 80%"));
    assert!(d.findings[0].summary.contains("limit 0.10 cores"));
    let changes: Vec<&str> = d
        .findings
        .iter()
        .filter(|f| f.kind == "environment_change")
        .map(|f| f.summary.as_str())
        .collect();
    assert_eq!(changes, ["model_server:llama.cpp changed: b4000 -> b4100"]);
}

#[test]
fn without_labels_the_verdict_is_unknown_and_says_why() {
    let mut m = model("v1", healthy(), SegmentCounts::default());
    m.windows[0].predictions = 300;
    let mut case = Case::new(vec![with_estimate(m.clone(), 0.95)]);
    let d = case.run();
    assert_eq!(d.verdict, "unknown", "{d:#?}");
    assert!(
        d.missing[0].starts_with("labels: 0 of the window's predictions are labelled, 50 needed")
    );
    assert!(d.summary.contains("labels"), "{}", d.summary);
    // What drift can still say is said.
    case.drift = Some(drift(&["radius"]));
    case.quality = vec![with_estimate(m, 0.80)];
    let d = case.run();
    assert_eq!(d.verdict, "data");
    assert!(
        d.summary
            .starts_with("no labels yet, so accuracy is not known; radius drifted"),
        "{}",
        d.summary
    );
    let kinds: Vec<&str> = d.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["drift", "covariate_shift"]);
}

#[test]
fn an_unreachable_model_server_is_the_environment_and_makes_a_change_a_cause() {
    let mut case = Case::new(vec![model("v1", healthy(), healthy())]);
    case.upstream = Some(crate::admin::readiness::ReadinessSnapshot {
        up: false,
        target: "http://127.0.0.1:8080".into(),
        probe: "tcp",
        last_error: Some("connection refused".into()),
        checked_at: Some(1.0),
    });
    case.changes = vec![Change {
        time_ms: NOW - 60_000,
        component: "model_server:mlserver".into(),
        before: Some("1.7.0".into()),
        after: Some("1.7.1".into()),
    }];
    let d = case.run();
    assert_eq!(d.verdict, "environment", "{d:#?}");
    assert_eq!(d.findings[0].kind, "upstream");
    assert!(d.findings[0].summary.ends_with("connection refused)"));
    assert_eq!(
        (d.findings[1].kind, d.findings[1].score),
        ("environment_change", 0.6)
    );
    // Not probed yet is not down.
    case.upstream.as_mut().unwrap().checked_at = None;
    assert!(case.run().findings.iter().all(|f| f.kind != "upstream"));
}

#[test]
fn gpus_memory_and_anomalies_are_the_environment() {
    let gpu = |reasons: &[&str], xid| crate::resources::gpu::GpuReading {
        index: 1,
        throttle_reasons: reasons.iter().map(|s| s.to_string()).collect(),
        xid_errors: Some(xid),
        ..Default::default()
    };
    let mut case = Case::new(vec![model("v1", healthy(), healthy())]);
    // Busy and power-capped is how a GPU runs: no finding.
    case.resources = Some(ResourceSnapshot {
        gpus: vec![gpu(&["sw_power_cap"], 0)],
        ..Default::default()
    });
    assert_eq!(case.run().verdict, "none");
    case.resources = Some(ResourceSnapshot {
        gpus: vec![gpu(&["sw_power_cap", "hw_thermal_slowdown"], 2)],
        cgroup: Some(crate::resources::cgroup::CgroupStats {
            memory_usage_bytes: Some(950),
            memory_limit_bytes: Some(1000),
            oom_kills: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    });
    let d = case.run();
    assert_eq!(d.verdict, "environment", "{d:#?}");
    let summaries: Vec<&str> = d.findings.iter().map(|f| f.summary.as_str()).collect();
    assert_eq!(
        summaries,
        [
            "modelwatch's container: 1 out-of-memory kills",
            "GPU 1: throttled (hw_thermal_slowdown), 2 XID errors",
            "modelwatch's container uses 95% of its memory limit",
        ]
    );
    // A latency anomaly of this model (not of another one).
    let series = |model: &str| crate::anomaly::SeriesFigures {
        series: "latency_p95",
        model: model.into(),
        point: crate::anomaly::Point {
            value: 0.9,
            ewma: Some(8.0),
            mad: Some(9.0),
            anomaly: true,
        },
        events: 1,
    };
    let mut case = Case::new(vec![model("v1", healthy(), healthy())]);
    case.drift = None;
    case.anomaly = Some(AnomalySnapshot {
        series: vec![series("other"), series("bc")],
        events: 2,
    });
    let d = case.run();
    assert_eq!(d.verdict, "environment", "{d:#?}");
    assert_eq!(d.findings.len(), 1);
    assert_eq!(
        d.findings[0].summary,
        "latency_p95 is anomalous: 0.9000 (EWMA z 8.0)"
    );
    assert_eq!(d.missing, ["drift is off: no view of the inputs"]);
}

#[test]
fn data_quality_counts_when_its_share_jumped_and_outputs_apart_from_inputs() {
    let issue = |window_count, earlier_rate| crate::drift::IssueCount {
        feature: "radius".into(),
        issue: crate::drift::Issue::Missing,
        count: 500,
        window_count,
        window_rows: 500,
        earlier_rate,
    };
    let mut case = Case::new(vec![model("v1", healthy(), healthy())]);
    let mut d = drift(&[]);
    // 12% missing now, as before: how this feature always is.
    d.models[0].issues = vec![issue(60, Some(0.12))];
    case.drift = Some(d.clone());
    assert_eq!(case.run().verdict, "none");
    // 12% now against 1% before: a jump.
    d.models[0].issues = vec![issue(60, Some(0.01))];
    case.drift = Some(d.clone());
    let r = case.run();
    assert_eq!(r.verdict, "data", "{r:#?}");
    assert_eq!(
        r.findings[0].summary,
        "radius: missing in 12% of the last 500 values (1.0% before)"
    );
    // The model's outputs moved and its inputs did not: the model.
    d.models[0].issues.clear();
    d.models[0].features.push(FeatureDrift {
        feature: "prediction".into(),
        kind: Kind::Categorical,
        method: "chi2",
        score: 1e-6,
        statistic: 40.0,
        threshold: 0.05,
        drifted: true,
        window: 500,
        reference: 500,
    });
    d.models[0].drifted_features = vec!["prediction".into()];
    case.drift = Some(d);
    let r = case.run();
    assert_eq!(
        (r.verdict.as_str(), r.findings[0].kind),
        ("model", "prediction_drift"),
        "{r:#?}"
    );
    assert!(
        r.findings.iter().all(|f| f.kind != "drift"),
        "an output is not an input"
    );
}

#[test]
fn a_change_alone_is_context_not_a_cause() {
    let mut case = Case::new(vec![model("v1", healthy(), healthy())]);
    case.changes = vec![Change {
        time_ms: NOW - 60_000,
        component: "model_server:mlserver".into(),
        before: Some("1.7.0".into()),
        after: Some("1.7.1".into()),
    }];
    let d = case.run();
    assert_eq!(d.verdict, "none", "{d:#?}");
    assert_eq!(
        (d.findings[0].kind, d.findings[0].score),
        ("environment_change", 0.4)
    );
}

#[test]
fn healthy_traffic_has_no_cause() {
    // Accuracy moves by chance only.
    let now = counts(&[
        (0, 0, 100, 96),
        (1, 0, 100, 95),
        (1, 1, 100, 96),
        (2, 1, 100, 94),
    ]);
    let d = Case::new(vec![with_estimate(model("v1", healthy(), now), 0.955)]).run();
    assert_eq!(d.verdict, "none", "{d:#?}");
    assert!(d.findings.is_empty(), "{d:#?}");
    assert!(!d.quality.unwrap().fell);
}
