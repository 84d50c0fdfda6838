//! Rule evaluation: per rule and series, the figure's statistic, its
//! baseline, the condition with its guards, and the alert's state machine
//! (inactive -> pending -> firing -> resolved). Plain code: the caller gives
//! the figures and the clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::figures::{histogram_delta, histogram_quantile, label_name, Figures, Labels, Raw};
use crate::config::alerts::{
    find_figure, samples_figure, Change, CompareTo, Rule, SamplesFrom, Stat,
};
use crate::telemetry::names::{attr, Kind, MetricName};

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// One transition, with the evidence behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub rule: String,
    pub state: State,
    /// Every label of the alert: alertname, severity, the rule's labels, the series' labels.
    pub labels: Labels,
    pub annotations: Labels,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    /// The figure compared with the threshold (the value, or its change from the baseline).
    pub compared: Option<f64>,
    pub threshold: f64,
    pub samples: Option<f64>,
    #[serde(with = "humantime_serde")]
    pub starts_at: SystemTime,
    #[serde(with = "humantime_serde")]
    pub ends_at: Option<SystemTime>,
    /// Recent values of the series, oldest first.
    pub recent: Vec<f64>,
    /// Names the action to call (firing transitions of rules that have one).
    pub action: String,
}

/// One followed series of one rule.
struct SeriesState {
    labels: Labels,
    raw: VecDeque<(Instant, Raw)>,
    values: VecDeque<(Instant, f64)>,
    reference: Reference,
    state: State,
    since: Option<Instant>,
    started: Option<SystemTime>,
    clear_since: Option<Instant>,
    resolved: Option<(Instant, SystemTime)>,
    last_seen: Instant,
    value: Option<f64>,
    baseline: Option<f64>,
    compared: Option<f64>,
    samples: Option<f64>,
}

#[derive(Default)]
struct Reference {
    started: Option<Instant>,
    sum: f64,
    n: u64,
    frozen: Option<f64>,
}

/// A rule and the series it follows.
pub struct RuleState {
    pub rule: Rule,
    figure: &'static MetricName,
    samples_from: Option<SamplesFrom>,
    matchers: Labels,
    series: HashMap<Labels, SeriesState>,
    max_series: usize,
    /// Series not followed because `max_series` were.
    pub dropped: u64,
}

/// What `/v1/alerts` shows of one alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub rule: String,
    pub state: State,
    pub labels: Labels,
    pub annotations: Labels,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub compared: Option<f64>,
    pub samples: Option<f64>,
    #[serde(with = "humantime_serde")]
    pub active_since: Option<SystemTime>,
    #[serde(with = "humantime_serde")]
    pub resolved_at: Option<SystemTime>,
}

const RECENT_VALUES: usize = 20;

impl RuleState {
    pub fn max_series(&self) -> usize {
        self.max_series
    }

    pub fn new(rule: Rule, max_series: usize) -> RuleState {
        let figure = find_figure(&rule.figure).expect("validated figure");
        // The sample count is read whenever the figure has one, so that
        // `{{ samples }}` and the evidence carry it without `min_samples`.
        let samples_from = samples_figure(figure);
        let matchers = rule
            .matchers
            .iter()
            .map(|(k, v)| (label_name(k), v.clone()))
            .collect();
        RuleState {
            rule,
            figure,
            samples_from,
            matchers,
            series: HashMap::new(),
            max_series,
            dropped: 0,
        }
    }

    fn needs_range(&self) -> bool {
        self.figure.kind == Kind::Histogram || matches!(self.rule.stat, Stat::Rate | Stat::Increase)
    }

    fn threshold(&self) -> f64 {
        self.rule.above.or(self.rule.below).unwrap_or(0.0)
    }

    /// One evaluation: reads the figure, updates every series, returns the transitions.
    pub fn evaluate(
        &mut self,
        figures: &Figures,
        now: Instant,
        wall: SystemTime,
        base_labels: &Labels,
    ) -> Vec<Transition> {
        let current = figures.series(self.figure, &self.matchers);
        let keep_raw = if self.needs_range() {
            self.rule.range
        } else {
            Duration::ZERO
        };
        let keep_values = match self.rule.compare_to {
            CompareTo::Previous => self.rule.offset,
            _ => Duration::ZERO,
        };
        for s in current {
            if !self.series.contains_key(&s.labels) {
                if self.series.len() >= self.max_series {
                    self.dropped += 1;
                    continue;
                }
                self.series.insert(
                    s.labels.clone(),
                    SeriesState {
                        labels: s.labels.clone(),
                        raw: VecDeque::new(),
                        values: VecDeque::new(),
                        reference: Reference::default(),
                        state: State::Inactive,
                        since: None,
                        started: None,
                        clear_since: None,
                        resolved: None,
                        last_seen: now,
                        value: None,
                        baseline: None,
                        compared: None,
                        samples: None,
                    },
                );
            }
            let st = self.series.get_mut(&s.labels).expect("inserted");
            st.last_seen = now;
            st.raw.push_back((now, s.raw));
            // Keep the newest reading at or before the range's start, and everything after.
            while st.raw.len() > 2 && now.duration_since(st.raw[1].0) >= keep_raw {
                st.raw.pop_front();
            }
        }
        // Statistic and sample count of every series seen now.
        let stat = self.rule.stat;
        let samples_series = match &self.samples_from {
            Some(SamplesFrom::Figure(m)) => figures.series(m, &Labels::new()),
            _ => Vec::new(),
        };
        for st in self.series.values_mut() {
            if st.last_seen != now {
                st.value = None;
                st.samples = None;
                continue;
            }
            let (value, samples) = compute(stat, &st.raw, self.figure.kind);
            st.value = value;
            st.samples = match &self.samples_from {
                None => None,
                Some(SamplesFrom::Itself) => samples,
                Some(SamplesFrom::Figure(_)) => samples_series
                    .iter()
                    .find(|c| {
                        [attr::MODEL, attr::MODEL_VERSION, attr::WINDOW]
                            .iter()
                            .all(|k| c.labels.get(*k) == st.labels.get(*k))
                    })
                    .and_then(|c| match c.raw {
                        Raw::Scalar(v) => Some(v),
                        _ => None,
                    }),
            };
            if let Some(v) = st.value {
                st.values.push_back((now, v));
                while st.values.len() > RECENT_VALUES
                    && now.duration_since(st.values[1].0) >= keep_values
                {
                    st.values.pop_front();
                }
                let enough = self.rule.min_samples == 0
                    || st
                        .samples
                        .is_some_and(|n| n >= self.rule.min_samples as f64);
                if self.rule.compare_to == CompareTo::Reference
                    && enough
                    && st.reference.frozen.is_none()
                {
                    let r = &mut st.reference;
                    let started = *r.started.get_or_insert(now);
                    if now.duration_since(started) >= self.rule.reference_period && r.n > 0 {
                        r.frozen = Some(r.sum / r.n as f64);
                    } else {
                        r.sum += v;
                        r.n += 1;
                    }
                }
            }
        }
        // Baselines (other versions' values are read now that all are computed).
        let versions: HashMap<Labels, f64> = if self.rule.compare_to == CompareTo::Version {
            self.series
                .values()
                .filter_map(|s| Some((s.labels.clone(), s.value?)))
                .collect()
        } else {
            HashMap::new()
        };
        let mut out = Vec::new();
        let rule = self.rule.clone();
        let threshold = self.threshold();
        for st in self.series.values_mut() {
            st.baseline = match rule.compare_to {
                CompareTo::None => None,
                CompareTo::Previous => st
                    .values
                    .iter()
                    .rev()
                    .find(|(t, _)| now.duration_since(*t) >= rule.offset)
                    .map(|(_, v)| *v),
                CompareTo::Reference => st.reference.frozen,
                CompareTo::Version => {
                    let mut other = st.labels.clone();
                    match other.get_mut(attr::MODEL_VERSION) {
                        Some(v) if *v != rule.baseline_version => {
                            *v = rule.baseline_version.clone();
                            versions.get(&other).copied()
                        }
                        _ => None,
                    }
                }
            };
            st.compared = match (rule.compare_to, st.value, st.baseline) {
                (CompareTo::None, v, _) => v,
                (_, Some(v), Some(b)) => match rule.change {
                    Change::Absolute => Some(v - b),
                    Change::Relative if b != 0.0 => Some((v - b) / b.abs()),
                    Change::Relative => None,
                },
                _ => None,
            };
            let enough =
                rule.min_samples == 0 || st.samples.is_some_and(|n| n >= rule.min_samples as f64);
            let firing = st.state == State::Firing;
            let margin = if firing { rule.hysteresis } else { 0.0 };
            let active = enough
                && st.compared.is_some_and(|x| match (rule.above, rule.below) {
                    (Some(t), _) => x > t - margin,
                    (_, Some(t)) => x < t + margin,
                    _ => false,
                });
            if let Some(state) = step(st, &rule, active, now, wall) {
                out.push(transition(st, &rule, state, threshold, wall, base_labels));
            }
        }
        // Forget series gone quiet: resolved or inactive, unseen for an hour.
        self.series.retain(|_, s| {
            !(matches!(s.state, State::Inactive | State::Resolved)
                && now.duration_since(s.last_seen) > Duration::from_secs(3600))
        });
        out
    }

    /// The alerts of this rule that are pending, firing, or resolved since `since`.
    pub fn views(
        &self,
        base_labels: &Labels,
        resolved_within: Duration,
        now: Instant,
    ) -> Vec<AlertView> {
        self.series
            .values()
            .filter(|s| match s.state {
                State::Pending | State::Firing => true,
                State::Resolved => s
                    .resolved
                    .is_some_and(|(t, _)| now.duration_since(t) <= resolved_within),
                State::Inactive => false,
            })
            .map(|s| {
                let labels = alert_labels(&self.rule, &s.labels, base_labels);
                let threshold = self.threshold();
                AlertView {
                    rule: self.rule.name.clone(),
                    state: s.state,
                    annotations: self
                        .rule
                        .annotations
                        .iter()
                        .map(|(k, v)| (k.clone(), render(v, s, threshold, &labels)))
                        .collect(),
                    labels,
                    value: s.value,
                    baseline: s.baseline,
                    compared: s.compared,
                    samples: s.samples,
                    active_since: s.started,
                    resolved_at: s.resolved.map(|(_, w)| w),
                }
            })
            .collect()
    }

    /// Series per state (pending, firing), for the `modelwatch.alerts` gauge.
    pub fn counts(&self) -> (u64, u64) {
        let pending = self
            .series
            .values()
            .filter(|s| s.state == State::Pending)
            .count();
        let firing = self
            .series
            .values()
            .filter(|s| s.state == State::Firing)
            .count();
        (pending as u64, firing as u64)
    }
}

/// The statistic of a series over its kept readings, and its sample count.
fn compute(stat: Stat, raw: &VecDeque<(Instant, Raw)>, kind: Kind) -> (Option<f64>, Option<f64>) {
    let Some((t_new, newest)) = raw.back() else {
        return (None, None);
    };
    let oldest = (raw.len() >= 2).then(|| &raw[0]);
    match (kind, newest) {
        (Kind::Histogram, h @ Raw::Histogram { .. }) => {
            let Some((_, older)) = oldest else {
                return (None, None);
            };
            let Some((bounds, cum, count, sum)) = histogram_delta(h, Some(older)) else {
                return (None, None);
            };
            let value = match stat {
                Stat::Count => Some(count as f64),
                Stat::Mean => (count > 0).then(|| sum / count as f64),
                s => s
                    .quantile()
                    .and_then(|q| histogram_quantile(q, &bounds, &cum)),
            };
            (value, Some(count as f64))
        }
        (_, Raw::Scalar(v)) => match stat {
            Stat::Rate | Stat::Increase => {
                let Some((t_old, Raw::Scalar(old))) = oldest else {
                    return (None, None);
                };
                let increase = if v >= old { v - old } else { *v };
                let secs = t_new.duration_since(*t_old).as_secs_f64();
                let value = match stat {
                    Stat::Rate if secs > 0.0 => Some(increase / secs),
                    Stat::Rate => None,
                    _ => Some(increase),
                };
                (value, Some(increase))
            }
            _ => (Some(*v), Some(*v)),
        },
        _ => (None, None),
    }
}

/// Advances the state machine; the new state when it changed.
fn step(
    st: &mut SeriesState,
    rule: &Rule,
    active: bool,
    now: Instant,
    wall: SystemTime,
) -> Option<State> {
    let before = st.state;
    match (st.state, active) {
        (State::Inactive | State::Resolved, true) => {
            st.since = Some(now);
            st.started = Some(wall);
            st.clear_since = None;
            st.state = if rule.for_.is_zero() {
                State::Firing
            } else {
                State::Pending
            };
        }
        (State::Pending, true) => {
            if st.since.is_some_and(|s| now.duration_since(s) >= rule.for_) {
                st.state = State::Firing;
            }
        }
        (State::Pending, false) => st.state = State::Inactive,
        (State::Firing, true) => st.clear_since = None,
        (State::Firing, false) => {
            let since = *st.clear_since.get_or_insert(now);
            if now.duration_since(since) >= rule.keep_firing_for {
                st.state = State::Resolved;
                st.resolved = Some((now, wall));
            }
        }
        (State::Inactive | State::Resolved, false) => {}
    }
    (st.state != before).then_some(st.state)
}

fn alert_labels(rule: &Rule, series: &Labels, base: &Labels) -> Labels {
    let mut labels = base.clone();
    labels.extend(series.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.extend(rule.labels.iter().map(|(k, v)| (label_name(k), v.clone())));
    labels.insert(attr::ALERTNAME.into(), rule.name.clone());
    if !rule.severity.is_empty() {
        labels.insert(attr::SEVERITY.into(), rule.severity.clone());
    }
    // An empty value is no label (Alertmanager drops them on receipt, and
    // Prometheus treats them as absent): never sent, never fingerprinted.
    labels.retain(|_, v| !v.is_empty());
    labels
}

fn transition(
    st: &SeriesState,
    rule: &Rule,
    state: State,
    threshold: f64,
    wall: SystemTime,
    base: &Labels,
) -> Transition {
    let labels = alert_labels(rule, &st.labels, base);
    let annotations = rule
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), render(v, st, threshold, &labels)))
        .collect();
    Transition {
        rule: rule.name.clone(),
        state,
        labels,
        annotations,
        value: st.value,
        baseline: st.baseline,
        compared: st.compared,
        threshold,
        samples: st.samples,
        starts_at: st.started.unwrap_or(wall),
        ends_at: (state == State::Resolved).then_some(wall),
        recent: st
            .values
            .iter()
            .rev()
            .take(RECENT_VALUES)
            .rev()
            .map(|(_, v)| *v)
            .collect(),
        action: if state == State::Firing {
            rule.action.clone()
        } else {
            String::new()
        },
    }
}

/// Fills `{{ value }}`, `{{ baseline }}`, `{{ threshold }}`, `{{ samples }}`
/// and `{{ labels.NAME }}` in an annotation.
fn render(template: &str, st: &SeriesState, threshold: f64, labels: &Labels) -> String {
    let num = |v: Option<f64>| {
        v.map(|v| {
            format!("{v:.4}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        })
        .unwrap_or_else(|| "n/a".into())
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let key = rest[open + 2..open + close].trim();
        let filled = match key {
            "value" => num(st.value),
            "baseline" => num(st.baseline),
            "threshold" => num(Some(threshold)),
            "compared" => num(st.compared),
            "samples" => num(st.samples),
            k => match k.strip_prefix("labels.") {
                Some(name) => labels.get(name).cloned().unwrap_or_default(),
                None => rest[open..open + close + 2].to_string(),
            },
        };
        out.push_str(&filled);
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::core::Collector;

    fn gauge_figures(
        value: f64,
        samples: f64,
        version: &str,
    ) -> Vec<prometheus::proto::MetricFamily> {
        let acc = prometheus::GaugeVec::new(
            prometheus::Opts::new("modelwatch_quality_accuracy_ratio", "x"),
            &["model", "model_version", "window"],
        )
        .unwrap();
        acc.with_label_values(&["bc", version, "1h"]).set(value);
        let n = prometheus::GaugeVec::new(
            prometheus::Opts::new("modelwatch_quality_samples", "x"),
            &["model", "model_version", "window"],
        )
        .unwrap();
        n.with_label_values(&["bc", version, "1h"]).set(samples);
        let mut f = acc.collect();
        f.extend(n.collect());
        f
    }

    fn rule(yaml: &str) -> Rule {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved_after_keep_firing_for() {
        let mut r = RuleState::new(
            rule("{name: AccuracyLow, figure: modelwatch.quality.accuracy, below: 0.9, for: 30s, keep_firing_for: 20s, min_samples: 50, severity: critical, annotations: {summary: 'accuracy {{ value }} of {{ labels.model }}'}}"),
            10,
        );
        let t0 = Instant::now();
        let w0 = SystemTime::now();
        let at = |s: u64| (t0 + Duration::from_secs(s), w0 + Duration::from_secs(s));
        let base = Labels::new();
        let mut eval = |v: f64, n: f64, s: u64| {
            let (t, w) = at(s);
            r.evaluate(
                &Figures::from_families(gauge_figures(v, n, "1")),
                t,
                w,
                &base,
            )
        };
        // Too few samples: nothing, however low.
        assert!(eval(0.5, 10.0, 0).is_empty());
        let tr = eval(0.8, 100.0, 10);
        assert_eq!(tr[0].state, State::Pending);
        assert!(eval(0.8, 100.0, 25).is_empty());
        let tr = eval(0.8, 100.0, 40);
        assert_eq!(tr[0].state, State::Firing);
        assert_eq!(tr[0].annotations["summary"], "accuracy 0.8 of bc");
        assert_eq!(tr[0].labels["alertname"], "AccuracyLow");
        assert_eq!(tr[0].labels["severity"], "critical");
        // Clears, but keep_firing_for holds it for 20 s.
        assert!(eval(0.95, 100.0, 50).is_empty());
        let tr = eval(0.95, 100.0, 70);
        assert_eq!(tr[0].state, State::Resolved);
        assert!(tr[0].ends_at.is_some());
    }

    #[test]
    fn hysteresis_keeps_a_flapping_figure_from_resolving() {
        let mut r = RuleState::new(
            rule("{name: A, figure: modelwatch.quality.accuracy, below: 0.9, hysteresis: 0.02}"),
            10,
        );
        let t0 = Instant::now();
        let w = SystemTime::now();
        let base = Labels::new();
        let mut states = Vec::new();
        for (i, v) in [0.89, 0.905, 0.89, 0.91, 0.93].iter().enumerate() {
            let t = t0 + Duration::from_secs(i as u64 * 15);
            for tr in r.evaluate(
                &Figures::from_families(gauge_figures(*v, 100.0, "1")),
                t,
                w,
                &base,
            ) {
                states.push((i, tr.state));
            }
        }
        // Fires at once (no `for`), stays firing through 0.905 and 0.91 (< 0.92), resolves at 0.93.
        assert_eq!(states, vec![(0, State::Firing), (4, State::Resolved)]);
    }

    #[test]
    fn relative_change_against_another_version() {
        let mut r = RuleState::new(
            rule("{name: Worse, figure: modelwatch.quality.accuracy, compare_to: version, baseline_version: '1', below: -0.05}"),
            10,
        );
        let mut families = gauge_figures(0.95, 100.0, "1");
        families.extend(gauge_figures(0.85, 100.0, "2"));
        // Two families of the same name: merge their metrics as the registry would.
        let mut merged: HashMap<String, prometheus::proto::MetricFamily> = HashMap::new();
        for f in families {
            match merged.get_mut(f.name()) {
                Some(m) => {
                    let mut all = m.take_metric();
                    all.extend(f.get_metric().iter().cloned());
                    m.set_metric(all);
                }
                None => {
                    merged.insert(f.name().to_string(), f);
                }
            }
        }
        let tr = r.evaluate(
            &Figures::from_families(merged.into_values().collect()),
            Instant::now(),
            SystemTime::now(),
            &Labels::new(),
        );
        assert_eq!(tr.len(), 1, "only version 2 is compared: {tr:?}");
        assert_eq!(tr[0].labels["model_version"], "2");
        assert!((tr[0].compared.unwrap() - (0.85 - 0.95) / 0.95).abs() < 1e-12);
    }

    #[test]
    fn previous_window_and_reference_baselines() {
        let mut prev = RuleState::new(
            rule("{name: Fell, figure: modelwatch.quality.accuracy, compare_to: previous, offset: 30s, change: absolute, below: -0.1}"),
            10,
        );
        let mut refr = RuleState::new(
            rule("{name: FellRef, figure: modelwatch.quality.accuracy, compare_to: reference, reference_period: 30s, below: -0.1}"),
            10,
        );
        let t0 = Instant::now();
        let w = SystemTime::now();
        let base = Labels::new();
        let mut fired = (None, None);
        for (i, v) in [0.9, 0.9, 0.9, 0.9, 0.9, 0.7, 0.7, 0.7].iter().enumerate() {
            let t = t0 + Duration::from_secs(i as u64 * 15);
            let f = Figures::from_families(gauge_figures(*v, 100.0, "1"));
            if !prev.evaluate(&f, t, w, &base).is_empty() && fired.0.is_none() {
                fired.0 = Some(i);
            }
            if !refr.evaluate(&f, t, w, &base).is_empty() && fired.1.is_none() {
                fired.1 = Some(i);
            }
        }
        // Both fire on the first low point: 0.7 - 0.9 = -0.2 (absolute), -22% (relative).
        assert_eq!(fired, (Some(5), Some(5)));
    }

    #[test]
    fn histogram_quantile_over_the_range_and_series_bound() {
        let h = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("modelwatch_model_request_duration_seconds", "x")
                .buckets(vec![0.1, 0.5, 1.0]),
            &["model", "model_version"],
        )
        .unwrap();
        let mut r = RuleState::new(
            rule("{name: Slow, figure: modelwatch.model.request.duration, stat: p95, range: 1m, above: 0.6, min_samples: 10}"),
            1,
        );
        let t0 = Instant::now();
        let w = SystemTime::now();
        let base = Labels::new();
        for _ in 0..100 {
            h.with_label_values(&["m", "1"]).observe(0.05);
        }
        assert!(r
            .evaluate(&Figures::from_families(h.collect()), t0, w, &base)
            .is_empty());
        h.with_label_values(&["other", "1"]).observe(0.05);
        // Over the range only the new observations count: all slow.
        for _ in 0..20 {
            h.with_label_values(&["m", "1"]).observe(0.9);
        }
        let tr = r.evaluate(
            &Figures::from_families(h.collect()),
            t0 + Duration::from_secs(15),
            w,
            &base,
        );
        assert_eq!(
            r.dropped, 1,
            "max_series 1: the second series is dropped and counted"
        );
        assert_eq!(tr.len(), 1);
        assert!(tr[0].value.unwrap() > 0.6 && tr[0].value.unwrap() <= 1.0);
        assert_eq!(tr[0].samples, Some(20.0));
    }
}
