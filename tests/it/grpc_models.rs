//! gRPC model traffic decoded, with real servers and official clients: MLServer
//! and the KServe Python server over the Open Inference Protocol's gRPC
//! service, driven by `tritonclient.grpc` (raw binary tensors, gzip) and by
//! MLServer's own generated types (typed contents, ModelStreamInfer), through
//! one modelwatch that fronts both the REST and the gRPC port
//! (`proxy.extra_ports`). Records equal what was sent and answered, labels
//! join by the gRPC request id and the figures equal scikit-learn's, drift on
//! shifted inputs is found, and a version failing half its calls (gRPC status
//! INTERNAL inside HTTP 200s) fails the canary gate.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::figures::count;
use crate::models::{bc_data, drift_of, fixtures, mlserver_serving, model_server, testbed};
use crate::quality::{check_classification, reference, window};

const STREAMING: &str = "mlserver_stream_model.StreamingSKLearnModel";
const CLASSES: [&str; 2] = ["malignant", "benign"];

/// Runs tests/fixtures/grpc_client.py against `target` with `calls`.
fn grpc_client(target: &str, calls: Value) -> Vec<Value> {
    let mut cmd = Command::new(testbed().join("venvs/mlserver/bin/python"));
    cmd.arg(fixtures().join("grpc_client.py"));
    let input = json!({"target": target, "calls": calls});
    let out = stdout_json(run_with_input(&mut cmd, input.to_string().as_bytes()));
    serde_json::from_value(out["results"].clone()).unwrap()
}

/// A modelwatch whose main port fronts `rest` and whose extra port fronts
/// `grpc`; returns it and the extra port's address.
async fn both_ports(rest: String, grpc: u16, config: &str) -> (Modelwatch, String) {
    let port = free_port();
    let mw = Modelwatch::start(Options::new(rest).config(config).env(
        "MODELWATCH_EXTRA_PORTS",
        &format!("127.0.0.1:{port}=http://127.0.0.1:{grpc}"),
    ))
    .await;
    (mw, format!("127.0.0.1:{port}"))
}

fn requests(x: &[Vec<f64>], batch: usize, first: usize, id: impl Fn(usize) -> Value) -> Vec<Value> {
    x.chunks(batch)
        .enumerate()
        .map(|(i, rows)| json!({"rows": rows, "id": id(first + i), "gzip": (first + i) % 2 == 1}))
        .collect()
}

/// A record's feature values, in order.
fn feature_values(r: &Value) -> Vec<f64> {
    r["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[1].as_f64().unwrap())
        .collect()
}

const CONFIG: &str = r#"
admin:
  recent_records: 1000
quality:
  refresh_interval: 100ms
  windows: [1h]
  min_samples: 30
  estimation:
    reference_rows: 100
drift:
  profiles:
    bc: PROFILE
  window: 250
  min_samples: 200
  refresh_interval: 100ms
protocol:
  models:
    - name: bc
      class_names: [malignant, benign]
      label_output: predict
      scores_output: predict_proba
      features: FEATURES
"#;

/// [`CONFIG`] for the breast-cancer rows `x`: features `f0`..`f29`, drift
/// against a profile of rows 0..285, written in `dir`.
pub(crate) fn bc_config(dir: &std::path::Path, x: &[Vec<f64>]) -> String {
    let names: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    let (profile, _) = crate::models::profile_from_rows(dir, &names, &x[..285]);
    CONFIG
        .replace("PROFILE", &profile.display().to_string())
        .replace("FEATURES", &format!("[{}]", names.join(", ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_over_grpc_records_labels_and_drift() {
    let (x, y) = bc_data();
    let n = x.len();
    let dir = tempfile::tempdir().unwrap();
    let config = bc_config(dir.path(), &x);
    let (server, grpc_port) = mlserver_serving(&[("bc", "v1", "bc")], STREAMING).await;
    let (mw, target) = both_ports(server.url(""), grpc_port, &config).await;

    // Rows 0..250: tritonclient, raw tensors, the id in the request's `id`
    // field (no header: the proxy makes one), every other call gzip'd.
    // Rows 250..450: MLServer's types, typed contents, x-request-id metadata.
    // Rows 450..: one ModelStreamInfer stream of 10-row requests, one of them
    // without an id (joined as `<stream's x-request-id>:<position>`).
    let triton = requests(&x[..250], 50, 0, |b| json!(format!("bc-{b}")));
    let typed: Vec<Value> = x[250..450]
        .chunks(50)
        .enumerate()
        .map(|(i, rows)| json!({"rows": rows, "header_id": format!("bc-{}", 5 + i)}))
        .collect();
    let stream = requests(&x[450..], 10, 0, |i| {
        if i == 3 {
            Value::Null
        } else {
            json!(format!("bc-s{i}"))
        }
    });
    // (tritonclient and MLServer's types cannot share a Python process.)
    let mut results = grpc_client(
        &target,
        json!([{"kind": "triton", "model": "bc", "requests": triton}]),
    );
    results.extend(grpc_client(
        &target,
        json!([
            {"kind": "typed", "model": "bc", "requests": typed},
            {"kind": "stream", "model": "bc", "header_id": "stream-1", "requests": stream},
        ]),
    ));
    results.extend(grpc_client(
        &target,
        json!([
            {"kind": "health", "model": "bc"},
            {"kind": "triton", "model": "nope", "requests": [{"rows": &x[..1]}]},
        ]),
    ));

    // The join key of every row, and what the client was answered.
    let mut keys: Vec<(String, usize)> = Vec::new();
    let mut pred: Vec<Value> = Vec::new();
    let mut proba: Vec<Vec<f64>> = Vec::new();
    let mut take = |answers: &Value, key: &dyn Fn(usize) -> String| {
        for (i, a) in answers.as_array().unwrap().iter().enumerate() {
            assert!(a.get("error").is_none(), "{a}");
            for (row, p) in a["predict"].as_array().unwrap().iter().enumerate() {
                keys.push((key(i), row));
                pred.push(json!(CLASSES[p.as_u64().unwrap() as usize]));
                proba.push(serde_json::from_value(a["proba"][row].clone()).unwrap());
            }
        }
    };
    take(&results[0], &|b| format!("bc-{b}"));
    take(&results[1], &|b| format!("bc-{}", 5 + b));
    take(&results[2], &|i| {
        if i == 3 {
            "stream-1:3".into()
        } else {
            format!("bc-s{i}")
        }
    });
    assert_eq!(pred.len(), n);
    // The id the client asked for is the one the answer's metadata carries.
    for (i, a) in results[1].as_array().unwrap().iter().enumerate() {
        assert_eq!(a["x_request_id"], format!("bc-{}", 5 + i), "{a}");
    }
    assert_eq!(results[3][0]["live"], true);
    assert_eq!(results[4][0]["error"], "StatusCode.NOT_FOUND");

    // One record per row, equal to what was sent and answered.
    let records = mw.records(n).await;
    let by_key: HashMap<(String, usize), &Value> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r["request_id"].as_str().unwrap().to_string(),
                    r["row"].as_u64().unwrap() as usize,
                ),
                r,
            )
        })
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let r = by_key
            .get(key)
            .unwrap_or_else(|| panic!("no record {key:?}"));
        assert_eq!(r["protocol"], "open-inference-v2-grpc");
        assert_eq!(r["model"], "bc");
        assert_eq!(r["model_version"], "v1");
        let features = feature_values(r);
        assert_eq!(features, x[i], "row {i}");
        assert_eq!(r["features"][0][0], "f0");
        assert_eq!(r["prediction"], pred[i], "row {i}");
        let scores: Vec<f64> = r["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[1].as_f64().unwrap())
            .collect();
        assert_eq!(scores, proba[i], "scores bit for bit, row {i}");
    }

    // Labels join by the gRPC request ids; the figures equal scikit-learn's.
    let lines: Vec<String> = keys
        .iter()
        .zip(&y)
        .map(|((id, row), label)| {
            json!({"request_id": id, "row": row, "label": label, "model": "bc"}).to_string()
        })
        .collect();
    let resp = http()
        .post(mw.admin_url("/v1/feedback"))
        .header("content-type", "application/x-ndjson")
        .body(lines.join("\n"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let report: Value = resp.json().await.unwrap();
    assert_eq!(
        (status, report["joined"].as_u64()),
        (200, Some(n as u64)),
        "{report}"
    );
    let r = reference(&json!({
        "task": "classification", "classes": CLASSES, "positive": "benign",
        "y_true": y, "y_pred": pred, "proba": proba, "reference_rows": 100, "bins": 200,
    }));
    check_classification(
        &window(&mw, "bc", "1h", n as u64).await,
        &window(&mw, "bc", "total", n as u64).await,
        &r,
    );

    // Health and metadata calls are no decode errors; the unknown model's
    // NOT_FOUND is a failed call (not the server's failure).
    let m = mw.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_inferences_total",
            &[("modelwatch_protocol", "open-inference-v2-grpc")]
        ),
        Some(n as f64),
        "{m}"
    );
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_decode_errors_total",
            &[("reason", "unrecognised")]
        ),
        None,
        "{m}"
    );
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_decode_errors_total",
            &[("reason", "error_response")]
        ),
        Some(1.0),
        "{m}"
    );
    assert!(!m.contains("result=\"error\""), "{m}");

    // Drift: the other half, shifted (even features × 1.15), over gRPC.
    let shifted: Vec<Vec<f64>> = x[285..]
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, v)| if j % 2 == 0 { v * 1.15 } else { *v })
                .collect()
        })
        .collect();
    let calls = json!([{"kind": "triton", "model": "bc", "requests": requests(&shifted, 25, 100, |b| json!(format!("shift-{b}")))}]);
    let results = grpc_client(&target, calls);
    assert!(results[0]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a.get("error").is_none()));
    let m = eventually(
        "shifted features drift",
        Duration::from_secs(30),
        || async {
            let (m, f0) = drift_of(&mw, "bc", "f0").await?;
            (f0["drifted"] == true && f0["window"] == 250).then_some(m)
        },
    )
    .await;
    let drifted: Vec<&str> = m["drifted_features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for (j, name) in (0..30).map(|j| format!("f{j}")).enumerate() {
        if j % 2 == 1 {
            assert!(
                !drifted.contains(&name.as_str()),
                "unshifted {name}: {drifted:?}"
            );
        }
    }
}

/// The unhappy path: v2 answers half its gRPC calls with INTERNAL (a 29-wide
/// input fails in scikit-learn), inside HTTP 200 responses. The failures count
/// under v2, the proxy's duration names the status, and the gate fails v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_failing_half_its_grpc_calls_fails_the_gate() {
    let (x, _) = bc_data();
    let (server, grpc_port) = mlserver_serving(
        &[("bc", "v1", "bc"), ("bc", "v2", "bc")],
        "mlserver_sklearn.SKLearnModel",
    )
    .await;
    let config =
        "rollout:\n  gate:\n    model: bc\n    checks: [error_rate]\n    min_samples: 20\n";
    let (mw, target) = both_ports(server.url(""), grpc_port, config).await;
    let good = requests(&x[..150], 5, 0, |_| Value::Null);
    let bad: Vec<Value> = x[..30]
        .iter()
        .map(|r| json!({"rows": [r[..29].to_vec()]}))
        .collect();
    grpc_client(
        &target,
        json!([
            {"kind": "triton", "model": "bc", "version": "v1", "requests": good},
            {"kind": "triton", "model": "bc", "version": "v2", "requests": good},
        ]),
    );
    let results = grpc_client(
        &target,
        json!([{"kind": "typed", "model": "bc", "version": "v2", "requests": bad}]),
    );
    for a in results[0].as_array().unwrap() {
        assert_eq!(a["error"], "StatusCode.INTERNAL", "{a}");
    }
    let m = eventually("per-version counts", Duration::from_secs(30), || async {
        let m = mw.metrics().await;
        (count(&m, "v2", "error") == Some(30.0)).then_some(m)
    })
    .await;
    assert_eq!(count(&m, "v1", "ok"), Some(30.0), "{m}");
    assert_eq!(count(&m, "v1", "error"), None, "{m}");
    assert_eq!(count(&m, "v2", "ok"), Some(30.0), "{m}");
    assert_eq!(
        prom_value(
            &m,
            "http_server_request_duration_seconds_count",
            &[
                ("http_response_status_code", "200"),
                ("error_type", "INTERNAL")
            ]
        ),
        Some(30.0),
        "{m}"
    );
    let g = mw
        .admin_json("/v1/gate?baseline=v1&candidate=v2&checks=error_rate")
        .await;
    assert_eq!(g["verdict"], "fail", "{g}");
    let resp = http()
        .post(mw.admin_url("/v1/gate"))
        .json(&json!({"name": "bc", "namespace": "models", "phase": "Progressing", "metadata": {"baseline": "v1", "candidate": "v2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 412, "v2 must not be promoted");
    // The diagnosis names the version, from its failed calls, with no labels.
    let d = mw.admin_json("/v1/diagnose?model=bc&version=v2").await["diagnoses"][0].clone();
    assert_eq!(d["verdict"], "model", "{d:#}");
    assert_eq!(d["findings"][0]["kind"], "version", "{d:#}");
    assert!(
        d["findings"][0]["summary"]
            .as_str()
            .unwrap()
            .ends_with("50.0% of its requests failed against v1's 0.0%"),
        "{d:#}"
    );
}

/// The KServe Python model server over gRPC (tritonclient, the request id in
/// an x-request-id header) and over REST, through one modelwatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_python_server_over_grpc_and_rest() {
    let (x, _) = bc_data();
    let tb = testbed();
    let (port, grpc_port) = (free_port(), free_port());
    let mut cmd = Command::new(tb.join("venvs/kserve/bin/python"));
    cmd.arg(fixtures().join("kserve_server.py"))
        .arg(port.to_string())
        .arg(grpc_port.to_string())
        .current_dir(tb.join("models/bc"));
    let _server = model_server(cmd, port, "/v1/models/bc", "kserve").await;
    let config = "admin:\n  recent_records: 50\n";
    let (mw, target) = both_ports(format!("http://127.0.0.1:{port}"), grpc_port, config).await;
    let calls: Vec<Value> = x[..12]
        .chunks(4)
        .enumerate()
        .map(|(i, rows)| json!({"rows": rows, "header_id": format!("ks-{i}")}))
        .collect();
    let results = grpc_client(
        &target,
        json!([{"kind": "triton", "model": "bc", "requests": calls}]),
    );
    let answers = results[0].as_array().unwrap();
    // And one REST call through the main port.
    let rest =
        crate::models::oip_infer(&mw.url("/v2/models/bc/infer"), &x[12..14], Some("ks-rest")).await;

    let records = mw.records(14).await;
    let records = records.as_array().unwrap();
    for (i, a) in answers.iter().enumerate() {
        for (row, p) in a["predict"].as_array().unwrap().iter().enumerate() {
            let r = records
                .iter()
                .find(|r| r["request_id"] == format!("ks-{i}") && r["row"] == row)
                .unwrap_or_else(|| panic!("no record ks-{i} row {row}: {records:?}"));
            assert_eq!(r["protocol"], "open-inference-v2-grpc");
            assert_eq!(r["model"], "bc");
            let features = feature_values(r);
            assert_eq!(features, x[i * 4 + row]);
            assert_eq!(r["prediction"].as_f64(), p.as_f64(), "{r}");
        }
    }
    let rest_records: Vec<&Value> = records
        .iter()
        .filter(|r| r["request_id"] == "ks-rest")
        .collect();
    assert_eq!(rest_records.len(), 2);
    assert_eq!(rest_records[0]["protocol"], "open-inference-v2");
    assert_eq!(
        rest_records[0]["prediction"].as_f64(),
        crate::models::predicted(&rest)[0].as_f64()
    );
}
