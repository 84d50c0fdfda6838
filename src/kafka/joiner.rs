//! `modelwatch joiner`: consumes the predictions and labels topics as one
//! consumer group and joins them, one quality engine (and redb file) per
//! assigned partition.
//!
//! - A batch of one partition's records is applied in one store transaction
//!   together with the offsets it takes the partition to; at assignment the
//!   consumer is positioned at those stored offsets (a partition without a
//!   file is read from the start of the topics' retention). A crash, SIGKILL
//!   or rebalance therefore neither loses a record nor applies one twice; a
//!   record delivered twice anyway (a producer retry) is recognised by its
//!   join key (predictions) or as a duplicate label.
//! - Every `quality.refresh_interval` each joiner publishes what its
//!   partitions hold ([`PartitionState`]) to the compacted state topic,
//!   keyed by partition, and reads every joiner's: its quality gauges and
//!   `/v1/quality` are computed from the union of all partitions, so any one
//!   joiner answers for the whole fleet. Counters (labels joined, confusion
//!   cells, …) count what this joiner joined and add up across joiners.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use opentelemetry::KeyValue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::records::{decode_label, PredictionRecord};
use crate::config::{Config, QualityBackend};
use crate::quality::engine::PartitionState;
use crate::quality::feedback::LabelItem;
use crate::quality::{Engine, Prediction, QualityStats, Snapshot};
use crate::telemetry::names::attr;
use crate::telemetry::Instruments;

/// Flags of `modelwatch joiner`.
#[derive(Debug, clap::Args, Clone)]
pub struct JoinerArgs {
    /// Where `/metrics`, `/healthz`, `/readyz`, `/v1/quality` and `POST /v1/feedback` are served.
    #[arg(long, default_value = "0.0.0.0:9464")]
    pub admin_listen: String,
    /// One redb file per assigned partition is kept here (a persistent volume).
    #[arg(long)]
    pub store_dir: PathBuf,
    /// YAML config file (or MODELWATCH_CONFIG): the `quality` section, `log`, `telemetry`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// A partition state as published on the state topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateMessage {
    v: u32,
    partition: i32,
    /// When it was published (milliseconds since the epoch).
    time_ms: u64,
    /// The joiner that owned the partition.
    owner: String,
    state: PartitionState,
}

/// Bound of one published state (Kafka's default message size is 1 MB).
const STATE_MAX_BYTES: usize = 900_000;
/// Records taken into one round of transactions, at most.
const MAX_BATCH: usize = 5_000;

/// Partitions this joiner owns, and partitions its figures include.
#[derive(Debug, Default)]
pub struct PartitionCounts {
    pub owned: AtomicU64,
    pub fleet: AtomicU64,
}

/// `modelwatch.joiner.partitions{state=owned|fleet}`.
pub fn register_gauges(meter: &opentelemetry::metrics::Meter, counts: Arc<PartitionCounts>) {
    crate::telemetry::u64_gauge(
        meter,
        crate::telemetry::names::JOINER_PARTITIONS,
        move |o| {
            o.observe(
                counts.owned.load(Ordering::Relaxed),
                &[KeyValue::new("state", "owned")],
            );
            o.observe(
                counts.fleet.load(Ordering::Relaxed),
                &[KeyValue::new("state", "fleet")],
            );
        },
    );
}

/// What the admin server reads.
struct Shared {
    snapshot: Arc<RwLock<Snapshot>>,
    stats: Arc<QualityStats>,
    /// Topics found with matching partition counts, and every partition's
    /// figures present in the fleet view.
    ready: AtomicBool,
    counts: Arc<PartitionCounts>,
    partitions: AtomicU64,
    /// Set when the joiner cannot go on (a wrong partition count).
    fatal: Mutex<Option<String>>,
}

pub fn run(args: JoinerArgs) -> anyhow::Result<()> {
    let path = args
        .config
        .clone()
        .or_else(|| crate::config::env::config_path().map(PathBuf::from));
    let mut config = match &path {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    crate::config::env::apply_process_env(&mut config)?;
    config.quality.backend = QualityBackend::Kafka;
    config.admin.listen = args.admin_listen.clone();
    if config.proxy.listen == config.admin.listen {
        // The joiner serves no proxy: keep validation from refusing the pair.
        config.proxy.listen = "127.0.0.1:0".into();
    }
    config.validate()?;
    crate::cli::init_logging(&config);
    std::fs::create_dir_all(&args.store_dir)
        .map_err(|e| anyhow::anyhow!("--store-dir {}: {e}", args.store_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(config, args.store_dir))
}

async fn serve(config: Config, store_dir: PathBuf) -> anyhow::Result<()> {
    let telemetry = Arc::new(crate::telemetry::Telemetry::new(
        &config,
        &tokio::runtime::Handle::current(),
    )?);
    let shared = Arc::new(Shared {
        snapshot: Arc::new(RwLock::new(Snapshot::default())),
        stats: Arc::new(QualityStats::default()),
        ready: AtomicBool::new(false),
        counts: Arc::default(),
        partitions: AtomicU64::new(0),
        fatal: Mutex::new(None),
    });
    crate::quality::register_gauges(
        &telemetry.meter,
        shared.snapshot.clone(),
        shared.stats.clone(),
    );
    register_gauges(&telemetry.meter, shared.counts.clone());
    let sink = super::producer::KafkaSink::labels_only(
        &config.quality.kafka,
        telemetry.instruments.clone(),
    );
    let handle = crate::quality::QualityHandle::for_joiner(
        sink,
        shared.snapshot.clone(),
        shared.stats.clone(),
        &config.quality,
    );
    let listener = tokio::net::TcpListener::bind(&config.admin.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--admin-listen {}: {e}", config.admin.listen))?;
    let admin_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let stop = Arc::new(AtomicBool::new(false));

    let consumer = {
        let (config, shared, stop, instruments) = (
            config.clone(),
            shared.clone(),
            stop.clone(),
            telemetry.instruments.clone(),
        );
        let rt = tokio::runtime::Handle::current();
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("modelwatch-joiner".into())
            .spawn(move || {
                let result = consume(&config, store_dir, &shared, &stop, instruments, &rt);
                if let Err(e) = &result {
                    *shared.fatal.lock().expect("poisoned") = Some(e.clone());
                }
                shutdown.cancel();
                result
            })?
    };

    let server = {
        let (shared, telemetry, handle) = (shared.clone(), telemetry.clone(), handle.clone());
        tokio::spawn(crate::serve::serve(
            "joiner admin",
            listener,
            None,
            shutdown.clone(),
            Duration::from_secs(2),
            move |req: Request<Incoming>| {
                let (shared, telemetry, handle) =
                    (shared.clone(), telemetry.clone(), handle.clone());
                async move { route(req, &shared, &telemetry, &handle).await }
            },
        ))
    };
    tracing::info!(%admin_addr, bootstrap = %config.quality.kafka.bootstrap, "modelwatch joiner started");
    tokio::select! {
        _ = crate::app::shutdown_signal() => {}
        _ = shutdown.cancelled() => {}
    }
    stop.store(true, Ordering::Relaxed);
    let result = tokio::task::spawn_blocking(move || consumer.join())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    shutdown.cancel();
    let _ = server.await;
    telemetry.shutdown();
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!(e)),
        Err(_) => Err(anyhow::anyhow!("the joiner thread failed")),
    }
}

async fn route(
    req: Request<Incoming>,
    shared: &Shared,
    telemetry: &crate::telemetry::Telemetry,
    handle: &crate::quality::QualityHandle,
) -> crate::admin::AdminResponse {
    use crate::admin::{error_response, json_response, respond};
    match (req.method(), req.uri().path()) {
        (_, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            telemetry.render_prometheus(),
        ),
        (_, "/healthz") => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        (_, "/readyz") => {
            if shared.ready.load(Ordering::Relaxed) {
                respond(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "not ready: waiting for the topics or for every partition's figures\n",
                )
            }
        }
        (_, "/v1/quality") => {
            let mut v = handle.status();
            if let Some(o) = v.as_object_mut() {
                // The sidecar's note and outbox: not the joiner's.
                o.remove("note");
                o.remove("outbox_records");
            }
            v["backend"] = "kafka".into();
            v["joiner"] = serde_json::json!({
                "partitions": shared.partitions.load(Ordering::Relaxed),
                "owned": shared.counts.owned.load(Ordering::Relaxed),
                "fleet": shared.counts.fleet.load(Ordering::Relaxed),
                "ready": shared.ready.load(Ordering::Relaxed),
            });
            json_response(StatusCode::OK, v)
        }
        (&Method::POST, "/v1/feedback") => {
            if let Some(token) = &handle.token {
                let ok = crate::admin::bearer(&req)
                    .is_some_and(|t| crate::admin::same_secret(t.as_bytes(), token.as_bytes()));
                if !ok {
                    return error_response(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "this endpoint needs `Authorization: Bearer <token>` (quality.feedback_token)",
                    );
                }
            }
            crate::admin::feedback(handle, req).await
        }
        (_, "/v1/feedback") => error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "send labels with POST /v1/feedback",
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "joiner endpoints: /metrics /healthz /readyz /v1/quality, POST /v1/feedback",
        ),
    }
}

/// The engines of the assigned partitions; the rebalance callback and the
/// consuming loop share them.
struct Partitions {
    dir: PathBuf,
    config: Config,
    instruments: Instruments,
    engines: BTreeMap<i32, Engine>,
    /// Bumped at every rebalance: a batch read before one is dropped (it is
    /// read again from the stored offsets).
    generation: u64,
}

impl Partitions {
    fn open(&mut self, p: i32) -> Result<&mut Engine, String> {
        if !self.engines.contains_key(&p) {
            let mut q = self.config.quality.clone();
            q.store_path = self
                .dir
                .join(format!("partition-{p}.redb"))
                .display()
                .to_string();
            let engine = Engine::open(
                q,
                self.config.protocol.clone(),
                self.instruments.clone(),
                Arc::default(),
            )
            .map_err(|e| e.to_string())?;
            self.engines.insert(p, engine);
        }
        Ok(self.engines.get_mut(&p).expect("just inserted"))
    }

    fn close_all(&mut self) {
        for (p, mut e) in std::mem::take(&mut self.engines) {
            if let Err(err) = e.close() {
                tracing::error!(partition = p, error = %err, "cannot flush the partition's store");
            }
        }
    }
}

struct JoinContext {
    parts: Arc<Mutex<Partitions>>,
    topics: [String; 2],
}

impl ClientContext for JoinContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::producer::kafka_log(level, fac, log_message);
    }
}

impl ConsumerContext for JoinContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut parts = self.parts.lock().expect("poisoned");
        parts.generation += 1;
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assign = TopicPartitionList::new();
                let mut owned = Vec::new();
                for el in tpl.elements() {
                    let (topic, p) = (el.topic().to_string(), el.partition());
                    let offset = match parts.open(p) {
                        Ok(engine) => engine
                            .offset(&topic)
                            .map(Offset::Offset)
                            .unwrap_or(Offset::Beginning),
                        Err(e) => {
                            tracing::error!(partition = p, error = %e, "cannot open the partition's store: it is not consumed");
                            continue;
                        }
                    };
                    if topic == self.topics[0] {
                        owned.push(p);
                    }
                    let _ = assign.add_partition_offset(&topic, p, offset);
                }
                tracing::info!(partitions = ?owned, "partitions assigned");
                if let Err(e) = consumer.assign(&assign) {
                    tracing::error!(error = %e, "cannot take the assigned partitions");
                }
                // A partition paused before the rebalance (labels waiting
                // for predictions) starts afresh from its stored offset.
                let _ = consumer.resume(&assign);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                parts.close_all();
                tracing::info!("partitions revoked");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "cannot give the partitions back");
                }
            }
            other => tracing::warn!(error = ?other, "rebalance error"),
        }
    }
}

/// Keeps a partition's labels from running ahead of its predictions. A
/// label newer (Kafka timestamp) than every prediction read so far, while
/// the predictions partition has unread records, is not applied: the labels
/// partition is paused, and labels librdkafka had fetched already are set
/// aside unread. Once the predictions caught up with that label's time (or
/// have nothing more), the labels partition is positioned at its stored
/// offset and resumed. So a joiner catching up (a rebuilt partition, a
/// restart after a while) meets labels after their predictions, as they
/// happened, instead of holding (or losing, past `quality.max_early_labels`)
/// a backlog of early labels.
#[derive(Debug, Default)]
struct Flow {
    prediction_ts: i64,
    /// The time of the first label set aside.
    waiting_ts: i64,
    /// The predictions partition had unread records when last asked.
    behind: bool,
    asked: Option<Instant>,
    paused: bool,
}

impl Flow {
    /// Whether the predictions partition has records past `read` (asked of
    /// the broker at most once a second; an error counts as "no").
    fn behind(
        &mut self,
        consumer: &BaseConsumer<JoinContext>,
        topic: &str,
        p: i32,
        read: i64,
    ) -> bool {
        if self
            .asked
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.behind = match consumer.fetch_watermarks(topic, p, Duration::from_secs(1)) {
                Ok((_, high)) => read < high,
                Err(_) => false,
            };
            self.asked = Some(Instant::now());
        }
        self.behind
    }
}

/// One partition's records of one round, in the order read.
#[derive(Default)]
struct Batch {
    predictions: Vec<Prediction>,
    labels: Vec<LabelItem>,
    /// The next offset of each topic once this batch is applied.
    next: [Option<i64>; 2],
}

fn consume(
    config: &Config,
    dir: PathBuf,
    shared: &Shared,
    stop: &AtomicBool,
    instruments: Instruments,
    rt: &tokio::runtime::Handle,
) -> Result<(), String> {
    crate::analysis::lower_priority();
    let k = &config.quality.kafka;
    let topics = [k.predictions_topic.clone(), k.labels_topic.clone()];
    let parts = Arc::new(Mutex::new(Partitions {
        dir,
        config: config.clone(),
        instruments: instruments.clone(),
        engines: BTreeMap::new(),
        generation: 0,
    }));
    let mut cc = super::client_config(k)?;
    cc.set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // librdkafka prefetches up to 64 MB by default; a joiner needs less.
        .set("queued.max.messages.kbytes", "16384");
    let consumer: BaseConsumer<JoinContext> = cc
        .create_with_context(JoinContext {
            parts: parts.clone(),
            topics: topics.clone(),
        })
        .map_err(|e| format!("cannot create the Kafka consumer: {e}"))?;

    let partitions = wait_for_topics(config, consumer.client(), stop, rt)?;
    let Some(partitions) = partitions else {
        return Ok(());
    };
    shared
        .partitions
        .store(partitions as u64, Ordering::Relaxed);
    let state_partitions = super::partition_counts(
        consumer.client(),
        &[&k.state_topic],
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?[0]
        .ok_or_else(|| format!("the state topic {} is missing", k.state_topic))?;
    consumer
        .subscribe(&[&topics[0], &topics[1]])
        .map_err(|e| format!("cannot subscribe: {e}"))?;

    // The state topic: every joiner's partitions, read from the start.
    let state_consumer: BaseConsumer = super::client_config(k)?
        .set("enable.auto.commit", "false")
        .set("group.id", format!("{}-state-reader", k.group_id))
        .set("queued.max.messages.kbytes", "8192")
        .create()
        .map_err(|e| format!("cannot create the state reader: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..state_partitions as i32 {
        let _ = tpl.add_partition_offset(&k.state_topic, p, Offset::Beginning);
    }
    state_consumer
        .assign(&tpl)
        .map_err(|e| format!("cannot read the state topic: {e}"))?;
    let state_producer: BaseProducer = super::client_config(k)?
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.max.bytes", "2000000")
        .create()
        .map_err(|e| format!("cannot create the state producer: {e}"))?;
    let owner = std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("POD_NAME"))
        .unwrap_or_else(|_| format!("joiner-{}", std::process::id()));

    let mut fleet = Engine::open(
        crate::config::QualityConfig {
            store_path: String::new(),
            ..config.quality.clone()
        },
        config.protocol.clone(),
        instruments.clone(),
        shared.stats.clone(),
    )
    .map_err(|e| e.to_string())?;
    fleet.snapshot = shared.snapshot.clone();
    let mut states: HashMap<i32, StateMessage> = HashMap::new();
    let q = &config.quality;
    let mut next_refresh = Instant::now();
    let mut last_sync = Instant::now();
    let mut last_commit = Instant::now();
    let mut warned_malformed = false;
    let mut flows: HashMap<i32, Flow> = HashMap::new();
    let mut flows_generation = 0;

    while !stop.load(Ordering::Relaxed) {
        // Read a round of records (the rebalance callback runs in poll).
        let generation = parts.lock().expect("poisoned").generation;
        if generation != flows_generation {
            // An assignment resumes every partition.
            flows.clear();
            flows_generation = generation;
        }
        let mut batches: BTreeMap<i32, Batch> = BTreeMap::new();
        let round = Instant::now() + Duration::from_millis(50);
        let mut n = 0;
        while n < MAX_BATCH {
            let wait = round.saturating_duration_since(Instant::now());
            let Some(msg) = consumer.poll(wait) else {
                break;
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "kafka consumer");
                    continue;
                }
            };
            n += 1;
            let t = if msg.topic() == topics[0] { 0 } else { 1 };
            let partition = msg.partition();
            let ts = msg.timestamp().to_millis().unwrap_or(0);
            let flow = flows.entry(partition).or_default();
            if t == 0 {
                flow.prediction_ts = flow.prediction_ts.max(ts);
            } else if flow.paused {
                // Read again after the resume (see Flow).
                continue;
            } else if ts > flow.prediction_ts {
                let read = batches
                    .get(&partition)
                    .and_then(|b| b.next[0])
                    .or_else(|| {
                        let p = parts.lock().expect("poisoned");
                        p.engines.get(&partition).and_then(|e| e.offset(&topics[0]))
                    })
                    .unwrap_or(0);
                if flow.behind(&consumer, &topics[0], partition, read) {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&topics[1], partition);
                    if consumer.pause(&tpl).is_ok() {
                        tracing::debug!(partition, "labels paused until the predictions catch up");
                        flow.paused = true;
                        flow.waiting_ts = ts;
                        continue;
                    }
                }
            }
            instruments
                .kafka_consumed
                .add(1, &[KeyValue::new(attr::TOPIC, topics[t].clone())]);
            let batch = batches.entry(partition).or_default();
            batch.next[t] = Some(msg.offset() + 1);
            let payload = msg.payload().unwrap_or_default();
            let parsed = if t == 0 {
                PredictionRecord::decode(payload)
                    .map(|r| batch.predictions.push(r.into_prediction()))
            } else {
                decode_label(payload, batch.labels.len()).map(|item| batch.labels.push(item))
            };
            if let Err(reason) = parsed {
                instruments.kafka_malformed.add(
                    1,
                    &[
                        KeyValue::new(attr::TOPIC, topics[t].clone()),
                        KeyValue::new(attr::REASON, reason.as_str()),
                    ],
                );
                if !warned_malformed {
                    warned_malformed = true;
                    tracing::warn!(topic = %topics[t], partition = msg.partition(), offset = msg.offset(), reason = reason.as_str(), "a malformed record is skipped (counted in modelwatch_kafka_records_malformed_total; this is said once)");
                }
            }
        }

        // Apply: one transaction per partition, with its offsets.
        let sync = last_sync.elapsed() >= q.sync_interval;
        {
            let mut p = parts.lock().expect("poisoned");
            if p.generation == generation {
                for (partition, b) in batches {
                    let Some(engine) = p.engines.get_mut(&partition) else {
                        continue;
                    };
                    let offsets: Vec<(&str, i64)> = (0..2)
                        .filter_map(|t| b.next[t].map(|o| (topics[t].as_str(), o)))
                        .collect();
                    if let Err(e) = engine.ingest(b.predictions, b.labels, &offsets, false) {
                        return Err(format!("partition {partition}: {e}"));
                    }
                }
            }
            if sync {
                for (partition, e) in p.engines.iter_mut() {
                    if let Err(err) = e.close() {
                        return Err(format!("partition {partition}: {err}"));
                    }
                }
                last_sync = Instant::now();
            }
            if p.generation == generation {
                pace_labels(&consumer, &topics, &p, &mut flows);
            }
            // Offsets in Kafka too, for lag monitoring (the stores hold the truth).
            if last_commit.elapsed() >= Duration::from_secs(5) && !p.engines.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for (partition, e) in &p.engines {
                    for t in &topics {
                        if let Some(o) = e.offset(t) {
                            let _ = tpl.add_partition_offset(t, *partition, Offset::Offset(o));
                        }
                    }
                }
                if tpl.count() > 0 {
                    let _ = consumer.commit(&tpl, CommitMode::Async);
                }
                last_commit = Instant::now();
            }
        }

        // Every joiner's partition states.
        while let Some(Ok(m)) = state_consumer.poll(Duration::ZERO) {
            let Some(bytes) = m.payload() else { continue };
            match postcard::from_bytes::<StateMessage>(bytes) {
                Ok(s) if s.v == 1 => {
                    states.insert(s.partition, s);
                }
                _ => instruments.kafka_malformed.add(
                    1,
                    &[
                        KeyValue::new(attr::TOPIC, k.state_topic.clone()),
                        KeyValue::new(attr::REASON, "bad_state"),
                    ],
                ),
            }
        }

        if Instant::now() >= next_refresh {
            next_refresh = Instant::now() + q.refresh_interval;
            let mut p = parts.lock().expect("poisoned");
            let mut own = HashMap::new();
            for (partition, e) in p.engines.iter_mut() {
                if let Err(err) = e.maintain(false) {
                    tracing::error!(partition = *partition, error = %err, "quality store maintenance failed");
                }
                let msg = StateMessage {
                    v: 1,
                    partition: *partition,
                    time_ms: crate::quality::engine::now_ms(),
                    owner: owner.clone(),
                    state: export_bounded(e),
                };
                match postcard::to_stdvec(&msg) {
                    Ok(bytes) => {
                        let key = partition.to_string();
                        let record = BaseRecord::to(&k.state_topic).key(&key).payload(&bytes);
                        if let Err((e, _)) = state_producer.send(record) {
                            tracing::debug!(error = %e, "cannot publish a partition's state");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode a partition's state"),
                }
                own.insert(*partition, msg);
            }
            state_producer.poll(Duration::ZERO);
            shared
                .counts
                .owned
                .store(own.len() as u64, Ordering::Relaxed);
            drop(p);
            // Own partitions from memory (fresher), the others' from the topic.
            for (partition, msg) in own {
                states.insert(partition, msg);
            }
            states.retain(|p, _| (*p as usize) < partitions);
            fleet.absorb(states.values().map(|s| &s.state));
            fleet.refresh();
            shared
                .counts
                .fleet
                .store(states.len() as u64, Ordering::Relaxed);
            shared
                .ready
                .store(states.len() == partitions, Ordering::Relaxed);
        }
    }
    tracing::info!("joiner stopping: flushing the partition stores");
    parts.lock().expect("poisoned").close_all();
    let _ = state_producer.flush(Duration::from_secs(2));
    Ok(())
}

/// Resumes the labels of the partitions whose predictions caught up (see [`Flow`]).
fn pace_labels(
    consumer: &BaseConsumer<JoinContext>,
    topics: &[String; 2],
    parts: &Partitions,
    flows: &mut HashMap<i32, Flow>,
) {
    for (&p, f) in flows.iter_mut().filter(|(_, f)| f.paused) {
        let Some(engine) = parts.engines.get(&p) else {
            continue;
        };
        let read = engine.offset(&topics[0]).unwrap_or(0);
        if f.prediction_ts < f.waiting_ts && f.behind(consumer, &topics[0], p, read) {
            continue;
        }
        // Back to the first label not applied, then on.
        let next = engine
            .offset(&topics[1])
            .map(Offset::Offset)
            .unwrap_or(Offset::Beginning);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topics[1], p);
        match consumer
            .seek(&topics[1], p, next, Duration::from_secs(1))
            .and_then(|()| consumer.resume(&tpl))
        {
            Ok(()) => {
                tracing::debug!(partition = p, "labels resumed");
                f.paused = false;
            }
            Err(e) => tracing::debug!(partition = p, error = %e, "cannot resume the labels yet"),
        }
    }
}

/// A partition's state, its window rows cut (newest kept) to fit one message.
fn export_bounded(e: &Engine) -> PartitionState {
    let mut rows = usize::MAX;
    loop {
        let state = e.export(rows);
        let size = postcard::to_stdvec(&state)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size <= STATE_MAX_BYTES || state.rows.is_empty() {
            if state.rows_left_out > 0 {
                tracing::debug!(
                    left_out = state.rows_left_out,
                    "a partition's window rows do not fit one state message: the newest are shared"
                );
            }
            return state;
        }
        rows = state.rows.len() * STATE_MAX_BYTES / size * 9 / 10;
    }
}

/// Waits until both topics exist (creating them when asked); refuses
/// different partition counts. `None` when stopped while waiting.
fn wait_for_topics(
    config: &Config,
    client: &rdkafka::client::Client<JoinContext>,
    stop: &AtomicBool,
    rt: &tokio::runtime::Handle,
) -> Result<Option<usize>, String> {
    let k = &config.quality.kafka;
    let names = [
        k.predictions_topic.as_str(),
        k.labels_topic.as_str(),
        k.state_topic.as_str(),
    ];
    let mut last_said = None::<Instant>;
    while !stop.load(Ordering::Relaxed) {
        match super::partition_counts(client, &names, Duration::from_secs(5)) {
            Ok(counts) => {
                let missing: Vec<&str> = names
                    .iter()
                    .zip(&counts)
                    .filter(|(_, c)| c.is_none())
                    .map(|(n, _)| *n)
                    .collect();
                if missing.is_empty() {
                    let (p, l) = (counts[0].unwrap_or(0), counts[1].unwrap_or(0));
                    if p != l {
                        return Err(format!(
                            "the topic {} has {p} partitions and {} has {l}: they must have the same count, so that a prediction and its labels (keyed by the same request id) land in partitions with the same number",
                            k.predictions_topic, k.labels_topic
                        ));
                    }
                    return Ok(Some(p));
                }
                if k.create_topics {
                    rt.block_on(super::create_topics(k, &missing))?;
                    continue;
                }
                if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    tracing::warn!(missing = ?missing, "waiting for Kafka topics: create them (same partition count for predictions and labels; the state topic compacted), or set quality.kafka.create_topics");
                    last_said = Some(Instant::now());
                }
            }
            Err(e) => {
                if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    tracing::warn!(error = %e, bootstrap = %k.bootstrap, "cannot reach Kafka; retrying");
                    last_said = Some(Instant::now());
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(None)
}
