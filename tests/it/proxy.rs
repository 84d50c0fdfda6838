//! The data path through the real binary: bytes unchanged, streaming in both
//! directions, headers, request ids, upgrades, faults and shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const SAMPLE_ALL: &str = "sampling:\n  rate: 1.0\n  max_body_bytes: 1024\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_bodies_are_forwarded_byte_identical() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url()).config(SAMPLE_ALL)).await;
    let client = http();
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let huge: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "malformed json",
            b"{\"model\": \"x\", \"messages\": [".to_vec(),
        ),
        ("not json", b"hello, model".to_vec()),
        ("invalid utf-8", vec![0xff, 0xfe, 0xfd, b'{', 0xc3, 0x28]),
        ("binary", binary),
        ("empty", Vec::new()),
        ("huge (3 MB, cap 1 KiB)", huge),
    ];
    for (what, body) in bodies {
        let resp = client
            .post(mw.url("/echo"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{what}");
        assert!(resp.headers().contains_key("x-request-id"), "{what}");
        let got = resp.bytes().await.unwrap();
        assert_eq!(got.len(), body.len(), "{what}: length");
        assert!(got[..] == body[..], "{what}: bytes differ");
    }
    // A body that claims a protocol but breaks it: forwarded as it is, counted
    // as a decode error with a bounded reason.
    let broken = b"{\"inputs\": [{\"name\": \"x\", \"shape\": [2147483648, 4], \"datatype\": \"FP32\", \"data\": [1".to_vec();
    let resp = client
        .post(mw.url("/v2/models/echo/infer"))
        .body(broken.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap(), broken);
    let m = eventually("decode error counted", Duration::from_secs(5), || async {
        let m = mw.metrics().await;
        prom_value(
            &m,
            "modelwatch_decode_errors_total",
            &[
                ("modelwatch_protocol", "open-inference-v2"),
                ("reason", "invalid_json"),
            ],
        )
        .map(|_| m)
    })
    .await;
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_decode_errors_total",
            &[
                ("modelwatch_protocol", "open-inference-v2"),
                ("reason", "invalid_json")
            ]
        ),
        Some(1.0)
    );
    // Every exchange was sampled and analysed; the huge one was truncated, not rejected.
    let metrics = eventually("samples analysed", Duration::from_secs(5), || async {
        let m = mw.metrics().await;
        (prom_value(&m, "modelwatch_samples_analyzed_total", &[]) == Some(7.0)).then_some(m)
    })
    .await;
    assert!(
        prom_value(
            &metrics,
            "modelwatch_sample_bodies_truncated_total",
            &[("direction", "request")]
        )
        .unwrap()
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_forwarded_headers_and_hop_by_hop() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url())).await;
    let client = http();

    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let resp = client
        .get(mw.url("/headers"))
        .header("x-request-id", "client-id-42")
        .header("traceparent", traceparent)
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "must not pass")
        .header("host", "model.example:8080")
        .header("authorization", "Bearer keep-me")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-id-42");
    let seen: std::collections::HashMap<String, String> = resp.json().await.unwrap();
    assert_eq!(seen["x-request-id"], "client-id-42");
    assert_eq!(
        seen["traceparent"], traceparent,
        "traceparent passes through when not tracing"
    );
    assert!(!seen.contains_key("x-hop-secret"), "{seen:?}");
    assert!(!seen.contains_key("connection") || seen["connection"] != "x-hop-secret");
    assert_eq!(seen["host"], "model.example:8080");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "model.example:8080");
    assert_eq!(seen["authorization"], "Bearer keep-me");

    // No id from the client: one is made, sent to the model and returned.
    let resp = client.get(mw.url("/headers")).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let seen: std::collections::HashMap<String, String> = resp.json().await.unwrap();
    assert_eq!(seen["x-request-id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_header_name_is_configurable() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(
        Options::new(up.url()).config("proxy:\n  request_id_header: x-correlation-id\n"),
    )
    .await;
    let resp = http()
        .get(mw.url("/headers"))
        .header("x-correlation-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-correlation-id"], "abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_chunk_by_chunk() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url()).config(SAMPLE_ALL)).await;
    // The upstream sends event 0 and then waits for the gate before each next
    // event. If modelwatch held frames back, event 0 would never arrive.
    let resp = http().get(mw.url("/gated?n=3")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    for i in 0..3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap_or_else(|_| panic!("event {i} was held back"))
            .unwrap()
            .unwrap();
        assert_eq!(chunk, Bytes::from(format!("data: {{\"i\":{i}}}\n\n")));
        up.gate.notify_one();
    }
    assert!(stream.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_to_the_model_server() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url()).config(SAMPLE_ALL)).await;
    let mut chunks = up.chunks.lock().unwrap().take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let request = tokio::spawn(http().post(mw.url("/upload-gated")).body(body).send());
    // Each chunk must reach the model server before the next one is written.
    for _ in 0..3 {
        tx.send(Ok(Bytes::from(vec![b'x'; 10_000]))).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), chunks.recv())
            .await
            .expect("upload chunk was held back")
            .unwrap();
        assert!(n > 0);
    }
    drop(tx);
    let resp = request.await.unwrap().unwrap();
    assert_eq!(resp.text().await.unwrap(), "30000");
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_at_start_then_up() {
    let port = free_port();
    let mut mw =
        Modelwatch::start(Options::new(format!("http://127.0.0.1:{port}")).no_wait()).await;
    let client = http();
    let ready = client.get(mw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], false);

    let resp = client
        .post(mw.url("/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "connect_refused");
    assert_eq!(err["error"]["origin"], "model_server");
    assert_eq!(err["error"]["request_id"], id);

    // The model server comes up on that port: traffic flows without a restart.
    let _up = TestUpstream::start_on(&format!("127.0.0.1:{port}")).await;
    mw.wait_ready().await;
    let resp = client
        .post(mw.url("/json"))
        .body("{\"ok\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{\"ok\":1}");

    let m = mw.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_upstream_errors_total",
            &[("error_type", "connect_refused")]
        ),
        Some(1.0)
    );
    assert_eq!(prom_value(&m, "modelwatch_upstream_up", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_broken_upstreams_get_json_errors_and_the_connection_survives() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(
        Options::new(up.url()).config("proxy:\n  response_header_timeout: 300ms\n"),
    )
    .await;

    // One client connection, three requests on it.
    let stream = tokio::net::TcpStream::connect(mw.proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Full<Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = |path: &str| {
        http::Request::get(path)
            .header("host", "model")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    use http_body_util::BodyExt;
    let r = sender.send_request(get("/slow?ms=3000")).await.unwrap();
    assert_eq!(r.status(), 504);
    let body: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["type"], "response_timeout");

    sender.ready().await.unwrap();
    let r = sender.send_request(get("/status/503")).await.unwrap();
    assert_eq!(
        r.status(),
        503,
        "the model's own errors pass through unchanged"
    );
    let _ = r.into_body().collect().await;

    sender.ready().await.unwrap();
    let r = sender.send_request(get("/headers")).await.unwrap();
    assert_eq!(r.status(), 200, "the client's connection survived");
    let _ = r.into_body().collect().await;

    // An upstream that hangs up without answering.
    let (closing, _task) = closing_upstream().await;
    let mw2 = Modelwatch::start(Options::new(format!("http://{closing}")).no_wait()).await;
    let r = http().get(mw2.url("/anything")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "reset");

    let m = mw.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "http_server_request_duration_seconds_count",
            &[("error_type", "response_timeout")]
        ),
        Some(1.0)
    );
    assert_eq!(
        prom_value(
            &m,
            "http_server_request_duration_seconds_count",
            &[("error_type", "503")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_cancels_upstream_and_leaks_nothing() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url()).config(SAMPLE_ALL)).await;
    let before = mw.status().await;
    assert_eq!(before["proxy"]["requests_active"], 0);

    for _ in 0..3 {
        // An endless stream; read a few events and walk away.
        let client = http();
        let resp = client.get(mw.url("/sse?n=0&ms=20")).send().await.unwrap();
        let mut stream = resp.bytes_stream();
        for _ in 0..3 {
            stream.next().await.unwrap().unwrap();
        }
        drop(stream);
        drop(client);
    }
    eventually(
        "upstream streams cancelled",
        Duration::from_secs(10),
        || async { (up.seen.streams_cancelled.load(Ordering::SeqCst) == 3).then_some(()) },
    )
    .await;
    eventually(
        "no requests or connections left open",
        Duration::from_secs(10),
        || async {
            let s = mw.status().await;
            let p = &s["proxy"];
            (p["requests_active"] == 0
                && p["connections_open"] == 0
                && up.seen.connections_open.load(Ordering::SeqCst) == 0)
                .then_some(())
        },
    )
    .await;
    let m = mw.metrics().await;
    assert_eq!(
        prom_value(
            &m,
            "http_server_request_duration_seconds_count",
            &[("error_type", "aborted")]
        ),
        Some(3.0)
    );
    assert_eq!(
        prom_value(&m, "http_server_active_requests", &[]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url())).await;
    let mut s = tokio::net::TcpStream::connect(mw.proxy).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: model\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"\x81\x05hello raw frames").await.unwrap();
    let mut echo = vec![0u8; 18];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"\x81\x05hello raw frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_and_exits_zero() {
    let up = TestUpstream::start().await;
    let mut mw =
        Modelwatch::start(Options::new(up.url()).config("proxy:\n  shutdown_grace_period: 20s\n"))
            .await;
    let resp = http().get(mw.url("/sse?n=20&ms=50")).send().await.unwrap();
    let proxy = mw.proxy;
    let reader = tokio::spawn(async move {
        let body = resp.bytes().await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::task::spawn_blocking(move || mw.terminate())
        .await
        .unwrap();
    let body = reader.await.unwrap();
    assert_eq!(
        body.matches("data: {").count(),
        20,
        "the stream finished: {body}"
    );
    assert!(body.ends_with("data: [DONE]\n\n"));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_by_http_path() {
    let up = TestUpstream::start().await;
    let config = "admin:\n  readiness:\n    http_path: /status/503\n    interval: 200ms\n";
    let mw = Modelwatch::start(Options::new(up.url()).config(config).no_wait()).await;
    let body: serde_json::Value =
        eventually("a failed HTTP probe", Duration::from_secs(10), || async {
            let r = http().get(mw.admin_url("/readyz")).send().await.ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v["upstream"]["checked_at"].is_number().then_some(v)
        })
        .await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["upstream"]["probe"], "http");
    assert!(
        body["upstream"]["last_error"]
            .as_str()
            .unwrap()
            .contains("HTTP 503"),
        "{body}"
    );

    let mw2 =
        Modelwatch::start(Options::new(up.url()).config(&config.replace("/status/503", "/health")))
            .await;
    let r = http().get(mw2.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_reach_an_http1_model_server() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url())).await;
    let stream = tokio::net::TcpStream::connect(mw.proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Full<Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/json", mw.proxy))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(b"{\"x\":1}")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    use http_body_util::BodyExt;
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"{\"x\":1}"
    );
    assert_eq!(
        *up.seen.versions.lock().unwrap().last().unwrap(),
        http::Version::HTTP_11
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_a_504_that_says_so() {
    // A listener whose accept queue is full: further connects hang.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let _filler = std::net::TcpStream::connect(addr).unwrap();
    let mw = Modelwatch::start(
        Options::new(format!("http://{addr}"))
            .config("proxy:\n  connect_timeout: 300ms\n")
            .no_wait(),
    )
    .await;
    let r = http().get(mw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "connect_timeout");
    assert_eq!(body["error"]["origin"], "model_server");
    drop(socket);
}

/// A model server that answers, then closes the connection without saying
/// so (uvicorn after an error answer: no `Connection: close`). The request
/// that next reuses that connection is sent again on a fresh one; no
/// client sees a 502 for another request's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_after_its_answer_is_not_a_502_for_the_next_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s = served.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                // Read one whole request (headers and its small body), answer, close.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                // Inference requests only (the environment watcher's metadata GETs aside).
                if buf.starts_with(b"POST") {
                    s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let body = br#"{"error":"model failed"}"#;
                let head = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body).await;
                // As uvicorn: the close comes a moment after the answer, once
                // the error has gone up the stack; a request sent on the
                // connection meanwhile is never read.
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(stream);
            });
        }
    });
    let mw = Modelwatch::start(Options::new(format!("http://{addr}")).no_wait()).await;
    let client = http();
    for i in 0..50 {
        let resp = client
            .post(mw.url("/v2/models/m/infer"))
            .json(&serde_json::json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [i]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            500,
            "request {i}: the model server's own answer"
        );
        assert_eq!(resp.text().await.unwrap(), r#"{"error":"model failed"}"#);
    }
    let m = mw.metrics().await;
    let retries = prom_value(&m, "modelwatch_upstream_retries_total", &[]).unwrap_or(0.0);
    println!("requests sent again: {retries}");
    assert!(
        retries >= 1.0,
        "the race never happened in 50 requests: {m}"
    );
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        50,
        "each request reached the model once"
    );
    server.abort();
}
