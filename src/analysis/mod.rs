//! Analysis of samples: plain code with no I/O and no knowledge of HTTP
//! servers. The analysis task drains the sample queue and hands each sample to
//! every [`Analyzer`] in turn. Later stages (protocol decoders, quality, drift)
//! plug in here as further analyzers.

pub mod payload;
pub mod redact;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use tokio::sync::mpsc;

use crate::config::ProtocolConfig;
use crate::protocol::{self, Inference, Protocol};
use crate::sample::Sample;
use crate::telemetry::names::attr;
use crate::telemetry::{Gauges, Instruments};

/// One stage of analysis. Implementations are synchronous and do no I/O; they
/// record figures into instruments they were built with.
pub trait Analyzer: Send {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Looks at one sample and the inference records decoded from it (none
    /// when it was not model traffic or could not be decoded).
    fn analyze(&mut self, sample: &Sample, records: &[Inference]);
    /// When this analyzer wants [`Analyzer::tick`] called even if no sample
    /// arrives (periodic work over what it has seen); None: never.
    fn next_tick(&self) -> Option<std::time::Instant> {
        None
    }
    /// Periodic work; called at or after the time `next_tick` gave.
    fn tick(&mut self) {}
    /// A live reload: take what can change from the config now in force.
    fn reconfigure(&mut self, _update: &Update) {}
}

/// What a live reload hands the analysis thread: the config now in force
/// and the drift profiles it names (read and checked before the reload was
/// accepted, so the analysis thread does no I/O).
pub struct Update {
    pub config: crate::config::Config,
    pub drift_profiles: std::collections::HashMap<String, crate::drift::profile::Profile>,
}

/// A one-place mailbox for the newest [`Update`]; the analysis thread takes
/// it before its next batch (a newer update replaces one not yet taken).
#[derive(Default)]
pub struct Control {
    pending: std::sync::Mutex<Option<Update>>,
}

impl Control {
    pub fn put(&self, update: Update) {
        *self.pending.lock().expect("poisoned") = Some(update);
    }

    fn take(&self) -> Option<Update> {
        self.pending.lock().expect("poisoned").take()
    }
}

/// Decodes samples into records and counts what it decoded and what it could not.
pub struct Decoder {
    config: ProtocolConfig,
    instruments: Instruments,
    problems: Arc<DecodeProblems>,
}

/// The `reason` of `modelwatch.decode.errors` for exchanges that decoded,
/// but whose configured feature names do not fit the model's inputs (the
/// features then carry positional names, and a profile's names never match).
pub const FEATURE_NAMES_MISMATCH: &str = "feature_names_mismatch";

/// At most this many models are listed with a feature-name mismatch.
const MAX_MISMATCHED_MODELS: usize = 64;

/// A configured feature list whose length does not fit what the model gets.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeatureNamesMismatch {
    pub model: String,
    /// The config key to fix, e.g. `protocol.models[0].features`.
    pub key: String,
    pub configured: usize,
    pub received: usize,
    /// Exchanges decoded with positional names because of it.
    pub exchanges: u64,
}

/// Problems that decoding found in the configuration, for `/v1/status`
/// (bounded: one entry per model, at most 64 models).
#[derive(Debug, Default)]
pub struct DecodeProblems {
    feature_names: std::sync::Mutex<std::collections::BTreeMap<String, FeatureNamesMismatch>>,
}

impl DecodeProblems {
    pub fn feature_names(&self) -> Vec<FeatureNamesMismatch> {
        self.feature_names
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect()
    }
}

impl Decoder {
    pub fn new(config: ProtocolConfig, instruments: Instruments) -> Decoder {
        Decoder {
            config,
            instruments,
            problems: Arc::default(),
        }
    }

    /// A live reload's protocol settings.
    pub fn reconfigure(&mut self, config: &ProtocolConfig) {
        self.config = config.clone();
    }

    /// What `/v1/status` shows of the problems decoding found.
    pub fn problems(&self) -> Arc<DecodeProblems> {
        self.problems.clone()
    }

    /// A configured feature list that the first record's inputs do not fit:
    /// said once at WARN per model (with the counts and the key to fix),
    /// counted on every exchange, listed in `/v1/status`.
    fn check_feature_names(&self, records: &[Inference]) {
        let Some(first) = records.first() else {
            return;
        };
        let Some(settings) = protocol::model_settings(&self.config, first.model.as_deref()) else {
            return;
        };
        let index = self
            .config
            .models
            .iter()
            .position(|s| std::ptr::eq(s, settings))
            .expect("one of the configured models");
        if settings.features.is_empty() || settings.features.len() == first.features.len() {
            return;
        }
        let model = protocol::model_label(first.model.as_deref()).to_string();
        self.instruments.decode_errors.add(
            1,
            &[
                KeyValue::new(attr::PROTOCOL, first.protocol.as_str()),
                KeyValue::new(attr::REASON, FEATURE_NAMES_MISMATCH),
            ],
        );
        let mut seen = self.problems.feature_names.lock().expect("poisoned");
        if let Some(entry) = seen.get_mut(&model) {
            entry.exchanges += 1;
            entry.received = first.features.len();
            return;
        }
        if seen.len() >= MAX_MISMATCHED_MODELS {
            // Said for the first 64 models; the rest are counted only.
            return;
        }
        let key = format!("protocol.models[{index}].features");
        tracing::warn!(
            model = %model,
            configured = settings.features.len(),
            received = first.features.len(),
            key = %key,
            "{key} names {} features but model {model} gets {} input values per row; its features keep positional names (input[0], ...) and no profile feature will match until the list has one name per value",
            settings.features.len(),
            first.features.len(),
        );
        seen.insert(
            model.clone(),
            FeatureNamesMismatch {
                model,
                key,
                configured: settings.features.len(),
                received: first.features.len(),
                exchanges: 1,
            },
        );
    }

    /// Records for one sample. Requests that carry no inference (GET, HEAD,
    /// OPTIONS: health checks, metadata; gRPC calls other than `ModelInfer`,
    /// `ModelStreamInfer` and `Predict`) are not decoded.
    pub fn decode(&self, sample: &Sample) -> Vec<Inference> {
        if matches!(
            sample.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        ) {
            return Vec::new();
        }
        let protocol = protocol::detect(sample, self.config.kind);
        if protocol.is_none() && sample.is_grpc() {
            // Health, readiness and metadata calls: counted by the proxy, no inference.
            return Vec::new();
        }
        let decoded = match protocol {
            Some(p) => protocol::decode_as(sample, p, &self.config),
            None => Err(protocol::DecodeError::Unrecognised),
        };
        match decoded {
            Ok(mut records) => {
                if let Some(p) = protocol {
                    self.fill_identity(sample, p, &mut records);
                }
                self.check_feature_names(&records);
                if let Some(first) = records.first() {
                    self.instruments.inferences.add(
                        records.len() as u64,
                        &[
                            KeyValue::new(attr::PROTOCOL, first.protocol.as_str()),
                            KeyValue::new(attr::GEN_AI_OPERATION_NAME, first.operation.as_str()),
                        ],
                    );
                }
                records
            }
            Err(e) => {
                self.instruments.decode_errors.add(
                    1,
                    &[
                        KeyValue::new(
                            attr::PROTOCOL,
                            protocol.map(|p| p.as_str()).unwrap_or("unknown"),
                        ),
                        KeyValue::new(attr::REASON, e.reason()),
                    ],
                );
                tracing::debug!(
                    request_id = %sample.request_id,
                    reason = e.reason(),
                    request_bytes = sample.request_body.bytes.len(),
                    response_bytes = sample.response_body.bytes.len(),
                    response_size = sample.response_body.size,
                    outcome = ?sample.outcome,
                    "sample not decoded"
                );
                Vec::new()
            }
        }
    }
}

impl Decoder {
    /// Records whose protocol named no model or version take them from the
    /// exchange itself ([`protocol::identify`]: path, headers, default).
    fn fill_identity(&self, sample: &Sample, protocol: Protocol, records: &mut [Inference]) {
        if records
            .iter()
            .all(|r| r.model.is_some() && r.model_version.is_some())
        {
            return;
        }
        let id = if records.iter().all(|r| r.model.is_some()) {
            protocol::Identity {
                model: None,
                version: protocol::identify_version(sample, protocol, &self.config),
            }
        } else {
            protocol::identify(sample, Some(protocol), &self.config)
        };
        for r in records.iter_mut() {
            if r.model.is_none() {
                r.model = id.model.clone();
            }
            if r.model_version.is_none() {
                r.model_version = id.version.clone();
            }
        }
    }
}

/// HTTP-level figures of sampled exchanges: time to first byte and truncated bodies.
pub struct HttpAnalyzer {
    instruments: Instruments,
}

impl HttpAnalyzer {
    pub fn new(instruments: Instruments) -> HttpAnalyzer {
        HttpAnalyzer { instruments }
    }
}

impl Analyzer for HttpAnalyzer {
    fn name(&self) -> &'static str {
        "http"
    }

    fn analyze(&mut self, sample: &Sample, _records: &[Inference]) {
        if let Some(ttfb) = sample.timings.first_byte {
            self.instruments.sample_time_to_first_byte.record(
                ttfb.as_secs_f64(),
                &[KeyValue::new(attr::HTTP_ROUTE, sample.route)],
            );
        }
        for (direction, body) in [
            ("request", &sample.request_body),
            ("response", &sample.response_body),
        ] {
            if body.truncated {
                self.instruments
                    .bodies_truncated
                    .add(1, &[KeyValue::new(attr::DIRECTION, direction)]);
            }
        }
    }
}

/// Per model version: request durations and results of sampled model
/// requests, for comparing versions (`GET /v1/gate`). Every exchange counts
/// under its model and version whatever its status: a failed request is
/// named by its path, headers or the default ([`protocol::identify`]), so
/// a version that fails is seen failing. At most `MAX_VERSION_PAIRS`
/// (model, version) pairs get their own labels; later ones share `_OTHER`.
pub struct VersionAnalyzer {
    instruments: Instruments,
    config: ProtocolConfig,
    seen: std::collections::HashSet<(String, String)>,
    models: Option<Arc<crate::resources::environment::SeenModels>>,
}

pub const MAX_VERSION_PAIRS: usize = 64;
const OTHER: &str = "_OTHER";

impl VersionAnalyzer {
    pub fn new(instruments: Instruments, config: &ProtocolConfig) -> VersionAnalyzer {
        VersionAnalyzer {
            instruments,
            config: config.clone(),
            seen: Default::default(),
            models: None,
        }
    }

    /// Also tells the environment watcher which model versions appear.
    pub fn with_models(mut self, models: Arc<crate::resources::environment::SeenModels>) -> Self {
        self.models = Some(models);
        self
    }

    fn labels(&mut self, model: &str, version: &str) -> (String, String) {
        let key = (model.to_string(), version.to_string());
        if self.seen.contains(&key) {
            return key;
        }
        if self.seen.len() < MAX_VERSION_PAIRS {
            self.seen.insert(key.clone());
            if let Some(m) = &self.models {
                m.add(model, version);
            }
            return key;
        }
        (OTHER.into(), OTHER.into())
    }
}

impl Analyzer for VersionAnalyzer {
    fn name(&self) -> &'static str {
        "version"
    }

    fn reconfigure(&mut self, update: &Update) {
        self.config = update.config.protocol.clone();
    }

    fn analyze(&mut self, sample: &Sample, records: &[Inference]) {
        if matches!(
            sample.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        ) {
            return;
        }
        let Some(id) = protocol::exchange_identity(sample, records, &self.config) else {
            return;
        };
        let version = id.version.clone().unwrap_or_default();
        let (model, version) = self.labels(id.model_label(), &version);
        let error = sample.failed();
        let attrs = [
            KeyValue::new(attr::MODEL, model),
            KeyValue::new(attr::MODEL_VERSION, version),
        ];
        // A payload logger's events carry no timing of the model's work.
        if sample.source == crate::sample::SampleSource::Proxy {
            self.instruments
                .model_request_duration
                .record(sample.timings.total.as_secs_f64(), &attrs);
        }
        let [a, b] = attrs;
        self.instruments.model_requests.add(
            1,
            &[
                a,
                b,
                KeyValue::new(attr::RESULT, if error { "error" } else { "ok" }),
            ],
        );
    }
}

/// How long the analysis thread waits after a batch before draining again.
/// Batching keeps the proxy from waking this thread once per sample.
const BATCH_PAUSE: Duration = Duration::from_millis(5);

/// The longest the analysis thread sleeps between polls of an empty queue
/// while periodic work is pending. A burst after a quiet spell waits at most
/// this long; beyond `sampling.queue_capacity` samples in that time, the
/// newest are dropped and counted.
const MAX_IDLE_POLL: Duration = Duration::from_millis(50);

/// Gives the analysis thread a lower scheduling priority (nice +10) than the
/// proxy's event loop, so that on a busy core the model's traffic goes first
/// and analysis takes the idle time. Failing to lower it is harmless.
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
            tracing::debug!(error = %e, "could not lower the analysis thread's priority");
        }
    }
}

/// Runs analysis on its own OS thread, so that it never competes with the
/// proxy's event loop. Drains the queue until every sender is gone (the proxy
/// has stopped), so samples taken before shutdown are still analyzed.
pub fn spawn(
    mut queue: mpsc::Receiver<Sample>,
    mut decoder: Decoder,
    mut analyzers: Vec<Box<dyn Analyzer>>,
    control: Arc<Control>,
    instruments: Instruments,
    gauges: Arc<Gauges>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("modelwatch-analysis".into())
        .spawn(move || {
            lower_priority();
            // While idle with periodic work pending, the queue is polled at an
            // interval that doubles from BATCH_PAUSE up to MAX_IDLE_POLL (an idle
            // sidecar wakes 20 times a second, not 200), and resets when a sample comes.
            let mut idle_poll = BATCH_PAUSE;
            loop {
                if let Some(update) = control.take() {
                    decoder.reconfigure(&update.config.protocol);
                    for a in analyzers.iter_mut() {
                        a.reconfigure(&update);
                    }
                }
                // Blocks while the queue is empty, unless an analyzer has
                // periodic work due: then waits only until that time.
                let due = analyzers.iter().filter_map(|a| a.next_tick()).min();
                let first = match due {
                    None => match queue.blocking_recv() {
                        Some(s) => Some(s),
                        None => break,
                    },
                    Some(at) => match queue.try_recv() {
                        Ok(s) => Some(s),
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            let now = std::time::Instant::now();
                            if now >= at {
                                for a in analyzers.iter_mut() {
                                    if a.next_tick().is_some_and(|t| t <= now) {
                                        a.tick();
                                    }
                                }
                            } else {
                                std::thread::sleep(idle_poll.min(at - now));
                                idle_poll = (idle_poll * 2).min(MAX_IDLE_POLL);
                            }
                            None
                        }
                    },
                };
                let Some(first) = first else { continue };
                idle_poll = BATCH_PAUSE;
                let mut next = Some(first);
                while let Some(sample) = next {
                    let records = decoder.decode(&sample);
                    for a in analyzers.iter_mut() {
                        a.analyze(&sample, &records);
                    }
                    instruments.samples_analyzed.add(1, &[]);
                    gauges.samples_analyzed.fetch_add(1, Ordering::Relaxed);
                    next = queue.try_recv().ok();
                }
                gauges
                    .sample_queue_depth
                    .store(queue.len() as u64, Ordering::Relaxed);
                std::thread::sleep(BATCH_PAUSE);
            }
            for a in analyzers.iter_mut() {
                if a.next_tick().is_some() {
                    a.tick();
                }
            }
            tracing::debug!("analysis queue closed");
        })
}

/// The newest records, for `GET /v1/records` (bounded; oldest dropped first).
#[derive(Debug, Default)]
pub struct RecentRecords {
    capacity: usize,
    records: std::sync::Mutex<std::collections::VecDeque<Inference>>,
}

impl RecentRecords {
    pub fn new(capacity: usize) -> Arc<RecentRecords> {
        Arc::new(RecentRecords {
            capacity,
            records: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(
                capacity.min(1024),
            )),
        })
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// A copy of the records, oldest first.
    pub fn snapshot(&self) -> Vec<Inference> {
        self.records
            .lock()
            .expect("poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

/// Feeds [`RecentRecords`].
pub struct RecentRecordsAnalyzer(pub Arc<RecentRecords>);

impl Analyzer for RecentRecordsAnalyzer {
    fn name(&self) -> &'static str {
        "recent_records"
    }

    fn analyze(&mut self, _sample: &Sample, records: &[Inference]) {
        let mut q = self.0.records.lock().expect("poisoned");
        for r in records {
            if q.len() == self.0.capacity {
                q.pop_front();
            }
            q.push_back(r.clone());
        }
    }
}
