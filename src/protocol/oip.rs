//! Open Inference Protocol v2 REST (KServe v2, Triton, MLServer): `inputs` and
//! `outputs` tensors with name, shape, datatype and flat or nested data; the
//! binary tensor extension (`Inference-Header-Content-Length`).

use serde_json::Value as Json;

use super::{json, set_scores, DecodeError, Inference, Operation, Protocol, Value};
use crate::config::{ModelSettings, ProtocolConfig};
use crate::sample::Sample;

/// The largest element count a tensor may declare before it is refused as a
/// wrong shape (a 2 GB declaration must not make us allocate).
pub(crate) const MAX_ELEMENTS: u64 = 1 << 24;

/// One decoded tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub datatype: String,
    pub data: Vec<Value>,
}

impl Tensor {
    /// Rows along the first dimension, and the values per row.
    pub(crate) fn rows(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [] => (1, self.data.len()),
            [n, ..] => {
                let n = (*n as usize).max(1);
                (n, self.data.len() / n)
            }
        }
    }
}

pub(crate) fn datatype_ok(dt: &str) -> bool {
    matches!(
        dt,
        "BOOL"
            | "UINT8"
            | "UINT16"
            | "UINT32"
            | "UINT64"
            | "INT8"
            | "INT16"
            | "INT32"
            | "INT64"
            | "FP16"
            | "FP32"
            | "FP64"
            | "BYTES"
            | "BF16"
    )
}

fn element_size(dt: &str) -> Option<usize> {
    Some(match dt {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

pub(crate) fn half_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let frac = (bits & 0x3ff) as u32;
    let value = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(value)
}

/// Decodes little-endian binary tensor data.
pub(crate) fn binary_values(dt: &str, bytes: &[u8]) -> Result<Vec<Value>, DecodeError> {
    if dt == "BYTES" {
        // Each element: a 4-byte little-endian length, then the bytes.
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + 4 <= bytes.len() {
            let n = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            pos += 4;
            let s = bytes.get(pos..pos + n).ok_or(DecodeError::BinaryTensor)?;
            out.push(Value::Text(String::from_utf8_lossy(s).into_owned()));
            pos += n;
        }
        return Ok(out);
    }
    let size = element_size(dt).ok_or(DecodeError::UnknownDatatype)?;
    if bytes.len() % size != 0 {
        return Err(DecodeError::BinaryTensor);
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| {
            let n = match dt {
                "BOOL" => return Value::Bool(c[0] != 0),
                "UINT8" => c[0] as f64,
                "INT8" => c[0] as i8 as f64,
                "UINT16" => u16::from_le_bytes([c[0], c[1]]) as f64,
                "INT16" => i16::from_le_bytes([c[0], c[1]]) as f64,
                "FP16" => half_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64,
                "BF16" => f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64,
                "UINT32" => u32::from_le_bytes(c.try_into().expect("4")) as f64,
                "INT32" => i32::from_le_bytes(c.try_into().expect("4")) as f64,
                "FP32" => f32::from_le_bytes(c.try_into().expect("4")) as f64,
                "UINT64" => u64::from_le_bytes(c.try_into().expect("8")) as f64,
                "INT64" => i64::from_le_bytes(c.try_into().expect("8")) as f64,
                _ => f64::from_le_bytes(c.try_into().expect("8")),
            };
            Value::Number(n)
        })
        .collect())
}

/// Reads the tensors of `key` ("inputs" or "outputs") from one body, with the
/// binary extension when the header says so.
pub fn tensors(
    body: &[u8],
    headers: &http::HeaderMap,
    key: &str,
) -> Result<(Json, Vec<Tensor>), DecodeError> {
    let json_len = headers
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let (head, mut binary) = match json_len {
        Some(n) if n <= body.len() => (&body[..n], &body[n..]),
        Some(_) => return Err(DecodeError::BinaryTensor),
        None => (body, &[][..]),
    };
    let doc = json::parse(head)?;
    if doc.get("error").is_some() {
        return Err(DecodeError::ErrorResponse);
    }
    let items: &[Json] = match doc.get(key) {
        Some(Json::Array(items)) => items,
        Some(_) => return Err(DecodeError::MissingField),
        None if key == "outputs" => &[],
        None => return Err(DecodeError::MissingField),
    };
    let mut out = Vec::with_capacity(items.len());
    for t in items {
        let name = t
            .get("name")
            .and_then(Json::as_str)
            .ok_or(DecodeError::MissingField)?;
        let datatype = t
            .get("datatype")
            .and_then(Json::as_str)
            .ok_or(DecodeError::MissingField)?;
        if !datatype_ok(datatype) {
            return Err(DecodeError::UnknownDatatype);
        }
        let shape: Vec<u64> = t
            .get("shape")
            .and_then(Json::as_array)
            .ok_or(DecodeError::MissingField)?
            .iter()
            .map(|d| {
                d.as_i64()
                    .map(|d| d.max(0) as u64)
                    .ok_or(DecodeError::WrongShape)
            })
            .collect::<Result<_, _>>()?;
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .filter(|n| *n <= MAX_ELEMENTS)
            .ok_or(DecodeError::WrongShape)?;
        let binary_size = t
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"))
            .and_then(Json::as_u64);
        let data = match (binary_size, t.get("data")) {
            (Some(size), _) => {
                let size = size as usize;
                if size > binary.len() {
                    return Err(DecodeError::BinaryTensor);
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                binary_values(datatype, mine)?
            }
            (None, Some(data)) => {
                let mut flat = Vec::new();
                json::flatten(data, &mut flat);
                flat.into_iter().map(json::value).collect()
            }
            (None, None) => return Err(DecodeError::MissingField),
        };
        if data.len() as u64 != elements {
            return Err(DecodeError::WrongShape);
        }
        out.push(Tensor {
            name: name.to_string(),
            shape,
            datatype: datatype.to_string(),
            data,
        });
    }
    Ok((doc, out))
}

/// `(model, version)` from `/v2/models/{model}[/versions/{version}]/infer`.
pub(crate) fn model_from_path(path: &str) -> (Option<String>, Option<String>) {
    let parts: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or("")
        .trim_matches('/')
        .split('/')
        .collect();
    match parts.as_slice() {
        ["v2", "models", m, "versions", v, ..] => (Some(m.to_string()), Some(v.to_string())),
        ["v2", "models", m, ..] => (Some(m.to_string()), None),
        _ => (None, None),
    }
}

/// Decodes an OIP v2 exchange: one record per row of the batch.
pub fn decode(sample: &Sample, config: &ProtocolConfig) -> Result<Vec<Inference>, DecodeError> {
    if sample.request_body.truncated || sample.response_body.truncated {
        return Err(DecodeError::Truncated);
    }
    if sample.status >= 400 {
        return Err(DecodeError::ErrorResponse);
    }
    let (_, inputs) = tensors(
        &sample.request_body.bytes,
        &sample.request_headers,
        "inputs",
    )?;
    let (response, outputs) = tensors(
        &sample.response_body.bytes,
        &sample.response_headers,
        "outputs",
    )?;
    let (mut model, mut version) = model_from_path(&sample.path);
    if let Some(m) = response.get("model_name").and_then(Json::as_str) {
        model = Some(m.to_string());
    }
    if let Some(v) = response.get("model_version").and_then(Json::as_str) {
        version = Some(v.to_string());
    }
    let settings = super::model_settings(config, model.as_deref());
    let rows = inputs.first().map(|t| t.rows().0).unwrap_or(1);
    let mut records = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut r = Inference::new(sample, Protocol::OpenInferenceV2, Operation::Predict);
        r.row = row;
        r.model = model.clone();
        r.model_version = version.clone();
        r.response_id = response
            .get("id")
            .and_then(Json::as_str)
            .map(str::to_string);
        r.features = row_features(&inputs, row, settings);
        apply_outputs(&mut r, &outputs, row, settings);
        records.push(r);
    }
    Ok(records)
}

/// The features of one row: each input's values in that row, named by the
/// configured feature names when their count fits, else `input` or `input[i]`.
pub fn row_features(
    inputs: &[Tensor],
    row: usize,
    settings: Option<&ModelSettings>,
) -> Vec<(String, Value)> {
    let mut values: Vec<(String, Value)> = Vec::new();
    for t in inputs {
        let (rows, per_row) = t.rows();
        if row >= rows {
            continue;
        }
        let slice = &t.data[row * per_row..(row + 1) * per_row];
        if per_row == 1 {
            values.push((t.name.clone(), slice[0].clone()));
        } else {
            for (i, v) in slice.iter().enumerate() {
                values.push((format!("{}[{i}]", t.name), v.clone()));
            }
        }
    }
    if let Some(names) = settings.map(|s| &s.features).filter(|n| !n.is_empty()) {
        if names.len() == values.len() {
            for (slot, name) in values.iter_mut().zip(names) {
                slot.0 = name.clone();
            }
        }
    }
    values
}

/// Picks the prediction, the scores and the other outputs of one row.
pub(crate) fn apply_outputs(
    r: &mut Inference,
    outputs: &[Tensor],
    row: usize,
    settings: Option<&ModelSettings>,
) {
    let super::OutputNames {
        label: label_name,
        scores: scores_name,
        class_names,
    } = super::output_names(settings);
    let mut scores: Option<Vec<f64>> = None;
    for t in outputs {
        let (rows, per_row) = t.rows();
        if row >= rows || per_row == 0 {
            continue;
        }
        let slice = &t.data[row * per_row..(row + 1) * per_row];
        let is_label = label_name.map(|n| n == t.name).unwrap_or(false);
        let is_scores = scores_name.map(|n| n == t.name).unwrap_or(false);
        if is_scores
            || (scores_name.is_none()
                && per_row > 1
                && t.datatype.starts_with("FP")
                && scores.is_none())
        {
            scores = Some(
                slice
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN))
                    .collect(),
            );
        } else if is_label || (label_name.is_none() && per_row == 1 && r.prediction.is_none()) {
            let v = slice[0].clone();
            r.prediction = Some(label_value(v, class_names));
        } else if per_row == 1 {
            r.outputs.push((t.name.clone(), slice[0].clone()));
        }
    }
    if let Some(s) = scores {
        set_scores(r, &s, class_names);
    }
}

/// A predicted class index becomes its class name when names are configured.
pub fn label_value(v: Value, class_names: &[String]) -> Value {
    match v {
        Value::Number(n) if !class_names.is_empty() && n.fract() == 0.0 && n >= 0.0 => class_names
            .get(n as usize)
            .map(|c| Value::Text(c.clone()))
            .unwrap_or(Value::Number(n)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(half_to_f32(0x0001), 5.960_464_5e-8);
    }

    #[test]
    fn a_2gb_declaration_is_refused_without_allocating() {
        let body =
            br#"{"inputs":[{"name":"x","shape":[1073741824,2],"datatype":"FP32","data":[1.0]}]}"#;
        assert_eq!(
            tensors(body, &http::HeaderMap::new(), "inputs").unwrap_err(),
            DecodeError::WrongShape
        );
    }
}
