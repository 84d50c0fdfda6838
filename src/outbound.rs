//! HTTP clients for modelwatch's own calls (alert sinks, shadow requests,
//! scrapes of the model server's metrics, metadata probes), and the two
//! calls they make: a GET of a bounded body and a JSON POST, each with a
//! timeout and an error that says what went wrong.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled client (idle connections kept for a minute).
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

/// A client that keeps no idle connection: for occasional probes, so that
/// nothing stays open to the model server between them.
pub fn client_no_pool() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

fn no_answer(timeout: Duration) -> String {
    format!("no answer within {}", humantime::format_duration(timeout))
}

fn describe(e: hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

/// GET `url`; the body of a 2xx answer, read up to `limit` bytes.
pub async fn get(
    client: &HttpClient,
    url: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, String> {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let call = async {
        let resp = client.request(req).await.map_err(describe)?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        Ok(Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes())
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(no_answer(timeout)))
}

/// POST a JSON `body` with `headers`; Ok when the answer is 2xx.
pub async fn post(
    client: &HttpClient,
    url: &str,
    body: Bytes,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    let mut req = http::Request::post(url).header(http::header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let call = async {
        let resp = client.request(req).await.map_err(describe)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(no_answer(timeout)))
}
