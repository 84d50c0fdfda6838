//! Decoders against realistic payloads, as tables of input and expected record.

use super::*;
use crate::config::{ModelSettings, ProtocolConfig, ProtocolKind};
use crate::sample::Sample;

fn sample(path: &str, request: &[u8], response: &[u8], content_type: &str) -> Sample {
    let mut s = Sample::from_bodies(path, request, response, content_type);
    s.request_id = "req-1".into();
    s
}

fn cfg() -> ProtocolConfig {
    ProtocolConfig::default()
}

#[test]
fn openai_chat_plain() {
    let s = sample(
        "/v1/chat/completions",
        br#"{"model":"llama-3","temperature":0.2,"max_tokens":64,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}]}"#,
        br#"{"id":"chatcmpl-1","model":"llama-3-8b","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        "application/json",
    );
    let r = &decode(&s, &cfg()).unwrap()[0];
    assert_eq!(r.protocol, Protocol::Openai);
    assert_eq!(r.operation, Operation::Chat);
    assert_eq!(r.model.as_deref(), Some("llama-3-8b"));
    assert_eq!(r.input_text.as_deref(), Some("system: Be brief.\nuser: Hi"));
    assert_eq!(r.output_text.as_deref(), Some("Hello!"));
    assert_eq!(r.finish_reasons, vec!["stop"]);
    assert_eq!(
        r.usage,
        Some(TokenUsage {
            input: Some(12),
            output: Some(3),
            estimated: false
        })
    );
    assert_eq!(r.params.temperature, Some(0.2));
    assert_eq!(r.params.max_tokens, Some(64));
    assert_eq!(r.response_id.as_deref(), Some("chatcmpl-1"));
    assert!(!r.streamed && r.complete);
}

#[test]
fn openai_stream_with_usage_chunk_and_null_choices() {
    let stream = concat!(
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"length\"}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":null,\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n"
    );
    let s = sample(
        "/v1/chat/completions",
        br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}"#,
        stream.as_bytes(),
        "text/event-stream; charset=utf-8",
    );
    let r = &decode(&s, &cfg()).unwrap()[0];
    assert!(r.streamed && r.complete && r.params.stream);
    assert_eq!(r.output_text.as_deref(), Some("Hello"));
    assert_eq!(r.finish_reasons, vec!["length"]);
    assert_eq!(
        r.usage,
        Some(TokenUsage {
            input: Some(5),
            output: Some(2),
            estimated: false
        })
    );
}

#[test]
fn openai_stream_without_usage_is_estimated_and_cut_streams_are_incomplete() {
    let stream = concat!(
        "data: {\"choices\":[{\"index\":0,\"text\":\"a\"}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"text\":\"b\"}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"te"
    );
    let s = sample(
        "/v1/completions",
        br#"{"model":"m","prompt":"p","stream":true}"#,
        stream.as_bytes(),
        "text/event-stream",
    );
    let r = &decode(&s, &cfg()).unwrap()[0];
    assert_eq!(r.operation, Operation::TextCompletion);
    assert_eq!(r.output_text.as_deref(), Some("ab"));
    assert_eq!(
        r.usage,
        Some(TokenUsage {
            input: None,
            output: Some(2),
            estimated: true
        })
    );
    assert!(!r.complete);
}

#[test]
fn openai_stream_tool_calls_and_bad_utf8() {
    let mut stream = Vec::new();
    stream.extend_from_slice(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n");
    stream.extend_from_slice(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n");
    stream.extend_from_slice(
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n",
    );
    stream.extend_from_slice(b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n");
    let s = sample(
        "/v1/chat/completions",
        br#"{"model":"m","stream":true,"messages":[]}"#,
        &stream,
        "text/event-stream",
    );
    let r = &decode(&s, &cfg()).unwrap()[0];
    assert_eq!(r.tool_calls, 1);
    assert_eq!(r.finish_reasons, vec!["tool_calls"]);
    assert!(r.complete);
}

#[test]
fn openai_embeddings_float_and_base64() {
    let float = br#"{"object":"list","model":"e5","data":[{"index":0,"embedding":[0.5,-1.0]},{"index":1,"embedding":[1.0,2.0]}],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
    let s = sample(
        "/v1/embeddings",
        br#"{"model":"e5","input":["a","b"]}"#,
        float,
        "application/json",
    );
    let rs = decode(&s, &cfg()).unwrap();
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[1].embedding.as_deref(), Some(&[1.0f32, 2.0][..]));
    assert_eq!(rs[1].input_text.as_deref(), Some("b"));
    assert_eq!(rs[0].usage.unwrap().input, Some(4));
    assert_eq!(rs[1].usage, None);

    use base64::Engine;
    let raw: Vec<u8> = [0.25f32, 4.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let resp = format!(r#"{{"data":[{{"index":0,"embedding":"{b64}"}}],"model":"e5"}}"#);
    let s = sample(
        "/v1/embeddings",
        br#"{"model":"e5","input":"a","encoding_format":"base64"}"#,
        resp.as_bytes(),
        "application/json",
    );
    assert_eq!(
        decode(&s, &cfg()).unwrap()[0].embedding.as_deref(),
        Some(&[0.25f32, 4.0][..])
    );
}

#[test]
fn oip_batch_rows_with_configured_names() {
    let req = br#"{"id":"r1","inputs":[{"name":"input-0","shape":[2,3],"datatype":"FP32","data":[[1,2,3],[4,5,6]]}]}"#;
    let resp = br#"{"model_name":"bc","model_version":"v1","id":"r1","outputs":[{"name":"predict","shape":[2,1],"datatype":"INT64","data":[1,0]},{"name":"predict_proba","shape":[2,2],"datatype":"FP64","data":[0.1,0.9,0.8,0.2]}]}"#;
    let mut c = cfg();
    c.models.push(ModelSettings {
        name: "bc".into(),
        features: vec!["a".into(), "b".into(), "c".into()],
        class_names: vec!["malignant".into(), "benign".into()],
        label_output: "predict".into(),
        scores_output: "predict_proba".into(),
        ..ModelSettings::default()
    });
    let rs = decode(
        &sample("/v2/models/bc/infer", req, resp, "application/json"),
        &c,
    )
    .unwrap();
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[1].model.as_deref(), Some("bc"));
    assert_eq!(rs[1].model_version.as_deref(), Some("v1"));
    assert_eq!(
        rs[1].features,
        vec![
            ("a".into(), Value::Number(4.0)),
            ("b".into(), Value::Number(5.0)),
            ("c".into(), Value::Number(6.0))
        ]
    );
    assert_eq!(rs[0].prediction, Some(Value::Text("benign".into())));
    assert_eq!(rs[1].prediction, Some(Value::Text("malignant".into())));
    assert_eq!(
        rs[0].scores,
        vec![("malignant".into(), 0.1), ("benign".into(), 0.9)]
    );
}

#[test]
fn oip_defaults_argmax_and_binary_extension() {
    // Binary request: 2 rows of 2 FP32 features; JSON response with a probability vector.
    let header = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#;
    let mut req = header.to_vec();
    for f in [1.0f32, 2.0, 3.0, 4.0] {
        req.extend_from_slice(&f.to_le_bytes());
    }
    let mut s = sample(
        "/v2/models/m/infer",
        &req,
        br#"{"outputs":[{"name":"probs","shape":[2,3],"datatype":"FP32","data":[0.1,0.2,0.7,0.6,0.3,0.1]}]}"#,
        "application/json",
    );
    s.request_headers.insert(
        "inference-header-content-length",
        header.len().to_string().parse().unwrap(),
    );
    let rs = decode(&s, &cfg()).unwrap();
    assert_eq!(rs[1].features[1], ("x[1]".into(), Value::Number(4.0)));
    assert_eq!(rs[0].prediction, Some(Value::Text("2".into())));
    assert_eq!(rs[1].prediction, Some(Value::Text("0".into())));
}

#[test]
fn oip_bad_inputs_have_bounded_reasons() {
    let ok_resp = br#"{"outputs":[]}"#;
    for (req, resp, want) in [
        (
            &br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP99","data":[1,2]}]}"#[..],
            &ok_resp[..],
            DecodeError::UnknownDatatype,
        ),
        (
            br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
            ok_resp,
            DecodeError::WrongShape,
        ),
        (
            br#"{"inputs":[{"name":"x","shape":[2147483648],"datatype":"FP32","data":[1]}]}"#,
            ok_resp,
            DecodeError::WrongShape,
        ),
        (
            br#"{"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]}"#,
            ok_resp,
            DecodeError::MissingField,
        ),
        (br#"{"inputs": 5}"#, ok_resp, DecodeError::MissingField),
        (
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#,
            br#"{"error":"model not ready"}"#,
            DecodeError::ErrorResponse,
        ),
        (b"not json", ok_resp, DecodeError::InvalidJson),
    ] {
        let s = sample("/v2/models/m/infer", req, resp, "application/json");
        assert_eq!(
            decode(&s, &cfg()).unwrap_err(),
            want,
            "{}",
            String::from_utf8_lossy(req)
        );
    }
}

#[test]
fn kserve_v1_rows_columns_b64_and_nan() {
    let s = sample(
        "/v1/models/iris:predict",
        br#"{"instances":[[5.1,3.5,1.4,0.2],[6.7,NaN,5.2,2.3]]}"#,
        br#"{"predictions":[0,2]}"#,
        "application/json",
    );
    let rs = decode(&s, &cfg()).unwrap();
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].protocol, Protocol::KserveV1);
    assert_eq!(rs[0].model.as_deref(), Some("iris"));
    assert_eq!(rs[1].features[0], ("input[0]".into(), Value::Number(6.7)));
    assert!(matches!(rs[1].features[1].1, Value::Number(n) if n.is_nan()));
    assert_eq!(rs[1].prediction, Some(Value::Number(2.0)));

    // Columnar inputs with named features; object predictions with probabilities; b64 text.
    let s = sample(
        "/v1/models/sent/versions/3:predict",
        br#"{"inputs":{"text":[{"b64":"aGVsbG8="},{"b64":"d29ybGQ="}],"len":[5,5]}}"#,
        br#"{"predictions":[{"label":"pos","probs":[0.2,0.8]},{"label":"neg","probs":[0.9,0.1]}]}"#,
        "application/json",
    );
    let mut c = cfg();
    c.models.push(ModelSettings {
        name: "sent".into(),
        label_output: "label".into(),
        scores_output: "probs".into(),
        class_names: vec!["neg".into(), "pos".into()],
        ..ModelSettings::default()
    });
    let rs = decode(&s, &c).unwrap();
    assert_eq!(rs[0].model_version.as_deref(), Some("3"));
    assert!(rs[0]
        .features
        .contains(&("text".into(), Value::Text("hello".into()))));
    assert_eq!(rs[0].prediction, Some(Value::Text("pos".into())));
    assert_eq!(rs[1].scores, vec![("neg".into(), 0.9), ("pos".into(), 0.1)]);
}

#[test]
fn tf_serving_columnar_outputs() {
    let mut c = cfg();
    c.kind = ProtocolKind::TfServing;
    let s = sample(
        "/v1/models/half_plus_two:predict",
        br#"{"signature_name":"serving_default","inputs":[1.0,2.0,5.0]}"#,
        br#"{"outputs":[2.5,3.0,4.5]}"#,
        "application/json",
    );
    let rs = decode(&s, &c).unwrap();
    assert_eq!(rs.len(), 3);
    assert_eq!(rs[0].protocol, Protocol::TfServing);
    assert_eq!(rs[2].prediction, Some(Value::Number(4.5)));
}

#[test]
fn json_paths() {
    let mut c = cfg();
    c.kind = ProtocolKind::JsonPaths;
    c.json_paths.features = "$.request.data.rows".into();
    c.json_paths.prediction = "$.response.result[*].label".into();
    c.json_paths.scores = "$.response.result[*].p".into();
    c.json_paths.model = "$.request.model".into();
    let s = sample(
        "/score",
        br#"{"model":"churn","data":{"rows":[{"age":31,"plan":"pro"},{"age":58,"plan":"free"}]}}"#,
        br#"{"result":[{"label":"stay","p":[0.7,0.3]},{"label":"churn","p":[0.2,0.8]}]}"#,
        "application/json",
    );
    let rs = decode(&s, &c).unwrap();
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[1].model.as_deref(), Some("churn"));
    assert_eq!(
        rs[1].features,
        vec![
            ("age".into(), Value::Number(58.0)),
            ("plan".into(), Value::Text("free".into()))
        ]
    );
    assert_eq!(rs[1].prediction, Some(Value::Text("churn".into())));
    assert_eq!(rs[1].scores.len(), 2);
    c.json_paths.features = "$.request.nothing".into();
    c.json_paths.prediction = "$.response.nothing".into();
    assert_eq!(decode(&s, &c).unwrap_err(), DecodeError::PathNotFound);
}

#[test]
fn auto_detection_and_truncation() {
    let s = sample(
        "/predict",
        br#"{"instances":[1]}"#,
        br#"{"predictions":[2]}"#,
        "application/json",
    );
    assert_eq!(detect(&s, ProtocolKind::Auto), Some(Protocol::KserveV1));
    let s = sample(
        "/x",
        br#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1]}]}"#,
        b"{}",
        "application/json",
    );
    assert_eq!(
        detect(&s, ProtocolKind::Auto),
        Some(Protocol::OpenInferenceV2)
    );
    let s = sample("/x", b"\x00\x01binary", b"", "application/octet-stream");
    assert_eq!(decode(&s, &cfg()).unwrap_err(), DecodeError::Unrecognised);
    let mut s = sample(
        "/v2/models/m/infer",
        br#"{"inputs":[]}"#,
        b"{}",
        "application/json",
    );
    s.request_body.truncated = true;
    assert_eq!(decode(&s, &cfg()).unwrap_err(), DecodeError::Truncated);
}

/// A failed exchange (the model server's error body, status 500) is still
/// named by its model and version, for every protocol and every place a
/// version can be given: the path, the response header, the request header,
/// the default; in that order.
#[test]
fn failed_exchanges_keep_their_model_and_version() {
    struct Case {
        what: &'static str,
        kind: ProtocolKind,
        path: &'static str,
        request: &'static [u8],
        response_header: Option<&'static str>,
        request_header: Option<&'static str>,
        default: &'static str,
        model: Option<&'static str>,
        version: Option<&'static str>,
    }
    let oip_req: &[u8] =
        br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP64","data":[1,2]}]}"#;
    let chat_req: &[u8] = br#"{"model":"llama-3","messages":[{"role":"user","content":"hi"}]}"#;
    let base = Case {
        what: "",
        kind: ProtocolKind::Auto,
        path: "/v2/models/bc/versions/v2/infer",
        request: oip_req,
        response_header: None,
        request_header: None,
        default: "",
        model: Some("bc"),
        version: Some("v2"),
    };
    let cases = [
        Case {
            what: "OIP, version in the path",
            ..base
        },
        Case {
            what: "OIP, the path beats the headers and the default",
            response_header: Some("h-resp"),
            request_header: Some("h-req"),
            default: "dflt",
            ..base
        },
        Case {
            what: "OIP, version in the response header",
            path: "/v2/models/bc/infer",
            response_header: Some("v3"),
            request_header: Some("h-req"),
            default: "dflt",
            version: Some("v3"),
            ..base
        },
        Case {
            what: "OIP, version in the request header",
            path: "/v2/models/bc/infer",
            request_header: Some("v4"),
            default: "dflt",
            version: Some("v4"),
            ..base
        },
        Case {
            what: "OIP, the default",
            path: "/v2/models/bc/infer",
            default: "dflt",
            version: Some("dflt"),
            ..base
        },
        Case {
            what: "OIP, nothing names a version",
            path: "/v2/models/bc/infer",
            version: None,
            ..base
        },
        Case {
            what: "KServe v1, version in the path",
            path: "/v1/models/iris/versions/7:predict",
            request: br#"{"instances":[[1,2]]}"#,
            default: "dflt",
            model: Some("iris"),
            version: Some("7"),
            ..base
        },
        Case {
            what: "TF Serving, version label in the path",
            kind: ProtocolKind::TfServing,
            path: "/v1/models/iris/labels/canary:predict",
            request: br#"{"instances":[[1,2]]}"#,
            model: Some("iris"),
            version: Some("canary"),
            ..base
        },
        Case {
            what: "KServe v1, the request header",
            path: "/v1/models/iris:predict",
            request: br#"{"instances":[[1,2]]}"#,
            request_header: Some("r9"),
            model: Some("iris"),
            version: Some("r9"),
            ..base
        },
        Case {
            what: "OpenAI, model from the request, version from the response header",
            path: "/v1/chat/completions",
            request: chat_req,
            response_header: Some("2025-01"),
            model: Some("llama-3"),
            version: Some("2025-01"),
            ..base
        },
        Case {
            what: "OpenAI, a request cut at the capture cap still names its model",
            path: "/v1/chat/completions",
            request: br#"{"model":"llama-3","messages":[{"role":"user","content":"a very long pro"#,
            default: "dflt",
            model: Some("llama-3"),
            version: Some("dflt"),
            ..base
        },
        Case {
            what: "JSON paths, model and version from the request",
            kind: ProtocolKind::JsonPaths,
            path: "/score",
            request: br#"{"meta":{"model":"churn","version":"b"},"rows":[[1,2]]}"#,
            default: "dflt",
            model: Some("churn"),
            version: Some("b"),
            ..base
        },
        Case {
            what: "JSON paths, nothing in the body: the request header",
            kind: ProtocolKind::JsonPaths,
            path: "/score",
            request: br#"not json"#,
            request_header: Some("h1"),
            model: None,
            version: Some("h1"),
            ..base
        },
    ];
    for c in cases {
        let mut config = cfg();
        config.kind = c.kind;
        config.model_version_header = "x-model-version".into();
        config.default_model_version = c.default.into();
        config.json_paths.model = "$.request.meta.model".into();
        config.json_paths.model_version = "$.request.meta.version".into();
        config.json_paths.features = "$.request.rows".into();
        let mut s = sample(
            c.path,
            c.request,
            br#"{"error":"boom"}"#,
            "application/json",
        );
        s.status = 500;
        if let Some(v) = c.response_header {
            s.response_headers
                .insert("x-model-version", v.parse().unwrap());
        }
        if let Some(v) = c.request_header {
            s.request_headers
                .insert("x-model-version", v.parse().unwrap());
        }
        assert!(
            decode(&s, &config).is_err(),
            "{}: a 500 is not decoded",
            c.what
        );
        let id = identify(&s, detect(&s, config.kind), &config);
        assert_eq!(id.model.as_deref(), c.model, "{}: model", c.what);
        assert_eq!(id.version.as_deref(), c.version, "{}: version", c.what);
        if let Some(p) = detect(&s, config.kind) {
            assert_eq!(
                crate::protocol::identify_version(&s, p, &config).as_deref(),
                c.version,
                "{}: the version alone",
                c.what
            );
        }
        assert!(!id.model_label().is_empty(), "{}", c.what);
    }
}

/// The typed reading of chat and completion bodies gives the very records
/// the generic one gives, for well-formed bodies and for odd ones (fields of
/// other types, nulls, escapes, non-objects, NaN, duplicate keys, broken
/// UTF-8), and does read the well-formed ones itself.
#[test]
fn openai_typed_and_generic_readings_agree() {
    use super::openai::{decode_with, typed};
    let requests: &[(&str, &[u8], bool)] = &[
        ("/v1/chat/completions", br#"{"model":"m","temperature":0.2,"top_p":1,"max_tokens":64,"stream":false,"messages":[{"role":"system","content":"Be \"brief\".\n"},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"there"}]}]}"#, true),
        ("/v1/chat/completions", br#"{"model":"m","max_completion_tokens":null,"max_tokens":9,"messages":[{"content":"no role"},{"role":7,"content":"odd role"},{"role":"user"},{"role":"user","content":null},{"role":"user","content":[]},{"role":"user","content":{"text":"x"}}]}"#, true),
        ("/v1/chat/completions", br#"{"model":5,"temperature":"0.2","max_tokens":-1,"stream":"yes","messages":"not a list"}"#, true),
        ("/v1/chat/completions", br#"{"model":"m","max_completion_tokens":12,"max_tokens":9,"messages":{"role":"user"}}"#, true),
        ("/v1/chat/completions", br#"{"model":"m","messages":[["user","hi"]]}"#, false),
        ("/v1/chat/completions", br#"{"model":"m","messages":[{"role":"user","content":["hi"]}]}"#, false),
        ("/v1/chat/completions", br#"{"model":"a","model":"b","messages":[]}"#, false),
        ("/v1/chat/completions", br#"{"model":"m","temperature":NaN,"messages":[]}"#, false),
        ("/v1/chat/completions", b"{\"model\":\"m\",\"user\":\"\xff\",\"messages\":[]}", false),
        ("/v1/chat/completions", br#"["model","m"]"#, false),
        ("/v1/chat/completions", b"", false),
        ("/v1/completions", br#"{"model":"m","prompt":"Once upon a time","max_tokens":16}"#, true),
        ("/v1/completions", br#"{"model":"m","prompt":["a",[1,2],null,"b"]}"#, true),
        ("/v1/completions", br#"{"model":"m","prompt":null}"#, true),
        ("/v1/completions", br#"{"model":"m","prompt":{"a":1}}"#, true),
    ];
    let responses: &[(&[u8], bool)] = &[
        (br#"{"id":"c1","object":"chat.completion","model":"m-8b","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \u00e9!","tool_calls":[{"id":"t"},{"id":"u"}]},"logprobs":null,"finish_reason":"stop"},{"index":1,"message":{"content":"second"},"text":"t2","finish_reason":"length"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#, true),
        (br#"{"id":7,"model":null,"choices":[{"message":null,"text":"plain","finish_reason":null}],"usage":null}"#, true),
        (br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"tool_calls":"x"}}],"usage":{"prompt_tokens":1.5,"completion_tokens":-2}}"#, true),
        (br#"{"choices":"none","usage":{}}"#, true),
        (br#"{"error":null,"choices":[]}"#, true),
        (br#"{"error":{"message":"boom"}}"#, true),
        (br#"{"choices":[1]}"#, false),
        (br#"{"usage":"x","choices":[]}"#, false),
        (br#"{"choices":[{"message":"hi"}]}"#, false),
        (b"not json", false),
    ];
    let mut compared = 0;
    for &(path, request, request_typed) in requests {
        assert_eq!(
            typed::read::<typed::Request>(request).is_some(),
            request_typed,
            "typed reading of {}",
            String::from_utf8_lossy(request)
        );
        for &(response, response_typed) in responses {
            assert_eq!(
                typed::read::<typed::Response>(response).is_some(),
                response_typed,
                "typed reading of {}",
                String::from_utf8_lossy(response)
            );
            for status in [200, 500] {
                let mut s = sample(path, request, response, "application/json");
                s.status = status;
                let (fast, generic) = (decode_with(&s, true), decode_with(&s, false));
                assert_eq!(
                    fast,
                    generic,
                    "{path} {status}\n{}\n{}",
                    String::from_utf8_lossy(request),
                    String::from_utf8_lossy(response)
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, requests.len() * responses.len() * 2);
}
