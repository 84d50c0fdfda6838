//! Figures a team can act on, with the unhappy path: a model version that
//! fails half its requests (real 500s from MLServer), failures named by the
//! path, a request header, a response header or the default; the per-version
//! counters, the canary gate, the alert in a real Alertmanager and its
//! webhook twin, a feature list of the wrong length, and scores recorded
//! bit for bit as the model sent them.

use std::time::Duration;

use serde_json::{json, Value};

use crate::alerts::{alertmanager_on, am_alerts, Hooks};
use crate::common::*;
use crate::models::{bc_data, mlserver_versions, oip_infer};

const CONFIG: &str = r#"
admin:
  recent_records: 1000
quality:
  refresh_interval: 100ms
  windows: [1h]
  min_samples: 10
protocol:
  model_version_header: x-model-version
  default_model_version: dflt
  models:
    - name: bc
      class_names: [malignant, benign]
      label_output: predict
      scores_output: predict_proba
      features: FEATURES
rollout:
  gate:
    model: bc
    checks: [error_rate]
    min_samples: 20
alerts:
  evaluation_interval: 500ms
  alertmanager:
    url: ALERTMANAGER
    resend_interval: 2s
  webhooks:
    - name: team
      url: WEBHOOK
  rules:
    - name: ModelVersionFailing
      figure: modelwatch.model.requests
      match: {model: bc, result: error}
      stat: increase
      range: 5m
      above: 10
      severity: critical
      annotations:
        summary: "{{ labels.model }} {{ labels.model_version }} failed {{ value }} requests ({{ samples }} samples)"
"#;

/// One Open Inference request of `rows` to `path`, with an optional version
/// header; returns the status and the body.
async fn infer(
    mw: &Modelwatch,
    path: &str,
    rows: &[Vec<f64>],
    version: Option<&str>,
) -> (u16, Value) {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let body = json!({
        "inputs": [{"name": "input-0", "shape": [rows.len(), rows[0].len()], "datatype": "FP64", "data": flat}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    });
    let mut req = http().post(mw.url(path)).json(&body);
    if let Some(v) = version {
        req = req.header("x-model-version", v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) fn count(metrics: &str, version: &str, result: &str) -> Option<f64> {
    prom_value(
        metrics,
        "modelwatch_model_requests_total",
        &[
            ("model", "bc"),
            ("model_version", version),
            ("result", result),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_count_under_their_version_and_fail_the_gate() {
    let (x, _) = bc_data();
    let model = mlserver_versions(&[("bc", "v1", "bc"), ("bc", "v2", "bc")]).await;
    let hooks = Hooks::start().await;
    let am_port = free_port();
    let am = alertmanager_on(am_port, &hooks.url("/am")).await;
    // 29 names for a 30-wide input: a configuration mistake modelwatch must say.
    let names: Vec<String> = (0..29).map(|i| format!("f{i}")).collect();
    let config = CONFIG
        .replace("FEATURES", &format!("[{}]", names.join(", ")))
        .replace("ALERTMANAGER", &format!("http://127.0.0.1:{am_port}"))
        .replace("WEBHOOK", &hooks.url("/team"));
    let mw = Modelwatch::start(Options::new(model.url("")).config(&config)).await;

    // v1 answers everything; v2 fails half its requests (a 29-wide input is
    // a 500 from MLServer); more v2 failures name their version only in a
    // request header, and a few name none (the default applies).
    let bad: Vec<Vec<f64>> = x[..5].iter().map(|r| r[..29].to_vec()).collect();
    let mut answers = Vec::new();
    for i in 0..30 {
        let rows = &x[i * 5..(i + 1) * 5];
        let answer = oip_infer(
            &mw.url("/v2/models/bc/versions/v1/infer"),
            rows,
            Some(&format!("v1-{i}")),
        )
        .await;
        answers.push((rows.to_vec(), answer));
        let (s, _) = infer(&mw, "/v2/models/bc/versions/v2/infer", rows, None).await;
        assert_eq!(s, 200);
        let (s, _) = infer(&mw, "/v2/models/bc/versions/v2/infer", &bad, None).await;
        assert_eq!(s, 500, "MLServer fails a 29-wide input");
    }
    for _ in 0..10 {
        let (s, _) = infer(&mw, "/v2/models/bc/infer", &bad, Some("v2")).await;
        assert_eq!(s, 500);
    }
    for _ in 0..5 {
        let (s, _) = infer(&mw, "/v2/models/bc/infer", &bad, None).await;
        assert_eq!(s, 500);
    }

    // Per version, whatever the status: path, request header, default.
    let m = eventually("per-version counts", Duration::from_secs(30), || async {
        let m = mw.metrics().await;
        (count(&m, "dflt", "error") == Some(5.0)).then_some(m)
    })
    .await;
    assert_eq!(count(&m, "v1", "ok"), Some(30.0), "{m}");
    assert_eq!(count(&m, "v1", "error"), None, "{m}");
    assert_eq!(count(&m, "v2", "ok"), Some(30.0), "{m}");
    assert_eq!(count(&m, "v2", "error"), Some(40.0), "{m}");
    assert!(
        !m.contains("model=\"\""),
        "an empty model label in /metrics"
    );
    // The latency histogram counts failures too.
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_model_request_duration_seconds_count",
            &[("model", "bc"), ("model_version", "v2")]
        ),
        Some(70.0)
    );

    // The gate: v2 fails 40 of 70 requests against v1's 0 of 30.
    let g = mw
        .admin_json("/v1/gate?baseline=v1&candidate=v2&checks=error_rate")
        .await;
    assert_eq!(g["verdict"], "fail", "{g}");
    let reason = g["checks"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("error rate of v2 is 0.5714"), "{g}");
    let resp = http()
        .post(mw.admin_url("/v1/gate"))
        .json(&json!({"name": "bc", "namespace": "models", "phase": "Progressing", "metadata": {"baseline": "v1", "candidate": "v2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 412, "Flagger must not promote v2");

    // The alert: fired for bc v2 (and only v2), in a real Alertmanager, with
    // the sample count filled in; the webhook's fingerprint is Alertmanager's.
    let alert = eventually(
        "the alert in Alertmanager",
        Duration::from_secs(40),
        || async {
            am_alerts(&am)
                .await
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "ModelVersionFailing")
        },
    )
    .await;
    assert_eq!(alert["labels"]["model"], "bc", "{alert}");
    assert_eq!(alert["labels"]["model_version"], "v2", "{alert}");
    assert_eq!(alert["labels"]["result"], "error", "{alert}");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    // The count depends on when the rule looked; the sample count is there.
    let re = regex::Regex::new(r"^bc v2 failed [0-9.]+ requests \([0-9.]+ samples\)$").unwrap();
    assert!(re.is_match(summary), "{summary}");
    let all = am_alerts(&am).await;
    assert!(
        all.iter().all(|a| a["labels"]["model"] != ""),
        "an alert without a model: {all:?}"
    );
    assert_eq!(
        all.iter()
            .filter(|a| a["labels"]["alertname"] == "ModelVersionFailing")
            .count(),
        1,
        "only v2 fails more than 10: {all:?}"
    );
    let team = eventually("the webhook call", Duration::from_secs(20), || async {
        hooks.on("/team").into_iter().next()
    })
    .await;
    assert_eq!(
        team.1["alerts"][0]["fingerprint"], alert["fingerprint"],
        "{}",
        team.1
    );

    // The feature list of the wrong length: said once, counted, in /v1/status.
    let status = mw.status().await;
    let mismatch = &status["decode"]["feature_names_mismatch"][0];
    assert_eq!(mismatch["model"], "bc", "{status}");
    assert_eq!(mismatch["key"], "protocol.models[0].features");
    assert_eq!(
        (
            mismatch["configured"].as_u64(),
            mismatch["received"].as_u64()
        ),
        (Some(29), Some(30))
    );
    assert!(mismatch["exchanges"].as_u64().unwrap() >= 60, "{mismatch}");
    let log = mw.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("protocol.models[0].features"))
        .collect();
    assert_eq!(warnings.len(), 1, "said once: {warnings:?}");
    assert!(
        warnings[0].contains("29") && warnings[0].contains("30"),
        "{}",
        warnings[0]
    );
    assert!(
        prom_value(
            &m,
            "modelwatch_decode_errors_total",
            &[("reason", "feature_names_mismatch")]
        )
        .is_some_and(|n| n >= 60.0),
        "{m}"
    );

    // Every score in /v1/records is the number MLServer sent, to the last bit.
    let records = mw.admin_json("/v1/records").await;
    let records = records.as_array().unwrap();
    let mut compared = 0;
    for (i, (_, answer)) in answers.iter().enumerate() {
        let proba = answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "predict_proba")
            .unwrap()["data"]
            .as_array()
            .unwrap()
            .clone();
        for row in 0..5 {
            let r = records
                .iter()
                .find(|r| r["request_id"] == format!("v1-{i}") && r["row"] == row)
                .unwrap_or_else(|| panic!("no record of v1-{i} row {row}"));
            for (c, class) in ["malignant", "benign"].iter().enumerate() {
                let sent = proba[row * 2 + c].as_f64().unwrap();
                let kept = r["scores"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s[0] == *class)
                    .unwrap()[1]
                    .as_f64()
                    .unwrap();
                assert_eq!(
                    kept.to_bits(),
                    sent.to_bits(),
                    "v1-{i} row {row} {class}: {kept} vs {sent}"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 300);

    // A failure whose version only the model server's answer names (a
    // response header), with no model in its path: model `unknown`, never "".
    let up = TestUpstream::start().await;
    let other = Modelwatch::start(
        Options::new(up.url()).config("protocol:\n  model_version_header: x-model-version\n"),
    )
    .await;
    for _ in 0..3 {
        let resp = http()
            .post(other.url("/status/500?version=rv"))
            .json(&json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 500);
        resp.bytes().await.unwrap();
    }
    let m = eventually(
        "the response header's version",
        Duration::from_secs(20),
        || async {
            let m = other.metrics().await;
            (prom_value(
                &m,
                "modelwatch_model_requests_total",
                &[
                    ("model", "unknown"),
                    ("model_version", "rv"),
                    ("result", "error"),
                ],
            ) == Some(3.0))
            .then_some(m)
        },
    )
    .await;
    assert!(!m.contains("model=\"\""), "{m}");
}
