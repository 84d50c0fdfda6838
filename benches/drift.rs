//! Cost of drift tracking (`cargo bench --bench drift`): recording feature
//! values into the current windows, and computing every statistic.

use std::collections::HashMap;
use std::time::Duration;

use criterion::Criterion;
use modelwatch::analysis::Analyzer;
use modelwatch::config::{DriftConfig, DriftMethod, WindowMode};
use modelwatch::drift::profile::{BuildOptions, Builder, Cell};
use modelwatch::drift::DriftAnalyzer;
use modelwatch::protocol::{Inference, Operation, Protocol, Value};
use modelwatch::sample::Sample;

const FEATURES: usize = 100;

fn analyzer(method: DriftMethod, window: usize) -> DriftAnalyzer {
    analyzer_with(method, window, WindowMode::Values)
}

fn analyzer_with(method: DriftMethod, window: usize, mode: WindowMode) -> DriftAnalyzer {
    let mut rng = fastrand::Rng::with_seed(3);
    let mut b = Builder::new(BuildOptions::default());
    for _ in 0..1000 {
        for f in 0..FEATURES {
            b.add(&format!("f{f}"), Cell::Number(rng.f64() * 10.0));
        }
        b.end_row();
    }
    let config = DriftConfig {
        window,
        min_samples: 100,
        numeric_method: method,
        refresh_interval: Duration::from_secs(3600),
        window_mode: mode,
        ..DriftConfig::default()
    };
    DriftAnalyzer::new(config, HashMap::from([("m".to_string(), b.finish())]))
}

fn records(n: usize, shift: f64) -> (Sample, Vec<Vec<Inference>>) {
    let sample = Sample::from_bodies("/v2/models/m/infer", b"{}", b"{}", "application/json");
    let mut rng = fastrand::Rng::with_seed(5);
    let rs = (0..n)
        .map(|_| {
            let mut r = Inference::new(&sample, Protocol::OpenInferenceV2, Operation::Predict);
            r.model = Some("m".into());
            r.features = (0..FEATURES)
                .map(|f| (format!("f{f}"), Value::Number(rng.f64() * 10.0 + shift)))
                .collect();
            vec![r]
        })
        .collect();
    (sample, rs)
}

fn main() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let (sample, rs) = records(1000, 0.0);

    let mut d = analyzer(DriftMethod::Auto, 1000);
    let mut i = 0;
    c.bench_function("drift/record one row of 100 numeric features", |b| {
        b.iter(|| {
            d.analyze(&sample, &rs[i % rs.len()]);
            i += 1;
        })
    });

    for (name, method) in [
        ("ks (auto, reference 1000)", DriftMethod::Auto),
        ("wasserstein", DriftMethod::Wasserstein),
        ("psi", DriftMethod::Psi),
    ] {
        let mut d = analyzer(method, 1000);
        for r in &rs {
            d.analyze(&sample, r);
        }
        c.bench_function(
            &format!("drift/statistics for 100 features, window 1000: {name}"),
            |b| b.iter(|| d.refresh()),
        );
    }
    // Sketch windows: 10,000 values per feature in 4 panes of sketches.
    let (sample, big) = records(10_000, 0.0);
    let mut d = analyzer_with(DriftMethod::Auto, 10_000, WindowMode::Sketch);
    for r in &big {
        d.analyze(&sample, r);
    }
    // Uniform on [0, 10): standardised by its median 5 and 1.4826 MAD (2.5).
    let mut s = modelwatch::drift::sketch::Scaled::new(5.0, 1.4826 * 2.5);
    let mut rng = fastrand::Rng::with_seed(8);
    for _ in 0..2_500 {
        s.add(rng.f64() * 10.0);
    }
    println!(
        "sketch window: one pane of 2,500 values in [0, 10) holds {} bytes of bins (4 panes: {} bytes per feature, for any window size)",
        s.sketch.bin_bytes(),
        4 * s.sketch.bin_bytes()
    );
    c.bench_function(
        "drift/statistics for 100 features, sketch windows of 10,000: ks",
        |b| b.iter(|| d.refresh()),
    );
    let mut i = 0;
    c.bench_function(
        "drift/record one row of 100 numeric features, sketch windows",
        |b| {
            b.iter(|| {
                d.analyze(&sample, &big[i % big.len()]);
                i += 1;
            })
        },
    );
    c.final_summary();
}
