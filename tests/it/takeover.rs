//! The injector's port move, run for real. Where the model's port is
//! addressed by number (KServe's Services, Knative's queue-proxy, an unnamed
//! port), the injector moves the model server to another port and modelwatch
//! takes the number. For each server the move is known for and that runs
//! here, the pod is put through `inject::decide`, the patch is applied, and
//! the real server is started with the patched container's command line and
//! environment, waited for on its patched readiness probe (which must reach
//! the model directly). Modelwatch is started with the sidecar's environment
//! and listens on the old number: requests sent there reach the model
//! through modelwatch, which decodes and counts them.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use modelwatch::inject::{decide, InjectorConfig};

use crate::common::*;
use crate::models::*;

/// The pod after injection (namespace opted in, `moved_port` where moves go).
fn inject(pod: serde_json::Value, moved_port: u16) -> serde_json::Value {
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
    let config = InjectorConfig {
        moved_port: moved_port as i32,
        ..Default::default()
    };
    let d = decide(&typed, true, &config);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let patch = d.outcome.expect("injected");
    let mut v = serde_json::to_value(&typed).unwrap();
    json_patch::patch(&mut v, &patch).unwrap();
    v
}

/// The patched model container's command line and environment.
fn model_command(pod: &serde_json::Value) -> Command {
    let c = &pod["spec"]["containers"][0];
    let words: Vec<String> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]);
    for e in c["env"].as_array().into_iter().flatten() {
        cmd.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
    }
    cmd
}

/// The patched readiness probe: (port, path).
fn readiness(pod: &serde_json::Value) -> (u16, String) {
    let get = &pod["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    (
        get["port"].as_u64().expect("a numeric probe port") as u16,
        get["path"].as_str().unwrap().to_string(),
    )
}

/// Modelwatch as the sidecar's environment says: its upstream, and its
/// listen port (the number the Service targets) on loopback.
async fn sidecar(pod: &serde_json::Value, config: &str) -> (Modelwatch, u16) {
    let mw = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "modelwatch")
        .unwrap();
    let env: Vec<(String, String)> = mw["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let listen_port: u16 = get("MODELWATCH_LISTEN")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{listen_port}").parse().unwrap();
    let mut opts = Options::new(get("MODELWATCH_UPSTREAM"))
        .listen(listen)
        .config(config);
    for (k, v) in &env {
        // Addresses and the store path are the pod's; the rest as injected.
        if ![
            "MODELWATCH_LISTEN",
            "MODELWATCH_ADMIN_LISTEN",
            "MODELWATCH_UPSTREAM",
            "MODELWATCH_STORE_PATH",
        ]
        .contains(&k.as_str())
        {
            opts = opts.env(k, v);
        }
    }
    (Modelwatch::start(opts).await, listen_port)
}

fn nothing_listens_on(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

const CONFIG: &str = "admin:\n  recent_records: 50\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_python_server_moved_by_its_flag_serves_through_modelwatch() {
    let tb = testbed();
    let number = free_port();
    // A KServe RawDeployment predictor as the controller renders it from
    // the sklearn runtime: no port declared, the port in --http_port.
    let pod = inject(
        serde_json::json!({
            "metadata": {"name": "bc-predictor-0", "labels": {"serving.kserve.io/inferenceservice": "bc"}},
            "spec": {"containers": [{
                "name": "kserve-container", "image": "kserve/sklearnserver:v0.15.0",
                "command": [tb.join("venvs/kserve/bin/python"), fixtures().join("kserve_server.py")],
                "args": ["--model_name=bc", format!("--model_dir={}", tb.join("models/bc").display()),
                         format!("--http_port={number}")],
                "readinessProbe": {"httpGet": {"path": "/v1/models/bc", "port": number}}
            }]}
        }),
        free_port(),
    );
    let (probe_port, probe_path) = readiness(&pod);
    assert_ne!(probe_port, number);
    let _server = model_server(model_command(&pod), probe_port, &probe_path, "kserve").await;
    assert!(
        nothing_listens_on(number),
        "the model still listens on {number}"
    );
    let (mw, listen) = sidecar(&pod, CONFIG).await;
    assert_eq!(listen, number);

    let rows: Vec<Vec<f64>> = bc_data().0[..3].to_vec();
    let resp: serde_json::Value = http()
        .post(format!("http://127.0.0.1:{number}/v1/models/bc:predict"))
        .json(&serde_json::json!({"instances": rows}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["predictions"].as_array().unwrap().len(), 3, "{resp}");
    let records = mw.records(3).await;
    for (i, rec) in records.as_array().unwrap().iter().enumerate() {
        assert_eq!(rec["protocol"], "kserve-v1");
        assert_eq!(rec["model"], "bc");
        assert_eq!(rec["features"][0][1].as_f64().unwrap(), rows[i][0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_moved_by_its_environment_serves_behind_a_queue_proxy_shape() {
    let tb = testbed();
    let number = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.json"),
        r#"{"parallel_workers":0}"#,
    )
    .unwrap();
    let model_dir = dir.path().join("bc");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(
        model_dir.join("model-settings.json"),
        format!(
            r#"{{"name":"bc","implementation":"mlserver_sklearn.SKLearnModel","parameters":{{"uri":"{}","version":"v1"}}}}"#,
            tb.join("models/bc/model.joblib").display()
        ),
    )
    .unwrap();
    // KServe Serverless: Knative's user-port and queue-proxy, MLServer's
    // ports in its environment (config/runtimes/kserve-mlserver.yaml).
    let pod = inject(
        serde_json::json!({
            "metadata": {"name": "bc-predictor-00001-deployment-0", "labels": {
                "serving.kserve.io/inferenceservice": "bc", "serving.knative.dev/revision": "bc-predictor-00001"}},
            "spec": {"containers": [
                {"name": "kserve-container", "image": "docker.io/seldonio/mlserver:1.7.1",
                 "command": [tb.join("venvs/mlserver/bin/mlserver"), "start", dir.path()],
                 "ports": [{"name": "user-port", "containerPort": number}],
                 "env": [{"name": "MLSERVER_HOST", "value": "127.0.0.1"},
                         {"name": "MLSERVER_HTTP_PORT", "value": number.to_string()},
                         {"name": "MLSERVER_GRPC_PORT", "value": free_port().to_string()},
                         {"name": "MLSERVER_METRICS_PORT", "value": free_port().to_string()}],
                 "readinessProbe": {"httpGet": {"path": "/v2/models/bc/ready", "port": "user-port"}}},
                {"name": "queue-proxy", "image": "gcr.io/knative-releases/knative.dev/serving/cmd/queue:v1.15.2",
                 "ports": [{"name": "http-queueadm", "containerPort": 8022}, {"name": "queue-port", "containerPort": 8012}],
                 "env": [{"name": "USER_PORT", "value": number.to_string()}]}
            ]}
        }),
        free_port(),
    );
    let (probe_port, probe_path) = readiness(&pod);
    assert_ne!(probe_port, number);
    let _server = model_server(model_command(&pod), probe_port, &probe_path, "mlserver").await;
    assert!(
        nothing_listens_on(number),
        "the model still listens on {number}"
    );
    let (mw, _) = sidecar(&pod, CONFIG).await;

    // What the queue-proxy does: forward to USER_PORT.
    let rows: Vec<Vec<f64>> = bc_data().0[..4].to_vec();
    let answer = oip_infer(
        &format!("http://127.0.0.1:{number}/v2/models/bc/infer"),
        &rows,
        Some("moved-1"),
    )
    .await;
    assert_eq!(predicted(&answer).len(), 4);
    let records = mw.records(4).await;
    for rec in records.as_array().unwrap() {
        assert_eq!(rec["protocol"], "open-inference-v2");
        assert_eq!(rec["model"], "bc");
        assert_eq!(rec["features"].as_array().unwrap().len(), 30);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_server_on_an_unnamed_port_moved_by_its_flag() {
    let (base, _) = llama_server_command(&[]);
    let number = free_port();
    // The command line of llama_server_command, with the pod's own port.
    let mut words: Vec<String> = std::iter::once(base.get_program())
        .chain(base.get_args())
        .map(|w| w.to_str().unwrap().to_string())
        .collect();
    let at = words.iter().position(|w| w == "--port").unwrap();
    words[at + 1] = number.to_string();
    let env: Vec<serde_json::Value> = base
        .get_envs()
        .filter_map(|(k, v)| Some(serde_json::json!({"name": k.to_str()?, "value": v?.to_str()?})))
        .collect();
    let pod = inject(
        serde_json::json!({
            "metadata": {"name": "llama-0"},
            "spec": {"containers": [{
                "name": "llama", "image": "ghcr.io/ggml-org/llama.cpp:server",
                "command": [words[0]], "args": words[1..],
                "env": env,
                "ports": [{"containerPort": number}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": number}}
            }]}
        }),
        free_port(),
    );
    let (probe_port, probe_path) = readiness(&pod);
    assert_ne!(probe_port, number);
    let _server = model_server(model_command(&pod), probe_port, &probe_path, "llama-server").await;
    assert!(
        nothing_listens_on(number),
        "the model still listens on {number}"
    );
    let (mw, _) = sidecar(&pod, "").await;

    let resp = http()
        .post(format!("http://127.0.0.1:{number}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "tiny", "max_tokens": 4,
                                  "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{body}"
    );
    // Seen by modelwatch as a chat operation.
    eventually(
        "the chat counted by modelwatch",
        Duration::from_secs(10),
        || async {
            let m = mw.metrics().await;
            let d = "gen_ai_server_request_duration_seconds_count";
            (prom_value(&m, d, &[("gen_ai_operation_name", "chat")]) == Some(1.0)).then_some(())
        },
    )
    .await;
}
