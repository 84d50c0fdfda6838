//! Anomaly detection on the time series modelwatch itself produces: every
//! `anomaly.interval`, the sampled requests give a latency p95, an error
//! rate, a request rate and an LLM output-token rate; the drift and quality
//! snapshots give each model's drifted share and accuracy. Two detectors
//! score each new point against the series' past: EWMA with a z-score, and a
//! robust median/MAD over a bounded history. Points that score above
//! `anomaly.sensitivity` after the warm-up are anomalies: counted, logged, and
//! sent as OTLP log events (`modelwatch.anomaly`).
//!
//! Runs on the analysis thread ([`AnomalyAnalyzer`]); the detectors are plain
//! structs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;
use serde::Serialize;

use crate::analysis::Analyzer;
use crate::config::AnomalyConfig;
use crate::protocol::Inference;
use crate::sample::Sample;
use crate::telemetry::names::{self, attr};

/// Exponentially weighted mean and variance; scores a point by how many
/// standard deviations it lies from the mean *before* it is added.
#[derive(Debug, Clone, PartialEq)]
pub struct Ewma {
    alpha: f64,
    mean: f64,
    var: f64,
    n: u64,
}

impl Ewma {
    pub fn new(alpha: f64) -> Ewma {
        Ewma {
            alpha,
            mean: 0.0,
            var: 0.0,
            n: 0,
        }
    }

    /// The z-score of `x` (None during the first point), then adds it.
    pub fn score_and_add(&mut self, x: f64) -> Option<f64> {
        let score = if self.n == 0 {
            None
        } else {
            let sd = self.var.sqrt();
            // A flat history: any change is infinitely surprising; cap it.
            Some(if sd > 0.0 {
                (x - self.mean) / sd
            } else if x == self.mean {
                0.0
            } else {
                f64::INFINITY.copysign(x - self.mean)
            })
        };
        if self.n == 0 {
            self.mean = x;
        } else {
            // West's incremental EW variance.
            let diff = x - self.mean;
            let incr = self.alpha * diff;
            self.mean += incr;
            self.var = (1.0 - self.alpha) * (self.var + diff * incr);
        }
        self.n += 1;
        score
    }

    pub fn points(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }
}

/// Median and median absolute deviation over the last `capacity` points;
/// scores a point as `|x − median| / (1.4826 · MAD)` (a robust z-score).
#[derive(Debug, Clone, PartialEq)]
pub struct Mad {
    capacity: usize,
    history: VecDeque<f64>,
}

impl Mad {
    pub fn new(capacity: usize) -> Mad {
        Mad {
            capacity,
            history: VecDeque::with_capacity(capacity),
        }
    }

    pub fn score_and_add(&mut self, x: f64) -> Option<f64> {
        let score = if self.history.is_empty() {
            None
        } else {
            let mut v: Vec<f64> = self.history.iter().copied().collect();
            let med = median(&mut v);
            let mut dev: Vec<f64> = v.iter().map(|y| (y - med).abs()).collect();
            let mad = median(&mut dev) * 1.4826;
            Some(if mad > 0.0 {
                (x - med) / mad
            } else if x == med {
                0.0
            } else {
                f64::INFINITY.copysign(x - med)
            })
        };
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(x);
        score
    }
}

/// Median (sorts `v`).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The two detectors of one series.
#[derive(Debug, Clone)]
struct Series {
    ewma: Ewma,
    mad: Mad,
    last: Option<Point>,
}

/// One scored point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub value: f64,
    /// None during the warm-up.
    pub ewma: Option<f64>,
    pub mad: Option<f64>,
    pub anomaly: bool,
}

/// A series' name and model ("" for the whole process).
pub type SeriesKey = (&'static str, String);

/// What the gauges and `/v1/status` read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AnomalySnapshot {
    pub series: Vec<SeriesFigures>,
    pub events: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesFigures {
    pub series: &'static str,
    pub model: String,
    #[serde(flatten)]
    pub point: Point,
    pub events: u64,
}

/// Scores every series at each interval.
pub struct Detector {
    config: AnomalyConfig,
    series: BTreeMap<SeriesKey, Series>,
    events: BTreeMap<SeriesKey, u64>,
}

impl Detector {
    pub fn new(config: AnomalyConfig) -> Detector {
        Detector {
            config,
            series: BTreeMap::new(),
            events: BTreeMap::new(),
        }
    }

    /// Scores one point of a series and adds it to the history.
    pub fn observe(&mut self, key: SeriesKey, value: f64) -> Point {
        let (alpha, window, warmup, sensitivity) = (
            self.config.ewma_alpha,
            self.config.mad_window,
            self.config.warmup as u64,
            self.config.sensitivity,
        );
        let s = self.series.entry(key.clone()).or_insert_with(|| Series {
            ewma: Ewma::new(alpha),
            mad: Mad::new(window),
            last: None,
        });
        let warm = s.ewma.points() >= warmup;
        let baseline = s.ewma.mean();
        let e = s.ewma.score_and_add(value).filter(|_| warm);
        let m = s.mad.score_and_add(value).filter(|_| warm);
        // Both detectors must agree: EWMA alone flags slow ramps after a
        // flat period, MAD alone flags a legitimately bimodal series.
        // And the change must matter: at least min_relative_change of the
        // level (a p95 of 3 ms that becomes 3.4 ms is jitter, whatever its z).
        let big_enough =
            (value - baseline).abs() >= self.config.min_relative_change * baseline.abs();
        let anomaly = big_enough
            && matches!((e, m), (Some(e), Some(m)) if e.abs() >= sensitivity && m.abs() >= sensitivity);
        if anomaly {
            *self.events.entry(key).or_default() += 1;
        }
        let point = Point {
            value,
            ewma: e.map(|v| v.clamp(-1e6, 1e6)),
            mad: m.map(|v| v.clamp(-1e6, 1e6)),
            anomaly,
        };
        s.last = Some(point.clone());
        point
    }

    pub fn snapshot(&self) -> AnomalySnapshot {
        AnomalySnapshot {
            series: self
                .series
                .iter()
                .filter_map(|(k, s)| {
                    Some(SeriesFigures {
                        series: k.0,
                        model: k.1.clone(),
                        point: s.last.clone()?,
                        events: self.events.get(k).copied().unwrap_or(0),
                    })
                })
                .collect(),
            events: self.events.values().sum(),
        }
    }
}

/// What one interval of samples adds up to.
#[derive(Debug, Default)]
struct Interval {
    durations: Vec<f64>,
    errors: u64,
    requests: u64,
    output_tokens: u64,
}

/// Bound on the request durations kept per interval (a uniform sample beyond it).
const MAX_DURATIONS: usize = 10_000;

/// Feeds the detector from samples, and from the drift and quality snapshots.
pub struct AnomalyAnalyzer {
    detector: Detector,
    interval: Interval,
    started: Instant,
    every: Duration,
    drift: Option<Arc<RwLock<crate::drift::DriftSnapshot>>>,
    quality: Option<Arc<RwLock<crate::quality::Snapshot>>>,
    logger: Option<opentelemetry_sdk::logs::SdkLogger>,
    pub snapshot: Arc<RwLock<AnomalySnapshot>>,
    rng: fastrand::Rng,
}

impl AnomalyAnalyzer {
    pub fn new(
        config: AnomalyConfig,
        drift: Option<Arc<RwLock<crate::drift::DriftSnapshot>>>,
        quality: Option<Arc<RwLock<crate::quality::Snapshot>>>,
        logger: Option<opentelemetry_sdk::logs::SdkLogger>,
    ) -> AnomalyAnalyzer {
        AnomalyAnalyzer {
            every: config.interval,
            detector: Detector::new(config),
            interval: Interval::default(),
            started: Instant::now(),
            drift,
            quality,
            logger,
            snapshot: Arc::new(RwLock::new(AnomalySnapshot::default())),
            rng: fastrand::Rng::with_seed(11),
        }
    }

    /// Closes the current interval: one point per series.
    fn close_interval(&mut self) {
        let secs = self.every.as_secs_f64();
        let i = std::mem::take(&mut self.interval);
        let mut points: Vec<(SeriesKey, f64)> = Vec::new();
        if i.requests > 0 {
            let mut d = i.durations;
            d.sort_by(f64::total_cmp);
            let p95 = d[((d.len() as f64 * 0.95).ceil() as usize).clamp(1, d.len()) - 1];
            points.push((("latency_p95", String::new()), p95));
            points.push((
                ("error_rate", String::new()),
                i.errors as f64 / i.requests as f64,
            ));
        }
        points.push((("request_rate", String::new()), i.requests as f64 / secs));
        if i.output_tokens > 0 {
            points.push((
                ("output_tokens_rate", String::new()),
                i.output_tokens as f64 / secs,
            ));
        }
        if let Some(d) = &self.drift {
            for m in &d.read().expect("poisoned").models {
                if !m.features.is_empty() {
                    let key = if m.model_version.is_empty() {
                        m.model.clone()
                    } else {
                        format!("{}/{}", m.model, m.model_version)
                    };
                    points.push((("drift_share", key), m.share));
                }
            }
        }
        if let Some(q) = &self.quality {
            for m in &q.read().expect("poisoned").models {
                if let Some(a) = m.windows.first().and_then(|w| w.accuracy) {
                    points.push((("accuracy", format!("{}/{}", m.model, m.model_version)), a));
                }
            }
        }
        for (key, value) in points {
            let p = self.detector.observe(key.clone(), value);
            if p.anomaly {
                self.event(&key, &p);
            }
        }
        *self.snapshot.write().expect("poisoned") = self.detector.snapshot();
    }

    fn event(&self, key: &SeriesKey, p: &Point) {
        tracing::warn!(
            series = key.0,
            model = %key.1,
            value = p.value,
            ewma_z = p.ewma,
            mad_z = p.mad,
            "anomaly"
        );
        let Some(logger) = &self.logger else { return };
        let mut log = logger.create_log_record();
        log.set_event_name("modelwatch.anomaly");
        log.set_severity_number(Severity::Warn);
        log.set_severity_text("WARN");
        log.set_timestamp(std::time::SystemTime::now());
        log.set_body(AnyValue::String(
            format!(
                "anomaly in {}{}: {} (EWMA z {:.1}, MAD z {:.1})",
                key.0,
                if key.1.is_empty() {
                    String::new()
                } else {
                    format!(" of {}", key.1)
                },
                p.value,
                p.ewma.unwrap_or(0.0),
                p.mad.unwrap_or(0.0)
            )
            .into(),
        ));
        log.add_attribute(attr::SERIES, key.0);
        if !key.1.is_empty() {
            log.add_attribute(attr::MODEL, key.1.clone());
        }
        log.add_attribute("modelwatch.anomaly.value", p.value);
        log.add_attribute("modelwatch.anomaly.ewma_z", p.ewma.unwrap_or(0.0));
        log.add_attribute("modelwatch.anomaly.mad_z", p.mad.unwrap_or(0.0));
        logger.emit(log);
    }
}

impl Analyzer for AnomalyAnalyzer {
    fn name(&self) -> &'static str {
        "anomaly"
    }

    fn analyze(&mut self, sample: &Sample, records: &[Inference]) {
        let i = &mut self.interval;
        i.requests += 1;
        let d = sample.timings.total.as_secs_f64();
        if i.durations.len() < MAX_DURATIONS {
            i.durations.push(d);
        } else {
            let j = self.rng.usize(0..i.requests as usize);
            if j < MAX_DURATIONS {
                i.durations[j] = d;
            }
        }
        if sample.failed() {
            i.errors += 1;
        }
        for r in records {
            if let Some(n) = r.usage.and_then(|u| u.output) {
                i.output_tokens += n;
            }
        }
        if self.started.elapsed() >= self.every {
            self.tick();
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        Some(self.started + self.every)
    }

    fn tick(&mut self) {
        self.close_interval();
        self.started = Instant::now();
    }
}

/// Gauges of the last point's scores, and counters of anomalies.
pub fn register_instruments(meter: &Meter, snapshot: Arc<RwLock<AnomalySnapshot>>) {
    use names::*;
    let s = snapshot.clone();
    crate::telemetry::f64_gauge(meter, ANOMALY_SCORE, move |o| {
        for f in &s.read().expect("poisoned").series {
            for (detector, v) in [("ewma", f.point.ewma), ("mad", f.point.mad)] {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    o.observe(v, &series_attrs(f, Some(detector)));
                }
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::f64_gauge(meter, ANOMALY_VALUE, move |o| {
        for f in &s.read().expect("poisoned").series {
            o.observe(f.point.value, &series_attrs(f, None));
        }
    });
    crate::telemetry::u64_counter(meter, ANOMALY_EVENTS, move |o| {
        for f in &snapshot.read().expect("poisoned").series {
            o.observe(f.events, &series_attrs(f, None));
        }
    });
}

fn series_attrs(f: &SeriesFigures, detector: Option<&'static str>) -> Vec<KeyValue> {
    let mut a = vec![KeyValue::new(attr::SERIES, f.series)];
    if !f.model.is_empty() {
        a.push(KeyValue::new(attr::MODEL, f.model.clone()));
    }
    if let Some(d) = detector {
        a.push(KeyValue::new(attr::DETECTOR, d));
    }
    a
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn full_snapshot() -> AnomalySnapshot {
        AnomalySnapshot {
            series: vec![SeriesFigures {
                series: "latency_p95",
                model: String::new(),
                point: Point {
                    value: 1.0,
                    ewma: Some(5.0),
                    mad: Some(6.0),
                    anomaly: true,
                },
                events: 1,
            }],
            events: 1,
        }
    }

    #[test]
    fn ewma_and_mad_scores() {
        let mut e = Ewma::new(0.5);
        assert_eq!(e.score_and_add(10.0), None);
        // mean 10, var 0: a flat history.
        assert_eq!(e.score_and_add(10.0), Some(0.0));
        // diff 2: mean 11, var 0.5·(0 + 2·1) = 1.
        assert_eq!(e.score_and_add(12.0), Some(f64::INFINITY));
        assert_eq!(e.score_and_add(13.0), Some(2.0));
        let mut m = Mad::new(5);
        for x in [1.0, 2.0, 3.0, 4.0, 100.0] {
            m.score_and_add(x);
        }
        // median 3, |dev| = [2,1,0,1,97] → MAD 1 → 1.4826.
        let z = m.score_and_add(6.0).unwrap();
        assert!((z - 3.0 / 1.4826).abs() < 1e-12);
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    fn config() -> AnomalyConfig {
        AnomalyConfig {
            warmup: 20,
            ..AnomalyConfig::default()
        }
    }

    /// Steady noise is not flagged (fixed seed, 2,000 points); a spike is.
    #[test]
    fn noise_is_quiet_and_a_spike_is_flagged() {
        let mut d = Detector::new(config());
        let mut rng = fastrand::Rng::with_seed(42);
        let key = ("latency_p95", String::new());
        let mut flagged = 0;
        for i in 0..2000 {
            let x = 0.100 + (rng.f64() - 0.5) * 0.02;
            let p = d.observe(key.clone(), x);
            if i < 20 {
                assert!(p.ewma.is_none(), "warm-up");
            }
            flagged += p.anomaly as u32;
        }
        assert!(
            flagged <= 2,
            "{flagged} false alarms in 2,000 points of noise"
        );
        let p = d.observe(key.clone(), 0.5);
        assert!(p.anomaly, "{p:?}");
        assert_eq!(d.snapshot().events, flagged as u64 + 1);
    }

    /// A series that changes level once is flagged at the change, then the
    /// detectors adapt (EWMA quickly, MAD once the new level fills its window).
    #[test]
    fn a_level_shift_is_flagged_then_learned() {
        let mut d = Detector::new(config());
        let mut rng = fastrand::Rng::with_seed(3);
        let key = ("error_rate", String::new());
        for _ in 0..100 {
            d.observe(key.clone(), 0.01 + rng.f64() * 0.002);
        }
        assert!(d.observe(key.clone(), 0.2).anomaly);
        let mut later = 0;
        for _ in 0..200 {
            later += d.observe(key.clone(), 0.2 + rng.f64() * 0.002).anomaly as u32;
        }
        assert!(later < 40, "{later}");
    }
}
