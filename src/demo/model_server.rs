//! The demo's example model server: canned, deterministic answers shaped like
//! a real OpenAI-compatible LLM server and an Open Inference Protocol
//! classifier. A demo stand-in only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

type DemoBody = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, v: Value) -> Response<DemoBody> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

const WORDS: &[&str] = &[
    "The", " model", " is", " being", " watched", " by", " a", " sidecar", " that", " counts",
    " every", " token", ".",
];

async fn handle(req: Request<Incoming>) -> Result<Response<DemoBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        return Ok(full(StatusCode::OK, json!({"status": "ok"})));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    match (path.as_str(), parsed) {
        ("/v1/chat/completions", Some(v)) => Ok(chat(&v)),
        ("/v2/models/demo-classifier/infer", Some(v)) => Ok(classify(&v)),
        (_, None) if path.starts_with("/v1/") || path.starts_with("/v2/") => Ok(full(
            StatusCode::BAD_REQUEST,
            json!({"error": "request body is not JSON"}),
        )),
        _ => Ok(full(StatusCode::NOT_FOUND, json!({"error": "not found"}))),
    }
}

fn chat(req: &Value) -> Response<DemoBody> {
    let model = req["model"].as_str().unwrap_or("demo-llm").to_string();
    let max = req["max_tokens"]
        .as_u64()
        .unwrap_or(WORDS.len() as u64)
        .min(WORDS.len() as u64) as usize;
    let finish = if max < WORDS.len() { "length" } else { "stop" };
    let prompt_tokens = req["messages"].to_string().len() as u64 / 4;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    if req["stream"].as_bool() == Some(true) {
        let include_usage = req["stream_options"]["include_usage"].as_bool() == Some(true);
        let stream = async_stream(id, model, max, finish, prompt_tokens, include_usage);
        let mut r = Response::new(StreamBody::new(stream).boxed());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        return r;
    }
    let text: String = WORDS[..max].concat();
    full(
        StatusCode::OK,
        json!({
            "id": id, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": max, "total_tokens": prompt_tokens + max as u64},
        }),
    )
}

fn async_stream(
    id: String,
    model: String,
    max: usize,
    finish: &'static str,
    prompt_tokens: u64,
    include_usage: bool,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let event = |v: Value| Ok(Frame::data(Bytes::from(format!("data: {v}\n\n"))));
        for (i, w) in WORDS[..max].iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(if i == 0 { 60 } else { 15 })).await;
            let chunk = json!({"id": id, "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]});
            if tx.send(event(chunk)).await.is_err() {
                return;
            }
        }
        let last = json!({"id": id, "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]});
        let _ = tx.send(event(last)).await;
        if include_usage {
            let usage = json!({"id": id, "object": "chat.completion.chunk", "model": model, "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": max, "total_tokens": prompt_tokens + max as u64}});
            let _ = tx.send(event(usage)).await;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A fixed logistic model over 4 features (iris-like), 3 classes.
fn classify(req: &Value) -> Response<DemoBody> {
    let Some(input) = req["inputs"].get(0) else {
        return full(
            StatusCode::BAD_REQUEST,
            json!({"error": "inputs[0] is missing"}),
        );
    };
    let data: Vec<f64> = input["data"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if data.is_empty() || data.len() % 4 != 0 {
        return full(
            StatusCode::BAD_REQUEST,
            json!({"error": "expected rows of 4 FP32 features"}),
        );
    }
    const W: [[f64; 4]; 3] = [
        [0.4, 1.4, -2.2, -1.0],
        [0.5, -1.6, 0.6, -1.3],
        [-1.1, -1.4, 2.3, 2.4],
    ];
    let mut probs = Vec::new();
    let mut labels = Vec::new();
    for row in data.chunks(4) {
        let z: Vec<f64> = W
            .iter()
            .map(|w| w.iter().zip(row).map(|(a, b)| a * b).sum())
            .collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / s).collect();
        let arg = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as i64)
            .unwrap_or(0);
        labels.push(arg);
        probs.extend(p);
    }
    let rows = labels.len();
    // The response id echoes the request's, as the protocol says.
    let id = req["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    full(
        StatusCode::OK,
        json!({
            "model_name": "demo-classifier", "model_version": "1", "id": id,
            "outputs": [
                {"name": "label", "shape": [rows], "datatype": "INT64", "data": labels},
                {"name": "probabilities", "shape": [rows, 3], "datatype": "FP64", "data": probs},
            ],
        }),
    )
}

/// Starts the example model server on a free loopback port.
pub async fn start() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                    .await;
            });
        }
    });
    Ok(addr)
}
