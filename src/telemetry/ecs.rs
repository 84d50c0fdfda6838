//! The log records modelwatch emits (sampled payloads, alerts, anomalies,
//! drift and environment events) as Elastic Common Schema JSON lines, for
//! Filebeat or Fluent Bit to ship to Elasticsearch and Kibana. A log
//! processor beside the OTLP one: it formats on the emitting thread and hands
//! the line to a bounded queue; a writer thread writes it to stdout or a file.
//! A full queue drops the line and counts it, never waiting.
//!
//! Keys are written flat and dotted (`event.action`, `orchestrator.namespace`)
//! as ECS loggers do; Filebeat's `ndjson.expand_keys` or Elasticsearch's
//! mapping turns them into objects. ECS fields where ECS has one (`@timestamp`,
//! `message`, `log.level`, `event.*`, `service.*`, `host.name`,
//! `orchestrator.*`, `trace.id`, `span.id`, `http.response.status_code`),
//! modelwatch's own attributes as they are (`modelwatch.*`, `gen_ai.*`).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::logs::AnyValue;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogProcessor, SdkLogRecord};
use opentelemetry_sdk::Resource;
use serde_json::{json, Map, Value};

use crate::config::EcsLogsConfig;

/// The ECS version the lines follow.
pub const ECS_VERSION: &str = "8.11.0";

/// Written and dropped lines (`modelwatch.ecs.records.*`).
#[derive(Debug, Default)]
pub struct EcsStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
}

/// The processor; `new` starts the writer thread.
pub struct EcsProcessor {
    tx: Mutex<Option<SyncSender<String>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub stats: Arc<EcsStats>,
    base: Map<String, Value>,
}

impl std::fmt::Debug for EcsProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsProcessor").finish_non_exhaustive()
    }
}

fn open(output: &str) -> std::io::Result<Box<dyn Write + Send>> {
    if output == "stdout" {
        Ok(Box::new(std::io::stdout()))
    } else {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(output)?;
        Ok(Box::new(file))
    }
}

impl EcsProcessor {
    /// Opens the output (a bad path fails here, at start) and starts the writer.
    pub fn new(config: &EcsLogsConfig) -> Result<EcsProcessor, String> {
        let mut out = std::io::BufWriter::new(
            open(&config.output)
                .map_err(|e| format!("ecs_logs.output {:?}: {e}", config.output))?,
        );
        let (tx, rx) = sync_channel::<String>(config.queue_capacity);
        let stats = Arc::new(EcsStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("modelwatch-ecs".into())
            .spawn(move || loop {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(line) => {
                        let ok = out
                            .write_all(line.as_bytes())
                            .and_then(|_| out.write_all(b"\n"));
                        match ok {
                            Ok(()) => st.written.fetch_add(1, Ordering::Relaxed),
                            Err(_) => st.write_errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        let _ = out.flush();
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        let _ = out.flush();
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the ECS writer: {e}"))?;
        Ok(EcsProcessor {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            stats,
            base: Map::new(),
        })
    }
}

fn any_to_json(v: &AnyValue) -> Value {
    match v {
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(d) => json!(d),
        AnyValue::String(s) => json!(s.as_str()),
        AnyValue::Boolean(b) => json!(b),
        AnyValue::Bytes(b) => json!(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            b.as_slice()
        )),
        AnyValue::ListAny(l) => Value::Array(l.iter().map(any_to_json).collect()),
        AnyValue::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().to_string(), any_to_json(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// `event.kind` and `event.category` by event name.
fn classify(event: &str) -> (&'static str, Option<&'static str>) {
    match event {
        "modelwatch.alert" | "modelwatch.anomaly" | "modelwatch.drift" => ("alert", None),
        "modelwatch.environment.change" => ("event", Some("configuration")),
        "modelwatch.inference" => ("event", Some("web")),
        _ => ("event", None),
    }
}

/// One record as an ECS object (flat, dotted keys).
pub fn to_ecs(base: &Map<String, Value>, r: &SdkLogRecord) -> Map<String, Value> {
    let mut o = base.clone();
    let ts = r
        .timestamp()
        .or_else(|| r.observed_timestamp())
        .unwrap_or_else(SystemTime::now);
    o.insert(
        "@timestamp".into(),
        json!(humantime::format_rfc3339_micros(ts).to_string()),
    );
    let level = r
        .severity_text()
        .map(str::to_ascii_lowercase)
        .or_else(|| {
            r.severity_number().map(|s| {
                match s as i32 {
                    1..=8 => "debug",
                    9..=12 => "info",
                    13..=16 => "warn",
                    _ => "error",
                }
                .to_string()
            })
        })
        .unwrap_or_else(|| "info".into());
    o.insert("log.level".into(), json!(level));
    if let Some(s) = r.severity_number() {
        o.insert("event.severity".into(), json!(s as i32));
    }
    if let Some(body) = r.body() {
        o.insert(
            "message".into(),
            match body {
                AnyValue::String(s) => json!(s.as_str()),
                other => json!(any_to_json(other).to_string()),
            },
        );
    }
    let event = r.event_name().unwrap_or("modelwatch.log");
    let (kind, category) = classify(event);
    o.insert("event.action".into(), json!(event));
    o.insert("event.dataset".into(), json!(event));
    o.insert("event.module".into(), json!("modelwatch"));
    o.insert("event.kind".into(), json!(kind));
    if let Some(c) = category {
        o.insert("event.category".into(), json!([c]));
    }
    if let Some(tc) = r.trace_context() {
        o.insert("trace.id".into(), json!(tc.trace_id.to_string()));
        o.insert("span.id".into(), json!(tc.span_id.to_string()));
    }
    for (k, v) in r.attributes_iter() {
        let k = k.as_str();
        // A bare name is not an ECS field: it goes under `labels`.
        let key = if k.contains('.') {
            k.to_string()
        } else {
            format!("labels.{k}")
        };
        o.insert(key, any_to_json(v));
    }
    o
}

/// The fields every line carries, from the OpenTelemetry resource.
pub fn base_fields(resource: &Resource) -> Map<String, Value> {
    let get = |k: &str| {
        resource
            .get(&opentelemetry::Key::from(k.to_string()))
            .map(|v| v.to_string())
            .filter(|v| !v.is_empty())
    };
    let mut o = Map::new();
    o.insert("ecs.version".into(), json!(ECS_VERSION));
    for (ecs, otel) in [
        ("service.name", "service.name"),
        ("service.version", "service.version"),
        ("service.instance.id", "service.instance.id"),
        ("service.environment", "deployment.environment"),
        ("container.image.name", "container.image.name"),
    ] {
        if let Some(v) = get(otel) {
            o.insert(ecs.into(), json!(v));
        }
    }
    if let Some(v) = get("k8s.node.name").or_else(|| get("host.name")) {
        o.insert("host.name".into(), json!(v));
    }
    if let Some(ns) = get("k8s.namespace.name") {
        o.insert("orchestrator.type".into(), json!("kubernetes"));
        o.insert("orchestrator.namespace".into(), json!(ns));
    }
    if let Some(pod) = get("k8s.pod.name") {
        o.insert("orchestrator.resource.type".into(), json!("pod"));
        o.insert("orchestrator.resource.name".into(), json!(pod));
    }
    o
}

impl LogProcessor for EcsProcessor {
    fn emit(&self, data: &mut SdkLogRecord, _scope: &InstrumentationScope) {
        let line = Value::Object(to_ecs(&self.base, data)).to_string();
        let tx = self.tx.lock().expect("poisoned");
        let Some(tx) = tx.as_ref() else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Closing the queue lets the writer drain it and stop.
        self.tx.lock().expect("poisoned").take();
        if let Some(t) = self.thread.lock().expect("poisoned").take() {
            let _ = t.join();
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.base = base_fields(resource);
    }
}
