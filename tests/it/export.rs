//! The two readers of the one meter provider, against real backends: a real
//! Prometheus scrapes `/metrics` (and promtool checks the exposition), and
//! OTLP pushes reach a real VictoriaMetrics. Faults: a backend that is down,
//! one that black-holes, and recovery.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

async fn send_chat(mw: &Modelwatch, n: usize) {
    let client = http();
    for i in 0..n {
        let r = client
            .post(mw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(format!(
                "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{i}\"}}]}}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_admin_endpoint() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url())).await;
    send_chat(&mw, 7).await;

    // promtool accepts the exposition as it is.
    let exposition = mw.metrics().await;
    let out = run_with_input(
        Command::new(testbed_bin("promtool")).args(["check", "metrics"]),
        exposition.as_bytes(),
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prom = prometheus(&[mw.admin]).await;
    let base = prom.url("");
    let q = r#"sum(http_server_request_duration_seconds_count{job="modelwatch",http_route="/v1/chat/completions",http_response_status_code="200"})"#;
    let v = eventually("series in Prometheus", Duration::from_secs(30), || {
        let base = base.clone();
        async move { promql(&base, q).await.filter(|v| *v >= 7.0) }
    })
    .await;
    assert_eq!(v, 7.0);
    let buckets = promql(
        &base,
        r#"sum(http_server_request_duration_seconds_bucket{job="modelwatch",http_route="/v1/chat/completions",le="+Inf"})"#,
    )
    .await;
    assert_eq!(buckets, Some(7.0));
    let up = promql(&base, r#"modelwatch_upstream_up{job="modelwatch"}"#).await;
    assert_eq!(up, Some(1.0));
}

fn otlp_config(endpoint: &str) -> String {
    format!(
        "telemetry:\n  service_name: model-under-test\n  resource_attributes:\n    deployment.environment: test\n  otlp:\n    endpoint: {endpoint}\n    metrics_interval: 1s\n    timeout: 1s\n    max_backoff: 2s\n    traces: false\n"
    )
}

async fn vm_value(vm: &Service, query: &str) -> Option<f64> {
    let _ = http().post(vm.url("/internal/force_flush")).send().await;
    promql(&vm.url(""), query).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_metrics_reach_victoria_metrics() {
    let vm = victoria_metrics_on(free_port()).await;
    let up = TestUpstream::start().await;
    // A generous export timeout: with the whole suite running on two cores,
    // one export may take longer than a second, and this test counts failures.
    let config = otlp_config(&vm.url("/opentelemetry")).replace("timeout: 1s", "timeout: 10s");
    let mw = Modelwatch::start(
        Options::new(up.url())
            .config(&config)
            .env("K8S_POD_NAME", "model-7d9f")
            .env("K8S_NAMESPACE_NAME", "serving"),
    )
    .await;
    send_chat(&mw, 5).await;
    let q = r#"sum(http_server_request_duration_seconds_count{service_name="model-under-test",http_route="/v1/chat/completions",k8s_pod_name="model-7d9f",k8s_namespace_name="serving",deployment_environment="test"})"#;
    let v = eventually(
        "OTLP series in VictoriaMetrics",
        Duration::from_secs(30),
        || async { vm_value(&vm, q).await.filter(|v| *v >= 5.0) },
    )
    .await;
    assert_eq!(v, 5.0);
    let status = mw.status().await;
    assert_eq!(status["export"]["metrics"]["failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_backend_down_then_back() {
    let port = free_port();
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url()).config(&otlp_config(&format!(
        "http://127.0.0.1:{port}/opentelemetry"
    ))))
    .await;
    send_chat(&mw, 3).await;
    // Failures are counted and reported; traffic is unaffected.
    eventually(
        "export failures counted",
        Duration::from_secs(15),
        || async {
            let m = mw.metrics().await;
            prom_value(
                &m,
                "modelwatch_export_failures_total",
                &[("signal", "metrics")],
            )
            .filter(|v| *v >= 1.0)
        },
    )
    .await;
    let status = mw.status().await;
    assert!(
        status["export"]["metrics"]["last_error"].is_string(),
        "{status}"
    );
    send_chat(&mw, 2).await;

    // The backend comes up: export resumes and the cumulative counts arrive whole.
    let vm = victoria_metrics_on(port).await;
    let q = r#"sum(http_server_request_duration_seconds_count{service_name="model-under-test",http_route="/v1/chat/completions"})"#;
    let v = eventually("export resumed", Duration::from_secs(40), || async {
        vm_value(&vm, q).await.filter(|v| *v >= 5.0)
    })
    .await;
    assert_eq!(v, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_black_hole_does_not_touch_traffic() {
    let (hole, _task) = black_hole().await;
    let up = TestUpstream::start().await;
    let mut config = otlp_config(&format!("http://{hole}"));
    config = config.replace("traces: false", "traces: true\n    span_queue_capacity: 16");
    let mw = Modelwatch::start(Options::new(up.url()).config(&config)).await;
    // Traffic keeps flowing while every export hangs until its timeout.
    let client = http();
    for _ in 0..200 {
        let r = client.get(mw.url("/headers")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
    }
    let status = eventually(
        "export timeouts counted",
        Duration::from_secs(20),
        || async {
            let s = mw.status().await;
            (s["export"]["metrics"]["failures"].as_u64() >= Some(1)).then_some(s)
        },
    )
    .await;
    // The span queue is bounded: beyond 16 waiting spans, spans are dropped and counted.
    let m = mw.metrics().await;
    let dropped = prom_value(&m, "modelwatch_export_spans_dropped_total", &[]).unwrap_or(0.0);
    assert!(dropped >= 1.0, "spans dropped: {dropped}; status {status}");
}

/// An instant query to a VictoriaMetrics that speaks only https, through
/// curl with the test CA (the test client has no TLS).
fn vm_https_value(port: u16, ca: &std::path::Path, query: &str) -> Option<f64> {
    let base = format!("https://127.0.0.1:{port}");
    let _ = curl_https(ca, &["-X", "POST", &format!("{base}/internal/force_flush")]);
    let body = curl_https(
        ca,
        &[
            "--data-urlencode",
            &format!("query={query}"),
            &format!("{base}/api/v1/query"),
        ],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// OTLP over https to a real TLS receiver (VictoriaMetrics with `-tls`):
/// trusted through `OTEL_EXPORTER_OTLP_CERTIFICATE`, the metrics arrive; with
/// the system's roots only, or a certificate for another name, every export
/// fails, and the log and `/v1/status` say why (not "network error").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_https_with_a_custom_ca_and_clear_tls_failures() {
    let dir = tempfile::tempdir().unwrap();
    test_ca(dir.path());
    server_certificate(dir.path(), "vm", "DNS:localhost,IP:127.0.0.1");
    server_certificate(dir.path(), "other", "DNS:metrics.example.com");
    let ca = dir.path().join("ca.crt");
    let vm_with = |name: &str| {
        let port = free_port();
        let svc = victoria_metrics_with(
            port,
            &[
                "-tls".to_string(),
                format!(
                    "-tlsCertFile={}",
                    dir.path().join(format!("{name}.crt")).display()
                ),
                format!(
                    "-tlsKeyFile={}",
                    dir.path().join(format!("{name}.key")).display()
                ),
            ],
        );
        (port, svc)
    };
    let (port, _vm) = vm_with("vm");
    eventually(
        "VictoriaMetrics over https",
        Duration::from_secs(30),
        || async { curl_https(&ca, &[&format!("https://127.0.0.1:{port}/health")]) },
    )
    .await;
    let up = TestUpstream::start().await;
    let endpoint = format!("https://127.0.0.1:{port}/opentelemetry");
    let config = otlp_config(&endpoint).replace("timeout: 1s", "timeout: 10s");

    // Trusted through the OpenTelemetry variable.
    let mw = Modelwatch::start(
        Options::new(up.url())
            .config(&config)
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap()),
    )
    .await;
    send_chat(&mw, 4).await;
    let q = r#"sum(http_server_request_duration_seconds_count{service_name="model-under-test",http_route="/v1/chat/completions"})"#;
    let v = eventually(
        "OTLP over https in VictoriaMetrics",
        Duration::from_secs(30),
        || async { vm_https_value(port, &ca, q).filter(|v| *v >= 4.0) },
    )
    .await;
    assert_eq!(v, 4.0);
    assert_eq!(mw.status().await["export"]["metrics"]["failures"], 0);

    // The system's roots only: the test CA is unknown.
    let untrusting = Modelwatch::start(Options::new(up.url()).config(&config)).await;
    let error = eventually(
        "a failed export's cause",
        Duration::from_secs(20),
        || async {
            untrusting.status().await["export"]["metrics"]["last_error"]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(untrusting.log_text().contains("UnknownIssuer"));

    // The right CA, a certificate for another name.
    let (other_port, _other) = vm_with("other");
    let wrong_name = Modelwatch::start(
        Options::new(up.url())
            .config(&otlp_config(&format!(
                "https://127.0.0.1:{other_port}/opentelemetry"
            )))
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap()),
    )
    .await;
    let error = eventually("a name mismatch", Duration::from_secs(30), || async {
        wrong_name.status().await["export"]["metrics"]["last_error"]
            .as_str()
            .filter(|e| e.contains("not valid for name"))
            .map(str::to_string)
    })
    .await;
    assert!(error.contains("metrics.example.com"), "{error}");
    assert!(
        !wrong_name.log_text().contains("rustls_platform_verifier"),
        "one line per failure, from modelwatch"
    );
    // Traffic never noticed.
    send_chat(&wrong_name, 2).await;
}
