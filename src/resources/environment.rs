//! What the model runs on, as one set of named versions: modelwatch, the
//! kernel, the GPU driver and CUDA, the model server (from its metadata
//! endpoint), and every model version seen in traffic. Exported as
//! `modelwatch.environment.info` (one series, value 1) and, whenever any of
//! them changes, as a `modelwatch.environment.change` OTLP log event and a
//! `modelwatch.environment.changes` count, so that a drift or quality change
//! can be lined up with a driver update or a new model version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::KeyValue;
use tokio_util::sync::CancellationToken;

use crate::telemetry::names::{self, attr};
use crate::telemetry::Instruments;

/// The kernel release (`os.description`).
pub fn kernel() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Model and version pairs seen in traffic, with when each was first
/// seen (milliseconds since the Unix epoch) and in which order, filled by
/// the analysis thread (at most `MAX_MODELS`).
#[derive(Debug, Default)]
pub struct SeenModels(Mutex<BTreeMap<(String, String), (u64, usize)>>);

const MAX_MODELS: usize = 32;

impl SeenModels {
    pub fn add(&self, model: &str, version: &str) {
        let mut s = self.0.lock().expect("poisoned");
        // Called for every record: at most 32 pairs to compare, no allocation
        // unless the pair is new.
        if s.len() < MAX_MODELS && !s.keys().any(|(m, v)| m == model && v == version) {
            let order = s.len();
            s.insert(
                (model.to_string(), version.to_string()),
                (crate::quality::engine::now_ms(), order),
            );
        }
    }

    fn list(&self) -> Vec<(String, String)> {
        self.0.lock().expect("poisoned").keys().cloned().collect()
    }

    /// (model, version, first seen) of every pair, in the order they were
    /// first seen (two in the same millisecond keep their order).
    pub fn first_seen(&self) -> Vec<(String, String, u64)> {
        let s = self.0.lock().expect("poisoned");
        let mut v: Vec<_> = s.iter().collect();
        v.sort_by_key(|(_, (_, order))| *order);
        v.into_iter()
            .map(|((m, ver), (t, _))| (m.clone(), ver.clone(), *t))
            .collect()
    }
}

/// One change of the environment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    pub time_ms: u64,
    pub component: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The last `MAX_CHANGES` changes, for the diagnosis.
#[derive(Debug, Default)]
pub struct ChangeLog(Mutex<std::collections::VecDeque<Change>>);

const MAX_CHANGES: usize = 64;

impl ChangeLog {
    pub fn push(&self, c: Change) {
        let mut l = self.0.lock().expect("poisoned");
        if l.len() == MAX_CHANGES {
            l.pop_front();
        }
        l.push_back(c);
    }

    pub fn list(&self) -> Vec<Change> {
        self.0.lock().expect("poisoned").iter().cloned().collect()
    }
}

/// The environment: component name -> version.
pub type Versions = BTreeMap<String, String>;

/// The model server's name and version from its metadata endpoint: Open
/// Inference Protocol `GET /v2` (MLServer, Triton, KServe), vLLM `GET
/// /version`, TGI `GET /info`, llama.cpp `GET /props` (`build_info`).
/// Once one of them answers, only that one is asked again (`known`).
pub async fn model_server_version(
    client: &crate::outbound::HttpClient,
    upstream: &str,
    known: &mut Option<usize>,
) -> Option<(String, String)> {
    let base = upstream.trim_end_matches('/');
    let probes = [
        ("/v2", "name", "version", ""),
        ("/version", "", "version", "vllm"),
        ("/info", "model_id", "version", "tgi"),
        ("/props", "", "build_info", "llama.cpp"),
    ];
    for (n, (path, name_key, version_key, default_name)) in probes.into_iter().enumerate() {
        if known.is_some_and(|k| k != n) {
            continue;
        }
        let url = format!("{base}{path}");
        let Ok(body) = crate::outbound::get(client, &url, 1 << 20, Duration::from_secs(2)).await
        else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        let Some(version) = v[version_key].as_str().map(str::to_string) else {
            continue;
        };
        let name = match (default_name, v[name_key].as_str()) {
            ("", Some(n)) => n.to_string(),
            ("", None) => "unknown".to_string(),
            (d, _) => d.to_string(),
        };
        *known = Some(n);
        return Some((name, version));
    }
    None
}

/// What changed between two readings: (component, before, after).
pub fn changes(
    before: &Versions,
    after: &Versions,
) -> Vec<(String, Option<String>, Option<String>)> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| (k.clone(), before.get(k).cloned(), after.get(k).cloned()))
        .collect()
}

pub struct Watcher {
    pub upstream: String,
    /// `proxy.upstream_tls`, for an `https://` model server.
    pub tls: crate::config::ClientTlsConfig,
    pub interval: Duration,
    pub resources: Option<Arc<RwLock<super::ResourceSnapshot>>>,
    pub models: Arc<SeenModels>,
    pub current: Arc<RwLock<Versions>>,
    pub changes: Arc<ChangeLog>,
    pub logger: Option<opentelemetry_sdk::logs::SdkLogger>,
    pub instruments: Instruments,
}

impl Watcher {
    /// Reads the environment every `interval` (the model server's metadata
    /// every fourth time) until `stop`; reports each change.
    pub async fn run(self, stop: CancellationToken) {
        let client = crate::outbound::client_no_pool(&self.tls);
        let mut server: Option<(String, String)> = None;
        let mut known = None;
        let mut first = true;
        let mut tick = 0u64;
        loop {
            if tick % 4 == 0 {
                if let Some(s) = model_server_version(&client, &self.upstream, &mut known).await {
                    server = Some(s);
                }
            }
            tick += 1;
            let mut v = Versions::new();
            v.insert("modelwatch".into(), env!("CARGO_PKG_VERSION").into());
            if let Some(k) = kernel() {
                v.insert("kernel".into(), k);
            }
            if let Some(r) = &self.resources {
                let r = r.read().expect("poisoned");
                if !r.gpu_driver_version.is_empty() {
                    v.insert("gpu_driver".into(), r.gpu_driver_version.clone());
                    v.insert("cuda".into(), r.cuda_version.clone());
                }
            }
            if let Some((name, version)) = &server {
                v.insert(format!("model_server:{name}"), version.clone());
            }
            for (model, version) in self.models.list() {
                v.insert(format!("model:{model}:{version}"), "seen".into());
            }
            let before =
                std::mem::replace(&mut *self.current.write().expect("poisoned"), v.clone());
            if !first {
                for (component, was, now) in changes(&before, &v) {
                    self.report(&component, was.as_deref(), now.as_deref());
                }
            }
            first = false;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    fn report(&self, component: &str, was: Option<&str>, now: Option<&str>) {
        self.changes.push(Change {
            time_ms: crate::quality::engine::now_ms(),
            component: component.to_string(),
            before: was.map(str::to_string),
            after: now.map(str::to_string),
        });
        tracing::info!(
            component,
            before = was.unwrap_or("-"),
            after = now.unwrap_or("-"),
            "environment changed"
        );
        self.instruments
            .environment_changes
            .add(1, &[KeyValue::new(attr::COMPONENT, component.to_string())]);
        let Some(logger) = &self.logger else { return };
        let mut log = logger.create_log_record();
        log.set_event_name("modelwatch.environment.change");
        log.set_severity_number(Severity::Info);
        log.set_severity_text("INFO");
        log.set_timestamp(SystemTime::now());
        log.set_body(AnyValue::String(
            format!(
                "{component}: {} -> {}",
                was.unwrap_or("(none)"),
                now.unwrap_or("(none)")
            )
            .into(),
        ));
        log.add_attribute(attr::COMPONENT, component.to_string());
        if let Some(w) = was {
            log.add_attribute("modelwatch.environment.before", w.to_string());
        }
        if let Some(n) = now {
            log.add_attribute("modelwatch.environment.after", n.to_string());
        }
        logger.emit(log);
    }
}

/// Registers `modelwatch.environment.info`: one series with every component as a label.
pub fn register(meter: &opentelemetry::metrics::Meter, current: Arc<RwLock<Versions>>) {
    crate::telemetry::u64_gauge(meter, names::ENVIRONMENT_INFO, move |o| {
        let v = current.read().expect("poisoned");
        if v.is_empty() {
            return;
        }
        // Models are many and change often: they are events, not labels here.
        let attrs: Vec<KeyValue> = v
            .iter()
            .filter(|(k, _)| !k.starts_with("model:"))
            .flat_map(|(k, val)| match k.strip_prefix("model_server:") {
                Some(name) => vec![
                    KeyValue::new("model_server_name", name.to_string()),
                    KeyValue::new("model_server_version", val.clone()),
                ],
                None => vec![KeyValue::new(format!("{k}_version"), val.clone())],
            })
            .collect();
        o.observe(1, &attrs);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_what_changed() {
        let a: Versions = [
            ("gpu_driver".to_string(), "550.1".to_string()),
            ("modelwatch".into(), "0.1.0".into()),
        ]
        .into();
        let mut b = a.clone();
        b.insert("gpu_driver".into(), "555.2".into());
        b.insert("model:bc:v2".into(), "seen".into());
        assert_eq!(
            changes(&a, &b),
            vec![
                (
                    "gpu_driver".to_string(),
                    Some("550.1".to_string()),
                    Some("555.2".to_string())
                ),
                ("model:bc:v2".to_string(), None, Some("seen".to_string())),
            ]
        );
        assert!(changes(&a, &a).is_empty());
    }
}
