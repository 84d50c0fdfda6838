//! The joiner's throughput and memory, against a real Kafka-protocol broker
//! (tansu, from `scripts/testbed.sh kafka`).
//!
//!   cargo bench --bench joiner            # N = 200000 (MODELWATCH_BENCH_N to change)
//!
//! 1. N predictions (a binary classifier with two scores) and N labels are
//!    produced to 4-partition topics; then one joiner (the release binary)
//!    consumes them all. Reported: records per second of the joiner's own CPU
//!    time (utime + stime from /proc: records per second per core, whatever
//!    the broker on the same machine costs), and the wall time.
//! 2. N predictions without labels on fresh topics, a fresh joiner: its RSS and
//!    store bytes per pending prediction.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tansu() -> std::path::PathBuf {
    std::env::var("MODELWATCH_KAFKA_BROKER")
        .map(Into::into)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".testbed/kafka/bin/tansu")
        })
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn topic(port: u16, name: &str, partitions: u32) {
    let ok = Command::new(tansu())
        .args(["topic", "create", "--broker"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .args(["--partitions", &partitions.to_string(), name])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn metric(port: u16, name: &str) -> f64 {
    let text = std::process::Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn produce(bootstrap: &str, topic: &str, n: usize, label: bool) {
    let p: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    use futures_util::StreamExt;
    for i in 0..n {
        let id = format!("req-{i:08}");
        let payload = if label {
            format!(
                r#"{{"v":1,"request_id":"{id}","row":0,"label":"{}"}}"#,
                ["a", "b"][i % 2]
            )
        } else {
            let s = (i % 97) as f64 / 97.0;
            format!(
                r#"{{"v":1,"request_id":"{id}","row":0,"model":"m","model_version":"v1","time_ms":{},"prediction":"{}","scores":[["a",{}],["b",{}]],"sample_rate":1.0}}"#,
                now_ms - 3_600_000 + i as u64 / 100,
                if s > 0.5 { "b" } else { "a" },
                1.0 - s,
                s
            )
        };
        let p = p.clone();
        let topic = topic.to_string();
        pending.push(async move {
            p.send(
                FutureRecord::to(&topic).key(&id).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        });
        if pending.len() >= 20_000 {
            pending.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = pending.next().await {
        r.unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

fn joiner(bootstrap: &str, prefix: &str, dir: &std::path::Path) -> (Killed, u16) {
    let port = free_port();
    let config = dir.join(format!("{prefix}.yaml"));
    std::fs::write(
        &config,
        format!(
            "quality:\n  refresh_interval: 1s\n  label_ttl: 90days\n  max_predictions: 10000000\n  kafka:\n    predictions_topic: {prefix}.predictions\n    labels_topic: {prefix}.labels\n    state_topic: {prefix}.state\n    group_id: {prefix}-joiner\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .arg("joiner")
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--store-dir")
        .arg(dir.join(prefix))
        .arg("--config")
        .arg(&config)
        .env("MODELWATCH_KAFKA_BOOTSTRAP", bootstrap)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (Killed(child), port)
}

/// Waits until the joiner consumed `n` records; returns its CPU seconds and the wall time.
fn consume(j: &Killed, port: u16, n: f64) -> (f64, f64) {
    let pid = j.0.id();
    let started = Instant::now();
    let cpu0 = cpu_seconds(pid);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if metric(port, "modelwatch_kafka_consumed_total") >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the joiner did not finish"
        );
    }
    (cpu_seconds(pid) - cpu0, started.elapsed().as_secs_f64())
}

fn main() {
    let n: usize = std::env::var("MODELWATCH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / `--list`: nothing to run here.
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let _broker = Killed(
        Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu: run scripts/testbed.sh kafka"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let bootstrap = format!("127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();

    // 1. Throughput: N predictions and N labels, then one joiner.
    for t in ["a.predictions", "a.labels"] {
        topic(port, t, 4);
    }
    topic(port, "a.state", 1);
    let t = Instant::now();
    rt.block_on(produce(&bootstrap, "a.predictions", n, false));
    rt.block_on(produce(&bootstrap, "a.labels", n, true));
    eprintln!(
        "produced {} records in {:.1} s",
        2 * n,
        t.elapsed().as_secs_f64()
    );
    let (j, jport) = joiner(&bootstrap, "a", dir.path());
    let (cpu, wall) = consume(&j, jport, 2.0 * n as f64);
    std::thread::sleep(Duration::from_secs(2));
    let labelled = metric(jport, "modelwatch_quality_labels_total");
    println!(
        "joiner throughput: {} records (N predictions + N labels, {labelled} joined) in {wall:.1} s wall, {cpu:.1} s of joiner CPU: {:.0} records per CPU-second (per core)",
        2 * n,
        2.0 * n as f64 / cpu
    );
    drop(j);

    // 2. Memory per pending prediction: N predictions, no labels.
    for t in ["b.predictions", "b.labels"] {
        topic(port, t, 4);
    }
    topic(port, "b.state", 1);
    let (j, jport) = joiner(&bootstrap, "b", dir.path());
    std::thread::sleep(Duration::from_secs(3));
    let idle = rss_bytes(j.0.id());
    rt.block_on(produce(&bootstrap, "b.predictions", n, false));
    consume(&j, jport, n as f64);
    std::thread::sleep(Duration::from_secs(3));
    let rss = rss_bytes(j.0.id());
    let disk = dir_bytes(&dir.path().join("b"));
    println!(
        "pending predictions: {n}: RSS {:.1} MB (idle {:.1} MB): {:.0} bytes of memory and {:.0} bytes of store per pending prediction",
        rss as f64 / 1e6,
        idle as f64 / 1e6,
        (rss.saturating_sub(idle)) as f64 / n as f64,
        disk as f64 / n as f64
    );
}
