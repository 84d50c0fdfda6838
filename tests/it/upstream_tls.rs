//! `proxy.upstream: https://…`: a real llama-server that only speaks TLS,
//! the CA, the server name override, the failures a team meets (unknown
//! issuer, a certificate for another name), and HTTP/2 taken by ALPN.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::common::*;
use crate::models::llama_server_command;

const CHAT: &str =
    r#"{"model":"tiny","messages":[{"role":"user","content":"Hello"}],"max_tokens":4}"#;

async fn chat(mw: &Modelwatch) -> (u16, Value) {
    let r = http()
        .post(mw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_model_server_with_ca_and_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_ca(d);
    // The certificate names the server only by DNS name, not by the IP it is reached on.
    server_certificate(d, "model", "DNS:model.internal");
    let (mut cmd, port) = llama_server_command(&[
        "--ssl-key-file",
        d.join("model.key").to_str().unwrap(),
        "--ssl-cert-file",
        d.join("model.crt").to_str().unwrap(),
    ]);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _llama = Service {
        child,
        port,
        dir: tempfile::tempdir().unwrap(),
    };
    let ca = d.join("ca.crt");
    eventually(
        "llama-server over https",
        Duration::from_secs(90),
        || async {
            curl_https(
                &ca,
                &[
                    "--resolve",
                    &format!("model.internal:{port}:127.0.0.1"),
                    &format!("https://model.internal:{port}/health"),
                ],
            )
        },
    )
    .await;
    let upstream = format!("https://127.0.0.1:{port}");
    let config = |tls: &str| {
        format!("admin:\n  readiness:\n    http_path: /health\n    interval: 200ms\nproxy:\n  upstream_tls:\n{tls}")
    };

    // The CA and the name the certificate carries: traffic flows, the
    // readiness probe (GET /health over https) says ready, GenAI figures recorded.
    let ok = Modelwatch::start(Options::new(&upstream).config(&config(&format!(
        "    ca_file: {}\n    server_name: model.internal\n",
        ca.display()
    ))))
    .await;
    let (status, body) = chat(&ok).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["message"].is_object(), "{body}");
    let m = eventually("the LLM figures", Duration::from_secs(10), || async {
        let m = ok.metrics().await;
        prom_value(&m, "modelwatch_llm_requests_total", &[])
            .filter(|n| *n >= 1.0)
            .map(|_| m)
    })
    .await;
    assert!(m.contains("gen_ai_server_request_duration_seconds_count"));

    // Without the CA: the system's roots do not know it. 502 `tls`, the
    // cause in the log, counted.
    let no_ca = Modelwatch::start(
        Options::new(&upstream)
            .config(&config("    server_name: model.internal\n"))
            .no_wait(),
    )
    .await;
    let (status, body) = chat(&no_ca).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "tls", "{body}");
    let m = no_ca.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_upstream_errors_total",
            &[("error_type", "tls")]
        ),
        Some(1.0)
    );
    assert!(
        no_ca.log_text().contains("UnknownIssuer"),
        "{}",
        no_ca.log_text()
    );
    assert_eq!(no_ca.status().await["upstream"]["up"], false);

    // The CA but not the name: the certificate is for model.internal, not 127.0.0.1.
    let no_name = Modelwatch::start(
        Options::new(&upstream)
            .config(&config(&format!("    ca_file: {}\n", ca.display())))
            .no_wait(),
    )
    .await;
    let (status, body) = chat(&no_name).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "tls", "{body}");
    let log = no_name.log_text();
    assert!(
        log.contains("certificate not valid for name \"127.0.0.1\""),
        "{log}"
    );
}

/// A TLS model server that offers HTTP/2 by ALPN (as Triton or a gRPC-first
/// server does): modelwatch takes it; answers say which version arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_negotiates_http2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_ca(d);
    server_certificate(d, "up", "IP:127.0.0.1");
    let (addr, _server) = tls_version_server(d, &[b"h2", b"http/1.1"]).await;
    let (addr1, _server1) = tls_version_server(d, &[b"http/1.1"]).await;
    let config = format!(
        "proxy:\n  upstream_tls:\n    ca_file: {}\n",
        d.join("ca.crt").display()
    );
    for (addr, expected) in [(addr, "HTTP/2.0"), (addr1, "HTTP/1.1")] {
        let mw = Modelwatch::start(Options::new(format!("https://{addr}")).config(&config)).await;
        for _ in 0..3 {
            let r = http().get(mw.url("/version")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), expected);
        }
    }
}

/// A TLS server (the test CA's `up` certificate) offering `alpn`, answering
/// every request with the HTTP version it arrived in.
async fn tls_version_server(
    dir: &std::path::Path,
    alpn: &[&[u8]],
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let mut config = tls_server_config(dir, "up");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let _ = &req;
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        format!("{:?}", req.version()),
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    (addr, task)
}
