//! Upstream readiness: a background probe (TCP connect, or an HTTP GET of a
//! configured path) whose last result `/readyz` reports.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

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
    let upstream = config.upstream().expect("validated");
    let host_port = upstream.host_port();
    // The model server's own TLS settings when it speaks https.
    let client = crate::outbound::client_no_pool(&config.proxy.upstream_tls);
    let url: Option<String> = (!r.http_path.is_empty())
        .then(|| format!("{}://{host_port}{}", upstream.scheme, r.http_path));
    let mut ticker = tokio::time::interval(r.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {},
            _ = shutdown.cancelled() => return,
        }
        let result = match &url {
            None => probe_tcp(&host_port, r.timeout).await,
            Some(url) => crate::outbound::get(&client, url, 64 * 1024, r.timeout)
                .await
                .map(|_| ())
                .map_err(|e| format!("GET {url}: {e}")),
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
