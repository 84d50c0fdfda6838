//! Protocol decoders: turn a sampled exchange into [`Inference`] records, one
//! per row. Pure functions over bytes; nothing here does I/O or touches the
//! proxy. A body that does not match its protocol is a [`DecodeError`] with a
//! bounded reason; it never affects forwarded traffic (decoding happens on the
//! analysis thread, after the fact).

pub mod grpc;
pub mod json;
pub mod jsonpath;
pub mod kserve;
mod lenient;
pub mod oip;
pub mod openai;
pub mod sse;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::config::ProtocolConfig;
use crate::sample::Sample;

/// Which decoder handled an exchange (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Openai,
    OpenInferenceV2,
    KserveV1,
    TfServing,
    JsonPaths,
    /// The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`).
    OpenInferenceV2Grpc,
    /// TF Serving's gRPC `PredictionService/Predict`.
    TfServingGrpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Openai => "openai",
            Protocol::OpenInferenceV2 => "open-inference-v2",
            Protocol::KserveV1 => "kserve-v1",
            Protocol::TfServing => "tf-serving",
            Protocol::JsonPaths => "json-paths",
            Protocol::OpenInferenceV2Grpc => "open-inference-v2-grpc",
            Protocol::TfServingGrpc => "tf-serving-grpc",
        }
    }
}

/// What the request asked the model to do (`gen_ai.operation.name` for LLMs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Chat,
    TextCompletion,
    Embeddings,
    Predict,
    Generate,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::Embeddings => "embeddings",
            Operation::Predict => "predict",
            Operation::Generate => "generate",
        }
    }
}

/// One input or output value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Number(f64),
    Text(String),
    Bool(bool),
    Missing,
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Bool(b) => Some(*b as u8 as f64),
            _ => None,
        }
    }
}

/// Token counts of one LLM exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TokenUsage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    /// True when the server reported no usage and the counts were derived
    /// from the stream (one content chunk counted as one token).
    pub estimated: bool,
}

/// Request parameters worth keeping (LLM requests).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct RequestParams {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u64>,
    pub stream: bool,
}

/// One decoded exchange (or one row of a batch): what later stages (quality,
/// drift, alerts) consume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inference {
    pub request_id: String,
    /// Row within a batched request (0 for unbatched ones).
    pub row: usize,
    pub protocol: Protocol,
    pub operation: Operation,
    pub model: Option<String>,
    pub model_version: Option<String>,
    /// Named input features (tabular models).
    pub features: Vec<(String, Value)>,
    /// Prompt text (LLMs) or text inputs.
    pub input_text: Option<String>,
    /// The predicted label: a class or a regression value.
    pub prediction: Option<Value>,
    /// Scores or probabilities per class name.
    pub scores: Vec<(String, f64)>,
    /// Other named outputs.
    pub outputs: Vec<(String, Value)>,
    /// Generated text (LLMs).
    pub output_text: Option<String>,
    /// Embedding vector (embeddings requests).
    pub embedding: Option<Vec<f32>>,
    pub finish_reasons: Vec<String>,
    pub tool_calls: usize,
    pub usage: Option<TokenUsage>,
    pub params: RequestParams,
    pub response_id: Option<String>,
    pub streamed: bool,
    /// False when a stream ended before its terminator (`[DONE]` or a finish reason).
    pub complete: bool,
    pub status: u16,
    pub trace_id: Option<String>,
}

impl Inference {
    /// An empty record for `sample`, to be filled by a decoder.
    pub fn new(sample: &Sample, protocol: Protocol, operation: Operation) -> Inference {
        Inference {
            request_id: sample.request_id.clone(),
            row: 0,
            protocol,
            operation,
            model: None,
            model_version: None,
            features: Vec::new(),
            input_text: None,
            prediction: None,
            scores: Vec::new(),
            outputs: Vec::new(),
            output_text: None,
            embedding: None,
            finish_reasons: Vec::new(),
            tool_calls: 0,
            usage: None,
            params: RequestParams::default(),
            response_id: None,
            streamed: false,
            complete: true,
            status: sample.status,
            trace_id: sample.trace_id.clone(),
        }
    }
}

/// Why an exchange could not be decoded: a bounded set (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is not valid JSON")]
    InvalidJson,
    #[error("the body is empty")]
    EmptyBody,
    #[error("the body was longer than sampling.max_body_bytes and was cut")]
    Truncated,
    #[error("a required field is missing or has the wrong type")]
    MissingField,
    #[error("a tensor's shape does not match its data")]
    WrongShape,
    #[error("a tensor has an unknown datatype")]
    UnknownDatatype,
    #[error("the binary tensor extension could not be decoded")]
    BinaryTensor,
    #[error("the model server answered with an error")]
    ErrorResponse,
    #[error("no decoder recognises this exchange")]
    Unrecognised,
    #[error("a JSON path in protocol.json_paths matched nothing")]
    PathNotFound,
    #[error("the gRPC message framing is broken")]
    GrpcFrame,
    #[error("a gRPC message is not valid protobuf for its method")]
    InvalidProtobuf,
    #[error("a compressed gRPC message could not be inflated (unknown grpc-encoding or bad data)")]
    Compression,
}

impl DecodeError {
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::InvalidJson => "invalid_json",
            DecodeError::EmptyBody => "empty_body",
            DecodeError::Truncated => "truncated",
            DecodeError::MissingField => "missing_field",
            DecodeError::WrongShape => "wrong_shape",
            DecodeError::UnknownDatatype => "unknown_datatype",
            DecodeError::BinaryTensor => "binary_tensor",
            DecodeError::ErrorResponse => "error_response",
            DecodeError::Unrecognised => "unrecognised",
            DecodeError::PathNotFound => "path_not_found",
            DecodeError::GrpcFrame => "grpc_frame",
            DecodeError::InvalidProtobuf => "invalid_protobuf",
            DecodeError::Compression => "compression",
        }
    }
}

/// Which protocol a configured `protocol.kind` means for this exchange.
pub fn detect(sample: &Sample, kind: crate::config::ProtocolKind) -> Option<Protocol> {
    use crate::config::ProtocolKind as K;
    // gRPC is told by its content type and read by its method, whatever
    // protocol.kind says of the HTTP traffic.
    if sample.is_grpc() {
        return grpc::detect(sample);
    }
    match kind {
        K::Openai => return Some(Protocol::Openai),
        K::OpenInferenceV2 => return Some(Protocol::OpenInferenceV2),
        K::KserveV1 => return Some(Protocol::KserveV1),
        K::TfServing => return Some(Protocol::TfServing),
        K::JsonPaths => return Some(Protocol::JsonPaths),
        K::Auto => {}
    }
    let path = sample.path.split('?').next().unwrap_or("");
    if openai::operation_for_path(path).is_some() {
        return Some(Protocol::Openai);
    }
    if path.starts_with("/v2/models/") && path.ends_with("/infer") {
        return Some(Protocol::OpenInferenceV2);
    }
    if path.starts_with("/v1/models/")
        && (path.ends_with(":predict") || path.ends_with(":classify") || path.ends_with(":regress"))
    {
        return Some(Protocol::KserveV1);
    }
    // By body: the first bytes tell the shapes apart.
    let head = &sample.request_body.bytes[..sample.request_body.bytes.len().min(4096)];
    let has = |needle: &str| memchr::memmem::find(head, needle.as_bytes()).is_some();
    if has("\"datatype\"") && has("\"inputs\"") {
        Some(Protocol::OpenInferenceV2)
    } else if has("\"instances\"") || has("\"inputs\"") {
        Some(Protocol::KserveV1)
    } else if has("\"messages\"") || has("\"prompt\"") {
        Some(Protocol::Openai)
    } else {
        None
    }
}

/// Decodes one sample into records. A sample whose bodies were cut at the
/// capture cap is refused as `truncated` unless the protocol can still read it.
pub fn decode(sample: &Sample, config: &ProtocolConfig) -> Result<Vec<Inference>, DecodeError> {
    let protocol = detect(sample, config.kind).ok_or(DecodeError::Unrecognised)?;
    decode_as(sample, protocol, config)
}

/// Decodes one sample with a protocol already chosen by [`detect`].
pub fn decode_as(
    sample: &Sample,
    protocol: Protocol,
    config: &ProtocolConfig,
) -> Result<Vec<Inference>, DecodeError> {
    match protocol {
        Protocol::Openai => openai::decode(sample),
        Protocol::OpenInferenceV2 => oip::decode(sample, config),
        Protocol::KserveV1 | Protocol::TfServing => kserve::decode(sample, config, protocol),
        Protocol::JsonPaths => jsonpath::decode(sample, config),
        Protocol::OpenInferenceV2Grpc => grpc::oip::decode(sample, config),
        Protocol::TfServingGrpc => grpc::tfserving::decode(sample, config),
    }
}

/// Which model and version an exchange was for, known whatever its status:
/// a failed request belongs to its model and version as much as a good one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub model: Option<String>,
    pub version: Option<String>,
}

impl Identity {
    /// The `model` label: never empty (`unknown` when nothing names it).
    pub fn model_label(&self) -> &str {
        model_label(self.model.as_deref())
    }
}

/// The `model` label of exchanges and records that nothing names a model for.
pub const UNKNOWN_MODEL: &str = "unknown";

/// The `model` label of a record: never empty.
pub fn model_label(model: Option<&str>) -> &str {
    model.filter(|m| !m.is_empty()).unwrap_or(UNKNOWN_MODEL)
}

/// The model and version of one exchange, whatever its status. The model:
/// the path (`/v2/models/M/…`, `/v1/models/M…`), else the request body
/// (OpenAI's `model`, `protocol.json_paths.model`). The version, in the
/// order docs/rollouts.md gives: the path (`…/versions/V/…`, TF Serving's
/// `…/labels/L…`) or the configured JSON path, then
/// `protocol.model_version_header` on the response, then on the request,
/// then `protocol.default_model_version`. Decoded records may know better
/// (an Open Inference answer's `model_version`); this is what holds when
/// there is no answer to read.
pub fn identify(sample: &Sample, protocol: Option<Protocol>, config: &ProtocolConfig) -> Identity {
    let (model, version) = match protocol {
        Some(Protocol::OpenInferenceV2) => oip::model_from_path(&sample.path),
        Some(Protocol::KserveV1 | Protocol::TfServing) => kserve::model_from_path(&sample.path),
        Some(Protocol::Openai) => (openai::request_model(sample), None),
        Some(Protocol::JsonPaths) => jsonpath::model_and_version(sample, config),
        Some(Protocol::OpenInferenceV2Grpc) => grpc::oip::model_and_version(sample),
        Some(Protocol::TfServingGrpc) => grpc::tfserving::model_and_version(sample),
        None => (None, None),
    };
    let version = version.or_else(|| version_from_config(sample, config));
    Identity { model, version }
}

/// The version [`identify`] gives, for records that already name their
/// model: an OpenAI request's model is in its body, which the decoder has
/// just read, so the body is not parsed a second time for it.
pub fn identify_version(
    sample: &Sample,
    protocol: Protocol,
    config: &ProtocolConfig,
) -> Option<String> {
    match protocol {
        Protocol::Openai => version_from_config(sample, config),
        _ => identify(sample, Some(protocol), config).version,
    }
}

/// The model and version an exchange counts under: its first decoded
/// record's (which the decoder filled by [`identify`]), else [`identify`]
/// itself. None when it is neither recognisable model traffic nor given a
/// version by the headers or the default.
pub fn exchange_identity(
    sample: &Sample,
    records: &[Inference],
    config: &ProtocolConfig,
) -> Option<Identity> {
    if let Some(r) = records.first() {
        return Some(Identity {
            model: r.model.clone(),
            version: r.model_version.clone(),
        });
    }
    let detected = detect(sample, config.kind);
    let id = identify(sample, detected, config);
    (detected.is_some() || id.version.is_some()).then_some(id)
}

/// The version that `protocol.model_version_header` (response, its
/// trailers (gRPC trailing metadata), then request) or else `protocol.default_model_version` gives.
fn version_from_config(sample: &Sample, config: &ProtocolConfig) -> Option<String> {
    let header = config.model_version_header.as_str();
    let from = |headers: &http::HeaderMap| {
        headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    (!header.is_empty())
        .then(|| {
            from(&sample.response_headers)
                .or_else(|| from(&sample.response_trailers))
                .or_else(|| from(&sample.request_headers))
        })
        .flatten()
        .or_else(|| {
            (!config.default_model_version.is_empty()).then(|| config.default_model_version.clone())
        })
}

/// The per-model settings for `model` (exact name first, then `*`).
pub fn model_settings<'a>(
    config: &'a ProtocolConfig,
    model: Option<&str>,
) -> Option<&'a crate::config::ModelSettings> {
    let by_name = model.and_then(|m| config.models.iter().find(|s| s.name == m));
    by_name.or_else(|| config.models.iter().find(|s| s.name == "*"))
}

/// What the per-model settings say about a model's outputs.
pub struct OutputNames<'a> {
    /// The output holding the predicted label, when configured.
    pub label: Option<&'a str>,
    /// The output holding per-class scores, when configured.
    pub scores: Option<&'a str>,
    pub class_names: &'a [String],
}

pub fn output_names(settings: Option<&crate::config::ModelSettings>) -> OutputNames<'_> {
    let non_empty = |s: &str| !s.is_empty();
    OutputNames {
        label: settings
            .map(|s| s.label_output.as_str())
            .filter(|s| non_empty(s)),
        scores: settings
            .map(|s| s.scores_output.as_str())
            .filter(|s| non_empty(s)),
        class_names: settings.map(|s| s.class_names.as_slice()).unwrap_or(&[]),
    }
}

/// Index of the largest score.
pub fn argmax(scores: &[f64]) -> Option<usize> {
    scores
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// Fills `scores` (with class names) and, when missing, `prediction` (argmax).
pub fn set_scores(record: &mut Inference, scores: &[f64], class_names: &[String]) {
    record.scores = scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                class_names.get(i).cloned().unwrap_or_else(|| i.to_string()),
                *s,
            )
        })
        .collect();
    if record.prediction.is_none() {
        if let Some(i) = argmax(scores) {
            record.prediction = Some(Value::Text(record.scores[i].0.clone()));
        }
    }
}
