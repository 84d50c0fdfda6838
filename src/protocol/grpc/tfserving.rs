//! TF Serving's gRPC `PredictionService/Predict`: `TensorProto`s by input and
//! output name, with typed values (`float_val`, `int64_val`, …) or
//! `tensor_content` (little-endian bytes), turned into the same [`Tensor`]s
//! and records as the Open Inference decoders'. Inputs are read in name order
//! (a protobuf map has none of its own).

use super::pb::tensorflow::serving::{
    model_spec::VersionChoice, ModelSpec, PredictRequest, PredictResponse,
};
use super::pb::tensorflow::{DataType, TensorProto};
use super::{check_status, single};
use crate::config::ProtocolConfig;
use crate::protocol::oip::{
    apply_outputs, binary_values, half_to_f32, row_features, Tensor, MAX_ELEMENTS,
};
use crate::protocol::{model_settings, DecodeError, Inference, Operation, Protocol, Value};
use crate::sample::Sample;

fn spec(spec: Option<&ModelSpec>) -> (Option<String>, Option<String>) {
    let Some(s) = spec else {
        return (None, None);
    };
    let version = match &s.version_choice {
        Some(VersionChoice::Version(v)) => Some(v.to_string()),
        Some(VersionChoice::VersionLabel(l)) if !l.is_empty() => Some(l.clone()),
        _ => None,
    };
    ((!s.name.is_empty()).then(|| s.name.clone()), version)
}

/// The model and version the request's `model_spec` names.
pub fn model_and_version(sample: &Sample) -> (Option<String>, Option<String>) {
    super::first_request::<PredictRequest>(sample)
        .map(|req| spec(req.model_spec.as_ref()))
        .unwrap_or((None, None))
}

/// Decodes a `Predict` call: one record per row of the batch.
pub fn decode(sample: &Sample, config: &ProtocolConfig) -> Result<Vec<Inference>, DecodeError> {
    check_status(sample)?;
    let req: PredictRequest = single(&sample.request_body, &sample.request_headers)?;
    let resp: PredictResponse = single(&sample.response_body, &sample.response_headers)?;
    let inputs = req
        .inputs
        .iter()
        .map(|(name, t)| tensor(name, t))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = resp
        .outputs
        .iter()
        .map(|(name, t)| tensor(name, t))
        .collect::<Result<Vec<_>, _>>()?;
    let (req_model, req_version) = spec(req.model_spec.as_ref());
    let (resp_model, resp_version) = spec(resp.model_spec.as_ref());
    let model = resp_model.or(req_model);
    let version = resp_version.or(req_version);
    let settings = model_settings(config, model.as_deref());
    let rows = inputs.first().map(|t| t.rows().0).unwrap_or(1);
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut r = Inference::new(sample, Protocol::TfServingGrpc, Operation::Predict);
        r.row = row;
        r.model = model.clone();
        r.model_version = version.clone();
        r.features = row_features(&inputs, row, settings);
        apply_outputs(&mut r, &outputs, row, settings);
        out.push(r);
    }
    Ok(out)
}

/// The Open Inference datatype of a TensorFlow dtype (None: not a value
/// type modelwatch reads, such as complex numbers, resources, variants).
fn datatype(dtype: i32) -> Option<&'static str> {
    Some(match DataType::try_from(dtype).ok()? {
        DataType::DtFloat => "FP32",
        DataType::DtDouble => "FP64",
        DataType::DtHalf => "FP16",
        DataType::DtBfloat16 => "BF16",
        DataType::DtInt8 => "INT8",
        DataType::DtInt16 => "INT16",
        DataType::DtInt32 => "INT32",
        DataType::DtInt64 => "INT64",
        DataType::DtUint8 => "UINT8",
        DataType::DtUint16 => "UINT16",
        DataType::DtUint32 => "UINT32",
        DataType::DtUint64 => "UINT64",
        DataType::DtBool => "BOOL",
        DataType::DtString => "BYTES",
        _ => return None,
    })
}

/// One `TensorProto` as a tensor. A typed list of one value fills the whole
/// shape (TensorFlow's rule for constant tensors).
fn tensor(name: &str, t: &TensorProto) -> Result<Tensor, DecodeError> {
    let dt = datatype(t.dtype).ok_or(DecodeError::UnknownDatatype)?;
    let dims = t
        .tensor_shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or(&[]);
    let shape: Vec<u64> = dims
        .iter()
        .map(|d| u64::try_from(d.size).map_err(|_| DecodeError::WrongShape))
        .collect::<Result<_, _>>()?;
    let elements = shape
        .iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(*d))
        .filter(|n| *n <= MAX_ELEMENTS)
        .ok_or(DecodeError::WrongShape)?;
    let mut data = if !t.tensor_content.is_empty() && dt != "BYTES" {
        binary_values(dt, &t.tensor_content)?
    } else {
        typed_values(dt, t)
    };
    if data.len() == 1 && elements > 1 {
        data = vec![data[0].clone(); elements as usize];
    }
    if data.len() as u64 != elements {
        return Err(DecodeError::WrongShape);
    }
    Ok(Tensor {
        name: name.to_string(),
        shape,
        datatype: dt.to_string(),
        data,
    })
}

fn typed_values(dt: &str, t: &TensorProto) -> Vec<Value> {
    let num = |v: f64| Value::Number(v);
    match dt {
        "FP32" => t.float_val.iter().map(|v| num(*v as f64)).collect(),
        "FP64" => t.double_val.iter().map(|v| num(*v)).collect(),
        // Half precision travels as the 16 bits in an int32.
        "FP16" => t
            .half_val
            .iter()
            .map(|v| num(half_to_f32(*v as u16) as f64))
            .collect(),
        "BF16" => t
            .half_val
            .iter()
            .map(|v| num(f32::from_bits((*v as u32 & 0xffff) << 16) as f64))
            .collect(),
        "INT64" => t.int64_val.iter().map(|v| num(*v as f64)).collect(),
        "BOOL" => t.bool_val.iter().map(|b| Value::Bool(*b)).collect(),
        "BYTES" => t
            .string_val
            .iter()
            .map(|b| Value::Text(String::from_utf8_lossy(b).into_owned()))
            .collect(),
        // INT8/16/32 and UINT8/16 use int_val.
        _ => t.int_val.iter().map(|v| num(*v as f64)).collect(),
    }
}
