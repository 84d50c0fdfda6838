//! `json-paths`: any other JSON API. The user names, with JSONPath (RFC 9535,
//! the `serde_json_path` crate), where features, predictions, scores and the
//! model name live. Paths are evaluated against
//! `{"request": <request body>, "response": <response body>}`.

use serde_json::Value as Json;
use serde_json_path::JsonPath;

use super::{json, set_scores, DecodeError, Inference, Operation, Protocol, Value};
use crate::config::ProtocolConfig;
use crate::sample::Sample;

fn query<'a>(path: &str, doc: &'a Json) -> Vec<&'a Json> {
    if path.is_empty() {
        return Vec::new();
    }
    match JsonPath::parse(path) {
        Ok(p) => p.query(doc).all(),
        Err(_) => Vec::new(), // refused at start by validate()
    }
}

/// The model and version the configured paths name, read from whatever
/// parses (a failed exchange's error body is no JSON document of rows).
pub(crate) fn model_and_version(
    sample: &Sample,
    config: &ProtocolConfig,
) -> (Option<String>, Option<String>) {
    let p = &config.json_paths;
    if p.model.is_empty() && p.model_version.is_empty() {
        return (None, None);
    }
    let parsed = |b: &[u8]| json::parse(b).unwrap_or(Json::Null);
    let doc = serde_json::json!({
        "request": parsed(&sample.request_body.bytes),
        "response": parsed(&sample.response_body.bytes),
    });
    let text = |v: &Json| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    (
        query(&p.model, &doc)
            .first()
            .and_then(|v| v.as_str())
            .map(str::to_string),
        query(&p.model_version, &doc).first().map(|v| text(v)),
    )
}

/// Rows from the nodes a path matched: one node holding an array of rows, or
/// one node per row.
fn rows(nodes: Vec<&Json>) -> Vec<&Json> {
    match nodes.as_slice() {
        [Json::Array(items)]
            if items.iter().all(|i| i.is_object() || i.is_array()) && !items.is_empty() =>
        {
            items.iter().collect()
        }
        _ => nodes,
    }
}

fn features_of(v: &Json) -> Vec<(String, Value)> {
    match v {
        Json::Object(o) => o.iter().map(|(k, v)| (k.clone(), json::value(v))).collect(),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("f{i}"), json::value(v)))
            .collect(),
        scalar => vec![("input".to_string(), json::value(scalar))],
    }
}

/// Decodes with the configured paths.
pub fn decode(sample: &Sample, config: &ProtocolConfig) -> Result<Vec<Inference>, DecodeError> {
    if sample.request_body.truncated || sample.response_body.truncated {
        return Err(DecodeError::Truncated);
    }
    if sample.status >= 400 {
        return Err(DecodeError::ErrorResponse);
    }
    let request = json::parse(&sample.request_body.bytes)?;
    let response = if sample.response_body.bytes.is_empty() {
        Json::Null
    } else {
        json::parse(&sample.response_body.bytes)?
    };
    let doc = serde_json::json!({"request": request, "response": response});
    let p = &config.json_paths;
    let feature_rows = rows(query(&p.features, &doc));
    let predictions = rows(query(&p.prediction, &doc));
    let score_rows = rows(query(&p.scores, &doc));
    if feature_rows.is_empty() && predictions.is_empty() {
        return Err(DecodeError::PathNotFound);
    }
    let model = query(&p.model, &doc)
        .first()
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let version = query(&p.model_version, &doc).first().map(|v| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    });
    let settings = super::model_settings(config, model.as_deref());
    let class_names: &[String] = settings.map(|s| s.class_names.as_slice()).unwrap_or(&[]);
    let n = feature_rows
        .len()
        .max(predictions.len())
        .max(score_rows.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut r = Inference::new(sample, Protocol::JsonPaths, Operation::Predict);
        r.row = i;
        r.model = model.clone();
        r.model_version = version.clone();
        if let Some(f) = feature_rows.get(i) {
            r.features = features_of(f);
        }
        if let Some(v) = predictions.get(i) {
            r.prediction = Some(super::oip::label_value(json::value(v), class_names));
        }
        if let Some(Json::Array(s)) = score_rows.get(i) {
            let scores: Vec<f64> = s
                .iter()
                .map(|x| json::number(x).unwrap_or(f64::NAN))
                .collect();
            set_scores(&mut r, &scores, class_names);
        }
        out.push(r);
    }
    Ok(out)
}
