//! KServe's payload logger as a source: the same exchanges with a real
//! MLServer, once through the proxy (modelwatch A) and once reported as
//! CloudEvents shaped as KServe's logger sends them, produced by the
//! CloudEvents SDK (tests/fixtures/kserve_logger.py), to modelwatch B, which
//! proxies nothing. B's records, quality figures from the same labels, and
//! drift must equal A's.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::models::{bc_data, drift_of, fixtures, mlserver, testbed};
use crate::quality::window;

/// Records keyed by (request id, row).
async fn records(mw: &Modelwatch, n: usize) -> HashMap<(String, u64), Value> {
    mw.records(n)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r["request_id"].as_str().unwrap().to_string(),
                    r["row"].as_u64().unwrap(),
                ),
                r.clone(),
            )
        })
        .collect()
}

async fn drift(mw: &Modelwatch) -> Value {
    eventually("drift figures", Duration::from_secs(30), || async {
        let (m, f) = drift_of(mw, "bc", "f0").await?;
        (f["window"].as_u64() == Some(250)).then_some(m)
    })
    .await
}

fn kserve_logger(url: &str, exchanges: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exchanges.json");
    std::fs::write(&path, exchanges.to_string()).unwrap();
    let out = Command::new(testbed().join("venvs/kserve/bin/python"))
        .arg(fixtures().join("kserve_logger.py"))
        .arg(url)
        .arg(&path)
        .arg("bc")
        .output()
        .unwrap();
    stdout_json(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_logger_events_give_the_proxied_paths_records_quality_and_drift() {
    let (x, y) = bc_data();
    let n = x.len();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}cloudevents:\n  pair_timeout: 2s\n",
        crate::grpc_models::bc_config(dir.path(), &x)
    );
    let server = mlserver(&["bc"]).await;
    let a = Modelwatch::start(Options::new(server.url("")).config(&config)).await;
    let b = Modelwatch::start(Options::new(server.url("")).config(&config)).await;

    // Through A: 25-row requests, the second half shifted (even features
    // × 1.15); each exchange's bytes kept for the logger.
    let rows: Vec<Vec<f64>> = x
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .enumerate()
                .map(|(j, v)| if i >= 285 && j % 2 == 0 { v * 1.15 } else { *v })
                .collect()
        })
        .collect();
    let mut exchanges = Vec::new();
    for (batch, chunk) in rows.chunks(25).enumerate() {
        let flat: Vec<f64> = chunk.iter().flatten().copied().collect();
        let request = json!({
            "inputs": [{"name": "input-0", "shape": [chunk.len(), 30], "datatype": "FP64", "data": flat}],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        })
        .to_string();
        let id = format!("bc-{batch}");
        let resp = http()
            .post(a.url("/v2/models/bc/infer"))
            .header("content-type", "application/json")
            .header("x-request-id", &id)
            .body(request.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let response = resp.text().await.unwrap();
        exchanges.push(json!({"id": id, "request": request, "response": response}));
    }
    let batches = exchanges.len();

    // To B, as KServe's logger: binary and structured, some responses first.
    let sent = kserve_logger(
        &b.admin_url("/v1/cloudevents"),
        &Value::from(exchanges.clone()),
    );
    assert_eq!(sent["statuses"], json!({"200": 2 * batches}), "{sent}");
    assert_eq!(sent["outcomes"]["joined"], batches, "{sent}");
    assert_eq!(sent["outcomes"]["pending"], batches, "{sent}");

    // The same records.
    let (ra, rb) = (records(&a, n).await, records(&b, n).await);
    assert_eq!(ra.len(), n);
    for (key, r) in &ra {
        let other = rb
            .get(key)
            .unwrap_or_else(|| panic!("B has no record {key:?}"));
        for field in [
            "model",
            "model_version",
            "protocol",
            "features",
            "prediction",
            "scores",
        ] {
            assert_eq!(r[field], other[field], "{field} of {key:?}");
        }
    }

    // The same labels give the same figures.
    let lines: Vec<String> = (0..n)
        .map(|i| json!({"request_id": format!("bc-{}", i / 25), "row": i % 25, "label": y[i], "model": "bc"}).to_string())
        .collect();
    for mw in [&a, &b] {
        let resp = http()
            .post(mw.admin_url("/v1/feedback"))
            .header("content-type", "application/x-ndjson")
            .body(lines.join("\n"))
            .send()
            .await
            .unwrap();
        let report: Value = resp.json().await.unwrap();
        assert_eq!(report["joined"].as_u64(), Some(n as u64), "{report}");
    }
    let (wa, wb) = (
        window(&a, "bc", "1h", n as u64).await,
        window(&b, "bc", "1h", n as u64).await,
    );
    // Every figure: accuracy, per-class and binary precision, recall and
    // F1, the confusion matrix, ROC AUC, log loss and the label-free estimate.
    for figure in [
        "accuracy",
        "binary",
        "classes",
        "confusion",
        "roc_auc",
        "log_loss",
        "estimated",
    ] {
        assert!(wa.get(figure).is_some(), "{figure} in {wa}");
    }
    assert_eq!(wa, wb);

    // The same drift: the shifted features drift, with equal statistics.
    let (da, db) = (drift(&a).await, drift(&b).await);
    assert_eq!(da["drifted_features"], db["drifted_features"]);
    assert!(
        da["drifted_features"].as_array().unwrap().len() >= 8,
        "{da}"
    );
    for (fa, fb) in da["features"]
        .as_array()
        .unwrap()
        .iter()
        .zip(db["features"].as_array().unwrap())
    {
        assert_eq!(fa, fb);
    }

    // No latency from events; every pair counted as one request.
    let m = b.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_model_requests_total",
            &[("model", "bc"), ("result", "ok")]
        ),
        Some(batches as f64),
        "{m}"
    );
    assert!(
        !m.contains("modelwatch_model_request_duration_seconds_count{"),
        "{m}"
    );
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_cloudevents_received_total",
            &[("outcome", "joined")]
        ),
        Some(batches as f64)
    );

    // A failed request (KServe logs no response) waits, then expires;
    // a body that is not an inference event gets a 400 with the reason.
    let failed = kserve_logger(
        &b.admin_url("/v1/cloudevents"),
        &json!([{"id": "failed-1", "request": exchanges[0]["request"], "response": null}]),
    );
    assert_eq!(failed["outcomes"], json!({"pending": 1}), "{failed}");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    kserve_logger(
        &b.admin_url("/v1/cloudevents"),
        &json!([{"id": "late-1", "request": exchanges[0]["request"], "response": null}]),
    );
    eventually("the orphan expired", Duration::from_secs(5), || async {
        let m = b.metrics().await;
        (prom_value(
            &m,
            "modelwatch_cloudevents_received_total",
            &[("outcome", "expired")],
        ) == Some(1.0))
        .then_some(())
    })
    .await;
    let resp = http()
        .post(b.admin_url("/v1/cloudevents"))
        .header("content-type", "application/json")
        .body("{\"inputs\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "not_a_cloudevent", "{err}");
    let resp = http()
        .post(b.admin_url("/v1/cloudevents"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "x")
        .header("ce-source", "s")
        .header("ce-type", "dev.knative.other")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("org.kubeflow.serving.inference.request"),
        "{err}"
    );

    // Labels that come before their prediction's events wait for them (the
    // join key is the event id) and join when the pair arrives.
    let early: Vec<String> = (0..25)
        .map(|i| {
            json!({"request_id": "early-0", "row": i, "label": y[i], "model": "bc"}).to_string()
        })
        .collect();
    let resp = http()
        .post(b.admin_url("/v1/feedback"))
        .header("content-type", "application/x-ndjson")
        .body(early.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = kserve_logger(
        &b.admin_url("/v1/cloudevents"),
        &json!([{"id": "early-0", "request": exchanges[0]["request"], "response": exchanges[0]["response"]}]),
    );
    assert_eq!(sent["outcomes"]["joined"], 1, "{sent}");
    window(&b, "bc", "1h", n as u64 + 25).await;
}
