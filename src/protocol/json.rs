//! JSON helpers shared by the decoders: a lenient parse that accepts the
//! `NaN`, `Infinity` and `-Infinity` tokens TF Serving and Python servers
//! write, and conversions into [`Value`].

use base64::Engine;
use serde_json::Value as Json;

use super::{DecodeError, Value};

const NAN: &str = "\u{0}mw:NaN";
const INF: &str = "\u{0}mw:Infinity";
const NEG_INF: &str = "\u{0}mw:-Infinity";

/// Parses JSON, accepting bare `NaN`, `Infinity` and `-Infinity` outside strings.
pub fn parse(bytes: &[u8]) -> Result<Json, DecodeError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(DecodeError::EmptyBody);
    }
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(_) => {
            let fixed = replace_special_numbers(bytes).ok_or(DecodeError::InvalidJson)?;
            serde_json::from_slice(&fixed).map_err(|_| DecodeError::InvalidJson)
        }
    }
}

/// Rewrites the non-standard number tokens as marker strings; None when there are none.
fn replace_special_numbers(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut in_string = false;
    let mut escaped = false;
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        let rest = &bytes[i..];
        let token = if rest.starts_with(b"NaN") {
            Some((3, NAN))
        } else if rest.starts_with(b"Infinity") {
            Some((8, INF))
        } else if rest.starts_with(b"-Infinity") {
            Some((9, NEG_INF))
        } else {
            None
        };
        if let Some((len, marker)) = token {
            out.push(b'"');
            out.extend_from_slice(marker.replace('\u{0}', "\\u0000").as_bytes());
            out.push(b'"');
            changed = true;
            i += len;
            continue;
        }
        if b == b'"' {
            in_string = true;
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

/// A JSON number, or one of the special tokens, as f64.
pub fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) if s == NAN => Some(f64::NAN),
        Json::String(s) if s == INF => Some(f64::INFINITY),
        Json::String(s) if s == NEG_INF => Some(f64::NEG_INFINITY),
        Json::Bool(b) => Some(*b as u8 as f64),
        _ => None,
    }
}

/// Converts a scalar JSON value. `{"b64": ...}` becomes its decoded text (or
/// the byte count when it is not UTF-8); arrays and other objects are `Missing`.
pub fn value(v: &Json) -> Value {
    match v {
        Json::Null => Value::Missing,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(_) => number(v).map(Value::Number).unwrap_or(Value::Missing),
        Json::String(_) => match number(v) {
            Some(n) => Value::Number(n),
            None => Value::Text(v.as_str().unwrap_or_default().to_string()),
        },
        Json::Object(o) => match o.get("b64").and_then(Json::as_str) {
            Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => Value::Text(text),
                    Err(e) => Value::Text(format!("<{} bytes>", e.into_bytes().len())),
                },
                Err(_) => Value::Missing,
            },
            None => Value::Missing,
        },
        Json::Array(_) => Value::Missing,
    }
}

/// All scalars of a nested array, in row-major order.
pub fn flatten<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
    match v {
        Json::Array(items) => {
            for item in items {
                flatten(item, out);
            }
        }
        other => out.push(other),
    }
}

/// True when every element is a number (or a special number token).
pub fn all_numbers(items: &[Json]) -> bool {
    !items.is_empty() && items.iter().all(|v| number(v).is_some() && !v.is_boolean())
}

/// The string value of `"key":"…"` in a JSON fragment, without parsing it
/// all (a body cut at a cap, an SSE event). `quoted_key` is the key with
/// its quotes, e.g. `br#""model""#`.
pub fn string_field(hay: &[u8], quoted_key: &[u8]) -> Option<String> {
    let mut at = memchr::memmem::find(hay, quoted_key)? + quoted_key.len();
    while at < hay.len() && (hay[at] == b' ' || hay[at] == b':' || hay[at] == b'\t') {
        at += 1;
    }
    if hay.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let mut i = start;
    while i < hay.len() {
        match hay[i] {
            b'\\' => i += 2,
            b'"' => return std::str::from_utf8(&hay[start..i]).ok().map(str::to_string),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_numbers_outside_strings_only() {
        let v = parse(br#"{"a": [NaN, Infinity, -Infinity, 1.5], "s": "NaN is fine \" Infinity"}"#)
            .unwrap();
        let a: Vec<f64> = v["a"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| number(x).unwrap())
            .collect();
        assert!(a[0].is_nan());
        assert_eq!(&a[1..], &[f64::INFINITY, f64::NEG_INFINITY, 1.5]);
        assert_eq!(v["s"], "NaN is fine \" Infinity");
    }

    #[test]
    fn invalid_and_empty() {
        assert_eq!(parse(b"{\"a\":"), Err(DecodeError::InvalidJson));
        assert_eq!(parse(b"  "), Err(DecodeError::EmptyBody));
        assert_eq!(parse(b"\xff\xfe"), Err(DecodeError::InvalidJson));
    }

    #[test]
    fn b64_values() {
        let v: Json = serde_json::from_str(r#"{"b64": "aGVsbG8="}"#).unwrap();
        assert_eq!(value(&v), Value::Text("hello".into()));
        let v: Json = serde_json::from_str(r#"{"b64": "/w=="}"#).unwrap();
        assert_eq!(value(&v), Value::Text("<1 bytes>".into()));
    }

    /// Every number read from a payload is the number that was sent: the
    /// shortest round-trip text of a double (what Python's `repr`, JavaScript
    /// and Rust write) and its exponent form parse back to the same bits.
    /// serde_json's default fast path misses the last bit of some (69 of 171
    /// MLServer scores were off by one ulp before `float_roundtrip`).
    #[test]
    fn numbers_round_trip_exactly() {
        let seen = 0.9921909680521811_f64;
        let v = parse(b"{\"data\": [0.9921909680521811]}").unwrap();
        assert_eq!(number(&v["data"][0]).unwrap().to_bits(), seen.to_bits());
        let mut rng = fastrand::Rng::with_seed(19);
        let mut sent = Vec::new();
        while sent.len() < 20_000 {
            let x = match sent.len() % 3 {
                // Scores and probabilities: the common case.
                0 => rng.f64(),
                1 => (rng.f64() - 0.5) * 10f64.powi(rng.i32(-12..12)),
                _ => f64::from_bits(rng.u64(..)),
            };
            if x.is_finite() {
                sent.push(x);
            }
        }
        let body = format!(
            "[{}]",
            sent.iter()
                .enumerate()
                .map(|(i, x)| if i % 2 == 0 {
                    format!("{x:?}")
                } else {
                    format!("{x:e}")
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        let v = parse(body.as_bytes()).unwrap();
        let got = v.as_array().unwrap();
        assert_eq!(got.len(), sent.len());
        for (x, g) in sent.iter().zip(got) {
            assert_eq!(
                number(g).unwrap().to_bits(),
                x.to_bits(),
                "{x:?} came back as {g}"
            );
        }
    }
}
