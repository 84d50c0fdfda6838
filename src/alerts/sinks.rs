//! Where alerts go: Prometheus Alertmanager (API v2) and JSON webhooks. Each
//! sink is one task on the runtime with bounded input; a sink that is down
//! retries with backoff and never blocks the evaluator or the proxy; every
//! call's result is counted.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opentelemetry::KeyValue;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::figures::Labels;
use super::rules::{State, Transition};
use crate::config::alerts::{AlertmanagerConfig, WebhookConfig};
use crate::outbound::{authorization, client_for, post};
use crate::telemetry::names::attr;
use crate::telemetry::Instruments;

/// Result counting for one sink.
#[derive(Clone)]
pub struct Counted {
    pub sink: String,
    pub instruments: Instruments,
}

impl Counted {
    pub fn count(&self, result: &'static str, n: u64) {
        self.instruments.alert_notifications.add(
            n,
            &[
                KeyValue::new(attr::SINK, self.sink.clone()),
                KeyValue::new(attr::RESULT, result),
            ],
        );
    }
}

/// One alert as Alertmanager's API v2 takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmAlert {
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Sends the latest set of alerts to Alertmanager whenever the evaluator
/// publishes one (on a transition, and every `resend_interval` while any
/// alert is firing). A failed call is retried with a doubling backoff (1 s to
/// 30 s) until it succeeds or a newer set replaces it: Alertmanager down for
/// a while still gets every alert that is firing when it comes back.
pub async fn alertmanager(
    config: AlertmanagerConfig,
    mut rx: watch::Receiver<Arc<Vec<AmAlert>>>,
    counted: Counted,
    stop: CancellationToken,
) {
    let timeout = config.timeout;
    let client = match client_for(&config.tls) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alerts.alertmanager.tls: no Alertmanager client; alerts go to logs, OTLP and webhooks only");
            return;
        }
    };
    let endpoint = format!("{}/api/v2/alerts", config.url.trim_end_matches('/'));
    // One warning when calls start failing and one line when they work again.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            let alerts = rx.borrow_and_update().clone();
            if alerts.is_empty() {
                break;
            }
            let body = Bytes::from(serde_json::to_vec(&*alerts).expect("serialisable"));
            let sent = match authorization(&config.basic_auth, &config.bearer_token_file) {
                Ok(auth) => post(&client, &endpoint, body, auth.as_slice(), timeout).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => {
                    counted.count("sent", 1);
                    if std::mem::take(&mut failing) {
                        tracing::info!(url = %endpoint, "Alertmanager takes alerts again");
                    }
                    break;
                }
                Err(e) => {
                    counted.count("failed", 1);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, url = %endpoint, "Alertmanager did not take the alerts; retrying with backoff (failures are counted in modelwatch.alert.notifications)");
                    } else {
                        tracing::debug!(error = %e, url = %endpoint, retry_in = %humantime::format_duration(backoff), "Alertmanager still failing");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
                changed = rx.changed() => if changed.is_err() { return },
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

/// The body of a webhook call: Alertmanager's webhook format (so receivers
/// written for it work), with modelwatch's evidence on each alert.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookBody<'a> {
    version: &'static str,
    receiver: &'a str,
    status: &'static str,
    alerts: Vec<WebhookAlert<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert<'a> {
    status: &'static str,
    labels: &'a Labels,
    annotations: &'a Labels,
    starts_at: String,
    ends_at: String,
    fingerprint: String,
    evidence: Evidence<'a>,
}

#[derive(Debug, Serialize)]
struct Evidence<'a> {
    rule: &'a str,
    state: State,
    value: Option<f64>,
    baseline: Option<f64>,
    compared: Option<f64>,
    threshold: f64,
    samples: Option<f64>,
    recent: &'a [f64],
}

/// An alert's identity, as Alertmanager computes it for the same label set
/// (`model.LabelSet.Fingerprint` in prometheus/common): 64-bit FNV-1a over
/// the labels sorted by name, each name and value followed by the byte
/// 0xff, empty values left out (Alertmanager drops them on receipt);
/// printed as 16 hex digits. A receiver can match a webhook call with the
/// alert in Alertmanager's API by it.
pub fn fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    // BTreeMap: already sorted by name, as Go's sort of LabelNames.
    for (k, v) in labels.iter().filter(|(_, v)| !v.is_empty()) {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

fn webhook_body(name: &str, batch: &[Transition]) -> Vec<u8> {
    let alerts: Vec<WebhookAlert> = batch
        .iter()
        .map(|t| WebhookAlert {
            status: if t.state == State::Resolved {
                "resolved"
            } else {
                "firing"
            },
            labels: &t.labels,
            annotations: &t.annotations,
            starts_at: rfc3339(t.starts_at),
            ends_at: t
                .ends_at
                .map(rfc3339)
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            fingerprint: fingerprint(&t.labels),
            evidence: Evidence {
                rule: &t.rule,
                state: t.state,
                value: t.value,
                baseline: t.baseline,
                compared: t.compared,
                threshold: t.threshold,
                samples: t.samples,
                recent: &t.recent,
            },
        })
        .collect();
    let status = if alerts.iter().any(|a| a.status == "firing") {
        "firing"
    } else {
        "resolved"
    };
    serde_json::to_vec(&WebhookBody {
        version: "4",
        receiver: name,
        status,
        alerts,
    })
    .expect("serialisable")
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub const SIGNATURE_HEADER: &str = "x-modelwatch-signature";

/// Sends transitions to a webhook. Transitions that queue up while a call is
/// under way go out together in the next call (grouping); a call that fails
/// is retried `max_retries` times with a doubling backoff from 1 s, then its
/// transitions are dropped and counted.
pub async fn webhook(
    config: WebhookConfig,
    mut rx: mpsc::Receiver<Transition>,
    counted: Counted,
    stop: CancellationToken,
) {
    let client = match client_for(&config.tls) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(webhook = %config.name, error = %e, "no client for this webhook (its tls settings); its notifications are dropped");
            return;
        }
    };
    let mut headers: Vec<(String, String)> = config
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            t = rx.recv() => match t { Some(t) => t, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < 100 {
            match rx.try_recv() {
                Ok(t) => batch.push(t),
                Err(_) => break,
            }
        }
        let body = webhook_body(&config.name, &batch);
        headers.retain(|(k, _)| k != SIGNATURE_HEADER && k != "authorization");
        if !config.secret.is_empty() {
            headers.push((SIGNATURE_HEADER.into(), signature(&config.secret, &body)));
        }
        match authorization(&config.basic_auth, &config.bearer_token_file) {
            Ok(Some(auth)) => headers.push(auth),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(webhook = %config.name, error = %e, "sending without the Authorization header")
            }
        }
        let body = Bytes::from(body);
        let mut backoff = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            match post(&client, &config.url, body.clone(), &headers, config.timeout).await {
                Ok(()) => {
                    counted.count("sent", batch.len() as u64);
                    break;
                }
                Err(e) if attempt < config.max_retries => {
                    counted.count("failed", batch.len() as u64);
                    tracing::warn!(error = %e, sink = %counted.sink, retry_in = %humantime::format_duration(backoff), "webhook call failed");
                }
                Err(e) => {
                    counted.count("dropped", batch.len() as u64);
                    tracing::warn!(error = %e, sink = %counted.sink, alerts = batch.len(), "webhook call failed; giving up on these alerts");
                    break;
                }
            }
            attempt += 1;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn fingerprint_depends_on_every_label() {
        let a: Labels = [
            ("alertname".to_string(), "A".to_string()),
            ("model".into(), "x".into()),
        ]
        .into();
        let mut b = a.clone();
        b.insert("model".into(), "y".into());
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    }

    /// prometheus/common's own vectors (model/signature_test.go,
    /// TestMetricToFingerprint): the empty set and a two-label set.
    #[test]
    fn fingerprint_is_alertmanager_s() {
        assert_eq!(
            fingerprint(&Labels::new()),
            format!("{:016x}", 14_695_981_039_346_656_037u64)
        );
        let set: Labels = [
            ("name".to_string(), "garland, briggs".to_string()),
            ("fear".into(), "love is not enough".into()),
        ]
        .into();
        assert_eq!(
            fingerprint(&set),
            format!("{:016x}", 5_799_056_148_416_392_346u64)
        );
        // An empty value is no label.
        let mut with_empty = set.clone();
        with_empty.insert("model_version".into(), String::new());
        assert_eq!(fingerprint(&with_empty), fingerprint(&set));
    }
}
