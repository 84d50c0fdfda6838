//! Inference events from a payload logger, turned into samples: quality,
//! drift, data quality and payload logs for a model that modelwatch does not
//! proxy (KServe Serverless, or any pipeline that already logs payloads).
//!
//! KServe's logger (`pkg/logger/handler.go`, `worker.go`) sends each logged
//! request and each 200 response as a CloudEvent over HTTP, binary mode
//! (`ce-*` headers, the payload as the body), from a pool of workers:
//! `type` `org.kubeflow.serving.inference.request` or `.response`, `id` the
//! request's `Ce-Id` header or a fresh UUID (the same for both halves),
//! `source` the predictor's URL, and the extensions `inferenceservicename`,
//! `namespace`, `component`, `endpoint`, `metadata` (a JSON object of the
//! request headers it was told to keep) and `annotations`. Structured mode
//! (`application/cloudevents+json`) is read too.
//!
//! The halves are paired by `id` in a bounded map: either may come first, a
//! half waits at most `cloudevents.pair_timeout`, and at most
//! `cloudevents.max_pending` wait; what is dropped is counted. A pair
//! becomes one sample, as if the proxy had carried the exchange: the path is
//! the one the payload's protocol uses (`/v1/models/<isvc>:predict`,
//! `/v2/models/<isvc>/infer`, `/v1/chat/completions`, `/v1/completions`), the
//! request id is the event id (labels join on it), the status 200 (KServe
//! logs no response for a failed request). There are no timings: such
//! samples feed no latency figure.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;

use crate::config::CloudEventsConfig;
use crate::sample::{CapturedBody, Sample, SampleSender, SampleSource};
use crate::telemetry::names::attr;

pub const REQUEST_TYPE: &str = "org.kubeflow.serving.inference.request";
pub const RESPONSE_TYPE: &str = "org.kubeflow.serving.inference.response";

/// Which half of an exchange an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Request,
    Response,
}

/// One inference event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub half: Half,
    pub source: String,
    /// The payload's media type (`datacontenttype`, or the body's
    /// `Content-Type` in binary mode).
    pub content_type: Option<String>,
    pub data: Bytes,
    pub inference_service: Option<String>,
    pub namespace: Option<String>,
    pub component: Option<String>,
    pub endpoint: Option<String>,
    /// The request headers the logger kept (`metadata`), one pair per value.
    pub metadata: Vec<(String, String)>,
}

/// Why a body is not an inference event (a 400 answer, with the reason).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("not a CloudEvent: send binary mode (ce-specversion, ce-id, ce-type, ce-source headers) or structured mode (Content-Type: application/cloudevents+json)")]
    NotACloudEvent,
    #[error("the event has no {0}")]
    MissingAttribute(&'static str),
    #[error("specversion {0:?} is not supported (accepted: 1.0, 0.3)")]
    SpecVersion(String),
    #[error("type {0:?} is not an inference event (accepted: {REQUEST_TYPE}, {RESPONSE_TYPE})")]
    UnsupportedType(String),
    #[error(
        "batches (application/cloudevents-batch+json) are not accepted: send one event per request"
    )]
    Batch,
    #[error("the structured event is not a JSON object: {0}")]
    Malformed(String),
}

impl EventError {
    /// The `type` of the JSON error answer.
    pub fn kind(&self) -> &'static str {
        match self {
            EventError::NotACloudEvent => "not_a_cloudevent",
            EventError::MissingAttribute(_) => "missing_attribute",
            EventError::SpecVersion(_) => "unsupported_specversion",
            EventError::UnsupportedType(_) => "unsupported_type",
            EventError::Batch => "batch",
            EventError::Malformed(_) => "malformed",
        }
    }
}

fn half_of(kind: &str) -> Result<Half, EventError> {
    match kind {
        REQUEST_TYPE => Ok(Half::Request),
        RESPONSE_TYPE => Ok(Half::Response),
        other => Err(EventError::UnsupportedType(other.into())),
    }
}

fn check_specversion(v: &str) -> Result<(), EventError> {
    match v {
        "1.0" | "0.3" => Ok(()),
        other => Err(EventError::SpecVersion(other.into())),
    }
}

/// Percent-decodes a binary-mode header value (the HTTP binding encodes
/// characters outside printable ASCII, and some SDKs `"` and `%`).
fn percent_decode(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// The `metadata` extension: a JSON object of header name to values (as Go
/// marshals `map[string][]string`), one pair per value.
fn metadata(value: &serde_json::Value) -> Vec<(String, String)> {
    let Some(map) = value.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, values) in map {
        match values {
            serde_json::Value::Array(vs) => out.extend(
                vs.iter()
                    .filter_map(|v| Some((name.clone(), v.as_str()?.to_string()))),
            ),
            serde_json::Value::String(v) => out.push((name.clone(), v.clone())),
            _ => {}
        }
    }
    out
}

/// The `metadata` extension as a header carries it: JSON text, percent-encoded
/// or not.
fn metadata_text(raw: Option<&str>) -> Vec<(String, String)> {
    let Some(raw) = raw else { return Vec::new() };
    serde_json::from_str(raw)
        .or_else(|_| serde_json::from_str(&percent_decode(raw)))
        .map(|v| metadata(&v))
        .unwrap_or_default()
}

/// Reads one event from a request's headers and body.
pub fn parse(headers: &HeaderMap, body: Bytes) -> Result<Event, EventError> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ct = content_type.as_deref().unwrap_or("").to_ascii_lowercase();
    if ct.starts_with("application/cloudevents-batch+json") {
        return Err(EventError::Batch);
    }
    if ct.starts_with("application/cloudevents+json") {
        return structured(&body);
    }
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| percent_decode(v.trim()))
    };
    let spec = h("ce-specversion").ok_or(EventError::NotACloudEvent)?;
    check_specversion(&spec)?;
    let id = h("ce-id")
        .filter(|s| !s.is_empty())
        .ok_or(EventError::MissingAttribute("ce-id"))?;
    let kind = h("ce-type").ok_or(EventError::MissingAttribute("ce-type"))?;
    let source = h("ce-source").ok_or(EventError::MissingAttribute("ce-source"))?;
    let raw_metadata = headers.get("ce-metadata").and_then(|v| v.to_str().ok());
    Ok(Event {
        id,
        half: half_of(&kind)?,
        source,
        content_type,
        data: body,
        inference_service: h("ce-inferenceservicename"),
        namespace: h("ce-namespace"),
        component: h("ce-component"),
        endpoint: h("ce-endpoint"),
        metadata: metadata_text(raw_metadata),
    })
}

fn structured(body: &[u8]) -> Result<Event, EventError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| EventError::Malformed(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| EventError::Malformed("not an object".into()))?;
    let s = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let spec = s("specversion").ok_or(EventError::MissingAttribute("specversion"))?;
    check_specversion(&spec)?;
    let id = s("id")
        .filter(|s| !s.is_empty())
        .ok_or(EventError::MissingAttribute("id"))?;
    let kind = s("type").ok_or(EventError::MissingAttribute("type"))?;
    let source = s("source").ok_or(EventError::MissingAttribute("source"))?;
    let content_type = s("datacontenttype");
    let json_data = content_type.as_deref().is_none_or(|c| c.contains("json"));
    let data = match (obj.get("data_base64"), obj.get("data")) {
        (Some(serde_json::Value::String(b64)), _) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| EventError::Malformed(format!("data_base64: {e}")))?,
        ),
        (_, Some(serde_json::Value::String(text))) if !json_data => {
            Bytes::from(text.clone().into_bytes())
        }
        (_, Some(value)) => Bytes::from(serde_json::to_vec(value).expect("a JSON value")),
        (_, None) => Bytes::new(),
    };
    let metadata = match obj.get("metadata") {
        Some(serde_json::Value::String(text)) => metadata_text(Some(text)),
        Some(value) => self::metadata(value),
        None => Vec::new(),
    };
    Ok(Event {
        id,
        half: half_of(&kind)?,
        source,
        content_type,
        data,
        inference_service: s("inferenceservicename"),
        namespace: s("namespace"),
        component: s("component"),
        endpoint: s("endpoint"),
        metadata,
    })
}

/// What became of a received event (the counter's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Its other half was waiting: the pair became a sample.
    Joined,
    /// It waits for its other half.
    Pending,
    /// The same half of the same id came again; the newer one waits.
    Duplicate,
    /// It waited `pair_timeout` without its other half.
    Expired,
    /// `max_pending` events were waiting: the oldest was dropped.
    DroppedFull,
    /// Not an inference event (answered 400).
    Invalid,
}

impl EventOutcome {
    pub const ALL: [EventOutcome; 6] = [
        EventOutcome::Joined,
        EventOutcome::Pending,
        EventOutcome::Duplicate,
        EventOutcome::Expired,
        EventOutcome::DroppedFull,
        EventOutcome::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Joined => "joined",
            EventOutcome::Pending => "pending",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Expired => "expired",
            EventOutcome::DroppedFull => "dropped_full",
            EventOutcome::Invalid => "invalid",
        }
    }
}

struct Waiting {
    event: Event,
    arrived: SystemTime,
    seq: u64,
}

#[derive(Default)]
struct Pending {
    by_id: HashMap<String, Waiting>,
    /// Arrival order, for expiry and eviction; entries whose event left
    /// (joined, replaced) are skipped, and compacted away when the queue
    /// outgrows the map.
    order: VecDeque<(Instant, String, u64)>,
    seq: u64,
}

impl Pending {
    fn expire(&mut self, now: Instant, timeout: Duration) -> u64 {
        let mut expired = 0;
        while let Some((at, _, _)) = self.order.front() {
            if now.duration_since(*at) < timeout {
                break;
            }
            let (_, id, seq) = self.order.pop_front().expect("front");
            if self.by_id.get(&id).is_some_and(|w| w.seq == seq) {
                self.by_id.remove(&id);
                expired += 1;
            }
        }
        expired
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((_, id, seq)) = self.order.pop_front() {
            if self.by_id.get(&id).is_some_and(|w| w.seq == seq) {
                self.by_id.remove(&id);
                return true;
            }
        }
        false
    }

    fn insert(&mut self, now: Instant, event: Event) {
        self.seq += 1;
        let seq = self.seq;
        self.order.push_back((now, event.id.clone(), seq));
        self.by_id.insert(
            event.id.clone(),
            Waiting {
                event,
                arrived: SystemTime::now(),
                seq,
            },
        );
        if self.order.len() > 2 * self.by_id.len() + 64 {
            let by_id = &self.by_id;
            self.order
                .retain(|(_, id, seq)| by_id.get(id).is_some_and(|w| w.seq == *seq));
        }
    }
}

/// Pairs events and hands each pair to analysis as a sample.
pub struct Receiver {
    /// Taken away at shutdown (`close`), so that analysis, which drains
    /// until every sender is gone, can end before the admin server does.
    sender: Mutex<Option<SampleSender>>,
    config: CloudEventsConfig,
    max_body_bytes: usize,
    counter: Counter<u64>,
    pending: Mutex<Pending>,
}

impl Receiver {
    pub fn new(
        sender: SampleSender,
        config: CloudEventsConfig,
        max_body_bytes: usize,
        counter: Counter<u64>,
    ) -> Receiver {
        Receiver {
            sender: Mutex::new(Some(sender)),
            config,
            max_body_bytes,
            counter,
            pending: Mutex::new(Pending::default()),
        }
    }

    fn count(&self, outcome: EventOutcome, n: u64) {
        if n > 0 {
            self.counter
                .add(n, &[KeyValue::new(attr::CE_OUTCOME, outcome.as_str())]);
        }
    }

    /// Lets go of the sample queue: events that arrive later are refused.
    pub fn close(&self) {
        self.sender.lock().expect("poisoned").take();
    }

    /// False once closed.
    pub fn open(&self) -> bool {
        self.sender.lock().expect("poisoned").is_some()
    }

    /// Counts a body that was not an inference event.
    pub fn invalid(&self) {
        self.count(EventOutcome::Invalid, 1);
    }

    /// Events waiting for their other half.
    pub fn pending(&self) -> usize {
        self.pending.lock().expect("poisoned").by_id.len()
    }

    /// Takes one event: pairs it, or keeps it waiting.
    pub fn accept(&self, event: Event) -> EventOutcome {
        let now = Instant::now();
        let (outcome, pair, expired, evicted) = {
            let mut p = self.pending.lock().expect("poisoned");
            let expired = p.expire(now, self.config.pair_timeout);
            match p.by_id.remove(&event.id) {
                Some(w) if w.event.half != event.half => {
                    (EventOutcome::Joined, Some((w, event)), expired, 0)
                }
                Some(_) => {
                    p.insert(now, event);
                    (EventOutcome::Duplicate, None, expired, 0)
                }
                None => {
                    let mut evicted = 0;
                    while p.by_id.len() >= self.config.max_pending && p.evict_oldest() {
                        evicted += 1;
                    }
                    p.insert(now, event);
                    (EventOutcome::Pending, None, expired, evicted)
                }
            }
        };
        self.count(EventOutcome::Expired, expired);
        self.count(EventOutcome::DroppedFull, evicted);
        self.count(outcome, 1);
        if let Some((waiting, event)) = pair {
            let arrived = waiting.arrived;
            let (request, response) = match event.half {
                Half::Response => (waiting.event, event),
                Half::Request => (event, waiting.event),
            };
            if let Some(sender) = self.sender.lock().expect("poisoned").as_ref() {
                sender.offer(sample(request, response, arrived, self.max_body_bytes));
            }
        }
        outcome
    }
}

/// The path the payload's protocol uses, so that the decoders read it as
/// they read proxied traffic.
pub fn path_for(request: &Event) -> String {
    let model = request
        .inference_service
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("model");
    let body: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&request.data).ok();
    let has = |k: &str| body.as_ref().is_some_and(|b| b.contains_key(k));
    let v2_inputs = body
        .as_ref()
        .and_then(|b| b.get("inputs"))
        .and_then(|i| i.as_array())
        .and_then(|a| a.first())
        .is_some_and(|t| t.get("datatype").is_some());
    if v2_inputs {
        format!("/v2/models/{model}/infer")
    } else if has("messages") {
        "/v1/chat/completions".into()
    } else if has("prompt") {
        "/v1/completions".into()
    } else {
        format!("/v1/models/{model}:predict")
    }
}

fn captured(data: Bytes, cap: usize) -> CapturedBody {
    CapturedBody {
        size: data.len() as u64,
        truncated: data.len() > cap,
        bytes: data.slice(..data.len().min(cap)),
    }
}

/// One exchange from its two halves: a completed POST, as
/// [`Sample::from_bodies`] makes one, with the event's id, kept headers and
/// arrival, and bodies capped as the proxy caps them.
pub fn sample(request: Event, response: Event, arrived: SystemTime, max_body: usize) -> Sample {
    let path = path_for(&request);
    let mut s = Sample::from_bodies(
        &path,
        &[],
        &[],
        response
            .content_type
            .as_deref()
            .unwrap_or("application/json"),
    );
    s.source = SampleSource::CloudEvents;
    s.request_id = request.id.clone();
    let headers = &mut s.request_headers;
    let content_type = request
        .content_type
        .as_deref()
        .unwrap_or("application/json");
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    for (name, value) in &request.metadata {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    s.request_body = captured(request.data, max_body);
    s.response_body = captured(response.data, max_body);
    s.timings.start = arrived;
    s
}

#[cfg(test)]
mod tests;
