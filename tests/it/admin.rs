//! The admin port's own protection: a token for the endpoints that change
//! state or reveal payloads (refusals counted), `/metrics` and health open;
//! TLS with a certificate that is re-read when its files change.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

const TOKEN: &str = "an-admin-token-of-32-characters!";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_payloads_and_changes_only() {
    let up = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let mw = Modelwatch::start(Options::new(up.url()).config(&format!(
        "admin:\n  recent_records: 10\n  token_file: {}\nsampling:\n  rate: 1.0\n",
        token.display()
    )))
    .await;
    let client = http();
    // Open: metrics, health, status, figures.
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/v1/status",
        "/v1/quality",
        "/v1/gate?baseline=a&candidate=b",
    ] {
        let r = client.get(mw.admin_url(path)).send().await.unwrap();
        assert_ne!(r.status().as_u16(), 401, "{path} must stay open");
    }
    // Guarded: records (payloads), feedback, reference reset, the gate webhook.
    let guarded = [
        ("GET", "/v1/records", "records"),
        ("POST", "/v1/feedback", "feedback"),
        ("POST", "/v1/quality/reference/reset", "reference_reset"),
        ("POST", "/v1/gate", "gate"),
    ];
    for (method, path, endpoint) in guarded {
        let req = |auth: Option<&str>| {
            let mut r = if method == "GET" {
                client.get(mw.admin_url(path))
            } else {
                client.post(mw.admin_url(path)).json(&json!({}))
            };
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            r
        };
        for wrong in [None, Some("Bearer not-the-token"), Some(TOKEN)] {
            let r = req(wrong).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{method} {path} with {wrong:?}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "unauthorized");
        }
        let r = req(Some(&format!("Bearer {TOKEN}"))).send().await.unwrap();
        assert_ne!(r.status().as_u16(), 401, "{method} {path} with the token");
        let m = mw.metrics().await;
        assert_eq!(
            prom_value(
                &m,
                "modelwatch_admin_auth_failures_total",
                &[("endpoint", endpoint)]
            ),
            Some(3.0),
            "{m}"
        );
    }
    // The token is read at each request: a rotated secret is taken at once.
    std::fs::write(&token, "a-new-admin-token-after-rotation").unwrap();
    let r = client
        .get(mw.admin_url("/v1/records"))
        .header("authorization", "Bearer a-new-admin-token-after-rotation")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(!mw.log_text().contains(TOKEN), "the token in the log");
}

/// The admin port's answer over https, or None.
fn admin_https(port: u16, ca: &std::path::Path, path: &str) -> Option<String> {
    curl_https(ca, &[&format!("https://127.0.0.1:{port}{path}")])
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The certificate `openssl s_client` is served on the port, as text.
fn served_certificate(port: u16) -> String {
    let child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_speaks_tls_and_takes_a_rotated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_ca(d);
    server_certificate(d, "first", "DNS:localhost,IP:127.0.0.1");
    server_certificate(d, "second", "DNS:localhost,IP:127.0.0.1");
    std::fs::copy(d.join("first.crt"), d.join("tls.crt")).unwrap();
    std::fs::copy(d.join("first.key"), d.join("tls.key")).unwrap();
    let up = TestUpstream::start().await;
    let config = d.join("modelwatch.yaml");
    std::fs::write(
        &config,
        format!(
            "admin:\n  tls:\n    cert_file: {}\n    key_file: {}\n",
            d.join("tls.crt").display(),
            d.join("tls.key").display()
        ),
    )
    .unwrap();
    let admin = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--upstream", &up.url()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ca = d.join("ca.crt");
    let metrics = eventually("/metrics over https", Duration::from_secs(20), || async {
        admin_https(admin, &ca, "/metrics")
    })
    .await;
    assert!(metrics.contains("modelwatch_upstream_up"));
    let serial = |cert: &str| {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(d.join(cert))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("serial=")
            .to_string()
    };
    let served_serial = || {
        let text = served_certificate(admin);
        let start = text.find("-----BEGIN CERTIFICATE-----").unwrap();
        let end = text.find("-----END CERTIFICATE-----").unwrap() + 25;
        std::fs::write(d.join("served.crt"), &text[start..end]).unwrap();
        serial("served.crt")
    };
    assert_eq!(served_serial(), serial("first.crt"));
    // Rotation: new files, no restart; plain HTTP is refused meanwhile.
    std::fs::copy(d.join("second.key"), d.join("tls.key")).unwrap();
    std::fs::copy(d.join("second.crt"), d.join("tls.crt")).unwrap();
    eventually(
        "the rotated certificate served",
        Duration::from_secs(30),
        || async { (served_serial() == serial("second.crt")).then_some(()) },
    )
    .await;
    assert!(admin_https(admin, &ca, "/healthz").is_some());
    let plain = http()
        .get(format!("http://127.0.0.1:{admin}/healthz"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    assert!(!plain, "plain HTTP on a TLS admin port");
    let _ = child.kill();
    let _ = child.wait();
}
