//! Shadow traffic: a sampled share of completed exchanges is sent again to a
//! shadow upstream (the candidate model), and the two answers are compared.
//!
//! The copy leaves only after the primary exchange has finished (it is made
//! from the sample, when the sample is handed to analysis), in a task of its
//! own with a bound on shadow requests in flight: the shadow's latency,
//! errors or absence never touch the primary response. Beyond the bound, or
//! for a request body larger than what was captured, nothing is mirrored
//! and the skip is counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::KeyValue;
use tokio::sync::Semaphore;

use crate::config::{Config, ProtocolConfig};
use crate::protocol::{self, Inference};
use crate::sample::{CapturedBody, Outcome, Sample};
use crate::telemetry::names::attr;
use crate::telemetry::Instruments;

/// The shadow upstream and its bounds.
pub struct Shadow {
    client: crate::outbound::HttpClient,
    base: String,
    rate: f64,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    max_body: usize,
    protocol: ProtocolConfig,
    instruments: Instruments,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Shadow {
    /// None when `rollout.shadow.upstream` is empty.
    pub fn new(config: &Config, instruments: Instruments) -> Option<Arc<Shadow>> {
        let s = &config.rollout.shadow;
        if s.upstream.is_empty() {
            return None;
        }
        tracing::info!(upstream = %s.upstream, rate = s.rate, "shadow traffic on");
        Some(Arc::new(Shadow {
            client: crate::outbound::client_for(&s.tls).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "rollout.shadow.tls unusable; the system's roots are used");
                crate::outbound::client()
            }),
            base: s.upstream.trim_end_matches('/').to_string(),
            rate: s.rate,
            in_flight: Arc::new(Semaphore::new(s.max_in_flight)),
            timeout: s.timeout,
            max_body: s.max_body_bytes.max(config.sampling.max_body_bytes),
            protocol: config.protocol.clone(),
            instruments,
        }))
    }

    fn count(&self, result: &'static str) {
        self.instruments
            .shadow_requests
            .add(1, &[KeyValue::new(attr::RESULT, result)]);
    }

    /// Mirrors one completed exchange, maybe. Never waits.
    pub fn mirror(self: &Arc<Self>, sample: &Sample) {
        if !(self.rate >= 1.0 || (self.rate > 0.0 && fastrand::f64() < self.rate)) {
            return;
        }
        if matches!(
            sample.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        ) || sample.outcome != Outcome::Complete
        {
            return;
        }
        if sample.request_body.truncated || sample.request_body.size as usize > self.max_body {
            self.count("skipped_body");
            return;
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.count("skipped_busy");
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        let primary = sample.clone();
        runtime.spawn(async move {
            let _permit = permit;
            this.run(primary).await;
        });
    }

    async fn run(&self, primary: Sample) {
        let mut req = http::Request::builder()
            .method(primary.method.clone())
            .uri(format!("{}{}", self.base, primary.path));
        for (k, v) in &primary.request_headers {
            if k != http::header::HOST && k != http::header::CONTENT_LENGTH {
                req = req.header(k, v);
            }
        }
        let Ok(req) = req
            .header("x-modelwatch-shadow", "1")
            .body(Full::new(primary.request_body.bytes.clone()))
        else {
            self.count("error");
            return;
        };
        let started = Instant::now();
        let max = self.max_body;
        let call = async {
            let resp = self.client.request(req).await.map_err(|_| "error")?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, max)
                .collect()
                .await
                .map_err(|_| "error")?
                .to_bytes();
            Ok::<_, &'static str>((parts, bytes))
        };
        let (parts, bytes) = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.count(e),
            Err(_) => return self.count("timeout"),
        };
        let took = started.elapsed();
        if parts.status.is_server_error() {
            self.count("error");
        } else {
            self.count("ok");
        }
        self.instruments
            .shadow_duration
            .record(took.as_secs_f64(), &[]);
        let mut shadow = primary.clone();
        shadow.status = parts.status.as_u16();
        shadow.response_headers = parts.headers;
        shadow.response_body = CapturedBody {
            size: bytes.len() as u64,
            bytes,
            truncated: false,
        };
        let decode = |s: &Sample| {
            protocol::detect(s, self.protocol.kind)
                .and_then(|p| protocol::decode_as(s, p, &self.protocol).ok())
                .unwrap_or_default()
        };
        let (p, s) = (decode(&primary), decode(&shadow));
        let model = protocol::exchange_identity(&primary, &p, &self.protocol)
            .map_or(protocol::UNKNOWN_MODEL.to_string(), |id| {
                id.model_label().to_string()
            });
        compare(
            &model,
            &p,
            &s,
            took.as_secs_f64() - primary.timings.total.as_secs_f64(),
            &self.instruments,
        );
    }
}

/// One row's comparison of primary and shadow answers.
#[derive(Debug, PartialEq)]
pub struct RowComparison {
    pub model: String,
    /// Same prediction (classifiers, regressors), or same finish reasons (LLMs).
    pub agreement: Option<bool>,
    /// |primary - shadow| for numeric predictions.
    pub difference: Option<f64>,
    /// Shadow output characters / primary output characters (LLMs).
    pub length_ratio: Option<f64>,
}

/// Compares rows pairwise (a row missing on one side is not compared).
pub fn compare_rows(primary: &[Inference], shadow: &[Inference]) -> Vec<RowComparison> {
    primary
        .iter()
        .zip(shadow)
        .map(|(p, s)| {
            let model = protocol::model_label(p.model.as_deref()).to_string();
            if p.output_text.is_some() || s.output_text.is_some() {
                let (lp, ls) = (
                    p.output_text.as_deref().map_or(0, |t| t.chars().count()),
                    s.output_text.as_deref().map_or(0, |t| t.chars().count()),
                );
                return RowComparison {
                    model,
                    agreement: Some(p.finish_reasons == s.finish_reasons),
                    difference: None,
                    length_ratio: (lp > 0).then(|| ls as f64 / lp as f64),
                };
            }
            match (&p.prediction, &s.prediction) {
                (Some(a), Some(b)) => RowComparison {
                    model,
                    agreement: Some(a == b),
                    difference: a.as_f64().zip(b.as_f64()).map(|(a, b)| (a - b).abs()),
                    length_ratio: None,
                },
                _ => RowComparison {
                    model,
                    agreement: None,
                    difference: None,
                    length_ratio: None,
                },
            }
        })
        .collect()
}

fn compare(
    model: &str,
    primary: &[Inference],
    shadow: &[Inference],
    latency_difference: f64,
    i: &Instruments,
) {
    let rows = compare_rows(primary, shadow);
    let model = model.to_string();
    i.shadow_latency_difference
        .record(latency_difference, &[KeyValue::new(attr::MODEL, model)]);
    for r in rows {
        let m = KeyValue::new(attr::MODEL, r.model);
        if let Some(a) = r.agreement {
            i.shadow_comparisons
                .add(1, &[m.clone(), KeyValue::new(attr::AGREEMENT, a)]);
        }
        if let Some(d) = r.difference {
            i.shadow_difference.record(d, std::slice::from_ref(&m));
        }
        if let Some(l) = r.length_ratio {
            i.shadow_output_length_ratio.record(l, &[m]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Value;

    fn row(pred: Option<Value>, text: Option<&str>, finish: &[&str]) -> Inference {
        let sample = Sample::from_bodies("/x", b"{}", b"{}", "application/json");
        let mut r = Inference::new(
            &sample,
            protocol::Protocol::OpenInferenceV2,
            protocol::Operation::Predict,
        );
        r.model = Some("m".into());
        r.prediction = pred;
        r.output_text = text.map(str::to_string);
        r.finish_reasons = finish.iter().map(|s| s.to_string()).collect();
        r
    }

    #[test]
    fn rows_compare_by_kind() {
        let p = [
            row(Some(Value::Text("benign".into())), None, &[]),
            row(Some(Value::Number(3.0)), None, &[]),
            row(None, Some("hello world"), &["stop"]),
        ];
        let s = [
            row(Some(Value::Text("malignant".into())), None, &[]),
            row(Some(Value::Number(2.5)), None, &[]),
            row(None, Some("hello"), &["length"]),
        ];
        let c = compare_rows(&p, &s);
        assert_eq!(c[0].agreement, Some(false));
        assert_eq!((c[1].agreement, c[1].difference), (Some(false), Some(0.5)));
        assert_eq!(c[2].agreement, Some(false));
        assert!((c[2].length_ratio.unwrap() - 5.0 / 11.0).abs() < 1e-12);
        assert_eq!(compare_rows(&p, &p)[0].agreement, Some(true));
    }
}
