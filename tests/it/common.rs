//! Test helpers: the real modelwatch binary as a child process, a small test
//! upstream standing in for "some model server", and real backends
//! (Prometheus, VictoriaMetrics) started from the testbed (scripts/testbed.sh).

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, Notify};

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Polls `f` every 100 ms until it returns Some, or panics after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- modelwatch

/// The real binary, started with `run`; stopped (SIGTERM, then kill) on drop.
pub struct Modelwatch {
    pub child: Option<Child>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    /// The config file it was started with (rewrite it to test a reload).
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

pub struct Options {
    pub upstream: String,
    pub config: String,
    pub env: Vec<(String, String)>,
    pub wait_ready: bool,
    /// The proxy's address (default: a free loopback port).
    pub listen: Option<SocketAddr>,
}

impl Options {
    pub fn new(upstream: impl Into<String>) -> Options {
        Options {
            upstream: upstream.into(),
            config: String::new(),
            env: Vec::new(),
            wait_ready: true,
            listen: None,
        }
    }
    pub fn config(mut self, yaml: &str) -> Options {
        self.config = yaml.to_string();
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Options {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn listen(mut self, addr: SocketAddr) -> Options {
        self.listen = Some(addr);
        self
    }
    pub fn no_wait(mut self) -> Options {
        self.wait_ready = false;
        self
    }
}

impl Modelwatch {
    pub async fn start(opts: Options) -> Modelwatch {
        // A port taken from `free_port` can be taken by someone else before
        // modelwatch binds it (tests run in parallel): such a start is
        // retried on new ports; any other early exit fails with the log.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::tempdir().unwrap();
            let config_path = dir.path().join("modelwatch.yaml");
            std::fs::write(&config_path, &opts.config).unwrap();
            let log = dir.path().join("modelwatch.log");
            let proxy: SocketAddr = opts
                .listen
                .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelwatch"));
            cmd.arg("run")
                .arg("--config")
                .arg(&config_path)
                .arg("--listen")
                .arg(proxy.to_string())
                .arg("--admin-listen")
                .arg(admin.to_string())
                .arg("--upstream")
                .arg(&opts.upstream)
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .env_remove("RUST_LOG")
                .env("RUST_LOG", "info,modelwatch=debug")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::options().append(true).open(&log).unwrap());
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("start modelwatch");
            let mut mw = Modelwatch {
                child: Some(child),
                proxy,
                admin,
                log,
                config_path,
                _dir: dir,
            };
            match mw.wait_healthy(Duration::from_secs(30)).await {
                Ok(()) => {
                    if opts.wait_ready {
                        mw.wait_ready().await;
                    }
                    return mw;
                }
                Err(why) => {
                    let text = mw.log_text();
                    if attempt < 3 && why.starts_with("exited") && text.contains("os error 98") {
                        eprintln!(
                            "modelwatch lost a port race, starting again: {}",
                            tail(&text, 3)
                        );
                        continue;
                    }
                    panic!("modelwatch {why}; its log:\n{}", tail(&text, 60));
                }
            }
        }
    }

    /// Polls `/healthz` until it answers 2xx; an `Err` says whether the
    /// process exited first (with its status) or the time ran out.
    async fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        self.poll("/healthz", limit).await
    }

    pub async fn wait_ready(&mut self) {
        if let Err(why) = self.poll("/readyz", Duration::from_secs(15)).await {
            panic!("modelwatch {why}; its log:\n{}", tail(&self.log_text(), 60));
        }
    }

    /// Polls an admin endpoint until it answers 2xx, the process exits or
    /// `limit` passes.
    async fn poll(&mut self, path: &str, limit: Duration) -> Result<(), String> {
        let url = self.admin_url(path);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                return Err(format!("exited ({status}) before {path} answered"));
            }
            let ok = http()
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!("{path} did not answer 2xx within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub async fn metrics(&self) -> String {
        http()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn status(&self) -> serde_json::Value {
        self.admin_json("/v1/status").await
    }

    /// `GET` of an admin endpoint that answers JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        http()
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until `GET /v1/records` holds `n` records, and returns them.
    pub async fn records(&self, n: usize) -> serde_json::Value {
        let url = self.admin_url("/v1/records");
        eventually(
            &format!("{n} inference records"),
            Duration::from_secs(10),
            || {
                let url = url.clone();
                async move {
                    let v: serde_json::Value =
                        http().get(&url).send().await.ok()?.json().await.ok()?;
                    (v.as_array()?.len() == n).then_some(v)
                }
            },
        )
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        send_sigterm(child.id());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(40) {
                let _ = child.kill();
                panic!("modelwatch did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn send_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for Modelwatch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // One that already exited (a failed start) is only reaped.
            if !matches!(child.try_wait(), Ok(Some(_))) {
                send_sigterm(child.id());
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- modelwatch log ----\n{}", self.log_text());
        }
    }
}

/// A sample/metric value from a Prometheus text exposition: the sum of every
/// series named `name` whose labels include all of `labels`.
pub fn prom_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (n, rest) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    found
}

// ------------------------------------------------------------ test upstream

type TestBody = BoxBody<Bytes, Infallible>;

/// What the test upstream saw.
#[derive(Default)]
pub struct Seen {
    pub headers: Mutex<Vec<http::HeaderMap>>,
    pub versions: Mutex<Vec<http::Version>>,
    pub streams_cancelled: AtomicU64,
    pub requests: AtomicU64,
    pub connections_open: AtomicU64,
}

/// A small HTTP/1.1 + h2c server standing in for a model server.
///
/// Routes: `/echo` streams the request body back; `/sse?n=N&ms=M` sends N
/// events M ms apart (N=0: forever) and counts streams cut off by the other
/// side; `/gated` sends one event, then one more each time `gate` is
/// notified; `/slow?ms=M` waits before the headers; `/status/NNN[?version=V]`
/// (with `x-model-version: V`); `/ws` accepts an upgrade and
/// echoes raw bytes; `/upload-gated` reports each received chunk on `chunks`.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    pub gate: Arc<Notify>,
    pub chunks: Mutex<Option<mpsc::UnboundedReceiver<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestUpstream {
    pub async fn start() -> TestUpstream {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> TestUpstream {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let gate = Arc::new(Notify::new());
        let (chunk_tx, chunk_rx) = mpsc::unbounded_channel();
        let (s, g) = (seen.clone(), gate.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, g, ctx) = (s.clone(), g.clone(), chunk_tx.clone());
                tokio::spawn(async move {
                    s.connections_open.fetch_add(1, Ordering::SeqCst);
                    let s2 = s.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let (s, g, ctx) = (s2.clone(), g.clone(), ctx.clone());
                        async move { Ok::<_, Infallible>(route(req, s, g, ctx).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                    s.connections_open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestUpstream {
            addr,
            seen,
            gate,
            chunks: Mutex::new(Some(chunk_rx)),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r
}

/// Streams frames from a channel; when the receiver side is dropped (the
/// client went away) the sender notices.
fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, Infallible>>, TestBody) {
    let (tx, mut rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, StreamBody::new(stream).boxed())
}

async fn route(
    mut req: Request<Incoming>,
    seen: Arc<Seen>,
    gate: Arc<Notify>,
    chunks: mpsc::UnboundedSender<usize>,
) -> Response<TestBody> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    seen.headers.lock().unwrap().push(req.headers().clone());
    seen.versions.lock().unwrap().push(req.version());
    let q = query(&req);
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/echo" | "/v2/models/echo/infer" => {
            let (tx, body) = channel_body();
            let mut incoming = req.into_body();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = incoming.frame().await {
                    if let Ok(data) = frame.into_data() {
                        if tx.send(Ok(Frame::data(data))).await.is_err() {
                            return;
                        }
                    }
                }
            });
            let mut r = Response::new(body);
            r.headers_mut()
                .insert("content-type", "application/octet-stream".parse().unwrap());
            r
        }
        "/json" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut r = full(StatusCode::OK, body);
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
        "/sse" => {
            let n: u64 = q.get("n").and_then(|v| v.parse().ok()).unwrap_or(5);
            let ms: u64 = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(10);
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let mut i = 0;
                while n == 0 || i < n {
                    let ev = format!("data: {{\"i\":{i}}}\n\n");
                    if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                        seen.streams_cancelled.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if tx.is_closed() {
                        seen.streams_cancelled.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
                    .await;
            });
            let mut r = Response::new(body);
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        "/gated" => {
            let n: u64 = q.get("n").and_then(|v| v.parse().ok()).unwrap_or(3);
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                for i in 0..n {
                    if i > 0 {
                        gate.notified().await;
                    }
                    let ev = format!("data: {{\"i\":{i}}}\n\n");
                    if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                        return;
                    }
                }
            });
            let mut r = Response::new(body);
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        "/upload-gated" => {
            let mut incoming = req.into_body();
            let mut total = 0;
            while let Some(Ok(frame)) = incoming.frame().await {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    let _ = chunks.send(data.len());
                }
            }
            full(StatusCode::OK, total.to_string())
        }
        "/slow" => {
            let ms: u64 = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            full(StatusCode::OK, "slow")
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = upgrade.await {
                    let mut io = TokioIo::new(up);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
            r.headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p[8..].parse().unwrap_or(500);
            let mut r = full(
                StatusCode::from_u16(code).unwrap(),
                format!("{{\"status\":{code}}}"),
            );
            // `?version=V`: the answer names its model version in a header.
            if let Some(v) = q.get("version") {
                r.headers_mut()
                    .insert("x-model-version", v.parse().unwrap());
            }
            r
        }
        "/headers" => {
            let map: HashMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            full(StatusCode::OK, serde_json::to_vec(&map).unwrap())
        }
        "/v1/chat/completions" => {
            // A canned chat answer whose text carries an e-mail address (for redaction tests).
            let _ = req.into_body().collect().await;
            let body = r#"{"id":"chatcmpl-test","object":"chat.completion","model":"canned-chat","choices":[{"index":0,"message":{"role":"assistant","content":"Write to support@example.com for help."},"finish_reason":"stop"}],"usage":{"prompt_tokens":21,"completion_tokens":7,"total_tokens":28}}"#;
            let mut r = full(StatusCode::OK, body);
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
        "/health" => full(StatusCode::OK, "ok"),
        _ => full(StatusCode::NOT_FOUND, "not found"),
    }
}

// ----------------------------------------------------------------- backends

/// The testbed's bin folder (scripts/testbed.sh install).
pub fn testbed_bin(name: &str) -> PathBuf {
    let dir = std::env::var("MODELWATCH_TESTBED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".testbed/root/usr/bin")
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/testbed.sh install (or scripts/test.sh, which does)",
        path.display()
    );
    path
}

/// The JSON a helper process printed; its stderr when it failed.
/// Runs `cmd` with `input` on its standard input; returns what it printed.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout_json(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until GET `url` answers 2xx.
pub async fn wait_ok(url: &str, what: &str, limit: Duration) {
    eventually(what, limit, || async move {
        http()
            .get(url)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
}

/// A child process killed on drop.
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

/// A real Prometheus scraping `targets` every second.
pub async fn prometheus(targets: &[SocketAddr]) -> Service {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: modelwatch\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    prometheus_with_config(&config).await
}

/// A real Prometheus with this configuration file.
pub async fn prometheus_with_config(config: &str) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(testbed_bin("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let svc = Service { child, port, dir };
    wait_ok(
        &svc.url("/-/ready"),
        "prometheus ready",
        Duration::from_secs(30),
    )
    .await;
    svc
}

/// A real VictoriaMetrics (OTLP/HTTP receiver at /opentelemetry/v1/metrics).
pub async fn victoria_metrics_on(port: u16) -> Service {
    let svc = victoria_metrics_with(port, &[]);
    wait_ok(
        &svc.url("/health"),
        "victoria-metrics ready",
        Duration::from_secs(30),
    )
    .await;
    svc
}

/// VictoriaMetrics on `port` with extra flags (e.g. `-tls`); not waited for.
pub fn victoria_metrics_with(port: u16, extra: &[String]) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("vm.log")).unwrap();
    let child = Command::new(testbed_bin("victoria-metrics"))
        .args(extra)
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!(
            "-storageDataPath={}",
            dir.path().join("data").display()
        ))
        .arg("-retentionPeriod=1d")
        .arg("-search.latencyOffset=0s")
        .arg("-opentelemetry.usePrometheusNaming")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start victoria-metrics");
    Service { child, port, dir }
}

/// Runs an instant PromQL query (Prometheus or VictoriaMetrics API) and returns
/// the first result's value.
pub async fn promql(base: &str, query: &str) -> Option<f64> {
    let resp = http()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = resp.json().await.ok()?;
    let result = v["data"]["result"].as_array()?;
    let first = result.first()?;
    first["value"][1].as_str()?.parse().ok()
}

/// Writes text to a temp file and returns its path (kept alive by the returned dir).
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    (dir, path)
}

/// An upstream that reads the request and closes the connection without answering.
pub async fn closing_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                drop(stream);
            });
        }
    });
    (addr, task)
}

/// A TCP listener that accepts connections and never answers (a black hole).
pub async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        }
    });
    (addr, task)
}

/// Held by the heaviest test (several model servers at once) and by tests
/// that compare latencies, so that they never run side by side: on a 2-core
/// machine one would skew the other's latencies.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------- TLS files

pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) is needed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA in `dir`: `ca.crt`, `ca.key`.
pub fn test_ca(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=modelwatch-test-ca",
        ],
    );
}

/// `{name}.crt` and `{name}.key` in `dir`, signed by the test CA, for the
/// subject alternative names `san` (e.g. `DNS:localhost,IP:127.0.0.1`).
pub fn server_certificate(dir: &std::path::Path, name: &str, san: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            "/CN=modelwatch-test",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// `curl -sf --cacert CA ARGS…` (the test HTTP client has no TLS): the body
/// of a successful answer, or None.
pub fn curl_https(ca: &std::path::Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// A forward HTTP proxy, as a corporate egress proxy is: `CONNECT host:port`
/// tunnels, and absolute-form requests (`POST http://host:port/path`) passed
/// on in origin form. Keeps each request line it saw.
pub async fn forward_proxy() -> (
    SocketAddr,
    Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let mut client = tokio::io::BufReader::new(client);
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if client.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let end = line == "\r\n";
                    head.push(line);
                    if end {
                        break;
                    }
                }
                let request_line = head[0].trim_end().to_string();
                s.lock().unwrap().push(request_line.clone());
                let mut parts = request_line.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (authority, rewritten) = if method == "CONNECT" {
                    (target.to_string(), None)
                } else {
                    let uri: http::Uri = target.parse().unwrap();
                    let mut h = head.clone();
                    h[0] = format!(
                        "{method} {} HTTP/1.1\r\n",
                        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
                    );
                    (uri.authority().unwrap().to_string(), Some(h.concat()))
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&authority).await else {
                    let _ = client
                        .get_mut()
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                match rewritten {
                    None => {
                        let _ = client
                            .get_mut()
                            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await;
                    }
                    Some(h) => {
                        let _ = upstream.write_all(h.as_bytes()).await;
                    }
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, seen, task)
}

/// A rustls server configuration with `{name}.crt` and `{name}.key` of `dir`
/// (see [`server_certificate`]).
pub fn tls_server_config(dir: &std::path::Path, name: &str) -> rustls::ServerConfig {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(dir.join(format!("{name}.crt")))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
}
