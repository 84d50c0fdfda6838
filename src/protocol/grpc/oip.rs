//! The Open Inference Protocol v2 over gRPC: `ModelInfer` and
//! `ModelStreamInfer` of `inference.GRPCInferenceService`. Tensors come as
//! typed `contents` or as `raw_input_contents` / `raw_output_contents`
//! (little-endian, BYTES with 4-byte length prefixes), and become the same
//! [`Tensor`]s, and so the same records, as the REST decoder's.

use super::pb::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelStreamInferResponse,
};
use super::{check_status, messages, parse, single, Method};
use crate::config::ProtocolConfig;
use crate::protocol::oip::{
    apply_outputs, binary_values, datatype_ok, row_features, Tensor, MAX_ELEMENTS,
};
use crate::protocol::{model_settings, DecodeError, Inference, Operation, Protocol, Value};
use crate::sample::Sample;

/// The model and version a call names, known without decoding the answer
/// (a failed call's): the request's `model_name` and `model_version`.
pub fn model_and_version(sample: &Sample) -> (Option<String>, Option<String>) {
    match super::first_request::<ModelInferRequest>(sample) {
        Some(req) => (non_empty(&req.model_name), non_empty(&req.model_version)),
        None => (None, None),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Decodes a `ModelInfer` call (one record per row) or a `ModelStreamInfer`
/// stream (each answer matched to its request, by `id`, else by position).
pub fn decode(sample: &Sample, config: &ProtocolConfig) -> Result<Vec<Inference>, DecodeError> {
    match super::method(&sample.path) {
        Method::ModelStreamInfer => decode_stream(sample, config),
        _ => {
            check_status(sample)?;
            let req: ModelInferRequest = single(&sample.request_body, &sample.request_headers)?;
            let resp: ModelInferResponse = single(&sample.response_body, &sample.response_headers)?;
            let id = super::request_id(sample, &req.id);
            records(sample, config, &req, &resp, id)
        }
    }
}

/// One request and its answer as records.
fn records(
    sample: &Sample,
    config: &ProtocolConfig,
    req: &ModelInferRequest,
    resp: &ModelInferResponse,
    request_id: String,
) -> Result<Vec<Inference>, DecodeError> {
    let inputs = tensors(
        req.inputs
            .iter()
            .map(|t| (&t.name, &t.datatype, &t.shape, t.contents.as_ref())),
        &req.raw_input_contents,
    )?;
    let outputs = tensors(
        resp.outputs
            .iter()
            .map(|t| (&t.name, &t.datatype, &t.shape, t.contents.as_ref())),
        &resp.raw_output_contents,
    )?;
    let model = non_empty(&resp.model_name).or_else(|| non_empty(&req.model_name));
    let version = non_empty(&resp.model_version).or_else(|| non_empty(&req.model_version));
    let settings = model_settings(config, model.as_deref());
    let rows = inputs.first().map(|t| t.rows().0).unwrap_or(1);
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut r = Inference::new(sample, Protocol::OpenInferenceV2Grpc, Operation::Predict);
        r.request_id = request_id.clone();
        r.row = row;
        r.model = model.clone();
        r.model_version = version.clone();
        r.response_id = non_empty(&resp.id);
        r.features = row_features(&inputs, row, settings);
        apply_outputs(&mut r, &outputs, row, settings);
        out.push(r);
    }
    Ok(out)
}

/// A `ModelStreamInfer` exchange: many requests and answers on one stream.
/// Triton wraps each answer in a `ModelStreamInferResponse` (with an
/// `error_message` for a failed one); MLServer sends plain
/// `ModelInferResponse`s. A request without an `id` gets the stream's id
/// with its position (`<x-request-id>:<n>`) as its join key.
fn decode_stream(sample: &Sample, config: &ProtocolConfig) -> Result<Vec<Inference>, DecodeError> {
    if sample.status >= 400 {
        return Err(DecodeError::ErrorResponse);
    }
    let requests = messages(&sample.request_body, &sample.request_headers)?
        .iter()
        .map(|m| parse::<ModelInferRequest>(m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut answers: Vec<Option<ModelInferResponse>> = Vec::new();
    let mut failed = 0usize;
    for m in messages(&sample.response_body, &sample.response_headers)?.iter() {
        match stream_answer(m)? {
            Some(a) => answers.push(Some(a)),
            None => failed += 1,
        }
    }
    if requests.is_empty() {
        return Err(DecodeError::EmptyBody);
    }
    // Match by id first; what is left pairs up in order.
    let mut matched: Vec<Option<ModelInferResponse>> = vec![None; requests.len()];
    for (i, req) in requests.iter().enumerate() {
        if req.id.is_empty() {
            continue;
        }
        if let Some(slot) = answers
            .iter_mut()
            .find(|a| a.as_ref().is_some_and(|a| a.id == req.id))
        {
            matched[i] = slot.take();
        }
    }
    let mut rest = answers.into_iter().flatten();
    for slot in matched.iter_mut().filter(|m| m.is_none()) {
        *slot = rest.next();
    }
    let mut out = Vec::new();
    for (n, (req, resp)) in requests.iter().zip(matched).enumerate() {
        let Some(resp) = resp else {
            continue;
        };
        let id = if req.id.is_empty() {
            format!("{}:{n}", sample.request_id)
        } else {
            req.id.clone()
        };
        out.extend(records(sample, config, req, &resp, id)?);
    }
    if out.is_empty() {
        return Err(
            if failed > 0 || sample.grpc_status.is_some_and(|c| c != 0) {
                DecodeError::ErrorResponse
            } else {
                DecodeError::EmptyBody
            },
        );
    }
    Ok(out)
}

/// One answer on a stream: a plain `ModelInferResponse` (MLServer) when it
/// has outputs, else Triton's `ModelStreamInferResponse`; None for an
/// answer that carries an error.
fn stream_answer(message: &[u8]) -> Result<Option<ModelInferResponse>, DecodeError> {
    if let Ok(plain) = parse::<ModelInferResponse>(message) {
        if !plain.outputs.is_empty() {
            return Ok(Some(plain));
        }
    }
    let wrapped: ModelStreamInferResponse = parse(message)?;
    if !wrapped.error_message.is_empty() {
        return Ok(None);
    }
    wrapped
        .infer_response
        .map(Some)
        .ok_or(DecodeError::MissingField)
}

/// A message's tensors: `(name, datatype, shape, contents)` each, with the
/// message's raw contents (one per tensor, in order) when it has any.
fn tensors<'a>(
    declared: impl Iterator<
        Item = (
            &'a String,
            &'a String,
            &'a Vec<i64>,
            Option<&'a InferTensorContents>,
        ),
    >,
    raw: &[Vec<u8>],
) -> Result<Vec<Tensor>, DecodeError> {
    declared
        .enumerate()
        .map(|(i, (name, datatype, shape, contents))| {
            tensor(name, datatype, shape, contents, raw.get(i), !raw.is_empty())
        })
        .collect()
}

/// One tensor from its typed contents or its raw bytes. Shapes are checked
/// before anything is allocated: a declared 2 GB tensor is `wrong_shape`.
fn tensor(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: Option<&InferTensorContents>,
    raw: Option<&Vec<u8>>,
    raw_used: bool,
) -> Result<Tensor, DecodeError> {
    if !datatype_ok(datatype) {
        return Err(DecodeError::UnknownDatatype);
    }
    let elements = shape
        .iter()
        .try_fold(1u64, |acc, d| {
            u64::try_from(*d).ok().and_then(|d| acc.checked_mul(d))
        })
        .filter(|n| *n <= MAX_ELEMENTS)
        .ok_or(DecodeError::WrongShape)?;
    let data = match (raw_used, raw, contents) {
        (true, Some(bytes), _) => binary_values(datatype, bytes)?,
        (true, None, _) => return Err(DecodeError::BinaryTensor),
        (false, _, Some(c)) => typed_values(datatype, c)?,
        (false, _, None) => return Err(DecodeError::MissingField),
    };
    if data.len() as u64 != elements {
        return Err(DecodeError::WrongShape);
    }
    Ok(Tensor {
        name: name.to_string(),
        shape: shape.iter().map(|d| *d as u64).collect(),
        datatype: datatype.to_string(),
        data,
    })
}

/// The typed contents field a datatype uses (the protocol has none for FP16
/// and BF16: those travel only as raw bytes).
fn typed_values(datatype: &str, c: &InferTensorContents) -> Result<Vec<Value>, DecodeError> {
    let num = |v: f64| Value::Number(v);
    Ok(match datatype {
        "BOOL" => c.bool_contents.iter().map(|b| Value::Bool(*b)).collect(),
        "INT8" | "INT16" | "INT32" => c.int_contents.iter().map(|v| num(*v as f64)).collect(),
        "INT64" => c.int64_contents.iter().map(|v| num(*v as f64)).collect(),
        "UINT8" | "UINT16" | "UINT32" => c.uint_contents.iter().map(|v| num(*v as f64)).collect(),
        "UINT64" => c.uint64_contents.iter().map(|v| num(*v as f64)).collect(),
        "FP32" => c.fp32_contents.iter().map(|v| num(*v as f64)).collect(),
        "FP64" => c.fp64_contents.iter().map(|v| num(*v)).collect(),
        "BYTES" => c
            .bytes_contents
            .iter()
            .map(|b| Value::Text(String::from_utf8_lossy(b).into_owned()))
            .collect(),
        _ => return Err(DecodeError::BinaryTensor),
    })
}
