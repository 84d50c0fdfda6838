//! `modelwatch inject-webhook`: the mutating admission webhook over TLS, and a
//! plain-HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//!
//! `POST /mutate` answers an `admission.k8s.io/v1` AdmissionReview. The
//! webhook configuration sends pods of namespaces labelled
//! `modelwatch.io/injection=enabled` to `/mutate/namespace` and pods of other
//! namespaces to `/mutate` (those are injected only when annotated).
//! A pod is never rejected: one that cannot be injected is admitted unchanged,
//! with a warning and a counted reason. A body that is not an AdmissionReview
//! gets a 4xx with a JSON reason (the API server then applies the webhook's
//! failurePolicy).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use k8s_openapi::api::core::v1::Pod;
use kube_core::admission::{AdmissionReview, Operation};
use kube_core::DynamicObject;
use prometheus::{IntCounterVec, Opts, Registry};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::tls::ReloadingCert;
use super::{decide, InjectorConfig, Skip};

/// The largest AdmissionReview read (the API server's own request limit is 3 MiB;
/// a review carries the object, and for updates the old object too).
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Beyond MAX_BODY, how much is read and dropped before the connection closes.
const DRAIN_MAX: usize = 64 * 1024 * 1024;

/// Flags of `inject-webhook`.
#[derive(Debug, clap::Args, Clone)]
pub struct WebhookArgs {
    /// The injector's settings (YAML); built-in defaults when absent.
    #[arg(long, short, env = "MODELWATCH_INJECTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the webhook listens (TLS).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: String,
    /// Plain HTTP: /metrics, /healthz, /readyz.
    #[arg(long, default_value = "0.0.0.0:9464")]
    pub metrics_listen: String,
    /// PEM certificate chain (read again when it changes).
    #[arg(long, default_value = "/etc/modelwatch/tls/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key (read again when it changes).
    #[arg(long, default_value = "/etc/modelwatch/tls/tls.key")]
    pub tls_key: PathBuf,
    /// Validate the config, print the effective settings (YAML) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
}

/// The injector's counters.
pub struct Metrics {
    pub registry: Registry,
    /// `modelwatch_injector_pods_total{outcome, reason}`.
    pub pods: IntCounterVec,
    /// `modelwatch_injector_reviews_total{code}`: every POST answered.
    pub reviews: IntCounterVec,
    /// `modelwatch_injector_tls_reloads_total{result}`.
    pub tls_reloads: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let pods = IntCounterVec::new(
            Opts::new(
                "modelwatch_injector_pods_total",
                "Pods the injector saw, by outcome (injected or skipped) and reason.",
            ),
            &["outcome", "reason"],
        )
        .expect("metric");
        let reviews = IntCounterVec::new(
            Opts::new(
                "modelwatch_injector_reviews_total",
                "Requests to the webhook, by HTTP status code.",
            ),
            &["code"],
        )
        .expect("metric");
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "modelwatch_injector_tls_reloads_total",
                "Certificate file changes: reloaded, or failed (the old certificate stays).",
            ),
            &["result"],
        )
        .expect("metric");
        for c in [&pods, &reviews, &tls_reloads] {
            registry.register(Box::new(c.clone())).expect("register");
        }
        pods.with_label_values(&["injected", ""]);
        for s in Skip::ALL {
            pods.with_label_values(&["skipped", s.as_str()]);
        }
        for r in ["reloaded", "failed"] {
            tls_reloads.with_label_values(&[r]);
        }
        Metrics {
            registry,
            pods,
            reviews,
            tls_reloads,
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("encode");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One answered review: the HTTP status, the JSON body, and what happened to
/// the pod (for the counter) when the body was an AdmissionReview.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub outcome: Option<Result<(), Skip>>,
}

fn refuse(status: StatusCode, kind: &str, message: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({"error": {"type": kind, "message": message.into()}}),
        outcome: None,
    }
}

/// Answers one AdmissionReview body: a pure function of the bytes, the
/// namespace's opt-in and the config.
pub fn review(body: &[u8], namespace_enabled: bool, config: &InjectorConfig) -> Answer {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("the body is not JSON: {e}"),
            )
        }
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "AdmissionReview" || api_version != "admission.k8s.io/v1" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "wrong_kind",
            format!("expected kind AdmissionReview, apiVersion admission.k8s.io/v1; got kind {kind:?}, apiVersion {api_version:?}"),
        );
    }
    let parsed: AdmissionReview<DynamicObject> = match serde_path_to_error::deserialize(value) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!(
                    "not a valid AdmissionReview at `{}`: {}",
                    e.path(),
                    e.inner()
                ),
            )
        }
    };
    let Some(request) = parsed.request else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the AdmissionReview has no request",
        );
    };
    let uid = request.uid.clone();
    let respond = |patch: Option<json_patch::Patch>, warnings: Vec<String>| {
        let mut response = json!({"uid": uid, "allowed": true});
        if let Some(p) = patch.filter(|p| !p.0.is_empty()) {
            let bytes = serde_json::to_vec(&p).expect("patch serializes");
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        if !warnings.is_empty() {
            response["warnings"] = json!(warnings);
        }
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        })
    };
    let is_pod = request.kind.group.is_empty()
        && request.kind.version == "v1"
        && request.kind.kind == "Pod"
        && request.sub_resource.as_deref().unwrap_or("").is_empty();
    if !is_pod || !matches!(request.operation, Operation::Create) {
        return Answer {
            status: StatusCode::OK,
            body: respond(None, Vec::new()),
            outcome: Some(Err(Skip::NotAPodCreate)),
        };
    }
    let pod: Pod = match request
        .object
        .as_ref()
        .map(|o| serde_json::to_value(o).and_then(serde_json::from_value::<Pod>))
    {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => {
            return Answer {
                status: StatusCode::OK,
                body: respond(
                    None,
                    vec![format!(
                        "modelwatch: sidecar not injected: the pod could not be read: {e}"
                    )],
                ),
                outcome: Some(Err(Skip::NotAPodCreate)),
            }
        }
        None => {
            return Answer {
                status: StatusCode::OK,
                body: respond(None, Vec::new()),
                outcome: Some(Err(Skip::NotAPodCreate)),
            }
        }
    };
    let decision = decide(&pod, namespace_enabled, config);
    match decision.outcome {
        Ok(patch) => Answer {
            status: StatusCode::OK,
            body: respond(Some(patch), decision.warnings),
            outcome: Some(Ok(())),
        },
        Err(reason) => Answer {
            status: StatusCode::OK,
            body: respond(None, decision.warnings),
            outcome: Some(Err(reason)),
        },
    }
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(body).expect("json"),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

struct State {
    config: InjectorConfig,
    metrics: Metrics,
}

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Resp {
        let answer = self.answer(req).await;
        self.metrics
            .reviews
            .with_label_values(&[answer.status.as_str()])
            .inc();
        match answer.outcome {
            Some(Ok(())) => self.metrics.pods.with_label_values(&["injected", ""]).inc(),
            Some(Err(s)) => self
                .metrics
                .pods
                .with_label_values(&["skipped", s.as_str()])
                .inc(),
            None => {}
        }
        if let Some(Err(s)) = answer.outcome {
            if s.warns() {
                tracing::warn!(reason = s.as_str(), body = %answer.body, "pod admitted without the sidecar");
            }
        }
        json_response(answer.status, &answer.body)
    }

    /// `/metrics`, `/healthz` and `/readyz` of the plain-HTTP listener.
    fn metrics_endpoint(&self, req: &Request<Incoming>) -> Resp {
        match req.uri().path() {
            "/metrics" => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            "/healthz" | "/readyz" => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": {"type": "not_found", "message": "GET /metrics, /healthz or /readyz"}}),
            ),
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Answer {
        let namespace_enabled = match req.uri().path() {
            "/mutate" => false,
            "/mutate/namespace" => true,
            _ => {
                return refuse(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "the webhook answers POST /mutate and POST /mutate/namespace",
                )
            }
        };
        if req.method() != Method::POST {
            return refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the webhook answers POST /mutate and POST /mutate/namespace",
            );
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > DRAIN_MAX) {
            return too_large();
        }
        let body =
            match tokio::time::timeout(Duration::from_secs(10), read_body(req.into_body())).await {
                Ok(Ok(Some(b))) => b,
                Ok(Ok(None)) => return too_large(),
                Ok(Err(e)) => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "unreadable",
                        format!("the body could not be read: {e}"),
                    )
                }
                Err(_) => {
                    return refuse(
                        StatusCode::REQUEST_TIMEOUT,
                        "timeout",
                        "the body did not arrive within 10 s",
                    )
                }
            };
        review(&body, namespace_enabled, &self.config)
    }
}

/// Reads up to MAX_BODY; a longer body is read on (and dropped) up to
/// DRAIN_MAX so that the client, which sends before it reads, gets the 413.
/// `None`: too large.
async fn read_body(mut body: Incoming) -> Result<Option<Bytes>, hyper::Error> {
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            total += data.len();
            if total <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if total > DRAIN_MAX {
                return Ok(None);
            }
        }
    }
    Ok((total <= MAX_BODY).then(|| buf.freeze()))
}

fn too_large() -> Answer {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("an AdmissionReview is at most {MAX_BODY} bytes"),
    )
}

/// Runs the webhook until SIGTERM or Ctrl-C.
pub async fn run(args: WebhookArgs) -> Result<(), String> {
    let config = match &args.config {
        Some(p) => InjectorConfig::from_file(p).map_err(|e| e.to_string())?,
        None => InjectorConfig::default(),
    };
    if args.check_config {
        print!(
            "{}",
            serde_yaml_ng::to_string(&config).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let cert = ReloadingCert::new(args.tls_cert.clone(), args.tls_key.clone())?;
    let tls = tokio_rustls::TlsAcceptor::from(cert.server_config()?);
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let metrics_listener = TcpListener::bind(&args.metrics_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_listen))?;
    let state = Arc::new(State {
        config,
        metrics: Metrics::new(),
    });
    let cancel = CancellationToken::new();
    {
        let st = state.clone();
        tokio::spawn(
            cert.clone()
                .watch(args.reload_interval, cancel.clone(), move |r| {
                    let label = match r {
                        Ok(true) => "reloaded",
                        Ok(false) => return,
                        Err(_) => "failed",
                    };
                    st.metrics.tls_reloads.with_label_values(&[label]).inc();
                }),
        );
    }
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        metrics = %metrics_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        image = %state.config.image,
        native_sidecar = state.config.native_sidecar,
        "injection webhook ready"
    );
    let st = state.clone();
    let metrics_task = tokio::spawn(crate::serve::serve(
        "injector metrics",
        metrics_listener,
        None,
        cancel.clone(),
        Duration::from_secs(1),
        move |req: Request<Incoming>| {
            let st = st.clone();
            async move { st.metrics_endpoint(&req) }
        },
    ));
    let webhook_task = tokio::spawn(crate::serve::serve(
        "webhook",
        listener,
        Some(tls),
        cancel.clone(),
        Duration::from_secs(5),
        move |req: Request<Incoming>| {
            let st = state.clone();
            async move { st.handle(req).await }
        },
    ));
    crate::app::shutdown_signal().await;
    tracing::info!("stopping the injection webhook");
    cancel.cancel();
    let _ = webhook_task.await;
    let _ = metrics_task.await;
    Ok(())
}
