//! Sampled payload logs: one OTLP log record per decoded inference record
//! (`modelwatch.inference`), carrying the trace and request ids, so sampled
//! inputs and outputs land in Elastic/Kibana, Loki or any OTLP log backend.
//! Prompt and completion text is left out unless `payload_logs.content` is on;
//! every string that does go out passes the redactor first; a record is cut at
//! `payload_logs.max_record_bytes`.

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use serde_json::{json, Map, Value as Json};

use super::redact::Redactor;
use super::Analyzer;
use crate::config::PayloadLogsConfig;
use crate::protocol::{Inference, Value};
use crate::sample::Sample;
use crate::telemetry::names::attr;

/// Emits payload log records through the OTLP logger.
pub struct PayloadLogger {
    logger: opentelemetry_sdk::logs::SdkLogger,
    redactor: Redactor,
    content: bool,
    max_bytes: usize,
}

impl PayloadLogger {
    pub fn new(
        logger: opentelemetry_sdk::logs::SdkLogger,
        config: &PayloadLogsConfig,
    ) -> Result<PayloadLogger, super::redact::PatternError> {
        Ok(PayloadLogger {
            logger,
            redactor: Redactor::new(config.redact_builtin, &config.redact_patterns)?,
            content: config.content,
            max_bytes: config.max_record_bytes,
        })
    }

    fn text(&self, s: &str) -> Json {
        Json::String(self.redactor.redact(s).into_owned())
    }

    fn value(&self, v: &Value) -> Json {
        match v {
            Value::Number(n) if n.is_finite() => json!(n),
            Value::Number(n) => Json::String(n.to_string()),
            Value::Text(t) => self.text(t),
            Value::Bool(b) => Json::Bool(*b),
            Value::Missing => Json::Null,
        }
    }

    /// The record's body: what was asked and answered, redacted.
    pub fn body(&self, r: &Inference) -> (String, bool) {
        let mut m = Map::new();
        let named = |pairs: &[(String, Value)]| -> Json {
            Json::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), self.value(v)))
                    .collect(),
            )
        };
        if !r.features.is_empty() {
            m.insert("features".into(), named(&r.features));
        }
        if let Some(p) = &r.prediction {
            m.insert("prediction".into(), self.value(p));
        }
        if !r.scores.is_empty() {
            m.insert(
                "scores".into(),
                Json::Object(
                    r.scores
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect(),
                ),
            );
        }
        if !r.outputs.is_empty() {
            m.insert("outputs".into(), named(&r.outputs));
        }
        if let Some(u) = &r.usage {
            m.insert("usage".into(), json!({"input_tokens": u.input, "output_tokens": u.output, "estimated": u.estimated}));
        }
        if !r.finish_reasons.is_empty() {
            m.insert("finish_reasons".into(), json!(r.finish_reasons));
        }
        if let Some(e) = &r.embedding {
            m.insert("embedding_dimensions".into(), json!(e.len()));
        }
        if self.content {
            if let Some(t) = &r.input_text {
                m.insert("input_text".into(), self.text(t));
            }
            if let Some(t) = &r.output_text {
                m.insert("output_text".into(), self.text(t));
            }
        }
        let mut body = Json::Object(m).to_string();
        let truncated = body.len() > self.max_bytes;
        if truncated {
            let mut cut = self.max_bytes;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        (body, truncated)
    }
}

fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl Analyzer for PayloadLogger {
    fn name(&self) -> &'static str {
        "payload_logs"
    }

    fn reconfigure(&mut self, update: &super::Update) {
        let c = &update.config.payload_logs;
        // The patterns were compiled once when the reload was checked.
        if let Ok(redactor) = Redactor::new(c.redact_builtin, &c.redact_patterns) {
            self.redactor = redactor;
        }
        self.content = c.content;
        self.max_bytes = c.max_record_bytes;
    }

    fn analyze(&mut self, sample: &Sample, records: &[Inference]) {
        for r in records {
            let mut log = self.logger.create_log_record();
            log.set_event_name("modelwatch.inference");
            log.set_severity_number(Severity::Info);
            log.set_severity_text("INFO");
            log.set_timestamp(sample.timings.start);
            let (body, truncated) = self.body(r);
            log.set_body(AnyValue::String(body.into()));
            log.add_attribute(attr::REQUEST_ID, r.request_id.clone());
            log.add_attribute("modelwatch.row", r.row as i64);
            log.add_attribute(attr::PROTOCOL, r.protocol.as_str());
            log.add_attribute(attr::GEN_AI_OPERATION_NAME, r.operation.as_str());
            log.add_attribute(attr::HTTP_RESPONSE_STATUS_CODE, r.status as i64);
            if let Some(m) = &r.model {
                log.add_attribute("modelwatch.model", m.clone());
            }
            if let Some(v) = &r.model_version {
                log.add_attribute("modelwatch.model_version", v.clone());
            }
            if truncated {
                log.add_attribute("modelwatch.payload.truncated", true);
            }
            if let (Some(t), Some(s)) = (
                sample.trace_id.as_deref().and_then(hex_id::<16>),
                sample.span_id.as_deref().and_then(hex_id::<8>),
            ) {
                log.set_trace_context(
                    TraceId::from_bytes(t),
                    SpanId::from_bytes(s),
                    Some(TraceFlags::SAMPLED),
                );
            }
            self.logger.emit(log);
        }
    }
}
