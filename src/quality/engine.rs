//! The quality engine: the one owner of the join store. It takes predictions
//! from the analysis thread and labels from the feedback API, joins them,
//! keeps totals and sliding windows, and publishes a [`Snapshot`] of the
//! figures for the gauges and `/v1/status`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};

use super::feedback::{ItemError, LabelItem, Parsed, Reason};
use super::metrics::{self, Calibration, Confusion, Prf, RegressionFigures};
use super::segments::{ReferenceState, SegmentCounts};
use super::store::{join_key, Early, ModelInfo, Store, StoreError, Stored, Tables, Target};
use super::QualityStats;
use crate::config::{window_name, ProtocolConfig, QualityConfig, Task};
use crate::protocol::Value;
use crate::telemetry::names::attr;
use crate::telemetry::Instruments;

/// Bins of the persisted score histograms behind the `total` window's AUC.
pub const TOTAL_BINS: usize = 200;
/// At most this many per-item errors are listed in a feedback answer.
pub const MAX_LISTED_ERRORS: usize = 100;

/// One prediction handed over by the analysis thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub key: Vec<u8>,
    pub time_ms: u64,
    pub model: String,
    pub version: String,
    pub prediction: Option<Value>,
    pub scores: Vec<(String, f64)>,
    /// The bin of each reference feature (`drift::segments`), else empty.
    pub bins: Vec<u8>,
}

/// What a feedback call achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FeedbackReport {
    pub received: usize,
    pub joined: usize,
    /// Labels whose prediction has not arrived: they wait for it
    /// (`quality.early_label_ttl`) and join when it does.
    pub waiting: usize,
    /// Kafka backend: labels acknowledged by Kafka (the joiner joins them).
    #[serde(skip_serializing_if = "is_zero")]
    pub accepted: usize,
    pub unmatched: usize,
    pub duplicate: usize,
    pub invalid: usize,
    pub errors: Vec<ItemError>,
    pub errors_truncated: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl FeedbackReport {
    pub fn fail(&mut self, e: ItemError) {
        match e.reason {
            Reason::Unmatched => self.unmatched += 1,
            Reason::Duplicate => self.duplicate += 1,
            _ => self.invalid += 1,
        }
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(e);
        } else {
            self.errors_truncated = true;
        }
    }
}

/// Running sums since the store was created (the `total` window).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub predictions: u64,
    pub labelled: u64,
    pub confusion: Confusion,
    /// Per class: score bins of rows whose actual class is / is not that class.
    pub score_pos: Vec<Vec<u64>>,
    pub score_neg: Vec<Vec<u64>>,
    pub log_loss_sum: f64,
    pub log_loss_rows: u64,
    pub abs_sum: f64,
    pub sq_sum: f64,
    pub ape_sum: f64,
    pub y_sum: f64,
    pub y2_sum: f64,
}

/// Figures of one window for one model version.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowFigures {
    pub window: String,
    /// Predictions made in the window.
    pub predictions: u64,
    /// Of those, the ones with a label.
    pub labelled: u64,
    /// False while `labelled` is below `quality.min_samples`: no figures then.
    pub enough_labels: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_avg: Option<Prf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weighted_avg: Option<Prf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<ClassFigures>,
    /// Binary: AUC of the positive class's score; multi-class: one-vs-rest macro.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Vec<ConfusionCell>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<RegressionFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated: Option<Estimated>,
    /// Accuracy per feature bin of the window's labelled rows (the diagnosis).
    #[serde(skip)]
    pub segments: SegmentCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassFigures {
    pub class: String,
    #[serde(flatten)]
    pub prf: Prf,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfusionCell {
    pub actual: String,
    pub predicted: String,
    pub count: u64,
}

/// CBPE figures: expected from calibrated scores, labels or not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimated {
    /// Rows the estimate is over (predictions with scores in the window).
    pub rows: u64,
    pub accuracy: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_avg: Option<Prf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<ClassFigures>,
    /// Estimated minus realized accuracy over the labelled rows of the window
    /// (how far off the estimate is where the truth is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<f64>,
}

/// One model version's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelFigures {
    pub model: String,
    pub model_version: String,
    pub task: &'static str,
    pub classes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub positive_class: Option<String>,
    pub reference_rows: usize,
    pub calibrated: bool,
    pub windows: Vec<WindowFigures>,
    /// Accuracy per feature bin in the reference period (the diagnosis).
    #[serde(skip)]
    pub segment_reference: SegmentCounts,
}

/// What the gauges and `/v1/status` read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub models: Vec<ModelFigures>,
    pub pending: u64,
    /// Labels waiting for their prediction.
    pub early_labels: u64,
    pub stored: u64,
    pub store_bytes: u64,
    pub store_path: Option<String>,
    pub min_samples: usize,
}

/// A prediction in the sliding windows.
#[derive(Debug, Clone)]
struct WindowRow {
    seq: u64,
    time_ms: u64,
    model: u16,
    prediction: Target,
    scores: Box<[f64]>,
    label: Option<Target>,
    bins: Box<[u8]>,
}

struct ModelState {
    info: ModelInfo,
    totals: Totals,
    reference: Vec<(u16, Vec<f64>)>,
    /// Accuracy over the reference period (the first
    /// `estimation.reference_rows` labelled rows), and per feature bin over
    /// the first that many labelled rows that carry bins.
    segments: SegmentCounts,
    calibration: Option<Calibration>,
    configured_positive: String,
    class_names: Vec<String>,
    attrs: [KeyValue; 2],
    dirty_info: bool,
    /// Labels changed the totals: written with the next transaction.
    dirty_totals: bool,
    /// Only the prediction count changed: written at the next sync.
    dirty_count: bool,
    dirty_reference: bool,
}

impl ModelState {
    fn new(info: ModelInfo, settings: Option<&crate::config::ModelSettings>) -> ModelState {
        let attrs = [
            KeyValue::new(attr::MODEL, info.model.clone()),
            KeyValue::new(attr::MODEL_VERSION, info.version.clone()),
        ];
        ModelState {
            info,
            totals: Totals::default(),
            reference: Vec::new(),
            segments: SegmentCounts::default(),
            calibration: None,
            configured_positive: settings
                .map(|s| s.positive_class.clone())
                .unwrap_or_default(),
            class_names: settings.map(|s| s.class_names.clone()).unwrap_or_default(),
            attrs,
            dirty_info: true,
            dirty_totals: false,
            dirty_count: false,
            dirty_reference: false,
        }
    }

    /// The class index of `name`; past `max_classes`, the `other` class.
    fn intern(&mut self, name: &str, max_classes: usize) -> u16 {
        if let Some(i) = self.info.classes.iter().position(|c| c == name) {
            return i as u16;
        }
        if self.info.classes.len() + 1 < max_classes {
            self.info.classes.push(name.to_string());
            self.dirty_info = true;
            return (self.info.classes.len() - 1) as u16;
        }
        if let Some(i) = self.info.classes.iter().position(|c| c == OTHER) {
            return i as u16;
        }
        self.info.classes.push(OTHER.to_string());
        self.dirty_info = true;
        (self.info.classes.len() - 1) as u16
    }

    /// A class from a JSON-ish value: text as is, an integer through
    /// `class_names` when configured, a boolean as `true`/`false`.
    fn class_of(&mut self, v: &Value, max_classes: usize) -> Option<u16> {
        let name = match v {
            Value::Text(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) if n.fract() == 0.0 && n.is_finite() => {
                let i = *n as i64;
                match usize::try_from(i)
                    .ok()
                    .and_then(|i| self.class_names.get(i))
                {
                    Some(name) => name.clone(),
                    None => i.to_string(),
                }
            }
            _ => return None,
        };
        Some(self.intern(&name, max_classes))
    }

    fn positive(&self) -> Option<usize> {
        if !self.configured_positive.is_empty() {
            return self
                .info
                .classes
                .iter()
                .position(|c| *c == self.configured_positive);
        }
        (self.info.classes.len() == 2).then_some(1)
    }
}

/// The class that classes past `quality.max_classes` fold into.
pub const OTHER: &str = "other";

/// The quality engine. Runs on its own thread (see [`super::spawn`]).
pub struct Engine {
    config: QualityConfig,
    protocol: ProtocolConfig,
    /// Taken out while a write transaction runs (see [`Engine::write`]).
    store: Option<Store>,
    models: Vec<ModelState>,
    by_name: HashMap<(String, String), u16>,
    window: VecDeque<WindowRow>,
    longest_window_ms: u64,
    next_seq: u64,
    records: u64,
    unlabelled: u64,
    /// Labels waiting for their prediction.
    early: u64,
    /// Joiner: per topic, the next offset to consume (kept with the state).
    offsets: HashMap<String, i64>,
    instruments: Instruments,
    stats: Arc<QualityStats>,
    pub snapshot: Arc<RwLock<Snapshot>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Engine {
    /// Opens the store and rebuilds the state it holds.
    pub fn open(
        config: QualityConfig,
        protocol: ProtocolConfig,
        instruments: Instruments,
        stats: Arc<QualityStats>,
    ) -> Result<Engine, StoreError> {
        let path =
            (!config.store_path.is_empty()).then(|| std::path::PathBuf::from(&config.store_path));
        let store = Store::open(path.as_deref(), config.store_cache_bytes)?;
        let longest_window_ms = config
            .windows
            .iter()
            .map(|w| w.as_millis() as u64)
            .max()
            .unwrap_or(0);
        let loaded = store.load(
            now_ms().saturating_sub(longest_window_ms),
            config.max_window_rows,
        )?;
        let mut engine = Engine {
            store: Some(store),
            models: Vec::new(),
            by_name: HashMap::new(),
            window: VecDeque::new(),
            longest_window_ms,
            next_seq: loaded.next_seq,
            records: loaded.records,
            unlabelled: loaded.unlabelled,
            early: loaded.early,
            offsets: loaded.offsets.into_iter().collect(),
            instruments,
            stats,
            snapshot: Arc::new(RwLock::new(Snapshot::default())),
            config,
            protocol,
        };
        let mut models: Vec<(u16, ModelInfo)> = loaded.models;
        models.sort_by_key(|(id, _)| *id);
        for (id, info) in models {
            debug_assert_eq!(id as usize, engine.models.len());
            let settings = crate::protocol::model_settings(&engine.protocol, Some(&info.model));
            let mut m = ModelState::new(info, settings);
            m.dirty_info = false;
            engine
                .by_name
                .insert((m.info.model.clone(), m.info.version.clone()), id);
            engine.models.push(m);
        }
        for (id, bytes) in loaded.totals {
            if let Some(m) = engine.models.get_mut(id as usize) {
                m.totals = postcard::from_bytes(&bytes)?;
            }
        }
        for (id, bytes) in loaded.references {
            if let Some(m) = engine.models.get_mut(id as usize) {
                let r = ReferenceState::decode(&bytes)?;
                m.reference = r.rows;
                m.segments = r.segments;
            }
        }
        for id in 0..engine.models.len() {
            engine.fit_if_ready(id);
        }
        for (seq, s) in loaded.recent {
            engine.window.push_back(WindowRow {
                seq,
                time_ms: s.time_ms,
                model: s.model,
                prediction: s.prediction,
                scores: s.scores.into_boxed_slice(),
                label: s.label,
                bins: s.bins.into_boxed_slice(),
            });
        }
        if engine.records > 0 {
            tracing::info!(
                stored = engine.records,
                pending = engine.unlabelled,
                models = engine.models.len(),
                "quality store loaded"
            );
        }
        engine.publish_counts();
        Ok(engine)
    }

    fn publish_counts(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.pending.store(self.unlabelled, Relaxed);
        self.stats.stored.store(self.records, Relaxed);
        self.stats.early.store(self.early, Relaxed);
    }

    /// Stores a batch of predictions (one transaction).
    pub fn add_predictions(
        &mut self,
        batch: Vec<Prediction>,
        sync: bool,
    ) -> Result<(), StoreError> {
        let result = self.write(sync, |e, t| {
            for p in batch {
                e.add_prediction(t, p)?;
            }
            e.persist_dirty(t, sync)
        });
        self.publish_counts();
        result
    }

    fn model_id(
        &mut self,
        model: &str,
        version: &str,
        has_scores: bool,
        prediction: Option<&Value>,
    ) -> Option<u16> {
        if let Some(id) = self.by_name.get(&(model.to_string(), version.to_string())) {
            return Some(*id);
        }
        if self.models.len() >= self.config.max_models {
            return None;
        }
        let settings = crate::protocol::model_settings(&self.protocol, Some(model));
        let task = settings.map(|s| s.task).unwrap_or_default();
        let regression = match task {
            Task::Regression => true,
            Task::Classification => false,
            Task::Auto => {
                !has_scores
                    && settings.is_none_or(|s| s.class_names.is_empty())
                    && matches!(prediction, Some(Value::Number(_)))
            }
        };
        let info = ModelInfo {
            model: model.to_string(),
            version: version.to_string(),
            regression,
            classes: Vec::new(),
        };
        let mut state = ModelState::new(info, settings);
        if !regression {
            let names = state.class_names.clone();
            for n in names.iter().take(self.config.max_classes) {
                state.intern(n, self.config.max_classes);
            }
        }
        let id = self.models.len() as u16;
        self.models.push(state);
        self.by_name
            .insert((model.to_string(), version.to_string()), id);
        Some(id)
    }

    fn drop_prediction(&self, reason: &'static str) {
        self.instruments
            .quality_predictions_dropped
            .add(1, &[KeyValue::new(attr::REASON, reason)]);
    }

    fn add_prediction(&mut self, t: &mut Tables<'_>, p: Prediction) -> Result<(), StoreError> {
        // A prediction delivered twice (a replayed record, a reused request
        // id) is recognised by its join key: the first one is kept.
        if t.find(&p.key)?.is_some() {
            self.drop_prediction("duplicate");
            return Ok(());
        }
        let Some(id) = self.model_id(
            &p.model,
            &p.version,
            !p.scores.is_empty(),
            p.prediction.as_ref(),
        ) else {
            self.drop_prediction("model_limit");
            return Ok(());
        };
        let max_classes = self.config.max_classes;
        let m = &mut self.models[id as usize];
        let (prediction, scores) = if m.info.regression {
            match p.prediction.as_ref().and_then(Value::as_f64) {
                Some(v) if v.is_finite() => (Target::Value(v), Vec::new()),
                _ => {
                    self.drop_prediction("no_prediction");
                    return Ok(());
                }
            }
        } else {
            let mut scores: Vec<f64> = Vec::new();
            for (name, s) in &p.scores {
                let c = m.intern(name, max_classes) as usize;
                if scores.len() <= c {
                    scores.resize(c + 1, 0.0);
                }
                scores[c] += s;
            }
            let class = match &p.prediction {
                Some(v) => m.class_of(v, max_classes),
                None => crate::protocol::argmax(&scores).map(|c| c as u16),
            };
            match class {
                Some(c) => (Target::Class(c), scores),
                None => {
                    self.drop_prediction("no_prediction");
                    return Ok(());
                }
            }
        };
        m.totals.predictions += 1;
        m.dirty_count = true;
        self.instruments.quality_predictions.add(1, &m.attrs);
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut record = Stored {
            key: p.key,
            time_ms: p.time_ms,
            model: id,
            prediction,
            scores,
            label: None,
            bins: p.bins,
        };
        t.insert(seq, &record)?;
        self.records += 1;
        self.unlabelled += 1;
        let early = if self.early > 0 {
            t.take_early(&record.key)?
        } else {
            None
        };
        let scores = if early.is_some() {
            record.scores.clone()
        } else {
            std::mem::take(&mut record.scores)
        };
        self.window.push_back(WindowRow {
            seq,
            time_ms: record.time_ms,
            model: id,
            prediction,
            scores: scores.into_boxed_slice(),
            label: None,
            bins: record.bins.clone().into_boxed_slice(),
        });
        if let Some(e) = early {
            self.early -= 1;
            self.join_early(t, seq, record, e)?;
        }
        if self.window.len() > self.config.max_window_rows {
            self.window.pop_front();
            self.instruments.quality_window_evicted.add(1, &[]);
        }
        while self.records > self.config.max_predictions as u64 {
            let Some((seq, old)) = t.oldest()? else { break };
            t.remove(seq, &old)?;
            self.records -= 1;
            if old.label.is_none() {
                self.unlabelled -= 1;
                self.instruments
                    .quality_pending_removed
                    .add(1, &[KeyValue::new(attr::REASON, "evicted")]);
            }
        }
        Ok(())
    }

    /// Joins a batch of labels (one transaction) and reports on each.
    pub fn add_labels(&mut self, parsed: Parsed, sync: bool) -> Result<FeedbackReport, StoreError> {
        let mut report = FeedbackReport {
            received: parsed.received(),
            ..FeedbackReport::default()
        };
        let mut errors = parsed.errors;
        self.write(sync, |e, t| {
            e.join_all(t, parsed.items, &mut report, &mut errors)?;
            e.persist_dirty(t, sync)
        })?;
        self.finish_report(&mut report, errors);
        Ok(report)
    }

    /// Joiner: a batch of one partition's records in one transaction, with
    /// the offsets they take the partition to, so that a crash or a
    /// rebalance neither loses nor counts twice.
    pub fn ingest(
        &mut self,
        predictions: Vec<Prediction>,
        labels: Vec<LabelItem>,
        offsets: &[(&str, i64)],
        sync: bool,
    ) -> Result<FeedbackReport, StoreError> {
        let mut report = FeedbackReport {
            received: labels.len(),
            ..FeedbackReport::default()
        };
        let mut errors = Vec::new();
        self.write(sync, |e, t| {
            for p in predictions {
                e.add_prediction(t, p)?;
            }
            e.join_all(t, labels, &mut report, &mut errors)?;
            for (topic, next) in offsets {
                t.set_offset(topic, *next)?;
            }
            e.persist_dirty(t, sync)
        })?;
        for (topic, next) in offsets {
            self.offsets.insert(topic.to_string(), *next);
        }
        self.finish_report(&mut report, errors);
        Ok(report)
    }

    /// Joiner: the next offset to consume from `topic`, if any was stored.
    pub fn offset(&self, topic: &str) -> Option<i64> {
        self.offsets.get(topic).copied()
    }

    fn join_all(
        &mut self,
        t: &mut Tables<'_>,
        items: Vec<LabelItem>,
        report: &mut FeedbackReport,
        errors: &mut Vec<ItemError>,
    ) -> Result<(), StoreError> {
        for item in items {
            match self.join(t, &item) {
                Ok(Joined::Now) => report.joined += 1,
                Ok(Joined::Waiting) => report.waiting += 1,
                Err(JoinError::Item(reason)) => {
                    errors.push(ItemError::new(item.index, Some(item.id.clone()), reason))
                }
                Err(JoinError::Store(err)) => return Err(err),
            }
        }
        Ok(())
    }

    fn finish_report(&mut self, report: &mut FeedbackReport, mut errors: Vec<ItemError>) {
        errors.sort_by_key(|e| e.index);
        for e in errors {
            report.fail(e);
        }
        for (result, n) in [
            ("joined", report.joined),
            ("waiting", report.waiting),
            ("unmatched", report.unmatched),
            ("duplicate", report.duplicate),
            ("invalid", report.invalid),
        ] {
            if n > 0 {
                self.instruments
                    .quality_feedback
                    .add(n as u64, &[KeyValue::new(attr::RESULT, result)]);
            }
        }
        self.publish_counts();
    }

    fn join(&mut self, t: &mut Tables<'_>, item: &LabelItem) -> Result<Joined, JoinError> {
        let key = join_key(&item.id, item.row);
        let Some((seq, record)) = t.find(&key)? else {
            return self.wait_for_prediction(t, item, key);
        };
        if record.label.is_some() {
            return Err(JoinError::Item(Reason::Duplicate));
        }
        self.apply_label(
            t,
            seq,
            record,
            &item.label,
            item.model.as_deref(),
            item.time_ms,
        )?;
        Ok(Joined::Now)
    }

    /// A label without its prediction: kept until the prediction arrives,
    /// unless early labels are off or their bound is reached.
    fn wait_for_prediction(
        &mut self,
        t: &mut Tables<'_>,
        item: &LabelItem,
        key: Vec<u8>,
    ) -> Result<Joined, JoinError> {
        if self.config.early_label_ttl.is_zero()
            || self.early >= self.config.max_early_labels as u64
        {
            return Err(JoinError::Item(Reason::Unmatched));
        }
        let early = Early {
            key,
            id: item.id.clone(),
            row: item.row,
            label: item.label.to_string(),
            model: item.model.clone(),
            time_ms: item.time_ms,
            arrived_ms: now_ms(),
        };
        if !t.put_early(&early)? {
            return Err(JoinError::Item(Reason::Duplicate));
        }
        self.early += 1;
        Ok(Joined::Waiting)
    }

    /// Joins a label that waited for this prediction. A label that does not
    /// fit the model (wrong type, other model) is counted as invalid.
    fn join_early(
        &mut self,
        t: &mut Tables<'_>,
        seq: u64,
        record: Stored,
        early: Early,
    ) -> Result<(), StoreError> {
        let label: serde_json::Value =
            serde_json::from_str(&early.label).unwrap_or(serde_json::Value::Null);
        let result = match self.apply_label(
            t,
            seq,
            record,
            &label,
            early.model.as_deref(),
            early.time_ms,
        ) {
            Ok(()) => "joined",
            Err(JoinError::Store(e)) => return Err(e),
            Err(JoinError::Item(reason)) => {
                tracing::debug!(request_id = %early.id, row = early.row, reason = reason.as_str(), "an early label does not fit its prediction");
                "invalid"
            }
        };
        self.instruments
            .quality_early_labels_joined
            .add(1, &[KeyValue::new(attr::RESULT, result)]);
        Ok(())
    }

    /// Sets the label of a stored prediction and accounts for it.
    fn apply_label(
        &mut self,
        t: &mut Tables<'_>,
        seq: u64,
        mut record: Stored,
        label: &serde_json::Value,
        model: Option<&str>,
        time_ms: Option<u64>,
    ) -> Result<(), JoinError> {
        let max_classes = self.config.max_classes;
        let m = &mut self.models[record.model as usize];
        if model.is_some_and(|name| name != m.info.model) {
            return Err(JoinError::Item(Reason::ModelMismatch));
        }
        let label = if m.info.regression {
            match label.as_f64() {
                Some(v) if label.is_number() => Target::Value(v),
                _ => return Err(JoinError::Item(Reason::WrongLabelType)),
            }
        } else {
            let v = match label {
                serde_json::Value::String(s) => Value::Text(s.clone()),
                serde_json::Value::Bool(b) => Value::Bool(*b),
                serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
                _ => return Err(JoinError::Item(Reason::WrongLabelType)),
            };
            match m.class_of(&v, max_classes) {
                Some(c) => Target::Class(c),
                None => return Err(JoinError::Item(Reason::WrongLabelType)),
            }
        };
        record.label = Some(label);
        t.update(seq, &record)?;
        self.unlabelled -= 1;
        if let Ok(i) = self.window.binary_search_by_key(&seq, |r| r.seq) {
            self.window[i].label = Some(label);
        }
        let label_time = time_ms.unwrap_or_else(now_ms);
        let id = record.model as usize;
        self.account(id, &record, label, label_time);
        Ok(())
    }

    /// Adds one joined row to the totals, the reference and the exported counters.
    fn account(&mut self, id: usize, record: &Stored, label: Target, label_time_ms: u64) {
        let reference_rows = self.config.estimation.reference_rows;
        let estimation = self.config.estimation.enabled;
        let i = &self.instruments;
        let m = &mut self.models[id];
        let t = &mut m.totals;
        t.labelled += 1;
        m.dirty_totals = true;
        i.quality_labels.add(1, &m.attrs);
        i.quality_label_delay.record(
            label_time_ms.saturating_sub(record.time_ms) as f64 / 1000.0,
            &m.attrs,
        );
        match (record.prediction, label) {
            (Target::Value(p), Target::Value(y)) => {
                t.abs_sum += (y - p).abs();
                t.sq_sum += (y - p) * (y - p);
                t.ape_sum += metrics::ape_term(p, y);
                t.y_sum += y;
                t.y2_sum += y * y;
                i.quality_error_absolute.add((y - p).abs(), &m.attrs);
                i.quality_error_squared.add((y - p) * (y - p), &m.attrs);
                i.quality_error_percentage
                    .add(metrics::ape_term(p, y), &m.attrs);
                i.quality_label_sum.add(y, &m.attrs);
                i.quality_label_squares.add(y * y, &m.attrs);
            }
            (Target::Class(p), Target::Class(a)) => {
                let (p, a) = (p as usize, a as usize);
                // The reference period: its first rows for accuracy, its
                // first rows with bins for the segments (with a live drift
                // reference, the first predictions come before any bins).
                let rows = reference_rows as u64;
                if m.segments.labelled < rows {
                    m.segments.count(a == p);
                    m.dirty_reference = true;
                }
                if !record.bins.is_empty() && m.segments.binned < rows {
                    m.segments.count_bins(&record.bins, a == p);
                    m.dirty_reference = true;
                }
                t.confusion.add(a, p, 1.0);
                let classes = &m.info.classes;
                let name = |c: usize| classes.get(c).cloned().unwrap_or_default();
                let mut attrs = m.attrs.to_vec();
                attrs.push(KeyValue::new(attr::ACTUAL, name(a)));
                attrs.push(KeyValue::new(attr::PREDICTED, name(p)));
                attrs.push(KeyValue::new(attr::CORRECT, a == p));
                i.quality_confusion.add(1, &attrs);
                if !record.scores.is_empty() {
                    let k = record.scores.len().max(a + 1);
                    if t.score_pos.len() < k {
                        t.score_pos.resize(k, vec![0; TOTAL_BINS]);
                        t.score_neg.resize(k, vec![0; TOTAL_BINS]);
                    }
                    for (c, s) in record.scores.iter().enumerate() {
                        let b = metrics::score_bin(*s, TOTAL_BINS);
                        if c == a {
                            t.score_pos[c][b] += 1;
                        } else {
                            t.score_neg[c][b] += 1;
                        }
                        attrs.truncate(2);
                        attrs.push(KeyValue::new(attr::CLASS, name(c)));
                        attrs.push(KeyValue::new(attr::ACTUAL, c == a));
                        i.quality_score.record(*s, &attrs);
                    }
                    let loss = metrics::log_loss_term(record.scores.get(a).copied().unwrap_or(0.0));
                    t.log_loss_sum += loss;
                    t.log_loss_rows += 1;
                    i.quality_log_loss.add(loss, &m.attrs);
                    if estimation && m.reference.len() < reference_rows {
                        m.reference.push((a as u16, record.scores.clone()));
                        m.dirty_reference = true;
                    }
                }
            }
            _ => {}
        }
        if m.dirty_reference && m.calibration.is_none() {
            self.fit_if_ready(id);
        }
    }

    fn fit_if_ready(&mut self, id: usize) {
        let reference_rows = self.config.estimation.reference_rows;
        let m = &mut self.models[id];
        if m.info.regression || m.reference.len() < reference_rows || m.calibration.is_some() {
            return;
        }
        let k = m.info.classes.len();
        let rows: Vec<(usize, &[f64])> = m
            .reference
            .iter()
            .map(|(a, s)| (*a as usize, s.as_slice()))
            .collect();
        let binary = if k == 2 { m.positive() } else { None };
        m.calibration = Some(Calibration::fit(&rows, k, binary));
        tracing::info!(model = %m.info.model, version = %m.info.version, rows = rows.len(), "score calibration fitted for performance estimation");
    }

    /// Writes what changed; prediction counts alone only when `sync` (they
    /// change with every prediction, and a crash may lose a few of them).
    fn persist_dirty(&mut self, t: &mut Tables<'_>, sync: bool) -> Result<(), StoreError> {
        for (id, m) in self.models.iter_mut().enumerate() {
            let id = id as u16;
            if m.dirty_info {
                t.put_model(id, &m.info)?;
                m.dirty_info = false;
            }
            if m.dirty_totals || (sync && m.dirty_count) {
                t.put_totals(id, &postcard::to_stdvec(&m.totals)?)?;
                m.dirty_totals = false;
                m.dirty_count = false;
            }
            if m.dirty_reference {
                #[derive(Serialize)]
                struct Out<'a> {
                    rows: &'a [(u16, Vec<f64>)],
                    segments: &'a SegmentCounts,
                }
                let out = Out {
                    rows: &m.reference,
                    segments: &m.segments,
                };
                t.put_reference(id, &postcard::to_stdvec(&out)?)?;
                m.dirty_reference = false;
            }
        }
        t.set_next_seq(self.next_seq)
    }

    /// Expires predictions older than `label_ttl`, trims the windows, and
    /// flushes to disk when `sync`.
    pub fn maintain(&mut self, sync: bool) -> Result<(), StoreError> {
        let now = now_ms();
        let cutoff = now.saturating_sub(self.config.label_ttl.as_millis() as u64);
        let result = self.write(sync, |e, t| {
            while let Some((seq, old)) = t.oldest()? {
                if old.time_ms >= cutoff {
                    break;
                }
                t.remove(seq, &old)?;
                e.records -= 1;
                if old.label.is_none() {
                    e.unlabelled -= 1;
                    e.instruments
                        .quality_pending_removed
                        .add(1, &[KeyValue::new(attr::REASON, "expired")]);
                }
            }
            if e.early > 0 {
                let cutoff = now.saturating_sub(e.config.early_label_ttl.as_millis() as u64);
                let expired = t.expire_early(cutoff)?;
                if expired > 0 {
                    e.early -= expired;
                    e.instruments
                        .quality_early_labels_joined
                        .add(expired, &[KeyValue::new(attr::RESULT, "expired")]);
                }
            }
            e.persist_dirty(t, sync)
        });
        let window_cutoff = now.saturating_sub(self.longest_window_ms);
        while self
            .window
            .front()
            .is_some_and(|r| r.time_ms < window_cutoff)
        {
            self.window.pop_front();
        }
        self.publish_counts();
        result
    }

    /// Settings a live reload changes. A longer window than before fills
    /// from the predictions that arrive from now on (older ones left memory
    /// with the shorter window).
    pub fn reconfigure(&mut self, config: QualityConfig, protocol: ProtocolConfig) {
        self.longest_window_ms = config
            .windows
            .iter()
            .map(|w| w.as_millis() as u64)
            .max()
            .unwrap_or(0);
        self.config = config;
        self.protocol = protocol;
    }

    /// Recomputes every window's figures and publishes them.
    pub fn refresh(&mut self) {
        let now = now_ms();
        let min = self.config.min_samples;
        let mut out = Vec::with_capacity(self.models.len());
        for (id, m) in self.models.iter().enumerate() {
            let mut windows = Vec::new();
            for w in &self.config.windows {
                let cutoff = now.saturating_sub(w.as_millis() as u64);
                let rows: Vec<&WindowRow> = self
                    .window
                    .iter()
                    .rev()
                    .take_while(|r| r.time_ms >= cutoff)
                    .filter(|r| r.model as usize == id)
                    .collect();
                windows.push(window_figures(m, window_name(*w), &rows, min));
            }
            windows.push(total_figures(m, min));
            out.push(ModelFigures {
                model: m.info.model.clone(),
                model_version: m.info.version.clone(),
                task: if m.info.regression {
                    "regression"
                } else {
                    "classification"
                },
                classes: m.info.classes.clone(),
                positive_class: m
                    .positive()
                    .filter(|_| m.info.classes.len() == 2)
                    .map(|p| m.info.classes[p].clone()),
                reference_rows: m.reference.len(),
                segment_reference: m.segments.clone(),
                calibrated: m.calibration.is_some(),
                windows,
            });
        }
        let snapshot = Snapshot {
            models: out,
            pending: self.unlabelled,
            early_labels: self.early,
            stored: self.records,
            store_bytes: self.store().file_bytes(),
            store_path: self.store().path.clone(),
            min_samples: min,
        };
        *self.snapshot.write().expect("poisoned") = snapshot;
    }

    /// Memory held by the sliding-window copy of predictions (struct, score
    /// and bin sizes; allocator overhead not included).
    pub fn window_bytes(&self) -> usize {
        self.window.len() * std::mem::size_of::<WindowRow>()
            + self
                .window
                .iter()
                .map(|r| r.scores.len() * std::mem::size_of::<f64>() + r.bins.len())
                .sum::<usize>()
    }

    /// Forgets the calibration reference of one model version (persisted);
    /// false when the model version is unknown.
    pub fn reset_reference(&mut self, model: &str, version: &str) -> Result<bool, StoreError> {
        let Some(&id) = self.by_name.get(&(model.to_string(), version.to_string())) else {
            return Ok(false);
        };
        let m = &mut self.models[id as usize];
        m.reference.clear();
        m.segments = SegmentCounts::default();
        m.calibration = None;
        m.dirty_reference = true;
        tracing::info!(%model, %version, "calibration reference reset");
        self.write(true, |e, t| e.persist_dirty(t, true))?;
        Ok(true)
    }

    /// What this engine holds, for the fleet view (see [`Engine::absorb`]):
    /// each model version's totals and reference, and the rows of the
    /// longest window (newest `max_rows` at most).
    pub fn export(&self, max_rows: usize) -> PartitionState {
        let skip = self.window.len().saturating_sub(max_rows);
        PartitionState {
            models: self
                .models
                .iter()
                .map(|m| ModelExport {
                    info: m.info.clone(),
                    totals: m.totals.clone(),
                    reference: m.reference.clone(),
                })
                .collect(),
            rows: self
                .window
                .iter()
                .skip(skip)
                .map(|r| RowExport {
                    time_ms: r.time_ms,
                    model: r.model,
                    prediction: r.prediction,
                    scores: r.scores.to_vec(),
                    label: r.label,
                })
                .collect(),
            rows_left_out: skip as u64,
            pending: self.unlabelled,
            stored: self.records,
            early: self.early,
        }
    }

    /// Replaces what this (in-memory) engine holds with the union of several
    /// partitions' states: model versions matched by name, classes by name,
    /// totals added, window rows merged by time. [`Engine::refresh`] then
    /// computes every figure from the union exactly as from one store.
    pub fn absorb<'s>(&mut self, states: impl IntoIterator<Item = &'s PartitionState>) {
        self.models.clear();
        self.by_name.clear();
        self.window.clear();
        let (mut pending, mut stored, mut early) = (0, 0, 0);
        let max_classes = self.config.max_classes;
        let reference_rows = self.config.estimation.reference_rows;
        let mut rows = Vec::new();
        for st in states {
            pending += st.pending;
            stored += st.stored;
            early += st.early;
            let mut ids = Vec::with_capacity(st.models.len());
            let mut class_maps: Vec<Vec<u16>> = Vec::with_capacity(st.models.len());
            for me in &st.models {
                let key = (me.info.model.clone(), me.info.version.clone());
                let id = match self.by_name.get(&key) {
                    Some(id) => *id,
                    None => {
                        let settings =
                            crate::protocol::model_settings(&self.protocol, Some(&me.info.model));
                        let info = ModelInfo {
                            classes: Vec::new(),
                            ..me.info.clone()
                        };
                        let mut state = ModelState::new(info, settings);
                        if !me.info.regression {
                            for n in state.class_names.clone().iter().take(max_classes) {
                                state.intern(n, max_classes);
                            }
                        }
                        let id = self.models.len() as u16;
                        self.models.push(state);
                        self.by_name.insert(key, id);
                        id
                    }
                };
                let m = &mut self.models[id as usize];
                let map: Vec<u16> = me
                    .info
                    .classes
                    .iter()
                    .map(|c| m.intern(c, max_classes))
                    .collect();
                merge_totals(&mut m.totals, &me.totals, &map);
                for (a, scores) in &me.reference {
                    if m.reference.len() >= reference_rows {
                        break;
                    }
                    m.reference
                        .push((remap(&map, *a), remap_scores(&map, scores)));
                }
                ids.push(id);
                class_maps.push(map);
            }
            for r in &st.rows {
                let Some(&id) = ids.get(r.model as usize) else {
                    continue;
                };
                let map = &class_maps[r.model as usize];
                let target = |t: Target| match t {
                    Target::Class(c) => Target::Class(remap(map, c)),
                    v => v,
                };
                rows.push(WindowRow {
                    seq: 0,
                    time_ms: r.time_ms,
                    model: id,
                    prediction: target(r.prediction),
                    scores: remap_scores(map, &r.scores).into_boxed_slice(),
                    label: r.label.map(target),
                    bins: Box::default(),
                });
            }
        }
        rows.sort_by_key(|r| r.time_ms);
        for (i, mut r) in rows.into_iter().enumerate() {
            r.seq = i as u64;
            self.window.push_back(r);
        }
        for id in 0..self.models.len() {
            self.fit_if_ready(id);
        }
        self.unlabelled = pending;
        self.records = stored;
        self.early = early;
        self.publish_counts();
    }

    /// A final flush to disk.
    pub fn close(&mut self) -> Result<(), StoreError> {
        self.write(true, |e, t| e.persist_dirty(t, true))
    }

    /// Runs `f` in one write transaction of the store.
    fn write<T>(
        &mut self,
        sync: bool,
        f: impl FnOnce(&mut Engine, &mut Tables<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let store = self
            .store
            .take()
            .expect("the store is taken only during a write");
        let result = store.write(sync, |t| f(self, t));
        self.store = Some(store);
        result
    }

    fn store(&self) -> &Store {
        self.store
            .as_ref()
            .expect("the store is taken only during a write")
    }
}

/// One partition's share of the figures (see [`Engine::export`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub models: Vec<ModelExport>,
    pub rows: Vec<RowExport>,
    /// Window rows not exported (over the size bound).
    pub rows_left_out: u64,
    pub pending: u64,
    pub stored: u64,
    pub early: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelExport {
    pub info: ModelInfo,
    pub totals: Totals,
    pub reference: Vec<(u16, Vec<f64>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowExport {
    pub time_ms: u64,
    pub model: u16,
    pub prediction: Target,
    pub scores: Vec<f64>,
    pub label: Option<Target>,
}

fn remap(map: &[u16], c: u16) -> u16 {
    map.get(c as usize).copied().unwrap_or(c)
}

/// Scores indexed by one partition's classes, re-indexed by the fleet's.
fn remap_scores(map: &[u16], scores: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    for (c, s) in scores.iter().enumerate() {
        let to = remap(map, c as u16) as usize;
        if out.len() <= to {
            out.resize(to + 1, 0.0);
        }
        out[to] += s;
    }
    out
}

/// Adds one partition's totals (classes re-indexed) to the fleet's.
fn merge_totals(into: &mut Totals, from: &Totals, map: &[u16]) {
    into.predictions += from.predictions;
    into.labelled += from.labelled;
    for a in 0..from.confusion.k {
        for p in 0..from.confusion.k {
            let n = from.confusion.get(a, p);
            if n > 0.0 {
                let (ra, rp) = (remap(map, a as u16) as usize, remap(map, p as u16) as usize);
                into.confusion.grow(ra.max(rp) + 1);
                into.confusion.add(ra, rp, n);
            }
        }
    }
    for (side_into, side_from) in [
        (&mut into.score_pos, &from.score_pos),
        (&mut into.score_neg, &from.score_neg),
    ] {
        for (c, bins) in side_from.iter().enumerate() {
            let to = remap(map, c as u16) as usize;
            if side_into.len() <= to {
                side_into.resize(to + 1, vec![0; TOTAL_BINS]);
            }
            for (b, n) in bins.iter().enumerate() {
                side_into[to][b] += n;
            }
        }
    }
    into.log_loss_sum += from.log_loss_sum;
    into.log_loss_rows += from.log_loss_rows;
    into.abs_sum += from.abs_sum;
    into.sq_sum += from.sq_sum;
    into.ape_sum += from.ape_sum;
    into.y_sum += from.y_sum;
    into.y2_sum += from.y2_sum;
}

/// A label that was accepted: joined now, or waiting for its prediction.
enum Joined {
    Now,
    Waiting,
}

enum JoinError {
    Item(Reason),
    Store(StoreError),
}

impl From<StoreError> for JoinError {
    fn from(e: StoreError) -> Self {
        JoinError::Store(e)
    }
}

fn class_name(m: &ModelState, c: usize) -> String {
    m.info
        .classes
        .get(c)
        .cloned()
        .unwrap_or_else(|| c.to_string())
}

fn classification(m: &ModelState, f: &mut WindowFigures, confusion: &Confusion) {
    f.accuracy = confusion.accuracy();
    f.classes = confusion
        .present()
        .into_iter()
        .map(|c| ClassFigures {
            class: class_name(m, c),
            prf: confusion.class(c),
        })
        .collect();
    f.macro_avg = confusion.macro_avg();
    f.weighted_avg = confusion.weighted_avg();
    if m.info.classes.len() == 2 {
        if let Some(pos) = m.positive() {
            let mut c = confusion.clone();
            c.grow(2);
            f.binary = Some(ClassFigures {
                class: class_name(m, pos),
                prf: c.class(pos),
            });
        }
    }
    let mut cells = Vec::new();
    for a in 0..confusion.k {
        for p in 0..confusion.k {
            let n = confusion.get(a, p);
            if n > 0.0 {
                cells.push(ConfusionCell {
                    actual: class_name(m, a),
                    predicted: class_name(m, p),
                    count: n as u64,
                });
            }
        }
    }
    f.confusion = Some(cells);
}

fn window_figures(m: &ModelState, name: String, rows: &[&WindowRow], min: usize) -> WindowFigures {
    let labelled: Vec<&WindowRow> = rows.iter().copied().filter(|r| r.label.is_some()).collect();
    let mut f = WindowFigures {
        window: name,
        predictions: rows.len() as u64,
        labelled: labelled.len() as u64,
        enough_labels: labelled.len() >= min,
        ..WindowFigures::default()
    };
    for r in &labelled {
        if let (Target::Class(p), Some(Target::Class(a))) = (r.prediction, r.label) {
            f.segments.add(&r.bins, p == a);
        }
    }
    let k = m.info.classes.len();
    if f.enough_labels {
        if m.info.regression {
            let pairs: Vec<(f64, f64)> = labelled
                .iter()
                .filter_map(|r| match (r.prediction, r.label) {
                    (Target::Value(p), Some(Target::Value(y))) => Some((p, y)),
                    _ => None,
                })
                .collect();
            f.regression = metrics::regression(&pairs);
        } else {
            let mut confusion = Confusion::new(k);
            for r in &labelled {
                if let (Target::Class(p), Some(Target::Class(a))) = (r.prediction, r.label) {
                    confusion.add(a as usize, p as usize, 1.0);
                }
            }
            classification(m, &mut f, &confusion);
            let scored: Vec<(usize, &[f64])> = labelled
                .iter()
                .filter_map(|r| match r.label {
                    Some(Target::Class(a)) if !r.scores.is_empty() => {
                        Some((a as usize, &r.scores[..]))
                    }
                    _ => None,
                })
                .collect();
            if scored.len() == labelled.len() && !scored.is_empty() {
                let auc_of = |c: usize| {
                    let s: Vec<f64> = scored
                        .iter()
                        .map(|(_, s)| s.get(c).copied().unwrap_or(0.0))
                        .collect();
                    let y: Vec<bool> = scored.iter().map(|(a, _)| *a == c).collect();
                    metrics::roc_auc(&s, &y)
                };
                f.roc_auc = if k == 2 {
                    m.positive().and_then(auc_of)
                } else {
                    let aucs: Vec<f64> = (0..k).filter_map(auc_of).collect();
                    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
                };
                let loss: f64 = scored
                    .iter()
                    .map(|(a, s)| metrics::log_loss_term(s.get(*a).copied().unwrap_or(0.0)))
                    .sum();
                f.log_loss = Some(loss / scored.len() as f64);
            }
        }
    }
    if let Some(cal) = &m.calibration {
        fn scored<'r>(r: &&'r WindowRow) -> Option<(usize, &'r [f64])> {
            match r.prediction {
                Target::Class(p) if !r.scores.is_empty() => Some((p as usize, &r.scores[..])),
                _ => None,
            }
        }
        let all: Vec<(usize, &[f64])> = rows.iter().filter_map(scored).collect();
        if all.len() >= min {
            let expected = metrics::expected_confusion(cal, all.iter().copied());
            let binary = (k == 2).then(|| m.positive()).flatten().map(|pos| {
                let mut c = expected.clone();
                c.grow(2);
                ClassFigures {
                    class: class_name(m, pos),
                    prf: c.class(pos),
                }
            });
            let gap = if f.enough_labels {
                let on_labelled =
                    metrics::expected_confusion(cal, labelled.iter().filter_map(scored));
                on_labelled.accuracy().zip(f.accuracy).map(|(e, r)| e - r)
            } else {
                None
            };
            f.estimated = expected.accuracy().map(|accuracy| Estimated {
                rows: all.len() as u64,
                accuracy,
                macro_avg: expected.macro_avg(),
                binary,
                gap,
            });
        }
    }
    f
}

fn total_figures(m: &ModelState, min: usize) -> WindowFigures {
    let t = &m.totals;
    let mut f = WindowFigures {
        window: "total".into(),
        predictions: t.predictions,
        labelled: t.labelled,
        enough_labels: t.labelled as usize >= min,
        ..WindowFigures::default()
    };
    if !f.enough_labels {
        return f;
    }
    if m.info.regression {
        let n = t.labelled as f64;
        let ss_tot = t.y2_sum - t.y_sum * t.y_sum / n;
        f.regression = Some(RegressionFigures {
            mae: t.abs_sum / n,
            rmse: (t.sq_sum / n).sqrt(),
            mape: t.ape_sum / n,
            r2: metrics::r2_from(t.sq_sum, ss_tot.max(0.0), t.labelled as usize),
        });
        return f;
    }
    classification(m, &mut f, &t.confusion);
    let k = m.info.classes.len();
    if t.log_loss_rows == t.labelled && t.labelled > 0 {
        f.log_loss = Some(t.log_loss_sum / t.log_loss_rows as f64);
        let auc_of = |c: usize| metrics::roc_auc_binned(t.score_pos.get(c)?, t.score_neg.get(c)?);
        f.roc_auc = if k == 2 {
            m.positive().and_then(auc_of)
        } else {
            let aucs: Vec<f64> = (0..k).filter_map(auc_of).collect();
            (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
        };
    }
    f
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quality::feedback;

    /// A snapshot with every kind of figure, for the exporter tests.
    pub(crate) fn full_snapshot() -> Snapshot {
        let prf = Prf {
            precision: 0.5,
            recall: 0.5,
            f1: 0.5,
            support: 2.0,
        };
        let class = |c: &str| ClassFigures {
            class: c.into(),
            prf,
        };
        let w = WindowFigures {
            window: "1h".into(),
            predictions: 4,
            labelled: 4,
            enough_labels: true,
            accuracy: Some(0.5),
            classes: vec![class("a"), class("b")],
            macro_avg: Some(prf),
            weighted_avg: Some(prf),
            binary: Some(class("b")),
            roc_auc: Some(0.75),
            log_loss: Some(0.7),
            confusion: None,
            regression: Some(RegressionFigures {
                mae: 1.0,
                rmse: 1.0,
                mape: 0.1,
                r2: Some(0.9),
            }),
            estimated: Some(Estimated {
                rows: 4,
                accuracy: 0.6,
                macro_avg: Some(prf),
                binary: Some(class("b")),
                gap: Some(0.1),
            }),
            segments: SegmentCounts::default(),
        };
        Snapshot {
            models: vec![ModelFigures {
                model: "m".into(),
                model_version: "1".into(),
                task: "classification",
                classes: vec!["a".into(), "b".into()],
                positive_class: Some("b".into()),
                reference_rows: 4,
                calibrated: true,
                windows: vec![w],
                segment_reference: SegmentCounts::default(),
            }],
            store_bytes: 1,
            ..Snapshot::default()
        }
    }

    fn engine(config: QualityConfig, protocol: ProtocolConfig) -> Engine {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let telemetry =
            crate::telemetry::Telemetry::new(&crate::config::Config::default(), runtime.handle())
                .unwrap();
        Engine::open(
            config,
            protocol,
            telemetry.instruments.clone(),
            Default::default(),
        )
        .unwrap()
    }

    fn prediction(id: &str, class: &str, p1: f64) -> Prediction {
        Prediction {
            key: join_key(id, 0),
            time_ms: now_ms(),
            model: "m".into(),
            version: "v1".into(),
            prediction: Some(Value::Text(class.into())),
            scores: vec![("a".into(), 1.0 - p1), ("b".into(), p1)],
            bins: Vec::new(),
        }
    }

    fn labels(body: &str) -> feedback::Parsed {
        feedback::parse(body.as_bytes(), false).unwrap()
    }

    #[test]
    fn joins_counts_and_windows() {
        let config = QualityConfig {
            min_samples: 2,
            ..QualityConfig::default()
        };
        let mut e = engine(config, ProtocolConfig::default());
        e.add_predictions(
            vec![
                prediction("r1", "b", 0.9),
                prediction("r2", "a", 0.2),
                prediction("r3", "b", 0.6),
                prediction("r4", "a", 0.4),
            ],
            false,
        )
        .unwrap();
        let report = e
            .add_labels(
                labels(
                    r#"{"items": [
                    {"request_id": "r1", "label": "b"},
                    {"request_id": "r2", "label": "b"},
                    {"request_id": "r3", "label": "a"},
                    {"request_id": "r1", "label": "b"},
                    {"request_id": "nope", "label": "a"},
                    {"request_id": "r4", "label": ["a"]},
                    {"request_id": "r4", "label": 2.5}
                ]}"#,
                ),
                false,
            )
            .unwrap();
        assert_eq!(
            (
                report.received,
                report.joined,
                report.duplicate,
                report.waiting,
                report.invalid
            ),
            (7, 3, 1, 1, 2),
            "{report:?}"
        );
        assert_eq!(report.errors[0].index, 3);
        assert_eq!(report.errors[0].reason, Reason::Duplicate);
        assert_eq!(report.errors[2].reason, Reason::WrongLabelType);
        e.refresh();
        let snap = e.snapshot.read().unwrap().clone();
        assert_eq!((snap.pending, snap.stored), (1, 4));
        let m = &snap.models[0];
        assert_eq!(m.classes, vec!["a", "b"]);
        assert_eq!(m.positive_class.as_deref(), Some("b"));
        let hour = &m.windows[0];
        assert_eq!(
            (hour.window.as_str(), hour.predictions, hour.labelled),
            ("1h", 4, 3)
        );
        assert_eq!(hour.accuracy, Some(1.0 / 3.0));
        // y_true = [b, b, a], score_b = [0.9, 0.2, 0.6]: AUC = 1/2.
        assert_eq!(hour.roc_auc, Some(0.5));
        let total = m.windows.last().unwrap();
        assert_eq!((total.window.as_str(), total.labelled), ("total", 3));
        assert_eq!(total.accuracy, hour.accuracy);
    }

    #[test]
    fn early_labels_wait_join_once_and_expire() {
        let config = QualityConfig {
            min_samples: 1,
            max_early_labels: 3,
            ..QualityConfig::default()
        };
        let mut e = engine(config, ProtocolConfig::default());
        let report = e
            .add_labels(
                labels(
                    r#"{"items": [
                    {"request_id": "e1", "label": "b"},
                    {"request_id": "e1", "label": "a"},
                    {"request_id": "e2", "label": 2.5},
                    {"request_id": "e3", "label": "a"},
                    {"request_id": "e4", "label": "a"}
                ]}"#,
                ),
                false,
            )
            .unwrap();
        assert_eq!(
            (report.waiting, report.duplicate, report.unmatched),
            (3, 1, 1),
            "the second label for e1 is a duplicate; e4 finds the bound full: {report:?}"
        );
        assert_eq!(e.early, 3);
        // The predictions arrive (e1 twice: the second delivery is ignored).
        e.add_predictions(
            vec![
                prediction("e1", "b", 0.9),
                prediction("e1", "b", 0.9),
                prediction("e2", "a", 0.3),
            ],
            false,
        )
        .unwrap();
        assert_eq!(e.early, 1, "e3 still waits");
        assert_eq!((e.records, e.unlabelled), (2, 1), "e2's label did not fit");
        e.refresh();
        let w = e.snapshot.read().unwrap().models[0].windows[0].clone();
        assert_eq!((w.labelled, w.accuracy), (1, Some(1.0)));
        // A label for e1 now: a duplicate, not joined twice.
        let report = e
            .add_labels(labels(r#"{"request_id": "e1", "label": "a"}"#), false)
            .unwrap();
        assert_eq!(report.duplicate, 1);
        // e3 waits past its time.
        e.config.early_label_ttl = std::time::Duration::from_millis(1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        e.maintain(false).unwrap();
        assert_eq!(e.early, 0);
        e.add_predictions(vec![prediction("e3", "a", 0.1)], false)
            .unwrap();
        assert_eq!(e.unlabelled, 2, "the expired label is gone");
    }

    #[test]
    fn the_union_of_partition_states_gives_the_figures_of_one_store() {
        let config = QualityConfig {
            min_samples: 1,
            ..QualityConfig::default()
        };
        let mut one = engine(config.clone(), ProtocolConfig::default());
        let mut parts = [
            engine(config.clone(), ProtocolConfig::default()),
            engine(config.clone(), ProtocolConfig::default()),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let classes = ["a", "b", "c"];
        for i in 0..300 {
            let id = format!("r{i}");
            let s: Vec<f64> = (0..3).map(|_| rng.f64() + 0.01).collect();
            let sum: f64 = s.iter().sum();
            // Partitions meet the classes in different orders.
            let order: Vec<usize> = if i % 2 == 0 {
                vec![0, 1, 2]
            } else {
                vec![2, 0, 1]
            };
            let p = Prediction {
                key: join_key(&id, 0),
                time_ms: now_ms() - 1000 + i,
                model: "m".into(),
                version: "v1".into(),
                prediction: None,
                scores: order
                    .iter()
                    .map(|&c| (classes[c].to_string(), s[c] / sum))
                    .collect(),
                bins: Vec::new(),
            };
            let label = format!(
                r#"{{"request_id": "{id}", "label": "{}"}}"#,
                classes[rng.usize(0..3)]
            );
            let part = &mut parts[i as usize % 2];
            part.add_predictions(vec![p.clone()], false).unwrap();
            one.add_predictions(vec![p], false).unwrap();
            if i % 5 != 0 {
                part.add_labels(labels(&label), false).unwrap();
                one.add_labels(labels(&label), false).unwrap();
            }
        }
        let mut fleet = engine(config, ProtocolConfig::default());
        let states: Vec<PartitionState> = parts.iter().map(|p| p.export(usize::MAX)).collect();
        fleet.absorb(&states);
        one.refresh();
        fleet.refresh();
        let a = one.snapshot.read().unwrap().models[0].clone();
        let b = fleet.snapshot.read().unwrap().models[0].clone();
        let (wa, wb) = (&a.windows[0], &b.windows[0]);
        assert_eq!((wa.predictions, wa.labelled), (wb.predictions, wb.labelled));
        for (x, y) in [
            (wa.accuracy, wb.accuracy),
            (wa.roc_auc, wb.roc_auc),
            (wa.log_loss, wb.log_loss),
            (wa.macro_avg.map(|p| p.f1), wb.macro_avg.map(|p| p.f1)),
        ] {
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
        let (ta, tb) = (a.windows.last().unwrap(), b.windows.last().unwrap());
        assert_eq!(ta.window, "total");
        assert_eq!((ta.accuracy, ta.labelled), (tb.accuracy, tb.labelled));
        assert_eq!(ta.roc_auc, tb.roc_auc);
        assert_eq!(fleet.unlabelled, one.unlabelled);
    }

    #[test]
    fn too_few_labels_report_no_figures() {
        let mut e = engine(QualityConfig::default(), ProtocolConfig::default());
        e.add_predictions(vec![prediction("r1", "b", 0.9)], false)
            .unwrap();
        e.add_labels(labels(r#"{"request_id": "r1", "label": "b"}"#), false)
            .unwrap();
        e.refresh();
        let snap = e.snapshot.read().unwrap().clone();
        let w = &snap.models[0].windows[0];
        assert_eq!((w.labelled, w.enough_labels), (1, false));
        assert_eq!((w.accuracy, w.roc_auc), (None, None));
    }

    #[test]
    fn the_store_bound_evicts_the_oldest_and_counts_it() {
        let config = QualityConfig {
            max_predictions: 3,
            ..QualityConfig::default()
        };
        let mut e = engine(config, ProtocolConfig::default());
        let batch = (0..5)
            .map(|i| prediction(&format!("r{i}"), "a", 0.1))
            .collect();
        e.add_predictions(batch, false).unwrap();
        assert_eq!((e.records, e.unlabelled), (3, 3));
        let report = e
            .add_labels(
                labels(
                    r#"[{"request_id": "r0", "label": "a"}, {"request_id": "r4", "label": "a"}]"#,
                ),
                false,
            )
            .unwrap();
        assert_eq!(
            (report.waiting, report.joined),
            (1, 1),
            "an evicted prediction's label waits (the prediction may yet come)"
        );
    }

    #[test]
    fn regression_models_take_numbers() {
        let mut e = engine(
            QualityConfig {
                min_samples: 1,
                ..QualityConfig::default()
            },
            ProtocolConfig::default(),
        );
        let p = |id: &str, v: f64| Prediction {
            key: join_key(id, 0),
            time_ms: now_ms(),
            model: "reg".into(),
            version: String::new(),
            prediction: Some(Value::Number(v)),
            scores: Vec::new(),
            bins: Vec::new(),
        };
        e.add_predictions(
            vec![p("a", 2.5), p("b", 0.0), p("c", 2.0), p("d", 8.0)],
            false,
        )
        .unwrap();
        let report = e
            .add_labels(
                labels(
                    "{\"id\":\"a\",\"label\":3}\n{\"id\":\"b\",\"label\":-0.5}\n{\"id\":\"c\",\"label\":2}\n{\"id\":\"d\",\"label\":7}\n{\"id\":\"d\",\"label\":\"x\"}",
                ),
                false,
            )
            .unwrap();
        assert_eq!((report.joined, report.duplicate), (4, 1));
        e.refresh();
        let snap = e.snapshot.read().unwrap().clone();
        let w = &snap.models[0].windows[0];
        let r = w.regression.unwrap();
        assert!((r.mae - 0.5).abs() < 1e-15);
        assert!((r.r2.unwrap() - 0.948_608_137_044_967_9).abs() < 1e-12);
        let t = snap.models[0].windows.last().unwrap().regression.unwrap();
        assert!((t.r2.unwrap() - r.r2.unwrap()).abs() < 1e-12);
    }

    #[test]
    fn a_reset_reference_is_rebuilt_from_the_next_labels() {
        let config = QualityConfig {
            min_samples: 1,
            estimation: crate::config::EstimationConfig {
                enabled: true,
                reference_rows: 2,
            },
            ..QualityConfig::default()
        };
        let mut e = engine(config, ProtocolConfig::default());
        let batch = (0..4)
            .map(|i| prediction(&format!("r{i}"), "b", 0.6))
            .collect();
        e.add_predictions(batch, false).unwrap();
        e.add_labels(
            labels(r#"[{"id": "r0", "label": "b"}, {"id": "r1", "label": "a"}]"#),
            false,
        )
        .unwrap();
        e.refresh();
        assert!(e.snapshot.read().unwrap().models[0].calibrated);
        assert!(e.reset_reference("m", "v1").unwrap());
        assert!(!e.reset_reference("m", "v9").unwrap());
        e.refresh();
        let m = e.snapshot.read().unwrap().models[0].clone();
        assert_eq!((m.calibrated, m.reference_rows), (false, 0));
        e.add_labels(
            labels(r#"[{"id": "r2", "label": "b"}, {"id": "r3", "label": "b"}]"#),
            false,
        )
        .unwrap();
        e.refresh();
        let m = e.snapshot.read().unwrap().models[0].clone();
        assert_eq!((m.calibrated, m.reference_rows), (true, 2));
    }

    #[test]
    fn classes_past_the_cap_fold_into_other() {
        let config = QualityConfig {
            max_classes: 3,
            min_samples: 1,
            ..QualityConfig::default()
        };
        let mut e = engine(config, ProtocolConfig::default());
        let p = |id: &str, class: &str| Prediction {
            key: join_key(id, 0),
            time_ms: now_ms(),
            model: "many".into(),
            version: String::new(),
            prediction: Some(Value::Text(class.into())),
            scores: Vec::new(),
            bins: Vec::new(),
        };
        e.add_predictions(
            vec![p("1", "a"), p("2", "b"), p("3", "c"), p("4", "d")],
            false,
        )
        .unwrap();
        e.add_labels(
            labels(r#"[{"id": "3", "label": "d"}, {"id": "4", "label": "e"}]"#),
            false,
        )
        .unwrap();
        e.refresh();
        let snap = e.snapshot.read().unwrap().clone();
        assert_eq!(snap.models[0].classes, vec!["a", "b", OTHER]);
        // c, d and e are all `other`: both labelled rows count as right.
        assert_eq!(snap.models[0].windows[0].accuracy, Some(1.0));
    }

    #[test]
    fn segments_count_the_reference_period_and_each_window_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = QualityConfig {
            min_samples: 1,
            store_path: dir.path().join("q.redb").display().to_string(),
            estimation: crate::config::EstimationConfig {
                reference_rows: 4,
                ..Default::default()
            },
            ..QualityConfig::default()
        };
        let p = |id: usize, bins: Vec<u8>| Prediction {
            key: join_key(&id.to_string(), 0),
            time_ms: now_ms(),
            model: "m".into(),
            version: "v1".into(),
            prediction: Some(Value::Text("a".into())),
            scores: Vec::new(),
            bins,
        };
        let label = |id: usize, l: &str| format!(r#"{{"id": "{id}", "label": "{l}"}}"#);
        {
            let mut e = engine(config.clone(), ProtocolConfig::default());
            // Six rows: the first four are the reference period.
            let bins = [
                vec![0, 1],
                vec![0, 1],
                vec![1, 1],
                vec![1, 0],
                vec![1, 0],
                vec![1, 0],
            ];
            let preds = bins
                .iter()
                .enumerate()
                .map(|(i, b)| p(i, b.clone()))
                .collect();
            e.add_predictions(preds, false).unwrap();
            let truth = ["a", "a", "b", "a", "b", "b"];
            let body: Vec<String> = truth.iter().enumerate().map(|(i, l)| label(i, l)).collect();
            e.add_labels(labels(&format!("[{}]", body.join(","))), true)
                .unwrap();
            e.refresh();
            let m = e.snapshot.read().unwrap().models[0].clone();
            let r = &m.segment_reference;
            assert_eq!((r.labelled, r.correct), (4, 3));
            assert_eq!((r.bin(0, 0), r.bin(0, 1)), ([2, 2], [2, 1]));
            assert_eq!((r.bin(1, 0), r.bin(1, 1)), ([1, 1], [3, 2]));
            let w = &m.windows[0].segments;
            assert_eq!((w.labelled, w.correct), (6, 3));
            assert_eq!(w.bin(0, 1), [4, 1]);
            e.close().unwrap();
        }
        let mut e = engine(config, ProtocolConfig::default());
        e.refresh();
        let m = e.snapshot.read().unwrap().models[0].clone();
        assert_eq!(
            m.segment_reference.bin(0, 1),
            [2, 1],
            "the reference is kept"
        );
        assert_eq!(
            m.windows[0].segments.bin(0, 1),
            [4, 1],
            "bins are stored with predictions"
        );
    }

    #[test]
    fn segments_of_the_reference_start_with_the_first_predictions_that_have_bins() {
        // A live drift reference: the first predictions come before any bins.
        let config = QualityConfig {
            min_samples: 1,
            estimation: crate::config::EstimationConfig {
                reference_rows: 2,
                ..Default::default()
            },
            ..QualityConfig::default()
        };
        let mut e = engine(config, ProtocolConfig::default());
        let bins = [vec![], vec![], vec![], vec![1], vec![0], vec![1]];
        let preds = bins
            .iter()
            .enumerate()
            .map(|(i, b)| Prediction {
                key: join_key(&i.to_string(), 0),
                time_ms: now_ms(),
                model: "m".into(),
                version: "v1".into(),
                prediction: Some(Value::Text("a".into())),
                scores: Vec::new(),
                bins: b.clone(),
            })
            .collect();
        e.add_predictions(preds, false).unwrap();
        let body: Vec<String> = (0..6)
            .map(|i| {
                format!(
                    r#"{{"id": "{i}", "label": "{}"}}"#,
                    if i == 3 { "b" } else { "a" }
                )
            })
            .collect();
        e.add_labels(labels(&format!("[{}]", body.join(","))), false)
            .unwrap();
        e.refresh();
        let r = e.snapshot.read().unwrap().models[0]
            .segment_reference
            .clone();
        assert_eq!((r.labelled, r.correct, r.binned), (2, 2, 2));
        assert_eq!((r.bin(0, 0), r.bin(0, 1)), ([1, 1], [1, 0]));
    }
}
