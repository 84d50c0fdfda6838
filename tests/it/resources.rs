//! Resource figures from a real cgroup: the test makes one by hand (cgroup v1
//! `cpu` and `memory` hierarchies where the machine has them, else cgroup
//! v2), sets a CPU quota and a memory limit, moves modelwatch into it, loads
//! it until the kernel throttles it, and reads the exported limits and
//! throttling counters back from a real Prometheus (scraping /metrics) and a
//! real VictoriaMetrics (OTLP), with the pod's resource attributes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

const QUOTA_US: u64 = 5_000; // of 100,000: 0.05 cores
const MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

/// A cgroup made for a test; on drop its processes go back to the parent and it is removed.
pub struct TestCgroup {
    dirs: Vec<PathBuf>,
    pub version: u8,
}

impl TestCgroup {
    /// With a CPU quota of `QUOTA_US` per 100 ms and `MEMORY_LIMIT`.
    fn create() -> TestCgroup {
        Self::with_quota(Some(QUOTA_US))
    }

    /// With a CPU quota in microseconds per 100 ms (None: unlimited) and
    /// `MEMORY_LIMIT`.
    pub fn with_quota(quota_us: Option<u64>) -> TestCgroup {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        assert!(
            rustix::process::geteuid().is_root(),
            "this test creates a cgroup and needs root (CI runs as root)"
        );
        let name = format!(
            "modelwatch-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let v1 = Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists()
            && Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
        let cg = if v1 {
            let cpu = Path::new("/sys/fs/cgroup/cpu").join(&name);
            let mem = Path::new("/sys/fs/cgroup/memory").join(&name);
            std::fs::create_dir_all(&cpu).unwrap();
            std::fs::create_dir_all(&mem).unwrap();
            std::fs::write(cpu.join("cpu.cfs_period_us"), "100000").unwrap();
            std::fs::write(mem.join("memory.limit_in_bytes"), MEMORY_LIMIT.to_string()).unwrap();
            TestCgroup {
                dirs: vec![cpu, mem],
                version: 1,
            }
        } else {
            let root = Path::new("/sys/fs/cgroup");
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu +memory");
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("memory.max"), MEMORY_LIMIT.to_string()).unwrap();
            TestCgroup {
                dirs: vec![dir],
                version: 2,
            }
        };
        cg.set_quota(quota_us);
        cg
    }

    /// Sets the CPU quota (microseconds per 100 ms; None: unlimited).
    pub fn set_quota(&self, quota_us: Option<u64>) {
        if self.version == 1 {
            let q = quota_us.map_or("-1".to_string(), |q| q.to_string());
            std::fs::write(self.dirs[0].join("cpu.cfs_quota_us"), q).unwrap();
        } else {
            let q = quota_us.map_or("max".to_string(), |q| q.to_string());
            std::fs::write(self.dirs[0].join("cpu.max"), format!("{q} 100000")).unwrap();
        }
    }

    pub fn add(&self, pid: u32) {
        for d in &self.dirs {
            std::fs::write(d.join("cgroup.procs"), pid.to_string()).unwrap();
        }
    }

    /// nr_throttled as the kernel counts it now.
    pub fn throttled(&self) -> u64 {
        let stat = std::fs::read_to_string(self.dirs[0].join("cpu.stat")).unwrap();
        stat.lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            let parent = d.parent().unwrap().join("cgroup.procs");
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = std::fs::write(&parent, pid);
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_limits_and_throttling_from_a_real_cgroup() {
    let cg = TestCgroup::create();
    let vm = victoria_metrics_on(free_port()).await;
    let up = TestUpstream::start().await;
    // A stand-in model server process, named by a PID file.
    let mut server = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let (_d, pid_file) = temp_file("model.pid", &server.id().to_string());
    let config = format!(
        "resources:\n  interval: 500ms\n  model_server_pid_file: {}\ntelemetry:\n  service_name: cgroup-test\n  otlp:\n    endpoint: {}\n    metrics_interval: 1s\n    traces: false\n",
        pid_file.display(),
        vm.url("/opentelemetry")
    );
    let mw = Modelwatch::start(
        Options::new(up.url())
            .config(&config)
            .env("K8S_POD_NAME", "pod-7f"),
    )
    .await;
    cg.add(mw.child.as_ref().unwrap().id());

    // Load modelwatch past 0.05 cores until the kernel throttles it.
    let client = http();
    let cg = &cg;
    eventually(
        "modelwatch throttled by its cgroup",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let url = mw.url("/echo");
            async move {
                let calls = (0..50).map(|_| {
                    let client = client.clone();
                    let url = url.clone();
                    async move {
                        let _ = client.post(url).body("x".repeat(1000)).send().await;
                    }
                });
                futures_util::future::join_all(calls).await;
                (cg.throttled() > 0).then_some(())
            }
        },
    )
    .await;

    let m = eventually("throttling exported", Duration::from_secs(30), || async {
        let m = mw.metrics().await;
        prom_value(&m, "container_cpu_throttled_periods_total", &[])
            .filter(|v| *v > 0.0)
            .map(|_| m)
    })
    .await;
    assert_eq!(
        prom_value(&m, "container_cpu_limit", &[]),
        Some(QUOTA_US as f64 / 100_000.0),
        "{m}"
    );
    assert_eq!(
        prom_value(&m, "container_memory_limit_bytes", &[]),
        Some(MEMORY_LIMIT as f64)
    );
    let used = prom_value(&m, "container_memory_usage_bytes", &[]).unwrap();
    assert!(used > 0.0 && used <= MEMORY_LIMIT as f64, "{used}");
    let exported = prom_value(&m, "container_cpu_throttled_periods_total", &[]).unwrap();
    assert!(
        exported <= cg.throttled() as f64,
        "exported {exported}, kernel {}",
        cg.throttled()
    );
    assert!(prom_value(&m, "container_cpu_throttled_time_seconds_total", &[]).unwrap() > 0.0);
    assert_eq!(
        prom_value(&m, "modelwatch_gpu_available", &[]),
        Some(0.0),
        "no GPU here"
    );
    assert!(
        prom_value(
            &m,
            "process_memory_usage_bytes",
            &[("modelwatch_process_role", "modelwatch")]
        )
        .unwrap()
            > 1e6
    );
    assert!(
        prom_value(
            &m,
            "process_memory_usage_bytes",
            &[
                ("modelwatch_process_role", "model_server"),
                ("process_executable_name", "sleep")
            ]
        )
        .is_some(),
        "the model server by its PID file: {m}"
    );
    assert!(
        prom_value(
            &m,
            "process_open_file_descriptors",
            &[("modelwatch_process_role", "modelwatch")]
        )
        .unwrap()
            > 3.0
    );
    let status = mw.status().await;
    assert_eq!(status["resources"]["cgroup"]["version"], cg.version);

    // A real Prometheus scraping /metrics sees the limits.
    let prom = prometheus(&[mw.admin]).await;
    let limit = eventually(
        "Prometheus scraped the limit",
        Duration::from_secs(30),
        || async { promql(&prom.url(""), "container_cpu_limit").await },
    )
    .await;
    assert_eq!(limit, 0.05);
    // OTLP into VictoriaMetrics, with the pod's resource attributes.
    let q = r#"container_memory_limit_bytes{service_name="cgroup-test",k8s_pod_name="pod-7f"}"#;
    let v = eventually(
        "OTLP limit in VictoriaMetrics",
        Duration::from_secs(30),
        || async {
            let _ = http().post(vm.url("/internal/force_flush")).send().await;
            promql(&vm.url(""), q).await
        },
    )
    .await;
    assert_eq!(v, MEMORY_LIMIT as f64);
    let _ = server.kill();
    let _ = server.wait();
    drop(mw);
}

/// The model server's own metrics, scraped and re-exported under the common
/// names: a real llama-server (`--metrics`) and a real MLServer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_metrics_of_real_model_servers() {
    let (llama, mls) = tokio::join!(
        crate::models::llama_server(&["--metrics"]),
        crate::models::mlserver(&["bc"])
    );
    // llama.cpp: tokens, as the server itself counts them.
    let config = format!(
        "resources:\n  interval: 300ms\n  engine_metrics_url: {}\n",
        llama.url("/metrics")
    );
    let mw = Modelwatch::start(Options::new(llama.url("")).config(&config)).await;
    let resp = http()
        .post(mw.url("/v1/completions"))
        .json(&serde_json::json!({"prompt": "hello", "max_tokens": 6}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.bytes().await.unwrap();
    let own = http()
        .get(llama.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let predicted = prom_value(&own, "llamacpp:tokens_predicted_total", &[]).unwrap();
    assert!(predicted >= 1.0);
    let m = eventually(
        "llama.cpp figures re-exported",
        Duration::from_secs(20),
        || async {
            let m = mw.metrics().await;
            (prom_value(
                &m,
                "modelwatch_engine_tokens_total",
                &[("engine", "llamacpp"), ("gen_ai_token_type", "output")],
            ) == Some(predicted))
            .then_some(m)
        },
    )
    .await;
    assert_eq!(
        prom_value(&m, "modelwatch_engine_up", &[("engine", "llamacpp")]),
        Some(1.0)
    );
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_engine_requests_running",
            &[("engine", "llamacpp")]
        ),
        Some(0.0)
    );
    drop(mw);

    // MLServer: requests per result, from its metrics port.
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(mls.dir.path().join("settings.json")).unwrap(),
    )
    .unwrap();
    let metrics_url = format!("http://127.0.0.1:{}/metrics", settings["metrics_port"]);
    let config = format!("resources:\n  interval: 300ms\n  engine_metrics_url: {metrics_url}\n");
    let mw = Modelwatch::start(Options::new(mls.url("")).config(&config)).await;
    let (x, _) = crate::models::bc_data();
    for row in &x[..3] {
        let url = mw.url("/v2/models/bc/infer");
        crate::models::oip_infer(&url, std::slice::from_ref(row), None).await;
    }
    eventually(
        "MLServer figures re-exported",
        Duration::from_secs(20),
        || async {
            let m = mw.metrics().await;
            (prom_value(
                &m,
                "modelwatch_engine_requests_total",
                &[("engine", "mlserver"), ("result", "ok")],
            ) == Some(3.0))
            .then_some(())
        },
    )
    .await;
    // The model server going away: up 0, scrape errors in /v1/status.
    drop(mls);
    eventually("engine down", Duration::from_secs(20), || async {
        let m = mw.metrics().await;
        (prom_value(&m, "modelwatch_engine_up", &[]) == Some(0.0)).then_some(())
    })
    .await;
    assert!(
        mw.status().await["engine"]["scrape_errors"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

/// Connection figures: sequential requests from one client reuse one pooled
/// connection to the model server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_upstream_reuse_are_counted() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url())).await;
    let client = http();
    for _ in 0..20 {
        let r = client
            .post(mw.url("/echo"))
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "abc");
    }
    let m = mw.metrics().await;
    assert_eq!(
        prom_value(&m, "modelwatch_proxy_requests_total", &[]),
        Some(20.0)
    );
    assert_eq!(
        prom_value(&m, "modelwatch_upstream_connections_total", &[]),
        Some(1.0),
        "one pooled connection: {m}"
    );
    assert!(prom_value(&m, "modelwatch_client_connections_total", &[]).unwrap() >= 1.0);
    // A model server that refuses: counted as an upstream error, no connection made.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mw2 = Modelwatch::start(Options::new(closed).no_wait()).await;
    let r = client
        .post(mw2.url("/echo"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
    let m = mw2.metrics().await;
    assert_eq!(
        prom_value(&m, "modelwatch_upstream_connections_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        prom_value(
            &m,
            "modelwatch_upstream_errors_total",
            &[("error_type", "connect_refused")]
        ),
        Some(1.0)
    );
}
