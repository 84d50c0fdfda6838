use std::io::Write;

use prost::Message;

use super::pb::inference::{
    model_infer_request::InferInputTensor, model_infer_response::InferOutputTensor,
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelStreamInferResponse,
};
use super::pb::tensorflow::serving::{model_spec, ModelSpec, PredictRequest, PredictResponse};
use super::pb::tensorflow::{tensor_shape_proto::Dim, DataType, TensorProto, TensorShapeProto};
use super::*;
use crate::config::ProtocolConfig;
use crate::protocol::{decode, Value};

/// Frames messages as gRPC does (uncompressed).
fn frame(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.push(0);
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

fn gzip_frame(message: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(message).unwrap();
    let z = z.finish().unwrap();
    let mut out = vec![1];
    out.extend_from_slice(&(z.len() as u32).to_be_bytes());
    out.extend_from_slice(&z);
    out
}

fn grpc_sample(path: &str, request: &[u8], response: &[u8]) -> Sample {
    let mut s = Sample::from_bodies(path, request, response, "application/grpc");
    s.request_headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    s.grpc_status = Some(0);
    s
}

/// A unary call of `path`: one framed message each way.
fn unary(path: &str, req: &impl Message, resp: &impl Message) -> Sample {
    grpc_sample(
        path,
        &frame(&[req.encode_to_vec()]),
        &frame(&[resp.encode_to_vec()]),
    )
}

const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const STREAM: &str = "/inference.GRPCInferenceService/ModelStreamInfer";
const PREDICT: &str = "/tensorflow.serving.PredictionService/Predict";

fn fp32_input(name: &str, shape: Vec<i64>, values: Vec<f32>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape,
        contents: Some(InferTensorContents {
            fp32_contents: values,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn request(id: &str, rows: &[[f32; 2]]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "bc".into(),
        id: id.into(),
        inputs: vec![fp32_input(
            "x",
            vec![rows.len() as i64, 2],
            rows.iter().flatten().copied().collect(),
        )],
        ..Default::default()
    }
}

fn response(id: &str, labels: &[i64]) -> ModelInferResponse {
    ModelInferResponse {
        model_name: "bc".into(),
        model_version: "v3".into(),
        id: id.into(),
        outputs: vec![InferOutputTensor {
            name: "predict".into(),
            datatype: "INT64".into(),
            shape: vec![labels.len() as i64, 1],
            contents: Some(InferTensorContents {
                int64_contents: labels.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn model_infer_with_typed_contents_gives_one_record_per_row() {
    let req = request("r1", &[[1.5, 2.0], [3.0, 4.0]]);
    let resp = response("r1", &[1, 0]);
    let s = unary(INFER, &req, &resp);
    let records = decode(&s, &ProtocolConfig::default()).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].protocol, Protocol::OpenInferenceV2Grpc);
    assert_eq!(records[0].model.as_deref(), Some("bc"));
    assert_eq!(records[0].model_version.as_deref(), Some("v3"));
    assert_eq!(
        records[1].features,
        vec![
            ("x[0]".to_string(), Value::Number(3.0)),
            ("x[1]".to_string(), Value::Number(4.0))
        ]
    );
    assert_eq!(records[0].prediction, Some(Value::Number(1.0)));
    assert_eq!(records[1].prediction, Some(Value::Number(0.0)));
    assert_eq!(records[0].response_id.as_deref(), Some("r1"));
    // The client sent an x-request-id ("synthetic"): it stays the join key.
    assert_eq!(records[0].request_id, "synthetic");
}

#[test]
fn the_request_id_field_is_the_join_key_when_the_client_sent_no_header() {
    let req = request("client-7", &[[1.0, 2.0]]);
    let resp = response("client-7", &[1]);
    let mut s = unary(INFER, &req, &resp);
    s.request_id_generated = true;
    let records = decode(&s, &ProtocolConfig::default()).unwrap();
    assert_eq!(records[0].request_id, "client-7");
}

#[test]
fn raw_contents_of_every_datatype_decode_as_over_rest() {
    let mut raw = Vec::new();
    let mut inputs = Vec::new();
    let mut push = |name: &str, dt: &str, bytes: Vec<u8>| {
        inputs.push(InferInputTensor {
            name: name.into(),
            datatype: dt.into(),
            shape: vec![1, 1],
            ..Default::default()
        });
        raw.push(bytes);
    };
    push("f16", "FP16", 0x3c00u16.to_le_bytes().to_vec());
    push("bf16", "BF16", 0xc000u16.to_le_bytes().to_vec());
    push("f32", "FP32", 2.5f32.to_le_bytes().to_vec());
    push("f64", "FP64", (-1.25f64).to_le_bytes().to_vec());
    push("i8", "INT8", vec![0xff]);
    push("u16", "UINT16", 65535u16.to_le_bytes().to_vec());
    push("i64", "INT64", (-9i64).to_le_bytes().to_vec());
    push("b", "BOOL", vec![1]);
    let mut text = 5u32.to_le_bytes().to_vec();
    text.extend_from_slice(b"hello");
    push("s", "BYTES", text);
    let req = ModelInferRequest {
        model_name: "m".into(),
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    };
    let resp = ModelInferResponse {
        outputs: vec![InferOutputTensor {
            name: "p".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            ..Default::default()
        }],
        raw_output_contents: vec![[0.25f32.to_le_bytes(), 0.75f32.to_le_bytes()].concat()],
        ..Default::default()
    };
    let s = unary(INFER, &req, &resp);
    let r = &decode(&s, &ProtocolConfig::default()).unwrap()[0];
    let f: Vec<Value> = r.features.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        f,
        vec![
            Value::Number(1.0),
            Value::Number(-2.0),
            Value::Number(2.5),
            Value::Number(-1.25),
            Value::Number(-1.0),
            Value::Number(65535.0),
            Value::Number(-9.0),
            Value::Bool(true),
            Value::Text("hello".into()),
        ]
    );
    assert_eq!(r.scores, vec![("0".into(), 0.25), ("1".into(), 0.75)]);
    assert_eq!(r.prediction, Some(Value::Text("1".into())));
}

#[test]
fn gzip_messages_are_inflated() {
    let req = request("", &[[1.0, 2.0]]);
    let resp = response("", &[1]);
    let mut s = grpc_sample(
        INFER,
        &gzip_frame(&req.encode_to_vec()),
        &gzip_frame(&resp.encode_to_vec()),
    );
    s.request_headers
        .insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
    s.response_headers
        .insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
    assert_eq!(decode(&s, &ProtocolConfig::default()).unwrap().len(), 1);
    // An encoding we do not know is a bounded reason, not a guess.
    s.request_headers
        .insert("grpc-encoding", http::HeaderValue::from_static("snappy"));
    assert_eq!(
        decode(&s, &ProtocolConfig::default()).unwrap_err(),
        DecodeError::Compression
    );
}

#[test]
fn a_2gb_shape_is_refused_without_allocating() {
    let mut req = request("", &[[1.0, 2.0]]);
    req.inputs[0].shape = vec![1 << 30, 2];
    let s = grpc_sample(
        INFER,
        &frame(&[req.encode_to_vec()]),
        &frame(&[response("", &[1]).encode_to_vec()]),
    );
    assert_eq!(
        decode(&s, &ProtocolConfig::default()).unwrap_err(),
        DecodeError::WrongShape
    );
    req.inputs[0].shape = vec![-1, 2];
    let s = grpc_sample(
        INFER,
        &frame(&[req.encode_to_vec()]),
        &frame(&[response("", &[1]).encode_to_vec()]),
    );
    assert_eq!(
        decode(&s, &ProtocolConfig::default()).unwrap_err(),
        DecodeError::WrongShape
    );
}

#[test]
fn bad_frames_and_bad_protobuf_have_bounded_reasons() {
    let resp = frame(&[response("", &[1]).encode_to_vec()]);
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (vec![0, 0, 0, 0, 9, 1, 2], DecodeError::GrpcFrame),
        (vec![7, 0, 0, 0, 1, 1], DecodeError::GrpcFrame),
        (
            frame(&[vec![0xff, 0xff, 0xff]]),
            DecodeError::InvalidProtobuf,
        ),
        (Vec::new(), DecodeError::EmptyBody),
    ];
    for (body, want) in cases {
        let s = grpc_sample(INFER, &body, &resp);
        assert_eq!(
            decode(&s, &ProtocolConfig::default()).unwrap_err(),
            want,
            "{body:?}"
        );
    }
}

#[test]
fn a_failed_call_is_an_error_response() {
    let req = frame(&[request("", &[[1.0, 2.0]]).encode_to_vec()]);
    let mut s = grpc_sample(INFER, &req, &[]);
    s.grpc_status = Some(13);
    assert_eq!(
        decode(&s, &ProtocolConfig::default()).unwrap_err(),
        DecodeError::ErrorResponse
    );
    assert!(s.failed());
    s.grpc_status = Some(3);
    assert!(!s.failed(), "INVALID_ARGUMENT is the client's error");
    // The model is still known from the request.
    let id = crate::protocol::identify(
        &s,
        crate::protocol::detect(&s, Default::default()),
        &ProtocolConfig::default(),
    );
    assert_eq!(id.model.as_deref(), Some("bc"));
}

#[test]
fn health_and_metadata_calls_are_not_inferences() {
    for path in [
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ModelMetadata",
        "/grpc.health.v1.Health/Check",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
    ] {
        let s = grpc_sample(path, &frame(&[Vec::new()]), &frame(&[Vec::new()]));
        assert_eq!(
            crate::protocol::detect(&s, Default::default()),
            None,
            "{path}"
        );
    }
}

#[test]
fn a_stream_matches_answers_by_id_then_by_position() {
    // MLServer's form: plain answers, here out of order for the ids.
    let reqs = [
        request("a", &[[1.0, 1.0]]),
        request("b", &[[2.0, 2.0]]),
        request("", &[[3.0, 3.0]]),
    ];
    let answers = [
        response("b", &[0]),
        response("x", &[7]),
        response("a", &[1]),
    ];
    let s = grpc_sample(
        STREAM,
        &frame(&reqs.iter().map(|r| r.encode_to_vec()).collect::<Vec<_>>()),
        &frame(
            &answers
                .iter()
                .map(|r| r.encode_to_vec())
                .collect::<Vec<_>>(),
        ),
    );
    let records = decode(&s, &ProtocolConfig::default()).unwrap();
    let got: Vec<(&str, Option<Value>)> = records
        .iter()
        .map(|r| (r.request_id.as_str(), r.prediction.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", Some(Value::Number(1.0))),
            ("b", Some(Value::Number(0.0))),
            ("synthetic:2", Some(Value::Number(7.0))),
        ]
    );

    // Triton's form: answers wrapped, one of them an error.
    let wrapped = [
        ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(response("a", &[1])),
        },
        ModelStreamInferResponse {
            error_message: "model failed".into(),
            infer_response: None,
        },
    ];
    let s = grpc_sample(
        STREAM,
        &frame(
            &reqs[..2]
                .iter()
                .map(|r| r.encode_to_vec())
                .collect::<Vec<_>>(),
        ),
        &frame(
            &wrapped
                .iter()
                .map(|r| r.encode_to_vec())
                .collect::<Vec<_>>(),
        ),
    );
    let records = decode(&s, &ProtocolConfig::default()).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].request_id, "a");
}

fn tf_tensor(dtype: DataType, dims: &[i64]) -> TensorProto {
    TensorProto {
        dtype: dtype as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| Dim {
                    size: *d,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        ..Default::default()
    }
}

#[test]
fn tf_serving_predict_with_typed_values_and_tensor_content() {
    let mut a = tf_tensor(DataType::DtFloat, &[2, 1]);
    a.float_val = vec![1.5, 2.5];
    let mut b = tf_tensor(DataType::DtDouble, &[2, 1]);
    b.tensor_content = [3.0f64.to_le_bytes(), 4.0f64.to_le_bytes()].concat();
    let req = PredictRequest {
        model_spec: Some(ModelSpec {
            name: "iris".into(),
            version_choice: Some(model_spec::VersionChoice::VersionLabel("canary".into())),
            ..Default::default()
        }),
        inputs: [("b".to_string(), b), ("a".to_string(), a)].into(),
        ..Default::default()
    };
    let mut scores = tf_tensor(DataType::DtFloat, &[2, 2]);
    scores.float_val = vec![0.1, 0.9, 0.8, 0.2];
    let resp = PredictResponse {
        model_spec: Some(ModelSpec {
            name: "iris".into(),
            version_choice: Some(model_spec::VersionChoice::Version(3)),
            ..Default::default()
        }),
        outputs: [("scores".to_string(), scores)].into(),
    };
    let s = unary(PREDICT, &req, &resp);
    let records = decode(&s, &ProtocolConfig::default()).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].protocol, Protocol::TfServingGrpc);
    assert_eq!(records[0].model.as_deref(), Some("iris"));
    assert_eq!(records[0].model_version.as_deref(), Some("3"));
    assert_eq!(
        records[1].features,
        vec![
            ("a".to_string(), Value::Number(2.5)),
            ("b".to_string(), Value::Number(4.0))
        ]
    );
    assert_eq!(records[0].prediction, Some(Value::Text("1".into())));
    assert_eq!(records[1].prediction, Some(Value::Text("0".into())));

    // One value fills a constant tensor's shape; a 2 GB shape is refused.
    let mut c = tf_tensor(DataType::DtInt64, &[3]);
    c.int64_val = vec![7];
    assert_eq!(tensor_values(&c), vec![Value::Number(7.0); 3]);
    let huge = tf_tensor(DataType::DtFloat, &[1 << 31, 1]);
    assert_eq!(
        tfserving_tensor(&huge).unwrap_err(),
        DecodeError::WrongShape
    );
}

fn tfserving_tensor(t: &TensorProto) -> Result<crate::protocol::oip::Tensor, DecodeError> {
    let req = PredictRequest {
        inputs: [("x".to_string(), t.clone())].into(),
        ..Default::default()
    };
    let resp = PredictResponse::default();
    let s = unary(PREDICT, &req, &resp);
    decode(&s, &ProtocolConfig::default()).map(|r| crate::protocol::oip::Tensor {
        name: "x".into(),
        shape: Vec::new(),
        datatype: String::new(),
        data: r
            .iter()
            .flat_map(|r| r.features.iter().map(|f| f.1.clone()))
            .collect(),
    })
}

fn tensor_values(t: &TensorProto) -> Vec<Value> {
    tfserving_tensor(t).unwrap().data
}

/// The fuzz targets' seeds (written with Python's protobuf from the same
/// vendored .proto files) decode: a second encoder agrees with prost.
#[test]
fn the_fuzz_seeds_decode() {
    let seed = |target: &str, name: &str, path: &str| {
        let data = std::fs::read(format!(
            "{}/fuzz/corpus/{target}/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let split = data.windows(2).position(|w| w == [0xff, 0x00]).unwrap();
        let mut s = grpc_sample(path, &data[..split], &data[split + 2..]);
        if data[0] & 1 == 1 {
            for h in [&mut s.request_headers, &mut s.response_headers] {
                h.insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
            }
        }
        decode(&s, &ProtocolConfig::default()).unwrap()
    };
    let r = seed("decode_grpc_oip", "seed1", INFER);
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[1].features,
        vec![
            ("x[0]".to_string(), Value::Number(3.5)),
            ("x[1]".to_string(), Value::Number(4.5)),
            ("s".to_string(), Value::Text("c".into()))
        ]
    );
    assert_eq!(r[0].scores, vec![("0".into(), 0.25), ("1".into(), 0.75)]);
    let r = seed("decode_grpc_oip", "seed2", STREAM);
    assert_eq!(
        (
            r.len(),
            r[0].request_id.as_str(),
            r[0].features[2].1.clone()
        ),
        (4, "r0", Value::Text("ab".into()))
    );
    let r = seed("decode_grpc_oip", "seed3", STREAM);
    assert_eq!(r.len(), 2, "one answer failed");
    for name in ["seed1", "seed2"] {
        let r = seed("decode_grpc_tfserving", name, PREDICT);
        assert_eq!(r[0].model_version.as_deref(), Some("3"));
        assert_eq!(r[1].features[1].1, Value::Number(4.0));
    }
}
