//! Config of alert rules, their notification sinks, canary gates and shadow
//! traffic (docs/alerts.md, docs/rollouts.md).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, positive, BasicAuth, ClientTlsConfig, ConfigError};
use crate::telemetry::names::{self, Kind, MetricName};

/// Alert rules over any figure modelwatch produces, and where alerts go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Rules are evaluated this often.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// Series one rule follows at most; beyond it new series are dropped and counted.
    pub max_series: usize,
    /// The rules (docs/alerts.md).
    pub rules: Vec<Rule>,
    /// Prometheus Alertmanager (API v2).
    pub alertmanager: AlertmanagerConfig,
    /// Generic JSON webhooks that receive every transition.
    pub webhooks: Vec<WebhookConfig>,
    /// Webhooks a rule can name in `action`: called once per firing, with the evidence.
    pub actions: Vec<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluation_interval: Duration::from_secs(15),
            max_series: 1000,
            rules: Vec::new(),
            alertmanager: AlertmanagerConfig::default(),
            webhooks: Vec::new(),
            actions: Vec::new(),
        }
    }
}

/// One alert rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Rule {
    /// The alert's name (`alertname`).
    pub name: String,
    /// The figure watched: an OpenTelemetry metric name from docs/metrics.md
    /// (e.g. `modelwatch.quality.accuracy`) or its Prometheus name.
    pub figure: String,
    /// Label matchers: every series of the figure whose labels equal these.
    #[serde(rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// What is read from each series: `value` (gauges, and counters' totals),
    /// `rate` or `increase` (counters, over `range`), `mean`, `count`, `p50`,
    /// `p90`, `p95`, `p99` (histograms, over `range`).
    pub stat: Stat,
    /// The span `rate`, `increase` and histogram statistics look back over.
    #[serde(with = "humantime_serde")]
    pub range: Duration,
    /// Fires above this (exactly one of `above` and `below`).
    pub above: Option<f64>,
    /// Fires below this.
    pub below: Option<f64>,
    /// `none`: the threshold applies to the figure. `previous`: to its change
    /// since `offset` ago. `reference`: to its change from its mean over its
    /// first `reference_period`. `version`: to its change from the same series
    /// of model version `baseline_version`.
    pub compare_to: CompareTo,
    /// How a change is measured: `relative` ((value - baseline) / |baseline|)
    /// or `absolute` (value - baseline).
    pub change: Change,
    #[serde(with = "humantime_serde")]
    pub offset: Duration,
    #[serde(with = "humantime_serde")]
    pub reference_period: Duration,
    pub baseline_version: String,
    /// The condition must hold this long before the alert fires.
    #[serde(rename = "for", with = "humantime_serde")]
    pub for_: Duration,
    /// A firing alert stays firing this long after its condition clears.
    #[serde(with = "humantime_serde")]
    pub keep_firing_for: Duration,
    /// A firing alert clears only once the figure is this far back past the threshold.
    pub hysteresis: f64,
    /// Series with fewer samples than this never fire (0: no guard).
    pub min_samples: u64,
    /// The `severity` label, e.g. `warning` or `critical`.
    pub severity: String,
    /// Labels added to the alert.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, `runbook_url`, ... `{{ value }}`,
    /// `{{ threshold }}`, `{{ baseline }}` and `{{ labels.NAME }}` are filled in.
    pub annotations: BTreeMap<String, String>,
    /// The name of an entry of `alerts.actions` to call once per firing.
    pub action: String,
}

/// What a rule reads from a series.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    #[default]
    Value,
    Rate,
    Increase,
    Mean,
    Count,
    P50,
    P90,
    P95,
    P99,
}

impl Stat {
    pub fn quantile(self) -> Option<f64> {
        match self {
            Stat::P50 => Some(0.5),
            Stat::P90 => Some(0.9),
            Stat::P95 => Some(0.95),
            Stat::P99 => Some(0.99),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stat::Value => "value",
            Stat::Rate => "rate",
            Stat::Increase => "increase",
            Stat::Mean => "mean",
            Stat::Count => "count",
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
        }
    }
}

/// The baseline of a relative rule.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompareTo {
    #[default]
    None,
    Previous,
    Reference,
    Version,
}

/// How a change from the baseline is measured.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    #[default]
    Relative,
    Absolute,
}

/// Prometheus Alertmanager.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://alertmanager:9093`. Empty: off.
    pub url: String,
    /// Firing alerts are sent again this often (Alertmanager forgets an
    /// alert that is not resent before its `endsAt`).
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// One request is abandoned after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Resolved alerts are sent for this long after they resolve.
    #[serde(with = "humantime_serde")]
    pub resolved_retention: Duration,
    /// TLS for an https:// URL: the system's roots plus `ca_file`, an
    /// optional client certificate.
    pub tls: ClientTlsConfig,
    /// HTTP basic authentication (Alertmanager's `--web.config.file`
    /// `basic_auth_users`).
    pub basic_auth: BasicAuth,
    /// A file whose content is sent as `Authorization: Bearer …`, read at each call.
    pub bearer_token_file: String,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            url: String::new(),
            resend_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            resolved_retention: Duration::from_secs(15 * 60),
            tls: ClientTlsConfig::default(),
            basic_auth: BasicAuth::default(),
            bearer_token_file: String::new(),
        }
    }
}

/// A JSON webhook (notifications or a rule's action).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names it in metrics and in a rule's `action`.
    pub name: String,
    /// An http:// or https:// URL.
    pub url: String,
    /// When set, the body is signed: `X-Modelwatch-Signature: sha256=<hex HMAC-SHA256>`.
    pub secret: String,
    /// Extra headers sent with every call (e.g. an authorization token).
    pub headers: BTreeMap<String, String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after the first failure, with a doubling backoff from 1 s.
    pub max_retries: u32,
    /// Notifications waiting to be sent; beyond it they are dropped and counted.
    pub queue_capacity: usize,
    /// TLS for an https:// URL: the system's roots plus `ca_file`, an
    /// optional client certificate.
    pub tls: ClientTlsConfig,
    /// HTTP basic authentication (Alertmanager's `--web.config.file`
    /// `basic_auth_users`).
    pub basic_auth: BasicAuth,
    /// A file whose content is sent as `Authorization: Bearer …`, read at each call.
    pub bearer_token_file: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: String::new(),
            url: String::new(),
            secret: String::new(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            max_retries: 5,
            queue_capacity: 256,
            tls: ClientTlsConfig::default(),
            basic_auth: BasicAuth::default(),
            bearer_token_file: String::new(),
        }
    }
}

/// Model updates: the canary gate's defaults and shadow traffic.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    pub gate: GateConfig,
    pub shadow: ShadowConfig,
}

/// `GET /v1/gate`: a candidate model version against a baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// Default versions when the request names none (empty: must be given).
    pub baseline: String,
    pub candidate: String,
    /// Default model (empty: every model's figures of the two versions together).
    pub model: String,
    /// The quality window whose accuracy is compared (empty: the first of quality.windows).
    pub window: String,
    /// Which comparisons decide: `accuracy`, `error_rate`, `latency`.
    pub checks: Vec<String>,
    /// Samples each side needs (labelled rows for accuracy, requests for
    /// error rate and latency) before that check can pass or fail.
    pub min_samples: u64,
    /// Significance level of each test.
    pub alpha: f64,
    /// The candidate fails when its accuracy is lower by more than this
    /// (absolute) and the difference is significant.
    pub max_accuracy_drop: f64,
    /// ... when its error rate is higher by more than this (absolute) and significant.
    pub max_error_rate_increase: f64,
    /// ... when its latency p95 is more than this factor of the baseline's and
    /// its latency distribution is significantly higher (Mann-Whitney).
    pub max_latency_ratio: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            baseline: String::new(),
            candidate: String::new(),
            model: String::new(),
            window: String::new(),
            checks: vec!["accuracy".into(), "error_rate".into(), "latency".into()],
            min_samples: 100,
            alpha: 0.05,
            max_accuracy_drop: 0.01,
            max_error_rate_increase: 0.01,
            max_latency_ratio: 1.2,
        }
    }
}

/// A sampled share of requests mirrored to a shadow upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowConfig {
    /// The shadow (candidate) model server, e.g. `http://127.0.0.1:8081`. Empty: off.
    pub upstream: String,
    /// Share of requests mirrored (0 to 1).
    pub rate: f64,
    /// Shadow requests in flight at most; beyond it requests are not mirrored (counted).
    pub max_in_flight: usize,
    /// A shadow request is abandoned after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Only requests whose body is at most this large are mirrored.
    pub max_body_bytes: usize,
    /// TLS towards an `https://` shadow upstream.
    pub tls: super::ClientTlsConfig,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            upstream: String::new(),
            rate: 0.1,
            max_in_flight: 64,
            timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            tls: super::ClientTlsConfig::default(),
        }
    }
}

const HTTP_URL: &str = "an http:// or https:// URL with a host, e.g. https://alertmanager:9093";

fn http_url(key: &str, value: &str) -> Result<http::Uri, ConfigError> {
    value
        .parse::<http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .ok_or_else(|| invalid(key, value, HTTP_URL))
}

/// The TLS files and the secrets' files of an outbound call, at start.
fn check_client(
    at: &str,
    tls: &ClientTlsConfig,
    basic: &BasicAuth,
    bearer_token_file: &str,
) -> Result<(), ConfigError> {
    if let Err((key, value, accepted)) = crate::telemetry::tls::check_at(&format!("{at}.tls"), tls)
    {
        return Err(invalid(&key, value, &accepted));
    }
    if !basic.username.is_empty() || !basic.password_file.is_empty() {
        if basic.username.is_empty() {
            return Err(invalid(
                &format!("{at}.basic_auth.username"),
                "",
                "the user name that goes with basic_auth.password_file",
            ));
        }
        if std::fs::metadata(&basic.password_file).is_err() {
            return Err(invalid(
                &format!("{at}.basic_auth.password_file"),
                &basic.password_file,
                "a readable file holding the password",
            ));
        }
        if !bearer_token_file.is_empty() {
            return Err(invalid(
                &format!("{at}.bearer_token_file"),
                bearer_token_file,
                "empty when basic_auth is set (one Authorization header)",
            ));
        }
    }
    if !bearer_token_file.is_empty() && std::fs::metadata(bearer_token_file).is_err() {
        return Err(invalid(
            &format!("{at}.bearer_token_file"),
            bearer_token_file,
            "a readable file holding the token",
        ));
    }
    Ok(())
}

/// The metric a rule's `figure` names: by OpenTelemetry or Prometheus name.
pub fn find_figure(figure: &str) -> Option<&'static MetricName> {
    names::ALL.iter().find(|m| {
        m.name == figure || crate::telemetry::prometheus_name(m) == figure || {
            // Prometheus names without the unit or `_total` suffix.
            m.name.replace('.', "_") == figure
        }
    })
}

fn rule_error(
    i: usize,
    rule: &Rule,
    key: &str,
    value: impl ToString,
    accepted: &str,
) -> ConfigError {
    let label = if rule.name.is_empty() {
        format!("alerts.rules[{i}].{key}")
    } else {
        format!("alerts.rules[{i}] ({}).{key}", rule.name)
    };
    invalid(&label, value, accepted)
}

impl AlertsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("alerts.evaluation_interval", self.evaluation_interval)?;
        if self.max_series == 0 {
            return Err(invalid("alerts.max_series", 0, "an integer of at least 1"));
        }
        let am = &self.alertmanager;
        if !am.url.is_empty() {
            http_url("alerts.alertmanager.url", &am.url)?;
            check_client(
                "alerts.alertmanager",
                &am.tls,
                &am.basic_auth,
                &am.bearer_token_file,
            )?;
        }
        positive("alerts.alertmanager.resend_interval", am.resend_interval)?;
        positive("alerts.alertmanager.timeout", am.timeout)?;
        for (list, hooks) in [("webhooks", &self.webhooks), ("actions", &self.actions)] {
            let mut seen = std::collections::BTreeSet::new();
            for (i, w) in hooks.iter().enumerate() {
                let key = |k: &str| format!("alerts.{list}[{i}].{k}");
                if w.name.is_empty() || !seen.insert(w.name.as_str()) {
                    return Err(invalid(&key("name"), &w.name, "a name, unique in the list"));
                }
                http_url(&key("url"), &w.url)?;
                check_client(
                    &format!("alerts.{list}[{i}]"),
                    &w.tls,
                    &w.basic_auth,
                    &w.bearer_token_file,
                )?;
                positive(&key("timeout"), w.timeout)?;
                if w.queue_capacity == 0 {
                    return Err(invalid(
                        &key("queue_capacity"),
                        0,
                        "an integer of at least 1",
                    ));
                }
                for name in w.headers.keys() {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(invalid(&key("headers"), name, "valid HTTP header names"));
                    }
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            self.validate_rule(i, r)?;
            if !names.insert((r.name.as_str(), &r.matchers)) {
                return Err(rule_error(
                    i,
                    r,
                    "name",
                    &r.name,
                    "a rule name not used twice with the same `match`",
                ));
            }
        }
        Ok(())
    }

    fn validate_rule(&self, i: usize, r: &Rule) -> Result<(), ConfigError> {
        let valid_name = !r.name.is_empty()
            && r.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !r.name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(rule_error(
                i,
                r,
                "name",
                &r.name,
                "a name of letters, digits, _ and :, e.g. AccuracyDrop",
            ));
        }
        let Some(m) = find_figure(&r.figure) else {
            return Err(rule_error(
                i,
                r,
                "figure",
                &r.figure,
                "a metric modelwatch produces, by its OpenTelemetry or Prometheus name (docs/metrics.md), e.g. modelwatch.quality.accuracy",
            ));
        };
        let stats_ok = match m.kind {
            Kind::Histogram => !matches!(r.stat, Stat::Value | Stat::Rate | Stat::Increase),
            Kind::Counter => matches!(r.stat, Stat::Value | Stat::Rate | Stat::Increase),
            Kind::Gauge | Kind::UpDownCounter => r.stat == Stat::Value,
        };
        if !stats_ok {
            let accepted = match m.kind {
                Kind::Histogram => "for a histogram: mean, count, p50, p90, p95 or p99",
                Kind::Counter => "for a counter: value, rate or increase",
                _ => "for a gauge: value",
            };
            return Err(rule_error(i, r, "stat", r.stat.as_str(), accepted));
        }
        for key in r.matchers.keys() {
            if key.is_empty() {
                return Err(rule_error(i, r, "match", key, "label names"));
            }
        }
        match (r.above, r.below) {
            (Some(v), None) | (None, Some(v)) if v.is_finite() => {}
            (Some(_), Some(_)) => {
                return Err(rule_error(
                    i,
                    r,
                    "above",
                    "both above and below",
                    "exactly one of `above` and `below`",
                ))
            }
            (None, None) => {
                return Err(rule_error(
                    i,
                    r,
                    "above",
                    "(neither above nor below)",
                    "exactly one of `above` and `below`, a number",
                ))
            }
            (Some(v), None) | (None, Some(v)) => {
                return Err(rule_error(i, r, "above", v, "a finite number"))
            }
        }
        if !(r.hysteresis >= 0.0 && r.hysteresis.is_finite()) {
            return Err(rule_error(
                i,
                r,
                "hysteresis",
                r.hysteresis,
                "a number of at least 0",
            ));
        }
        let needs_range =
            m.kind == Kind::Histogram || matches!(r.stat, Stat::Rate | Stat::Increase);
        if needs_range && r.range < self.evaluation_interval {
            return Err(rule_error(
                i,
                r,
                "range",
                humantime::format_duration(r.range),
                &format!(
                    "a duration of at least alerts.evaluation_interval ({})",
                    humantime::format_duration(self.evaluation_interval)
                ),
            ));
        }
        match r.compare_to {
            CompareTo::Previous if r.offset < self.evaluation_interval => {
                return Err(rule_error(
                    i,
                    r,
                    "offset",
                    humantime::format_duration(r.offset),
                    "with compare_to: previous, a duration of at least alerts.evaluation_interval, e.g. 1h",
                ))
            }
            CompareTo::Reference if r.reference_period < self.evaluation_interval => {
                return Err(rule_error(
                    i,
                    r,
                    "reference_period",
                    humantime::format_duration(r.reference_period),
                    "with compare_to: reference, a duration of at least alerts.evaluation_interval, e.g. 1h",
                ))
            }
            CompareTo::Version if r.baseline_version.is_empty() => {
                return Err(rule_error(
                    i,
                    r,
                    "baseline_version",
                    "",
                    "with compare_to: version, the model_version to compare with",
                ))
            }
            _ => {}
        }
        let history = match r.compare_to {
            CompareTo::Previous => r.offset,
            _ => Duration::ZERO,
        }
        .max(if needs_range { r.range } else { Duration::ZERO });
        if history.as_secs_f64() / self.evaluation_interval.as_secs_f64() > 5760.0 {
            return Err(rule_error(
                i,
                r,
                if r.compare_to == CompareTo::Previous {
                    "offset"
                } else {
                    "range"
                },
                humantime::format_duration(history),
                "at most 5760 evaluation intervals (a day at 15 s)",
            ));
        }
        if r.min_samples > 0 && samples_figure(m).is_none() {
            return Err(rule_error(
                i,
                r,
                "min_samples",
                r.min_samples,
                "0 for this figure: sample counts exist for histograms, counters and the modelwatch.quality.* window gauges",
            ));
        }
        if !r.action.is_empty() && !self.actions.iter().any(|a| a.name == r.action) {
            return Err(rule_error(
                i,
                r,
                "action",
                &r.action,
                "the name of an entry of alerts.actions",
            ));
        }
        Ok(())
    }
}

/// Where a rule's sample count comes from: the series itself (histograms'
/// count, counters' increase) or, for quality window gauges, the window's
/// labelled rows.
pub enum SamplesFrom {
    Itself,
    Figure(&'static MetricName),
}

pub fn samples_figure(m: &MetricName) -> Option<SamplesFrom> {
    match m.kind {
        Kind::Histogram | Kind::Counter => Some(SamplesFrom::Itself),
        _ if m.name.starts_with("modelwatch.quality.") && m.name != names::QUALITY_PENDING.name => {
            Some(SamplesFrom::Figure(&names::QUALITY_SAMPLES))
        }
        _ => None,
    }
}

pub const GATE_CHECKS: &[&str] = &["accuracy", "error_rate", "latency"];

impl RolloutConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.gate;
        if !(g.alpha > 0.0 && g.alpha < 1.0) {
            return Err(invalid(
                "rollout.gate.alpha",
                g.alpha,
                "a number between 0 and 1, e.g. 0.05",
            ));
        }
        for (key, v) in [
            ("rollout.gate.max_accuracy_drop", g.max_accuracy_drop),
            (
                "rollout.gate.max_error_rate_increase",
                g.max_error_rate_increase,
            ),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(invalid(key, v, "a number from 0 to 1, e.g. 0.01"));
            }
        }
        if !(g.max_latency_ratio >= 1.0 && g.max_latency_ratio.is_finite()) {
            return Err(invalid(
                "rollout.gate.max_latency_ratio",
                g.max_latency_ratio,
                "a number of at least 1, e.g. 1.2",
            ));
        }
        for (i, c) in g.checks.iter().enumerate() {
            if !GATE_CHECKS.contains(&c.as_str()) {
                return Err(invalid(
                    &format!("rollout.gate.checks[{i}]"),
                    c,
                    "accuracy, error_rate or latency",
                ));
            }
        }
        let s = &self.shadow;
        if !s.upstream.is_empty() {
            http_url("rollout.shadow.upstream", &s.upstream)?;
            if let Err((key, value, accepted)) =
                crate::telemetry::tls::check_at("rollout.shadow.tls", &s.tls)
            {
                return Err(invalid(&key, value, &accepted));
            }
        }
        if !(0.0..=1.0).contains(&s.rate) {
            return Err(invalid(
                "rollout.shadow.rate",
                s.rate,
                "a number from 0 to 1",
            ));
        }
        if s.max_in_flight == 0 {
            return Err(invalid(
                "rollout.shadow.max_in_flight",
                0,
                "an integer of at least 1",
            ));
        }
        positive("rollout.shadow.timeout", s.timeout)?;
        Ok(())
    }
}
