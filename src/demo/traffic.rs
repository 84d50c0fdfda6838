//! The demo's traffic generator and its periodic one-line report.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

/// How long the demo waits before sending a classifier request's true label
/// (labels come later than predictions in real life too).
const LABEL_DELAY: Duration = Duration::from_secs(3);

/// The demo's "ground truth" for a classifier row: a rule on the third
/// feature, which the example model only approximates.
fn true_class(features: &[f64; 4]) -> u8 {
    if features[2] < 2.5 {
        0
    } else if features[2] < 4.8 {
        1
    } else {
        2
    }
}

/// Sends a mix of streaming chat, plain chat and classifier requests through
/// the proxy at `rate` per second; a few seconds after each classifier
/// answer, posts its true label to the feedback API. Returns how many
/// requests were sent.
///
/// From `drift_at` on, the classifier's inputs shift (petal length +2.5,
/// sepal width −0.8), so that drift shows in the figures.
pub async fn run(
    proxy: SocketAddr,
    admin: SocketAddr,
    rate: f64,
    drift_at: Duration,
    stop: CancellationToken,
) -> u64 {
    let started = std::time::Instant::now();
    let mut drifting = false;
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
        let mut label = None;
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
                let mut f = [5.0 + fastrand::f64() * 2.0, 3.0 + fastrand::f64(), 1.0 + fastrand::f64() * 5.0, fastrand::f64() * 2.5];
                if started.elapsed() >= drift_at {
                    if !drifting {
                        drifting = true;
                        println!("[{:>5.0}s] injecting drift: petal_length +2.5, sepal_width -0.8 from now on", started.elapsed().as_secs_f64());
                    }
                    f[2] += 2.5;
                    f[1] -= 0.8;
                }
                label = Some(true_class(&f));
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
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(resp) = c.request(req).await else {
                return;
            };
            let id = resp
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let _ = resp.into_body().collect().await;
            let (Some(id), Some(label)) = (id, label) else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep(LABEL_DELAY) => {},
                _ = stop.cancelled() => return,
            }
            let body = format!(r#"{{"request_id":"{id}","label":{label}}}"#);
            let req = http::Request::post(format!("http://{admin}/v1/feedback"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("valid request");
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
        let drift = v["drift"]["models"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["model"] == "demo-classifier"))
            .cloned()
            .unwrap_or_default();
        let drifted = drift["drifted_features"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let window = v["quality"]["models"]
            .as_array()
            .and_then(|m| m.first())
            .and_then(|m| m["windows"].get(0))
            .cloned()
            .unwrap_or_default();
        let figure = |x: &serde_json::Value| {
            x.as_f64()
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "n/a".into())
        };
        println!(
            "[{:>5.0}s] requests {} | active {} | samples taken {} analyzed {} dropped {} | upstream up: {} | classifier {}: labels {} accuracy {} estimated {} | drift ({} reference): [{}]",
            v["uptime_seconds"].as_f64().unwrap_or(0.0),
            v["proxy"]["requests_total"],
            v["proxy"]["requests_active"],
            v["samples"]["taken"],
            v["samples"]["analyzed"],
            v["samples"]["dropped"]["queue_full"],
            v["upstream"]["up"],
            window["window"].as_str().unwrap_or("-"),
            window["labelled"],
            figure(&window["accuracy"]),
            figure(&window["estimated"]["accuracy"]),
            drift["reference"].as_str().unwrap_or("none"),
            drifted,
        );
    }
}
