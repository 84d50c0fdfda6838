//! Upstream readiness: a background probe (TCP connect, or an HTTP GET of a
//! configured path) whose last result `/readyz` reports.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::telemetry::Gauges;

/// The last probe result.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessSnapshot {
    pub up: bool,
    pub target: String,
    pub probe: &'static str,
    pub last_error: Option<String>,
    /// Seconds since the Unix epoch of the last probe.
    pub checked_at: Option<f64>,
}

/// Shared readiness state.
#[derive(Debug)]
pub struct Readiness {
    state: Mutex<ReadinessSnapshot>,
    gauges: Arc<Gauges>,
}

impl Readiness {
    pub fn new(config: &Config, gauges: Arc<Gauges>) -> Readiness {
        let path = &config.admin.readiness.http_path;
        Readiness {
            state: Mutex::new(ReadinessSnapshot {
                up: false,
                target: format!("{}{}", config.proxy.upstream.trim_end_matches('/'), path),
                probe: if path.is_empty() { "tcp" } else { "http" },
                last_error: Some("not probed yet".into()),
                checked_at: None,
            }),
            gauges,
        }
    }

    pub fn snapshot(&self) -> ReadinessSnapshot {
        self.state.lock().expect("poisoned").clone()
    }

    fn set(&self, result: Result<(), String>) {
        let up = result.is_ok();
        let mut s = self.state.lock().expect("poisoned");
        if s.up != up {
            match &result {
                Ok(()) => tracing::info!(upstream = %s.target, "model server is reachable"),
                Err(e) => {
                    tracing::warn!(upstream = %s.target, error = %e, "model server is not reachable")
                }
            }
        }
        s.up = up;
        s.last_error = result.err();
        s.checked_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        self.gauges.upstream_up.store(up, Ordering::Relaxed);
    }
}

/// Probes the upstream every `interval` until `shutdown` fires.
pub async fn run(readiness: Arc<Readiness>, config: Config, shutdown: CancellationToken) {
    let r = &config.admin.readiness;
    let host_port = config.upstream().expect("validated").host_port();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url: Option<http::Uri> = (!r.http_path.is_empty())
        .then(|| format!("http://{host_port}{}", r.http_path).parse().ok())
        .flatten();
    let mut ticker = tokio::time::interval(r.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {},
            _ = shutdown.cancelled() => return,
        }
        let result = match &url {
            None => probe_tcp(&host_port, r.timeout).await,
            Some(url) => probe_http(&client, url.clone(), r.timeout).await,
        };
        readiness.set(result);
    }
}

async fn probe_tcp(host_port: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(host_port)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("TCP connect to {host_port}: {e}")),
        Err(_) => Err(format!("TCP connect to {host_port}: timed out")),
    }
}

async fn probe_http(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: http::Uri,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, client.get(url.clone())).await {
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) => Err(format!("GET {url}: HTTP {}", r.status().as_u16())),
        Ok(Err(e)) => Err(format!("GET {url}: {e}")),
        Err(_) => Err(format!("GET {url}: timed out")),
    }
}
