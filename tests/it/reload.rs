//! Live reload through the real binary: a changed file, SIGHUP and
//! `POST /-/reload`, under steady traffic, with a real Alertmanager.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::alerts::{alertmanager_on, am_alerts, Hooks};
use crate::common::*;

fn alert_config(am_port: u16, traffic_above: f64) -> String {
    format!(
        "alerts:\n  evaluation_interval: 200ms\n  alertmanager:\n    url: http://127.0.0.1:{am_port}\n    resend_interval: 1s\n  rules:\n    - name: AlwaysOn\n      figure: modelwatch.upstream.up\n      below: 2\n      severity: info\n    - name: UpstreamUpAbove\n      figure: modelwatch.upstream.up\n      above: {traffic_above}\n      severity: warning\nadmin:\n  readiness:\n    interval: 200ms\n"
    )
}

/// Requests at a steady rate (about `rate` per second) until stopped;
/// counts the answers that were not 200.
fn steady_load(
    url: String,
    rate: u64,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let (s, f, st) = (sent.clone(), failed.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let client = http();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let mut inflight = tokio::task::JoinSet::new();
        while !st.is_cancelled() {
            tick.tick().await;
            let (client, url, s, f) = (client.clone(), url.clone(), s.clone(), f.clone());
            inflight.spawn(async move {
                s.fetch_add(1, Ordering::Relaxed);
                match client.post(&url).body("{\"inputs\":[]}").send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                    }
                    _ => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            while inflight.try_join_next().is_some() {}
        }
        while inflight.join_next().await.is_some() {}
    });
    (sent, failed, stop, task)
}

fn reloads(metrics: &str, result: &str) -> f64 {
    prom_value(
        metrics,
        "modelwatch_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(-1.0)
}

/// A threshold changed in the file makes its alert fire without a restart
/// and without one failed request at 500 req/s; a firing rule that did not
/// change keeps its alert (no second firing); a broken file is refused with
/// the key and reason and the old rules keep working; SIGHUP and
/// `POST /-/reload` apply what can change live and name what needs a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_rules_live_and_refuses_a_broken_file() {
    let hooks = Hooks::start().await;
    let am_port = free_port();
    let am = alertmanager_on(am_port, &hooks.url("/am")).await;
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url()).config(&alert_config(am_port, 5.0))).await;
    let firing = |name: &'static str| {
        let am = &am;
        async move {
            am_alerts(am)
                .await
                .iter()
                .any(|a| a["labels"]["alertname"] == name)
        }
    };
    eventually(
        "AlwaysOn in Alertmanager",
        Duration::from_secs(20),
        || async { firing("AlwaysOn").await.then_some(()) },
    )
    .await;
    assert!(!firing("UpstreamUpAbove").await);
    let before = mw.metrics().await;
    let hash_before = prom_value(&before, "modelwatch_config_hash", &[]).unwrap();
    assert_eq!(
        prom_value(&before, "modelwatch_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(reloads(&before, "success"), 0.0);
    assert_eq!(reloads(&before, "failure"), 0.0);

    let (sent, failed, stop, load) = steady_load(mw.url("/v2/models/echo/infer"), 500);

    // 1. The file changes (as a ConfigMap update does): the threshold is
    //    lowered, the alert fires, nothing restarts.
    std::fs::write(&mw.config_path, alert_config(am_port, 0.5)).unwrap();
    eventually(
        "UpstreamUpAbove in Alertmanager after the file changed",
        Duration::from_secs(30),
        || async { firing("UpstreamUpAbove").await.then_some(()) },
    )
    .await;
    let status = mw.status().await;
    let reload = &status["config"]["reload"];
    assert_eq!(reload["last"]["trigger"], "file", "{reload}");
    assert_eq!(reload["last"]["result"], "applied", "{reload}");
    assert_eq!(
        reload["last"]["applied"],
        serde_json::json!(["alerts.rules"]),
        "{reload}"
    );
    let m = mw.metrics().await;
    assert_eq!(reloads(&m, "success"), 1.0);
    assert_ne!(
        prom_value(&m, "modelwatch_config_hash", &[]).unwrap(),
        hash_before
    );
    // The unchanged rule kept its firing alert: one firing transition in all.
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_alert_transitions_total",
            &[("alertname", "AlwaysOn"), ("alertstate", "firing")]
        ),
        Some(1.0),
        "{m}"
    );

    // 2. A broken file: refused with the key and the reason, the old rules
    //    keep being evaluated, the failure is counted.
    let hash_applied = prom_value(&m, "modelwatch_config_hash", &[]).unwrap();
    std::fs::write(
        &mw.config_path,
        alert_config(am_port, 0.5).replace(
            "modelwatch.upstream.up\n      above",
            "modelwatch.upstream.upp\n      above",
        ),
    )
    .unwrap();
    let resp = http().post(mw.admin_url("/-/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"], "refused", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("alerts.rules") && error.contains("modelwatch.upstream.upp"),
        "{error}"
    );
    let evaluations = mw.status().await["alerts"]["evaluations"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = mw.status().await;
    assert!(status["alerts"]["evaluations"].as_u64().unwrap() > evaluations);
    assert_eq!(status["alerts"]["rules"][1]["firing"], 1, "{status}");
    let m = mw.metrics().await;
    assert_eq!(reloads(&m, "failure"), 1.0);
    assert_eq!(
        prom_value(&m, "modelwatch_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(
        prom_value(&m, "modelwatch_config_hash", &[]).unwrap(),
        hash_applied
    );
    assert!(mw.log_text().contains("config reload refused"));
    // The file watcher sees the broken file too: refused again, never applied.
    eventually(
        "the watcher refuses it too",
        Duration::from_secs(15),
        || async { (reloads(&mw.metrics().await, "failure") >= 2.0).then_some(()) },
    )
    .await;

    // 3. SIGHUP: the sample rate applies live, a queue bound waits for a
    //    restart and says so.
    std::fs::write(
        &mw.config_path,
        format!(
            "{}sampling:\n  rate: 0.5\n  queue_capacity: 100\n",
            alert_config(am_port, 0.5)
        ),
    )
    .unwrap();
    let pid = mw.child.as_ref().unwrap().id();
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let reload = eventually("the SIGHUP reload", Duration::from_secs(10), || async {
        let s = mw.status().await;
        let r = s["config"]["reload"].clone();
        (r["last"]["trigger"] == "signal").then_some(r)
    })
    .await;
    assert_eq!(
        reload["last"]["applied"],
        serde_json::json!(["sampling.rate"]),
        "{reload}"
    );
    assert_eq!(
        reload["restart_required"],
        serde_json::json!(["sampling.queue_capacity"]),
        "{reload}"
    );
    let status = mw.status().await;
    assert_eq!(status["config"]["sampling_rate"], 0.5);
    assert_eq!(
        status["config"]["queue_capacity"], 256,
        "the bound needs a restart"
    );
    let m = mw.metrics().await;
    assert_eq!(
        prom_value(&m, "modelwatch_config_restart_required", &[]),
        Some(1.0)
    );
    assert_eq!(
        prom_value(&m, "modelwatch_config_last_reload_successful", &[]),
        Some(1.0)
    );
    // About half of the requests are sampled now.
    let taken = |m: &str| prom_value(m, "modelwatch_samples_taken_total", &[]).unwrap();
    let requests = |m: &str| prom_value(m, "modelwatch_proxy_requests_total", &[]).unwrap_or(0.0);
    let (t0, r0) = (taken(&m), requests(&m));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m2 = mw.metrics().await;
    let share = (taken(&m2) - t0) / (requests(&m2) - r0);
    assert!((0.35..0.65).contains(&share), "sampled share {share}");

    stop.cancel();
    load.await.unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 1500, "only {sent} requests sent");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(
        mw.child.as_ref().is_some(),
        "modelwatch is the same process throughout"
    );
}

/// Drift thresholds, quality windows and the canary gate follow the file
/// after `POST /-/reload`, with the admin token guarding the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_drift_quality_and_gate_settings() {
    let up = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "reload-token-0123456789").unwrap();
    let config = |p: f64, windows: &str, candidate: &str| {
        format!(
            "admin:\n  token_file: {}\ndrift:\n  live_reference_rows: 50\n  min_samples: 20\n  refresh_interval: 100ms\n  p_value_threshold: {p}\nquality:\n  refresh_interval: 100ms\n  windows: {windows}\nrollout:\n  gate:\n    baseline: v1\n    candidate: {candidate}\n",
            token.display()
        )
    };
    let mw = Modelwatch::start(Options::new(up.url()).config(&config(0.05, "[1h]", "v2"))).await;
    let client = http();
    let send = |i: usize| {
        let client = client.clone();
        let url = mw.url("/v2/models/echo/infer");
        async move {
            // The echo model answers with the request: its `outputs` are the prediction.
            let body = serde_json::json!({
                "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [i as f64 % 17.0]}],
                "outputs": [{"name": "y", "shape": [1], "datatype": "INT64", "data": [i % 2]}]
            });
            let r = client.post(&url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    };
    for i in 0..120 {
        send(i).await;
    }
    let threshold = |m: &str| {
        prom_value(
            m,
            "modelwatch_drift_threshold",
            &[("model", "echo"), ("feature", "x"), ("method", "ks")],
        )
    };
    let t = eventually("the drift threshold", Duration::from_secs(20), || async {
        threshold(&mw.metrics().await)
    })
    .await;
    assert_eq!(t, 0.05);
    let windows = |q: &Value| -> Vec<String> {
        q["models"][0]["windows"]
            .as_array()
            .map(|w| {
                w.iter()
                    .map(|w| w["window"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let q = eventually("quality of echo", Duration::from_secs(20), || async {
        let q = mw.admin_json("/v1/quality").await;
        (!windows(&q).is_empty()).then_some(q)
    })
    .await;
    assert_eq!(windows(&q), vec!["1h", "total"], "{q}");

    std::fs::write(&mw.config_path, config(0.01, "[1h, 5m]", "v3")).unwrap();
    // Without the admin token: 401, counted, nothing reloaded.
    let resp = client.post(mw.admin_url("/-/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client
        .post(mw.admin_url("/-/reload"))
        .bearer_auth("reload-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["applied"],
        serde_json::json!([
            "drift.p_value_threshold",
            "quality.windows",
            "rollout.gate.candidate"
        ]),
        "{body}"
    );
    assert_eq!(body["restart_required"], serde_json::json!([]), "{body}");
    let m = mw.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_admin_auth_failures_total",
            &[("endpoint", "reload")]
        ),
        Some(1.0)
    );
    for i in 0..5 {
        send(i).await;
    }
    eventually(
        "the new drift threshold",
        Duration::from_secs(20),
        || async { (threshold(&mw.metrics().await) == Some(0.01)).then_some(()) },
    )
    .await;
    eventually(
        "the new quality window",
        Duration::from_secs(20),
        || async {
            let q = mw.admin_json("/v1/quality").await;
            (windows(&q) == vec!["1h", "5m", "total"]).then_some(())
        },
    )
    .await;
    let gate = mw.admin_json("/v1/gate").await;
    assert_eq!(gate["candidate"], "v3", "{gate}");
}
