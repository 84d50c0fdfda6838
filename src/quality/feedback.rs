//! Parsing of `POST /v1/feedback` bodies: one label object, a batch
//! (`{"items": [...]}`), or NDJSON (one object per line). Pure: bytes in,
//! label items and per-item errors out.

use serde::Serialize;
use serde_json::Value as Json;

/// One label as sent: which prediction (id and row), its true value, and
/// optional checks and times.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelItem {
    pub index: usize,
    pub id: String,
    pub row: u32,
    /// A string, a number or a boolean (checked against the model's task when joined).
    pub label: Json,
    pub model: Option<String>,
    /// When the true value was observed (milliseconds since the epoch).
    pub time_ms: Option<u64>,
}

/// Why one item was not joined: a bounded set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    InvalidJson,
    NotAnObject,
    MissingRequestId,
    MissingLabel,
    WrongLabelType,
    BadTimestamp,
    BadRow,
    ModelMismatch,
    Unmatched,
    Duplicate,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingRequestId => "missing_request_id",
            Reason::MissingLabel => "missing_label",
            Reason::WrongLabelType => "wrong_label_type",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadRow => "bad_row",
            Reason::ModelMismatch => "model_mismatch",
            Reason::Unmatched => "unmatched",
            Reason::Duplicate => "duplicate",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Reason::InvalidJson => "this line is not valid JSON",
            Reason::NotAnObject => "an item must be a JSON object",
            Reason::MissingRequestId => "`request_id` (a non-empty string) is required",
            Reason::MissingLabel => "`label` is required",
            Reason::WrongLabelType => {
                "`label` must be a class (string, integer or boolean) for a classifier, or a number for a regressor"
            }
            Reason::BadTimestamp => {
                "`timestamp` must be RFC 3339 text (2026-01-31T12:00:00Z) or seconds since the Unix epoch"
            }
            Reason::BadRow => "`row` must be an integer from 0 (the row within a batched request)",
            Reason::ModelMismatch => "`model` differs from the model that made this prediction",
            Reason::Unmatched => {
                "no prediction waits for this id (never seen, not sampled, not decodable, or expired), and the label cannot wait for it (quality.early_label_ttl is 0 or quality.max_early_labels wait already)"
            }
            Reason::Duplicate => "this prediction already has a label; the first one is kept",
        }
    }

    /// Unmatched and duplicate items are well-formed; the rest are invalid.
    pub fn is_invalid(self) -> bool {
        !matches!(self, Reason::Unmatched | Reason::Duplicate)
    }
}

/// One item that was not joined.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemError {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub reason: Reason,
    pub message: &'static str,
}

impl ItemError {
    pub fn new(index: usize, request_id: Option<String>, reason: Reason) -> ItemError {
        ItemError {
            index,
            request_id,
            reason,
            message: reason.message(),
        }
    }
}

/// The body as a whole could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is empty: send one label object, {{\"items\": [...]}}, or NDJSON")]
    Empty,
    #[error("the body is not JSON or NDJSON: {0}")]
    NotJson(String),
    #[error(
        "the body must be a label object, {{\"items\": [...]}}, or NDJSON lines of label objects"
    )]
    WrongShape,
}

/// What a body held.
#[derive(Debug, Default)]
pub struct Parsed {
    pub items: Vec<LabelItem>,
    pub errors: Vec<ItemError>,
    /// The body was a single label object (not a batch).
    pub single: bool,
}

impl Parsed {
    pub fn received(&self) -> usize {
        self.items.len() + self.errors.len()
    }
}

/// Parses a feedback body. `ndjson`: the content type says NDJSON; a body
/// that is not one JSON value but has several lines is read as NDJSON too.
pub fn parse(body: &[u8], ndjson: bool) -> Result<Parsed, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    if text.trim().is_empty() {
        return Err(BodyError::Empty);
    }
    if !ndjson {
        match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(mut obj)) => {
                let mut parsed = Parsed::default();
                match obj.remove("items") {
                    Some(Json::Array(items)) => {
                        for (i, item) in items.into_iter().enumerate() {
                            push_item(&mut parsed, i, item);
                        }
                    }
                    Some(_) => return Err(BodyError::WrongShape),
                    None => {
                        parsed.single = true;
                        push_item(&mut parsed, 0, Json::Object(obj));
                    }
                }
                return Ok(parsed);
            }
            Ok(Json::Array(items)) => {
                let mut parsed = Parsed::default();
                for (i, item) in items.into_iter().enumerate() {
                    push_item(&mut parsed, i, item);
                }
                return Ok(parsed);
            }
            Ok(_) => return Err(BodyError::WrongShape),
            Err(e) if text.trim().lines().count() < 2 => {
                return Err(BodyError::NotJson(e.to_string()))
            }
            Err(_) => {}
        }
    }
    let mut parsed = Parsed::default();
    for (i, line) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        match serde_json::from_str::<Json>(line) {
            Ok(item) => push_item(&mut parsed, i, item),
            Err(_) => parsed
                .errors
                .push(ItemError::new(i, None, Reason::InvalidJson)),
        }
    }
    if parsed.items.is_empty()
        && parsed
            .errors
            .iter()
            .all(|e| e.reason == Reason::InvalidJson)
    {
        return Err(BodyError::NotJson("no line is a JSON object".into()));
    }
    Ok(parsed)
}

/// Adds one label object (parsed, or its error) to `parsed`.
pub fn push_item(parsed: &mut Parsed, index: usize, item: Json) {
    match item_from(index, item) {
        Ok(item) => parsed.items.push(item),
        Err(e) => parsed.errors.push(e),
    }
}

fn item_from(index: usize, item: Json) -> Result<LabelItem, ItemError> {
    let Json::Object(mut obj) = item else {
        return Err(ItemError::new(index, None, Reason::NotAnObject));
    };
    let id = match obj.remove("request_id").or_else(|| obj.remove("id")) {
        Some(Json::String(s)) if !s.is_empty() => s,
        _ => return Err(ItemError::new(index, None, Reason::MissingRequestId)),
    };
    let fail = |reason| Err(ItemError::new(index, Some(id.clone()), reason));
    let label = match obj.remove("label") {
        None | Some(Json::Null) => return fail(Reason::MissingLabel),
        Some(v @ (Json::String(_) | Json::Number(_) | Json::Bool(_))) => v,
        Some(_) => return fail(Reason::WrongLabelType),
    };
    let row = match obj.remove("row") {
        None | Some(Json::Null) => 0,
        Some(Json::Number(n)) => match n.as_u64().and_then(|r| u32::try_from(r).ok()) {
            Some(r) => r,
            None => return fail(Reason::BadRow),
        },
        Some(_) => return fail(Reason::BadRow),
    };
    let model = match obj.remove("model") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s),
        Some(_) => return fail(Reason::ModelMismatch),
    };
    let time_ms = match obj.remove("timestamp") {
        None | Some(Json::Null) => None,
        Some(Json::Number(n)) => match n.as_f64().filter(|s| s.is_finite() && *s >= 0.0) {
            Some(s) => Some((s * 1000.0) as u64),
            None => return fail(Reason::BadTimestamp),
        },
        Some(Json::String(s)) => match humantime::parse_rfc3339_weak(&s) {
            Ok(t) => t
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64),
            Err(_) => return fail(Reason::BadTimestamp),
        },
        Some(_) => return fail(Reason::BadTimestamp),
    };
    Ok(LabelItem {
        index,
        id,
        row,
        label,
        model,
        time_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_batch_and_ndjson_forms() {
        let p = parse(br#"{"request_id": "a", "label": 1}"#, false).unwrap();
        assert!(p.single);
        assert_eq!(p.items[0].id, "a");
        assert_eq!(p.items[0].label, serde_json::json!(1));

        let p = parse(
            br#"{"items": [{"request_id": "a", "label": "cat", "row": 2, "timestamp": "2026-01-31T12:00:00Z"},
                           {"request_id": "b"}, 7]}"#,
            false,
        )
        .unwrap();
        assert!(!p.single);
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items[0].row, 2);
        assert_eq!(p.items[0].time_ms, Some(1_769_860_800_000));
        assert_eq!(p.errors[0].reason, Reason::MissingLabel);
        assert_eq!(p.errors[0].request_id.as_deref(), Some("b"));
        assert_eq!(p.errors[1].reason, Reason::NotAnObject);

        // NDJSON by content type, and by shape; a bad line loses only itself.
        let body = b"{\"request_id\": \"a\", \"label\": 0}\nnot json\n\n{\"id\": \"c\", \"label\": true, \"timestamp\": 1769860800.5}\n";
        for ndjson in [true, false] {
            let p = parse(body, ndjson).unwrap();
            assert_eq!(p.items.len(), 2);
            assert_eq!(p.items[1].id, "c");
            assert_eq!(p.items[1].time_ms, Some(1_769_860_800_500));
            assert_eq!(p.errors[0].reason, Reason::InvalidJson);
            assert_eq!(p.errors[0].index, 1);
        }
    }

    #[test]
    fn bad_items_get_a_reason_each() {
        let cases = [
            (r#"{"label": 1}"#, Reason::MissingRequestId),
            (
                r#"{"request_id": "", "label": 1}"#,
                Reason::MissingRequestId,
            ),
            (
                r#"{"request_id": "a", "label": [1]}"#,
                Reason::WrongLabelType,
            ),
            (
                r#"{"request_id": "a", "label": {"x": 1}}"#,
                Reason::WrongLabelType,
            ),
            (
                r#"{"request_id": "a", "label": null}"#,
                Reason::MissingLabel,
            ),
            (
                r#"{"request_id": "a", "label": 1, "row": -1}"#,
                Reason::BadRow,
            ),
            (
                r#"{"request_id": "a", "label": 1, "row": "3"}"#,
                Reason::BadRow,
            ),
            (
                r#"{"request_id": "a", "label": 1, "timestamp": "yesterday"}"#,
                Reason::BadTimestamp,
            ),
            (
                r#"{"request_id": "a", "label": 1, "model": 3}"#,
                Reason::ModelMismatch,
            ),
        ];
        for (body, reason) in cases {
            let p = parse(body.as_bytes(), false).unwrap();
            assert_eq!(p.errors.len(), 1, "{body}");
            assert_eq!(p.errors[0].reason, reason, "{body}");
        }
    }

    #[test]
    fn unreadable_bodies_are_refused_whole() {
        assert_eq!(parse(b"", false).unwrap_err(), BodyError::Empty);
        assert!(matches!(parse(b"{oops", false), Err(BodyError::NotJson(_))));
        assert_eq!(parse(b"42", false).unwrap_err(), BodyError::WrongShape);
        assert_eq!(
            parse(br#"{"items": 3}"#, false).unwrap_err(),
            BodyError::WrongShape
        );
        assert!(matches!(parse(b"a\nb\n", true), Err(BodyError::NotJson(_))));
        assert!(matches!(
            parse(&[0xff, 0xfe], false),
            Err(BodyError::NotJson(_))
        ));
    }
}
