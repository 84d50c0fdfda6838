//! OpenAI-compatible APIs (vLLM, TGI, llama.cpp, Ollama, LiteLLM):
//! `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, plain and
//! streaming (SSE), with usage from the body or the final usage chunk.

use base64::Engine;
use serde_json::Value as Json;

use super::lenient::Object;
use super::{json, sse, DecodeError, Inference, Operation, Protocol, TokenUsage};
use crate::sample::Sample;

/// The operation an OpenAI-style path stands for (with or without `/v1`,
/// llama.cpp's own paths and Ollama's `/api/*`). The proxy's per-request LLM
/// scan and the decoder both read this one table.
pub fn operation_for_path(path: &str) -> Option<Operation> {
    let path = path.split('?').next().unwrap_or("");
    match path.trim_end_matches('/') {
        "/v1/chat/completions" | "/chat/completions" | "/api/chat" => Some(Operation::Chat),
        "/v1/completions" | "/completions" | "/completion" | "/api/generate" => {
            Some(Operation::TextCompletion)
        }
        "/v1/embeddings" | "/embeddings" | "/embedding" | "/api/embed" | "/api/embeddings" => {
            Some(Operation::Embeddings)
        }
        _ => None,
    }
}

/// Text of a message's `content`: a string, or the text parts of an array.
fn content_text(content: &Json) -> Option<String> {
    match content {
        Json::String(s) => Some(s.clone()),
        Json::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Json::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

fn prompt_text(request: &Json, operation: Operation) -> Option<String> {
    match operation {
        Operation::Chat => {
            let messages = request.get("messages")?.as_array()?;
            let parts: Vec<String> = messages
                .iter()
                .filter_map(|m| {
                    let role = m.get("role").and_then(Json::as_str).unwrap_or("user");
                    content_text(m.get("content")?).map(|c| format!("{role}: {c}"))
                })
                .collect();
            Some(parts.join("\n"))
        }
        _ => match request.get("prompt")? {
            Json::String(s) => Some(s.clone()),
            Json::Array(items) => Some(
                items
                    .iter()
                    .filter_map(Json::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        },
    }
}

fn usage(v: &Json) -> Option<TokenUsage> {
    let u = v.get("usage")?;
    if u.is_null() {
        return None;
    }
    Some(TokenUsage {
        input: u.get("prompt_tokens").and_then(Json::as_u64),
        output: u.get("completion_tokens").and_then(Json::as_u64),
        estimated: false,
    })
}

fn is_truncated(body: &crate::sample::CapturedBody) -> bool {
    body.truncated
}

/// The model a request asked for (`model` in its body), also when the body
/// was cut at the capture cap or the exchange failed.
pub fn request_model(sample: &Sample) -> Option<String> {
    match json::parse(&sample.request_body.bytes) {
        Ok(request) => request
            .get("model")
            .and_then(Json::as_str)
            .map(str::to_string),
        Err(_) => json::string_field(&sample.request_body.bytes, br#""model""#),
    }
}

/// Decodes an OpenAI-style exchange into one record (embeddings: one per input).
pub fn decode(sample: &Sample) -> Result<Vec<Inference>, DecodeError> {
    decode_with(sample, true)
}

/// [`decode`], with the typed reading of chat and completion bodies or
/// (`typed` false, to compare the two in tests) without it.
pub(super) fn decode_with(sample: &Sample, typed: bool) -> Result<Vec<Inference>, DecodeError> {
    let operation = operation_for_path(&sample.path).unwrap_or_else(|| {
        // Unknown path, OpenAI-shaped body: guess from the fields.
        if memchr::memmem::find(&sample.request_body.bytes, b"\"messages\"").is_some() {
            Operation::Chat
        } else {
            Operation::TextCompletion
        }
    });
    if is_truncated(&sample.request_body) {
        return Err(DecodeError::Truncated);
    }
    let mut record = Inference::new(sample, Protocol::Openai, operation);
    if operation == Operation::Embeddings {
        let request = json::parse(&sample.request_body.bytes)?;
        if !request.is_object() {
            return Err(DecodeError::MissingField);
        }
        apply_request(&mut record, &request, operation);
        return decode_embeddings(sample, &request, record);
    }
    // Typed first: it reads only the fields below. A body it cannot read
    // the way `Json::get` would (NaN tokens, a duplicate key, a message that
    // is not an object) is read into a generic value.
    let typed_request = typed
        .then(|| typed::read::<typed::Request>(&sample.request_body.bytes))
        .flatten();
    match typed_request {
        Some(Object(request)) => request.apply(&mut record, operation),
        None => {
            let request = json::parse(&sample.request_body.bytes)?;
            if !request.is_object() {
                return Err(DecodeError::MissingField);
            }
            apply_request(&mut record, &request, operation);
        }
    }

    let streamed = sample
        .response_headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.starts_with("text/event-stream"))
        .unwrap_or(false);
    record.streamed = streamed;
    if streamed {
        decode_stream(sample, &mut record)?;
    } else {
        if is_truncated(&sample.response_body) {
            return Err(DecodeError::Truncated);
        }
        let typed_response = typed
            .then(|| typed::read::<typed::Response>(&sample.response_body.bytes))
            .flatten();
        match typed_response {
            Some(Object(response)) => {
                if response.error.is_present() || sample.status >= 400 {
                    return Err(DecodeError::ErrorResponse);
                }
                response.apply(&mut record, operation);
            }
            None => {
                let response = json::parse(&sample.response_body.bytes)?;
                if response.get("error").is_some() || sample.status >= 400 {
                    return Err(DecodeError::ErrorResponse);
                }
                apply_response(&mut record, &response, operation);
            }
        }
    }
    Ok(vec![record])
}

/// The request's model, parameters and prompt, from a generic value.
fn apply_request(record: &mut Inference, request: &Json, operation: Operation) {
    record.model = request
        .get("model")
        .and_then(Json::as_str)
        .map(str::to_string);
    record.params.temperature = request.get("temperature").and_then(Json::as_f64);
    record.params.top_p = request.get("top_p").and_then(Json::as_f64);
    record.params.max_tokens = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Json::as_u64);
    record.params.stream = request
        .get("stream")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    if operation != Operation::Embeddings {
        record.input_text = prompt_text(request, operation);
    }
}

fn apply_response(record: &mut Inference, response: &Json, operation: Operation) {
    if let Some(m) = response.get("model").and_then(Json::as_str) {
        record.model = Some(m.to_string());
    }
    record.response_id = response
        .get("id")
        .and_then(Json::as_str)
        .map(str::to_string);
    record.usage = usage(response);
    let mut text = String::new();
    if let Some(choices) = response.get("choices").and_then(Json::as_array) {
        for (i, choice) in choices.iter().enumerate() {
            let t = match operation {
                Operation::Chat => choice
                    .get("message")
                    .and_then(|m| m.get("content"))
                    .and_then(content_text),
                _ => choice
                    .get("text")
                    .and_then(Json::as_str)
                    .map(str::to_string),
            };
            if i == 0 {
                text = t.unwrap_or_default();
            }
            if let Some(calls) = choice
                .get("message")
                .and_then(|m| m.get("tool_calls"))
                .and_then(Json::as_array)
            {
                record.tool_calls += calls.len();
            }
            if let Some(r) = choice.get("finish_reason").and_then(Json::as_str) {
                record.finish_reasons.push(r.to_string());
            }
        }
    }
    record.output_text = Some(text);
}

/// One streamed chunk, typed so that only the fields we read are built.
#[derive(serde::Deserialize)]
struct Chunk {
    id: Option<String>,
    model: Option<String>,
    usage: Option<ChunkUsage>,
    choices: Option<Vec<ChunkChoice>>,
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ChunkUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice {
    index: Option<u64>,
    delta: Option<Delta>,
    text: Option<String>,
    finish_reason: Option<String>,
}

#[derive(serde::Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(serde::Deserialize)]
struct ToolCallDelta {
    index: Option<u64>,
}

fn decode_stream(sample: &Sample, record: &mut Inference) -> Result<(), DecodeError> {
    let events = sse::parse(&sample.response_body.bytes);
    let mut text = String::new();
    let mut done = false;
    let mut content_chunks = 0u64;
    let mut tool_call_ids = std::collections::BTreeSet::new();
    for data in &events.data {
        if data.as_ref() == b"[DONE]" {
            done = true;
            continue;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
            // Invalid JSON or broken UTF-8 inside one event: skip the event, keep the rest.
            continue;
        };
        if chunk.error.is_some() {
            return Err(DecodeError::ErrorResponse);
        }
        if record.response_id.is_none() {
            record.response_id = chunk.id;
        }
        if let Some(m) = chunk.model {
            record.model = Some(m);
        }
        if let Some(u) = chunk.usage {
            record.usage = Some(TokenUsage {
                input: u.prompt_tokens,
                output: u.completion_tokens,
                estimated: false,
            });
        }
        // Some servers send `choices: null` on the usage chunk.
        for choice in chunk.choices.unwrap_or_default() {
            let index = choice.index.unwrap_or(0);
            let (content, calls) = match choice.delta {
                Some(d) => (d.content, d.tool_calls),
                None => (None, None),
            };
            if let Some(p) = content.or(choice.text).filter(|p| !p.is_empty()) {
                if index == 0 {
                    text.push_str(&p);
                }
                content_chunks += 1;
            }
            for call in calls.unwrap_or_default() {
                let id = (index, call.index.unwrap_or(tool_call_ids.len() as u64));
                tool_call_ids.insert(id);
            }
            if let Some(r) = choice.finish_reason {
                record.finish_reasons.push(r);
            }
        }
    }
    record.tool_calls = tool_call_ids.len();
    record.output_text = Some(text);
    record.complete = (done || !record.finish_reasons.is_empty())
        && events.trailing == 0
        && !sample.response_body.truncated;
    if record.usage.is_none() && content_chunks > 0 {
        record.usage = Some(TokenUsage {
            input: None,
            output: Some(content_chunks),
            estimated: true,
        });
    }
    Ok(())
}

fn decode_embeddings(
    sample: &Sample,
    request: &Json,
    mut base: Inference,
) -> Result<Vec<Inference>, DecodeError> {
    if sample.response_body.truncated {
        return Err(DecodeError::Truncated);
    }
    let response = json::parse(&sample.response_body.bytes)?;
    if response.get("error").is_some() || sample.status >= 400 {
        return Err(DecodeError::ErrorResponse);
    }
    let inputs: Vec<Option<String>> = match request.get("input") {
        Some(Json::String(s)) => vec![Some(s.clone())],
        Some(Json::Array(items)) if items.iter().all(Json::is_string) => items
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect(),
        Some(Json::Array(items)) => items.iter().map(|_| None).collect(), // token arrays
        _ => return Err(DecodeError::MissingField),
    };
    if let Some(m) = response.get("model").and_then(Json::as_str) {
        base.model = Some(m.to_string());
    }
    base.usage = usage(&response);
    let data = response
        .get("data")
        .and_then(Json::as_array)
        .ok_or(DecodeError::MissingField)?;
    let mut out = Vec::with_capacity(data.len());
    for (i, item) in data.iter().enumerate() {
        let row = item
            .get("index")
            .and_then(Json::as_u64)
            .map(|x| x as usize)
            .unwrap_or(i);
        let vector = match item.get("embedding") {
            Some(Json::Array(v)) => v
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                .collect(),
            Some(Json::String(b64)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| DecodeError::MissingField)?;
                if bytes.len() % 4 != 0 {
                    return Err(DecodeError::WrongShape);
                }
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            _ => return Err(DecodeError::MissingField),
        };
        let mut r = base.clone();
        r.row = row;
        r.input_text = inputs.get(row).cloned().flatten();
        r.embedding = Some(vector);
        if i > 0 {
            r.usage = None; // usage belongs to the request, counted once
        }
        out.push(r);
    }
    Ok(out)
}

/// The fields of a chat or completion exchange that the decoder reads, typed
/// so that nothing else is built; each reads like the generic path's
/// `Json::get` and `as_*` (see [`super::lenient`]).
pub(super) mod typed {
    use serde::de::{DeserializeOwned, IgnoredAny};
    use serde::Deserialize;

    use super::super::lenient::{Object, Scalar, Texts};
    use super::super::{Inference, Operation, TokenUsage};

    /// A body read typed; None where the generic reading is needed. Broken
    /// UTF-8 is one such case: serde_json skips the fields a type ignores
    /// without checking them, where the generic reading refuses the body.
    pub fn read<T: DeserializeOwned>(body: &[u8]) -> Option<Object<T>> {
        let text = std::str::from_utf8(body).ok()?;
        serde_json::from_str(text).ok()
    }

    #[derive(Deserialize)]
    pub struct Request {
        #[serde(default)]
        model: Scalar,
        #[serde(default)]
        temperature: Scalar,
        #[serde(default)]
        top_p: Scalar,
        #[serde(default)]
        max_completion_tokens: Scalar,
        #[serde(default)]
        max_tokens: Scalar,
        #[serde(default)]
        stream: Scalar,
        messages: Option<Texts<Object<Message>>>,
        prompt: Option<Texts<Scalar>>,
    }

    #[derive(Deserialize)]
    pub struct Message {
        #[serde(default)]
        role: Scalar,
        content: Option<Texts<Object<Part>>>,
    }

    /// One part of a message's content (`{"type":"text","text":"…"}`).
    #[derive(Deserialize)]
    pub struct Part {
        #[serde(default)]
        text: Scalar,
    }

    #[derive(Deserialize)]
    pub struct Response {
        #[serde(default)]
        pub error: Scalar,
        #[serde(default)]
        model: Scalar,
        #[serde(default)]
        id: Scalar,
        usage: Option<Object<Usage>>,
        choices: Option<Texts<Object<Choice>>>,
    }

    #[derive(Deserialize)]
    pub struct Usage {
        #[serde(default)]
        prompt_tokens: Scalar,
        #[serde(default)]
        completion_tokens: Scalar,
    }

    #[derive(Deserialize)]
    pub struct Choice {
        message: Option<Object<AnswerMessage>>,
        #[serde(default)]
        text: Scalar,
        #[serde(default)]
        finish_reason: Scalar,
    }

    #[derive(Deserialize)]
    pub struct AnswerMessage {
        content: Option<Texts<Object<Part>>>,
        tool_calls: Option<Texts<IgnoredAny>>,
    }

    /// A message's text: a string, or its text parts joined by newlines.
    fn content_text(content: Texts<Object<Part>>) -> Option<String> {
        match content {
            Texts::One(s) => Some(s),
            Texts::Many(parts) => {
                let texts: Vec<&str> = parts.iter().filter_map(|p| p.0.text.as_str()).collect();
                (!texts.is_empty()).then(|| texts.join("\n"))
            }
            Texts::None => None,
        }
    }

    impl Request {
        pub fn apply(self, record: &mut Inference, operation: Operation) {
            record.model = self.model.into_string();
            record.params.temperature = self.temperature.as_f64();
            record.params.top_p = self.top_p.as_f64();
            record.params.max_tokens = if self.max_completion_tokens.is_present() {
                self.max_completion_tokens.as_u64()
            } else {
                self.max_tokens.as_u64()
            };
            record.params.stream = self.stream.as_bool().unwrap_or(false);
            record.input_text = match operation {
                Operation::Chat => match self.messages {
                    Some(Texts::Many(messages)) => Some(
                        messages
                            .into_iter()
                            .filter_map(|Object(m)| {
                                let c = content_text(m.content?)?;
                                Some(format!("{}: {c}", m.role.as_str().unwrap_or("user")))
                            })
                            .collect::<Vec<_>>()
                            .join("\n"),
                    ),
                    _ => None,
                },
                _ => match self.prompt {
                    Some(Texts::One(s)) => Some(s),
                    Some(Texts::Many(items)) => Some(
                        items
                            .iter()
                            .filter_map(Scalar::as_str)
                            .collect::<Vec<_>>()
                            .join("\n"),
                    ),
                    _ => None,
                },
            };
        }
    }

    impl Response {
        pub fn apply(self, record: &mut Inference, operation: Operation) {
            if let Some(m) = self.model.into_string() {
                record.model = Some(m);
            }
            record.response_id = self.id.into_string();
            record.usage = self.usage.map(|Object(u)| TokenUsage {
                input: u.prompt_tokens.as_u64(),
                output: u.completion_tokens.as_u64(),
                estimated: false,
            });
            let mut text = String::new();
            if let Some(Texts::Many(choices)) = self.choices {
                for (i, Object(choice)) in choices.into_iter().enumerate() {
                    let (content, calls) = match choice.message {
                        Some(Object(m)) => (m.content, m.tool_calls),
                        None => (None, None),
                    };
                    let t = match operation {
                        Operation::Chat => content.and_then(content_text),
                        _ => choice.text.into_string(),
                    };
                    if i == 0 {
                        text = t.unwrap_or_default();
                    }
                    if let Some(Texts::Many(calls)) = calls {
                        record.tool_calls += calls.len();
                    }
                    if let Some(r) = choice.finish_reason.into_string() {
                        record.finish_reasons.push(r);
                    }
                }
            }
            record.output_text = Some(text);
        }
    }
}
