//! The demo's traffic generator and its periodic one-line report.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

/// Sends a mix of streaming chat, plain chat and classifier requests through
/// the proxy at `rate` per second. Returns how many were sent.
pub async fn run(proxy: SocketAddr, rate: f64, stop: CancellationToken) -> u64 {
    if rate <= 0.0 {
        stop.cancelled().await;
        return 0;
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {},
            _ = stop.cancelled() => return sent,
        }
        let (path, body) = match sent % 3 {
            0 => (
                "/v1/chat/completions",
                r#"{"model":"demo-llm","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me about modelwatch."}]}"#.to_string(),
            ),
            1 => (
                "/v1/chat/completions",
                r#"{"model":"demo-llm","max_tokens":8,"messages":[{"role":"user","content":"Summarise."}]}"#.to_string(),
            ),
            _ => {
                let f = [5.0 + fastrand::f64() * 2.0, 3.0 + fastrand::f64(), 1.0 + fastrand::f64() * 5.0, fastrand::f64() * 2.5];
                (
                    "/v2/models/demo-classifier/infer",
                    format!(r#"{{"inputs":[{{"name":"features","shape":[1,4],"datatype":"FP32","data":[{},{},{},{}]}}]}}"#, f[0], f[1], f[2], f[3]),
                )
            }
        };
        sent += 1;
        let req = http::Request::post(format!("http://{proxy}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid request");
        let c = client.clone();
        tokio::spawn(async move {
            if let Ok(resp) = c.request(req).await {
                let _ = resp.into_body().collect().await;
            }
        });
    }
}

/// Prints a one-line summary from `/v1/status` every 5 seconds.
pub async fn report(admin: SocketAddr, stop: CancellationToken) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {},
            _ = stop.cancelled() => return,
        }
        let Ok(uri) = format!("http://{admin}/v1/status").parse::<http::Uri>() else {
            return;
        };
        let Ok(resp) = client.get(uri).await else {
            continue;
        };
        let Ok(body) = resp.into_body().collect().await else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
            continue;
        };
        println!(
            "[{:>5.0}s] requests {} | active {} | samples taken {} analyzed {} dropped {} | upstream up: {}",
            v["uptime_seconds"].as_f64().unwrap_or(0.0),
            v["proxy"]["requests_total"],
            v["proxy"]["requests_active"],
            v["samples"]["taken"],
            v["samples"]["analyzed"],
            v["samples"]["dropped"]["queue_full"],
            v["upstream"]["up"],
        );
    }
}
