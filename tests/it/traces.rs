//! Spans and OTLP/gRPC at the protocol level: no OTLP trace backend runs on
//! these machines, so a small receiver decodes the real OTLP protobuf
//! messages (opentelemetry-proto) that modelwatch sends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::common::*;

/// An OTLP/HTTP receiver that keeps every span and log record it is sent.
async fn trace_receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let (addr, spans, _) = receiver().await;
    (addr, spans)
}

type Logs = Arc<Mutex<Vec<LogRecord>>>;

async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Span>>>, Logs) {
    let logs: Logs = Arc::new(Mutex::new(Vec::new()));
    let l = logs.clone();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            let l = l.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let s = s.clone();
                        let l = l.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            if path == "/v1/logs" {
                                let msg = ExportLogsServiceRequest::decode(body.clone()).unwrap();
                                for rl in msg.resource_logs {
                                    for sl in rl.scope_logs {
                                        l.lock().unwrap().extend(sl.log_records);
                                    }
                                }
                            }
                            if path == "/v1/traces" {
                                let msg = ExportTraceServiceRequest::decode(body).unwrap();
                                for rs in msg.resource_spans {
                                    for ss in rs.scope_spans {
                                        s.lock().unwrap().extend(ss.spans);
                                    }
                                }
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, spans, logs)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_span_per_sampled_request_linked_to_traceparent() {
    let (receiver, spans) = trace_receiver().await;
    let up = TestUpstream::start().await;
    let config =
        format!("telemetry:\n  otlp:\n    endpoint: http://{receiver}\n    metrics_interval: 1h\n");
    let mw = Modelwatch::start(Options::new(up.url()).config(&config)).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let resp = http()
        .get(mw.url("/v2/models/iris/infer"))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .header("x-request-id", "req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // The model server was told our span is its parent, in the same trace.
    // (The metadata probes also reach the model server: find our request.)
    let seen = up
        .seen
        .headers
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|h| h.get("x-request-id").is_some_and(|v| v == "req-1"))
        .unwrap()
        .clone();
    let forwarded = seen["traceparent"].to_str().unwrap().to_string();
    assert!(
        forwarded.starts_with(&format!("00-{trace_id}-")),
        "{forwarded}"
    );
    assert!(!forwarded.contains(parent), "{forwarded}");

    let span = eventually("span exported", Duration::from_secs(15), || async {
        spans.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(span.name, "GET /v2/models/{model}/infer");
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(hex(&span.parent_span_id), parent);
    assert_eq!(
        forwarded,
        format!("00-{trace_id}-{}-01", hex(&span.span_id))
    );
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
            .map(|v| format!("{v:?}"))
    };
    assert!(attr("http.response.status_code").unwrap().contains("404"));
    assert!(attr("modelwatch.request.id").unwrap().contains("req-1"));
}

#[derive(Default, Clone)]
struct Collector {
    names: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn saw(&self, metric: &str) -> bool {
        self.names.lock().unwrap().iter().any(|n| n == metric)
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        for rm in request.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    self.names.lock().unwrap().push(m.name);
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_metrics_export() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(incoming),
    );
    let up = TestUpstream::start().await;
    let config = format!(
        "telemetry:\n  otlp:\n    endpoint: http://{addr}\n    protocol: grpc\n    metrics_interval: 1s\n    traces: false\n"
    );
    let mw = Modelwatch::start(Options::new(up.url()).config(&config)).await;
    let r = http().get(mw.url("/headers")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eventually(
        "metrics over OTLP/gRPC",
        Duration::from_secs(20),
        || async { collector.saw("http.server.request.duration").then_some(()) },
    )
    .await;
    server.abort();
}

/// OTLP/gRPC to an `https://` collector that requires a client certificate
/// (a tonic collector behind rustls, as a Collector with `tls.client_ca_file`
/// is): with the CA, the client certificate and the name the server's
/// certificate carries, metrics arrive; without the client certificate the
/// collector refuses the handshake and nothing arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_ca(d);
    server_certificate(d, "collector", "DNS:collector.internal");
    server_certificate(d, "client", "DNS:modelwatch");
    let collector = Collector::default();
    let addr = mtls_collector(d, collector.clone()).await;
    let up = TestUpstream::start().await;
    let config = |client: bool| {
        let mut c = format!(
            "telemetry:\n  otlp:\n    endpoint: https://{addr}\n    protocol: grpc\n    metrics_interval: 1s\n    traces: false\n    tls:\n      ca_file: {}\n      server_name: collector.internal\n",
            d.join("ca.crt").display()
        );
        if client {
            c += &format!(
                "      cert_file: {}\n      key_file: {}\n",
                d.join("client.crt").display(),
                d.join("client.key").display()
            );
        }
        c
    };
    // No client certificate: refused, counted, nothing arrives.
    let refused = Modelwatch::start(Options::new(up.url()).config(&config(false))).await;
    eventually(
        "failed exports counted",
        Duration::from_secs(20),
        || async {
            prom_value(
                &refused.metrics().await,
                "modelwatch_export_failures_total",
                &[("signal", "metrics")],
            )
            .filter(|n| *n >= 1.0)
        },
    )
    .await;
    assert!(collector.names.lock().unwrap().is_empty());
    drop(refused);

    let mw = Modelwatch::start(Options::new(up.url()).config(&config(true))).await;
    let r = http().get(mw.url("/headers")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eventually(
        "metrics over OTLP/gRPC with mTLS",
        Duration::from_secs(20),
        || async { collector.saw("http.server.request.duration").then_some(()) },
    )
    .await;
}

/// Serves `collector` over TLS (`collector.crt`), requiring a client
/// certificate of the test CA; HTTP/2 by ALPN.
async fn mtls_collector(dir: &std::path::Path, collector: Collector) -> std::net::SocketAddr {
    use rustls_pki_types::pem::PemObject;
    let pem = |f: &str| {
        rustls_pki_types::CertificateDer::pem_file_iter(dir.join(f))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in pem("ca.crt") {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pem("collector.crt"),
            rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("collector.key")).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = tonic::service::Routes::new(MetricsServiceServer::new(collector));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, routes) = (acceptor.clone(), routes.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let mut routes = routes.clone();
                        async move {
                            tower_service::Service::call(
                                &mut routes,
                                req.map(tonic::body::Body::new),
                            )
                            .await
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn any_text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    format!("{v:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_logs_are_redacted_and_linked_to_traces() {
    let (receiver, spans, logs) = receiver().await;
    let up = TestUpstream::start().await;
    let config = format!(
        "telemetry:\n  otlp:\n    endpoint: http://{receiver}\n    metrics_interval: 1h\npayload_logs:\n  content: true\n  redact_patterns: ['(?i)ticket-[0-9]+']\n"
    );
    let mw = Modelwatch::start(Options::new(up.url()).config(&config)).await;
    let prompt = "I am jane.doe@example.com, card 4111 1111 1111 1111, call +1 415-555-0132, ticket-99812. My key: Bearer sk_live_abcdef123456";
    let r = http()
        .post(mw.url("/v1/chat/completions"))
        .header("x-request-id", "chat-1")
        .json(
            &serde_json::json!({"model": "canned-chat", "temperature": 0.3, "max_tokens": 50,
            "messages": [{"role": "user", "content": prompt}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A tabular request whose text feature carries an address too (OIP BYTES tensor).
    let r = http()
        .post(mw.url("/v2/models/tickets/infer"))
        .header("x-request-id", "oip-1")
        .json(&serde_json::json!({"inputs": [{"name": "email", "shape": [1], "datatype": "BYTES", "data": ["bob@example.org"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404); // the stand-in has no such model: no record, no log

    let records = eventually("payload log record", Duration::from_secs(15), || async {
        let l = logs.lock().unwrap();
        (!l.is_empty()).then(|| l.clone())
    })
    .await;
    let chat = &records[0];
    let body = any_text(&chat.body);
    let attrs = format!("{:?}", chat.attributes);
    for secret in ["@example.com", "4111", "415-555", "ticket-99812", "sk_live"] {
        assert!(
            !body.contains(secret) && !attrs.contains(secret),
            "{secret} leaked: {body} {attrs}"
        );
    }
    for label in [
        "[REDACTED:email]",
        "[REDACTED:card_number]",
        "[REDACTED:phone]",
        "[REDACTED:custom]",
        "[REDACTED:bearer_token]",
    ] {
        assert!(body.contains(label), "{label} missing: {body}");
    }
    assert!(
        body.contains("Write to [REDACTED:email] for help."),
        "{body}"
    );
    assert!(attrs.contains("chat-1"), "{attrs}");
    assert_eq!(chat.event_name, "modelwatch.inference");

    let span = eventually("chat span", Duration::from_secs(15), || async {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.name.starts_with("chat"))
            .cloned()
    })
    .await;
    assert_eq!(span.name, "chat canned-chat");
    assert_eq!(
        chat.trace_id, span.trace_id,
        "the log record is linked to the request's trace"
    );
    assert_eq!(chat.span_id, span.span_id);
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == k)
            .map(|a| format!("{:?}", a.value))
            .unwrap_or_default()
    };
    assert!(attr("gen_ai.usage.input_tokens").contains("21"));
    assert!(attr("gen_ai.usage.output_tokens").contains("7"));
    assert!(attr("gen_ai.response.finish_reasons").contains("stop"));
    assert!(attr("gen_ai.response.id").contains("chatcmpl-test"));
    assert!(attr("gen_ai.request.temperature").contains("0.3"));
    assert!(attr("gen_ai.request.max_tokens").contains("50"));
}

/// An anomaly reaches the OTLP log receiver as a `modelwatch.anomaly` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_are_otlp_log_events() {
    let (receiver, _spans, logs) = receiver().await;
    let up = TestUpstream::start().await;
    let config = format!(
        "telemetry:\n  otlp:\n    endpoint: http://{receiver}\n    metrics_interval: 1h\n    traces: false\nanomaly:\n  interval: 200ms\n  warmup: 8\n"
    );
    let mw = Modelwatch::start(Options::new(up.url()).config(&config)).await;
    let client = http();
    let fast_until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < fast_until {
        client
            .get(mw.url("/slow?ms=2"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let event = eventually("an anomaly event", Duration::from_secs(30), || async {
        client
            .get(mw.url("/slow?ms=150"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let l = logs.lock().unwrap();
        l.iter()
            .find(|r| {
                r.event_name == "modelwatch.anomaly"
                    && format!("{:?}", r.attributes).contains("latency_p95")
            })
            .cloned()
    })
    .await;
    assert!(
        any_text(&event.body).contains("anomaly in latency_p95"),
        "{event:?}"
    );
    assert_eq!(event.severity_text, "WARN");
}

/// Alert transitions reach the OTLP log receiver as `modelwatch.alert`
/// events: a rule on the model server being unreachable (`modelwatch.upstream.up`
/// below 1) goes pending, then firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_transitions_are_otlp_log_events() {
    let (receiver, _spans, logs) = receiver().await;
    let config = format!(
        "telemetry:\n  otlp:\n    endpoint: http://{receiver}\n    metrics_interval: 1h\n    traces: false\nadmin:\n  readiness:\n    interval: 100ms\nalerts:\n  evaluation_interval: 200ms\n  rules:\n    - name: ModelServerDown\n      figure: modelwatch.upstream.up\n      below: 1\n      for: 500ms\n      severity: critical\n      annotations: {{summary: 'the model server is unreachable'}}\n"
    );
    // Nothing listens on the upstream port.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let _mw = Modelwatch::start(Options::new(closed).config(&config).no_wait()).await;
    let states = eventually(
        "pending and firing events",
        Duration::from_secs(30),
        || async {
            let l = logs.lock().unwrap();
            let states: Vec<String> = l
                .iter()
                .filter(|r| r.event_name == "modelwatch.alert")
                .map(|r| {
                    r.attributes
                        .iter()
                        .find(|a| a.key == "alertstate")
                        .map(|a| any_text(&a.value))
                        .and_then(|t| {
                            ["pending", "firing", "resolved", "inactive"]
                                .into_iter()
                                .find(|s| t.contains(&format!("\"{s}\"")))
                        })
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            states.iter().any(|s| s == "firing").then_some(states)
        },
    )
    .await;
    assert_eq!(states[..2], ["pending".to_string(), "firing".to_string()]);
    let l = logs.lock().unwrap();
    let firing = l
        .iter()
        .find(|r| r.event_name == "modelwatch.alert" && any_text(&r.body).contains("firing"))
        .unwrap();
    assert_eq!(firing.severity_text, "WARN");
    let attrs = format!("{:?}", firing.attributes);
    for want in [
        "ModelServerDown",
        "modelwatch.alert.label.severity",
        "the model server is unreachable",
        "modelwatch.alert.value",
    ] {
        assert!(attrs.contains(want), "{want} missing: {attrs}");
    }
}

/// The environment as events: a model version first seen in traffic is a
/// `modelwatch.environment.change` OTLP log event, and the model server's
/// own version (MLServer's `GET /v2`) is a label of `modelwatch.environment.info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_changes_are_otlp_log_events() {
    let (receiver, _spans, logs) = receiver().await;
    let mls = crate::models::mlserver(&["bc"]).await;
    let config = format!(
        "telemetry:\n  otlp:\n    endpoint: http://{receiver}\n    metrics_interval: 1h\n    traces: false\nresources:\n  interval: 300ms\n"
    );
    let mw = Modelwatch::start(Options::new(mls.url("")).config(&config)).await;
    // Let the watcher take its first reading before the model appears.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (x, _) = crate::models::bc_data();
    crate::models::oip_infer(&mw.url("/v2/models/bc/infer"), &x[..1], None).await;
    let event = eventually(
        "a model version first seen",
        Duration::from_secs(30),
        || async {
            let l = logs.lock().unwrap();
            l.iter()
                .find(|r| {
                    r.event_name == "modelwatch.environment.change"
                        && any_text(&r.body).contains("model:bc:v1")
                })
                .cloned()
        },
    )
    .await;
    assert!(
        format!("{:?}", event.attributes).contains("seen"),
        "{event:?}"
    );
    let m = mw.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_environment_changes_total",
            &[("component", "model:bc:v1")]
        ),
        Some(1.0)
    );
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_environment_info",
            &[
                ("model_server_name", "mlserver"),
                ("model_server_version", "1.7.1")
            ]
        ),
        Some(1.0),
        "{m}"
    );
}
