//! Real model servers behind modelwatch (see scripts/testbed.sh): llama.cpp's
//! llama-server driven by the official openai Python client, MLServer serving
//! a scikit-learn model over the Open Inference Protocol, and KServe's
//! ModelServer over its V1 protocol.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

pub fn testbed() -> PathBuf {
    // .testbed/root/usr/bin/prometheus -> .testbed
    testbed_bin("prometheus")
        .ancestors()
        .nth(4)
        .unwrap()
        .to_path_buf()
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A model server child process, waited for on `ready_path`.
pub async fn model_server(mut cmd: Command, port: u16, ready_path: &str, what: &str) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let svc = Service { child, port, dir };
    wait_ok(&svc.url(ready_path), what, Duration::from_secs(90)).await;
    svc
}

/// MLServer serving the testbed's scikit-learn models, each as version v1.
pub async fn mlserver(models: &[&str]) -> Service {
    let served: Vec<(&str, &str, &str)> = models.iter().map(|m| (*m, "v1", *m)).collect();
    mlserver_versions(&served).await
}

/// MLServer serving `(name, version, trained model folder)` triples: one
/// name may be served in several versions (`/v2/models/NAME/versions/V/infer`).
pub async fn mlserver_versions(served: &[(&str, &str, &str)]) -> Service {
    mlserver_serving(served, "mlserver_sklearn.SKLearnModel")
        .await
        .0
}

/// MLServer serving `(name, version, trained model folder)` triples with
/// `implementation` (a runtime from tests/fixtures may be named: they are on
/// its Python path); returns the server and its gRPC port.
pub async fn mlserver_serving(
    served: &[(&str, &str, &str)],
    implementation: &str,
) -> (Service, u16) {
    let tb = testbed();
    let port = free_port();
    let grpc_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.json"),
        format!(
            r#"{{"host":"127.0.0.1","http_port":{port},"grpc_port":{grpc_port},"metrics_port":{},"parallel_workers":0}}"#,
            free_port()
        ),
    )
    .unwrap();
    for (name, version, trained) in served {
        let model_dir = dir.path().join(format!("{name}-{version}"));
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::write(
            model_dir.join("model-settings.json"),
            format!(
                r#"{{"name":"{name}","implementation":"{implementation}","parameters":{{"uri":"{}","version":"{version}"}}}}"#,
                tb.join(format!("models/{trained}/model.joblib")).display()
            ),
        )
        .unwrap();
    }
    let mut cmd = Command::new(tb.join("venvs/mlserver/bin/mlserver"));
    cmd.arg("start")
        .arg(dir.path())
        .env("PYTHONPATH", fixtures());
    let ready = |(name, version, _): &(&str, &str, &str)| {
        format!("/v2/models/{name}/versions/{version}/ready")
    };
    let mut svc = model_server(cmd, port, &ready(&served[0]), "mlserver").await;
    for s in &served[1..] {
        wait_ok(
            &svc.url(&ready(s)),
            "mlserver model",
            Duration::from_secs(60),
        )
        .await;
    }
    // Keep the settings folder as long as the server runs.
    svc.dir = dir;
    (svc, grpc_port)
}

/// Runs tests/fixtures/openai_client.py (the official openai client) and
/// returns the JSON it prints.
async fn openai_client(base: String, args: &'static [&'static str]) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(testbed().join("venvs/llmclient/bin/python"))
            .arg(fixtures().join("openai_client.py"))
            .arg(&base)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stdout_json(out)
}

pub async fn llama_server(extra: &[&str]) -> Service {
    let (cmd, port) = llama_server_command(extra);
    model_server(cmd, port, "/health", "llama-server").await
}

/// The llama-server command line (tiny model, one thread) on a free port.
pub fn llama_server_command(extra: &[&str]) -> (Command, u16) {
    let tb = testbed();
    let lib = tb.join("sid/root/usr/lib/x86_64-linux-gnu");
    let port = free_port();
    let mut cmd = Command::new(lib.join("ld-linux-x86-64.so.2"));
    cmd.arg("--library-path")
        .arg(format!("{}:{}", lib.display(), lib.join("llama").display()))
        .arg(tb.join("sid/root/usr/bin/llama-server"))
        .args(["-m", tb.join("models/tiny-llama.gguf").to_str().unwrap()])
        .args([
            "--alias",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(["-c", "512", "-t", "1", "--no-webui"])
        .args(extra)
        .env(
            "GGML_BACKEND_PATH",
            lib.join("ggml/backends0/libggml-cpu-x64.so"),
        );
    (cmd, port)
}

fn metric(m: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    prom_value(m, name, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_server_through_the_openai_client() {
    let llama = llama_server(&[]).await;
    let config = "sampling:\n  rate: 0.0\n"; // the LLM figures must not depend on sampling
    let mw = Modelwatch::start(Options::new(llama.url("")).config(config)).await;
    let seen = openai_client(mw.url("/v1"), &["tiny"]).await;
    let usage: Vec<(f64, f64)> = seen["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u[0].as_f64().unwrap(), u[1].as_f64().unwrap()))
        .collect();
    let (input, output) = usage.iter().fold((0.0, 0.0), |a, u| (a.0 + u.0, a.1 + u.1));

    // The client may be done before the proxy has seen each stream's end: wait for all 5.
    let m = eventually(
        "all 5 LLM requests finished",
        Duration::from_secs(10),
        || async {
            let m = mw.metrics().await;
            (prom_value(&m, "modelwatch_llm_requests_total", &[]) == Some(5.0)).then_some(m)
        },
    )
    .await;
    // Token counts equal what the server reported to the client.
    let reported = [("modelwatch_usage_estimated", "false")];
    let tokens = "gen_ai_client_token_usage_sum";
    assert_eq!(
        metric(&m, tokens, &[reported[0], ("gen_ai_token_type", "input")]),
        input,
        "{m}"
    );
    assert_eq!(
        metric(&m, tokens, &[reported[0], ("gen_ai_token_type", "output")]),
        output,
        "{m}"
    );
    // The stream without usage: output counted from content chunks, marked estimated.
    let estimated = metric(
        &m,
        tokens,
        &[
            ("modelwatch_usage_estimated", "true"),
            ("gen_ai_token_type", "output"),
        ],
    );
    assert_eq!(
        estimated,
        seen["streams_without_usage_chunks"].as_f64().unwrap(),
        "{m}"
    );
    // One duration per request, with operation and models.
    let d = "gen_ai_server_request_duration_seconds_count";
    assert_eq!(
        metric(
            &m,
            d,
            &[
                ("gen_ai_operation_name", "chat"),
                ("gen_ai_response_model", "tiny")
            ]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            d,
            &[
                ("gen_ai_operation_name", "text_completion"),
                ("gen_ai_request_model", "tiny")
            ]
        ),
        2.0
    );
    // TTFT: the proxy's first-content time is close to the client's (the client's includes its own overhead).
    let ttft_count = metric(&m, "gen_ai_server_time_to_first_token_seconds_count", &[]);
    assert_eq!(ttft_count, 3.0);
    let proxy_mean = metric(&m, "gen_ai_server_time_to_first_token_seconds_sum", &[]) / ttft_count;
    let client: Vec<f64> = seen["ttft"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let client_mean = client.iter().sum::<f64>() / client.len() as f64;
    assert!(
        proxy_mean > 0.0 && (client_mean - proxy_mean).abs() < 0.05,
        "proxy {proxy_mean} client {client_mean}"
    );
    assert!(metric(&m, "gen_ai_server_time_per_output_token_seconds_count", &[]) >= 2.0);
    // The client's streams arrived chunk by chunk (one chunk per token, plus role and usage chunks).
    for n in seen["stream_chunks"].as_array().unwrap() {
        assert!(n.as_u64().unwrap() >= 3, "{seen}");
    }
    assert_eq!(
        metric(
            &m,
            "modelwatch_llm_finish_reasons_total",
            &[("reason", "length")]
        ),
        5.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "modelwatch_llm_requests_total",
            &[
                ("modelwatch_llm_streaming", "true"),
                ("modelwatch_llm_outcome", "complete")
            ]
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_server_embeddings_through_the_openai_client() {
    let llama = llama_server(&["--embeddings", "--pooling", "mean"]).await;
    let config = "admin:\n  recent_records: 10\n";
    let mw = Modelwatch::start(Options::new(llama.url("")).config(config)).await;
    let seen = openai_client(mw.url("/v1"), &["tiny", "embeddings"]).await;
    let vectors = seen["vectors"].as_array().unwrap();
    // Two inputs in the first call (floats or base64 on the wire), one in the second.
    let records = mw.records(3).await;
    let inputs = ["hello world", "drift", "sidecar"];
    for (i, rec) in records.as_array().unwrap().iter().enumerate() {
        assert_eq!(rec["operation"], "embeddings");
        assert_eq!(rec["input_text"], inputs[i]);
        let got = rec["embedding"].as_array().unwrap();
        let sent = vectors[i].as_array().unwrap();
        assert_eq!(got.len(), sent.len());
        for (g, s) in got.iter().zip(sent) {
            assert!((g.as_f64().unwrap() - s.as_f64().unwrap()).abs() < 1e-6);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_batches_become_one_record_per_row() {
    let server = mlserver(&["bc"]).await;
    let config = "admin:\n  recent_records: 50\nprotocol:\n  models:\n    - name: bc\n      class_names: [malignant, benign]\n";
    let mw = Modelwatch::start(Options::new(server.url("")).config(config)).await;
    // Five real rows of the breast-cancer data set (30 features each).
    let rows = breast_cancer_rows(5);
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let req = serde_json::json!({"inputs": [{"name": "input-0", "shape": [5, 30], "datatype": "FP64", "data": flat}]});
    let resp: serde_json::Value = http()
        .post(mw.url("/v2/models/bc/infer"))
        .json(&req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let predicted: Vec<i64> = resp["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let records = mw.records(5).await;
    for (i, rec) in records.as_array().unwrap().iter().enumerate() {
        assert_eq!(rec["protocol"], "open-inference-v2");
        assert_eq!(rec["model"], "bc");
        assert_eq!(rec["row"], i);
        let features = rec["features"].as_array().unwrap();
        assert_eq!(features.len(), 30);
        for (j, f) in features.iter().enumerate() {
            assert_eq!(f[0], format!("input-0[{j}]"));
            assert_eq!(f[1].as_f64().unwrap(), rows[i][j]);
        }
        let want = ["malignant", "benign"][predicted[i] as usize];
        assert_eq!(rec["prediction"], want, "{rec}");
    }
    let m = mw.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_inferences_total",
            &[("modelwatch_protocol", "open-inference-v2")]
        ),
        Some(5.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v1_instances_become_records() {
    let tb = testbed();
    let port = free_port();
    let mut cmd = Command::new(tb.join("venvs/kserve/bin/python"));
    cmd.arg(fixtures().join("kserve_server.py"))
        .arg(port.to_string())
        .current_dir(tb.join("models/bc"));
    let _server = model_server(cmd, port, "/v1/models/bc", "kserve").await;
    let config = "admin:\n  recent_records: 50\n";
    let mw =
        Modelwatch::start(Options::new(format!("http://127.0.0.1:{port}")).config(config)).await;
    let rows = breast_cancer_rows(3);
    let resp: serde_json::Value = http()
        .post(mw.url("/v1/models/bc:predict"))
        .json(&serde_json::json!({"instances": rows}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = mw.records(3).await;
    for (i, rec) in records.as_array().unwrap().iter().enumerate() {
        assert_eq!(rec["protocol"], "kserve-v1");
        assert_eq!(rec["model"], "bc");
        assert_eq!(rec["features"].as_array().unwrap().len(), 30);
        assert_eq!(rec["features"][3][1].as_f64().unwrap(), rows[i][3]);
        assert_eq!(
            rec["prediction"].as_f64().unwrap(),
            resp["predictions"][i].as_f64().unwrap()
        );
    }
}

/// The first `n` rows of scikit-learn's breast-cancer data set, read by the
/// testbed's Python (scikit-learn ships the data).
fn breast_cancer_rows(n: usize) -> Vec<Vec<f64>> {
    let out = Command::new(testbed().join("venvs/kserve/bin/python"))
        .arg("-c")
        .arg(format!(
            "import json; from sklearn.datasets import load_breast_cancer as l; print(json.dumps(l().data[:{n}].tolist()))"
        ))
        .output()
        .unwrap();
    serde_json::from_value(stdout_json(out)).unwrap()
}

/// The breast-cancer data set (scikit-learn's `load_breast_cancer`): feature
/// rows and class names (malignant, benign), in a fixed shuffled order.
pub fn bc_data() -> (Vec<Vec<f64>>, Vec<&'static str>) {
    let out = Command::new(testbed().join("venvs/mlserver/bin/python"))
        .arg(fixtures().join("quality_data.py"))
        .arg("breast_cancer")
        .output()
        .unwrap();
    let v = stdout_json(out);
    let y: Vec<f64> = serde_json::from_value(v["y"].clone()).unwrap();
    (
        serde_json::from_value(v["X"].clone()).unwrap(),
        y.iter()
            .map(|c| ["malignant", "benign"][*c as usize])
            .collect(),
    )
}

/// Sends `rows` as one Open Inference Protocol request to `url` (a
/// `/v2/models/…/infer` URL), with `request_id` when given, asking for the
/// `predict` and `predict_proba` outputs; reads the whole answer (an unread
/// one is an aborted exchange) and returns it. Panics unless it is a 200.
pub async fn oip_infer(
    url: &str,
    rows: &[Vec<f64>],
    request_id: Option<&str>,
) -> serde_json::Value {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let body = serde_json::json!({
        "inputs": [{"name": "input-0", "shape": [rows.len(), rows[0].len()], "datatype": "FP64", "data": flat}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    });
    let mut req = http().post(url).json(&body);
    if let Some(id) = request_id {
        req = req.header("x-request-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.json().await.unwrap()
}

/// The `predict` output of an Open Inference Protocol answer.
pub fn predicted(answer: &serde_json::Value) -> Vec<serde_json::Value> {
    answer["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .find(|o| o["name"] == "predict")
        .expect("a predict output")["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Labels for rows that were sent with request ids `{prefix}-{n}`, `batch`
/// rows per request, through the feedback API as NDJSON; checks for a 200 and
/// returns the answer.
pub async fn send_labels<L: serde::Serialize>(
    mw: &Modelwatch,
    model: &str,
    prefix: &str,
    batch: usize,
    labels: &[L],
) -> serde_json::Value {
    let items: Vec<String> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::json!({"request_id": format!("{prefix}-{}", i / batch), "row": i % batch, "label": l, "model": model})
                .to_string()
        })
        .collect();
    let resp = http()
        .post(mw.admin_url("/v1/feedback"))
        .header("content-type", "application/x-ndjson")
        .body(items.join("\n"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Sends `batches` batches of 5 rows of `x` to each of `versions` of model
/// `bc`, interleaved, with request ids `{version}-{batch}`, and waits until
/// the quality store holds every row.
pub async fn infer_versions(mw: &Modelwatch, x: &[Vec<f64>], versions: &[&str], batches: usize) {
    for i in 0..batches {
        let r = i * 5..(i + 1) * 5;
        for v in versions {
            oip_infer(
                &mw.url(&format!("/v2/models/bc/versions/{v}/infer")),
                &x[r.clone()],
                Some(&format!("{v}-{i}")),
            )
            .await;
        }
    }
    let want = (versions.len() * batches * 5) as u64;
    eventually("predictions stored", Duration::from_secs(30), || async {
        let q = mw.admin_json("/v1/quality").await;
        (q["stored"].as_u64() == Some(want)).then_some(())
    })
    .await;
}

/// Runs `modelwatch profile` on `rows` (a CSV with `names` as its header)
/// and returns the profile's path, in `dir`, and what the command printed.
pub fn profile_from_rows(
    dir: &std::path::Path,
    names: &[String],
    rows: &[Vec<f64>],
) -> (PathBuf, String) {
    let csv = dir.join("reference.csv");
    let mut text = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(",");
    text.push('\n');
    for r in rows {
        text.push_str(&r.iter().map(f64::to_string).collect::<Vec<_>>().join(","));
        text.push('\n');
    }
    std::fs::write(&csv, text).unwrap();
    let profile = dir.join("profile.json");
    let out = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["profile", "--input"])
        .arg(&csv)
        .arg("--output")
        .arg(&profile)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (profile, stderr)
}

/// A model's drift figures in `/v1/status` and one feature's among them;
/// None while either is missing.
pub async fn drift_of(
    mw: &Modelwatch,
    model: &str,
    feature: &str,
) -> Option<(serde_json::Value, serde_json::Value)> {
    let s = mw.status().await;
    let m = s["drift"]["models"]
        .as_array()?
        .iter()
        .find(|m| m["model"] == model)?
        .clone();
    let f = m["features"]
        .as_array()?
        .iter()
        .find(|f| f["feature"] == feature)?
        .clone();
    Some((m, f))
}
