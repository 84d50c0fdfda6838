//! The container's limits and usage from its cgroup: v2 (`cpu.max`,
//! `cpu.stat`, `memory.current`, `memory.max`, `memory.events`, `io.stat`)
//! and v1 (`cpu.cfs_quota_us`/`cpu.cfs_period_us`, `cpu.stat`,
//! `cpuacct.usage`, `memory.limit_in_bytes`, `memory.usage_in_bytes`,
//! `memory.oom_control`, `blkio.throttle.io_service_bytes`), read into one
//! shape so that both export the same metrics.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// One reading of the container's cgroup. None: not available in this layout.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CgroupStats {
    pub version: u8,
    /// CPU limit in cores (quota / period); None when unlimited.
    pub cpu_limit_cores: Option<f64>,
    /// CPU time used by the cgroup, seconds.
    pub cpu_usage_seconds: Option<f64>,
    pub cpu_periods: Option<u64>,
    pub cpu_throttled_periods: Option<u64>,
    pub cpu_throttled_seconds: Option<f64>,
    pub memory_usage_bytes: Option<u64>,
    /// None when unlimited.
    pub memory_limit_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

/// Where this process's cgroup files are.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// The unified hierarchy with the cpu and memory controllers.
    V2 { dir: PathBuf },
    /// Per-controller hierarchies.
    V1 {
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
        blkio: Option<PathBuf>,
    },
}

/// Values of "no limit": v1 writes a page-aligned i64::MAX, v2 writes `max`.
const UNLIMITED: u64 = 1 << 62;

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// `key value` lines (cpu.stat, memory.events, memory.oom_control).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// Finds the cgroup of the process whose `/proc/PID/cgroup` reads
/// `proc_cgroup`, under the cgroup mount `root` (normally /sys/fs/cgroup).
pub fn discover(root: &Path, proc_cgroup: &str) -> Option<Layout> {
    let mut v2_path = None;
    let mut v1: Vec<(String, String)> = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path.trim_start_matches('/').to_string());
        } else {
            for c in controllers.split(',') {
                v1.push((c.to_string(), path.trim_start_matches('/').to_string()));
            }
        }
    }
    // A cgroup directory, or the hierarchy's root when the path is not
    // visible (a container whose cgroup namespace shows the host's path).
    let dir = |base: PathBuf, path: &str| {
        let full = base.join(path);
        if full.is_dir() {
            Some(full)
        } else if base.is_dir() {
            Some(base)
        } else {
            None
        }
    };
    for base in [root.to_path_buf(), root.join("unified")] {
        let has = read(&base.join("cgroup.controllers")).is_some_and(|c| {
            let c: Vec<&str> = c.split_whitespace().collect();
            c.contains(&"cpu") && c.contains(&"memory")
        });
        if has {
            if let Some(d) = dir(base, v2_path.as_deref().unwrap_or("")) {
                return Some(Layout::V2 { dir: d });
            }
        }
    }
    if v1.is_empty() {
        return None;
    }
    let find = |name: &str| {
        let (c, path) = v1.iter().find(|(c, _)| c == name)?;
        // `cpu,cpuacct` hierarchies are mounted under either name.
        [
            root.join(c),
            root.join(
                v1.iter()
                    .filter(|(_, p)| p == path)
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]
        .into_iter()
        .find(|b| b.is_dir())
        .and_then(|b| dir(b, path))
    };
    let layout = Layout::V1 {
        cpu: find("cpu"),
        cpuacct: find("cpuacct"),
        memory: find("memory"),
        blkio: find("blkio"),
    };
    match &layout {
        Layout::V1 {
            cpu: None,
            cpuacct: None,
            memory: None,
            blkio: None,
        } => None,
        _ => Some(layout),
    }
}

/// Reads the current figures of `layout`.
pub fn read_stats(layout: &Layout) -> CgroupStats {
    match layout {
        Layout::V2 { dir } => {
            let mut s = CgroupStats {
                version: 2,
                ..CgroupStats::default()
            };
            if let Some(max) = read(&dir.join("cpu.max")) {
                let mut it = max.split_whitespace();
                if let (Some(q), Some(p)) = (it.next(), it.next()) {
                    if let (Ok(q), Ok(p)) = (q.parse::<f64>(), p.parse::<f64>()) {
                        if p > 0.0 {
                            s.cpu_limit_cores = Some(q / p);
                        }
                    }
                }
            }
            if let Some(stat) = read(&dir.join("cpu.stat")) {
                s.cpu_usage_seconds = keyed(&stat, "usage_usec").map(|v| v as f64 / 1e6);
                s.cpu_periods = keyed(&stat, "nr_periods");
                s.cpu_throttled_periods = keyed(&stat, "nr_throttled");
                s.cpu_throttled_seconds = keyed(&stat, "throttled_usec").map(|v| v as f64 / 1e6);
            }
            s.memory_usage_bytes = read_u64(&dir.join("memory.current"));
            s.memory_limit_bytes = read_u64(&dir.join("memory.max")).filter(|v| *v < UNLIMITED);
            s.oom_kills = read(&dir.join("memory.events")).and_then(|e| keyed(&e, "oom_kill"));
            if let Some(io) = read(&dir.join("io.stat")) {
                let (mut r, mut w) = (0, 0);
                for field in io.split_whitespace() {
                    if let Some(v) = field.strip_prefix("rbytes=") {
                        r += v.parse::<u64>().unwrap_or(0);
                    } else if let Some(v) = field.strip_prefix("wbytes=") {
                        w += v.parse::<u64>().unwrap_or(0);
                    }
                }
                s.io_read_bytes = Some(r);
                s.io_write_bytes = Some(w);
            }
            s
        }
        Layout::V1 {
            cpu,
            cpuacct,
            memory,
            blkio,
        } => {
            let mut s = CgroupStats {
                version: 1,
                ..CgroupStats::default()
            };
            if let Some(cpu) = cpu {
                let quota =
                    read(&cpu.join("cpu.cfs_quota_us")).and_then(|v| v.trim().parse::<i64>().ok());
                let period = read_u64(&cpu.join("cpu.cfs_period_us"));
                if let (Some(q), Some(p)) = (quota, period) {
                    if q > 0 && p > 0 {
                        s.cpu_limit_cores = Some(q as f64 / p as f64);
                    }
                }
                if let Some(stat) = read(&cpu.join("cpu.stat")) {
                    s.cpu_periods = keyed(&stat, "nr_periods");
                    s.cpu_throttled_periods = keyed(&stat, "nr_throttled");
                    s.cpu_throttled_seconds =
                        keyed(&stat, "throttled_time").map(|v| v as f64 / 1e9);
                }
            }
            if let Some(acct) = cpuacct.as_ref().or(cpu.as_ref()) {
                s.cpu_usage_seconds = read_u64(&acct.join("cpuacct.usage")).map(|v| v as f64 / 1e9);
            }
            if let Some(mem) = memory {
                s.memory_usage_bytes = read_u64(&mem.join("memory.usage_in_bytes"));
                s.memory_limit_bytes =
                    read_u64(&mem.join("memory.limit_in_bytes")).filter(|v| *v < UNLIMITED);
                s.oom_kills =
                    read(&mem.join("memory.oom_control")).and_then(|e| keyed(&e, "oom_kill"));
            }
            if let Some(b) = blkio {
                if let Some(text) = read(&b.join("blkio.throttle.io_service_bytes")) {
                    let (mut r, mut w) = (0, 0);
                    for l in text.lines() {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        if let [_, op, v] = f[..] {
                            match op {
                                "Read" => r += v.parse::<u64>().unwrap_or(0),
                                "Write" => w += v.parse::<u64>().unwrap_or(0),
                                _ => {}
                            }
                        }
                    }
                    s.io_read_bytes = Some(r);
                    s.io_write_bytes = Some(w);
                }
            }
            s
        }
    }
}

/// The layout of this process, from /proc/self/cgroup and /sys/fs/cgroup.
pub fn discover_self() -> Option<Layout> {
    let proc = read(Path::new("/proc/self/cgroup"))?;
    discover(Path::new("/sys/fs/cgroup"), &proc)
}

/// The layout of another process (the model server, where its PID is
/// known and its cgroup is visible: the same host, or a pod that shares
/// its process namespace and cgroup mount).
pub fn discover_pid(pid: u32) -> Option<Layout> {
    let proc = read(&Path::new("/proc").join(pid.to_string()).join("cgroup"))?;
    discover(Path::new("/sys/fs/cgroup"), &proc)
}

/// Readings of CPU periods and throttled periods, to tell what share of
/// the recent periods were throttled.
#[derive(Debug, Default)]
pub struct ThrottleHistory(std::collections::VecDeque<(u64, u64)>);

impl ThrottleHistory {
    /// Readings kept: at `resources.interval` 5 s, the last minute.
    pub const READINGS: usize = 13;

    /// Adds a reading; the share of CPU periods throttled since the oldest
    /// one kept (None without periods in between, or without a CPU limit).
    pub fn add(&mut self, stats: &CgroupStats) -> Option<f64> {
        let (Some(periods), Some(throttled)) = (stats.cpu_periods, stats.cpu_throttled_periods)
        else {
            self.0.clear();
            return None;
        };
        // Counters that went back: another cgroup, or a recreated one.
        if self
            .0
            .back()
            .is_some_and(|(p, t)| *p > periods || *t > throttled)
        {
            self.0.clear();
        }
        if self.0.len() == Self::READINGS {
            self.0.pop_front();
        }
        self.0.push_back((periods, throttled));
        let (p0, t0) = *self.0.front()?;
        (periods > p0).then(|| (throttled - t0) as f64 / (periods - p0) as f64)
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (PathBuf, String) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(name);
        let proc = std::fs::read_to_string(root.join("proc_self_cgroup")).unwrap();
        (root, proc)
    }

    #[test]
    fn a_kubernetes_cgroup_v2_container() {
        let (root, proc) = fixture("v2-k8s");
        let layout = discover(&root, &proc).unwrap();
        assert_eq!(layout, Layout::V2 { dir: root.clone() });
        let s = read_stats(&layout);
        assert_eq!(
            s,
            CgroupStats {
                version: 2,
                cpu_limit_cores: Some(0.5),
                cpu_usage_seconds: Some(123.456789),
                cpu_periods: Some(2000),
                cpu_throttled_periods: Some(150),
                cpu_throttled_seconds: Some(4.5),
                memory_usage_bytes: Some(268435456),
                memory_limit_bytes: Some(536870912),
                oom_kills: Some(1),
                io_read_bytes: Some(1048576 + 4096),
                io_write_bytes: Some(2097152),
            }
        );
    }

    #[test]
    fn this_machines_hybrid_v1_layout() {
        // The unified hierarchy holds only hugetlb: cpu and memory come from v1.
        let (root, proc) = fixture("v1-hybrid");
        let layout = discover(&root, &proc).unwrap();
        let Layout::V1 { cpu, memory, .. } = &layout else {
            panic!("{layout:?}")
        };
        assert_eq!(cpu.as_deref(), Some(root.join("cpu").as_path()));
        assert!(memory
            .as_ref()
            .unwrap()
            .ends_with("memory/process_api/c6ead730778d54c261de93ed050d4433"));
        let s = read_stats(&layout);
        assert_eq!(s.version, 1);
        assert_eq!(s.cpu_limit_cores, None, "cfs_quota_us -1: no limit");
        assert_eq!(s.memory_limit_bytes, None, "9223372036854771712: no limit");
        assert_eq!(s.memory_usage_bytes, Some(5072121856));
        assert_eq!(s.oom_kills, Some(0));
        assert_eq!((s.cpu_periods, s.cpu_throttled_periods), (Some(0), Some(0)));
        assert!(s.cpu_usage_seconds.unwrap() > 0.0);
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (Some(0), Some(0)));
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(
            discover(Path::new("/nonexistent"), "garbage\n::\n1:x"),
            None
        );
        assert_eq!(keyed("a\nb 1 2\nc x", "c"), None);
    }

    #[test]
    fn throttled_share_over_the_recent_readings() {
        let r = |p, t| CgroupStats {
            cpu_periods: Some(p),
            cpu_throttled_periods: Some(t),
            ..Default::default()
        };
        let mut h = ThrottleHistory::default();
        assert_eq!(h.add(&r(100, 0)), None);
        assert_eq!(h.add(&r(200, 50)), Some(0.5));
        // Idle: no periods pass, the share over the kept readings stands.
        assert_eq!(h.add(&r(200, 50)), Some(0.5));
        for i in 0..ThrottleHistory::READINGS as u64 {
            h.add(&r(300 + i, 50));
        }
        assert_eq!(
            h.add(&r(400, 50)),
            Some(0.0),
            "old throttling has left the history"
        );
        assert_eq!(
            h.add(&r(10, 0)),
            None,
            "a counter that went back starts anew"
        );
        assert_eq!(h.add(&CgroupStats::default()), None);
    }
}
