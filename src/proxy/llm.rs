//! The LLM figures kept for every request whatever the sample rate (cost
//! accounting and SLOs need all of them): a cheap scan of the response framing
//! as frames pass. For a stream: each `data:` event is counted, the first and
//! last content chunks timed, and only the events carrying `usage` or a finish
//! reason are parsed. For a plain JSON answer: the body is kept up to a cap and
//! its `usage`, `model` and finish reasons read when it ends.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::protocol::json::string_field;
use crate::protocol::Operation;

/// Model names as label values, bounded: the first `max` distinct names are
/// kept, later ones become `_OTHER`.
#[derive(Debug)]
pub struct ModelLabels {
    max: usize,
    seen: std::sync::Mutex<Vec<std::sync::Arc<str>>>,
}

pub const OTHER_MODEL: &str = "_OTHER";

impl ModelLabels {
    pub fn new(max: usize) -> ModelLabels {
        ModelLabels {
            max,
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn label(&self, name: &str) -> std::sync::Arc<str> {
        let mut seen = self.seen.lock().expect("poisoned");
        if let Some(s) = seen.iter().find(|s| &***s == name) {
            return s.clone();
        }
        if seen.len() < self.max && name.len() <= 128 {
            let s: std::sync::Arc<str> = name.into();
            seen.push(s.clone());
            return s;
        }
        OTHER_MODEL.into()
    }
}

/// Finish reasons as bounded label values.
pub fn finish_reason_label(r: &str) -> &'static str {
    match r {
        "stop" => "stop",
        "length" => "length",
        "tool_calls" => "tool_calls",
        "function_call" => "function_call",
        "content_filter" => "content_filter",
        "eos" | "eos_token" => "stop",
        _ => "other",
    }
}

/// What the scan found, read when the exchange finishes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LlmFigures {
    pub streaming: bool,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// True when the server gave no usage and output tokens are content chunks.
    pub estimated: bool,
    pub finish_reasons: Vec<&'static str>,
    pub first_content: Option<Duration>,
    pub last_content: Option<Duration>,
    pub output_chars: u64,
    pub chunks: u64,
    pub tool_calls: bool,
    /// The stream's own end was seen (`[DONE]` or a finish reason): a client
    /// that hangs up after it did not cut the answer off.
    pub saw_end: bool,
}

/// Per-request scan state.
#[derive(Debug)]
pub struct LlmScan {
    pub operation: Operation,
    streaming: bool,
    max_body: usize,
    /// Stream: the unfinished line.
    buf: Vec<u8>,
    /// Plain: the body so far.
    plain: PlainBody,
    figures: LlmFigures,
    content_chunks: u64,
}

/// A plain answer's body as it arrives, up to the scan's cap. The usual
/// answer comes in one frame, kept without a copy (let go when the exchange
/// finishes, right after the body ends); more frames are gathered.
#[derive(Debug, Default)]
enum PlainBody {
    #[default]
    Empty,
    One(Bytes),
    Gathered(Vec<u8>),
    /// Longer than the cap: not read.
    Over,
}

impl PlainBody {
    fn push(&mut self, data: &Bytes, cap: usize) {
        *self = match std::mem::take(self) {
            PlainBody::Empty if data.len() <= cap => PlainBody::One(data.clone()),
            PlainBody::One(first) if first.len() + data.len() <= cap => {
                PlainBody::Gathered([&first[..], &data[..]].concat())
            }
            PlainBody::Gathered(mut body) if body.len() + data.len() <= cap => {
                body.extend_from_slice(data);
                PlainBody::Gathered(body)
            }
            _ => PlainBody::Over,
        }
    }

    /// The whole body, unless it was over the cap.
    fn bytes(&self) -> &[u8] {
        match self {
            PlainBody::One(b) => b,
            PlainBody::Gathered(b) => b,
            PlainBody::Empty | PlainBody::Over => &[],
        }
    }
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<CharCount>,
    tool_calls: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
    message: Option<Message>,
    text: Option<CharCount>,
}

/// The length in characters of a JSON string, read without keeping the
/// string; None for any other value (content given as parts, null).
struct CharCount(Option<usize>);

impl<'de> Deserialize<'de> for CharCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CharCount, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CharCount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<CharCount, E> {
                Ok(CharCount(Some(v.chars().count())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<CharCount, E> {
                Ok(CharCount(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<CharCount, E> {
                Ok(CharCount(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<CharCount, E> {
                Ok(CharCount(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<CharCount, E> {
                Ok(CharCount(None))
            }
            fn visit_unit<E>(self) -> Result<CharCount, E> {
                Ok(CharCount(None))
            }
            fn visit_none<E>(self) -> Result<CharCount, E> {
                Ok(CharCount(None))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<CharCount, D::Error> {
                CharCount::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<CharCount, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(CharCount(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<CharCount, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(CharCount(None))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
struct Answer<'a> {
    id: Option<String>,
    model: Option<String>,
    usage: Option<Usage>,
    #[serde(borrow)]
    choices: Option<Vec<Choice<'a>>>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

impl LlmScan {
    pub fn new(operation: Operation, streaming: bool, max_body: usize) -> LlmScan {
        LlmScan {
            operation,
            streaming,
            max_body,
            buf: Vec::new(),
            plain: PlainBody::Empty,
            figures: LlmFigures {
                streaming,
                ..LlmFigures::default()
            },
            content_chunks: 0,
        }
    }

    /// Looks at one response frame; `at` is the time since the request arrived.
    pub fn frame(&mut self, data: &Bytes, at: Duration) {
        if !self.streaming {
            self.plain.push(data, self.max_body);
            return;
        }
        let mut rest = &data[..];
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let piece = &rest[..nl];
            if self.buf.is_empty() {
                self.line(piece, at);
            } else {
                if self.buf.len() + piece.len() <= self.max_body {
                    self.buf.extend_from_slice(piece);
                }
                let line = std::mem::take(&mut self.buf);
                self.line(&line, at);
            }
            rest = &rest[nl + 1..];
        }
        if !rest.is_empty() && self.buf.len() + rest.len() <= self.max_body {
            self.buf.extend_from_slice(rest);
        }
    }

    fn line(&mut self, line: &[u8], at: Duration) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            self.figures.saw_end = true;
            return;
        }
        let f = &mut self.figures;
        f.chunks += 1;
        if f.response_model.is_none() {
            f.response_model = string_field(data, br#""model""#);
            f.response_id = string_field(data, br#""id""#);
        }
        let content =
            text_length(data, b"\"content\":\"").or_else(|| text_length(data, b"\"text\":\""));
        let tool = find(data, b"\"tool_calls\":[").is_some();
        f.tool_calls |= tool;
        if content.is_some() || tool {
            if f.first_content.is_none() {
                f.first_content = Some(at);
            }
            f.last_content = Some(at);
            f.output_chars += content.unwrap_or(0) as u64;
            self.content_chunks += 1;
        }
        if find(data, b"\"finish_reason\":\"").is_some() {
            if let Some(r) = string_field(data, br#""finish_reason""#) {
                f.finish_reasons.push(finish_reason_label(&r));
                f.saw_end = true;
            }
        }
        if find(data, b"\"usage\":{").is_some() {
            if let Ok(a) = serde_json::from_slice::<Answer>(data) {
                if let Some(u) = a.usage {
                    f.input_tokens = u.prompt_tokens;
                    f.output_tokens = u.completion_tokens;
                }
                if let Some(m) = a.model {
                    f.response_model = Some(m);
                }
            }
        }
    }

    /// The figures, once the response has ended (or been cut off).
    pub fn finish(mut self) -> LlmFigures {
        let body = self.plain.bytes();
        if !body.is_empty() {
            if let Ok(a) = serde_json::from_slice::<Answer>(body) {
                let f = &mut self.figures;
                f.response_model = a.model;
                f.response_id = a.id;
                if let Some(u) = a.usage {
                    f.input_tokens = u.prompt_tokens;
                    f.output_tokens = u.completion_tokens;
                }
                for c in a.choices.unwrap_or_default() {
                    if let Some(r) = c.finish_reason {
                        f.finish_reasons.push(finish_reason_label(&r));
                    }
                    if c.message
                        .as_ref()
                        .and_then(|m| m.tool_calls.as_ref())
                        .is_some_and(|t| !t.is_empty())
                    {
                        f.tool_calls = true;
                    }
                    let text = c
                        .message
                        .and_then(|m| m.content)
                        .and_then(|n| n.0)
                        .or_else(|| c.text.and_then(|n| n.0));
                    f.output_chars += text.unwrap_or(0) as u64;
                }
            }
        }
        if self.streaming && self.figures.output_tokens.is_none() && self.content_chunks > 0 {
            self.figures.output_tokens = Some(self.content_chunks);
            self.figures.estimated = true;
        }
        self.figures
    }
}

/// Length in characters of a non-empty JSON string value after `pat`
/// (escapes counted as one character); None when empty or absent.
fn text_length(hay: &[u8], pat: &[u8]) -> Option<usize> {
    let start = find(hay, pat)? + pat.len();
    let mut i = start;
    let mut chars = 0;
    while i < hay.len() {
        match hay[i] {
            b'"' => break,
            b'\\' => {
                i += 2;
                chars += 1;
                continue;
            }
            b if b & 0xC0 != 0x80 => chars += 1,
            _ => {}
        }
        i += 1;
    }
    (chars > 0).then_some(chars)
}

/// An LLM exchange in flight: the operation, the scan once the response
/// headers are known, and the bounded model labels.
#[derive(Debug)]
pub struct LlmExchange {
    pub operation: Operation,
    pub scan: Option<LlmScan>,
    pub labels: std::sync::Arc<ModelLabels>,
    pub max_body: usize,
}

/// How an LLM request ended (the `modelwatch.llm.outcome` label).
pub fn outcome_label(outcome: crate::sample::Outcome, status: u16) -> &'static str {
    match outcome {
        crate::sample::Outcome::Complete if status < 400 => "complete",
        crate::sample::Outcome::Aborted => "aborted",
        _ => "error",
    }
}

/// How an exchange ended, as the LLM figures need it.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    pub total: Duration,
    pub outcome: crate::sample::Outcome,
    pub status: u16,
    pub error_type: Option<&'static str>,
}

/// Records the GenAI figures of one finished LLM exchange, and puts them on
/// its span. `request` holds the head of the request body (all of it when sampled).
pub fn record(
    i: &crate::telemetry::Instruments,
    x: LlmExchange,
    ending: Ending,
    request: &crate::sample::Capture,
    span: Option<&mut opentelemetry_sdk::trace::Span>,
) {
    use crate::telemetry::names::attr;
    let Ending {
        total,
        outcome,
        status,
        error_type,
    } = ending;
    use opentelemetry::trace::Span as _;
    use opentelemetry::KeyValue;

    let figures = x.scan.map(LlmScan::finish).unwrap_or_default();
    let request_model = request.with_head(4096, request_model);
    let request_label = request_model.as_deref().map(|m| x.labels.label(m));
    let response_label = figures.response_model.as_deref().map(|m| x.labels.label(m));
    let op = x.operation.as_str();
    let outcome = match outcome {
        crate::sample::Outcome::Aborted if figures.saw_end => "complete",
        _ => outcome_label(outcome, status),
    };
    i.llm_request(op, figures.streaming, outcome);
    if x.operation != Operation::Embeddings {
        for r in &figures.finish_reasons {
            i.llm_finish_reason(r);
        }
    }
    let labels = crate::telemetry::bound::GenAiLabels {
        operation: op,
        request_model: request_label,
        response_model: response_label,
    };
    i.gen_ai(&labels, |series| {
        series.duration(total.as_secs_f64(), error_type);
        if let Some(first) = figures.first_content {
            series.ttft(first.as_secs_f64());
            if let (Some(last), Some(n)) = (figures.last_content, figures.output_tokens) {
                if n > 1 && last > first {
                    series.tpot((last - first).as_secs_f64() / (n - 1) as f64);
                }
            }
        }
        for (kind, n) in [
            ("input", figures.input_tokens),
            ("output", figures.output_tokens),
        ] {
            if let Some(n) = n {
                series.tokens(kind, figures.estimated, n);
            }
        }
        if x.operation != Operation::Embeddings && outcome == "complete" {
            series.output_chars(figures.output_chars);
            if figures.output_chars == 0 && !figures.tool_calls {
                series.empty();
            }
        }
    });

    if let Some(span) = span {
        let model = figures
            .response_model
            .clone()
            .or(request_model.clone())
            .unwrap_or_default();
        span.update_name(format!("{op} {model}").trim_end().to_string());
        span.set_attribute(KeyValue::new(attr::GEN_AI_OPERATION_NAME, op));
        if let Some(m) = request_model {
            span.set_attribute(KeyValue::new(attr::GEN_AI_REQUEST_MODEL, m));
        }
        if let Some(m) = figures.response_model {
            span.set_attribute(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, m));
        }
        if let Some(id) = figures.response_id {
            span.set_attribute(KeyValue::new(attr::GEN_AI_RESPONSE_ID, id));
        }
        if let Some(n) = figures.input_tokens {
            span.set_attribute(KeyValue::new(attr::GEN_AI_USAGE_INPUT_TOKENS, n as i64));
        }
        if let Some(n) = figures.output_tokens {
            span.set_attribute(KeyValue::new(attr::GEN_AI_USAGE_OUTPUT_TOKENS, n as i64));
        }
        if !figures.finish_reasons.is_empty() {
            let reasons: Vec<opentelemetry::StringValue> =
                figures.finish_reasons.iter().map(|r| (*r).into()).collect();
            span.set_attribute(KeyValue::new(
                attr::GEN_AI_RESPONSE_FINISH_REASONS,
                opentelemetry::Value::Array(reasons.into()),
            ));
        }
        // Copied out first: the capture's lock is not held while parsing.
        let body = request.with_head(usize::MAX, Bytes::copy_from_slice);
        if let Ok(params) = serde_json::from_slice::<serde_json::Value>(&body) {
            if let Some(t) = params
                .get("temperature")
                .and_then(serde_json::Value::as_f64)
            {
                span.set_attribute(KeyValue::new(attr::GEN_AI_REQUEST_TEMPERATURE, t));
            }
            if let Some(t) = params.get("top_p").and_then(serde_json::Value::as_f64) {
                span.set_attribute(KeyValue::new(attr::GEN_AI_REQUEST_TOP_P, t));
            }
            let max = params
                .get("max_completion_tokens")
                .or_else(|| params.get("max_tokens"))
                .and_then(serde_json::Value::as_i64);
            if let Some(t) = max {
                span.set_attribute(KeyValue::new(attr::GEN_AI_REQUEST_MAX_TOKENS, t));
            }
        }
    }
}

/// The request's model from the head of its body.
pub fn request_model(head: &[u8]) -> Option<String> {
    string_field(head, br#""model""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// One frame as hyper hands it over.
    fn feed(scan: &mut LlmScan, frame: &[u8], at: Duration) {
        scan.frame(&Bytes::copy_from_slice(frame), at);
    }

    #[test]
    fn stream_split_across_frames() {
        let stream = concat!(
            "data: {\"id\":\"c1\",\"model\":\"tiny\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hé\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"llo\\n\"},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"id\":\"c1\",\"model\":\"tiny\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        // Cut into 7-byte frames: lines straddle frames.
        let mut scan = LlmScan::new(Operation::Chat, true, 65536);
        for (i, frame) in stream.chunks(7).enumerate() {
            feed(&mut scan, frame, MS * i as u32);
        }
        let f = scan.finish();
        assert_eq!(f.chunks, 4);
        assert_eq!(f.response_model.as_deref(), Some("tiny"));
        assert_eq!(f.response_id.as_deref(), Some("c1"));
        assert_eq!(
            (f.input_tokens, f.output_tokens, f.estimated),
            (Some(9), Some(2), false)
        );
        assert_eq!(f.finish_reasons, vec!["length"]);
        assert_eq!(f.output_chars, 6);
        assert!(f.first_content.unwrap() < f.last_content.unwrap());
    }

    #[test]
    fn stream_without_usage_estimates_from_content_chunks() {
        let mut scan = LlmScan::new(Operation::TextCompletion, true, 65536);
        feed(&mut scan, b"data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\",\"finish_reason\":\"stop\"}]}\n\n", MS);
        let f = scan.finish();
        assert_eq!((f.output_tokens, f.estimated), (Some(2), true));
        assert_eq!(f.input_tokens, None);
    }

    #[test]
    fn plain_answer() {
        let mut scan = LlmScan::new(Operation::Chat, false, 65536);
        feed(&mut scan, br#"{"id":"x","model":"m","choices":[{"message":{"content":"hi there"},"finish_reason":"content_filter"}],"#, MS);
        feed(
            &mut scan,
            br#""usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            MS,
        );
        let f = scan.finish();
        assert_eq!((f.input_tokens, f.output_tokens), (Some(3), Some(2)));
        assert_eq!(f.finish_reasons, vec!["content_filter"]);
        assert_eq!(f.output_chars, 8);
        assert_eq!(f.response_model.as_deref(), Some("m"));
    }

    /// A plain answer in one frame (kept without a copy) reads the same as
    /// one cut in two anywhere (gathered), and the cap holds either way.
    #[test]
    fn plain_answer_kept_as_frames_reads_the_same() {
        let body = br#"{"id":"x","model":"m","choices":[{"message":{"content":"hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let copied = {
            let mut scan = LlmScan::new(Operation::Chat, false, 65536);
            feed(&mut scan, body, MS);
            scan.finish()
        };
        assert_eq!(copied.output_tokens, Some(2));
        for cut in [0, 1, 40, body.len() - 1, body.len()] {
            let mut scan = LlmScan::new(Operation::Chat, false, 65536);
            scan.frame(&Bytes::copy_from_slice(&body[..cut]), MS);
            scan.frame(&Bytes::copy_from_slice(&body[cut..]), MS);
            assert_eq!(scan.finish(), copied, "cut at {cut}");
        }
        for cap in [10, body.len() - 1] {
            let mut one = LlmScan::new(Operation::Chat, false, cap);
            one.frame(&Bytes::from_static(body), MS);
            assert_eq!(
                one.finish().output_tokens,
                None,
                "one frame over a cap of {cap}"
            );
            let mut two = LlmScan::new(Operation::Chat, false, cap);
            two.frame(&Bytes::copy_from_slice(&body[..5]), MS);
            two.frame(&Bytes::copy_from_slice(&body[5..]), MS);
            assert_eq!(
                two.finish().output_tokens,
                None,
                "two frames over a cap of {cap}"
            );
        }
        let mut exact = LlmScan::new(Operation::Chat, false, body.len());
        exact.frame(&Bytes::from_static(body), MS);
        assert_eq!(exact.finish(), copied);
    }

    /// Characters are counted after unescaping; content given as parts (or
    /// null) counts none and falls back to `text`; an escaped finish reason
    /// is read.
    #[test]
    fn plain_answer_characters_escapes_and_parts() {
        let mut scan = LlmScan::new(Operation::Chat, false, 65536);
        feed(&mut scan,
            br#"{"choices":[{"message":{"content":"H\u00e9 \"x\"\n"},"finish_reason":"st\u006fp"},{"message":{"content":[{"type":"text","text":"abc"}]}},{"message":{"content":null},"text":"\u2603!"},{"message":{"content":7}}]}"#,
            MS,
        );
        let f = scan.finish();
        assert_eq!(f.output_chars, 7 + 2);
        assert_eq!(f.finish_reasons, vec!["stop"]);
    }

    #[test]
    fn oversized_plain_answer_gives_no_usage() {
        let mut scan = LlmScan::new(Operation::Chat, false, 10);
        feed(
            &mut scan,
            br#"{"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            MS,
        );
        assert_eq!(scan.finish().output_tokens, None);
    }

    #[test]
    fn model_labels_are_bounded() {
        let l = ModelLabels::new(2);
        assert_eq!(&*l.label("a"), "a");
        assert_eq!(&*l.label("b"), "b");
        assert_eq!(&*l.label("c"), "_OTHER");
        assert_eq!(&*l.label("a"), "a");
    }

    #[test]
    fn fields_without_parsing() {
        assert_eq!(
            request_model(br#"{"messages":[], "model" : "llama-3.1-8b", "stream":true}"#)
                .as_deref(),
            Some("llama-3.1-8b")
        );
        assert_eq!(request_model(br#"{"model": 5}"#), None);
        assert_eq!(
            string_field(br#"{"id":"a\"b"}"#, br#""id""#).as_deref(),
            Some("a\\\"b")
        );
    }
}
