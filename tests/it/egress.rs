//! Egress through an HTTP proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), as
//! clusters whose pods reach the outside only through one are set up: alerts
//! to a real Alertmanager and OTLP to VictoriaMetrics go through it; the model
//! server never does.

use std::time::Duration;

use crate::alerts::{alertmanager_on, am_alerts, Hooks};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_otlp_go_through_the_egress_proxy() {
    let (proxy, seen, _task) = forward_proxy().await;
    let hooks = Hooks::start().await;
    let am_port = free_port();
    let am = alertmanager_on(am_port, &hooks.url("/am")).await;
    let vm = victoria_metrics_on(free_port()).await;
    let up = TestUpstream::start().await;
    let config = format!(
        "telemetry:\n  otlp:\n    endpoint: {}\n    metrics_interval: 1s\n    timeout: 5s\n    traces: false\nalerts:\n  evaluation_interval: 200ms\n  alertmanager:\n    url: http://127.0.0.1:{am_port}\n    resend_interval: 1s\n  rules:\n    - name: AlwaysOn\n      figure: modelwatch.upstream.up\n      below: 2\n      severity: info\n",
        vm.url("/opentelemetry")
    );
    let via = format!("http://{proxy}");
    let mw = Modelwatch::start(
        Options::new(up.url())
            .config(&config)
            .env("HTTP_PROXY", &via)
            .env("HTTPS_PROXY", &via)
            .env("NO_PROXY", ""),
    )
    .await;
    let r = http().get(mw.url("/headers")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eventually(
        "the alert through the proxy",
        Duration::from_secs(20),
        || async {
            am_alerts(&am)
                .await
                .iter()
                .any(|a| a["labels"]["alertname"] == "AlwaysOn")
                .then_some(())
        },
    )
    .await;
    eventually(
        "OTLP through the proxy",
        Duration::from_secs(30),
        || async {
            let _ = http().post(vm.url("/internal/force_flush")).send().await;
            promql(
                &vm.url(""),
                "sum(http_server_request_duration_seconds_count)",
            )
            .await
            .filter(|v| *v >= 1.0)
        },
    )
    .await;
    let lines = seen.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("CONNECT 127.0.0.1:{am_port} "))),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "POST http://127.0.0.1:{}/opentelemetry/v1/metrics ",
            vm.port
        ))),
        "{lines:?}"
    );
    // The model server is in the pod: never through the proxy.
    let upstream_port = up.addr.port();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(&format!(":{upstream_port}"))),
        "{lines:?}"
    );
    drop(mw);

    // NO_PROXY names the hosts reached directly.
    let before = seen.lock().unwrap().len();
    let hooks2 = Hooks::start().await;
    let am2_port = free_port();
    let am2 = alertmanager_on(am2_port, &hooks2.url("/am")).await;
    let direct = Modelwatch::start(
        Options::new(up.url())
            .config(&format!(
                "alerts:\n  evaluation_interval: 200ms\n  alertmanager:\n    url: http://127.0.0.1:{am2_port}\n    resend_interval: 1s\n  rules:\n    - name: AlwaysOn\n      figure: modelwatch.upstream.up\n      below: 2\n      severity: info\n"
            ))
            .env("HTTP_PROXY", &via)
            .env("NO_PROXY", "127.0.0.1"),
    )
    .await;
    eventually("the alert, directly", Duration::from_secs(20), || async {
        am_alerts(&am2)
            .await
            .iter()
            .any(|a| a["labels"]["alertname"] == "AlwaysOn")
            .then_some(())
    })
    .await;
    assert_eq!(seen.lock().unwrap().len(), before);
    drop(direct);
}
