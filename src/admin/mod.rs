//! The admin server, on its own listener: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive), `/readyz` (the model server is
//! reachable), `/v1/status` (JSON). Model traffic never reaches it.

pub mod readiness;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::proxy::ProxyCounters;
use crate::telemetry::Telemetry;
use readiness::Readiness;

/// What the admin endpoints read.
pub struct AdminState {
    pub config: Config,
    pub telemetry: Arc<Telemetry>,
    pub readiness: Arc<Readiness>,
    pub counters: Arc<ProxyCounters>,
    pub recent: Arc<crate::analysis::RecentRecords>,
    pub started: Instant,
    pub proxy_addr: std::net::SocketAddr,
}

type AdminResponse = Response<Full<Bytes>>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn json_response(status: StatusCode, value: serde_json::Value) -> AdminResponse {
    respond(
        status,
        "application/json",
        serde_json::to_vec_pretty(&value).expect("json"),
    )
}

impl AdminState {
    /// Routes one admin request.
    pub fn route(&self, req: &Request<Incoming>) -> AdminResponse {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": {"type": "method_not_allowed", "message": "the admin endpoints accept GET"}}),
            );
        }
        match req.uri().path() {
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.telemetry.render_prometheus(),
            ),
            "/healthz" => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            "/readyz" => {
                let snap = self.readiness.snapshot();
                let status = if snap.up {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_response(status, json!({ "ready": snap.up, "upstream": snap }))
            }
            "/v1/status" => json_response(StatusCode::OK, self.status()),
            "/v1/records" if self.recent.enabled() => json_response(
                StatusCode::OK,
                serde_json::to_value(self.recent.snapshot()).unwrap_or_default(),
            ),
            "/v1/records" => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"type": "disabled", "message": "set admin.recent_records above 0 to keep recent inference records"}}),
            ),
            "/" => respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "modelwatch admin: /metrics /healthz /readyz /v1/status\n",
            ),
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"type": "not_found", "message": "admin endpoints: /metrics /healthz /readyz /v1/status"}}),
            ),
        }
    }

    fn status(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let g = &self.telemetry.gauges;
        let c = &self.config;
        let otlp = &c.telemetry.otlp;
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "config": {
                "proxy_listen": self.proxy_addr.to_string(),
                "upstream": c.proxy.upstream,
                "admin_listen": c.admin.listen,
                "sampling_rate": c.sampling.rate,
                "max_body_bytes": c.sampling.max_body_bytes,
                "queue_capacity": c.sampling.queue_capacity,
                "otlp_endpoint": if otlp.endpoint.is_empty() { None } else { Some(&otlp.endpoint) },
                "otlp_protocol": otlp.protocol,
                "service_name": c.telemetry.service_name,
            },
            "upstream": self.readiness.snapshot(),
            "proxy": self.counters.snapshot(),
            "samples": {
                "queue_depth": g.sample_queue_depth.load(Relaxed),
                "queue_capacity": g.sample_queue_capacity.load(Relaxed),
                "taken": g.samples_taken.load(Relaxed),
                "analyzed": g.samples_analyzed.load(Relaxed),
                "dropped": {
                    "queue_full": g.samples_dropped_queue_full.load(Relaxed),
                    "shutdown": g.samples_dropped_shutdown.load(Relaxed),
                },
            },
            "export": {
                "metrics": self.telemetry.metrics_export.as_ref().map(|s| s.snapshot()),
                "traces": self.telemetry.traces_export.as_ref().map(|s| s.snapshot()),
                "logs": self.telemetry.logs_export.as_ref().map(|s| s.snapshot()),
            },
        })
    }
}

/// Serves the admin endpoints until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let st = state.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let st = st.clone();
            async move { Ok::<_, Infallible>(st.route(&req)) }
        });
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}
