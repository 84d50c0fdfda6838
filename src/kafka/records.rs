//! The records on the predictions and labels topics: JSON objects with a
//! version field `v` (1), keyed by the request id.
//!
//! A labels record is one `POST /v1/feedback` label object (`request_id`,
//! `label`, optional `row`, `model`, `timestamp`), so that a labelling
//! pipeline can produce to the topic directly with the same fields.

use serde::{Deserialize, Serialize};

use crate::protocol::Value;
use crate::quality::feedback::LabelItem;
use crate::quality::store::join_key;
use crate::quality::Prediction;

/// The record format this modelwatch writes and reads.
pub const VERSION: u32 = 1;

/// One sampled prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub v: u32,
    pub request_id: String,
    pub row: u32,
    pub model: String,
    pub model_version: String,
    /// Milliseconds since the Unix epoch when the prediction was made.
    pub time_ms: u64,
    /// The predicted class (text, integer, boolean) or regression value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<serde_json::Value>,
    /// Per-class scores, in the model's order: `[["setosa", 0.9], …]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<(String, f64)>,
    /// The sampling rate the record was taken at (`sampling.rate`).
    pub sample_rate: f64,
    /// The bin of each reference feature (the diagnosis's segments).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bins: Vec<u8>,
}

/// Why a record was skipped: a bounded set (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    NotJson,
    Version,
    Fields,
}

impl Malformed {
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::NotJson => "not_json",
            Malformed::Version => "unknown_version",
            Malformed::Fields => "bad_fields",
        }
    }
}

impl PredictionRecord {
    /// The record of a prediction the analysis thread made (`id` and `row`
    /// are the join key's parts).
    pub fn new(id: &str, row: u32, p: &Prediction, sample_rate: f64) -> PredictionRecord {
        PredictionRecord {
            v: VERSION,
            request_id: id.to_string(),
            row,
            model: p.model.clone(),
            model_version: p.version.clone(),
            time_ms: p.time_ms,
            prediction: p.prediction.as_ref().and_then(to_json),
            scores: p.scores.clone(),
            sample_rate,
            bins: p.bins.clone(),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<PredictionRecord, Malformed> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| Malformed::NotJson)?;
        if v.get("v").and_then(|v| v.as_u64()) != Some(VERSION as u64) {
            return Err(Malformed::Version);
        }
        let r: PredictionRecord = serde_json::from_value(v).map_err(|_| Malformed::Fields)?;
        if r.request_id.is_empty() {
            return Err(Malformed::Fields);
        }
        Ok(r)
    }

    /// The prediction for the quality engine.
    pub fn into_prediction(self) -> Prediction {
        Prediction {
            key: join_key(&self.request_id, self.row),
            time_ms: self.time_ms,
            model: self.model,
            version: self.model_version,
            prediction: self.prediction.as_ref().map(from_json),
            scores: self.scores,
            bins: self.bins,
        }
    }
}

fn to_json(v: &Value) -> Option<serde_json::Value> {
    match v {
        Value::Number(n) => serde_json::Number::from_f64(*n).map(serde_json::Value::Number),
        Value::Text(s) => Some(serde_json::Value::String(s.clone())),
        Value::Bool(b) => Some(serde_json::Value::Bool(*b)),
        Value::Missing => None,
    }
}

fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(Value::Number).unwrap_or(Value::Missing),
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        _ => Value::Missing,
    }
}

/// A labels record: a feedback label object with `v`.
pub fn label_record(item: &LabelItem) -> serde_json::Value {
    let mut o = serde_json::json!({
        "v": VERSION,
        "request_id": item.id,
        "row": item.row,
        "label": item.label,
    });
    if let Some(m) = &item.model {
        o["model"] = m.clone().into();
    }
    if let Some(t) = item.time_ms {
        o["timestamp"] = (t as f64 / 1000.0).into();
    }
    o
}

/// Reads a labels record. A record without `v` is taken as version 1 (a
/// labelling pipeline that produces plain feedback objects).
pub fn decode_label(bytes: &[u8], index: usize) -> Result<LabelItem, Malformed> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| Malformed::NotJson)?;
    match v.get("v") {
        None => {}
        Some(n) if n.as_u64() == Some(VERSION as u64) => {}
        Some(_) => return Err(Malformed::Version),
    }
    let mut parsed = crate::quality::feedback::Parsed::default();
    crate::quality::feedback::push_item(&mut parsed, index, v);
    parsed.items.pop().ok_or(Malformed::Fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_named() {
        let p = Prediction {
            key: join_key("r-1", 2),
            time_ms: 1_780_000_000_123,
            model: "iris".into(),
            version: "v2".into(),
            prediction: Some(Value::Text("setosa".into())),
            scores: vec![("setosa".into(), 0.9), ("versicolor".into(), 0.1)],
            bins: vec![3, 0, 255],
        };
        let r = PredictionRecord::new("r-1", 2, &p, 0.5);
        let bytes = serde_json::to_vec(&r).unwrap();
        let back = PredictionRecord::decode(&bytes).unwrap();
        assert_eq!(back.sample_rate, 0.5);
        assert_eq!(back.into_prediction(), p);
        assert_eq!(PredictionRecord::decode(b"{oops"), Err(Malformed::NotJson));
        assert_eq!(
            PredictionRecord::decode(br#"{"v": 9, "request_id": "a"}"#),
            Err(Malformed::Version)
        );
        assert_eq!(
            PredictionRecord::decode(br#"{"v": 1, "request_id": "a"}"#),
            Err(Malformed::Fields)
        );

        let item =
            decode_label(br#"{"request_id": "r-1", "row": 2, "label": "setosa"}"#, 0).unwrap();
        assert_eq!((item.id.as_str(), item.row), ("r-1", 2));
        let again = decode_label(&serde_json::to_vec(&label_record(&item)).unwrap(), 0).unwrap();
        assert_eq!(again, item);
        assert_eq!(
            decode_label(br#"{"v": 1, "label": 1}"#, 0),
            Err(Malformed::Fields)
        );
        assert_eq!(decode_label(br#"{"v": 2}"#, 0), Err(Malformed::Version));
    }
}
