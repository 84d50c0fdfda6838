//! The resource sampler: the node as the pod sees it, modelwatch's own
//! process and the model server's, the container's cgroup limits and usage,
//! and the GPUs, read on a thread of its own every `resources.interval` into
//! a snapshot that observable instruments read. Never on the proxy's path.

pub mod cgroup;
pub mod engine;
pub mod environment;
pub mod gpu;

use std::path::Path;
use std::sync::{Arc, RwLock};

use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;
use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::config::ResourcesConfig;
use crate::telemetry::names::{self, attr};
use crate::telemetry::{f64_counter, f64_gauge, u64_counter, u64_gauge};

/// One process's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessReading {
    pub role: &'static str,
    pub pid: u32,
    pub name: String,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub threads: Option<u64>,
    pub file_descriptors: Option<u64>,
}

/// What the instruments and `/v1/status` read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResourceSnapshot {
    pub samples: u64,
    pub cpu_utilization: Option<f64>,
    pub logical_cpus: u64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub processes: Vec<ProcessReading>,
    /// None when no cgroup was found.
    pub cgroup: Option<cgroup::CgroupStats>,
    /// Share of CPU periods the cgroup was throttled in over the last
    /// readings (`cgroup::ThrottleHistory`, about a minute at the default interval).
    pub cpu_throttled_ratio: Option<f64>,
    /// The model server's cgroup, when its PID is known and it is not ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_server_cgroup: Option<cgroup::CgroupStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_server_cpu_throttled_ratio: Option<f64>,
    pub gpu_available: bool,
    /// Why GPU figures are off, when they are.
    pub gpu_unavailable_reason: Option<String>,
    pub gpus: Vec<gpu::GpuReading>,
    pub gpu_driver_version: String,
    pub cuda_version: String,
    /// How long the last sample took, milliseconds.
    pub last_sample_ms: f64,
}

/// The running sampler.
pub struct Resources {
    pub snapshot: Arc<RwLock<ResourceSnapshot>>,
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Resources {
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Threads and open file descriptors of `pid` from /proc (Linux).
fn proc_counts(pid: u32) -> (Option<u64>, Option<u64>) {
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        });
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64);
    (threads, fds)
}

struct Sampler {
    config: ResourcesConfig,
    system: System,
    own: Pid,
    model_server: Option<Pid>,
    cgroup: Option<cgroup::Layout>,
    gpus: Option<gpu::Gpus>,
    gpu_reason: Option<String>,
    snapshot: Arc<RwLock<ResourceSnapshot>>,
    throttled: cgroup::ThrottleHistory,
    server_throttled: cgroup::ThrottleHistory,
}

impl Sampler {
    fn find_model_server(&mut self) -> Option<Pid> {
        if !self.config.model_server_pid_file.is_empty() {
            return std::fs::read_to_string(&self.config.model_server_pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map(Pid::from_u32);
        }
        if self.config.model_server_process.is_empty() {
            return None;
        }
        if let Some(pid) = self.model_server {
            if Path::new(&format!("/proc/{pid}")).exists() {
                return Some(pid);
            }
        }
        // A full scan, only while the model server is not known.
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().with_cmd(sysinfo::UpdateKind::OnlyIfNotSet),
        );
        let want = self.config.model_server_process.as_str();
        let found = self
            .system
            .processes()
            .iter()
            .filter(|(pid, _)| **pid != self.own)
            .find(|(_, p)| {
                p.name().to_string_lossy() == want
                    || p.cmd().iter().any(|a| {
                        let a = a.to_string_lossy();
                        a == want || a.rsplit('/').next() == Some(want)
                    })
            })
            .map(|(pid, _)| *pid);
        if found != self.model_server {
            match found {
                Some(pid) => tracing::info!(%pid, process = want, "model server process found"),
                None => tracing::debug!(process = want, "model server process not found"),
            }
        }
        found
    }

    fn sample(&mut self) {
        let started = std::time::Instant::now();
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.model_server = self.find_model_server();
        let pids: Vec<Pid> = std::iter::once(self.own).chain(self.model_server).collect();
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let mut processes = Vec::new();
        for (role, pid) in [
            ("modelwatch", Some(self.own)),
            ("model_server", self.model_server),
        ] {
            let Some(pid) = pid else { continue };
            let Some(p) = self.system.process(pid) else {
                continue;
            };
            let (threads, fds) = proc_counts(pid.as_u32());
            processes.push(ProcessReading {
                role,
                pid: pid.as_u32(),
                name: p.name().to_string_lossy().into_owned(),
                cpu_seconds: p.accumulated_cpu_time() as f64 / 1000.0,
                memory_bytes: p.memory(),
                threads,
                file_descriptors: fds,
            });
        }
        // Found again each time (a few small reads): a process moved to another cgroup is followed.
        self.cgroup = cgroup::discover_self();
        let cgroup = self.cgroup.as_ref().map(cgroup::read_stats);
        let server_cgroup = self
            .model_server
            .and_then(|p| cgroup::discover_pid(p.as_u32()))
            .filter(|l| Some(l) != self.cgroup.as_ref())
            .map(|l| cgroup::read_stats(&l));
        let gpus = self.gpus.as_ref().map(|g| g.read()).unwrap_or_default();
        let mut s = self.snapshot.write().expect("poisoned");
        s.samples += 1;
        // The first reading has no interval to measure CPU over.
        s.cpu_utilization = (s.samples > 1).then(|| self.system.global_cpu_usage() as f64 / 100.0);
        s.logical_cpus = self.system.cpus().len() as u64;
        s.memory_total_bytes = self.system.total_memory();
        s.memory_used_bytes = self.system.used_memory();
        s.processes = processes;
        s.cpu_throttled_ratio = match &cgroup {
            Some(c) => self.throttled.add(c),
            None => {
                self.throttled.clear();
                None
            }
        };
        s.model_server_cpu_throttled_ratio = match &server_cgroup {
            Some(c) => self.server_throttled.add(c),
            None => {
                self.server_throttled.clear();
                None
            }
        };
        s.cgroup = cgroup;
        s.model_server_cgroup = server_cgroup;
        s.gpu_available = self.gpus.is_some();
        s.gpu_unavailable_reason = self.gpu_reason.clone();
        s.gpus = gpus;
        if let Some(g) = &self.gpus {
            s.gpu_driver_version = g.driver_version.clone();
            s.cuda_version = g.cuda_version.clone();
        }
        s.last_sample_ms = started.elapsed().as_secs_f64() * 1000.0;
    }
}

/// Starts the sampler thread (when `resources.enabled`) and registers its instruments.
pub fn spawn(config: &ResourcesConfig, meter: &Meter) -> std::io::Result<Option<Resources>> {
    if !config.enabled {
        return Ok(None);
    }
    let (gpus, gpu_reason) = if config.gpu {
        match gpu::Gpus::open() {
            Ok(g) => {
                tracing::info!(driver = %g.driver_version, cuda = %g.cuda_version, "GPU figures on (NVML)");
                (Some(g), None)
            }
            Err(why) => {
                tracing::info!(reason = %why, "no GPU figures: modelwatch.gpu.available is 0");
                (None, Some(why))
            }
        }
    } else {
        (None, Some("resources.gpu is off".to_string()))
    };
    let layout = cgroup::discover_self();
    match &layout {
        Some(l) => tracing::debug!(layout = ?l, "cgroup found"),
        None => tracing::info!("no cgroup found: container figures off"),
    }
    let snapshot = Arc::new(RwLock::new(ResourceSnapshot::default()));
    register_instruments(meter, snapshot.clone());
    let mut sampler = Sampler {
        config: config.clone(),
        system: System::new(),
        own: Pid::from_u32(std::process::id()),
        model_server: None,
        cgroup: layout,
        gpus,
        gpu_reason,
        snapshot: snapshot.clone(),
        throttled: Default::default(),
        server_throttled: Default::default(),
    };
    let interval = config.interval;
    let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("modelwatch-resources".into())
        .spawn(move || {
            crate::analysis::lower_priority();
            loop {
                sampler.sample();
                match stop_rx.recv_timeout(interval) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })?;
    Ok(Some(Resources {
        snapshot,
        stop,
        thread,
    }))
}

fn proc_attrs(p: &ProcessReading) -> [KeyValue; 2] {
    [
        KeyValue::new(attr::PROCESS_ROLE, p.role),
        KeyValue::new(attr::PROCESS_EXECUTABLE_NAME, p.name.clone()),
    ]
}

fn gpu_attrs(g: &gpu::GpuReading) -> [KeyValue; 2] {
    [
        KeyValue::new(attr::HW_ID, g.id.clone()),
        KeyValue::new(attr::HW_NAME, g.name.clone()),
    ]
}

/// Registers every resource instrument, read from the snapshot at collection.
pub fn register_instruments(meter: &Meter, snapshot: Arc<RwLock<ResourceSnapshot>>) {
    use names::*;
    macro_rules! read {
        ($f:ident, $m:expr, |$s:ident, $o:ident| $body:block) => {{
            let snap = snapshot.clone();
            $f(meter, $m, move |$o| {
                let $s = snap.read().expect("poisoned");
                $body
            });
        }};
    }
    read!(f64_gauge, SYSTEM_CPU_UTILIZATION, |s, o| {
        if let Some(u) = s.cpu_utilization {
            o.observe(u, &[]);
        }
    });
    read!(u64_gauge, SYSTEM_CPU_LOGICAL_COUNT, |s, o| {
        if s.samples > 0 {
            o.observe(s.logical_cpus, &[]);
        }
    });
    read!(u64_gauge, SYSTEM_MEMORY_USAGE, |s, o| {
        if s.samples > 0 {
            o.observe(
                s.memory_used_bytes,
                &[KeyValue::new(attr::SYSTEM_MEMORY_STATE, "used")],
            );
            o.observe(
                s.memory_total_bytes.saturating_sub(s.memory_used_bytes),
                &[KeyValue::new(attr::SYSTEM_MEMORY_STATE, "free")],
            );
        }
    });
    read!(f64_counter, PROCESS_CPU_TIME, |s, o| {
        for p in &s.processes {
            o.observe(p.cpu_seconds, &proc_attrs(p));
        }
    });
    read!(u64_gauge, PROCESS_MEMORY_USAGE, |s, o| {
        for p in &s.processes {
            o.observe(p.memory_bytes, &proc_attrs(p));
        }
    });
    read!(u64_gauge, PROCESS_THREAD_COUNT, |s, o| {
        for p in &s.processes {
            if let Some(t) = p.threads {
                o.observe(t, &proc_attrs(p));
            }
        }
    });
    read!(u64_gauge, PROCESS_FILE_DESCRIPTORS, |s, o| {
        for p in &s.processes {
            if let Some(n) = p.file_descriptors {
                o.observe(n, &proc_attrs(p));
            }
        }
    });
    read!(f64_gauge, CONTAINER_CPU_LIMIT, |s, o| {
        if let Some(v) = s.cgroup.as_ref().and_then(|c| c.cpu_limit_cores) {
            o.observe(v, &[]);
        }
    });
    read!(f64_counter, CONTAINER_CPU_TIME, |s, o| {
        if let Some(v) = s.cgroup.as_ref().and_then(|c| c.cpu_usage_seconds) {
            o.observe(v, &[]);
        }
    });
    read!(u64_counter, CONTAINER_CPU_PERIODS, |s, o| {
        if let Some(v) = s.cgroup.as_ref().and_then(|c| c.cpu_periods) {
            o.observe(v, &[]);
        }
    });
    read!(u64_counter, CONTAINER_CPU_THROTTLED_PERIODS, |s, o| {
        if let Some(v) = s.cgroup.as_ref().and_then(|c| c.cpu_throttled_periods) {
            o.observe(v, &[]);
        }
    });
    read!(f64_counter, CONTAINER_CPU_THROTTLED_TIME, |s, o| {
        if let Some(v) = s.cgroup.as_ref().and_then(|c| c.cpu_throttled_seconds) {
            o.observe(v, &[]);
        }
    });
    read!(u64_gauge, CONTAINER_MEMORY_USAGE, |s, o| {
        if let Some(v) = s.cgroup.as_ref().and_then(|c| c.memory_usage_bytes) {
            o.observe(v, &[]);
        }
    });
    read!(u64_gauge, CONTAINER_MEMORY_LIMIT, |s, o| {
        if let Some(v) = s.cgroup.as_ref().and_then(|c| c.memory_limit_bytes) {
            o.observe(v, &[]);
        }
    });
    read!(u64_counter, CONTAINER_MEMORY_OOM_KILLS, |s, o| {
        if let Some(v) = s.cgroup.as_ref().and_then(|c| c.oom_kills) {
            o.observe(v, &[]);
        }
    });
    read!(u64_counter, CONTAINER_DISK_IO, |s, o| {
        if let Some(c) = &s.cgroup {
            for (dir, v) in [("read", c.io_read_bytes), ("write", c.io_write_bytes)] {
                if let Some(v) = v {
                    o.observe(v, &[KeyValue::new(attr::DISK_IO_DIRECTION, dir)]);
                }
            }
        }
    });
    read!(u64_gauge, GPU_AVAILABLE, |s, o| {
        if s.samples > 0 {
            o.observe(s.gpu_available as u64, &[]);
        }
    });
    macro_rules! per_gpu {
        ($f:ident, $m:expr, $field:ident, $conv:expr) => {
            read!($f, $m, |s, o| {
                for g in &s.gpus {
                    if let Some(v) = g.$field {
                        o.observe($conv(v), &gpu_attrs(g));
                    }
                }
            });
        };
    }
    per_gpu!(f64_gauge, HW_GPU_UTILIZATION, utilization, |v| v);
    per_gpu!(u64_gauge, HW_GPU_MEMORY_USAGE, memory_used_bytes, |v| v);
    per_gpu!(u64_gauge, HW_GPU_MEMORY_LIMIT, memory_total_bytes, |v| v);
    per_gpu!(f64_gauge, HW_GPU_TEMPERATURE, temperature_celsius, |v| v);
    per_gpu!(f64_gauge, HW_GPU_POWER_DRAW, power_draw_watts, |v| v);
    per_gpu!(f64_gauge, HW_GPU_POWER_LIMIT, power_limit_watts, |v| v);
    per_gpu!(f64_gauge, HW_GPU_CLOCK_SM, sm_clock_hertz, |v| v);
    read!(u64_gauge, HW_GPU_THROTTLE, |s, o| {
        for g in &s.gpus {
            for r in &g.throttle_reasons {
                let [a, b] = gpu_attrs(g);
                o.observe(1, &[a, b, KeyValue::new(attr::REASON, r.clone())]);
            }
        }
    });
    read!(u64_counter, HW_GPU_ERRORS, |s, o| {
        for g in &s.gpus {
            for (kind, v) in [
                ("ecc_corrected", g.ecc_corrected),
                ("ecc_uncorrected", g.ecc_uncorrected),
                ("xid", g.xid_errors),
            ] {
                if let Some(v) = v {
                    let [a, b] = gpu_attrs(g);
                    o.observe(v, &[a, b, KeyValue::new(attr::ERROR_TYPE, kind)]);
                }
            }
        }
    });
}

/// Starts scraping the model server's metrics (when configured) on the
/// runtime, and registers the `modelwatch.engine.*` instruments.
///
/// A URL on the model server itself (same scheme, host and port as
/// `proxy.upstream`) is scraped with `proxy.upstream_tls`.
pub fn spawn_engine(
    config: &crate::config::Config,
    meter: &Meter,
    stop: tokio_util::sync::CancellationToken,
) -> Option<Arc<RwLock<engine::EngineReading>>> {
    let url = &config.resources.engine_metrics_url;
    if url.is_empty() {
        return None;
    }
    let same_server = url
        .strip_prefix(config.proxy.upstream.trim_end_matches('/'))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let tls = if same_server {
        config.proxy.upstream_tls.clone()
    } else {
        crate::config::ClientTlsConfig::default()
    };
    let config = &config.resources;
    let reading = Arc::new(RwLock::new(engine::EngineReading::default()));
    tokio::spawn(engine::run(
        crate::outbound::client_for(&tls).unwrap_or_else(|_| crate::outbound::client()),
        config.engine_metrics_url.clone(),
        config.interval,
        config.interval.min(std::time::Duration::from_secs(5)),
        reading.clone(),
        stop,
    ));
    register_engine(meter, reading.clone());
    Some(reading)
}

/// Registers the `modelwatch.engine.*` instruments, read from `reading`.
pub fn register_engine(meter: &Meter, reading: Arc<RwLock<engine::EngineReading>>) {
    use names::*;
    let e = |r: &engine::EngineReading| KeyValue::new(attr::ENGINE, r.engine);
    macro_rules! gauge {
        ($m:expr, $field:ident) => {{
            let rd = reading.clone();
            f64_gauge(meter, $m, move |o| {
                let r = rd.read().expect("poisoned");
                if let Some(v) = r.$field.filter(|_| r.up) {
                    o.observe(v, &[e(&r)]);
                }
            });
        }};
    }
    let rd = reading.clone();
    u64_gauge(meter, ENGINE_UP, move |o| {
        let r = rd.read().expect("poisoned");
        if r.scrapes > 0 {
            o.observe(r.up as u64, &[e(&r)]);
        }
    });
    gauge!(ENGINE_REQUESTS_RUNNING, requests_running);
    gauge!(ENGINE_REQUESTS_WAITING, requests_waiting);
    gauge!(ENGINE_KV_CACHE_USAGE, kv_cache_usage);
    gauge!(ENGINE_BATCH_SIZE, batch_size);
    let rd = reading.clone();
    f64_counter(meter, ENGINE_TTFT_SUM, move |o| {
        let r = rd.read().expect("poisoned");
        if let Some(v) = r.ttft_sum_seconds {
            o.observe(v, &[e(&r)]);
        }
    });
    let rd = reading.clone();
    f64_counter(meter, ENGINE_TTFT_COUNT, move |o| {
        let r = rd.read().expect("poisoned");
        if let Some(v) = r.ttft_count {
            o.observe(v, &[e(&r)]);
        }
    });
    let rd = reading.clone();
    f64_counter(meter, ENGINE_TOKENS, move |o| {
        let r = rd.read().expect("poisoned");
        for (kind, v) in [("input", r.input_tokens), ("output", r.output_tokens)] {
            if let Some(v) = v {
                o.observe(v, &[e(&r), KeyValue::new(attr::GEN_AI_TOKEN_TYPE, kind)]);
            }
        }
    });
    let rd = reading;
    f64_counter(meter, ENGINE_REQUESTS, move |o| {
        let r = rd.read().expect("poisoned");
        for (result, v) in [("ok", r.requests_ok), ("error", r.requests_error)] {
            if let Some(v) = v {
                o.observe(v, &[e(&r), KeyValue::new(attr::RESULT, result)]);
            }
        }
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A snapshot with every figure present, for the exporter tests.
    pub(crate) fn full_snapshot() -> ResourceSnapshot {
        ResourceSnapshot {
            samples: 2,
            cpu_utilization: Some(0.25),
            logical_cpus: 2,
            memory_total_bytes: 1 << 30,
            memory_used_bytes: 1 << 29,
            cpu_throttled_ratio: Some(0.5),
            model_server_cgroup: None,
            model_server_cpu_throttled_ratio: None,
            processes: vec![ProcessReading {
                role: "modelwatch",
                pid: 1,
                name: "modelwatch".into(),
                cpu_seconds: 1.5,
                memory_bytes: 1 << 24,
                threads: Some(4),
                file_descriptors: Some(12),
            }],
            cgroup: Some(cgroup::CgroupStats {
                version: 2,
                cpu_limit_cores: Some(0.5),
                cpu_usage_seconds: Some(10.0),
                cpu_periods: Some(100),
                cpu_throttled_periods: Some(5),
                cpu_throttled_seconds: Some(0.2),
                memory_usage_bytes: Some(1 << 20),
                memory_limit_bytes: Some(1 << 30),
                oom_kills: Some(0),
                io_read_bytes: Some(1),
                io_write_bytes: Some(2),
            }),
            gpu_available: true,
            gpu_unavailable_reason: None,
            gpus: vec![gpu::GpuReading {
                id: "GPU-1".into(),
                name: "NVIDIA H200".into(),
                index: 0,
                utilization: Some(0.5),
                memory_used_bytes: Some(1 << 30),
                memory_total_bytes: Some(1 << 34),
                temperature_celsius: Some(40.0),
                power_draw_watts: Some(100.0),
                power_limit_watts: Some(700.0),
                sm_clock_hertz: Some(1.98e9),
                throttle_reasons: vec!["sw_power_cap".into()],
                ecc_corrected: Some(0),
                ecc_uncorrected: Some(0),
                xid_errors: Some(0),
            }],
            gpu_driver_version: "550.0".into(),
            cuda_version: "12.4".into(),
            last_sample_ms: 1.0,
        }
    }
}
