//! KServe v1 and TF Serving REST: `instances` (row format) or `inputs`
//! (columnar format) in, `predictions` or `outputs` out; `{"b64": ...}`
//! values; `NaN`/`Infinity` tokens.

use serde_json::Value as Json;

use super::oip::label_value;
use super::{json, set_scores, DecodeError, Inference, Operation, Protocol, Value};
use crate::config::{ModelSettings, ProtocolConfig};
use crate::sample::Sample;

/// Rows of a request or response: each row is a list of named values.
type Rows = Vec<Vec<(String, Json)>>;

/// Row format: a list of instances, each a scalar, a list or an object.
fn rows_from_instances(items: &[Json], default_name: &str) -> Rows {
    items
        .iter()
        .map(|item| match item {
            Json::Object(o) if o.get("b64").is_none() => {
                o.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            }
            Json::Array(values) => vec![(default_name.to_string(), Json::Array(values.clone()))],
            scalar => vec![(default_name.to_string(), scalar.clone())],
        })
        .collect()
}

/// Columnar format: an object of name -> list of rows, or a bare list of rows.
fn rows_from_columns(v: &Json, default_name: &str) -> Result<Rows, DecodeError> {
    match v {
        Json::Object(cols) => {
            let n = cols
                .values()
                .map(|c| c.as_array().map(Vec::len).unwrap_or(1))
                .max()
                .unwrap_or(0);
            let mut rows: Rows = vec![Vec::new(); n];
            for (name, col) in cols {
                match col.as_array() {
                    Some(items) if items.len() == n => {
                        for (row, item) in rows.iter_mut().zip(items) {
                            row.push((name.clone(), item.clone()));
                        }
                    }
                    _ => return Err(DecodeError::WrongShape),
                }
            }
            Ok(rows)
        }
        Json::Array(items) => Ok(rows_from_instances(items, default_name)),
        scalar => Ok(vec![vec![(default_name.to_string(), scalar.clone())]]),
    }
}

/// `(model, version)` from `/v1/models/{model}[/versions/{v}]:predict`
/// (and TF Serving's version labels, `/v1/models/{model}/labels/{label}:predict`).
pub(crate) fn model_from_path(path: &str) -> (Option<String>, Option<String>) {
    let path = path.split('?').next().unwrap_or("");
    let path = path.rsplit_once(':').map(|(p, _)| p).unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "models", m, "versions" | "labels", v] => (Some(m.to_string()), Some(v.to_string())),
        ["v1", "models", m] => (Some(m.to_string()), None),
        _ => (None, None),
    }
}

/// Named features of one request row; a list value becomes `name[i]` entries.
fn features(row: &[(String, Json)], settings: Option<&ModelSettings>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, v) in row {
        match v {
            Json::Array(items) => {
                let mut flat = Vec::new();
                json::flatten(v, &mut flat);
                if items.len() == 1 && flat.len() == 1 {
                    out.push((name.clone(), json::value(flat[0])));
                } else {
                    for (i, x) in flat.into_iter().enumerate() {
                        out.push((format!("{name}[{i}]"), json::value(x)));
                    }
                }
            }
            other => out.push((name.clone(), json::value(other))),
        }
    }
    if let Some(names) = settings.map(|s| &s.features).filter(|n| !n.is_empty()) {
        if names.len() == out.len() {
            for (slot, n) in out.iter_mut().zip(names) {
                slot.0 = n.clone();
            }
        }
    }
    out
}

/// Decodes a KServe v1 / TF Serving exchange: one record per instance.
pub fn decode(
    sample: &Sample,
    config: &ProtocolConfig,
    protocol: Protocol,
) -> Result<Vec<Inference>, DecodeError> {
    if sample.request_body.truncated || sample.response_body.truncated {
        return Err(DecodeError::Truncated);
    }
    let request = json::parse(&sample.request_body.bytes)?;
    let response = json::parse(&sample.response_body.bytes)?;
    if response.get("error").is_some() || sample.status >= 400 {
        return Err(DecodeError::ErrorResponse);
    }
    let in_rows = if let Some(Json::Array(items)) = request.get("instances") {
        rows_from_instances(items, "input")
    } else if let Some(v) = request.get("inputs") {
        rows_from_columns(v, "input")?
    } else {
        return Err(DecodeError::MissingField);
    };
    let out_rows = if let Some(Json::Array(items)) = response.get("predictions") {
        rows_from_instances(items, "prediction")
    } else if let Some(v) = response.get("outputs") {
        rows_from_columns(v, "prediction")?
    } else {
        return Err(DecodeError::MissingField);
    };
    if !out_rows.is_empty() && out_rows.len() != in_rows.len() {
        return Err(DecodeError::WrongShape);
    }
    let (model, version) = model_from_path(&sample.path);
    let settings = super::model_settings(config, model.as_deref());
    let super::OutputNames {
        label: label_name,
        scores: scores_name,
        class_names,
    } = super::output_names(settings);

    let mut records = Vec::with_capacity(in_rows.len());
    for (i, row) in in_rows.iter().enumerate() {
        let mut r = Inference::new(sample, protocol, Operation::Predict);
        r.row = i;
        r.model = model.clone();
        r.model_version = version.clone();
        r.features = features(row, settings);
        if let Some(out) = out_rows.get(i) {
            let single = out.len() == 1;
            for (name, v) in out {
                let is_scores = scores_name.map(|n| n == name).unwrap_or(false)
                    || (scores_name.is_none()
                        && v.as_array().map(|a| json::all_numbers(a)).unwrap_or(false));
                let is_label = label_name
                    .map(|n| n == name)
                    .unwrap_or(single || name == "prediction");
                if is_scores {
                    if let Some(a) = v.as_array() {
                        let scores: Vec<f64> = a
                            .iter()
                            .map(|x| json::number(x).unwrap_or(f64::NAN))
                            .collect();
                        set_scores(&mut r, &scores, class_names);
                    }
                } else if is_label && r.prediction.is_none() {
                    r.prediction = Some(label_value(json::value(v), class_names));
                } else {
                    r.outputs.push((name.clone(), json::value(v)));
                }
            }
        }
        records.push(r);
    }
    Ok(records)
}
