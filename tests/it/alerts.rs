//! Alert rules end to end: a real scikit-learn model served by MLServer
//! behind modelwatch, labels sent through the feedback API that make its
//! accuracy fall, and the alert read back from a real Prometheus
//! Alertmanager (API v2) and from Alertmanager's own webhook notification;
//! then more labels bring accuracy back and the alert resolves.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

use crate::common::*;
use crate::models::{mlserver, oip_infer, predicted};

/// A POST receiver standing in for "some webhook endpoint": keeps every
/// call's path, headers and JSON body.
pub struct Hooks {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<(String, http::HeaderMap, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hooks {
    pub async fn start() -> Hooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<Vec<(String, http::HeaderMap, Bytes)>>> = Default::default();
        let c = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let c = c.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let c = c.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                let headers = req.headers().clone();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let mut calls = c.lock().unwrap();
                                // `/flaky` fails its first two calls.
                                let earlier = calls.iter().filter(|(p, _, _)| *p == path).count();
                                calls.push((path.clone(), headers, body));
                                let mut resp =
                                    http::Response::new(Full::new(Bytes::from_static(b"ok")));
                                if path == "/flaky" && earlier < 2 {
                                    *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                                }
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Hooks { addr, calls, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The calls to `path`: headers and JSON body.
    pub fn on(&self, path: &str) -> Vec<(http::HeaderMap, Value)> {
        self.raw(path)
            .into_iter()
            .map(|(h, b)| (h, serde_json::from_slice(&b).unwrap_or(Value::Null)))
            .collect()
    }

    /// Waits until `path` has received a call whose body's `status` is `status`.
    pub async fn wait_for(&self, path: &str, status: &str, what: &str, secs: u64) {
        eventually(what, Duration::from_secs(secs), || async {
            self.on(path)
                .into_iter()
                .find(|(_, v)| v["status"] == status)
                .map(|_| ())
        })
        .await;
    }

    /// The calls to `path`: headers and the exact body bytes.
    pub fn raw(&self, path: &str) -> Vec<(http::HeaderMap, Bytes)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }
}

/// A real Alertmanager on `port`, notifying `hook` (firing and resolved) within a second.
pub async fn alertmanager_on(port: u16, hook: &str) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook}\n        send_resolved: true\n"
    );
    std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
    let child = Command::new(testbed_bin("prometheus-alertmanager"))
        .arg(format!(
            "--config.file={}",
            dir.path().join("alertmanager.yml").display()
        ))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start alertmanager");
    let svc = Service { child, port, dir };
    wait_ok(
        &svc.url("/-/ready"),
        "alertmanager ready",
        Duration::from_secs(30),
    )
    .await;
    svc
}

const BC_CONFIG: &str = r#"
quality:
  refresh_interval: 100ms
  windows: [1h]
  min_samples: 30
protocol:
  models:
    - name: bc
      class_names: [malignant, benign]
      label_output: predict
      scores_output: predict_proba
alerts:
  evaluation_interval: 500ms
  alertmanager:
    url: ALERTMANAGER
    resend_interval: 2s
  webhooks:
    - name: team
      url: WEBHOOK
      secret: s3cret
    - name: flaky
      url: FLAKY
      max_retries: 3
  actions:
    - name: rollback
      url: ACTION
  rules:
    - name: ModelAccuracyLow
      figure: modelwatch.quality.accuracy
      match: {model: bc, window: 1h}
      below: 0.8
      for: 1s
      hysteresis: 0.02
      min_samples: 30
      severity: critical
      labels: {team: ml}
      action: rollback
      annotations:
        summary: "accuracy of {{ labels.model }} is {{ value }} (below {{ threshold }})"
        runbook_url: https://runbooks.example/model-accuracy
"#;

/// Sends rows of the breast-cancer data through modelwatch; returns the
/// predicted class names, row by row (request ids `bc-{batch}`).
async fn predict(mw: &Modelwatch, x: &[Vec<f64>], first_batch: usize) -> Vec<String> {
    let mut pred = Vec::new();
    for (b, chunk) in x.chunks(50).enumerate() {
        let id = format!("bc-{}", first_batch + b);
        let answer = oip_infer(&mw.url("/v2/models/bc/infer"), chunk, Some(&id)).await;
        for v in predicted(&answer) {
            pred.push(["malignant", "benign"][v.as_f64().unwrap() as usize].to_string());
        }
    }
    pred
}

/// Labels rows `rows` of batches starting at `first_batch`: the predicted
/// class when `right`, the other class otherwise.
async fn label(
    mw: &Modelwatch,
    pred: &[String],
    rows: std::ops::Range<usize>,
    first_batch: usize,
    right: bool,
) {
    let items: Vec<String> = rows
        .map(|i| {
            let p = pred[i].as_str();
            let l = if right { p } else if p == "benign" { "malignant" } else { "benign" };
            json!({"request_id": format!("bc-{}", first_batch + i / 50), "row": i % 50, "label": l, "model": "bc"}).to_string()
        })
        .collect();
    let resp = http()
        .post(mw.admin_url("/v1/feedback"))
        .header("content-type", "application/x-ndjson")
        .body(items.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
}

pub async fn am_alerts(am: &Service) -> Vec<Value> {
    let v: Value = http()
        .get(am.url("/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_drop_reaches_a_real_alertmanager_and_resolves() {
    let (data, _) = crate::models::bc_data();
    let model = mlserver(&["bc"]).await;
    let hooks = Hooks::start().await;
    // Alertmanager is down when the alert fires: it must still arrive.
    let am_port = free_port();
    let config = BC_CONFIG
        .replace("ALERTMANAGER", &format!("http://127.0.0.1:{am_port}"))
        .replace("WEBHOOK", &hooks.url("/team"))
        .replace("FLAKY", &hooks.url("/flaky"))
        .replace("ACTION", &hooks.url("/rollback"));
    let mw = Modelwatch::start(Options::new(model.url("")).config(&config)).await;

    let pred = predict(&mw, &data[..100], 0).await;
    eventually("predictions stored", Duration::from_secs(30), || async {
        (mw.admin_json("/v1/quality").await["stored"].as_u64() == Some(100)).then_some(())
    })
    .await;
    // 40 right, 60 wrong: accuracy 0.4 over 100 labelled rows.
    label(&mw, &pred, 0..40, 0, true).await;
    label(&mw, &pred, 40..100, 0, false).await;

    let firing = eventually(
        "alert firing in modelwatch",
        Duration::from_secs(30),
        || async {
            let a = mw.admin_json("/v1/alerts").await;
            a["alerts"]
                .as_array()?
                .iter()
                .find(|x| x["state"] == "firing")
                .cloned()
        },
    )
    .await;
    assert_eq!(firing["labels"]["model"], "bc");
    assert!(
        (firing["value"].as_f64().unwrap() - 0.4).abs() < 1e-9,
        "{firing}"
    );
    let metrics = mw.metrics().await;
    assert_eq!(
        prom_value(
            &metrics,
            "modelwatch_alerts",
            &[
                ("alertname", "ModelAccuracyLow"),
                ("alertstate", "firing"),
                ("severity", "critical")
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
    // Alertmanager down: calls fail and are counted.
    eventually(
        "failed alertmanager calls counted",
        Duration::from_secs(10),
        || async {
            let m = mw.metrics().await;
            prom_value(
                &m,
                "modelwatch_alert_notifications_total",
                &[("sink", "alertmanager"), ("result", "failed")],
            )
            .filter(|v| *v >= 1.0)
        },
    )
    .await;

    let am = alertmanager_on(am_port, &hooks.url("/am")).await;
    let alert = eventually("alert in Alertmanager", Duration::from_secs(40), || async {
        am_alerts(&am)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "ModelAccuracyLow")
    })
    .await;
    let labels = &alert["labels"];
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["model"], "bc");
    assert_eq!(labels["window"], "1h");
    assert_eq!(labels["team"], "ml");
    assert!(labels["instance"].is_string(), "{alert}");
    assert_eq!(
        alert["annotations"]["summary"],
        "accuracy of bc is 0.4 (below 0.8)"
    );
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://runbooks.example/model-accuracy"
    );
    assert_eq!(alert["status"]["state"], "active");
    // Alertmanager notifies its own receiver: the whole chain works.
    hooks
        .wait_for("/am", "firing", "Alertmanager's firing notification", 30)
        .await;

    // The team webhook: one firing call, signed; the action: called once with the evidence.
    let team = hooks.on("/team");
    assert_eq!(team.len(), 1, "{team:?}");
    let (headers, body) = &team[0];
    let (_, raw) = &hooks.raw("/team")[0];
    assert_eq!(
        headers["x-modelwatch-signature"].to_str().unwrap(),
        modelwatch::alerts::sinks::signature("s3cret", raw),
        "HMAC-SHA256 of the exact body"
    );
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "ModelAccuracyLow");
    assert_eq!(body["alerts"][0]["evidence"]["threshold"], 0.8);
    // The webhook's fingerprint is the one Alertmanager computed for the same alert.
    assert_eq!(
        body["alerts"][0]["fingerprint"], alert["fingerprint"],
        "webhook {body} vs Alertmanager {alert}"
    );
    let rollback = hooks.on("/rollback");
    assert_eq!(rollback.len(), 1);
    assert!(
        (rollback[0].1["alerts"][0]["evidence"]["value"]
            .as_f64()
            .unwrap()
            - 0.4)
            .abs()
            < 1e-9
    );
    assert!(
        rollback[0].1["alerts"][0]["evidence"]["samples"]
            .as_f64()
            .unwrap()
            >= 100.0
    );

    // A webhook that fails twice: retried with backoff, then delivered; both failures counted.
    eventually(
        "the flaky webhook delivered after retries",
        Duration::from_secs(15),
        || async {
            let m = mw.metrics().await;
            let sent = prom_value(
                &m,
                "modelwatch_alert_notifications_total",
                &[("sink", "webhook:flaky"), ("result", "sent")],
            );
            let failed = prom_value(
                &m,
                "modelwatch_alert_notifications_total",
                &[("sink", "webhook:flaky"), ("result", "failed")],
            );
            (sent == Some(1.0) && failed == Some(2.0)).then_some(())
        },
    )
    .await;
    assert_eq!(hooks.on("/flaky").len(), 3);

    // Recovery: 300 more rows, labelled right: (40 + 300) / 400 = 0.85 > 0.8 + 0.02.
    let more = predict(&mw, &data[100..400], 2).await;
    eventually(
        "more predictions stored",
        Duration::from_secs(30),
        || async {
            (mw.admin_json("/v1/quality").await["stored"].as_u64() >= Some(400)).then_some(())
        },
    )
    .await;
    label(&mw, &more, 0..300, 2, true).await;
    eventually(
        "alert resolved in modelwatch",
        Duration::from_secs(30),
        || async {
            let a = mw.admin_json("/v1/alerts").await;
            a["alerts"]
                .as_array()?
                .iter()
                .find(|x| x["state"] == "resolved")
                .map(|_| ())
        },
    )
    .await;
    eventually(
        "alert resolved in Alertmanager",
        Duration::from_secs(30),
        || async {
            am_alerts(&am)
                .await
                .iter()
                .all(|a| {
                    a["labels"]["alertname"] != "ModelAccuracyLow"
                        || a["status"]["state"] != "active"
                })
                .then_some(())
        },
    )
    .await;
    hooks
        .wait_for(
            "/am",
            "resolved",
            "Alertmanager's resolved notification",
            30,
        )
        .await;
    hooks
        .wait_for("/team", "resolved", "the team webhook's resolved call", 10)
        .await;
    // One firing per firing: the action was not called again.
    assert_eq!(hooks.on("/rollback").len(), 1);
}

#[test]
fn rules_with_unknown_figures_or_bad_conditions_are_refused_at_start() {
    for (yaml, expect) in [
        (
            "alerts:\n  rules:\n    - {name: A, figure: modelwatch.quality.acuracy, below: 0.9}\n",
            "alerts.rules[0] (A).figure",
        ),
        (
            "alerts:\n  rules:\n    - {name: A, figure: modelwatch.quality.accuracy}\n",
            "exactly one of `above` and `below`",
        ),
        (
            "alerts:\n  rules:\n    - {name: A, figure: http.server.request.duration, stat: value, above: 1}\n",
            "for a histogram: mean, count, p50, p90, p95 or p99",
        ),
        (
            "alerts:\n  rules:\n    - {name: A, figure: modelwatch.quality.accuracy, below: 0.9, action: nope}\n",
            "alerts.actions",
        ),
        (
            "alerts:\n  rules:\n    - {name: A, figure: modelwatch.quality.accuracy, below: 0.9, condition: x}\n",
            "unknown field `condition`",
        ),
    ] {
        let (_dir, path) = temp_file("m.yaml", yaml);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml} was accepted");
        assert!(err.contains(expect), "{yaml}: {err}");
    }
}

/// Alertmanager behind TLS and basic auth (its `--web.config.file`), as most
/// production Alertmanagers are: trusted through `tls.ca_file`, logged in
/// with `basic_auth` (the password read from a file), the alert arrives. A
/// wrong password is a counted failure that names the 401; no CA, one that
/// names the unknown issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_over_https_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_ca(d);
    server_certificate(d, "am", "DNS:localhost,IP:127.0.0.1");
    // Alertmanager keeps bcrypt hashes of its users' passwords.
    let hash = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
        ])
        .output()
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$2"), "a bcrypt hash: {hash}");
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  alice: '{hash}'\n",
            d.join("am.crt").display(),
            d.join("am.key").display()
        ),
    )
    .unwrap();
    std::fs::write(d.join("password"), "s3cret\n").unwrap();
    std::fs::write(d.join("wrong"), "guess\n").unwrap();
    let (_am, port) = alertmanager_behind_web_config(d);
    let ca = d.join("ca.crt");
    let curl = |path: &str| {
        curl_https(
            &ca,
            &[
                "-u",
                "alice:s3cret",
                &format!("https://127.0.0.1:{port}{path}"),
            ],
        )
    };
    eventually(
        "Alertmanager over https",
        Duration::from_secs(30),
        || async { curl("/-/ready").filter(|b| !b.is_empty()) },
    )
    .await;

    let up = TestUpstream::start().await;
    let config = |password: &str, with_ca: bool| {
        format!(
            "alerts:\n  evaluation_interval: 500ms\n  alertmanager:\n    url: https://127.0.0.1:{port}\n    resend_interval: 2s\n    tls:\n      ca_file: '{}'\n    basic_auth:\n      username: alice\n      password_file: {}\n  rules:\n    - name: AlwaysFiring\n      figure: modelwatch.upstream.up\n      below: 2\n      severity: info\n",
            if with_ca { ca.display().to_string() } else { String::new() },
            d.join(password).display()
        )
    };
    let mw = Modelwatch::start(Options::new(up.url()).config(&config("password", true))).await;
    let alerts = eventually(
        "the alert in Alertmanager over https",
        Duration::from_secs(30),
        || async {
            let body = curl("/api/v2/alerts")?;
            let v: Value = serde_json::from_slice(&body).ok()?;
            v.as_array()?
                .iter()
                .any(|a| a["labels"]["alertname"] == "AlwaysFiring")
                .then_some(v)
        },
    )
    .await;
    assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
    let sent = |m: &str, result: &str| {
        prom_value(
            m,
            "modelwatch_alert_notifications_total",
            &[("sink", "alertmanager"), ("result", result)],
        )
    };
    assert!(sent(&mw.metrics().await, "sent").is_some_and(|n| n >= 1.0));

    // A wrong password: refused by Alertmanager, counted, the 401 in the log;
    // the password itself never is.
    let wrong = Modelwatch::start(Options::new(up.url()).config(&config("wrong", true))).await;
    eventually("failed calls counted", Duration::from_secs(20), || async {
        sent(&wrong.metrics().await, "failed").filter(|n| *n >= 1.0)
    })
    .await;
    let log = wrong.log_text();
    assert!(log.contains("401"), "{log}");
    assert!(
        !log.contains("guess") && !log.contains("s3cret"),
        "a secret in the log"
    );

    // No CA: the system's roots do not know the test CA.
    let untrusting =
        Modelwatch::start(Options::new(up.url()).config(&config("password", false))).await;
    eventually(
        "the unknown issuer named",
        Duration::from_secs(20),
        || async {
            untrusting
                .log_text()
                .contains("UnknownIssuer")
                .then_some(())
        },
    )
    .await;
}

/// Alertmanager requiring client certificates (`client_auth_type:
/// RequireAndVerifyClientCert`): modelwatch's certificate from another CA is
/// refused (counted, the TLS alert named); the files rotated to a certificate
/// of the trusted CA are taken at the next handshake, without a restart, and
/// the alert arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_with_mtls_and_a_rotated_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_ca(d);
    server_certificate(d, "am", "DNS:localhost,IP:127.0.0.1");
    server_certificate(d, "client", "DNS:modelwatch");
    let rogue = d.join("rogue");
    std::fs::create_dir(&rogue).unwrap();
    test_ca(&rogue);
    server_certificate(&rogue, "client", "DNS:modelwatch");
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
            d.join("am.crt").display(),
            d.join("am.key").display(),
            d.join("ca.crt").display()
        ),
    )
    .unwrap();
    let (_am, port) = alertmanager_behind_web_config(d);
    let curl = |path: &str| {
        curl_https(
            &d.join("ca.crt"),
            &[
                "--cert",
                d.join("client.crt").to_str().unwrap(),
                "--key",
                d.join("client.key").to_str().unwrap(),
                &format!("https://127.0.0.1:{port}{path}"),
            ],
        )
    };
    eventually(
        "Alertmanager with mTLS",
        Duration::from_secs(30),
        || async { curl("/-/ready").filter(|b| !b.is_empty()) },
    )
    .await;
    // Without a client certificate Alertmanager does not even answer.
    assert!(curl_https(
        &d.join("ca.crt"),
        &[&format!("https://127.0.0.1:{port}/-/ready")]
    )
    .is_none());

    // modelwatch starts with the rogue CA's certificate in its files.
    let mine = d.join("mine");
    std::fs::create_dir(&mine).unwrap();
    for f in ["client.crt", "client.key"] {
        std::fs::copy(rogue.join(f), mine.join(f)).unwrap();
    }
    let up = TestUpstream::start().await;
    let config = format!(
        "alerts:\n  evaluation_interval: 500ms\n  alertmanager:\n    url: https://127.0.0.1:{port}\n    resend_interval: 1s\n    timeout: 2s\n    tls:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n  rules:\n    - name: AlwaysFiring\n      figure: modelwatch.upstream.up\n      below: 2\n      severity: info\n",
        d.join("ca.crt").display(),
        mine.join("client.crt").display(),
        mine.join("client.key").display()
    );
    let mw = Modelwatch::start(Options::new(up.url()).config(&config)).await;
    let sent = |m: &str, result: &str| {
        prom_value(
            m,
            "modelwatch_alert_notifications_total",
            &[("sink", "alertmanager"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    eventually("refused calls counted", Duration::from_secs(20), || async {
        (sent(&mw.metrics().await, "failed") >= 1.0).then_some(())
    })
    .await;
    assert_eq!(sent(&mw.metrics().await, "sent"), 0.0);
    let alerts_in_am = || async {
        let body = curl("/api/v2/alerts")?;
        let v: Value = serde_json::from_slice(&body).ok()?;
        v.as_array()?
            .iter()
            .any(|a| a["labels"]["alertname"] == "AlwaysFiring")
            .then_some(())
    };
    assert!(alerts_in_am().await.is_none());

    // The secret is rotated: the trusted CA's certificate, no restart.
    for f in ["client.crt", "client.key"] {
        std::fs::copy(d.join(f), mine.join(f)).unwrap();
    }
    eventually(
        "the alert in Alertmanager with the rotated certificate",
        Duration::from_secs(60),
        alerts_in_am,
    )
    .await;
    assert!(sent(&mw.metrics().await, "sent") >= 1.0);
    assert!(mw.log_text().contains("client certificate reloaded"));
}

/// A webhook over https with a bearer token read from a file: trusted through
/// `tls.ca_file`, the token sent as `Authorization: Bearer`; the token file
/// rotated, the next call carries the new one (a rule added by a live reload
/// makes that call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_over_https_with_a_rotated_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_ca(d);
    server_certificate(d, "hook", "IP:127.0.0.1");
    let config = tls_server_config(d, "hook");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let c = calls.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, c) = (acceptor.clone(), c.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let c = c.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        c.lock()
                            .unwrap()
                            .push((auth, serde_json::from_slice(&body).unwrap_or_default()));
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let token = d.join("token");
    std::fs::write(&token, "first-token-0123456789\n").unwrap();
    let rules = |extra: &str| {
        format!(
            "alerts:\n  evaluation_interval: 200ms\n  webhooks:\n    - name: team\n      url: https://{addr}/hook\n      tls:\n        ca_file: {}\n      bearer_token_file: {}\n  rules:\n    - name: AlwaysOn\n      figure: modelwatch.upstream.up\n      below: 2\n      severity: info\n{extra}",
            d.join("ca.crt").display(),
            token.display()
        )
    };
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url()).config(&rules(""))).await;
    let call_for = |rule: &'static str| {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            async move {
                calls
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(_, b)| b["alert"]["rule"] == rule || b.to_string().contains(rule))
                    .map(|(auth, _)| auth.clone())
            }
        }
    };
    let auth = eventually(
        "the webhook over https",
        Duration::from_secs(20),
        call_for("AlwaysOn"),
    )
    .await;
    assert_eq!(auth, "Bearer first-token-0123456789");

    std::fs::write(&token, "second-token-0123456789\n").unwrap();
    std::fs::write(
        &mw.config_path,
        rules("    - name: AlsoOn\n      figure: modelwatch.upstream.up\n      below: 3\n      severity: info\n"),
    )
    .unwrap();
    let r = http().post(mw.admin_url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let auth = eventually(
        "the new rule's call",
        Duration::from_secs(20),
        call_for("AlsoOn"),
    )
    .await;
    assert_eq!(auth, "Bearer second-token-0123456789");
    // The unchanged rule was not notified again.
    let again = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, b)| b.to_string().contains("AlwaysOn"))
        .count();
    assert_eq!(again, 1, "{:?}", calls.lock().unwrap());
    assert!(
        !mw.log_text().contains("token-0123456789"),
        "a secret in the log"
    );
    server.abort();
}

/// The webhook server's certificate is replaced by one of a new CA: calls
/// fail (the certificate does not verify) until modelwatch's `tls.ca_file` holds the new
/// CA; then the retried call arrives, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ca_file_is_trusted_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, mine) = (
        dir.path().join("old"),
        dir.path().join("new"),
        dir.path().join("mine"),
    );
    for d in [&old, &new, &mine] {
        std::fs::create_dir(d).unwrap();
    }
    for d in [&old, &new] {
        test_ca(d);
        server_certificate(d, "hook", "IP:127.0.0.1");
    }
    std::fs::copy(old.join("ca.crt"), mine.join("ca.crt")).unwrap();
    // The server closes every connection after its answer, so each call is a new handshake.
    let acceptor = Arc::new(Mutex::new(tokio_rustls::TlsAcceptor::from(Arc::new(
        tls_server_config(&old, "hook"),
    ))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let (a, b) = (acceptor.clone(), bodies.clone());
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, b) = (a.lock().unwrap().clone(), b.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let b = b.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        b.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&body).into_owned());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let rules = |extra: &str| {
        format!(
            "alerts:\n  evaluation_interval: 200ms\n  webhooks:\n    - name: team\n      url: https://{addr}/hook\n      max_retries: 8\n      tls:\n        ca_file: {}\n  rules:\n    - name: AlwaysOn\n      figure: modelwatch.upstream.up\n      below: 2\n      severity: info\n{extra}",
            mine.join("ca.crt").display()
        )
    };
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url()).config(&rules(""))).await;
    let arrived = |rule: &'static str| {
        let bodies = bodies.clone();
        move || {
            let bodies = bodies.clone();
            async move {
                bodies
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|b| b.contains(rule))
                    .then_some(())
            }
        }
    };
    eventually(
        "the first call",
        Duration::from_secs(20),
        arrived("AlwaysOn"),
    )
    .await;

    // The server moves to the new CA's certificate; modelwatch still trusts the old CA.
    *acceptor.lock().unwrap() =
        tokio_rustls::TlsAcceptor::from(Arc::new(tls_server_config(&new, "hook")));
    std::fs::write(
        &mw.config_path,
        rules("    - name: AlsoOn\n      figure: modelwatch.upstream.up\n      below: 3\n      severity: info\n"),
    )
    .unwrap();
    let r = http().post(mw.admin_url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // (Both test CAs have the same name: the old one is found and its signature fails.)
    eventually(
        "the refused call logged",
        Duration::from_secs(20),
        || async {
            mw.log_text()
                .contains("invalid peer certificate: BadSignature")
                .then_some(())
        },
    )
    .await;
    assert!(arrived("AlsoOn")().await.is_none());

    // The CA file is rotated (a Kubernetes secret update): the retry gets through.
    std::fs::copy(new.join("ca.crt"), mine.join("ca.crt")).unwrap();
    eventually(
        "the call with the rotated CA",
        Duration::from_secs(60),
        arrived("AlsoOn"),
    )
    .await;
    assert!(mw.log_text().contains("CA file reloaded"));
    server.abort();
}

/// A real Alertmanager (no receivers) behind `dir/web.yml` (its
/// `--web.config.file`: TLS, basic auth, client certificates); not waited for.
fn alertmanager_behind_web_config(dir: &std::path::Path) -> (Service, u16) {
    std::fs::write(
        dir.join("am.yml"),
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let child = Command::new(testbed_bin("prometheus-alertmanager"))
        .arg(format!("--config.file={}", dir.join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!(
            "--web.config.file={}",
            dir.join("web.yml").display()
        ))
        .arg("--cluster.listen-address=")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start alertmanager");
    (
        Service {
            child,
            port,
            dir: tempfile::tempdir().unwrap(),
        },
        port,
    )
}
