//! The diagnosis against real traffic: MLServer serving the breast-cancer
//! model through modelwatch, with labels through the feedback API, each
//! scenario injecting one cause (inputs shifted, labels changed for one
//! segment, a worse version, no labels, nothing at all); and llama.cpp's
//! server in a real cgroup whose CPU quota is cut.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::models::{bc_data, llama_server, mlserver_versions, oip_infer, send_labels};

/// The healthy period: the first rows, labelled, are the reference period
/// (`quality.estimation.reference_rows`).
const HEALTHY: usize = 150;
const BATCH: usize = 10;

struct Bc {
    x: Vec<Vec<f64>>,
    y: Vec<&'static str>,
    profile: Value,
    _dir: tempfile::TempDir,
    config: String,
}

/// The data, a drift profile of rows 0..285 (features f0..f29), the config
/// (the gRPC tests': quality windows of 1h, drift windows of 250 rows) with
/// a reference period of `HEALTHY` rows.
fn bc() -> Bc {
    let (x, y) = bc_data();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::grpc_models::bc_config(dir.path(), &x)
        .replace("reference_rows: 100", &format!("reference_rows: {HEALTHY}"));
    assert!(config.contains(&format!("reference_rows: {HEALTHY}")));
    let path = dir.path().join("profile.json");
    let profile: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    Bc {
        x,
        y,
        profile,
        _dir: dir,
        config,
    }
}

impl Bc {
    /// Standard deviation of a feature over the profiled rows.
    fn sd(&self, f: usize) -> f64 {
        let v: Vec<f64> = self.x[..285].iter().map(|r| r[f]).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    /// The upper edge of a feature's bins in the profile: rows at or above
    /// it are its top segment.
    fn top_edge(&self, f: usize) -> f64 {
        let edges = self.profile["features"][f]["edges"].as_array().unwrap();
        edges.last().unwrap().as_f64().unwrap()
    }
}

/// Sends `rows` to `version` of bc in batches of `BATCH` (request ids
/// `{prefix}-{n}`), then their `labels` when given, and waits until the
/// quality store holds `stored` predictions and `labelled` labels.
async fn serve(
    mw: &Modelwatch,
    version: &str,
    prefix: &str,
    rows: &[Vec<f64>],
    labels: Option<&[&str]>,
) {
    for (i, chunk) in rows.chunks(BATCH).enumerate() {
        oip_infer(
            &mw.url(&format!("/v2/models/bc/versions/{version}/infer")),
            chunk,
            Some(&format!("{prefix}-{i}")),
        )
        .await;
    }
    if let Some(labels) = labels {
        let answer = send_labels(mw, "bc", prefix, BATCH, labels).await;
        let (joined, waiting) = (answer["joined"].as_u64(), answer["waiting"].as_u64());
        assert_eq!(
            joined.unwrap_or(0) + waiting.unwrap_or(0),
            labels.len() as u64,
            "{answer}"
        );
    }
}

async fn wait_stored(mw: &Modelwatch, stored: u64) {
    eventually("predictions stored", Duration::from_secs(60), || async {
        let q = mw.admin_json("/v1/quality").await;
        (q["stored"].as_u64() >= Some(stored)).then_some(())
    })
    .await;
}

/// The diagnosis of one version, once `until` holds for it.
async fn diagnosis(mw: &Modelwatch, query: &str, until: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let v = mw.admin_json(&format!("/v1/diagnose?{query}")).await;
        last = v["diagnoses"][0].clone();
        if until(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("diagnosis never as expected: {last:#}");
}

/// Every one of `n` predictions in the window is labelled: the figures
/// are final.
fn all_labelled(d: &Value, n: usize) -> bool {
    d["quality"]["labelled"].as_u64() == Some(n as u64)
}

fn kinds(d: &Value) -> Vec<String> {
    d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

fn findings<'a>(d: &'a Value, kind: &str) -> Vec<&'a Value> {
    d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

fn drifted(d: &Value) -> Vec<String> {
    let mut v: Vec<String> = findings(d, "drift")
        .iter()
        .map(|f| f["figures"]["feature"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

async fn start(data: &Bc, versions: &[(&str, &str, &str)]) -> (Service, Modelwatch) {
    let server = mlserver_versions(versions).await;
    let mw = Modelwatch::start(Options::new(server.url("")).config(&data.config)).await;
    (server, mw)
}

/// A healthy, labelled reference period on v1.
async fn healthy_period(mw: &Modelwatch, data: &Bc) {
    serve(
        mw,
        "v1",
        "ref",
        &data.x[..HEALTHY],
        Some(&data.y[..HEALTHY]),
    )
    .await;
}

/// An accuracy alert to a real Alertmanager and a webhook.
const ALERTS: &str = r#"
alerts:
  evaluation_interval: 500ms
  alertmanager:
    url: ALERTMANAGER
    resend_interval: 1s
  webhooks:
    - name: team
      url: WEBHOOK
  rules:
    - name: ModelAccuracyLow
      figure: modelwatch.quality.accuracy
      match: {model: bc, window: 1h}
      below: 0.95
      for: 1s
      min_samples: 30
      annotations:
        summary: "accuracy of {{ labels.model }} is {{ value }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn covariate_shift_on_two_features_is_the_data() {
    let data = bc();
    let hooks = crate::alerts::Hooks::start().await;
    let am_port = free_port();
    let am = crate::alerts::alertmanager_on(am_port, &hooks.url("/am")).await;
    let config = format!(
        "{}{}",
        data.config,
        ALERTS
            .replace("ALERTMANAGER", &format!("http://127.0.0.1:{am_port}"))
            .replace("WEBHOOK", &hooks.url("/team"))
    );
    let server = mlserver_versions(&[("bc", "v1", "bc")]).await;
    let mw = Modelwatch::start(Options::new(server.url("")).config(&config)).await;
    healthy_period(&mw, &data).await;
    // f20 (worst radius) and f27 (worst concave points) read two standard
    // deviations high, as a miscalibrated measurement would; the truth
    // (the labels) is the patients' own.
    let (s20, s27) = (data.sd(20), data.sd(27));
    let shifted: Vec<Vec<f64>> = data.x[HEALTHY..]
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r[20] += 2.0 * s20;
            r[27] += 2.0 * s27;
            r
        })
        .collect();
    serve(&mw, "v1", "shift", &shifted, Some(&data.y[HEALTHY..])).await;

    let d = diagnosis(&mw, "model=bc&version=v1", |d| {
        all_labelled(d, data.x.len()) && drifted(d).len() == 2
    })
    .await;
    assert_eq!(d["verdict"], "data", "{d:#}");
    assert_eq!(drifted(&d), ["f20", "f27"], "{d:#}");
    let q = &d["quality"];
    assert_eq!(q["fell"], true, "{d:#}");
    assert!(q["accuracy"].as_f64().unwrap() < q["reference_accuracy"].as_f64().unwrap() - 0.05);
    let top = &d["findings"][0];
    assert_eq!(
        (top["cause"].as_str(), top["kind"].as_str()),
        (Some("data"), Some("segment")),
        "{d:#}"
    );
    let feature = top["figures"]["feature"].as_str().unwrap();
    assert!(feature == "f20" || feature == "f27", "{d:#}");
    assert!(
        top["figures"]["segment"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{feature} >= ")),
        "{d:#}"
    );
    assert!(
        top["figures"]["share_of_loss"].as_f64().unwrap() >= 0.5,
        "{d:#}"
    );
    assert_eq!(top["figures"]["feature_drifted"], true);
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .starts_with("accuracy fell from "),
        "{d:#}"
    );
    assert_eq!(d["scores"]["model"], 0.0, "{d:#}");

    // The gauge and the command line say the same.
    let m = mw.metrics().await;
    let score = prom_value(
        &m,
        "modelwatch_diagnosis_cause",
        &[("model", "bc"), ("model_version", "v1"), ("cause", "data")],
    );
    assert!(score.unwrap() >= 0.5, "{m}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["diagnose", "--admin", &mw.admin_url(""), "--model", "bc"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("bc v1 (window 1h): data\n  accuracy fell from "),
        "{text}"
    );
    assert!(text.contains("] segment: "), "{text}");

    // The page a person gets already says where to look: the webhook's
    // call and Alertmanager's alert carry the diagnosis taken when it fired.
    hooks
        .wait_for("/team", "firing", "the team webhook's firing call", 30)
        .await;
    let (_, body) = hooks.on("/team").remove(0);
    let a = &body["alerts"][0]["annotations"];
    assert!(
        a["diagnosis"]
            .as_str()
            .unwrap()
            .starts_with("data: accuracy fell from "),
        "{body:#}"
    );
    let top = a["diagnosis_findings"].as_str().unwrap();
    assert_eq!(top.lines().count(), 3, "{top}");
    assert!(top.starts_with("[data 0."), "{top}");
    let alert = eventually(
        "the alert in Alertmanager",
        Duration::from_secs(30),
        || async {
            crate::alerts::am_alerts(&am)
                .await
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "ModelAccuracyLow")
        },
    )
    .await;
    assert_eq!(
        alert["annotations"]["diagnosis"], a["diagnosis"],
        "{alert:#}"
    );
    assert_eq!(
        alert["annotations"]["diagnosis_findings"],
        a["diagnosis_findings"]
    );
    let shown = mw.admin_json("/v1/alerts").await;
    assert_eq!(
        shown["alerts"][0]["annotations"]["diagnosis"], a["diagnosis"],
        "{shown:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concept_drift_in_one_segment_is_the_model() {
    let data = bc();
    let (_server, mw) = start(&data, &[("bc", "v1", "bc")]).await;
    healthy_period(&mw, &data).await;
    // The same inputs; for rows in f1's top bin (mean texture) the truth
    // is now the other class.
    let edge = data.top_edge(1);
    let flipped: Vec<&str> = data.x[HEALTHY..]
        .iter()
        .zip(&data.y[HEALTHY..])
        .map(|(r, y)| match (r[1] >= edge, *y) {
            (true, "malignant") => "benign",
            (true, _) => "malignant",
            (false, y) => y,
        })
        .collect();
    // Twice (the window then outweighs the healthy period in it).
    serve(&mw, "v1", "concept", &data.x[HEALTHY..], Some(&flipped)).await;
    serve(&mw, "v1", "again", &data.x[HEALTHY..], Some(&flipped)).await;

    let all = 2 * data.x.len() - HEALTHY;
    let d = diagnosis(&mw, "model=bc&version=v1", |d| all_labelled(d, all)).await;
    assert_eq!(d["verdict"], "model", "{d:#}");
    assert!(drifted(&d).is_empty(), "the inputs did not move: {d:#}");
    assert!(kinds(&d).contains(&"concept_drift".to_string()), "{d:#}");
    assert_eq!(d["quality"]["estimate_trustworthy"], false, "{d:#}");
    let seg = findings(&d, "segment")[0];
    assert_eq!(seg["cause"], "model", "{d:#}");
    assert_eq!(seg["figures"]["feature"], "f1", "{d:#}");
    assert!(
        seg["figures"]["segment"]
            .as_str()
            .unwrap()
            .starts_with("f1 >= "),
        "{d:#}"
    );
    // (The window holds the healthy period's rows of the segment too.)
    assert!(seg["figures"]["accuracy"].as_f64().unwrap() < 0.5, "{d:#}");
    assert!(
        seg["figures"]["reference_accuracy"].as_f64().unwrap() > 0.8,
        "{d:#}"
    );
    assert_eq!(d["scores"]["data"], 0.0, "{d:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worse_version_is_the_model() {
    let data = bc();
    let (_server, mw) = start(&data, &[("bc", "v1", "bc"), ("bc", "v2", "bc-weak")]).await;
    healthy_period(&mw, &data).await;
    // v2 (a classifier that always answers the prior) takes traffic beside v1.
    let rows = &data.x[HEALTHY..HEALTHY + 200];
    let labels = &data.y[HEALTHY..HEALTHY + 200];
    serve(&mw, "v1", "v1", rows, Some(labels)).await;
    serve(&mw, "v2", "v2", rows, Some(labels)).await;

    let d = diagnosis(&mw, "model=bc&version=v2", |d| all_labelled(d, 200)).await;
    assert_eq!(d["verdict"], "model", "{d:#}");
    let top = &d["findings"][0];
    assert_eq!(top["kind"], "version", "{d:#}");
    assert_eq!(top["figures"]["previous"], "v1");
    assert!(top["figures"]["accuracy"].as_f64().unwrap() < 0.75, "{d:#}");
    assert!(
        top["figures"]["previous_accuracy"].as_f64().unwrap() > 0.9,
        "{d:#}"
    );
    assert!(
        top["summary"].as_str().unwrap().contains("against v1's"),
        "{d:#}"
    );
    assert!(drifted(&d).is_empty(), "{d:#}");
    // v1 itself is fine.
    let d1 = diagnosis(&mw, "model=bc&version=v1", |d| all_labelled(d, 350)).await;
    assert_eq!(d1["verdict"], "none", "{d1:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_labels_the_verdict_says_so_and_what_drift_shows() {
    let data = bc();
    let (_server, mw) = start(&data, &[("bc", "v1", "bc")]).await;
    serve(&mw, "v1", "clean", &data.x[..HEALTHY], None).await;
    wait_stored(&mw, HEALTHY as u64).await;
    let d = diagnosis(&mw, "model=bc", |d| {
        d["missing"].as_array().is_some_and(|m| !m.is_empty())
    })
    .await;
    assert_eq!(d["verdict"], "unknown", "{d:#}");
    assert!(
        d["missing"][0]
            .as_str()
            .unwrap()
            .starts_with("labels: 0 of the window's predictions are labelled, 30 needed"),
        "{d:#}"
    );
    let shifted: Vec<Vec<f64>> = data.x[HEALTHY..]
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r[20] += 2.0 * data.sd(20);
            r[27] += 2.0 * data.sd(27);
            r
        })
        .collect();
    serve(&mw, "v1", "shift", &shifted, None).await;
    wait_stored(&mw, data.x.len() as u64).await;
    let d = diagnosis(&mw, "model=bc", |d| drifted(d).len() == 2).await;
    assert_eq!(drifted(&d), ["f20", "f27"], "{d:#}");
    assert_eq!(d["verdict"], "data", "{d:#}");
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .starts_with("no labels yet, so accuracy is not known; "),
        "{d:#}"
    );
    assert!(
        d["missing"][0].as_str().unwrap().starts_with("labels: "),
        "{d:#}"
    );
    assert!(d["quality"]["accuracy"].is_null(), "{d:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_traffic_over_a_long_run_has_no_cause() {
    let data = bc();
    let (_server, mw) = start(&data, &[("bc", "v1", "bc")]).await;
    let n = data.x.len();
    // Four passes over the data in a different order each time, labelled:
    // 2,276 predictions, a diagnosis after each 285.
    let mut sent = 0;
    for pass in 0..4 {
        let order: Vec<usize> = (0..n)
            .map(|i| (i * (2 * pass + 1) + 7 * pass) % n)
            .collect();
        for half in order.chunks(n.div_ceil(2)) {
            let rows: Vec<Vec<f64>> = half.iter().map(|&i| data.x[i].clone()).collect();
            let labels: Vec<&str> = half.iter().map(|&i| data.y[i]).collect();
            serve(&mw, "v1", &format!("p{pass}-{sent}"), &rows, Some(&labels)).await;
            sent += rows.len();
            wait_stored(&mw, sent as u64).await;
            let d = mw.admin_json("/v1/diagnose?model=bc").await["diagnoses"][0].clone();
            assert_eq!(d["verdict"], "none", "after {sent} predictions: {d:#}");
            for c in ["data", "model", "environment"] {
                assert!(d["scores"][c].as_f64().unwrap() < 0.5, "{d:#}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_cpu_quota_of_the_model_server_is_the_environment() {
    let llama = llama_server(&[]).await;
    let cg = crate::resources::TestCgroup::with_quota(None);
    cg.add(llama.child.id());
    let (_d, pid_file) = temp_file("model.pid", &llama.child.id().to_string());
    let config = format!(
        "resources:\n  interval: 500ms\n  model_server_pid_file: {}\n",
        pid_file.display()
    );
    let mw = Modelwatch::start(Options::new(llama.url("")).config(&config)).await;
    let chat = |n: usize| {
        let url = mw.url("/v1/chat/completions");
        async move {
            let calls = (0..n).map(|i| {
                let url = url.clone();
                async move {
                    let body = json!({"model": "tiny", "max_tokens": 16,
                        "messages": [{"role": "user", "content": format!("count to {i}")}]});
                    let r = http().post(url).json(&body).send().await.unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    r.bytes().await.unwrap();
                }
            });
            futures_util::future::join_all(calls).await;
        }
    };
    chat(4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = mw.admin_json("/v1/diagnose?model=tiny").await["diagnoses"][0].clone();
    assert!(findings(&d, "cpu_throttling").is_empty(), "{d:#}");
    assert_ne!(d["verdict"], "environment", "{d:#}");

    // A tenth of a core for a server that wants one.
    cg.set_quota(Some(10_000));
    let d = eventually("throttling diagnosed", Duration::from_secs(90), || {
        let chat = chat(4);
        let mw = &mw;
        async move {
            chat.await;
            let d = mw.admin_json("/v1/diagnose?model=tiny").await["diagnoses"][0].clone();
            (d["verdict"] == "environment").then_some(d)
        }
    })
    .await;
    let top = &d["findings"][0];
    assert_eq!(top["kind"], "cpu_throttling", "{d:#}");
    assert_eq!(top["figures"]["who"], "the model server", "{d:#}");
    assert_eq!(top["figures"]["cpu_limit_cores"], 0.1, "{d:#}");
    assert!(
        top["figures"]["throttled_ratio"].as_f64().unwrap() >= 0.2,
        "{d:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_server_down_is_the_environment_and_its_replacement_is_named() {
    let data = bc();
    let mls = mlserver_versions(&[("bc", "v1", "bc")]).await;
    let port = mls.port;
    let config = format!("{}resources:\n  interval: 300ms\n", data.config)
        .replace("admin:\n", "admin:\n  readiness:\n    interval: 200ms\n");
    let mw = Modelwatch::start(Options::new(mls.url("")).config(&config)).await;
    serve(&mw, "v1", "before", &data.x[..20], None).await;
    eventually(
        "MLServer's version read",
        Duration::from_secs(30),
        || async {
            let m = mw.metrics().await;
            m.contains("model_server_name=\"mlserver\"").then_some(())
        },
    )
    .await;
    // The model server goes away: the environment, and what the probe says.
    drop(mls);
    let d = diagnosis(&mw, "model=bc&version=v1", |d| {
        d["verdict"] == "environment"
    })
    .await;
    assert_eq!(d["findings"][0]["kind"], "upstream", "{d:#}");
    assert!(
        d["findings"][0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("the model server is unreachable (tcp probe of http://127.0.0.1:"),
        "{d:#}"
    );
    // The same port now serves KServe's Python server (another server, another version).
    let tb = crate::models::testbed();
    let mut cmd = std::process::Command::new(tb.join("venvs/kserve/bin/python"));
    cmd.arg(crate::models::fixtures().join("kserve_server.py"))
        .arg(port.to_string())
        .current_dir(tb.join("models/bc"));
    let _kserve = crate::models::model_server(cmd, port, "/v1/models/bc", "kserve").await;
    let d = diagnosis(&mw, "model=bc&version=v1", |d| {
        findings(d, "environment_change").len() == 2
    })
    .await;
    let changes: Vec<(&str, &Value, &Value)> = findings(&d, "environment_change")
        .iter()
        .map(|f| {
            let g = &f["figures"];
            (g["component"].as_str().unwrap(), &g["before"], &g["after"])
        })
        .collect();
    assert_eq!(changes[0].0, "model_server:kserve", "{d:#}");
    assert!(changes[0].1.is_null() && changes[0].2.is_string(), "{d:#}");
    assert_eq!(changes[1].0, "model_server:mlserver", "{d:#}");
    assert!(changes[1].1.is_string() && changes[1].2.is_null(), "{d:#}");
    for f in findings(&d, "environment_change") {
        assert_eq!(f["score"], 0.4, "nothing got worse: context, not a cause");
    }
    assert_ne!(d["verdict"], "environment", "{d:#}");
}
