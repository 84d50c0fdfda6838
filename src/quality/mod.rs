//! Model quality: predictions wait in the embedded store for ground-truth
//! labels sent later to `POST /v1/feedback`; joined rows feed totals and
//! sliding windows of classification and regression figures, and calibrated
//! scores give estimates (CBPE) while labels are missing.
//!
//! The analysis thread hands predictions over through a bounded channel
//! ([`QualityAnalyzer`]); the admin server hands feedback over the same way.
//! One thread ([`spawn`]) owns the store and does all of its I/O; the maths
//! lives in [`metrics`] as plain functions.

pub mod engine;
pub mod feedback;
pub mod metrics;
pub mod segments;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;

use crate::analysis::Analyzer;
use crate::config::{Config, JoinKey};
use crate::protocol::{Inference, Operation};
use crate::sample::Sample;
use crate::telemetry::names::{self, attr, MetricName};
use crate::telemetry::Instruments;
pub use engine::{Engine, FeedbackReport, Prediction, Snapshot};

/// Counts the gauges and `/v1/status` read without locking.
#[derive(Debug, Default)]
pub struct QualityStats {
    pub pending: AtomicU64,
    pub stored: AtomicU64,
    pub early: AtomicU64,
}

/// Work for the quality thread.
pub enum Msg {
    Predictions(Vec<Prediction>),
    Feedback(
        feedback::Parsed,
        tokio::sync::oneshot::Sender<Result<FeedbackReport, String>>,
    ),
    /// Forget a model version's calibration reference: the next labelled
    /// rows form a new one. Answers whether the model version was known.
    ResetReference(
        String,
        String,
        tokio::sync::oneshot::Sender<Result<bool, String>>,
    ),
    /// A live reload: windows, minimum samples, intervals, label TTL and
    /// protocol model settings change; figures follow at the next refresh.
    Reconfigure(Box<(crate::config::QualityConfig, crate::config::ProtocolConfig)>),
    Shutdown,
}

/// Where predictions and labels go.
#[derive(Clone)]
enum Sink {
    /// The quality thread and its store (`quality.backend: embedded`).
    Store(SyncSender<Msg>),
    /// Kafka (`quality.backend: kafka`): the joiner joins them.
    Kafka(Arc<crate::kafka::producer::KafkaSink>),
}

/// What the analysis thread and the admin server hold.
#[derive(Clone)]
pub struct QualityHandle {
    sink: Sink,
    pub snapshot: Arc<RwLock<Snapshot>>,
    pub stats: Arc<QualityStats>,
    pub token: Option<String>,
    pub max_feedback_bytes: usize,
}

impl QualityHandle {
    /// Hands a live reload's settings to the quality thread (waits for room
    /// in its queue: a reload is rare and must not be lost).
    pub fn reconfigure(&self, config: &crate::config::Config) {
        let Sink::Store(tx) = &self.sink else {
            return;
        };
        let msg = Msg::Reconfigure(Box::new((config.quality.clone(), config.protocol.clone())));
        if tx.send(msg).is_err() {
            tracing::warn!("the quality thread has stopped: its settings were not reloaded");
        }
    }
}

/// Why a feedback call could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the quality thread is busy (quality.queue_capacity messages waiting); retry shortly")]
    Busy,
    #[error("the quality thread has stopped")]
    Stopped,
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    Kafka(String),
    /// The operation belongs to another process (the joiner, in kafka mode).
    #[error("{0}")]
    Elsewhere(&'static str),
}

impl QualityHandle {
    /// Hands a parsed feedback body to the quality thread and waits for its report.
    pub async fn submit(&self, parsed: feedback::Parsed) -> Result<FeedbackReport, SubmitError> {
        match &self.sink {
            Sink::Store(_) => self.ask(|reply| Msg::Feedback(parsed, reply)).await,
            Sink::Kafka(k) => k.send_labels(parsed).await.map_err(SubmitError::Kafka),
        }
    }

    /// The joiner's handle: labels go to Kafka, figures come from `snapshot`.
    pub fn for_joiner(
        sink: Arc<crate::kafka::producer::KafkaSink>,
        snapshot: Arc<RwLock<Snapshot>>,
        stats: Arc<QualityStats>,
        q: &crate::config::QualityConfig,
    ) -> QualityHandle {
        QualityHandle {
            sink: Sink::Kafka(sink),
            snapshot,
            stats,
            token: (!q.feedback_token.is_empty()).then(|| q.feedback_token.clone()),
            max_feedback_bytes: q.max_feedback_bytes,
        }
    }

    /// Which backend this handle feeds.
    pub fn backend(&self) -> crate::config::QualityBackend {
        match self.sink {
            Sink::Store(_) => crate::config::QualityBackend::Embedded,
            Sink::Kafka(_) => crate::config::QualityBackend::Kafka,
        }
    }

    /// Asks the quality thread to forget a model version's CBPE reference.
    pub async fn reset_reference(
        &self,
        model: String,
        version: String,
    ) -> Result<bool, SubmitError> {
        self.ask(|reply| Msg::ResetReference(model, version, reply))
            .await
    }

    /// Sends a request that carries its reply channel, without waiting for
    /// room in the queue, and awaits the answer.
    async fn ask<T>(
        &self,
        msg: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, String>>) -> Msg,
    ) -> Result<T, SubmitError> {
        let Sink::Store(queue) = &self.sink else {
            return Err(SubmitError::Elsewhere(
                "with quality.backend kafka the joiners hold the figures and references: call modelwatch joiner",
            ));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        match queue.try_send(msg(tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Stopped),
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(SubmitError::Store(e)),
            Err(_) => Err(SubmitError::Stopped),
        }
    }

    /// The current figures as JSON (for `/v1/status` and `/v1/quality`).
    pub fn status(&self) -> serde_json::Value {
        let mut v =
            serde_json::to_value(&*self.snapshot.read().expect("poisoned")).unwrap_or_default();
        if let Sink::Kafka(k) = &self.sink {
            v["backend"] = "kafka".into();
            v["note"] = "predictions and labels go to Kafka; `modelwatch joiner` joins them and exports the figures".into();
            v["outbox_records"] = k.stats.records.load(Ordering::Relaxed).into();
        }
        v
    }
}

/// The running quality thread.
pub struct Quality {
    pub handle: QualityHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Quality {
    /// Asks the thread to flush and stop, and waits for it (blocking).
    pub fn stop(self) {
        match &self.handle.sink {
            Sink::Store(tx) => {
                let _ = tx.send(Msg::Shutdown);
            }
            Sink::Kafka(k) => k.stop(),
        }
        drop(self.handle);
        if let Some(t) = self.thread {
            if t.join().is_err() {
                tracing::warn!("quality thread failed");
            }
        }
    }
}

/// Opens the store (a bad path fails here, at start) and starts the thread;
/// with the Kafka backend, opens the outbox and starts the producer instead.
pub fn spawn(
    config: &Config,
    instruments: Instruments,
    meter: &Meter,
    sampler: Arc<crate::sample::Sampler>,
) -> anyhow::Result<Quality> {
    let q = config.quality.clone();
    let stats = Arc::new(QualityStats::default());
    let token = (!q.feedback_token.is_empty()).then(|| q.feedback_token.clone());
    if q.backend == crate::config::QualityBackend::Kafka {
        let mut k = q.kafka.clone();
        if k.outbox_path.is_empty() && !q.store_path.is_empty() {
            // Beside the store: the volume the store was given.
            let dir = std::path::Path::new(&q.store_path)
                .parent()
                .unwrap_or(std::path::Path::new(""));
            k.outbox_path = dir.join("kafka-outbox.redb").display().to_string();
        }
        let sink =
            crate::kafka::producer::KafkaSink::start(&k, q.queue_capacity, instruments, sampler)?;
        crate::kafka::producer::register_gauges(meter, sink.stats.clone());
        tracing::info!(bootstrap = %q.kafka.bootstrap, topic = %q.kafka.predictions_topic, "quality: predictions and labels go to Kafka");
        return Ok(Quality {
            handle: QualityHandle {
                sink: Sink::Kafka(sink),
                snapshot: Arc::new(RwLock::new(Snapshot::default())),
                stats,
                token,
                max_feedback_bytes: q.max_feedback_bytes,
            },
            thread: None,
        });
    }
    let mut engine = Engine::open(
        q.clone(),
        config.protocol.clone(),
        instruments,
        stats.clone(),
    )
    .map_err(|e| anyhow::anyhow!("{e} (quality.store_path)"))?;
    engine.refresh();
    let snapshot = engine.snapshot.clone();
    register_gauges(meter, snapshot.clone(), stats.clone());
    let (tx, rx) = std::sync::mpsc::sync_channel(q.queue_capacity);
    let thread = std::thread::Builder::new()
        .name("modelwatch-quality".into())
        .spawn(move || run(engine, rx, q.refresh_interval, q.sync_interval))?;
    if q.store_path.is_empty() {
        tracing::warn!("quality.store_path is empty: predictions waiting for labels are kept in memory and lost on restart");
    }
    Ok(Quality {
        handle: QualityHandle {
            sink: Sink::Store(tx),
            snapshot,
            stats,
            token,
            max_feedback_bytes: q.max_feedback_bytes,
        },
        thread: Some(thread),
    })
}

/// At most this many messages are taken into one store transaction.
const MAX_BATCH: usize = 512;
/// Pause after a transaction, so that the next one takes what arrived meanwhile.
const BATCH_PAUSE: Duration = Duration::from_millis(5);

fn run(mut engine: Engine, rx: Receiver<Msg>, mut refresh: Duration, mut sync_every: Duration) {
    // Like analysis: the proxy's event loop goes first on a busy core.
    crate::analysis::lower_priority();
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    let mut next_refresh = Instant::now() + refresh;
    let mut stop = false;
    while !stop {
        let mut deadline = next_refresh;
        if unsynced {
            deadline = deadline.min(last_sync + sync_every);
        }
        let first = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut predictions = Vec::new();
        let mut feedback = Vec::new();
        let mut next = first;
        let mut taken = 0;
        while let Some(msg) = next {
            match msg {
                Msg::Predictions(p) => predictions.extend(p),
                Msg::Feedback(parsed, reply) => feedback.push((parsed, reply)),
                Msg::ResetReference(model, version, reply) => {
                    let result = engine
                        .reset_reference(&model, &version)
                        .map_err(|e| e.to_string());
                    let _ = reply.send(result);
                }
                Msg::Reconfigure(update) => {
                    let (q, p) = *update;
                    refresh = q.refresh_interval;
                    sync_every = q.sync_interval;
                    next_refresh = next_refresh.min(Instant::now() + refresh);
                    engine.reconfigure(q, p);
                    engine.refresh();
                }
                Msg::Shutdown => stop = true,
            }
            taken += 1;
            next = if taken < MAX_BATCH && !stop {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        // Acknowledged means durable: feedback is answered only after the
        // commit that holds it is on disk. One fsync serves every feedback
        // call that arrived together (group commit), and also flushes the
        // predictions written before it.
        let sync = last_sync.elapsed() >= sync_every || !feedback.is_empty();
        let mut wrote = false;
        // Predictions first, so that labels in the same batch find them.
        if !predictions.is_empty() {
            if let Err(e) = engine.add_predictions(predictions, sync && feedback.is_empty()) {
                tracing::error!(error = %e, "cannot store predictions");
            }
            wrote = true;
        }
        let n = feedback.len();
        let mut answers = Vec::with_capacity(n);
        let mut synced = n == 0;
        for (i, (parsed, reply)) in feedback.into_iter().enumerate() {
            let last = i + 1 == n;
            let result = engine.add_labels(parsed, last).map_err(|e| e.to_string());
            match &result {
                Err(e) => tracing::error!(error = %e, "cannot join labels"),
                Ok(_) if last => synced = true,
                Ok(_) => {}
            }
            answers.push((reply, result));
            wrote = true;
        }
        if !synced {
            // The last call failed before its durable commit: flush the others'.
            if let Err(e) = engine.close() {
                tracing::error!(error = %e, "quality store flush failed");
                for (_, result) in answers.iter_mut().filter(|(_, r)| r.is_ok()) {
                    *result = Err(format!("the labels could not be flushed to disk: {e}"));
                }
            }
        }
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
        if wrote {
            if sync {
                last_sync = Instant::now();
                unsynced = false;
            } else {
                unsynced = true;
            }
        }
        if Instant::now() >= next_refresh {
            let sync = unsynced && last_sync.elapsed() >= sync_every;
            if let Err(e) = engine.maintain(sync) {
                tracing::error!(error = %e, "quality store maintenance failed");
            }
            if sync {
                last_sync = Instant::now();
                unsynced = false;
            }
            engine.refresh();
            next_refresh = Instant::now() + refresh;
        }
        if unsynced && last_sync.elapsed() >= sync_every {
            if let Err(e) = engine.close() {
                tracing::error!(error = %e, "quality store flush failed");
            }
            last_sync = Instant::now();
            unsynced = false;
        }
        // Let work pile up a little: one transaction for many samples.
        if !stop && wrote {
            std::thread::sleep(BATCH_PAUSE);
        }
    }
    if let Err(e) = engine.close() {
        tracing::error!(error = %e, "quality store flush at shutdown failed");
    }
    engine.refresh();
    tracing::debug!("quality thread stopped");
}

/// Turns decoded records into predictions for the quality thread.
///
/// Chat and completion records are kept only for models whose
/// `protocol.models` entry says `task: classification` (an LLM used as a
/// classifier: the trimmed generated text is the predicted class); embeddings never.
pub struct QualityAnalyzer {
    handle: QualityHandle,
    /// The drift references' bins, kept with each prediction (segments).
    layouts: Option<crate::drift::segments::Layouts>,
    join_key: JoinKey,
    protocol: crate::config::ProtocolConfig,
    instruments: Instruments,
}

impl QualityAnalyzer {
    pub fn new(handle: QualityHandle, config: &Config, instruments: Instruments) -> Self {
        QualityAnalyzer {
            handle,
            layouts: None,
            join_key: config.quality.join_key,
            protocol: config.protocol.clone(),
            instruments,
        }
    }

    /// Keeps each prediction's feature bins in the drift reference's bins.
    pub fn with_layouts(mut self, layouts: crate::drift::segments::Layouts) -> Self {
        self.layouts = Some(layouts);
        self
    }

    /// The prediction of a record, if it is one quality can use.
    fn prediction(&self, r: &Inference) -> Option<Option<crate::protocol::Value>> {
        match r.operation {
            Operation::Embeddings => None,
            Operation::Chat | Operation::TextCompletion => {
                let settings = crate::protocol::model_settings(&self.protocol, r.model.as_deref())?;
                if settings.task != crate::config::Task::Classification {
                    return None;
                }
                let text = r
                    .output_text
                    .as_deref()
                    .map(str::trim)
                    .filter(|t| !t.is_empty())?;
                Some(Some(crate::protocol::Value::Text(text.to_string())))
            }
            _ if r.prediction.is_none() && r.scores.is_empty() => None,
            _ => Some(r.prediction.clone()),
        }
    }

    fn drop_rows(&self, n: usize, reason: &'static str) {
        self.instruments
            .quality_predictions_dropped
            .add(n as u64, &[KeyValue::new(attr::REASON, reason)]);
    }
}

impl Analyzer for QualityAnalyzer {
    fn name(&self) -> &'static str {
        "quality"
    }

    fn reconfigure(&mut self, update: &crate::analysis::Update) {
        self.protocol = update.config.protocol.clone();
    }

    fn analyze(&mut self, _sample: &Sample, records: &[Inference]) {
        let time_ms = engine::now_ms();
        let mut batch = Vec::new();
        let layout = match (&self.layouts, records.first()) {
            (Some(l), Some(r)) => l
                .read()
                .expect("poisoned")
                .get(crate::protocol::model_label(r.model.as_deref()))
                .cloned(),
            _ => None,
        };
        for r in records {
            let Some(prediction) = self.prediction(r) else {
                continue;
            };
            let id = match self.join_key {
                // The record's: a gRPC stream's requests each have their own.
                JoinKey::RequestId => r.request_id.as_str(),
                JoinKey::ResponseId => match r.response_id.as_deref() {
                    Some(id) if !id.is_empty() => id,
                    _ => {
                        self.drop_rows(1, "no_join_key");
                        continue;
                    }
                },
            };
            batch.push(Prediction {
                key: store::join_key(id, r.row as u32),
                time_ms,
                model: crate::protocol::model_label(r.model.as_deref()).to_string(),
                version: r.model_version.clone().unwrap_or_default(),
                prediction,
                scores: r.scores.clone(),
                bins: layout
                    .as_ref()
                    .map(|l| l.bins_of(&r.features))
                    .unwrap_or_default(),
            });
        }
        if batch.is_empty() {
            return;
        }
        let tx = match &self.handle.sink {
            Sink::Store(tx) => tx,
            Sink::Kafka(k) => return k.offer(batch),
        };
        let n = batch.len();
        if let Err(e) = tx.try_send(Msg::Predictions(batch)) {
            let reason = match e {
                TrySendError::Full(_) => "queue_full",
                TrySendError::Disconnected(_) => "shutdown",
            };
            self.drop_rows(n, reason);
        }
    }
}

type Observe<'a> = &'a mut dyn FnMut(f64, Vec<KeyValue>);

/// Registers one observable f64 gauge that reads the snapshot.
fn gauge(
    meter: &Meter,
    m: MetricName,
    snapshot: Arc<RwLock<Snapshot>>,
    read: fn(&Snapshot, Observe<'_>),
) {
    crate::telemetry::f64_gauge(meter, m, move |o| {
        let snap = snapshot.read().expect("poisoned");
        read(&snap, &mut |v, attrs| {
            if v.is_finite() {
                o.observe(v, &attrs)
            }
        });
    });
}

/// Calls `f` for each (model, window) with its base attributes.
fn each_window(s: &Snapshot, mut f: impl FnMut(&engine::WindowFigures, Vec<KeyValue>)) {
    for m in &s.models {
        for w in &m.windows {
            f(
                w,
                vec![
                    KeyValue::new(attr::MODEL, m.model.clone()),
                    KeyValue::new(attr::MODEL_VERSION, m.model_version.clone()),
                    KeyValue::new(attr::WINDOW, w.window.clone()),
                ],
            );
        }
    }
}

fn with(mut attrs: Vec<KeyValue>, more: &[(&'static str, &str)]) -> Vec<KeyValue> {
    for (k, v) in more {
        attrs.push(KeyValue::new(*k, v.to_string()));
    }
    attrs
}

/// The precision/recall/F1 family: per class, macro, weighted, binary.
fn prf_gauge(s: &Snapshot, o: Observe<'_>, pick: fn(&metrics::Prf) -> f64) {
    each_window(s, |w, base| {
        for c in &w.classes {
            o(
                pick(&c.prf),
                with(
                    base.clone(),
                    &[(attr::AVERAGE, "none"), (attr::CLASS, &c.class)],
                ),
            );
        }
        if let Some(p) = &w.macro_avg {
            o(pick(p), with(base.clone(), &[(attr::AVERAGE, "macro")]));
        }
        if let Some(p) = &w.weighted_avg {
            o(pick(p), with(base.clone(), &[(attr::AVERAGE, "weighted")]));
        }
        if let Some(c) = &w.binary {
            o(
                pick(&c.prf),
                with(base, &[(attr::AVERAGE, "binary"), (attr::CLASS, &c.class)]),
            );
        }
    });
}

fn estimated_prf_gauge(s: &Snapshot, o: Observe<'_>, pick: fn(&metrics::Prf) -> f64) {
    each_window(s, |w, base| {
        let Some(e) = &w.estimated else { return };
        if let Some(p) = &e.macro_avg {
            o(pick(p), with(base.clone(), &[(attr::AVERAGE, "macro")]));
        }
        if let Some(c) = &e.binary {
            o(
                pick(&c.prf),
                with(base, &[(attr::AVERAGE, "binary"), (attr::CLASS, &c.class)]),
            );
        }
    });
}

/// The windowed figures as gauges, read from the snapshot at each collection.
pub fn register_gauges(meter: &Meter, snapshot: Arc<RwLock<Snapshot>>, stats: Arc<QualityStats>) {
    use names::*;
    let st = stats.clone();
    crate::telemetry::u64_gauge(meter, QUALITY_PENDING, move |o| {
        o.observe(st.pending.load(Ordering::Relaxed), &[])
    });
    let st = stats.clone();
    crate::telemetry::u64_gauge(meter, QUALITY_EARLY_LABELS, move |o| {
        o.observe(st.early.load(Ordering::Relaxed), &[])
    });
    let snap = snapshot.clone();
    crate::telemetry::u64_gauge(meter, QUALITY_STORE_SIZE, move |o| {
        o.observe(snap.read().expect("poisoned").store_bytes, &[])
    });
    let s = || snapshot.clone();
    gauge(meter, QUALITY_SAMPLES, s(), |s, o| {
        each_window(s, |w, a| o(w.labelled as f64, a))
    });
    gauge(meter, QUALITY_WINDOW_PREDICTIONS, s(), |s, o| {
        each_window(s, |w, a| o(w.predictions as f64, a))
    });
    gauge(meter, QUALITY_ACCURACY, s(), |s, o| {
        each_window(s, |w, a| {
            if let Some(v) = w.accuracy {
                o(v, a)
            }
        })
    });
    gauge(meter, QUALITY_PRECISION, s(), |s, o| {
        prf_gauge(s, o, |p| p.precision)
    });
    gauge(meter, QUALITY_RECALL, s(), |s, o| {
        prf_gauge(s, o, |p| p.recall)
    });
    gauge(meter, QUALITY_F1, s(), |s, o| prf_gauge(s, o, |p| p.f1));
    gauge(meter, QUALITY_ROC_AUC, s(), |s, o| {
        each_window(s, |w, a| {
            if let Some(v) = w.roc_auc {
                let average = if w.binary.is_some() {
                    "binary"
                } else {
                    "macro"
                };
                o(v, with(a, &[(attr::AVERAGE, average)]))
            }
        })
    });
    gauge(meter, QUALITY_LOG_LOSS, s(), |s, o| {
        each_window(s, |w, a| {
            if let Some(v) = w.log_loss {
                o(v, a)
            }
        })
    });
    gauge(meter, QUALITY_MAE, s(), |s, o| {
        each_window(s, |w, a| {
            if let Some(r) = &w.regression {
                o(r.mae, a)
            }
        })
    });
    gauge(meter, QUALITY_RMSE, s(), |s, o| {
        each_window(s, |w, a| {
            if let Some(r) = &w.regression {
                o(r.rmse, a)
            }
        })
    });
    gauge(meter, QUALITY_MAPE, s(), |s, o| {
        each_window(s, |w, a| {
            if let Some(r) = &w.regression {
                o(r.mape, a)
            }
        })
    });
    gauge(meter, QUALITY_R2, s(), |s, o| {
        each_window(s, |w, a| {
            if let Some(v) = w.regression.and_then(|r| r.r2) {
                o(v, a)
            }
        })
    });
    gauge(meter, QUALITY_ESTIMATED_ACCURACY, s(), |s, o| {
        each_window(s, |w, a| {
            if let Some(e) = &w.estimated {
                o(e.accuracy, a)
            }
        })
    });
    gauge(meter, QUALITY_ESTIMATED_PRECISION, s(), |s, o| {
        estimated_prf_gauge(s, o, |p| p.precision)
    });
    gauge(meter, QUALITY_ESTIMATED_RECALL, s(), |s, o| {
        estimated_prf_gauge(s, o, |p| p.recall)
    });
    gauge(meter, QUALITY_ESTIMATED_F1, s(), |s, o| {
        estimated_prf_gauge(s, o, |p| p.f1)
    });
    gauge(meter, QUALITY_ESTIMATION_GAP, s(), |s, o| {
        each_window(s, |w, a| {
            if let Some(g) = w.estimated.as_ref().and_then(|e| e.gap) {
                o(g, a)
            }
        })
    });
}
