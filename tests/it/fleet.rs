//! Quality across a fleet (`quality.backend: kafka`): sidecars in front of a
//! real MLServer model produce predictions and labels to a real
//! Kafka-protocol broker (tansu, built into .testbed/kafka by
//! scripts/testbed.sh), `modelwatch joiner` processes join them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::models::{bc_data, mlserver, oip_infer};

const PREDICTIONS: &str = "modelwatch.predictions";
const LABELS: &str = "modelwatch.labels";
const STATE: &str = "modelwatch.quality-state";

fn tansu() -> PathBuf {
    let path = std::env::var("MODELWATCH_KAFKA_BROKER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".testbed/kafka/bin/tansu")
        });
    assert!(
        path.exists(),
        "{} is missing: run scripts/testbed.sh kafka (or scripts/test.sh, which does)",
        path.display()
    );
    path
}

/// A tansu broker (in-memory storage) on a free port; killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub async fn start() -> Broker {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("broker.log")).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start tansu");
        let b = Broker {
            child: Some(child),
            port,
            _dir: dir,
        };
        eventually("the broker listens", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        b
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let mut cmd = Command::new(tansu());
        cmd.args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string(), name]);
        if name == STATE {
            cmd.args(["--config", "cleanup.policy=compact"]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The three topics: predictions and labels with `partitions`, state with 2.
    pub fn topics(&self, partitions: u32) {
        self.create_topic(PREDICTIONS, partitions);
        self.create_topic(LABELS, partitions);
        self.create_topic(STATE, 2);
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `modelwatch joiner` on a free admin port with its own store directory.
pub struct Joiner {
    child: Option<Child>,
    pub admin: u16,
    store: PathBuf,
    config: PathBuf,
    log: PathBuf,
    bootstrap: String,
}

impl Joiner {
    pub fn start(bootstrap: &str, config: &str, dir: &std::path::Path, name: &str) -> Joiner {
        let config_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&config_path, config).unwrap();
        let mut j = Joiner {
            child: None,
            admin: free_port(),
            store: dir.join(name),
            config: config_path,
            log: dir.join(format!("{name}.log")),
            bootstrap: bootstrap.to_string(),
        };
        j.spawn();
        j
    }

    fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
            .arg("joiner")
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", self.admin))
            .arg("--store-dir")
            .arg(&self.store)
            .arg("--config")
            .arg(&self.config)
            .env("MODELWATCH_KAFKA_BOOTSTRAP", &self.bootstrap)
            .env("RUST_LOG", "info,modelwatch=debug")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the joiner");
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    pub fn kill(&mut self) {
        let mut c = self.child.take().expect("running");
        let _ = c.kill();
        let _ = c.wait();
    }

    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Waits for the exit of a joiner expected to stop by itself.
    pub fn exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > limit {
                let _ = c.kill();
                panic!("the joiner did not exit:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn quality(&self) -> Value {
        match http().get(self.url("/v1/quality")).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    pub async fn metrics(&self) -> String {
        match http().get(self.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_sigterm(c.id());
            std::thread::sleep(Duration::from_millis(300));
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- joiner log ----\n{}", self.log_text());
        }
    }
}

/// One window of one model from a joiner's `/v1/quality`.
fn window_of(q: &Value, model: &str, window: &str) -> Option<Value> {
    q["models"]
        .as_array()?
        .iter()
        .find(|m| m["model"] == model)?["windows"]
        .as_array()?
        .iter()
        .find(|w| w["window"] == window)
        .cloned()
}

const QUALITY: &str = r#"
quality:
  refresh_interval: 200ms
  sync_interval: 200ms
  windows: [1h]
  min_samples: 30
  early_label_ttl: 10m
  kafka:
    delivery_timeout: 5s
    properties:
      session.timeout.ms: "6000"
      heartbeat.interval.ms: "500"
      topic.metadata.refresh.interval.ms: "1000"
protocol:
  models:
    - name: bc
      class_names: [malignant, benign]
      label_output: predict
      scores_output: predict_proba
"#;

fn sidecar_config(outbox: &std::path::Path) -> String {
    QUALITY.replace(
        "  kafka:\n",
        &format!(
            "  backend: kafka\n  kafka:\n    outbox_path: {}\n",
            outbox.display()
        ),
    )
}

/// Posts labels (NDJSON) to an admin URL until Kafka took them (202): a
/// labelling pipeline retries a 503 while the broker is away.
async fn send_labels(url: &str, items: &[Value]) -> Value {
    let body: Vec<String> = items.iter().map(Value::to_string).collect();
    let body = body.join("\n");
    eventually("labels accepted", Duration::from_secs(120), || {
        let body = body.clone();
        async move {
            let resp = http()
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .ok()?;
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.ok()?;
            match status {
                202 => Some(v),
                503 => None,
                _ => panic!("{status} {v}"),
            }
        }
    })
    .await
}

fn label_item(i: usize, y: &[&str]) -> Value {
    json!({"request_id": format!("bc-{}", i / 5), "row": i % 5, "label": y[i], "model": "bc"})
}

/// Three sidecars, two joiners, one real model. Labels go to other sidecars
/// (and a joiner) than the ones that served; a sidecar is killed and
/// replaced by a fresh one between predictions and labels; a joiner is
/// SIGKILLed and restarted mid-stream; the broker is stopped for 30 s while
/// traffic and labels go on; some labels come before their predictions and
/// some twice. Every figure, read from either joiner, equals
/// scikit-learn's on the union of all rows, and no model request failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_joins_through_kafka_and_matches_scikit_learn() {
    let server = mlserver(&["bc"]).await;
    let broker = Broker::start().await;
    broker.topics(4);
    let dir = tempfile::tempdir().unwrap();
    let mut joiners = [
        Joiner::start(&broker.bootstrap(), QUALITY, dir.path(), "j1"),
        Joiner::start(&broker.bootstrap(), QUALITY, dir.path(), "j2"),
    ];
    // A sidecar in front of the model with its own outbox.
    let sidecar = |name: &str| {
        let config = sidecar_config(&dir.path().join(format!("outbox-{name}.redb")));
        let options = Options::new(server.url(""))
            .config(&config)
            .env("MODELWATCH_KAFKA_BOOTSTRAP", &broker.bootstrap());
        Modelwatch::start(options)
    };
    let mut sidecars = Vec::new();
    for i in 0..3 {
        sidecars.push(sidecar(&i.to_string()).await);
    }
    for j in &joiners {
        wait_ok(&j.url("/readyz"), "joiner ready", Duration::from_secs(60)).await;
    }
    let (x, y) = bc_data();
    let n = x.len();
    let batches = n.div_ceil(5);
    let mut pred: Vec<Value> = vec![Value::Null; n];
    let mut proba: Vec<Vec<f64>> = vec![Vec::new(); n];
    let infer = |mw: &Modelwatch, b: usize| {
        let url = mw.url("/v2/models/bc/infer");
        let rows = x[b * 5..((b + 1) * 5).min(n)].to_vec();
        async move { oip_infer(&url, &rows, Some(&format!("bc-{b}"))).await }
    };
    let mut record = |b: usize, answer: &Value| {
        let outs = answer["outputs"].as_array().unwrap();
        let p = &outs.iter().find(|o| o["name"] == "predict").unwrap()["data"];
        let pr: Vec<f64> = serde_json::from_value(
            outs.iter().find(|o| o["name"] == "predict_proba").unwrap()["data"].clone(),
        )
        .unwrap();
        for (k, v) in p.as_array().unwrap().iter().enumerate() {
            pred[b * 5 + k] = json!(["malignant", "benign"][v.as_f64().unwrap() as usize]);
            proba[b * 5 + k] = pr[k * 2..k * 2 + 2].to_vec();
        }
    };

    // Labels first for the first 10 requests (to a joiner): they wait.
    let early: Vec<Value> = (0..50).map(|i| label_item(i, &y)).collect();
    let a = send_labels(&joiners[0].url("/v1/feedback"), &early).await;
    assert_eq!(a["accepted"], 50, "{a}");

    // Phase 1: requests 0..40 round-robin over the three sidecars.
    for b in 0..40 {
        let answer = infer(&sidecars[b % 3], b).await;
        record(b, &answer);
    }
    // The third sidecar dies (SIGKILL) once its records are in Kafka; a
    // fresh one (empty outbox) takes its place.
    eventually("sidecar 3 delivered", Duration::from_secs(30), || async {
        let m = sidecars[2].metrics().await;
        let d = prom_value(
            &m,
            "modelwatch_kafka_produced_total",
            &[("result", "delivered")],
        );
        (d == Some(13.0 * 5.0)).then_some(())
    })
    .await;
    {
        let mut old = sidecars.pop().unwrap();
        let mut c = old.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
    sidecars.push(sidecar("3-new").await);
    // Labels of 50..200, each to another sidecar than the one that served.
    for b in 10..40 {
        let items: Vec<Value> = (b * 5..(b + 1) * 5).map(|i| label_item(i, &y)).collect();
        let a = send_labels(&sidecars[(b + 1) % 3].admin_url("/v1/feedback"), &items).await;
        assert_eq!(a["accepted"], 5, "{a}");
    }

    // Phase 2: requests 40..80; joiner 1 is SIGKILLed halfway and restarted.
    for b in 40..80 {
        if b == 60 {
            joiners[0].kill();
        }
        let answer = infer(&sidecars[b % 3], b).await;
        record(b, &answer);
    }
    joiners[0].restart();
    let items: Vec<Value> = (200..400).map(|i| label_item(i, &y)).collect();
    send_labels(&sidecars[0].admin_url("/v1/feedback"), &items[..100]).await;

    // Phase 3: the broker stops for 30 s; traffic and labels go on.
    broker.signal("-STOP");
    let stopped = std::time::Instant::now();
    let more = items[100..].to_vec();
    let url = sidecars[1].admin_url("/v1/feedback");
    let labels_during = tokio::spawn(async move { send_labels(&url, &more).await });
    for b in 80..batches {
        let answer = infer(&sidecars[b % 3], b).await;
        record(b, &answer);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed())).await;
    // The outboxes hold what Kafka did not take.
    let mut waiting = 0.0;
    for s in &sidecars {
        waiting +=
            prom_value(&s.metrics().await, "modelwatch_kafka_outbox_records", &[]).unwrap_or(0.0);
    }
    broker.signal("-CONT");
    labels_during.await.unwrap();
    assert!(
        waiting > 0.0,
        "records waited in the outboxes during the outage"
    );

    // The last labels, and the first 100 again (duplicates).
    let last: Vec<Value> = (400..n).map(|i| label_item(i, &y)).collect();
    send_labels(&joiners[1].url("/v1/feedback"), &last).await;
    let again: Vec<Value> = (0..100).map(|i| label_item(i, &y)).collect();
    send_labels(&sidecars[2].admin_url("/v1/feedback"), &again).await;

    // Every figure from either joiner equals scikit-learn's on all rows.
    let r = crate::quality::reference(&json!({
        "task": "classification", "classes": ["malignant", "benign"], "positive": "benign",
        "y_true": y, "y_pred": pred, "proba": proba, "reference_rows": 100, "bins": 200,
    }));
    for j in &joiners {
        let (w, total) = eventually("fleet figures", Duration::from_secs(120), || async {
            let q = j.quality().await;
            let w = window_of(&q, "bc", "1h")?;
            let t = window_of(&q, "bc", "total")?;
            let all = n as u64;
            (w["labelled"] == all && w["predictions"] == all && t["labelled"] == all)
                .then_some((w, t))
        })
        .await;
        crate::quality::check_realized(&w, &total, &r);
        let q = j.quality().await;
        assert_eq!(
            (q["pending"].as_u64(), q["early_labels"].as_u64()),
            (Some(0), Some(0)),
            "{q}"
        );
        assert_eq!(q["joiner"]["fleet"], 4, "{q}");
    }
    // Outboxes drained; no prediction lost on the way.
    for s in &sidecars {
        let m = s.metrics().await;
        assert_eq!(
            prom_value(&m, "modelwatch_kafka_outbox_records", &[]),
            Some(0.0)
        );
        assert_eq!(
            prom_value(&m, "modelwatch_kafka_outbox_dropped_total", &[]),
            None
        );
    }
    let mut duplicates = 0.0;
    for j in &joiners {
        duplicates += prom_value(
            &j.metrics().await,
            "modelwatch_quality_feedback_items_total",
            &[("result", "duplicate")],
        )
        .unwrap_or(0.0);
    }
    assert!(
        duplicates >= 100.0,
        "the labels sent twice are duplicates: {duplicates}"
    );
}

/// Bad input never stops the joiner or the sidecar: malformed records on
/// both topics are skipped and counted; a sidecar whose broker is down at
/// start proxies anyway and delivers once it is up; topics with different
/// partition counts are refused at start with both counts named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_a_missing_broker_and_wrong_partition_counts() {
    let upstream = modelwatch::demo::model_server::start().await.unwrap();
    // The broker is not there yet: the sidecar proxies, records wait.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.redb");
    let config = format!(
        "quality:\n  backend: kafka\n  kafka:\n    bootstrap: 127.0.0.1:{port}\n    delivery_timeout: 2s\n    outbox_path: {}\n    outbox_max_records: 15\n",
        outbox.display()
    );
    let mw = Modelwatch::start(Options::new(format!("http://{upstream}")).config(&config)).await;
    for i in 0..20 {
        let resp = http()
            .post(mw.url("/v2/models/demo-classifier/infer"))
            .header("x-request-id", format!("early-{i}"))
            .json(&json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    eventually(
        "records wait in the outbox",
        Duration::from_secs(30),
        || async {
            // The outbox holds 15; the other 5 are dropped and counted.
            let m = mw.metrics().await;
            let dropped = prom_value(
                &m,
                "modelwatch_kafka_outbox_dropped_total",
                &[("reason", "outbox_full")],
            );
            (prom_value(&m, "modelwatch_kafka_outbox_records", &[]) == Some(15.0)
                && dropped == Some(5.0))
            .then_some(())
        },
    )
    .await;
    // A label cannot be taken: 503 with a reason, not lost silently.
    let resp = http()
        .post(mw.admin_url("/v1/feedback"))
        .json(&json!({"request_id": "early-0", "label": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("Kafka"),
        "{body}"
    );

    // The broker comes up: the outbox drains.
    let broker = Broker::start_on(port).await;
    broker.topics(2);
    eventually("the outbox drains", Duration::from_secs(60), || async {
        let m = mw.metrics().await;
        let delivered = prom_value(
            &m,
            "modelwatch_kafka_produced_total",
            &[("result", "delivered")],
        );
        (prom_value(&m, "modelwatch_kafka_outbox_records", &[]) == Some(0.0)
            && delivered >= Some(15.0))
        .then_some(())
    })
    .await;

    // Malformed records on both topics, then good ones.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for (topic, payload) in [
        (PREDICTIONS, "not json"),
        (PREDICTIONS, r#"{"v": 7, "request_id": "x"}"#),
        (PREDICTIONS, r#"{"v": 1, "request_id": "x"}"#),
        (LABELS, "{"),
        (LABELS, r#"{"v": 1, "label": 1}"#),
    ] {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key("x")
                    .payload(payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let resp = http()
        .post(mw.admin_url("/v1/feedback"))
        .json(&json!({"items": [{"request_id": "early-0", "label": 0}, {"request_id": "early-1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["accepted"].as_u64(), body["invalid"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );

    let joiner = Joiner::start(
        &broker.bootstrap(),
        "quality:\n  refresh_interval: 200ms\n  min_samples: 1\n",
        dir.path(),
        "j",
    );
    wait_ok(
        &joiner.url("/readyz"),
        "joiner ready",
        Duration::from_secs(60),
    )
    .await;
    eventually(
        "malformed records counted, the good ones joined",
        Duration::from_secs(60),
        || async {
            let m = joiner.metrics().await;
            let bad = |topic: &str| {
                prom_value(
                    &m,
                    "modelwatch_kafka_records_malformed_total",
                    &[("topic", topic)],
                )
            };
            let q = joiner.quality().await;
            let w = window_of(&q, "demo-classifier", "1h")?;
            (bad(PREDICTIONS) == Some(3.0)
                && bad(LABELS) == Some(2.0)
                && w["labelled"] == 1
                && w["predictions"] == 15)
                .then_some(())
        },
    )
    .await;
    assert!(joiner.log_text().contains("malformed record is skipped"));
    drop(joiner);

    // Topics whose partition counts differ: refused at start, both named.
    let other = Broker::start().await;
    other.create_topic(PREDICTIONS, 3);
    other.create_topic(LABELS, 2);
    other.create_topic(STATE, 1);
    let mut j = Joiner::start(&other.bootstrap(), "", dir.path(), "wrong");
    let status = j.exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2));
    let log = j.log_text();
    assert!(
        log.contains("modelwatch.predictions has 3 partitions and modelwatch.labels has 2"),
        "{log}"
    );
}

/// A joiner that starts behind (a rebuilt partition, a restart after a
/// while) reads labels no faster than the predictions they follow: 3000
/// predictions, then 3000 labels, all in Kafka before the joiner starts,
/// with room for only 50 early labels. Every label is joined; none is lost
/// as unmatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_catching_up_reads_labels_after_their_predictions() {
    let broker = Broker::start().await;
    broker.topics(2);
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "10")
        .create()
        .unwrap();
    let n = 3000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (topic, label) in [(PREDICTIONS, false), (LABELS, true)] {
        let sends = (0..n).map(|i| {
            let id = format!("c-{i}");
            let (truth, predicted) = (["a", "b"][i % 2], ["a", "b"][(i / 2) % 2]);
            let payload = if label {
                json!({"v": 1, "request_id": id, "label": truth})
            } else {
                json!({"v": 1, "request_id": id, "row": 0, "model": "m", "model_version": "v1",
                       "time_ms": now_ms - 60_000 + i as u64, "prediction": predicted,
                       "scores": [["a", 0.4], ["b", 0.6]], "sample_rate": 1.0})
            }
            .to_string();
            let producer = producer.clone();
            async move {
                producer
                    .send(
                        rdkafka::producer::FutureRecord::to(topic)
                            .key(&id)
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        });
        for r in futures_util::future::join_all(sends).await {
            r.unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let joiner = Joiner::start(
        &broker.bootstrap(),
        "quality:\n  refresh_interval: 200ms\n  min_samples: 1\n  max_early_labels: 50\n  label_ttl: 90days\n  windows: [24000h]\n",
        dir.path(),
        "j",
    );
    let w = eventually("every label joined", Duration::from_secs(120), || async {
        let q = joiner.quality().await;
        let w = window_of(&q, "m", "24000h")?;
        (w["labelled"] == n as u64).then_some(w)
    })
    .await;
    assert_eq!(w["accuracy"], 0.5, "{w}");
    let m = joiner.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_quality_feedback_items_total",
            &[("result", "unmatched")]
        ),
        None,
        "no label lost"
    );
}

/// Topics are not created unless asked: a joiner started before them says
/// which are missing and is not ready; one with `create_topics` makes them
/// (the state topic compacted) and becomes ready, and the first joiner then
/// finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_are_named_and_created_only_when_asked() {
    let broker = Broker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = "quality:\n  refresh_interval: 200ms\n";
    let waiting = Joiner::start(&broker.bootstrap(), config, dir.path(), "waiting");
    eventually(
        "the missing topics named",
        Duration::from_secs(30),
        || async {
            waiting
                .log_text()
                .contains("waiting for Kafka topics")
                .then_some(())
        },
    )
    .await;
    let log = waiting.log_text();
    for t in [PREDICTIONS, LABELS, STATE] {
        assert!(log.contains(t), "{t} not named: {log}");
    }
    let resp = http().get(waiting.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);

    let creating = Joiner::start(
        &broker.bootstrap(),
        "quality:\n  refresh_interval: 200ms\n  kafka:\n    create_topics: true\n    partitions: 3\n",
        dir.path(),
        "creating",
    );
    wait_ok(
        &creating.url("/readyz"),
        "the creating joiner ready",
        Duration::from_secs(60),
    )
    .await;
    wait_ok(
        &waiting.url("/readyz"),
        "the waiting joiner ready",
        Duration::from_secs(60),
    )
    .await;
    let q = creating.quality().await;
    assert_eq!(q["joiner"]["partitions"], 3, "{q}");
}
