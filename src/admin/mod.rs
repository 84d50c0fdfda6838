//! The admin server, on its own listener: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive), `/readyz` (the model server is
//! reachable), `/v1/status` (JSON), `POST /v1/feedback` (ground-truth
//! labels), `/v1/quality` (the quality figures). Model traffic never reaches it.

pub mod history;
pub mod readiness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
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
    /// Configuration problems that decoding found (feature names that do not fit).
    pub decode_problems: Arc<crate::analysis::DecodeProblems>,
    pub quality: Option<crate::quality::QualityHandle>,
    /// `POST /v1/cloudevents`, when `cloudevents.enabled`.
    pub cloudevents: Option<Arc<crate::cloudevents::Receiver>>,
    pub drift: Option<std::sync::Arc<std::sync::RwLock<crate::drift::DriftSnapshot>>>,
    pub anomaly: Option<std::sync::Arc<std::sync::RwLock<crate::anomaly::AnomalySnapshot>>>,
    /// The alert evaluator's snapshot (no rules: alerts are off).
    pub alerts: Arc<std::sync::RwLock<crate::alerts::Snapshot>>,
    /// The config in force and live reloads.
    pub reloader: Arc<crate::reload::Reloader>,
    pub resources: Option<Arc<std::sync::RwLock<crate::resources::ResourceSnapshot>>>,
    pub engine: Option<Arc<std::sync::RwLock<crate::resources::engine::EngineReading>>>,
    pub environment: Arc<std::sync::RwLock<crate::resources::environment::Versions>>,
    pub started: Instant,
    pub proxy_addr: std::net::SocketAddr,
    pub history: Arc<history::History>,
    /// The TensorBoard writer, when `tensorboard.enabled`.
    pub tensorboard: Option<Arc<std::sync::Mutex<crate::tensorboard::Writer>>>,
    /// What `/v1/diagnose` reads.
    pub diagnosis: crate::diagnosis::Sources,
}

pub type AdminResponse = Response<Full<Bytes>>;

pub(crate) fn respond(
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

pub(crate) fn json_response(status: StatusCode, value: serde_json::Value) -> AdminResponse {
    respond(
        status,
        "application/json",
        serde_json::to_vec_pretty(&value).expect("json"),
    )
}

impl AdminState {
    /// The alerts' snapshot, when any rule is configured.
    fn alerts(&self) -> Option<std::sync::RwLockReadGuard<'_, crate::alerts::Snapshot>> {
        let a = self.alerts.read().expect("poisoned");
        (!a.rules.is_empty()).then_some(a)
    }

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
            "/" | "/index.html" => {
                let mut r = respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    Bytes::from_static(STATUS_PAGE.as_bytes()),
                );
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    header::HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                    ),
                );
                r
            }
            "/v1/status" => json_response(StatusCode::OK, self.status()),
            "/v1/status/history" => json_response(
                StatusCode::OK,
                json!({
                    "interval_seconds": self.history.interval.as_secs_f64(),
                    "points": self.history.points(),
                }),
            ),
            "/v1/quality" => match &self.quality {
                Some(q) => json_response(StatusCode::OK, q.status()),
                None => quality_disabled(),
            },
            "/v1/alerts" => match self.alerts() {
                Some(a) => json_response(
                    StatusCode::OK,
                    serde_json::to_value(&*a).unwrap_or_default(),
                ),
                None => error_response(
                    StatusCode::NOT_FOUND,
                    "disabled",
                    "no alert rules are configured: add them under alerts.rules",
                ),
            },
            "/v1/gate" => match self.gate(req.uri().query().unwrap_or(""), None) {
                Ok(answer) => json_response(
                    StatusCode::OK,
                    serde_json::to_value(&answer).unwrap_or_default(),
                ),
                Err(r) => *r,
            },
            "/v1/diagnose" => match self.diagnose(req.uri().query().unwrap_or("")) {
                Ok(v) => json_response(StatusCode::OK, v),
                Err(r) => *r,
            },
            "/v1/feedback" => error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "send labels with POST /v1/feedback",
            ),
            "/v1/records" if self.recent.enabled() => {
                if let Some(refused) = self.authorize(req, "records", None) {
                    return refused;
                }
                json_response(
                    StatusCode::OK,
                    serde_json::to_value(self.recent.snapshot()).unwrap_or_default(),
                )
            }
            "/v1/records" => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"type": "disabled", "message": "set admin.recent_records above 0 to keep recent inference records"}}),
            ),
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"type": "not_found", "message": "admin endpoints: / (status page) /metrics /healthz /readyz /v1/status /v1/status/history /v1/quality /v1/alerts /v1/gate /v1/diagnose, POST /v1/feedback /v1/cloudevents /v1/gate /v1/quality/reference/reset /-/reload"}}),
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
                "sampling_rate": self.reloader.current().sampling.rate,
                "max_body_bytes": c.sampling.max_body_bytes,
                "queue_capacity": c.sampling.queue_capacity,
                "otlp_endpoint": if otlp.endpoint.is_empty() { None } else { Some(&otlp.endpoint) },
                "otlp_protocol": otlp.protocol,
                "service_name": c.telemetry.service_name,
                "reload": self.reloader.status(),
            },
            "upstream": self.readiness.snapshot(),
            "proxy": self.counters.snapshot(),
            "traffic": self.history.latest(),
            "models": history::model_traffic(&crate::alerts::figures::Figures::gather(self.telemetry.registry())),
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
            "decode": {
                "feature_names_mismatch": self.decode_problems.feature_names(),
            },
            "quality": self.quality.as_ref().map(|q| q.status()),
            "anomaly": self.anomaly.as_ref().map(|a| serde_json::to_value(&*a.read().expect("poisoned")).unwrap_or_default()),
            "alerts": self.alerts().map(|a| {
                json!({"evaluations": a.evaluations, "last_evaluation_ms": a.last_evaluation_ms, "rules": a.rules, "active": a.alerts, "notifications_dropped": a.notifications_dropped})
            }),
            "resources": self.resources.as_ref().map(|r| serde_json::to_value(&*r.read().expect("poisoned")).unwrap_or_default()),
            "environment": &*self.environment.read().expect("poisoned"),
            "engine": self.engine.as_ref().map(|e| serde_json::to_value(&*e.read().expect("poisoned")).unwrap_or_default()),
            "drift": self.drift.as_ref().map(|d| serde_json::to_value(&*d.read().expect("poisoned")).unwrap_or_default()),
            "tensorboard": self.tensorboard.as_ref().map(|w| {
                let w = w.lock().expect("poisoned");
                json!({
                    "dir": c.tensorboard.dir,
                    "interval_seconds": c.tensorboard.interval.as_secs_f64(),
                    "errors": w.errors,
                    "runs": w.runs.values().collect::<Vec<_>>(),
                })
            }),
            "export": {
                "metrics": self.telemetry.metrics_export.as_ref().map(|s| s.snapshot()),
                "traces": self.telemetry.traces_export.as_ref().map(|s| s.snapshot()),
                "logs": self.telemetry.logs_export.as_ref().map(|s| s.snapshot()),
            },
        })
    }
}

pub(crate) fn error_response(status: StatusCode, kind: &str, message: &str) -> AdminResponse {
    json_response(status, json!({"error": {"type": kind, "message": message}}))
}

fn quality_disabled() -> AdminResponse {
    error_response(
        StatusCode::NOT_FOUND,
        "disabled",
        "model quality is off: set quality.enabled to true",
    )
}

/// Reads a small request body (64 KiB at most); a 400 answer otherwise.
async fn small_body(req: Request<Incoming>) -> Result<Bytes, Box<AdminResponse>> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body could not be read (64 KiB at most)",
        ))),
    }
}

/// Reads a body of at most `limit` bytes: 413 with `too_large` above it, 400
/// when it cannot be read.
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    too_large: &str,
) -> Result<Bytes, Box<AdminResponse>> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Box::new(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            too_large,
        ))),
        Err(e) => Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            &format!("the body could not be read: {e}"),
        ))),
    }
}

/// Compares without stopping at the first difference.
/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AdminState {
    /// `POST /-/reload`: read the config file again and apply what can
    /// change live (as SIGHUP does). 200 with what was applied and what
    /// waits for a restart; 400 with the reason when the file is refused
    /// (the running config stays). Guarded by the admin token.
    pub async fn reload(&self, req: &Request<Incoming>) -> AdminResponse {
        if let Some(refused) = self.authorize(req, "reload", None) {
            return refused;
        }
        let outcome = self.reloader.reload("http").await;
        let status = if outcome.result == "refused" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        json_response(status, serde_json::to_value(&outcome).unwrap_or_default())
    }

    /// `POST /v1/quality/reference/reset` with `{"model": …, "model_version": …}`:
    /// the next labelled rows of that model version form a new calibration
    /// reference (after a change the team accepts as the new normal).
    pub async fn reset_reference(&self, req: Request<Incoming>) -> AdminResponse {
        let Some(q) = &self.quality else {
            return quality_disabled();
        };
        if let Some(r) = self.check_token(q, &req) {
            return r;
        }
        let body = match small_body(req).await {
            Ok(b) => b,
            Err(r) => return *r,
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let (Some(model), version) = (
            v["model"].as_str(),
            v["model_version"].as_str().unwrap_or(""),
        ) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "send {\"model\": \"name\", \"model_version\": \"version\"} (model_version may be omitted when the model reports none)",
            );
        };
        match q
            .reset_reference(model.to_string(), version.to_string())
            .await
        {
            Ok(true) => json_response(
                StatusCode::OK,
                json!({"reset": true, "model": model, "model_version": version}),
            ),
            Ok(false) => error_response(
                StatusCode::NOT_FOUND,
                "unknown_model",
                "no predictions of this model version were stored",
            ),
            Err(e @ crate::quality::SubmitError::Elsewhere(_)) => {
                error_response(StatusCode::CONFLICT, "not_here", &e.to_string())
            }
            Err(e) => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &e.to_string(),
            ),
        }
    }

    /// The bearer-token check of the quality endpoints (the admin token or
    /// `quality.feedback_token`): a 401 answer when it fails.
    fn check_token(
        &self,
        q: &crate::quality::QualityHandle,
        req: &Request<Incoming>,
    ) -> Option<AdminResponse> {
        let endpoint = if req.uri().path() == "/v1/feedback" {
            "feedback"
        } else {
            "reference_reset"
        };
        self.authorize(req, endpoint, q.token.as_deref())
    }

    /// Admits a request to a guarded endpoint: with neither the admin token
    /// (`admin.token_file`, read now) nor `also` configured, everyone; else
    /// a bearer token equal to one of them. Refusals are counted per endpoint.
    fn authorize(
        &self,
        req: &Request<Incoming>,
        endpoint: &'static str,
        also: Option<&str>,
    ) -> Option<AdminResponse> {
        let admin = (!self.config.admin.token_file.is_empty()).then(|| {
            std::fs::read_to_string(&self.config.admin.token_file)
                .map(|t| t.trim().to_string())
                .unwrap_or_default()
        });
        if admin.is_none() && also.is_none() {
            return None;
        }
        let given = bearer(req);
        let matches = |t: &str| {
            !t.is_empty() && given.is_some_and(|g| same_secret(g.as_bytes(), t.as_bytes()))
        };
        if admin.as_deref().is_some_and(matches) || also.is_some_and(matches) {
            return None;
        }
        self.telemetry.instruments.admin_auth_failures.add(
            1,
            &[opentelemetry::KeyValue::new(
                crate::telemetry::names::attr::ENDPOINT,
                endpoint,
            )],
        );
        let mut r = error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs `Authorization: Bearer <token>` (admin.token_file, or quality.feedback_token for feedback)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Some(r)
    }

    /// `POST /v1/cloudevents`: one inference event from a payload logger
    /// (KServe's), paired with its other half into a sample. 200 with the
    /// outcome; 400 with the reason for a body that is not an inference
    /// event; 413 above 64 MiB.
    pub async fn cloudevents(&self, req: Request<Incoming>) -> AdminResponse {
        let Some(receiver) = &self.cloudevents else {
            return error_response(
                StatusCode::NOT_FOUND,
                "disabled",
                "inference events are off: set cloudevents.enabled to true",
            );
        };
        if let Some(r) = self.authorize(&req, "cloudevents", None) {
            return r;
        }
        if !receiver.open() {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "modelwatch is shutting down",
            );
        }
        let headers = req.headers().clone();
        let body = match read_body(req, 64 << 20, "an event is at most 64 MiB").await {
            Ok(b) => b,
            Err(r) => {
                receiver.invalid();
                return *r;
            }
        };
        match crate::cloudevents::parse(&headers, body) {
            Ok(event) => {
                let outcome = receiver.accept(event);
                json_response(StatusCode::OK, json!({"outcome": outcome.as_str()}))
            }
            Err(e) => {
                receiver.invalid();
                error_response(StatusCode::BAD_REQUEST, e.kind(), &e.to_string())
            }
        }
    }

    /// `POST /v1/feedback`: labels for earlier predictions.
    pub async fn feedback(&self, req: Request<Incoming>) -> AdminResponse {
        let Some(q) = &self.quality else {
            return quality_disabled();
        };
        if req.method() != Method::POST {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "send labels with POST /v1/feedback",
            );
        }
        if let Some(r) = self.check_token(q, &req) {
            return r;
        }
        feedback(q, req).await
    }
}

/// `POST /v1/feedback` once the caller is allowed (the sidecar and the joiner
/// answer it alike): the body read and parsed, the labels joined (embedded)
/// or produced to Kafka.
pub async fn feedback(q: &crate::quality::QualityHandle, req: Request<Incoming>) -> AdminResponse {
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonl") || ct.contains("json-seq"));
    let body = match read_body(
        req,
        q.max_feedback_bytes,
        &format!(
            "the body is larger than quality.max_feedback_bytes ({} bytes): split it",
            q.max_feedback_bytes
        ),
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let parsed = match crate::quality::feedback::parse(&body, ndjson) {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_body", &e.to_string()),
    };
    let single = parsed.single;
    match q.submit(parsed).await {
        Ok(report) => {
            use crate::quality::feedback::Reason;
            let status = if report.accepted > 0 {
                // Kafka took them; the joiner joins them.
                StatusCode::ACCEPTED
            } else if single {
                match report.errors.first().map(|e| e.reason) {
                    None if report.waiting > 0 => StatusCode::ACCEPTED,
                    None => StatusCode::OK,
                    Some(Reason::Unmatched) => StatusCode::NOT_FOUND,
                    Some(Reason::Duplicate) => StatusCode::CONFLICT,
                    Some(_) => StatusCode::BAD_REQUEST,
                }
            } else if report.received > 0 && report.invalid == report.received {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            json_response(status, serde_json::to_value(&report).unwrap_or_default())
        }
        Err(e) => {
            let mut r = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &e.to_string(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
    }
}

impl AdminState {
    /// The canary gate: versions from the query (or a Flagger webhook body's
    /// `metadata`), else from `rollout.gate`.
    /// `GET /v1/diagnose?model=&version=&window=`: the diagnosis of each
    /// model version (or the one named).
    fn diagnose(&self, query: &str) -> Result<serde_json::Value, Box<AdminResponse>> {
        let mut q = crate::diagnosis::Query::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "model" => &mut q.model,
                "version" => &mut q.version,
                "window" => &mut q.window,
                other => {
                    return Err(Box::new(error_response(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        &format!("unknown parameter `{other}`: the diagnosis takes model, version and window"),
                    )))
                }
            };
            *slot = Some(v.into_owned());
        }
        let config = self.reloader.current();
        let diagnoses = self
            .diagnosis
            .diagnose(&q, &config, true)
            .map_err(|e| Box::new(error_response(StatusCode::BAD_REQUEST, "invalid_query", &e)))?;
        Ok(json!({ "diagnoses": diagnoses }))
    }

    fn gate(
        &self,
        query: &str,
        metadata: Option<&serde_json::Value>,
    ) -> Result<crate::rollout::GateAnswer, Box<AdminResponse>> {
        let config = self.reloader.current();
        let cfg = &config.rollout.gate;
        let mut req = crate::rollout::GateRequest {
            baseline: cfg.baseline.clone(),
            candidate: cfg.candidate.clone(),
            model: cfg.model.clone(),
            window: cfg.window.clone(),
        };
        if let Some(m) = metadata {
            for (key, slot) in [
                ("baseline", &mut req.baseline),
                ("candidate", &mut req.candidate),
                ("model", &mut req.model),
                ("window", &mut req.window),
            ] {
                if let Some(v) = m[key].as_str() {
                    *slot = v.to_string();
                }
            }
        }
        let mut checks: Option<Vec<String>> = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "baseline" => req.baseline = v.into_owned(),
                "candidate" => req.candidate = v.into_owned(),
                "model" => req.model = v.into_owned(),
                "window" => req.window = v.into_owned(),
                "checks" => {
                    let list: Vec<String> = v.split(',').map(|c| c.trim().to_string()).collect();
                    if let Some(bad) = list
                        .iter()
                        .find(|c| !crate::config::alerts::GATE_CHECKS.contains(&c.as_str()))
                    {
                        return Err(Box::new(error_response(
                            StatusCode::BAD_REQUEST,
                            "invalid_query",
                            &format!("unknown check `{bad}`: checks is a comma-separated list of accuracy, error_rate, latency"),
                        )));
                    }
                    checks = Some(list);
                }
                other => {
                    return Err(Box::new(error_response(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        &format!("unknown parameter `{other}`: the gate takes baseline, candidate, model, window and checks"),
                    )))
                }
            }
        }
        if req.baseline.is_empty() || req.candidate.is_empty() {
            return Err(Box::new(error_response(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "name both versions: /v1/gate?baseline=v1&candidate=v2 (or set rollout.gate.baseline and .candidate)",
            )));
        }
        if req.baseline == req.candidate {
            return Err(Box::new(error_response(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "baseline and candidate are the same version",
            )));
        }
        if req.window.is_empty() {
            req.window = self
                .config
                .quality
                .windows
                .first()
                .map(|w| crate::config::window_name(*w))
                .unwrap_or_else(|| "total".into());
        }
        let figures = crate::alerts::figures::Figures::gather(self.telemetry.registry());
        let cfg = match checks {
            Some(list) => &crate::config::alerts::GateConfig {
                checks: list,
                ..cfg.clone()
            },
            None => cfg,
        };
        Ok(crate::rollout::evaluate(&figures, &req, cfg))
    }

    /// `POST /v1/gate`, for Flagger webhooks: 200 on pass, 412 on fail, 425
    /// (too early) while inconclusive, with the same JSON as `GET`.
    pub async fn gate_webhook(&self, req: Request<Incoming>) -> AdminResponse {
        if let Some(refused) = self.authorize(&req, "gate", None) {
            return refused;
        }
        let query = req.uri().query().unwrap_or("").to_string();
        let body = match small_body(req).await {
            Ok(b) => b,
            Err(r) => return *r,
        };
        let v: Option<serde_json::Value> = if body.is_empty() {
            None
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => Some(v),
                Err(e) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        &format!("the body is not JSON ({e}); Flagger sends {{\"name\": ..., \"metadata\": {{\"baseline\": ..., \"candidate\": ...}}}}"),
                    )
                }
            }
        };
        match self.gate(&query, v.as_ref().map(|v| &v["metadata"])) {
            Ok(answer) => {
                use crate::rollout::Verdict;
                let status = match answer.verdict {
                    Verdict::Pass => StatusCode::OK,
                    Verdict::Fail => StatusCode::PRECONDITION_FAILED,
                    Verdict::Inconclusive => StatusCode::TOO_EARLY,
                };
                json_response(status, serde_json::to_value(&answer).unwrap_or_default())
            }
            Err(r) => *r,
        }
    }
}

/// The status page: one self-contained file (no CDN, works offline).
const STATUS_PAGE: &str = include_str!("status.html");

/// Takes a history point every `admin.history_interval` until `shutdown`.
async fn keep_history(state: Arc<AdminState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.history.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let figures = crate::alerts::figures::Figures::gather(state.telemetry.registry());
        let status = state.status();
        state.history.record(&figures, &status);
    }
}

/// Writes the status figures as TensorBoard scalars every `tensorboard.interval`.
async fn write_tensorboard(state: Arc<AdminState>, shutdown: CancellationToken) {
    let Some(writer) = state.tensorboard.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(state.config.tensorboard.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let status = state.status();
        let w = writer.clone();
        let _ =
            tokio::task::spawn_blocking(move || w.lock().expect("poisoned").write(&status)).await;
    }
}

/// Serves the admin endpoints until `shutdown` fires; over TLS when
/// `admin.tls` names a certificate (re-read every 10 s when it changes).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    tokio::spawn(keep_history(state.clone(), shutdown.clone()));
    tokio::spawn(write_tensorboard(state.clone(), shutdown.clone()));
    let t = &state.config.admin.tls;
    let tls = if t.cert_file.is_empty() {
        None
    } else {
        // Checked at start (validate); a failure here leaves the port closed, said loudly.
        match crate::inject::tls::ReloadingCert::new(
            t.cert_file.clone().into(),
            t.key_file.clone().into(),
        )
        .and_then(|cert| Ok((cert.server_config()?, cert)))
        {
            Ok((config, cert)) => {
                tokio::spawn(cert.watch(Duration::from_secs(10), shutdown.clone(), |_| {}));
                Some(tokio_rustls::TlsAcceptor::from(config))
            }
            Err(e) => {
                tracing::error!(error = %e, "admin.tls: the certificate cannot be used; the admin port is not served");
                return;
            }
        }
    };
    crate::serve::serve(
        "admin",
        listener,
        tls,
        shutdown,
        Duration::from_secs(2),
        move |req: Request<Incoming>| {
            let st = state.clone();
            async move {
                let post = req.method() == Method::POST;
                match req.uri().path() {
                    "/v1/feedback" if post => st.feedback(req).await,
                    "/v1/cloudevents" if post => st.cloudevents(req).await,
                    "/v1/gate" if post => st.gate_webhook(req).await,
                    "/v1/quality/reference/reset" if post => st.reset_reference(req).await,
                    "/-/reload" if post => st.reload(&req).await,
                    _ => st.route(&req),
                }
            }
        },
    )
    .await;
}
