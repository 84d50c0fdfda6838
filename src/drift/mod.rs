//! Drift and data quality: each model's features (and its predictions, and
//! for LLMs prompt and completion lengths, token counts and finish reasons)
//! are compared with a reference profile. Runs on the analysis thread: a
//! value costs a ring-buffer push, a bin lookup and a few counters; the
//! statistics are computed every `drift.refresh_interval`.

pub mod profile;
pub mod segments;
pub mod sketch;
pub mod stats;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;
use serde::Serialize;

use crate::analysis::Analyzer;
use crate::config::{DriftConfig, DriftMethod};
use crate::protocol::{Inference, Operation, Value};
use crate::sample::Sample;
use crate::telemetry::names::{self, attr};
use profile::{BuildOptions, Builder, Cell, FeatureProfile, Kind, Profile};

/// Data-quality issues, a bounded set (the `issue` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Issue {
    Missing,
    NonFinite,
    WrongType,
    OutOfRange,
    NewCategory,
    NotInProfile,
}

impl Issue {
    pub fn as_str(self) -> &'static str {
        match self {
            Issue::Missing => "missing",
            Issue::NonFinite => "non_finite",
            Issue::WrongType => "wrong_type",
            Issue::OutOfRange => "out_of_range",
            Issue::NewCategory => "new_category",
            Issue::NotInProfile => "not_in_profile",
        }
    }
}

/// Part of a sketch-mode window.
#[derive(Debug)]
struct Pane {
    sketch: sketch::Scaled,
    count: usize,
    bins: Vec<u32>,
}

/// The current window of one feature.
#[derive(Debug)]
struct Window {
    reference: FeatureProfile,
    /// Numeric: the reference's median and 1.4826 × MAD (for outlier scores).
    median: f64,
    scaled_mad: f64,
    /// Numeric values, newest last (at most `drift.window`).
    values: VecDeque<f64>,
    /// Sketch mode: numeric values as panes (newest last), each a sketch with
    /// its count and its exact counts per reference bin; with the most panes
    /// and the most values a pane takes.
    panes: Option<(VecDeque<Pane>, usize, usize)>,
    /// Categorical: bin index per value (categories of the reference, then `other`).
    cats: VecDeque<u16>,
    /// Values seen per reference bin, since start (exported as counters).
    bins: Vec<u64>,
    issues: BTreeMap<Issue, u64>,
    /// Issues of the value being added (a bit per `Issue`).
    flags: u8,
    /// The issue bits of the last `drift.window` values, newest last.
    recent: VecDeque<u8>,
    /// Values added since start.
    seen: u64,
}

impl Window {
    /// `panes`: sketch mode with (number of panes, values per pane).
    fn new(reference: FeatureProfile, panes: Option<(usize, usize)>) -> Window {
        let n = reference.bin_counts.len();
        let mut sample = reference.sample.clone();
        let median = crate::anomaly::median(&mut sample);
        let mut dev: Vec<f64> = sample.iter().map(|x| (x - median).abs()).collect();
        let scaled_mad = crate::anomaly::median(&mut dev) * 1.4826;
        Window {
            median,
            scaled_mad,
            panes: panes
                .filter(|_| reference.kind == Kind::Numeric)
                .map(|(n, per)| (VecDeque::new(), n, per.max(1))),
            reference,
            values: VecDeque::new(),
            cats: VecDeque::new(),
            bins: vec![0; n],
            issues: BTreeMap::new(),
            flags: 0,
            recent: VecDeque::new(),
            seen: 0,
        }
    }

    fn issue(&mut self, i: Issue) {
        *self.issues.entry(i).or_default() += 1;
        self.flags |= 1 << i as u8;
    }

    /// Ends one value (or its absence): its issues join the recent ones.
    fn commit(&mut self, cap: usize) {
        if self.recent.len() >= cap.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back(std::mem::take(&mut self.flags));
        self.seen += 1;
    }

    /// A value the record did not carry.
    fn missing(&mut self, cap: usize) {
        self.issue(Issue::Missing);
        self.commit(cap);
    }

    /// The issue counts: since start, in the recent values, and the share before them.
    fn issue_counts(&self, feature: &str) -> Vec<IssueCount> {
        let rows = self.recent.len() as u64;
        self.issues
            .iter()
            .map(|(issue, count)| {
                let bit = 1u8 << *issue as u8;
                let window_count = self.recent.iter().filter(|f| *f & bit != 0).count() as u64;
                let earlier_rows = self.seen - rows;
                IssueCount {
                    feature: feature.to_string(),
                    issue: *issue,
                    count: *count,
                    window_count,
                    window_rows: rows,
                    earlier_rate: (earlier_rows > 0)
                        .then(|| (count - window_count) as f64 / earlier_rows as f64),
                }
            })
            .collect()
    }

    /// Adds a value; returns its robust z-distance from the reference
    /// median (numeric features with a spread only).
    fn push(&mut self, v: &Value, cap: usize) -> Option<f64> {
        let z = self.push_value(v, cap);
        self.commit(cap);
        z
    }

    fn push_value(&mut self, v: &Value, cap: usize) -> Option<f64> {
        match (self.reference.kind, v) {
            (_, Value::Missing) => {
                self.issue(Issue::Missing);
                None
            }
            (Kind::Numeric, Value::Number(_) | Value::Bool(_)) => {
                let x = v.as_f64().unwrap_or(f64::NAN);
                if !x.is_finite() {
                    self.issue(Issue::NonFinite);
                    return None;
                }
                if self.reference.min.is_some_and(|m| x < m)
                    || self.reference.max.is_some_and(|m| x > m)
                {
                    self.issue(Issue::OutOfRange);
                }
                let bin = stats::bin_of(x, &self.reference.edges);
                self.bins[bin] += 1;
                if let Some((panes, max_panes, per)) = &mut self.panes {
                    if panes.back().is_none_or(|p| p.count >= *per) {
                        if panes.len() == *max_panes {
                            panes.pop_front();
                        }
                        panes.push_back(Pane {
                            sketch: sketch::Scaled::new(self.median, self.scaled_mad),
                            count: 0,
                            bins: vec![0; self.bins.len()],
                        });
                    }
                    let p = panes.back_mut().expect("just pushed");
                    p.sketch.add(x);
                    p.count += 1;
                    p.bins[bin] += 1;
                } else {
                    if self.values.len() == cap {
                        self.values.pop_front();
                    }
                    self.values.push_back(x);
                }
                (self.scaled_mad > 0.0).then(|| (x - self.median).abs() / self.scaled_mad)
            }
            (Kind::Numeric, _) => {
                self.issue(Issue::WrongType);
                None
            }
            (Kind::Categorical, v) => {
                let name = match v {
                    Value::Text(s) => std::borrow::Cow::Borrowed(s.as_str()),
                    Value::Bool(b) => std::borrow::Cow::Borrowed(if *b { "true" } else { "false" }),
                    Value::Number(x) if x.is_finite() => {
                        std::borrow::Cow::Owned(profile::format_number(*x))
                    }
                    _ => {
                        self.issue(Issue::NonFinite);
                        return None;
                    }
                };
                let bin = match self.reference.categories.iter().position(|c| *c == name) {
                    Some(i) => i,
                    None => {
                        self.issue(Issue::NewCategory);
                        self.reference.categories.len()
                    }
                };
                self.bins[bin] += 1;
                if self.cats.len() == cap {
                    self.cats.pop_front();
                }
                self.cats.push_back(bin as u16);
                None
            }
        }
    }

    fn len(&self) -> usize {
        let in_panes: usize = self
            .panes
            .as_ref()
            .map(|(p, _, _)| p.iter().map(|p| p.count).sum())
            .unwrap_or(0);
        self.values.len() + self.cats.len() + in_panes
    }

    /// Values mode: the window's values, sorted.
    fn sorted_values(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.values.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Sketch mode: the window as one sketch.
    fn merged(&self) -> Option<sketch::Scaled> {
        let (panes, _, _) = self.panes.as_ref()?;
        let mut all = sketch::Scaled::new(self.median, self.scaled_mad);
        for p in panes {
            all.merge(&p.sketch);
        }
        Some(all)
    }

    /// Counts per reference bin over the current window.
    fn window_counts(&self) -> Vec<f64> {
        match self.reference.kind {
            Kind::Numeric if self.panes.is_some() => {
                let mut c = vec![0.0; self.bins.len()];
                for p in self.panes.iter().flat_map(|(p, _, _)| p) {
                    for (i, n) in p.bins.iter().enumerate() {
                        c[i] += *n as f64;
                    }
                }
                c
            }
            Kind::Numeric => {
                let v: Vec<f64> = self.values.iter().copied().collect();
                stats::bin_counts(&v, &self.reference.edges)
            }
            Kind::Categorical => {
                let mut c = vec![0.0; self.reference.bin_counts.len()];
                for b in &self.cats {
                    c[*b as usize] += 1.0;
                }
                c
            }
        }
    }
}

/// One feature's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub kind: Kind,
    pub method: &'static str,
    /// The verdict's figure: a p-value for `ks` and `chi2`, a distance otherwise.
    pub score: f64,
    /// The test statistic: KS's D, the chi-squared statistic, or the
    /// distance (then equal to `score`). Ranks features whose p-values are
    /// all tiny.
    pub statistic: f64,
    pub threshold: f64,
    pub drifted: bool,
    pub window: usize,
    pub reference: usize,
}

/// One model's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelDrift {
    pub model: String,
    /// Empty when the protocol, the header and the config name no version.
    pub model_version: String,
    /// `profile` (a file) or `live` (the first records); `building` while the
    /// live reference fills.
    pub reference: &'static str,
    pub features: Vec<FeatureDrift>,
    /// Share of tested features that drifted (p-value tests corrected across features).
    pub share: f64,
    pub dataset_drift: bool,
    /// The features that drifted, by the dataset verdict.
    pub drifted_features: Vec<String>,
    /// Features whose whole current window holds one value while the
    /// reference varied (a stuck sensor, a default filled in upstream).
    pub constant_features: Vec<String>,
    pub issues: Vec<IssueCount>,
    #[serde(skip)]
    pub bins: Vec<(String, Vec<u64>, Vec<f64>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IssueCount {
    pub feature: String,
    pub issue: Issue,
    /// Since start.
    pub count: u64,
    /// Among the feature's last `window_rows` values (at most `drift.window`).
    pub window_count: u64,
    pub window_rows: u64,
    /// The share of values with the issue before those (None before the
    /// first window has passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earlier_rate: Option<f64>,
}

/// What the gauges and `/v1/status` read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DriftSnapshot {
    pub models: Vec<ModelDrift>,
    pub features_dropped: u64,
}

enum Reference {
    Profile,
    Building(Builder),
    Live,
}

struct ModelState {
    reference: Reference,
    profile: Option<Profile>,
    windows: HashMap<String, Window>,
    not_in_profile: BTreeMap<String, u64>,
}

/// The drift analyzer (one per process).
pub struct DriftAnalyzer {
    config: DriftConfig,
    profiles: HashMap<String, Profile>,
    /// By (model, model version): every version of a model is compared with
    /// the model's one reference.
    models: HashMap<(String, String), ModelState>,
    pub snapshot: Arc<RwLock<DriftSnapshot>>,
    last_refresh: Instant,
    /// Values arrived since the last refresh.
    dirty: bool,
    /// Per-request outlier scores: where to record them, and the threshold.
    outliers: Option<(crate::telemetry::Instruments, f64)>,
    /// Where finished live references go to be saved.
    saver: Option<ReferenceSaver>,
    features_dropped: u64,
    /// Drift events (`modelwatch.drift`) when a model's drifted features change.
    logger: Option<opentelemetry_sdk::logs::SdkLogger>,
    /// Each model's reference bins, for the quality store's segments.
    pub layouts: segments::Layouts,
}

/// The file of a model's live reference in `drift.reference_dir`: the model
/// name with every byte outside `[A-Za-z0-9._-]` written as `%XX`.
pub fn live_reference_file(dir: &std::path::Path, model: &str) -> std::path::PathBuf {
    let mut name = String::new();
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    dir.join(format!("{name}.profile.json"))
}

fn model_of_file(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".profile.json")?;
    let bytes = stem.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            out.push(u8::from_str_radix(stem.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where finished live references are handed over to be saved.
pub type ReferenceSaver = std::sync::mpsc::SyncSender<(String, Profile)>;

/// Writes live references handed over by the analysis thread (on a thread of
/// its own: the analysis thread does no I/O). Ends when the sender is dropped.
pub fn spawn_reference_writer(
    dir: std::path::PathBuf,
) -> std::io::Result<(ReferenceSaver, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<(String, Profile)>(64);
    let thread = std::thread::Builder::new()
        .name("modelwatch-references".into())
        .spawn(move || {
            for (model, profile) in rx {
                let path = live_reference_file(&dir, &model);
                let tmp = path.with_extension("json.tmp");
                let written = serde_json::to_vec(&profile)
                    .map_err(std::io::Error::other)
                    .and_then(|bytes| std::fs::write(&tmp, bytes))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                match written {
                    Ok(()) => tracing::info!(%model, path = %path.display(), "live drift reference saved"),
                    Err(e) => tracing::warn!(%model, path = %path.display(), error = %e, "cannot save the live drift reference"),
                }
            }
        })?;
    Ok((tx, thread))
}

/// Loads the configured profiles, then saved live references for models
/// without one (at start, so that a bad file stops it there).
pub fn load_profiles(
    config: &DriftConfig,
) -> Result<HashMap<String, Profile>, profile::ProfileError> {
    let mut out = HashMap::new();
    if !config.reference_dir.is_empty() {
        let dir = std::path::Path::new(&config.reference_dir);
        std::fs::create_dir_all(dir).map_err(|source| profile::ProfileError::Read {
            path: config.reference_dir.clone(),
            source,
        })?;
        let entries = std::fs::read_dir(dir).map_err(|source| profile::ProfileError::Read {
            path: config.reference_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(model) = model_of_file(&name) {
                out.insert(model, Profile::load(&entry.path())?);
            }
        }
    }
    for (model, path) in &config.profiles {
        out.insert(model.clone(), Profile::load(std::path::Path::new(path))?);
    }
    Ok(out)
}

impl DriftAnalyzer {
    pub fn new(config: DriftConfig, profiles: HashMap<String, Profile>) -> DriftAnalyzer {
        let layouts = segments::Layouts::default();
        {
            let mut l = layouts.write().expect("poisoned");
            for (model, p) in &profiles {
                l.insert(
                    model.clone(),
                    Arc::new(segments::Layout::from_profile(p, config.max_features)),
                );
            }
        }
        DriftAnalyzer {
            layouts,
            config,
            profiles,
            models: HashMap::new(),
            snapshot: Arc::new(RwLock::new(DriftSnapshot::default())),
            last_refresh: Instant::now(),
            dirty: false,
            outliers: None,
            saver: None,
            features_dropped: 0,
            logger: None,
        }
    }

    /// Emits a `modelwatch.drift` event when a model version's set of
    /// drifted features changes.
    pub fn with_logger(mut self, logger: Option<opentelemetry_sdk::logs::SdkLogger>) -> Self {
        self.logger = logger;
        self
    }

    fn drift_events(&self, before: &DriftSnapshot, after: &[ModelDrift]) {
        use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
        let Some(logger) = &self.logger else { return };
        for m in after {
            let old: Vec<&String> = before
                .models
                .iter()
                .find(|o| o.model == m.model && o.model_version == m.model_version)
                .map(|o| o.drifted_features.iter().collect())
                .unwrap_or_default();
            let started: Vec<&String> = m
                .drifted_features
                .iter()
                .filter(|f| !old.contains(f))
                .collect();
            let stopped: Vec<&String> = old
                .iter()
                .copied()
                .filter(|f| !m.drifted_features.contains(f))
                .collect();
            if started.is_empty() && stopped.is_empty() {
                continue;
            }
            let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            let mut log = logger.create_log_record();
            log.set_event_name("modelwatch.drift");
            let (severity, text) = if started.is_empty() {
                (Severity::Info, "INFO")
            } else {
                (Severity::Warn, "WARN")
            };
            log.set_severity_number(severity);
            log.set_severity_text(text);
            log.set_timestamp(std::time::SystemTime::now());
            log.set_body(AnyValue::String(
                format!(
                    "drift in {} {}: {} of {} features drifted (share {:.2}){}{}",
                    m.model,
                    m.model_version,
                    m.drifted_features.len(),
                    m.features.len(),
                    m.share,
                    if started.is_empty() {
                        String::new()
                    } else {
                        format!("; started: {}", list(&started))
                    },
                    if stopped.is_empty() {
                        String::new()
                    } else {
                        format!("; stopped: {}", list(&stopped))
                    },
                )
                .into(),
            ));
            log.add_attribute("modelwatch.model", m.model.clone());
            log.add_attribute("modelwatch.model_version", m.model_version.clone());
            log.add_attribute("modelwatch.drift.share", m.share);
            log.add_attribute("modelwatch.drift.dataset", m.dataset_drift);
            log.add_attribute(
                "modelwatch.drift.features",
                list(&m.drifted_features.iter().collect::<Vec<_>>()),
            );
            log.add_attribute("modelwatch.drift.started", list(&started));
            log.add_attribute("modelwatch.drift.stopped", list(&stopped));
            logger.emit(log);
        }
    }

    /// Records each row's outlier score (`modelwatch.anomaly.outlier_score`)
    /// and counts rows at or above `threshold`.
    pub fn with_outliers(
        mut self,
        instruments: crate::telemetry::Instruments,
        threshold: f64,
    ) -> Self {
        self.outliers = Some((instruments, threshold));
        self
    }

    /// Hands each finished live reference to `saver` (see [`spawn_reference_writer`]).
    pub fn with_saver(mut self, saver: ReferenceSaver) -> Self {
        self.saver = Some(saver);
        self
    }

    /// The values a record adds to its features: its prediction, and for
    /// LLM requests lengths, token counts and the finish reason.
    fn extra_values(r: &Inference) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        match r.operation {
            Operation::Chat | Operation::TextCompletion => {
                let len = |s: &Option<String>| {
                    s.as_ref().map(|t| Value::Number(t.chars().count() as f64))
                };
                if let Some(v) = len(&r.input_text) {
                    out.push(("llm.prompt_chars".into(), v));
                }
                if let Some(v) = len(&r.output_text) {
                    out.push(("llm.completion_chars".into(), v));
                }
                if let Some(u) = r.usage {
                    if let Some(n) = u.input {
                        out.push(("llm.input_tokens".into(), Value::Number(n as f64)));
                    }
                    if let Some(n) = u.output {
                        out.push(("llm.output_tokens".into(), Value::Number(n as f64)));
                    }
                }
                if let Some(f) = r.finish_reasons.first() {
                    out.push(("llm.finish_reason".into(), Value::Text(f.clone())));
                }
            }
            Operation::Embeddings => {}
            _ => {
                if let Some(p) = &r.prediction {
                    out.push(("prediction".into(), p.clone()));
                }
            }
        }
        out
    }

    fn record(&mut self, r: &Inference) {
        let model = crate::protocol::model_label(r.model.as_deref());
        let key = (
            model.to_string(),
            r.model_version.clone().unwrap_or_default(),
        );
        if !self.models.contains_key(&key) {
            if self.models.len() >= self.config.max_models {
                self.features_dropped += 1;
                return;
            }
            // Another version of the model that holds or builds the reference.
            let sibling = self
                .models
                .iter()
                .filter(|((m, _), _)| m == model)
                .map(|(_, s)| s)
                .find(|s| s.profile.is_some() || matches!(s.reference, Reference::Building(_)));
            let state = match (self.profiles.get(model), sibling) {
                (Some(p), _) => ModelState {
                    reference: Reference::Profile,
                    windows: p
                        .features
                        .iter()
                        .take(self.config.max_features)
                        .map(|f| (f.name.clone(), window_for(&self.config, model, f)))
                        .collect(),
                    profile: Some(p.clone()),
                    not_in_profile: BTreeMap::new(),
                },
                // The live reference taken from the first version's traffic serves every version.
                (None, Some(s)) if s.profile.is_some() => {
                    let p = s.profile.clone().expect("checked");
                    ModelState {
                        reference: Reference::Live,
                        windows: p
                            .features
                            .iter()
                            .map(|f| (f.name.clone(), window_for(&self.config, model, f)))
                            .collect(),
                        profile: Some(p),
                        not_in_profile: BTreeMap::new(),
                    }
                }
                // Still building from another version's traffic: wait for it.
                (None, Some(_)) => return,
                (None, None) if self.config.live_reference_rows > 0 => ModelState {
                    reference: Reference::Building(Builder::new(BuildOptions {
                        sample_size: self.config.live_reference_rows,
                        ..BuildOptions::default()
                    })),
                    profile: None,
                    windows: HashMap::new(),
                    not_in_profile: BTreeMap::new(),
                },
                (None, None) => return,
            };
            self.models.insert(key.clone(), state);
        }
        let cap = self.config.window;
        let max_features = self.config.max_features;
        let live_rows = self.config.live_reference_rows as u64;
        let extra = Self::extra_values(r);
        let values = || r.features.iter().chain(extra.iter());
        let state = self.models.get_mut(&key).expect("inserted");
        if let Reference::Building(b) = &mut state.reference {
            for (name, v) in values().take(max_features) {
                let cell = match v {
                    Value::Number(x) => Cell::Number(*x),
                    Value::Bool(x) => Cell::Text(if *x { "true" } else { "false" }),
                    Value::Text(s) => {
                        let mut end = s.len().min(256);
                        while !s.is_char_boundary(end) {
                            end -= 1;
                        }
                        Cell::Text(&s[..end])
                    }
                    Value::Missing => Cell::Missing,
                };
                b.add(name, cell);
            }
            b.end_row();
            if b.rows() >= live_rows {
                let Reference::Building(b) =
                    std::mem::replace(&mut state.reference, Reference::Live)
                else {
                    unreachable!()
                };
                let p = b.finish();
                state.windows = p
                    .features
                    .iter()
                    .map(|f| (f.name.clone(), window_for(&self.config, model, f)))
                    .collect();
                if let Some(saver) = &self.saver {
                    let _ = saver.try_send((model.to_string(), p.clone()));
                }
                self.layouts.write().expect("poisoned").insert(
                    model.to_string(),
                    Arc::new(segments::Layout::from_profile(&p, max_features)),
                );
                state.profile = Some(p);
                tracing::info!(%model, rows = live_rows, "drift reference taken from live traffic");
            }
            return;
        }
        let mut seen = 0usize;
        let mut outlier: Option<f64> = None;
        let inputs = r.features.len();
        for (i, (name, v)) in values().enumerate() {
            match state.windows.get_mut(name) {
                Some(w) => {
                    if let Some(z) = w.push(v, cap) {
                        outlier = Some(outlier.map_or(z, |o| o.max(z)));
                    }
                    seen += 1;
                }
                // The model's own output (the prediction, LLM lengths and
                // tokens) missing from a profile built from training data is
                // no data-quality problem: it is simply not compared.
                None if i >= inputs => {}
                None => {
                    if state.not_in_profile.len() < max_features
                        || state.not_in_profile.contains_key(name)
                    {
                        *state.not_in_profile.entry(name.clone()).or_default() += 1;
                    } else {
                        self.features_dropped += 1;
                    }
                }
            }
        }
        if let (Some(z), Some((instruments, threshold))) = (outlier, &self.outliers) {
            let attrs = [KeyValue::new(attr::MODEL, model.to_string())];
            instruments.outlier_score.record(z, &attrs);
            if z >= *threshold {
                instruments.outliers.add(1, &attrs);
            }
        }
        // Reference features this record did not carry at all.
        if seen < state.windows.len() {
            for (name, w) in state.windows.iter_mut() {
                if name != "prediction"
                    && !name.starts_with("llm.")
                    && !values().any(|(n, _)| n == name)
                {
                    w.missing(cap);
                }
            }
        }
    }

    /// Computes every model's statistics.
    pub fn refresh(&mut self) {
        let c = &self.config;
        let mut models = Vec::new();
        for ((name, version), state) in &self.models {
            let mut m = ModelDrift {
                model: name.clone(),
                model_version: version.clone(),
                reference: match state.reference {
                    Reference::Profile => "profile",
                    Reference::Live => "live",
                    Reference::Building(_) => "building",
                },
                ..ModelDrift::default()
            };
            let mut pvalues = Vec::new();
            let mut names: Vec<&String> = state.windows.keys().collect();
            names.sort();
            for feature in names {
                let w = &state.windows[feature];
                m.issues.extend(w.issue_counts(feature));
                let ref_shares: Vec<f64> =
                    stats::shares(&w.reference.bin_counts).unwrap_or_default();
                m.bins.push((feature.clone(), w.bins.clone(), ref_shares));
                if w.len() < c.min_samples {
                    continue;
                }
                // A feature stuck at one value while the reference varied.
                let constant = match w.reference.kind {
                    Kind::Numeric if w.panes.is_some() => {
                        let m = w.merged().unwrap_or_default();
                        m.sketch.quantile(0.0) == m.sketch.quantile(1.0)
                            && w.reference.sample.first() != w.reference.sample.last()
                    }
                    Kind::Numeric => {
                        w.values.iter().all(|v| *v == w.values[0])
                            && w.reference.sample.first() != w.reference.sample.last()
                    }
                    Kind::Categorical => {
                        w.cats.iter().all(|v| *v == w.cats[0])
                            && w.reference.bin_counts.iter().filter(|n| **n > 0.0).count() > 1
                    }
                };
                if constant {
                    m.constant_features.push(feature.clone());
                }
                if let Some(d) = feature_drift(c, feature, w) {
                    if d.method == "ks" || d.method == "chi2" {
                        pvalues.push((m.features.len(), d.score));
                    }
                    m.features.push(d);
                }
            }
            for (feature, count) in &state.not_in_profile {
                m.issues.push(IssueCount {
                    feature: feature.clone(),
                    issue: Issue::NotInProfile,
                    count: *count,
                    window_count: 0,
                    window_rows: 0,
                    earlier_rate: None,
                });
            }
            // Dataset verdict: p-value tests corrected across features.
            let p: Vec<f64> = pvalues.iter().map(|(_, p)| *p).collect();
            let corrected = stats::significant(&p, c.p_value_threshold, c.correction);
            let mut drifted = m.features.iter().map(|f| f.drifted).collect::<Vec<bool>>();
            for ((i, _), sig) in pvalues.iter().zip(corrected) {
                drifted[*i] = sig;
            }
            if !m.features.is_empty() {
                m.share = drifted.iter().filter(|d| **d).count() as f64 / m.features.len() as f64;
                m.dataset_drift = m.share >= c.dataset_share;
                m.drifted_features = m
                    .features
                    .iter()
                    .zip(&drifted)
                    .filter(|(_, d)| **d)
                    .map(|(f, _)| f.feature.clone())
                    .collect();
            }
            models.push(m);
        }
        for m in &mut models {
            m.issues
                .sort_by(|a, b| (&a.feature, a.issue).cmp(&(&b.feature, b.issue)));
            m.bins.sort_by(|a, b| a.0.cmp(&b.0));
        }
        models.sort_by(|a, b| (&a.model, &a.model_version).cmp(&(&b.model, &b.model_version)));
        if self.logger.is_some() {
            let before = self.snapshot.read().expect("poisoned");
            self.drift_events(&before, &models);
        }
        *self.snapshot.write().expect("poisoned") = DriftSnapshot {
            models,
            features_dropped: self.features_dropped,
        };
    }
}

/// A feature's window; a configured range replaces the reference's for
/// `out_of_range`.
fn window_for(config: &DriftConfig, model: &str, f: &FeatureProfile) -> Window {
    let mut f = f.clone();
    if let Some([lo, hi]) = config.ranges.get(model).and_then(|m| m.get(&f.name)) {
        f.min = Some(*lo);
        f.max = Some(*hi);
    }
    let panes = (config.window_mode == crate::config::WindowMode::Sketch).then(|| {
        (
            config.sketch_panes,
            config.window.div_ceil(config.sketch_panes),
        )
    });
    Window::new(f, panes)
}

/// The statistic for one feature, by kind and reference size (Evidently's
/// defaults) unless configured.
fn feature_drift(c: &DriftConfig, feature: &str, w: &Window) -> Option<FeatureDrift> {
    let r = &w.reference;
    let reference_n = r.bin_counts.iter().sum::<f64>() as usize;
    let method = match (r.kind, c.numeric_method, c.categorical_method) {
        (Kind::Numeric, DriftMethod::Auto, _) => {
            if reference_n <= c.large_sample {
                DriftMethod::Ks
            } else {
                DriftMethod::Wasserstein
            }
        }
        (Kind::Categorical, _, DriftMethod::Auto) => {
            if reference_n <= c.large_sample {
                DriftMethod::Chi2
            } else {
                DriftMethod::Jensenshannon
            }
        }
        (Kind::Numeric, m, _) => m,
        (Kind::Categorical, _, m) => m,
    };
    let counts = w.window_counts();
    let mut statistic = None;
    let (score, threshold, drifted) = match method {
        DriftMethod::Ks => {
            let d = match w.merged() {
                Some(s) => sketch::ks(&r.sample, &s)?,
                None => stats::ks_statistic(&r.sample, &w.sorted_values())?,
            };
            statistic = Some(d);
            let p = stats::ks_pvalue(d, r.sample.len(), w.len());
            (p, c.p_value_threshold, p < c.p_value_threshold)
        }
        DriftMethod::Chi2 => {
            let (x2, p) = stats::chi_squared(&r.bin_counts, &counts)?;
            statistic = Some(x2);
            (p, c.p_value_threshold, p < c.p_value_threshold)
        }
        DriftMethod::Wasserstein => {
            let d = match w.merged() {
                Some(s) => {
                    let sd = stats::std_dev(&r.sample).filter(|sd| *sd > 0.0)?;
                    sketch::wasserstein(&r.sample, &s)? / sd
                }
                None => stats::wasserstein_normed(&r.sample, &w.sorted_values())?,
            };
            (d, c.distance_threshold, d >= c.distance_threshold)
        }
        DriftMethod::Psi => {
            let d = stats::psi(&r.bin_counts, &counts)?;
            (d, c.distance_threshold, d >= c.distance_threshold)
        }
        DriftMethod::Jensenshannon => {
            let d = stats::jensen_shannon(&r.bin_counts, &counts)?;
            (d, c.distance_threshold, d >= c.distance_threshold)
        }
        DriftMethod::Hellinger => {
            let d = stats::hellinger(&r.bin_counts, &counts)?;
            (d, c.distance_threshold, d >= c.distance_threshold)
        }
        DriftMethod::Auto => return None,
    };
    if !score.is_finite() {
        return None;
    }
    Some(FeatureDrift {
        feature: feature.to_string(),
        kind: r.kind,
        method: method.as_str(),
        score,
        statistic: statistic.unwrap_or(score),
        threshold,
        drifted,
        window: w.len(),
        reference: reference_n,
    })
}

impl Analyzer for DriftAnalyzer {
    fn name(&self) -> &'static str {
        "drift"
    }

    /// Thresholds, methods and ranges apply from the next refresh. A model
    /// whose profile changed (added, removed or edited) starts afresh: its
    /// windows are dropped and filled against the new reference.
    fn reconfigure(&mut self, update: &crate::analysis::Update) {
        self.config = update.config.drift.clone();
        let models: std::collections::BTreeSet<String> = self
            .profiles
            .keys()
            .chain(update.drift_profiles.keys())
            .cloned()
            .collect();
        for model in models {
            let new = update.drift_profiles.get(&model);
            if self.profiles.get(&model) == new {
                continue;
            }
            // A live reference saved to `reference_dir` since the start comes
            // back as a file: the state already holds it.
            self.models
                .retain(|(m, _), s| *m != model || (new.is_some() && s.profile.as_ref() == new));
            let mut layouts = self.layouts.write().expect("poisoned");
            match new {
                Some(p) => layouts.insert(
                    model.clone(),
                    Arc::new(segments::Layout::from_profile(p, self.config.max_features)),
                ),
                None => layouts.remove(&model),
            };
            drop(layouts);
            tracing::info!(%model, profile = new.is_some(), "drift reference changed by a reload");
        }
        self.profiles = update.drift_profiles.clone();
        self.dirty = true;
    }

    fn analyze(&mut self, _sample: &Sample, records: &[Inference]) {
        for r in records {
            self.record(r);
            self.dirty = true;
        }
        if self.dirty && self.last_refresh.elapsed() >= self.config.refresh_interval {
            self.tick();
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        self.dirty
            .then(|| self.last_refresh + self.config.refresh_interval)
    }

    fn tick(&mut self) {
        self.refresh();
        self.last_refresh = Instant::now();
        self.dirty = false;
    }
}

/// The drift gauges and counters, read from the snapshot at each collection.
pub fn register_instruments(meter: &Meter, snapshot: Arc<RwLock<DriftSnapshot>>) {
    use names::*;
    let s = snapshot.clone();
    crate::telemetry::f64_gauge(meter, DRIFT_SCORE, move |o| {
        for m in &s.read().expect("poisoned").models {
            for f in &m.features {
                o.observe(f.score, &feature_attrs(m, &f.feature, Some(f.method)));
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::f64_gauge(meter, DRIFT_STATISTIC, move |o| {
        for m in &s.read().expect("poisoned").models {
            for f in &m.features {
                o.observe(f.statistic, &feature_attrs(m, &f.feature, Some(f.method)));
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::f64_gauge(meter, DRIFT_THRESHOLD, move |o| {
        for m in &s.read().expect("poisoned").models {
            for f in &m.features {
                o.observe(f.threshold, &feature_attrs(m, &f.feature, Some(f.method)));
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::u64_gauge(meter, DRIFT_DETECTED, move |o| {
        for m in &s.read().expect("poisoned").models {
            for f in &m.features {
                o.observe(f.drifted as u64, &feature_attrs(m, &f.feature, None));
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::f64_gauge(meter, DRIFT_SHARE, move |o| {
        for m in &s.read().expect("poisoned").models {
            if !m.features.is_empty() {
                o.observe(m.share, &model_attrs(m));
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::u64_gauge(meter, DRIFT_DATASET, move |o| {
        for m in &s.read().expect("poisoned").models {
            if !m.features.is_empty() {
                o.observe(m.dataset_drift as u64, &model_attrs(m));
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::u64_counter(meter, DRIFT_BIN, move |o| {
        for m in &s.read().expect("poisoned").models {
            for (feature, bins, _) in &m.bins {
                for (i, n) in bins.iter().enumerate() {
                    let mut a = feature_attrs(m, feature, None);
                    a.push(KeyValue::new(attr::BIN, i as i64));
                    o.observe(*n, &a);
                }
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::f64_gauge(meter, DRIFT_REFERENCE_SHARE, move |o| {
        for m in &s.read().expect("poisoned").models {
            for (feature, _, shares) in &m.bins {
                for (i, v) in shares.iter().enumerate() {
                    let mut a = feature_attrs(m, feature, None);
                    a.push(KeyValue::new(attr::BIN, i as i64));
                    o.observe(*v, &a);
                }
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::u64_gauge(meter, DATA_QUALITY_CONSTANT, move |o| {
        for m in &s.read().expect("poisoned").models {
            for f in &m.features {
                let stuck = m.constant_features.contains(&f.feature);
                o.observe(stuck as u64, &feature_attrs(m, &f.feature, None));
            }
        }
    });
    let s = snapshot.clone();
    crate::telemetry::u64_counter(meter, DATA_QUALITY_ISSUES, move |o| {
        for m in &s.read().expect("poisoned").models {
            for i in &m.issues {
                let mut a = feature_attrs(m, &i.feature, None);
                a.push(KeyValue::new(attr::ISSUE, i.issue.as_str()));
                o.observe(i.count, &a);
            }
        }
    });
    crate::telemetry::u64_counter(meter, DRIFT_FEATURES_DROPPED, move |o| {
        o.observe(snapshot.read().expect("poisoned").features_dropped, &[])
    });
}

fn model_attrs(m: &ModelDrift) -> [KeyValue; 2] {
    [
        KeyValue::new(attr::MODEL, m.model.clone()),
        KeyValue::new(attr::MODEL_VERSION, m.model_version.clone()),
    ]
}

fn feature_attrs(m: &ModelDrift, feature: &str, method: Option<&'static str>) -> Vec<KeyValue> {
    let mut a = model_attrs(m).to_vec();
    a.push(KeyValue::new(attr::FEATURE, feature.to_string()));
    if let Some(m) = method {
        a.push(KeyValue::new(attr::METHOD, m));
    }
    a
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A snapshot with every kind of figure, for the exporter tests.
    pub(crate) fn full_snapshot() -> DriftSnapshot {
        DriftSnapshot {
            models: vec![ModelDrift {
                model: "m".into(),
                model_version: "1".into(),
                reference: "profile",
                features: vec![FeatureDrift {
                    feature: "x".into(),
                    kind: Kind::Numeric,
                    method: "ks",
                    score: 0.01,
                    statistic: 0.3,
                    threshold: 0.05,
                    drifted: true,
                    window: 100,
                    reference: 100,
                }],
                share: 1.0,
                dataset_drift: true,
                drifted_features: vec!["x".into()],
                constant_features: vec!["x".into()],
                issues: vec![IssueCount {
                    feature: "x".into(),
                    issue: Issue::Missing,
                    count: 1,
                    window_count: 1,
                    window_rows: 100,
                    earlier_rate: None,
                }],
                bins: vec![("x".into(), vec![1, 2], vec![0.5, 0.5])],
            }],
            features_dropped: 1,
        }
    }

    fn numeric_profile(name: &str, values: impl Iterator<Item = f64>) -> Profile {
        let mut b = Builder::new(BuildOptions::default());
        for v in values {
            b.add(name, Cell::Number(v));
            b.add(
                "color",
                Cell::Text(if v as i64 % 2 == 0 { "red" } else { "blue" }),
            );
            b.end_row();
        }
        b.finish()
    }

    fn record(x: Value, color: &str) -> Inference {
        let sample = Sample::from_bodies("/v2/models/m/infer", b"{}", b"{}", "application/json");
        let mut r = Inference::new(
            &sample,
            crate::protocol::Protocol::OpenInferenceV2,
            Operation::Predict,
        );
        r.model = Some("m".into());
        r.features = vec![("x".into(), x), ("color".into(), Value::Text(color.into()))];
        r
    }

    fn config() -> DriftConfig {
        DriftConfig {
            window: 200,
            min_samples: 100,
            ..DriftConfig::default()
        }
    }

    #[test]
    fn shifted_values_drift_and_unshifted_do_not() {
        let p = numeric_profile("x", (0..500).map(|i| (i % 100) as f64));
        let mut d = DriftAnalyzer::new(config(), HashMap::from([("m".to_string(), p)]));
        for i in 0..200 {
            d.record(&record(
                Value::Number(((i * 7) % 100) as f64),
                if i % 2 == 0 { "red" } else { "blue" },
            ));
        }
        d.refresh();
        let snap = d.snapshot.read().unwrap().clone();
        let m = &snap.models[0];
        assert_eq!(m.reference, "profile");
        let x = m.features.iter().find(|f| f.feature == "x").unwrap();
        assert_eq!((x.method, x.drifted), ("ks", false), "{x:?}");
        let color = m.features.iter().find(|f| f.feature == "color").unwrap();
        assert_eq!((color.method, color.drifted), ("chi2", false), "{color:?}");
        assert!(!m.dataset_drift);
        for i in 0..200 {
            d.record(&record(Value::Number(50.0 + (i % 100) as f64), "red"));
        }
        d.refresh();
        let snap = d.snapshot.read().unwrap().clone();
        let m = &snap.models[0];
        assert_eq!(m.drifted_features, vec!["color", "x"]);
        assert!(m.dataset_drift);
        let issues: Vec<(&str, Issue, u64)> = m
            .issues
            .iter()
            .map(|i| (i.feature.as_str(), i.issue, i.count))
            .collect();
        assert!(
            issues.contains(&("x", Issue::OutOfRange, 100)),
            "{issues:?}"
        );
        // Of the last 200 values of x, 100 were out of range; none before.
        let x = m
            .issues
            .iter()
            .find(|i| i.feature == "x" && i.issue == Issue::OutOfRange)
            .unwrap();
        assert_eq!(
            (x.window_count, x.window_rows, x.earlier_rate),
            (100, 200, Some(0.0))
        );
        // 200 more in range: the window forgets them, the earlier share keeps them.
        for i in 0..200 {
            d.record(&record(Value::Number((i % 100) as f64), "red"));
        }
        d.refresh();
        let snap = d.snapshot.read().unwrap().clone();
        let x = snap.models[0]
            .issues
            .iter()
            .find(|i| i.feature == "x" && i.issue == Issue::OutOfRange)
            .unwrap();
        assert_eq!((x.count, x.window_count, x.window_rows), (100, 0, 200));
        assert_eq!(x.earlier_rate, Some(0.25), "100 of the 400 values before");
    }

    #[test]
    fn bad_values_are_counted_and_never_panic() {
        let p = numeric_profile("x", (0..500).map(|i| (i % 100) as f64));
        let mut d = DriftAnalyzer::new(
            DriftConfig {
                max_features: 3,
                ..config()
            },
            HashMap::from([("m".to_string(), p)]),
        );
        let long = "x".repeat(1 << 20);
        for i in 0..5000 {
            let x = match i % 5 {
                0 => Value::Number(f64::NAN),
                1 => Value::Number(f64::INFINITY),
                2 => Value::Text("seven".into()),
                3 => Value::Missing,
                _ => Value::Number(1.0),
            };
            let color = if i % 7 == 0 {
                long.clone()
            } else {
                format!("cat-{i}")
            };
            let mut r = record(x, &color);
            // Thousands of features the profile does not know.
            r.features.push((format!("extra-{i}"), Value::Number(1.0)));
            d.record(&r);
        }
        d.refresh();
        let snap = d.snapshot.read().unwrap().clone();
        let count = |f: &str, i: Issue| {
            snap.models[0]
                .issues
                .iter()
                .find(|c| c.feature == f && c.issue == i)
                .map(|c| c.count)
        };
        assert_eq!(count("x", Issue::NonFinite), Some(2000));
        assert_eq!(count("x", Issue::WrongType), Some(1000));
        assert_eq!(count("x", Issue::Missing), Some(1000));
        assert_eq!(count("color", Issue::NewCategory), Some(5000));
        // Unknown features: at most max_features tracked by name, the rest counted.
        let extra = snap.models[0]
            .issues
            .iter()
            .filter(|i| i.issue == Issue::NotInProfile)
            .count();
        assert_eq!(extra, 3);
        assert!(snap.features_dropped >= 4990);
        // The window of a categorical feature holds bin numbers, not strings.
        let w = &d.models[&("m".to_string(), String::new())].windows["color"];
        assert!(w.cats.len() <= 200);
    }

    /// A profile built from a training CSV has no `prediction` column: the
    /// model's output is then not compared, and is no data-quality issue;
    /// an input the profile lacks still is.
    #[test]
    fn a_prediction_missing_from_the_profile_is_no_issue() {
        let p = numeric_profile("x", (0..500).map(|i| (i % 100) as f64));
        let mut d = DriftAnalyzer::new(config(), HashMap::from([("m".to_string(), p)]));
        for i in 0..50 {
            let mut r = record(Value::Number((i % 100) as f64), "red");
            r.prediction = Some(Value::Text("benign".into()));
            r.features.push(("unexpected".into(), Value::Number(1.0)));
            d.record(&r);
        }
        d.refresh();
        let snap = d.snapshot.read().unwrap().clone();
        let not_in_profile: Vec<(&str, u64)> = snap.models[0]
            .issues
            .iter()
            .filter(|i| i.issue == Issue::NotInProfile)
            .map(|i| (i.feature.as_str(), i.count))
            .collect();
        assert_eq!(not_in_profile, vec![("unexpected", 50)]);
    }

    #[test]
    fn live_reference_files_round_trip_model_names() {
        let dir = std::path::Path::new("/r");
        let f = live_reference_file(dir, "team/model v2");
        assert_eq!(f, std::path::Path::new("/r/team%2Fmodel%20v2.profile.json"));
        assert_eq!(
            model_of_file("team%2Fmodel%20v2.profile.json").as_deref(),
            Some("team/model v2")
        );
        assert_eq!(model_of_file("x.json"), None);
    }

    #[test]
    fn configured_ranges_replace_the_reference_range() {
        let p = numeric_profile("x", (0..500).map(|i| (i % 100) as f64));
        let config = DriftConfig {
            ranges: [("m".to_string(), [("x".to_string(), [10.0, 20.0])].into())].into(),
            ..config()
        };
        let mut d = DriftAnalyzer::new(config, HashMap::from([("m".to_string(), p)]));
        for x in [5.0, 15.0, 25.0, 50.0] {
            d.record(&record(Value::Number(x), "red"));
        }
        d.refresh();
        let snap = d.snapshot.read().unwrap().clone();
        let out = snap.models[0]
            .issues
            .iter()
            .find(|i| i.feature == "x" && i.issue == Issue::OutOfRange)
            .map(|i| i.count);
        assert_eq!(out, Some(3));
    }

    #[test]
    fn sketch_windows_detect_drift_too() {
        let p = numeric_profile("x", (0..500).map(|i| (i % 100) as f64));
        let config = DriftConfig {
            window_mode: crate::config::WindowMode::Sketch,
            ..config()
        };
        let mut d = DriftAnalyzer::new(config, HashMap::from([("m".to_string(), p)]));
        for i in 0..200 {
            d.record(&record(Value::Number(((i * 7) % 100) as f64), "red"));
        }
        d.refresh();
        let x = |d: &DriftAnalyzer| {
            d.snapshot.read().unwrap().models[0]
                .features
                .iter()
                .find(|f| f.feature == "x")
                .cloned()
                .unwrap()
        };
        assert_eq!(
            (x(&d).method, x(&d).drifted, x(&d).window),
            ("ks", false, 200)
        );
        for i in 0..200 {
            d.record(&record(Value::Number(50.0 + (i % 100) as f64), "red"));
        }
        d.refresh();
        assert!(x(&d).drifted, "{:?}", x(&d));
        // Four panes of 50: the window slid to the newest 200 values.
        assert_eq!(x(&d).window, 200);
        // Binned statistics use exact counts per pane: the same as raw values.
        let w = &d.models[&("m".to_string(), String::new())].windows["x"];
        let raw: Vec<f64> = (0..200).map(|i| 50.0 + (i % 100) as f64).collect();
        assert_eq!(
            w.window_counts(),
            stats::bin_counts(&raw, &w.reference.edges)
        );
    }

    #[test]
    fn a_stuck_feature_is_reported_constant() {
        let p = numeric_profile("x", (0..500).map(|i| (i % 100) as f64));
        let mut d = DriftAnalyzer::new(config(), HashMap::from([("m".to_string(), p)]));
        for i in 0..150 {
            d.record(&record(
                Value::Number(7.0),
                if i % 2 == 0 { "red" } else { "blue" },
            ));
        }
        d.refresh();
        let snap = d.snapshot.read().unwrap().clone();
        assert_eq!(snap.models[0].constant_features, vec!["x"]);
    }

    #[test]
    fn live_reference_from_the_first_records() {
        let mut d = DriftAnalyzer::new(
            DriftConfig {
                live_reference_rows: 150,
                ..config()
            },
            HashMap::new(),
        );
        for i in 0..150 {
            d.record(&record(Value::Number((i % 50) as f64), "red"));
        }
        d.refresh();
        assert_eq!(d.snapshot.read().unwrap().models[0].reference, "live");
        for i in 0..150 {
            d.record(&record(Value::Number(100.0 + (i % 50) as f64), "red"));
        }
        d.refresh();
        let snap = d.snapshot.read().unwrap().clone();
        assert_eq!(snap.models[0].drifted_features, vec!["x"]);
    }

    #[test]
    fn each_version_is_compared_with_the_model_s_one_reference() {
        let mut d = DriftAnalyzer::new(
            DriftConfig {
                live_reference_rows: 150,
                ..config()
            },
            HashMap::new(),
        );
        let versioned = |x: f64, v: &str| {
            let mut r = record(Value::Number(x), "red");
            r.model_version = Some(v.into());
            r
        };
        for i in 0..150 {
            d.record(&versioned((i % 50) as f64, "1"));
        }
        // Version 2 answers the same inputs shifted; version 1 keeps its inputs.
        for i in 0..150 {
            d.record(&versioned((i % 50) as f64, "1"));
            d.record(&versioned(100.0 + (i % 50) as f64, "2"));
        }
        d.refresh();
        let snap = d.snapshot.read().unwrap().clone();
        let v: Vec<(&str, &str, &Vec<String>)> = snap
            .models
            .iter()
            .map(|m| (m.model_version.as_str(), m.reference, &m.drifted_features))
            .collect();
        assert_eq!(
            v,
            vec![
                ("1", "live", &vec![]),
                ("2", "live", &vec!["x".to_string()])
            ]
        );
    }
}
