//! The sidecar's side of the Kafka backend.
//!
//! Predictions: the analysis thread hands batches to a bounded channel
//! (`try_send`: when full they are dropped and counted, the request path
//! never waits). One thread produces them with librdkafka (idempotent,
//! `acks=all`, `murmur2_random`). A record Kafka did not acknowledge within
//! `quality.kafka.delivery_timeout`, or one that arrives while older ones
//! wait, goes to the outbox: a redb table on disk, bounded by
//! `quality.kafka.outbox_max_records` (past it records are dropped and
//! counted). While Kafka is unhealthy one outbox record at a time is sent
//! as a probe; once one is acknowledged the outbox drains in order of age.
//!
//! Labels: `POST /v1/feedback` produces each valid item and answers once
//! Kafka acknowledged them all (a separate producer, made at the first call).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer};
use rdkafka::producer::{ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::records::{label_record, PredictionRecord};
use crate::config::KafkaConfig;
use crate::quality::feedback::{ItemError, Parsed};
use crate::quality::store::{begin_write, StoreError};
use crate::quality::{FeedbackReport, Prediction};
use crate::telemetry::names::attr;
use crate::telemetry::Instruments;

const OUTBOX: redb::TableDefinition<u64, (&[u8], &[u8])> = redb::TableDefinition::new("outbox");

/// Records sent and not yet acknowledged, at most (besides the probe).
const MAX_IN_FLIGHT: usize = 10_000;
/// Outbox records sent per round while draining.
const DRAIN_BATCH: usize = 1_000;

/// The librdkafka settings every modelwatch producer uses.
fn producer_config(k: &KafkaConfig) -> Result<rdkafka::ClientConfig, String> {
    let mut c = super::client_config(k)?;
    let defaults = [
        ("enable.idempotence", "true".to_string()),
        ("acks", "all".to_string()),
        ("partitioner", "murmur2_random".to_string()),
        (
            "message.timeout.ms",
            k.delivery_timeout.as_millis().to_string(),
        ),
        ("linger.ms", "20".to_string()),
        ("queue.buffering.max.kbytes", "16384".to_string()),
        ("compression.type", "lz4".to_string()),
    ];
    for (name, value) in defaults {
        // A property the user set wins (except what idempotence needs).
        if !k.properties.contains_key(name) {
            c.set(name, value);
        }
    }
    Ok(c)
}

fn threaded_producer(
    k: &KafkaConfig,
    events: &Arc<Mutex<Vec<Event>>>,
) -> Result<ThreadedProducer<Context>, String> {
    producer_config(k)
        .map_err(|e| format!("quality.kafka.properties: {e}"))?
        .create_with_context(Context {
            events: events.clone(),
        })
        .map_err(|e| format!("quality.kafka: cannot create the producer: {e}"))
}

/// Counts shared with the gauges.
#[derive(Debug, Default)]
pub struct OutboxStats {
    pub records: AtomicU64,
}

/// `modelwatch.kafka.outbox.records`, read from `stats`.
pub fn register_gauges(meter: &opentelemetry::metrics::Meter, stats: Arc<OutboxStats>) {
    crate::telemetry::u64_gauge(
        meter,
        crate::telemetry::names::KAFKA_OUTBOX_RECORDS,
        move |o| o.observe(stats.records.load(Ordering::Relaxed), &[]),
    );
}

/// What librdkafka reports back to the outbox thread.
enum Event {
    /// `seq`: 0 for a record sent directly, else the outbox record's seq + 1.
    Delivered(usize),
    Failed {
        seq: usize,
        key: Vec<u8>,
        payload: Vec<u8>,
        error: String,
        /// The producer cannot go on (see [`needs_new_producer`]).
        replace: bool,
    },
}

/// Errors after which a producer stays broken: librdkafka's fatal errors,
/// and a fenced idempotent producer (a broker that answers the epoch bump
/// after message timeouts with PRODUCER_FENCED instead of a new epoch).
fn needs_new_producer(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::ProducerFenced | C::InvalidProducerEpoch | C::Fatal | C::FencedInstanceId)
    )
}

struct Context {
    events: Arc<Mutex<Vec<Event>>>,
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka_log(level, fac, log_message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "kafka client");
    }
}

/// librdkafka's log lines, through `tracing` (connection errors at debug:
/// the outbox and its metrics say what matters).
pub(crate) fn kafka_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::debug!(facility = fac, "librdkafka: {msg}")
        }
        _ => tracing::trace!(facility = fac, "librdkafka: {msg}"),
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let event = match result {
            Ok(_) => Event::Delivered(seq),
            Err((e, m)) => Event::Failed {
                seq,
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
                error: e.to_string(),
                replace: needs_new_producer(e),
            },
        };
        self.events.lock().expect("poisoned").push(event);
    }
}

/// One keyed record for the predictions topic.
pub struct Record {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// The sidecar's Kafka side, held by the analyzer and the feedback API.
pub struct KafkaSink {
    /// The producer thread's queue (none in the joiner: labels only).
    tx: Option<SyncSender<Option<Vec<Record>>>>,
    config: KafkaConfig,
    /// Made at the first feedback call; made anew after a fatal error.
    labels: Mutex<Option<FutureProducer>>,
    instruments: Instruments,
    pub stats: Arc<OutboxStats>,
    sample_rate: Option<Arc<crate::sample::Sampler>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl KafkaSink {
    /// Opens the outbox (a bad path fails here) and starts the producer thread.
    pub fn start(
        k: &KafkaConfig,
        queue_capacity: usize,
        instruments: Instruments,
        sample_rate: Arc<crate::sample::Sampler>,
    ) -> anyhow::Result<Arc<KafkaSink>> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let producer = threaded_producer(k, &events).map_err(|e| anyhow::anyhow!(e))?;
        let outbox = Outbox::open(&k.outbox_path)?;
        let stats = Arc::new(OutboxStats::default());
        stats.records.store(outbox.len, Ordering::Relaxed);
        if outbox.len > 0 {
            tracing::info!(
                records = outbox.len,
                "kafka outbox holds records from before: they drain when Kafka takes them"
            );
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(queue_capacity);
        let mut worker = Worker {
            producer,
            config: k.clone(),
            events,
            outbox,
            topic: k.predictions_topic.clone(),
            max_records: k.outbox_max_records as u64,
            in_flight: HashSet::new(),
            direct_in_flight: 0,
            healthy: true,
            retry_at: Instant::now(),
            instruments: instruments.clone(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("modelwatch-kafka".into())
            .spawn(move || worker.run(rx))?;
        Ok(Arc::new(KafkaSink {
            tx: Some(tx),
            config: k.clone(),
            labels: Mutex::new(None),
            instruments,
            stats,
            sample_rate: Some(sample_rate),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// For the joiner's feedback API: labels only, no prediction producer.
    pub fn labels_only(k: &KafkaConfig, instruments: Instruments) -> Arc<KafkaSink> {
        Arc::new(KafkaSink {
            tx: None,
            config: k.clone(),
            labels: Mutex::new(None),
            instruments,
            stats: Arc::default(),
            sample_rate: None,
            thread: Mutex::new(None),
        })
    }

    /// Hands predictions to the producer thread without waiting; a full
    /// queue drops them (counted).
    pub fn offer(&self, batch: Vec<Prediction>) {
        let (Some(tx), Some(sampler)) = (&self.tx, &self.sample_rate) else {
            return;
        };
        let rate = sampler.rate();
        let n = batch.len();
        let records: Vec<Record> = batch
            .iter()
            .filter_map(|p| {
                let (id, row) = crate::quality::store::split_join_key(&p.key)?;
                let r = PredictionRecord::new(id, row, p, rate);
                Some(Record {
                    key: id.as_bytes().to_vec(),
                    payload: serde_json::to_vec(&r).ok()?,
                })
            })
            .collect();
        if let Err(e) = tx.try_send(Some(records)) {
            let reason = match e {
                TrySendError::Full(_) => "queue_full",
                TrySendError::Disconnected(_) => "shutdown",
            };
            self.instruments
                .quality_predictions_dropped
                .add(n as u64, &[KeyValue::new(attr::REASON, reason)]);
        }
    }

    /// Produces the valid labels of a feedback call and waits until Kafka
    /// acknowledged each (or `delivery_timeout` passed).
    pub async fn send_labels(&self, parsed: Parsed) -> Result<FeedbackReport, String> {
        let producer = {
            let mut slot = self.labels.lock().expect("poisoned");
            match &*slot {
                Some(p) => p.clone(),
                None => {
                    let p: FutureProducer = producer_config(&self.config)?
                        .create()
                        .map_err(|e| format!("cannot create the Kafka producer: {e}"))?;
                    *slot = Some(p.clone());
                    p
                }
            }
        };
        let mut report = FeedbackReport {
            received: parsed.received(),
            ..FeedbackReport::default()
        };
        let topic = self.config.labels_topic.as_str();
        let producer = &producer;
        let sends = parsed.items.iter().map(|item| {
            let payload = label_record(item).to_string();
            async move {
                let record = FutureRecord::to(topic).key(&item.id).payload(&payload);
                producer
                    .send(record, self.config.delivery_timeout)
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        });
        let results = futures_util::future::join_all(sends).await;
        let mut failed = None;
        let mut replace = producer.client().fatal_error().is_some();
        for r in results {
            match r {
                Ok(()) => report.accepted += 1,
                Err(e) => {
                    replace |= needs_new_producer(&e);
                    failed = Some(e.to_string());
                }
            }
        }
        let mut errors: Vec<ItemError> = parsed.errors;
        errors.sort_by_key(|e| e.index);
        for e in errors {
            report.fail(e);
        }
        let count = |result: &'static str, n: usize| {
            if n > 0 {
                self.instruments
                    .quality_feedback
                    .add(n as u64, &[KeyValue::new(attr::RESULT, result)]);
            }
        };
        count("accepted", report.accepted);
        count("invalid", report.invalid);
        if replace {
            tracing::warn!(
                error = failed.as_deref().unwrap_or(""),
                "the Kafka label producer cannot go on: a new one is made"
            );
            *self.labels.lock().expect("poisoned") = None;
        }
        if let Some(e) = failed {
            // Some labels may be in Kafka: sending them all again is safe
            // (a label joins once; repeats are duplicates).
            return Err(format!(
                "Kafka did not acknowledge {} of {} labels ({e}); send them again",
                parsed.items.len() - report.accepted,
                parsed.items.len()
            ));
        }
        Ok(report)
    }

    /// Stops the producer thread: what is in flight gets
    /// `delivery_timeout` at most to be acknowledged, the rest stays in the outbox.
    pub fn stop(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(None);
        }
        if let Some(t) = self.thread.lock().expect("poisoned").take() {
            if t.join().is_err() {
                tracing::warn!("kafka producer thread failed");
            }
        }
    }
}

/// The on-disk (or in-memory) outbox.
struct Outbox {
    db: Database,
    next: u64,
    len: u64,
}

impl Outbox {
    fn open(path: &str) -> anyhow::Result<Outbox> {
        let db = if path.is_empty() {
            Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())
        } else {
            if let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)?;
            }
            Database::create(path)
        }
        .map_err(|e| anyhow::anyhow!("quality.kafka.outbox_path {path:?}: {e}"))?;
        let txn = db.begin_write()?;
        txn.open_table(OUTBOX)?;
        txn.commit()?;
        let read = db.begin_read()?;
        let table = read.open_table(OUTBOX)?;
        let len = table.len()?;
        let next = table.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
        drop(table);
        Ok(Outbox { db, next, len })
    }

    fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let txn = begin_write(&self.db, false)?;
        {
            let mut t = txn.open_table(OUTBOX)?;
            for r in records {
                t.insert(self.next, (r.key.as_slice(), r.payload.as_slice()))?;
                self.next += 1;
            }
        }
        txn.commit()?;
        self.len += records.len() as u64;
        Ok(())
    }

    fn remove(&mut self, seqs: &[u64], sync: bool) -> Result<(), StoreError> {
        let txn = begin_write(&self.db, sync)?;
        {
            let mut t = txn.open_table(OUTBOX)?;
            for s in seqs {
                if t.remove(*s)?.is_some() {
                    self.len -= 1;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Up to `n` oldest records not in `skip`.
    fn oldest(&self, n: usize, skip: &HashSet<u64>) -> Result<Vec<(u64, Record)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            if skip.contains(&k.value()) {
                continue;
            }
            let (key, payload) = v.value();
            out.push((
                k.value(),
                Record {
                    key: key.to_vec(),
                    payload: payload.to_vec(),
                },
            ));
            if out.len() >= n {
                break;
            }
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        begin_write(&self.db, true)?.commit()?;
        Ok(())
    }
}

struct Worker {
    producer: ThreadedProducer<Context>,
    config: KafkaConfig,
    events: Arc<Mutex<Vec<Event>>>,
    outbox: Outbox,
    topic: String,
    max_records: u64,
    /// Outbox records sent and not yet acknowledged or failed.
    in_flight: HashSet<u64>,
    direct_in_flight: usize,
    /// The last report from Kafka was a delivery, not a failure.
    healthy: bool,
    retry_at: Instant,
    instruments: Instruments,
    stats: Arc<OutboxStats>,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Option<Vec<Record>>>) {
        crate::analysis::lower_priority();
        let mut last_sync = Instant::now();
        loop {
            let mut stop = false;
            let mut incoming = Vec::new();
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(r)) => incoming.extend(r),
                Ok(None) | Err(RecvTimeoutError::Disconnected) => stop = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            while !stop && incoming.len() < DRAIN_BATCH {
                match rx.try_recv() {
                    Ok(Some(r)) => incoming.extend(r),
                    Ok(None) => stop = true,
                    Err(_) => break,
                }
            }
            let sync = last_sync.elapsed() >= Duration::from_secs(1);
            if let Err(e) = self.step(incoming, sync) {
                tracing::error!(error = %e, "kafka outbox");
            }
            if sync {
                last_sync = Instant::now();
            }
            if stop {
                break;
            }
        }
        // Shutdown: give what is in flight its time, keep the rest on disk.
        let _ = self.producer.flush(Duration::from_secs(5));
        if let Err(e) = self
            .step(Vec::new(), true)
            .and_then(|_| self.outbox.flush())
        {
            tracing::error!(error = %e, "kafka outbox flush at shutdown");
        }
    }

    fn step(&mut self, incoming: Vec<Record>, sync: bool) -> Result<(), StoreError> {
        let events = std::mem::take(&mut *self.events.lock().expect("poisoned"));
        let mut delivered = Vec::new();
        let mut failed = Vec::new();
        let mut replace = false;
        for e in events {
            match e {
                Event::Delivered(seq) => {
                    self.healthy = true;
                    self.count("delivered", 1);
                    if seq == 0 {
                        self.direct_in_flight = self.direct_in_flight.saturating_sub(1);
                    } else {
                        let s = seq as u64 - 1;
                        self.in_flight.remove(&s);
                        delivered.push(s);
                    }
                }
                Event::Failed {
                    seq,
                    key,
                    payload,
                    error,
                    replace: broken,
                } => {
                    replace |= broken;
                    if self.healthy {
                        tracing::warn!(%error, "Kafka does not take prediction records: they wait in the outbox (quality.kafka.outbox_path)");
                    }
                    self.healthy = false;
                    self.retry_at = Instant::now() + Duration::from_secs(1);
                    self.count("failed", 1);
                    if seq == 0 {
                        self.direct_in_flight = self.direct_in_flight.saturating_sub(1);
                        failed.push(Record { key, payload });
                    } else {
                        self.in_flight.remove(&(seq as u64 - 1));
                    }
                }
            }
        }
        if !delivered.is_empty() || sync {
            self.outbox.remove(&delivered, sync)?;
        }
        self.keep(failed)?;
        if replace || self.producer.client().fatal_error().is_some() {
            self.replace_producer()?;
        }
        // New records go straight to Kafka only while nothing older waits.
        if self.healthy && self.outbox.len == 0 {
            let mut rest = Vec::new();
            for r in incoming {
                if !rest.is_empty() || self.direct_in_flight >= MAX_IN_FLIGHT {
                    rest.push(r);
                    continue;
                }
                let record = BaseRecord::with_opaque_to(&self.topic, 0)
                    .key(&r.key)
                    .payload(&r.payload);
                match self.producer.send(record) {
                    Ok(()) => self.direct_in_flight += 1,
                    Err(_) => rest.push(r),
                }
            }
            self.keep(rest)?;
        } else {
            self.keep(incoming)?;
        }
        self.drain()?;
        self.stats.records.store(self.outbox.len, Ordering::Relaxed);
        Ok(())
    }

    /// librdkafka's rule: a producer with a fatal error (or fenced, see
    /// [`needs_new_producer`]) is replaced by a new one. What the
    /// old one still held is reported as failed (into the outbox); outbox
    /// records it had in flight are sent again (a joiner keeps one of each).
    fn replace_producer(&mut self) -> Result<(), StoreError> {
        let why = self
            .producer
            .client()
            .fatal_error()
            .map(|(_, reason)| reason)
            .unwrap_or_else(|| "fenced".into());
        tracing::warn!(%why, "the Kafka producer cannot go on: a new one is made");
        match threaded_producer(&self.config, &self.events) {
            Ok(p) => {
                let old = std::mem::replace(&mut self.producer, p);
                old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                drop(old);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot make a new Kafka producer");
                return Ok(());
            }
        }
        let events = std::mem::take(&mut *self.events.lock().expect("poisoned"));
        let mut failed = Vec::new();
        for e in events {
            if let Event::Failed {
                seq: 0,
                key,
                payload,
                ..
            } = e
            {
                failed.push(Record { key, payload });
            }
        }
        self.in_flight.clear();
        self.direct_in_flight = 0;
        self.healthy = false;
        self.retry_at = Instant::now();
        self.keep(failed)
    }

    /// Appends records to the outbox, up to its bound.
    fn keep(&mut self, mut records: Vec<Record>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let room = self.max_records.saturating_sub(self.outbox.len) as usize;
        if records.len() > room {
            let dropped = records.len() - room;
            records.truncate(room);
            self.instruments.kafka_outbox_dropped.add(
                dropped as u64,
                &[KeyValue::new(attr::REASON, "outbox_full")],
            );
        }
        self.outbox.append(&records)
    }

    /// Sends outbox records: all (up to the in-flight bound) while Kafka is
    /// healthy, one probe at a time while it is not.
    fn drain(&mut self) -> Result<(), StoreError> {
        if self.outbox.len == 0 {
            return Ok(());
        }
        let n = if self.healthy {
            MAX_IN_FLIGHT
                .saturating_sub(self.in_flight.len())
                .min(DRAIN_BATCH)
        } else if self.in_flight.is_empty() && Instant::now() >= self.retry_at {
            1
        } else {
            0
        };
        if n == 0 {
            return Ok(());
        }
        for (seq, r) in self.outbox.oldest(n, &self.in_flight)? {
            let record = BaseRecord::with_opaque_to(&self.topic, seq as usize + 1)
                .key(&r.key)
                .payload(&r.payload);
            if self.producer.send(record).is_err() {
                break;
            }
            self.in_flight.insert(seq);
        }
        Ok(())
    }

    fn count(&self, result: &'static str, n: u64) {
        self.instruments.kafka_produced.add(
            n,
            &[
                KeyValue::new(attr::TOPIC, self.topic.clone()),
                KeyValue::new(attr::RESULT, result),
            ],
        );
    }
}
