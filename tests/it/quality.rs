//! Model quality end to end: real scikit-learn models served by MLServer
//! behind modelwatch, true labels sent to the feedback API, and every figure
//! compared with scikit-learn's on the same rows (tests/fixtures/quality_reference.py).

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::models::{fixtures, model_server, testbed};

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

fn reference(input: &Value) -> Value {
    use std::io::Write;
    let mut child = Command::new(testbed().join("venvs/mlserver/bin/python"))
        .arg(fixtures().join("quality_reference.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    stdout_json(child.wait_with_output().unwrap())
}

/// MLServer serving the testbed's scikit-learn models, each as version v1.
async fn mlserver(models: &[&str]) -> Service {
    let tb = testbed();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.json"),
        format!(
            r#"{{"host":"127.0.0.1","http_port":{port},"grpc_port":{},"metrics_port":{},"parallel_workers":0}}"#,
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    for m in models {
        let model_dir = dir.path().join(m);
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::write(
            model_dir.join("model-settings.json"),
            format!(
                r#"{{"name":"{m}","implementation":"mlserver_sklearn.SKLearnModel","parameters":{{"uri":"{}","version":"v1"}}}}"#,
                tb.join(format!("models/{m}/model.joblib")).display()
            ),
        )
        .unwrap();
    }
    let mut cmd = Command::new(tb.join("venvs/mlserver/bin/mlserver"));
    cmd.arg("start").arg(dir.path());
    let mut svc = model_server(
        cmd,
        port,
        &format!("/v2/models/{}/ready", models[0]),
        "mlserver",
    )
    .await;
    for m in &models[1..] {
        wait_ok(
            &svc.url(&format!("/v2/models/{m}/ready")),
            "mlserver model",
            Duration::from_secs(60),
        )
        .await;
    }
    // Keep the settings folder as long as the server runs.
    svc.dir = dir;
    svc
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
    http()
        .get(mw.admin_url("/v1/quality"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
async fn window(mw: &Modelwatch, model: &str, window: &str, labelled: u64) -> Value {
    eventually("quality figures", Duration::from_secs(30), || async {
        let q = quality(mw).await;
        let m = q["models"]
            .as_array()?
            .iter()
            .find(|m| m["model"] == model)?
            .clone();
        assert_eq!(m["model_version"], "v1");
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

fn check_classification(w: &Value, total: &Value, r: &Value) {
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
