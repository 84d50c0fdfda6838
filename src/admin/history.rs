//! The last hour at a glance: every `admin.history_interval` a point of the
//! figures the status page charts (traffic, latency, errors, upstream health,
//! accuracy and drift per model version, alerts, CPU and memory), kept in a
//! ring of `admin.history_points`. Read from the same registry `/metrics`
//! serves and from the stages' snapshots; nothing is added to the data path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::alerts::figures::{histogram_delta, histogram_quantile, sum, Figures, Labels, Raw};
use crate::telemetry::names::{self, attr};

/// Per model version, since start: what the registry's per-version series say.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelTraffic {
    pub model: String,
    pub model_version: String,
    /// Sampled requests answered.
    pub requests: u64,
    /// Of which errors (5xx or no answer).
    pub errors: u64,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p95_seconds: Option<f64>,
}

/// Requests, errors and latency per model version (sampled requests).
pub fn model_traffic(f: &Figures) -> Vec<ModelTraffic> {
    let key = |l: &Labels| {
        (
            l.get(attr::MODEL).cloned().unwrap_or_default(),
            l.get(attr::MODEL_VERSION).cloned().unwrap_or_default(),
        )
    };
    let durations = f.series(&names::MODEL_REQUEST_DURATION, &Labels::new());
    let mut by_version: BTreeMap<(String, String), Vec<&Raw>> = BTreeMap::new();
    for s in &durations {
        by_version.entry(key(&s.labels)).or_default().push(&s.raw);
    }
    let latency: BTreeMap<(String, String), Option<Raw>> =
        by_version.into_iter().map(|(k, v)| (k, sum(v))).collect();
    let mut counts: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for s in f.series(&names::MODEL_REQUESTS, &Labels::new()) {
        let Raw::Scalar(v) = s.raw else { continue };
        let e = counts.entry(key(&s.labels)).or_default();
        e.0 += v as u64;
        if s.labels.get(attr::RESULT).map(String::as_str) == Some("error") {
            e.1 += v as u64;
        }
    }
    counts
        .into_iter()
        .map(|((model, model_version), (requests, errors))| {
            let q = |p: f64| match latency.get(&(model.clone(), model_version.clone())) {
                Some(Some(Raw::Histogram {
                    bounds, cumulative, ..
                })) => histogram_quantile(p, bounds, cumulative),
                _ => None,
            };
            ModelTraffic {
                latency_p50_seconds: q(0.5),
                latency_p95_seconds: q(0.95),
                model,
                model_version,
                requests,
                errors,
            }
        })
        .collect()
}

/// One point of the history.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Point {
    /// Unix time, seconds.
    pub t: f64,
    /// Requests through the proxy per second, over the interval.
    pub requests_per_second: f64,
    /// Share of them answered with an error (5xx or no answer).
    pub error_ratio: Option<f64>,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p95_seconds: Option<f64>,
    pub upstream_up: bool,
    /// modelwatch's own process: cores used over the interval, and memory.
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// The model server's process, when modelwatch sees it.
    pub model_cpu_cores: Option<f64>,
    pub model_memory_bytes: Option<u64>,
    /// "model version" -> accuracy in the first quality window.
    pub accuracy: BTreeMap<String, f64>,
    /// "model version" -> share of features drifted.
    pub drift_share: BTreeMap<String, f64>,
    pub alerts_firing: u64,
}

/// The ring of points, and what the next point is computed against.
pub struct History {
    pub interval: Duration,
    capacity: usize,
    points: Mutex<VecDeque<Point>>,
    last: Mutex<Option<Previous>>,
}

struct Previous {
    at: std::time::Instant,
    latency: Option<Raw>,
    errors: f64,
    cpu: BTreeMap<&'static str, f64>,
}

impl History {
    pub fn new(interval: Duration, capacity: usize) -> Arc<History> {
        Arc::new(History {
            interval,
            capacity: capacity.max(1),
            points: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
            last: Mutex::new(None),
        })
    }

    /// The points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        self.points
            .lock()
            .expect("poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// The newest point.
    pub fn latest(&self) -> Option<Point> {
        self.points.lock().expect("poisoned").back().cloned()
    }

    /// Takes a point from the registry and the status figures.
    pub fn record(&self, figures: &Figures, status: &serde_json::Value) {
        let now = std::time::Instant::now();
        let series = figures.series(&names::HTTP_SERVER_REQUEST_DURATION, &Labels::new());
        let error_label = crate::alerts::figures::label_name(attr::ERROR_TYPE);
        let errors: f64 = series
            .iter()
            .filter(|s| s.labels.get(&error_label).is_some_and(|e| !e.is_empty()))
            .filter_map(|s| match &s.raw {
                Raw::Histogram { count, .. } => Some(*count as f64),
                Raw::Scalar(_) => None,
            })
            .sum();
        let latency = sum(series.iter().map(|s| &s.raw));
        let mut cpu = BTreeMap::new();
        let mut memory = BTreeMap::new();
        for p in status["resources"]["processes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let role = match p["role"].as_str() {
                Some("modelwatch") => "modelwatch",
                Some("model_server") => "model_server",
                _ => continue,
            };
            *cpu.entry(role).or_insert(0.0) += p["cpu_seconds"].as_f64().unwrap_or(0.0);
            *memory.entry(role).or_insert(0u64) += p["memory_bytes"].as_u64().unwrap_or(0);
        }
        let mut point = Point {
            t: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            upstream_up: status["upstream"]["up"].as_bool().unwrap_or(false),
            memory_bytes: memory.get("modelwatch").copied(),
            model_memory_bytes: memory.get("model_server").copied(),
            ..Point::default()
        };
        let mut last = self.last.lock().expect("poisoned");
        if let Some(prev) = last.as_ref() {
            let secs = now.duration_since(prev.at).as_secs_f64().max(1e-3);
            if let Some((bounds, cumulative, count, _)) = latency
                .as_ref()
                .and_then(|l| histogram_delta(l, prev.latency.as_ref()))
            {
                point.requests_per_second = count as f64 / secs;
                if count > 0 {
                    point.error_ratio = Some(((errors - prev.errors).max(0.0)) / count as f64);
                    point.latency_p50_seconds = histogram_quantile(0.5, &bounds, &cumulative);
                    point.latency_p95_seconds = histogram_quantile(0.95, &bounds, &cumulative);
                }
            }
            let rate = |role: &str| Some((cpu.get(role)? - prev.cpu.get(role)?).max(0.0) / secs);
            point.cpu_cores = rate("modelwatch");
            point.model_cpu_cores = rate("model_server");
        }
        for m in status["quality"]["models"].as_array().into_iter().flatten() {
            let w = &m["windows"][0];
            if let Some(a) = w["accuracy"].as_f64() {
                point.accuracy.insert(
                    format!(
                        "{} {}",
                        m["model"].as_str().unwrap_or(""),
                        m["model_version"].as_str().unwrap_or("")
                    ),
                    a,
                );
            }
        }
        for m in status["drift"]["models"].as_array().into_iter().flatten() {
            if let Some(s) = m["share"].as_f64() {
                point.drift_share.insert(
                    format!(
                        "{} {}",
                        m["model"].as_str().unwrap_or(""),
                        m["model_version"].as_str().unwrap_or("")
                    ),
                    s,
                );
            }
        }
        point.alerts_firing = status["alerts"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["firing"].as_u64())
            .sum();
        *last = Some(Previous {
            at: now,
            latency,
            errors,
            cpu,
        });
        drop(last);
        let mut points = self.points.lock().expect("poisoned");
        if points.len() == self.capacity {
            points.pop_front();
        }
        points.push_back(point);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_points() {
        let h = History::new(Duration::from_secs(1), 3);
        let f = Figures::from_families(Vec::new());
        for _ in 0..5 {
            h.record(&f, &serde_json::json!({"upstream": {"up": true}}));
        }
        let p = h.points();
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|p| p.upstream_up));
        assert!(p.windows(2).all(|w| w[0].t <= w[1].t));
    }
}
