//! Cost of one alert evaluation (`cargo bench --bench alerts`): gathering the
//! Prometheus registry and evaluating five rules, on a registry shaped like a
//! busy sidecar's: 100 drift features with 11 bins each, quality windows of
//! two versions, per-version latency histograms (about 2,500 series).

use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use modelwatch::alerts::figures::{Figures, Labels};
use modelwatch::alerts::rules::RuleState;
use modelwatch::config::alerts::Rule;

fn registry() -> prometheus::Registry {
    let r = prometheus::Registry::new();
    let g = |name: &str, labels: &[&str]| {
        let v = prometheus::GaugeVec::new(prometheus::Opts::new(name, "x"), labels).unwrap();
        r.register(Box::new(v.clone())).unwrap();
        v
    };
    let score = g(
        "modelwatch_drift_score",
        &["model", "model_version", "feature", "method"],
    );
    let bins = prometheus::CounterVec::new(
        prometheus::Opts::new("modelwatch_drift_bin_total", "x"),
        &["model", "model_version", "feature", "bin"],
    )
    .unwrap();
    r.register(Box::new(bins.clone())).unwrap();
    let share = g(
        "modelwatch_drift_reference_share_ratio",
        &["model", "model_version", "feature", "bin"],
    );
    for f in 0..100 {
        let f = format!("f{f}");
        score.with_label_values(&["m", "1", &f, "ks"]).set(0.01);
        for b in 0..11 {
            let b = b.to_string();
            bins.with_label_values(&["m", "1", &f, &b]).inc_by(10.0);
            share.with_label_values(&["m", "1", &f, &b]).set(1.0 / 11.0);
        }
    }
    let acc = g(
        "modelwatch_quality_accuracy_ratio",
        &["model", "model_version", "window"],
    );
    let n = g(
        "modelwatch_quality_samples",
        &["model", "model_version", "window"],
    );
    for v in ["1", "2"] {
        for w in ["1h", "24h", "total"] {
            acc.with_label_values(&["m", v, w]).set(0.9);
            n.with_label_values(&["m", v, w]).set(1000.0);
        }
    }
    let h = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("modelwatch_model_request_duration_seconds", "x").buckets(
            vec![
                0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                30.0, 60.0, 120.0, 300.0,
            ],
        ),
        &["model", "model_version"],
    )
    .unwrap();
    r.register(Box::new(h.clone())).unwrap();
    for v in ["1", "2", "3", "4"] {
        for i in 0..1000 {
            h.with_label_values(&["m", v]).observe(i as f64 / 1000.0);
        }
    }
    r
}

fn rules() -> Vec<RuleState> {
    [
        "{name: AccuracyLow, figure: modelwatch.quality.accuracy, match: {window: 1h}, below: 0.8, min_samples: 100}",
        "{name: Worse, figure: modelwatch.quality.accuracy, compare_to: version, baseline_version: '1', below: -0.05}",
        "{name: Slow, figure: modelwatch.model.request.duration, stat: p95, range: 5m, above: 1}",
        "{name: Drift, figure: modelwatch.drift.score, match: {method: ks}, below: 0.001}",
        "{name: BinsFlow, figure: modelwatch.drift.bin, stat: rate, range: 5m, above: 1000}",
    ]
    .iter()
    .map(|y| RuleState::new(serde_yaml_ng::from_str::<Rule>(y).unwrap(), 10_000))
    .collect()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let r = registry();
    c.bench_function("alerts/gather 2.5k series", |b| {
        b.iter(|| Figures::gather(&r))
    });
    let mut rs = rules();
    let start = Instant::now();
    let mut tick = 0u64;
    let base = Labels::new();
    c.bench_function("alerts/gather + 5 rules", |b| {
        b.iter(|| {
            tick += 1;
            let f = Figures::gather(&r);
            let now = start + Duration::from_secs(15 * tick);
            for rule in rs.iter_mut() {
                rule.evaluate(&f, now, SystemTime::now(), &base);
            }
        })
    });
    c.final_summary();
}
