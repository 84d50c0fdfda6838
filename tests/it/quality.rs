//! Model quality end to end: real scikit-learn models served by MLServer
//! behind modelwatch, true labels sent to the feedback API, and every figure
//! compared with scikit-learn's on the same rows (tests/fixtures/quality_reference.py).

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::models::{fixtures, mlserver, testbed};

/// Equal to 1e-9 (absolute; every figure compared is of order 1 or an error
/// in the label's unit, where 1e-9 is far below any meaningful difference).
const TOL: f64 = 1e-9;

struct Dataset {
    name: &'static str,
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
}

/// scikit-learn's `load_{loader}` data, served as model `name`.
fn dataset(name: &'static str, loader: &str) -> Dataset {
    let out = Command::new(testbed().join("venvs/mlserver/bin/python"))
        .arg(fixtures().join("quality_data.py"))
        .arg(loader)
        .output()
        .unwrap();
    let v = stdout_json(out);
    Dataset {
        name,
        x: serde_json::from_value(v["X"].clone()).unwrap(),
        y: serde_json::from_value(v["y"].clone()).unwrap(),
    }
}

pub(crate) fn reference(input: &Value) -> Value {
    let mut cmd = Command::new(testbed().join("venvs/mlserver/bin/python"));
    cmd.arg(fixtures().join("quality_reference.py"));
    stdout_json(run_with_input(&mut cmd, input.to_string().as_bytes()))
}

const CONFIG: &str = r#"
quality:
  refresh_interval: 100ms
  windows: [1h]
  min_samples: 30
  estimation:
    reference_rows: 100
protocol:
  models:
    - name: bc
      class_names: [malignant, benign]
      label_output: predict
      scores_output: predict_proba
    - name: iris
      class_names: [setosa, versicolor, virginica]
      label_output: predict
      scores_output: predict_proba
    - name: diabetes
      task: regression
"#;

/// What the model answered for each row, as the client saw it.
#[derive(Default)]
struct Answers {
    pred: Vec<Value>,
    proba: Vec<Vec<f64>>,
}

/// Sends the data set through modelwatch in batches of 50 rows; request ids
/// are `{name}-{batch}`, rows are the row within the batch.
async fn predict(mw: &Modelwatch, d: &Dataset, classes: &[&str]) -> Answers {
    let mut answers = Answers::default();
    for (b, chunk) in d.x.chunks(50).enumerate() {
        let flat: Vec<f64> = chunk.iter().flatten().copied().collect();
        let mut outputs = vec![json!({"name": "predict"})];
        if !classes.is_empty() {
            outputs.push(json!({"name": "predict_proba"}));
        }
        let req = json!({
            "inputs": [{"name": "input-0", "shape": [chunk.len(), chunk[0].len()], "datatype": "FP64", "data": flat}],
            "outputs": outputs,
        });
        let resp: Value = http()
            .post(mw.url(&format!("/v2/models/{}/infer", d.name)))
            .header("x-request-id", format!("{}-{b}", d.name))
            .json(&req)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let outs = resp["outputs"].as_array().expect("outputs");
        let predict = outs.iter().find(|o| o["name"] == "predict").unwrap();
        for v in predict["data"].as_array().unwrap() {
            answers.pred.push(if classes.is_empty() {
                v.clone()
            } else {
                json!(classes[v.as_f64().unwrap() as usize])
            });
        }
        if let Some(p) = outs.iter().find(|o| o["name"] == "predict_proba") {
            let data: Vec<f64> = serde_json::from_value(p["data"].clone()).unwrap();
            answers
                .proba
                .extend(data.chunks(classes.len()).map(|c| c.to_vec()));
        }
    }
    assert_eq!(answers.pred.len(), d.y.len());
    answers
}

async fn quality(mw: &Modelwatch) -> Value {
    mw.admin_json("/v1/quality").await
}

/// Waits until `n` predictions are stored.
async fn stored(mw: &Modelwatch, n: u64) {
    eventually("predictions stored", Duration::from_secs(30), || async {
        let q = quality(mw).await;
        (q["stored"].as_u64() == Some(n)).then_some(())
    })
    .await;
}

/// The figures of one model's window once `labelled` rows are in it.
pub(crate) async fn window(mw: &Modelwatch, model: &str, window: &str, labelled: u64) -> Value {
    eventually("quality figures", Duration::from_secs(30), || async {
        let q = quality(mw).await;
        let m = q["models"]
            .as_array()?
            .iter()
            .find(|m| m["model"] == model)?
            .clone();
        let w = m["windows"]
            .as_array()?
            .iter()
            .find(|w| w["window"] == window)?
            .clone();
        (w["labelled"].as_u64() == Some(labelled)).then_some(w)
    })
    .await
}

async fn feedback(mw: &Modelwatch, body: String, ndjson: bool) -> (u16, Value) {
    let resp = http()
        .post(mw.admin_url("/v1/feedback"))
        .header(
            "content-type",
            if ndjson {
                "application/x-ndjson"
            } else {
                "application/json"
            },
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Labels for rows `range` of a data set (label written by `label`).
fn label_items(
    d: &Dataset,
    range: std::ops::Range<usize>,
    label: impl Fn(f64) -> Value,
) -> Vec<Value> {
    range
        .map(|i| {
            json!({"request_id": format!("{}-{}", d.name, i / 50), "row": i % 50, "label": label(d.y[i]), "model": d.name})
        })
        .collect()
}

fn close(what: &str, got: &Value, want: &Value) {
    let (g, w) = (got.as_f64(), want.as_f64());
    match (g, w) {
        (Some(g), Some(w)) => assert!(
            (g - w).abs() <= TOL,
            "{what}: modelwatch {g}, scikit-learn {w}"
        ),
        _ => panic!("{what}: modelwatch {got}, scikit-learn {want}"),
    }
}

fn check_prf(what: &str, got: &Value, want: &Value) {
    for k in ["precision", "recall", "f1"] {
        close(&format!("{what} {k}"), &got[k], &want[k]);
    }
}

pub(crate) fn check_classification(w: &Value, total: &Value, r: &Value) {
    check_realized(w, total, r);
    // CBPE.
    let e = &w["estimated"];
    close(
        "estimated accuracy",
        &e["accuracy"],
        &r["estimated"]["accuracy"],
    );
    check_prf("estimated macro", &e["macro_avg"], &r["estimated"]["macro"]);
    if r["estimated"].get("binary").is_some() {
        check_prf("estimated binary", &e["binary"], &r["estimated"]["binary"]);
    }
    close("estimation gap", &e["gap"], &r["estimated"]["gap"]);
}

/// Every figure computed from labels (not the estimate), of a window and the
/// `total` window over the same rows, against scikit-learn's.
pub(crate) fn check_realized(w: &Value, total: &Value, r: &Value) {
    close("accuracy", &w["accuracy"], &r["accuracy"]);
    for c in w["classes"].as_array().unwrap() {
        let name = c["class"].as_str().unwrap();
        check_prf(&format!("class {name}"), c, &r["classes"][name]);
        assert_eq!(
            c["support"].as_f64(),
            r["classes"][name]["support"].as_f64()
        );
    }
    assert_eq!(
        w["classes"].as_array().unwrap().len(),
        r["classes"].as_object().unwrap().len()
    );
    check_prf("macro", &w["macro_avg"], &r["macro"]);
    check_prf("weighted", &w["weighted_avg"], &r["weighted"]);
    if r.get("binary").is_some() {
        assert_eq!(w["binary"]["class"], r["binary"]["class"]);
        check_prf("binary", &w["binary"], &r["binary"]);
    }
    close("roc_auc", &w["roc_auc"], &r["roc_auc"]);
    close("log_loss", &w["log_loss"], &r["log_loss"]);
    // Exact counts, cell by cell.
    let mut cells = serde_json::Map::new();
    for c in w["confusion"].as_array().unwrap() {
        cells.insert(
            format!(
                "{}|{}",
                c["actual"].as_str().unwrap(),
                c["predicted"].as_str().unwrap()
            ),
            c["count"].clone(),
        );
    }
    assert_eq!(Value::Object(cells), r["confusion"]);
    // The total window: the same rows; its AUC comes from 200-bin histograms,
    // equal to scikit-learn's AUC of the binned scores.
    close("total accuracy", &total["accuracy"], &r["accuracy"]);
    check_prf("total macro", &total["macro_avg"], &r["macro"]);
    close("total log_loss", &total["log_loss"], &r["log_loss"]);
    close(
        "total roc_auc (binned)",
        &total["roc_auc"],
        &r["roc_auc_binned"],
    );
}

/// The whole path on three real models, with a restart between predictions
/// and (half of the) labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_match_scikit_learn_across_a_restart() {
    let server = mlserver(&["bc", "iris", "diabetes"]).await;
    let store = tempfile::tempdir().unwrap();
    let config = CONFIG.replace(
        "quality:\n",
        &format!(
            "quality:\n  store_path: {}\n",
            store.path().join("q.redb").display()
        ),
    );
    let mut mw = Modelwatch::start(Options::new(server.url("")).config(&config)).await;

    let bc = dataset("bc", "breast_cancer");
    let iris = dataset("iris", "iris");
    let diabetes = dataset("diabetes", "diabetes");
    let bc_classes = ["malignant", "benign"];
    let iris_classes = ["setosa", "versicolor", "virginica"];
    let bc_ans = predict(&mw, &bc, &bc_classes).await;
    let iris_ans = predict(&mw, &iris, &iris_classes).await;
    let diabetes_ans = predict(&mw, &diabetes, &[]).await;
    let n = (bc.y.len() + iris.y.len() + diabetes.y.len()) as u64;
    stored(&mw, n).await;

    // Breast cancer: class indexes (through class_names), batch form; half now.
    let half = bc.y.len() / 2;
    let items = label_items(&bc, 0..half, |y| json!(y as i64));
    let (status, report) = feedback(&mw, json!({ "items": items }).to_string(), false).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["joined"], half);
    // Iris: class names, NDJSON; all of it.
    let lines: Vec<String> =
        label_items(&iris, 0..iris.y.len(), |y| json!(iris_classes[y as usize]))
            .iter()
            .map(Value::to_string)
            .collect();
    let (status, report) = feedback(&mw, lines.join("\n"), true).await;
    assert_eq!(
        (status, report["joined"].as_u64()),
        (200, Some(150)),
        "{report}"
    );

    // Restart between predictions and the other labels.
    assert!(mw.terminate().success());
    let mw = Modelwatch::start(Options::new(server.url("")).config(&config)).await;
    let q = quality(&mw).await;
    assert_eq!(q["stored"], n, "{q}");
    assert_eq!(q["pending"], n - half as u64 - 150);

    let items = label_items(&bc, half..bc.y.len(), |y| json!(y as i64));
    let (status, report) = feedback(&mw, json!({ "items": items }).to_string(), false).await;
    assert_eq!(
        (status, report["joined"].as_u64()),
        (200, Some((bc.y.len() - half) as u64)),
        "{report}"
    );
    let items = label_items(&diabetes, 0..diabetes.y.len(), |y| json!(y));
    let (status, report) = feedback(&mw, json!({ "items": items }).to_string(), false).await;
    assert_eq!(
        (status, report["joined"].as_u64()),
        (200, Some(442)),
        "{report}"
    );

    let q = quality(&mw).await;
    for m in q["models"].as_array().unwrap() {
        assert_eq!(m["model_version"], "v1", "{m}");
    }
    // Binary classifier.
    let r = reference(&json!({
        "task": "classification", "classes": bc_classes, "positive": "benign",
        "y_true": bc.y.iter().map(|y| bc_classes[*y as usize]).collect::<Vec<_>>(),
        "y_pred": bc_ans.pred, "proba": bc_ans.proba, "reference_rows": 100, "bins": 200,
    }));
    let bc_w = window(&mw, "bc", "1h", bc.y.len() as u64).await;
    let total = window(&mw, "bc", "total", bc.y.len() as u64).await;
    check_classification(&bc_w, &total, &r);

    // Three classes.
    let r = reference(&json!({
        "task": "classification", "classes": iris_classes, "positive": null,
        "y_true": iris.y.iter().map(|y| iris_classes[*y as usize]).collect::<Vec<_>>(),
        "y_pred": iris_ans.pred, "proba": iris_ans.proba, "reference_rows": 100, "bins": 200,
    }));
    let w = window(&mw, "iris", "1h", 150).await;
    let total = window(&mw, "iris", "total", 150).await;
    assert!(
        w["accuracy"].as_f64().unwrap() < 1.0,
        "a model with errors: {w}"
    );
    check_classification(&w, &total, &r);

    // Regression.
    let r = reference(
        &json!({"task": "regression", "y_true": diabetes.y, "y_pred": diabetes_ans.pred}),
    );
    for window_name in ["1h", "total"] {
        let w = window(&mw, "diabetes", window_name, 442).await;
        for k in ["mae", "rmse", "mape", "r2"] {
            close(&format!("{window_name} {k}"), &w["regression"][k], &r[k]);
        }
    }

    // The same figures on the Prometheus endpoint, per model version.
    let m = mw.metrics().await;
    let labels = [("model", "bc"), ("model_version", "v1"), ("window", "1h")];
    let acc = prom_value(&m, "modelwatch_quality_accuracy_ratio", &labels).unwrap();
    close("exported accuracy", &json!(acc), &bc_w["accuracy"]);
    let cells: f64 = ["malignant", "benign"]
        .iter()
        .flat_map(|a| ["malignant", "benign"].map(move |p| (*a, p)))
        .filter_map(|(a, p)| {
            prom_value(
                &m,
                "modelwatch_quality_confusion_total",
                &[
                    ("model", "bc"),
                    ("model_version", "v1"),
                    ("actual", a),
                    ("predicted", p),
                ],
            )
        })
        .sum();
    // Counters count what this process joined (they restart at zero with the
    // process, as Prometheus counters do; `increase()` spans the restart).
    assert_eq!(
        cells,
        (bc.y.len() - half) as f64,
        "confusion counters add up to the rows labelled since the restart"
    );
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_quality_samples",
            &[("model", "iris"), ("window", "total")]
        ),
        Some(150.0)
    );
    assert!(prom_value(
        &m,
        "modelwatch_quality_rmse",
        &[("model", "diabetes"), ("window", "1h")]
    )
    .is_some());
    assert!(prom_value(
        &m,
        "modelwatch_quality_estimated_accuracy_ratio",
        &[("model", "bc"), ("window", "1h")]
    )
    .is_some());
}

/// One classifier request through modelwatch to the demo model server;
/// returns the predicted class index.
async fn classify(mw: &Modelwatch, request_id: &str, body_id: Option<&str>) -> i64 {
    let mut req = json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    if let Some(id) = body_id {
        req["id"] = json!(id);
    }
    let resp: Value = http()
        .post(mw.url("/v2/models/demo-classifier/infer"))
        .header("x-request-id", request_id)
        .json(&req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["outputs"][0]["data"][0].as_i64().unwrap()
}

async fn post(mw: &Modelwatch, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = http()
        .post(mw.admin_url("/v1/feedback"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

const TOKEN: &str = "s3cret-feedback-token";

/// Labels that come first wait for their prediction: sent for request ids
/// the client chose before its requests, and right after each response (the
/// prediction still on its way to the store). Each joins once; one whose
/// prediction never comes expires and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_before_their_predictions_wait_and_join() {
    let upstream = modelwatch::demo::model_server::start().await.unwrap();
    let config = "quality:\n  refresh_interval: 100ms\n  min_samples: 1\n  early_label_ttl: 4s\n";
    let mw = Modelwatch::start(Options::new(format!("http://{upstream}")).config(config)).await;
    // Labels first, for ids the client will use.
    let items: Vec<Value> = (0..10)
        .map(|i| json!({"request_id": format!("early-{i}"), "label": 0}))
        .chain([json!({"request_id": "never-sent", "label": 0})])
        .collect();
    let (status, body) = post(&mw, &json!({ "items": items }).to_string(), None).await;
    assert_eq!(
        (status, body["waiting"].as_u64(), body["joined"].as_u64()),
        (200, Some(11), Some(0)),
        "{body}"
    );
    let (status, body) = post(&mw, r#"{"request_id": "early-0", "label": 1}"#, None).await;
    assert_eq!(
        (status, body["errors"][0]["reason"].as_str()),
        (409, Some("duplicate")),
        "a second label for a waiting id: {body}"
    );
    let mut predicted = Vec::new();
    for i in 0..10 {
        predicted.push(classify(&mw, &format!("early-{i}"), None).await);
    }
    // Then each label right after its response: joined now or on arrival.
    for i in 0..20 {
        let id = format!("late-{i}");
        let p = classify(&mw, &id, None).await;
        let (status, body) = post(
            &mw,
            &json!({"request_id": id, "label": p}).to_string(),
            None,
        )
        .await;
        assert!(status == 200 || status == 202, "{status} {body}");
    }
    let w = window(&mw, "demo-classifier", "1h", 30).await;
    let right = predicted.iter().filter(|p| **p == 0).count() + 20;
    assert_eq!(w["accuracy"].as_f64(), Some(right as f64 / 30.0), "{w}");
    // The label without a prediction expires.
    eventually(
        "the early label expired",
        Duration::from_secs(20),
        || async {
            let m = mw.metrics().await;
            let expired = prom_value(
                &m,
                "modelwatch_quality_early_labels_done_total",
                &[("result", "expired")],
            );
            (expired == Some(1.0)
                && prom_value(&m, "modelwatch_quality_early_labels", &[]) == Some(0.0))
            .then_some(m)
        },
    )
    .await;
    let m = mw.metrics().await;
    let joined_early = prom_value(
        &m,
        "modelwatch_quality_early_labels_done_total",
        &[("result", "joined")],
    )
    .unwrap();
    assert!(joined_early >= 10.0, "{joined_early}");
    let q = quality(&mw).await;
    assert_eq!(
        (q["stored"].as_u64(), q["pending"].as_u64()),
        (Some(30), Some(0)),
        "{q}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_labels_get_reasons_and_the_store_stays_bounded() {
    let upstream = modelwatch::demo::model_server::start().await.unwrap();
    let config = format!(
        "quality:\n  refresh_interval: 100ms\n  max_predictions: 20\n  max_early_labels: 2\n  max_feedback_bytes: 1000000\n  min_samples: 5\n  feedback_token: {TOKEN}\n"
    );
    let mw = Modelwatch::start(Options::new(format!("http://{upstream}")).config(&config)).await;
    let ok_label = r#"{"request_id": "q-25", "label": 0}"#;

    // The token.
    let (status, body) = post(&mw, ok_label, None).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = post(&mw, ok_label, Some("wrong-token-wrong-token")).await;
    assert_eq!(status, 401);

    // 30 predictions into a store bounded at 20: the 10 oldest are evicted.
    let mut predicted = Vec::new();
    for i in 0..30 {
        predicted.push(classify(&mw, &format!("q-{i}"), None).await);
    }
    // (The store holds 20 as soon as 20 arrived: wait for all 30 to be handled.)
    eventually("the 10 oldest evicted", Duration::from_secs(30), || async {
        let m = mw.metrics().await;
        let evicted = prom_value(
            &m,
            "modelwatch_quality_pending_removed_total",
            &[("reason", "evicted")],
        );
        let pending = prom_value(&m, "modelwatch_quality_pending", &[]);
        (evicted == Some(10.0) && pending == Some(20.0)).then_some(())
    })
    .await;
    stored(&mw, 20).await;

    // Single labels: joined, duplicate, waiting (its prediction was evicted:
    // it may yet come), wrong types.
    let (status, body) = post(&mw, ok_label, Some(TOKEN)).await;
    assert_eq!((status, body["joined"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = post(&mw, ok_label, Some(TOKEN)).await;
    assert_eq!(
        (status, body["errors"][0]["reason"].as_str()),
        (409, Some("duplicate")),
        "{body}"
    );
    let (status, body) = post(&mw, r#"{"request_id": "q-0", "label": 0}"#, Some(TOKEN)).await;
    assert_eq!((status, body["waiting"].as_u64()), (202, Some(1)), "{body}");
    for bad in [
        r#"{"request_id": "q-26", "label": ["a"]}"#,
        r#"{"request_id": "q-26", "label": 2.5}"#,
        r#"{"request_id": "q-26"}"#,
        r#"{"request_id": "q-26", "label": 1, "model": "another-model"}"#,
        r#"{"request_id": "q-26", "label": 1, "timestamp": "last tuesday"}"#,
    ] {
        let (status, body) = post(&mw, bad, Some(TOKEN)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["invalid"], 1, "{bad}: {body}");
        assert!(body["errors"][0]["message"].as_str().is_some());
    }
    // A body that is not JSON at all, and one too large.
    let (status, body) = post(&mw, "{not json", Some(TOKEN)).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("invalid_body"))
    );
    let huge = format!(r#"{{"items": [{}]}}"#, vec![ok_label; 40_000].join(","));
    let (status, body) = post(&mw, &huge, Some(TOKEN)).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (413, Some("too_large"))
    );
    let resp = http()
        .get(mw.admin_url("/v1/feedback"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    // A batch with a bit of everything; the right ones still join.
    let batch = json!({"items": [
        {"request_id": "q-27", "label": predicted[27]},
        {"request_id": "q-28", "label": predicted[28], "timestamp": "2030-01-01T00:00:00Z"},
        {"request_id": "q-27", "label": 1},
        {"request_id": "never-seen", "label": 1},
        {"request_id": "q-29", "label": {"class": 1}},
        "not an object",
    ]});
    let (status, body) = post(&mw, &batch.to_string(), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["received"].as_u64(),
            body["joined"].as_u64(),
            body["duplicate"].as_u64(),
            body["waiting"].as_u64(),
            body["invalid"].as_u64()
        ),
        (Some(6), Some(2), Some(1), Some(1), Some(2)),
        "{body}"
    );
    let reasons: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["duplicate", "wrong_label_type", "not_an_object"]);

    // Too few labels for figures: a count, no value (not 0, not NaN).
    let w = window(&mw, "demo-classifier", "1h", 3).await;
    assert_eq!(w["enough_labels"], false);
    assert!(w.get("accuracy").is_none(), "{w}");
    let m = mw.metrics().await;
    assert_eq!(
        prom_value(&m, "modelwatch_quality_samples", &[("window", "1h")]),
        Some(3.0)
    );
    assert!(
        !m.contains("modelwatch_quality_accuracy_ratio{"),
        "no accuracy below min_samples"
    );

    // A flood of labels for unknown ids: quality.max_early_labels (2) wait
    // already, so all are unmatched, the store does not grow, the answer
    // lists the first 100.
    let flood: Vec<String> = (0..5000)
        .map(|i| json!({"request_id": format!("flood-{i}"), "label": 1}).to_string())
        .collect();
    let resp = http()
        .post(mw.admin_url("/v1/feedback"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(flood.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["unmatched"].as_u64(), body["joined"].as_u64()),
        (Some(5000), Some(0))
    );
    assert_eq!(body["errors"].as_array().unwrap().len(), 100);
    assert_eq!(body["errors_truncated"], true);
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    assert_eq!(quality(&mw).await["stored"], 20);

    // Five labels: now there are figures.
    for i in [20, 21] {
        let (status, _) = post(
            &mw,
            &json!({"request_id": format!("q-{i}"), "label": predicted[i]}).to_string(),
            Some(TOKEN),
        )
        .await;
        assert_eq!(status, 200);
    }
    let w = window(&mw, "demo-classifier", "1h", 5).await;
    // q-25 was labelled 0; the others with what the model predicted.
    let correct = 4 + (predicted[25] == 0) as u64;
    close("accuracy", &w["accuracy"], &json!(correct as f64 / 5.0));
    // The calibration reference can be reset (token required, like feedback).
    let reset = |body: Value, token: Option<&'static str>| {
        let mut req = http()
            .post(mw.admin_url("/v1/quality/reference/reset"))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let known = json!({"model": "demo-classifier", "model_version": "1"});
    assert_eq!(reset(known.clone(), None).await, 401);
    assert_eq!(reset(known, Some(TOKEN)).await, 200);
    assert_eq!(reset(json!({"model": "nope"}), Some(TOKEN)).await, 404);
    assert_eq!(reset(json!({"version": 1}), Some(TOKEN)).await, 400);
    let m = mw.metrics().await;
    for (result, n) in [
        ("joined", 5.0),
        ("duplicate", 2.0),
        ("waiting", 2.0),
        ("unmatched", 5000.0),
        ("invalid", 7.0),
    ] {
        assert_eq!(
            prom_value(
                &m,
                "modelwatch_quality_feedback_items_total",
                &[("result", result)]
            ),
            Some(n),
            "{result}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_join_by_the_response_body_id() {
    let upstream = modelwatch::demo::model_server::start().await.unwrap();
    let config = "quality:\n  join_key: response-id\n  early_label_ttl: 0s\n";
    let mw = Modelwatch::start(Options::new(format!("http://{upstream}")).config(config)).await;
    classify(&mw, "header-id-1", Some("body-id-1")).await;
    stored(&mw, 1).await;
    let (status, body) = post(&mw, r#"{"request_id": "header-id-1", "label": 0}"#, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(&mw, r#"{"request_id": "body-id-1", "label": 0}"#, None).await;
    assert_eq!(status, 200, "{body}");
}

/// The figures reach a real Prometheus (scrape) and VictoriaMetrics (OTLP),
/// labelled with model and version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_figures_reach_prometheus_and_otlp() {
    let upstream = modelwatch::demo::model_server::start().await.unwrap();
    let vm = victoria_metrics_on(free_port()).await;
    let config = format!(
        "quality:\n  refresh_interval: 100ms\n  min_samples: 4\ntelemetry:\n  otlp:\n    endpoint: {}\n    metrics_interval: 1s\n    traces: false\n",
        vm.url("/opentelemetry")
    );
    let mw = Modelwatch::start(Options::new(format!("http://{upstream}")).config(&config)).await;
    let prom = prometheus(&[mw.admin]).await;
    let mut items = Vec::new();
    for i in 0..8 {
        let p = classify(&mw, &format!("e-{i}"), None).await;
        // Six right, two wrong: accuracy 0.75.
        items.push(
            json!({"request_id": format!("e-{i}"), "label": if i < 6 { p } else { (p + 1) % 3 }}),
        );
    }
    stored(&mw, 8).await;
    let (status, _) = post(&mw, &json!({ "items": items }).to_string(), None).await;
    assert_eq!(status, 200);
    let q = r#"modelwatch_quality_accuracy_ratio{model="demo-classifier",model_version="1",window="1h"}"#;
    let v = eventually(
        "accuracy in Prometheus",
        Duration::from_secs(30),
        || async { promql(&prom.url(""), q).await },
    )
    .await;
    assert_eq!(v, 0.75);
    let v = eventually(
        "accuracy in VictoriaMetrics over OTLP",
        Duration::from_secs(30),
        || async {
            let _ = http().post(vm.url("/internal/force_flush")).send().await;
            promql(&vm.url(""), q).await
        },
    )
    .await;
    assert_eq!(v, 0.75);
    let cells =
        r#"sum(modelwatch_quality_confusion_total{model="demo-classifier",model_version="1"})"#;
    let v = eventually(
        "confusion counters in VictoriaMetrics",
        Duration::from_secs(30),
        || async {
            let _ = http().post(vm.url("/internal/force_flush")).send().await;
            promql(&vm.url(""), cells).await.filter(|v| *v == 8.0)
        },
    )
    .await;
    assert_eq!(v, 8.0);
}

/// An LLM used as a classifier (`task: classification`): the generated text is
/// the predicted class, joined by the OpenAI response `id`. Other LLM traffic
/// is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_classifier_is_joined_by_the_openai_response_id() {
    let upstream = modelwatch::demo::model_server::start().await.unwrap();
    let config = "quality:\n  join_key: response-id\n  early_label_ttl: 0s\n  min_samples: 1\n  refresh_interval: 100ms\nprotocol:\n  models:\n    - name: demo-llm\n      task: classification\n";
    let mw = Modelwatch::start(Options::new(format!("http://{upstream}")).config(config)).await;
    let mut ids = Vec::new();
    for model in ["demo-llm", "demo-llm", "some-chat-model"] {
        let resp: Value = http()
            .post(mw.url("/v1/chat/completions"))
            .json(&json!({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "classify this"}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(resp["choices"][0]["message"]["content"], "The model");
        ids.push(resp["id"].as_str().unwrap().to_string());
    }
    stored(&mw, 2).await;
    let batch = json!({"items": [
        {"request_id": ids[0], "label": "The model"},
        {"request_id": ids[1], "label": "Another class"},
        {"request_id": ids[2], "label": "The model"},
    ]});
    let (status, body) = post(&mw, &batch.to_string(), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["joined"].as_u64(), body["unmatched"].as_u64()),
        (Some(2), Some(1)),
        "{body}"
    );
    let w = window(&mw, "demo-llm", "1h", 2).await;
    assert_eq!(w["accuracy"], 0.5);
}

/// Acknowledged means durable: a label back-fill in batches of 25 while
/// traffic flows, SIGKILL right after an answer (and with the next call in
/// flight), a restart on the same store. Every label that was answered
/// `joined` is still joined (sent again: `duplicate`, never joined a second
/// time); every prediction older than `quality.sync_interval` is still there
/// (its label joins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_answered_joined_survive_sigkill() {
    let server = mlserver(&["bc"]).await;
    let store = tempfile::tempdir().unwrap();
    let config = format!(
        "quality:\n  store_path: {}\n  sync_interval: 1s\nprotocol:\n  models:\n    - name: bc\n      class_names: [malignant, benign]\n      label_output: predict\n      scores_output: predict_proba\n",
        store.path().join("q.redb").display()
    );
    let mut mw = Modelwatch::start(Options::new(server.url("")).config(&config)).await;
    let bc = dataset("bc", "breast_cancer");
    let rows = 400;
    let data = Dataset {
        name: "bc",
        x: bc.x[..rows].to_vec(),
        y: bc.y[..rows].to_vec(),
    };
    predict(&mw, &data, &["malignant", "benign"]).await;
    stored(&mw, rows as u64).await;
    // The documented loss window of predictions: one sync_interval.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Traffic goes on during the back-fill (other request ids).
    let traffic = {
        let url = mw.url("/v2/models/bc/infer");
        let x = bc.x[rows..rows + 50].to_vec();
        tokio::spawn(async move {
            for i in 0..200 {
                let body = json!({"inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": x[i % 50]}]});
                if http().post(&url).json(&body).send().await.is_err() {
                    return;
                }
            }
        })
    };
    let batch = 25;
    let acknowledged = 8;
    for b in 0..acknowledged {
        let items = label_items(&data, b * batch..(b + 1) * batch, |y| json!(y as i64));
        let (status, report) = feedback(&mw, json!({ "items": items }).to_string(), false).await;
        assert_eq!(
            (status, report["joined"].as_u64()),
            (200, Some(batch as u64)),
            "{report}"
        );
    }
    // The next call is on its way when the process is killed.
    let in_flight = {
        let items = label_items(
            &data,
            acknowledged * batch..(acknowledged + 1) * batch,
            |y| json!(y as i64),
        );
        let url = mw.admin_url("/v1/feedback");
        tokio::spawn(async move {
            http()
                .post(url)
                .json(&json!({ "items": items }))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut child = mw.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _ = in_flight.await;
    traffic.abort();

    let mw = Modelwatch::start(Options::new(server.url("")).config(&config)).await;
    let q = quality(&mw).await;
    assert!(
        q["stored"].as_u64().unwrap() >= rows as u64,
        "predictions lost: {q}"
    );
    // Every acknowledged label is still there.
    let items = label_items(&data, 0..acknowledged * batch, |y| json!(y as i64));
    let (status, report) = feedback(&mw, json!({ "items": items }).to_string(), false).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["joined"].as_u64(), report["duplicate"].as_u64()),
        (Some(0), Some((acknowledged * batch) as u64)),
        "labels answered `joined` before the kill were lost: {report}"
    );
    // The one in flight: either committed or not, never half.
    let items = label_items(
        &data,
        acknowledged * batch..(acknowledged + 1) * batch,
        |y| json!(y as i64),
    );
    let (_, report) = feedback(&mw, json!({ "items": items }).to_string(), false).await;
    let (j, d) = (
        report["joined"].as_u64().unwrap(),
        report["duplicate"].as_u64().unwrap(),
    );
    assert!(j + d == batch as u64 && (j == 0 || d == 0), "{report}");
    // Predictions older than sync_interval: every remaining label joins.
    let items = label_items(&data, (acknowledged + 1) * batch..rows, |y| json!(y as i64));
    let (_, report) = feedback(&mw, json!({ "items": items }).to_string(), false).await;
    assert_eq!(
        report["joined"].as_u64(),
        Some((rows - (acknowledged + 1) * batch) as u64),
        "{report}"
    );
}
