//! Cost of joining labels and storing predictions in the quality engine, on a
//! real redb file (`cargo bench --bench quality`). Before the timed runs it
//! prints the disk and memory each pending prediction takes, and the file size
//! under a label outage (the store bound holds it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use modelwatch::config::{Config, ProtocolConfig, QualityConfig};
use modelwatch::protocol::Value;
use modelwatch::quality::engine::{now_ms, Engine, Prediction};
use modelwatch::quality::feedback;
use modelwatch::quality::store::join_key;

const CLASSES: [&str; 5] = ["a", "b", "c", "d", "e"];

fn prediction(i: u64) -> Prediction {
    let mut scores: Vec<(String, f64)> = CLASSES
        .iter()
        .enumerate()
        .map(|(c, n)| (n.to_string(), ((i as usize * 7 + c * 13) % 100) as f64))
        .collect();
    let sum: f64 = scores.iter().map(|s| s.1).sum::<f64>().max(1.0);
    for s in &mut scores {
        s.1 /= sum;
    }
    Prediction {
        // A request id as the proxy makes them (a UUID).
        key: join_key(&format!("{:08x}-8a6d-4c1e-9f7a-2d4b6e8f0a1c", i), 0),
        time_ms: now_ms(),
        model: "bench-model".into(),
        version: "v1".into(),
        prediction: Some(Value::Text(CLASSES[(i % 5) as usize].into())),
        scores,
        // The bins of 30 features (a tabular model with a drift reference).
        bins: (0..30).map(|f| ((i + f) % 10) as u8).collect(),
    }
}

fn labels(from: u64, n: u64) -> Vec<u8> {
    let mut body = String::new();
    for i in from..from + n {
        body.push_str(&format!(
            "{{\"request_id\":\"{:08x}-8a6d-4c1e-9f7a-2d4b6e8f0a1c\",\"label\":\"{}\"}}\n",
            i,
            CLASSES[((i / 3) % 5) as usize]
        ));
    }
    body.into_bytes()
}

fn engine(
    dir: &std::path::Path,
    max_predictions: usize,
    max_window_rows: usize,
    runtime: &tokio::runtime::Runtime,
) -> Engine {
    let telemetry =
        modelwatch::telemetry::Telemetry::new(&Config::default(), runtime.handle()).unwrap();
    let config = QualityConfig {
        store_path: dir.join("q.redb").display().to_string(),
        max_predictions,
        max_window_rows,
        ..QualityConfig::default()
    };
    Engine::open(
        config,
        ProtocolConfig::default(),
        telemetry.instruments.clone(),
        Arc::default(),
    )
    .unwrap()
}

fn file_size(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("q.redb")).unwrap().len()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

const N: u64 = 100_000;

/// Fills a fresh store with N predictions; returns the engine and the growth
/// of the process's resident memory (KiB).
fn filled(
    dir: &std::path::Path,
    window_rows: usize,
    runtime: &tokio::runtime::Runtime,
) -> (Engine, u64) {
    let rss0 = rss_kib();
    let mut e = engine(dir, N as usize, window_rows, runtime);
    for chunk in 0..N / 1000 {
        e.add_predictions(
            (chunk * 1000..(chunk + 1) * 1000).map(prediction).collect(),
            true,
        )
        .unwrap();
    }
    (e, rss_kib().saturating_sub(rss0))
}

/// Disk and memory per pending prediction, and the file under a label outage.
fn sizes(runtime: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, grown) = filled(dir.path(), N as usize, runtime);
    let size = file_size(dir.path());
    println!(
        "quality store: {N} pending predictions with 5 class scores: {size} bytes on disk ({:.0} bytes each); process memory +{grown} KiB (redb page cache, at most quality.store_cache_bytes, plus the window copy: {} bytes, {:.0} per prediction)",
        size as f64 / N as f64,
        e.window_bytes(),
        e.window_bytes() as f64 / N as f64,
    );
    // A label outage: three times the bound arrives, no labels.
    for round in 1..=3u64 {
        for chunk in 0..N / 1000 {
            let base = round * N + chunk * 1000;
            e.add_predictions((base..base + 1000).map(prediction).collect(), true)
                .unwrap();
        }
        println!(
            "quality store: after {} predictions (bound {N}): {} bytes on disk",
            (round + 1) * N,
            file_size(dir.path())
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::args().all(|a| a != "--list") {
        sizes(&runtime);
    }
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();

    // Joining: 1,000 labels per call (one NDJSON body, parsed, joined in one
    // transaction, figures updated). Each iteration labels fresh predictions.
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), 2_000_000, 100_000, &runtime);
    let mut next = 0u64;
    c.bench_function(
        "quality/join 1000 labels (parse + join + totals + counters)",
        |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let from = next;
                    next += 1000;
                    e.add_predictions((from..from + 1000).map(prediction).collect(), false)
                        .unwrap();
                    let body = labels(from, 1000);
                    let t = Instant::now();
                    let parsed = feedback::parse(&body, true).unwrap();
                    let report = e.add_labels(parsed, false).unwrap();
                    timed += t.elapsed();
                    assert_eq!(report.joined, 1000);
                }
                timed
            })
        },
    );
    let mut next = 10_000_000u64;
    c.bench_function("quality/store 1000 predictions (5 class scores)", |b| {
        b.iter(|| {
            let from = next;
            next += 1000;
            e.add_predictions((from..from + 1000).map(prediction).collect(), false)
                .unwrap();
        })
    });
    c.bench_function("quality/refresh windows (figures + CBPE)", |b| {
        b.iter(|| e.refresh())
    });
    let t = Instant::now();
    e.close().unwrap();
    println!("final synced commit: {:?}", t.elapsed());
    c.final_summary();
}
