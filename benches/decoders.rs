//! Decoder costs on realistic payloads: `cargo bench --bench decoders`.
//! Targets: under 5 µs per tabular row, under 1 µs per SSE chunk.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use modelwatch::config::ProtocolConfig;
use modelwatch::protocol::{decode, Operation};
use modelwatch::proxy::llm::LlmScan;
use modelwatch::sample::Sample;

fn sample(path: &str, request: &[u8], response: &[u8], content_type: &str) -> Sample {
    Sample::from_bodies(path, request, response, content_type)
}

/// An OIP request of `rows` rows of 30 FP64 features (breast-cancer-like values).
fn oip(rows: usize) -> Sample {
    let data: Vec<String> = (0..rows * 30)
        .map(|i| format!("{:.4}", 10.0 + (i % 97) as f64 * 0.731))
        .collect();
    let req = format!(
        r#"{{"id":"r","inputs":[{{"name":"input-0","shape":[{rows},30],"datatype":"FP64","data":[{}]}}]}}"#,
        data.join(",")
    );
    let labels: Vec<&str> = (0..rows)
        .map(|i| if i % 3 == 0 { "0" } else { "1" })
        .collect();
    let probs: Vec<&str> = (0..rows).flat_map(|_| ["0.12", "0.88"]).collect();
    let resp = format!(
        r#"{{"model_name":"bc","model_version":"v1","id":"r","outputs":[{{"name":"predict","shape":[{rows},1],"datatype":"INT64","data":[{}]}},{{"name":"predict_proba","shape":[{rows},2],"datatype":"FP64","data":[{}]}}]}}"#,
        labels.join(","),
        probs.join(",")
    );
    sample(
        "/v2/models/bc/infer",
        req.as_bytes(),
        resp.as_bytes(),
        "application/json",
    )
}

/// The same exchange as [`oip`] over gRPC (ModelInfer, one frame each way):
/// typed `contents`, or raw little-endian tensors as tritonclient sends them.
fn oip_grpc(rows: usize, raw: bool) -> Sample {
    use modelwatch::protocol::grpc::pb::inference::{
        model_infer_request::InferInputTensor, model_infer_response::InferOutputTensor,
        InferTensorContents, ModelInferRequest, ModelInferResponse,
    };
    use prost::Message;
    let values: Vec<f64> = (0..rows * 30)
        .map(|i| 10.0 + (i % 97) as f64 * 0.731)
        .collect();
    let labels: Vec<i64> = (0..rows).map(|i| (i % 3 != 0) as i64).collect();
    let probs: Vec<f64> = (0..rows).flat_map(|_| [0.12, 0.88]).collect();
    let le = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut req = ModelInferRequest {
        model_name: "bc".into(),
        id: "r".into(),
        inputs: vec![InferInputTensor {
            name: "input-0".into(),
            datatype: "FP64".into(),
            shape: vec![rows as i64, 30],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut resp = ModelInferResponse {
        model_name: "bc".into(),
        model_version: "v1".into(),
        id: "r".into(),
        outputs: vec![
            InferOutputTensor {
                name: "predict".into(),
                datatype: "INT64".into(),
                shape: vec![rows as i64, 1],
                ..Default::default()
            },
            InferOutputTensor {
                name: "predict_proba".into(),
                datatype: "FP64".into(),
                shape: vec![rows as i64, 2],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    if raw {
        req.raw_input_contents = vec![le(&values)];
        let l: Vec<u8> = labels.iter().flat_map(|x| x.to_le_bytes()).collect();
        resp.raw_output_contents = vec![l, le(&probs)];
    } else {
        req.inputs[0].contents = Some(InferTensorContents {
            fp64_contents: values,
            ..Default::default()
        });
        resp.outputs[0].contents = Some(InferTensorContents {
            int64_contents: labels,
            ..Default::default()
        });
        resp.outputs[1].contents = Some(InferTensorContents {
            fp64_contents: probs,
            ..Default::default()
        });
    }
    let frame = |m: Vec<u8>| {
        let mut out = vec![0u8];
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
        out
    };
    let mut s = sample(
        "/inference.GRPCInferenceService/ModelInfer",
        &frame(req.encode_to_vec()),
        &frame(resp.encode_to_vec()),
        "application/grpc",
    );
    s.request_headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    s.grpc_status = Some(0);
    s
}

fn sse(chunks: usize) -> (Vec<u8>, Vec<u8>) {
    let mut s = Vec::new();
    s.extend_from_slice(br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama-3-8b","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#);
    s.extend_from_slice(b"\n\n");
    for i in 0..chunks {
        s.extend_from_slice(format!(r#"data: {{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama-3-8b","choices":[{{"index":0,"delta":{{"content":" tok{i}"}},"finish_reason":null}}]}}"#).as_bytes());
        s.extend_from_slice(b"\n\n");
    }
    s.extend_from_slice(br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama-3-8b","choices":[],"usage":{"prompt_tokens":42,"completion_tokens":200,"total_tokens":242}}"#);
    s.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    let req = br#"{"model":"llama-3-8b","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the paragraph."}]}"#.to_vec();
    (req, s)
}

fn benches(c: &mut Criterion) {
    let config = ProtocolConfig::default();

    let mut g = c.benchmark_group("oip");
    for rows in [1usize, 32] {
        let s = oip(rows);
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(format!("30 features x {rows} rows"), |b| {
            b.iter(|| decode(&s, &config).unwrap())
        });
        for (form, raw) in [("typed", false), ("raw", true)] {
            let s = oip_grpc(rows, raw);
            assert_eq!(decode(&s, &config).unwrap().len(), rows);
            g.bench_function(format!("gRPC {form}, 30 features x {rows} rows"), |b| {
                b.iter(|| decode(&s, &config).unwrap())
            });
        }
    }
    g.finish();

    let chat = sample(
        "/v1/chat/completions",
        br#"{"model":"llama-3-8b","temperature":0.2,"max_tokens":128,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the following paragraph in one sentence: the quick brown fox jumps over the lazy dog, again and again."}]}"#,
        br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"llama-3-8b","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox keeps jumping over the lazy dog until it wakes up."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":18,"total_tokens":60}}"#,
        "application/json",
    );
    c.bench_function("openai/chat completion", |b| {
        b.iter(|| decode(&chat, &config).unwrap())
    });

    let (req, stream) = sse(200);
    let s = sample("/v1/chat/completions", &req, &stream, "text/event-stream");
    let mut g = c.benchmark_group("sse 200 chunks");
    g.throughput(Throughput::Elements(202));
    g.bench_function("decode (sampled, analysis thread)", |b| {
        b.iter(|| decode(&s, &config).unwrap())
    });
    // The scan that runs on the proxy's path for every request, fed in network-sized frames.
    let frames: Vec<bytes::Bytes> = stream
        .chunks(1400)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    g.bench_function("scan (every request, proxy path)", |b| {
        b.iter(|| {
            let mut scan = LlmScan::new(Operation::Chat, true, 256 * 1024);
            for (i, f) in frames.iter().enumerate() {
                scan.frame(f, Duration::from_millis(i as u64));
            }
            scan.finish()
        })
    });
    g.finish();
}

criterion_group!(decoders, benches);
criterion_main!(decoders);
