//! Alert rules over modelwatch's own figures, and their notifications.
//!
//! One thread (`modelwatch-alerts`) evaluates every rule each
//! `alerts.evaluation_interval` against the series `/metrics` serves (read
//! from the same registry), so a rule sees exactly what a scrape sees. Each
//! transition becomes an OTLP log event (`modelwatch.alert`), a log line, and
//! a notification to every sink. Sinks are tasks on the runtime with bounded
//! input: a sink that is down never blocks the evaluator or the traffic.

pub mod figures;
pub mod rules;
pub mod sinks;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::KeyValue;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::telemetry::names::{attr, ALERTS};
use crate::telemetry::{Instruments, Telemetry};
use figures::{Figures, Labels};
use rules::{AlertView, RuleState, State, Transition};
use sinks::{AmAlert, Counted};

/// What `/v1/alerts` and `/v1/status` show.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Snapshot {
    pub evaluations: u64,
    #[serde(with = "humantime_serde")]
    pub last_evaluation: Option<SystemTime>,
    /// Milliseconds the last evaluation took.
    pub last_evaluation_ms: f64,
    pub rules: Vec<RuleSummary>,
    /// Pending, firing and recently resolved alerts.
    pub alerts: Vec<AlertView>,
    pub notifications_dropped: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RuleSummary {
    pub name: String,
    pub figure: String,
    pub severity: String,
    pub pending: u64,
    pub firing: u64,
    pub series_dropped: u64,
}

/// The running alert evaluator and its sinks.
pub struct Alerts {
    stop_tx: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Vec<RuleState>>,
    sinks_stop: CancellationToken,
    sinks: Vec<tokio::task::JoinHandle<()>>,
}

struct Outputs {
    alertmanager: Option<watch::Sender<Arc<Vec<AmAlert>>>>,
    webhooks: Vec<(mpsc::Sender<Transition>, Counted)>,
    actions: Vec<(String, mpsc::Sender<Transition>, Counted)>,
}

/// Starts the evaluator (when any rule is configured) and its sinks, and
/// publishes into `snapshot` (registered once, see [`register_gauge`]).
/// `carried`: the states of a previous evaluator (a live reload): a rule
/// whose definition is unchanged keeps its pending and firing alerts, as
/// Prometheus keeps them across a reload. Call from inside the runtime.
pub fn spawn(
    config: &Config,
    telemetry: &Arc<Telemetry>,
    snapshot: Arc<RwLock<Snapshot>>,
    mut carried: Vec<RuleState>,
    diagnosis: Option<crate::diagnosis::Sources>,
) -> std::io::Result<Option<Alerts>> {
    let a = &config.alerts;
    if a.rules.is_empty() {
        *snapshot.write().expect("poisoned") = Snapshot::default();
        return Ok(None);
    }
    let instruments = telemetry.instruments.clone();
    let sinks_stop = CancellationToken::new();
    let mut sinks = Vec::new();
    let counted = |sink: String| Counted {
        sink,
        instruments: instruments.clone(),
    };
    let alertmanager = if a.alertmanager.url.is_empty() {
        None
    } else {
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        sinks.push(tokio::spawn(sinks::alertmanager(
            a.alertmanager.clone(),
            rx,
            counted("alertmanager".into()),
            sinks_stop.clone(),
        )));
        Some(tx)
    };
    let mut webhooks = Vec::new();
    for w in &a.webhooks {
        let (tx, rx) = mpsc::channel(w.queue_capacity);
        let c = counted(format!("webhook:{}", w.name));
        sinks.push(tokio::spawn(sinks::webhook(
            w.clone(),
            rx,
            c.clone(),
            sinks_stop.clone(),
        )));
        webhooks.push((tx, c));
    }
    let mut actions = Vec::new();
    for w in &a.actions {
        let (tx, rx) = mpsc::channel(w.queue_capacity);
        let c = counted(format!("action:{}", w.name));
        sinks.push(tokio::spawn(sinks::webhook(
            w.clone(),
            rx,
            c.clone(),
            sinks_stop.clone(),
        )));
        actions.push((w.name.clone(), tx, c));
    }
    let outputs = Outputs {
        alertmanager,
        webhooks,
        actions,
    };

    let mut base = Labels::new();
    if let Some(host) = telemetry
        .resource
        .get(&opentelemetry::Key::new(attr::HOST_NAME))
    {
        base.insert("instance".into(), host.to_string());
    }
    let rules: Vec<RuleState> = a
        .rules
        .iter()
        .map(|r| {
            match carried
                .iter()
                .position(|c| c.rule == *r && c.max_series() == a.max_series)
            {
                Some(i) => carried.swap_remove(i),
                None => RuleState::new(r.clone(), a.max_series),
            }
        })
        .collect();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    let evaluator = Evaluator {
        dropped_seen: rules.iter().map(|r| r.dropped).collect(),
        rules,
        registry: telemetry.registry().clone(),
        instruments,
        logger: telemetry.logger(),
        outputs,
        base,
        interval: a.evaluation_interval,
        resend: a.alertmanager.resend_interval,
        retention: a.alertmanager.resolved_retention,
        snapshot,
        last_publish: None,
        notifications_dropped: 0,
        diagnosis: diagnosis.map(|s| (s, Arc::new(config.clone()))),
        diagnosed: HashMap::new(),
    };
    let thread = std::thread::Builder::new()
        .name("modelwatch-alerts".into())
        .spawn(move || evaluator.run(stop_rx))?;
    tracing::info!(rules = a.rules.len(), alertmanager = %a.alertmanager.url, webhooks = a.webhooks.len(), "alert rules on");
    Ok(Some(Alerts {
        stop_tx,
        thread,
        sinks_stop,
        sinks,
    }))
}

impl Alerts {
    /// Stops the evaluator, then gives the sinks up to `grace` to finish
    /// what they are sending. Returns the rules' states (for a reload).
    pub async fn stop(self, grace: Duration) -> Vec<RuleState> {
        let _ = self.stop_tx.send(());
        let thread = self.thread;
        let states = tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        // The evaluator's senders are gone: webhook sinks end when their queues are empty.
        let all = futures_util::future::join_all(self.sinks);
        if tokio::time::timeout(grace, all).await.is_err() {
            self.sinks_stop.cancel();
        }
        states
    }
}

/// Registers `modelwatch.alerts`, read from the evaluator's snapshot.
pub fn register_gauge(meter: &opentelemetry::metrics::Meter, snapshot: Arc<RwLock<Snapshot>>) {
    crate::telemetry::u64_gauge(meter, ALERTS, move |o| {
        let s = snapshot.read().expect("poisoned");
        for r in &s.rules {
            for (state, n) in [("pending", r.pending), ("firing", r.firing)] {
                o.observe(
                    n,
                    &[
                        KeyValue::new(attr::ALERTNAME, r.name.clone()),
                        KeyValue::new(attr::SEVERITY, r.severity.clone()),
                        KeyValue::new(attr::ALERTSTATE, state),
                    ],
                );
            }
        }
    });
}

struct Evaluator {
    rules: Vec<RuleState>,
    registry: prometheus::Registry,
    instruments: Instruments,
    logger: Option<opentelemetry_sdk::logs::SdkLogger>,
    outputs: Outputs,
    base: Labels,
    interval: Duration,
    resend: Duration,
    retention: Duration,
    snapshot: Arc<RwLock<Snapshot>>,
    last_publish: Option<Instant>,
    dropped_seen: Vec<u64>,
    notifications_dropped: u64,
    /// Where a firing alert's diagnosis comes from, and the config it reads.
    diagnosis: Option<(crate::diagnosis::Sources, Arc<Config>)>,
    /// The diagnosis annotations of each firing or recently resolved alert,
    /// by rule and labels (taken when it fired).
    diagnosed: HashMap<(String, Labels), Labels>,
}

impl Evaluator {
    fn run(mut self, stop: std::sync::mpsc::Receiver<()>) -> Vec<RuleState> {
        crate::analysis::lower_priority();
        let mut next = Instant::now() + self.interval;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match stop.recv_timeout(wait) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => return self.rules,
            }
            next += self.interval;
            let now = Instant::now();
            if next < now {
                next = now + self.interval;
            }
            self.evaluate(now, SystemTime::now());
        }
    }

    fn evaluate(&mut self, now: Instant, wall: SystemTime) {
        let started = Instant::now();
        let figures = Figures::gather(&self.registry);
        let mut transitions = Vec::new();
        for (i, rule) in self.rules.iter_mut().enumerate() {
            transitions.extend(rule.evaluate(&figures, now, wall, &self.base));
            if rule.dropped > self.dropped_seen[i] {
                self.instruments.alert_series_dropped.add(
                    rule.dropped - self.dropped_seen[i],
                    &[KeyValue::new(attr::ALERTNAME, rule.rule.name.clone())],
                );
                self.dropped_seen[i] = rule.dropped;
            }
        }
        for t in &mut transitions {
            self.annotate(t);
            self.notify(t);
        }
        let notify_am = transitions
            .iter()
            .any(|t| matches!(t.state, State::Firing | State::Resolved));
        let mut views: Vec<AlertView> = self
            .rules
            .iter()
            .flat_map(|r| r.views(&self.base, self.retention, now))
            .collect();
        // Diagnoses live as long as their alerts are shown.
        self.diagnosed
            .retain(|k, _| views.iter().any(|v| v.rule == k.0 && v.labels == k.1));
        for v in &mut views {
            if let Some(extra) = self.diagnosed.get(&(v.rule.clone(), v.labels.clone())) {
                v.annotations.extend(extra.clone());
            }
        }
        if let Some(am) = &self.outputs.alertmanager {
            let due = self
                .last_publish
                .is_none_or(|t| now.duration_since(t) >= self.resend);
            let live = views.iter().any(|v| v.state != State::Pending);
            if notify_am || (due && live) {
                let valid = 4 * self.resend.max(self.interval);
                let set: Vec<AmAlert> = views
                    .iter()
                    .filter(|v| v.state != State::Pending)
                    .map(|v| AmAlert {
                        labels: v.labels.clone(),
                        annotations: v.annotations.clone(),
                        starts_at: sinks::rfc3339(v.active_since.unwrap_or(wall)),
                        ends_at: sinks::rfc3339(match v.state {
                            State::Resolved => v.resolved_at.unwrap_or(wall),
                            _ => wall + valid,
                        }),
                        generator_url: String::new(),
                    })
                    .collect();
                am.send_replace(Arc::new(set));
                self.last_publish = Some(now);
            }
        }
        let mut snap = self.snapshot.write().expect("poisoned");
        snap.evaluations += 1;
        snap.last_evaluation = Some(wall);
        snap.last_evaluation_ms = started.elapsed().as_secs_f64() * 1000.0;
        snap.rules = self
            .rules
            .iter()
            .map(|r| {
                let (pending, firing) = r.counts();
                RuleSummary {
                    name: r.rule.name.clone(),
                    figure: r.rule.figure.clone(),
                    severity: r.rule.severity.clone(),
                    pending,
                    firing,
                    series_dropped: r.dropped,
                }
            })
            .collect();
        snap.alerts = views;
        snap.notifications_dropped = self.notifications_dropped;
    }

    /// A firing quality, drift, data-quality or error alert gets the
    /// diagnosis of its model version (or of the model version that
    /// scores highest, when its series name none) as two annotations:
    /// `diagnosis` (the verdict and its summary) and `diagnosis_findings`
    /// (the top three findings, one a line). A resolved one keeps them.
    fn annotate(&mut self, t: &mut Transition) {
        let key = (t.rule.clone(), t.labels.clone());
        if t.state == State::Firing {
            let Some(figure) = self
                .rules
                .iter()
                .find(|r| r.rule.name == t.rule)
                .map(|r| r.rule.figure.clone())
            else {
                return;
            };
            let Some((sources, config)) = &self.diagnosis else {
                return;
            };
            if !crate::diagnosis::explains(&figure) {
                return;
            }
            let q = crate::diagnosis::Query {
                model: t.labels.get(attr::MODEL).cloned(),
                version: t.labels.get(attr::MODEL_VERSION).cloned(),
                window: None,
            };
            let Ok(all) = sources.diagnose(&q, config, true) else {
                return;
            };
            let Some(d) = all.into_iter().max_by(|a, b| {
                let top =
                    |d: &crate::diagnosis::Diagnosis| d.findings.first().map_or(0.0, |f| f.score);
                top(a).total_cmp(&top(b))
            }) else {
                return;
            };
            self.diagnosed
                .insert(key.clone(), crate::diagnosis::annotations(&d));
        }
        if let Some(extra) = self.diagnosed.get(&key) {
            t.annotations.extend(extra.clone());
        }
    }

    /// Log line, OTLP event, transition counter and webhook notifications for one transition.
    fn notify(&mut self, t: &Transition) {
        self.instruments.alert_transitions.add(
            1,
            &[
                KeyValue::new(attr::ALERTNAME, t.rule.clone()),
                KeyValue::new(attr::ALERTSTATE, t.state.as_str()),
            ],
        );
        let labels = t
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        match t.state {
            State::Firing => {
                tracing::warn!(alert = %t.rule, %labels, value = ?t.value, baseline = ?t.baseline, threshold = t.threshold, "alert firing")
            }
            State::Resolved => {
                tracing::info!(alert = %t.rule, %labels, value = ?t.value, "alert resolved")
            }
            _ => {
                tracing::info!(alert = %t.rule, %labels, value = ?t.value, state = t.state.as_str(), "alert state changed")
            }
        }
        if let Some(logger) = &self.logger {
            let mut log = logger.create_log_record();
            log.set_event_name("modelwatch.alert");
            let (sev, text) = match t.state {
                State::Firing => (Severity::Warn, "WARN"),
                _ => (Severity::Info, "INFO"),
            };
            log.set_severity_number(sev);
            log.set_severity_text(text);
            log.set_timestamp(SystemTime::now());
            let summary = t.annotations.get("summary").cloned().unwrap_or_default();
            log.set_body(AnyValue::String(
                format!(
                    "alert {} {} {}{}",
                    t.rule,
                    t.state.as_str(),
                    labels,
                    if summary.is_empty() {
                        String::new()
                    } else {
                        format!(": {summary}")
                    }
                )
                .into(),
            ));
            log.add_attribute(attr::ALERTNAME, t.rule.clone());
            log.add_attribute(attr::ALERTSTATE, t.state.as_str());
            for (k, v) in &t.labels {
                if k != attr::ALERTNAME {
                    log.add_attribute(format!("modelwatch.alert.label.{k}"), v.clone());
                }
            }
            for (k, v) in &t.annotations {
                log.add_attribute(format!("modelwatch.alert.annotation.{k}"), v.clone());
            }
            for (k, v) in [
                ("value", t.value),
                ("baseline", t.baseline),
                ("compared", t.compared),
                ("threshold", Some(t.threshold)),
                ("samples", t.samples),
            ] {
                if let Some(v) = v {
                    log.add_attribute(format!("modelwatch.alert.{k}"), v);
                }
            }
            logger.emit(log);
        }
        // Only firing and resolved alerts are notified (as Prometheus does):
        // pending and a pending alert that cleared stay in logs and events.
        if !matches!(t.state, State::Firing | State::Resolved) {
            return;
        }
        for (tx, counted) in &self.outputs.webhooks {
            if tx.try_send(t.clone()).is_err() {
                counted.count("dropped", 1);
                self.notifications_dropped += 1;
            }
        }
        if t.state == State::Firing && !t.action.is_empty() {
            for (name, tx, counted) in &self.outputs.actions {
                if *name == t.action && tx.try_send(t.clone()).is_err() {
                    counted.count("dropped", 1);
                    self.notifications_dropped += 1;
                }
            }
        }
    }
}
