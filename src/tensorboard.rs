//! TensorBoard event files, so that production figures open next to the
//! training curves. Every `tensorboard.interval` the figures of `/v1/status`
//! (quality per window, drift, latency and traffic) are written as scalars,
//! one run folder per model version (`dir/MODEL/VERSION/`), one `Event` per
//! run and write.
//!
//! Our own writer: TFRecord framing (length, masked CRC-32C of the length,
//! data, masked CRC-32C of the data) around `tensorflow.Event` protos encoded
//! with prost. The crates that write TensorBoard files (tensorboard-rs) are
//! unmaintained and bring a second protobuf stack; the format is small and
//! stable, and tests/it/tensorboard.rs reads our files with TensorBoard's own
//! EventAccumulator.
//!
//! Disk is bounded: a file is closed at `max_file_bytes` and only `max_files`
//! are kept per run. Writing happens on the caller's blocking thread.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::config::TensorboardConfig;

/// `tensorflow.Event` (tensorflow/core/util/event.proto), the fields we write.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with `simple_value` (a scalar). The value is
/// a member of the `value` oneof, so it is written even when it is 0.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(oneof = "Scalar", tags = "2")]
    pub value: Option<Scalar>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Scalar {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The scalars of one status, by run ("MODEL/VERSION") and tag.
pub fn scalars(status: &Value) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut runs: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let run = |m: &Value| {
        format!(
            "{}/{}",
            m["model"].as_str().filter(|s| !s.is_empty()).unwrap_or("_"),
            m["model_version"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("_")
        )
    };
    let mut put = |run: String, tag: String, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            runs.entry(run).or_default().insert(tag, v);
        }
    };
    for m in status["quality"]["models"].as_array().into_iter().flatten() {
        for w in m["windows"].as_array().into_iter().flatten() {
            let win = w["window"].as_str().unwrap_or("");
            let t = |name: &str| format!("quality/{win}/{name}");
            put(run(m), t("labelled"), w["labelled"].as_f64());
            put(run(m), t("accuracy"), w["accuracy"].as_f64());
            put(
                run(m),
                t("precision_macro"),
                w["macro_avg"]["precision"].as_f64(),
            );
            put(run(m), t("recall_macro"), w["macro_avg"]["recall"].as_f64());
            put(run(m), t("f1_macro"), w["macro_avg"]["f1"].as_f64());
            put(run(m), t("roc_auc"), w["roc_auc"].as_f64());
            put(run(m), t("log_loss"), w["log_loss"].as_f64());
            for k in ["mae", "rmse", "mape", "r2"] {
                put(run(m), t(k), w["regression"][k].as_f64());
            }
            put(
                run(m),
                t("estimated_accuracy"),
                w["estimated"]["accuracy"].as_f64(),
            );
        }
    }
    for m in status["drift"]["models"].as_array().into_iter().flatten() {
        put(run(m), "drift/share".into(), m["share"].as_f64());
        put(
            run(m),
            "drift/drifted_features".into(),
            m["drifted_features"].as_array().map(|a| a.len() as f64),
        );
        for f in m["features"].as_array().into_iter().flatten() {
            if let Some(name) = f["feature"].as_str() {
                put(
                    run(m),
                    format!("drift/{}/{name}", f["method"].as_str().unwrap_or("score")),
                    f["score"].as_f64(),
                );
            }
        }
    }
    for m in status["models"].as_array().into_iter().flatten() {
        put(run(m), "traffic/requests".into(), m["requests"].as_f64());
        put(run(m), "traffic/errors".into(), m["errors"].as_f64());
        put(
            run(m),
            "latency/p50_seconds".into(),
            m["latency_p50_seconds"].as_f64(),
        );
        put(
            run(m),
            "latency/p95_seconds".into(),
            m["latency_p95_seconds"].as_f64(),
        );
    }
    runs
}

/// A folder name from a model or version (no separators, no dot-names).
fn safe(part: &str) -> String {
    let s: String = part
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".into()
    } else {
        s
    }
}

struct RunFile {
    path: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
}

/// What `/v1/status` says of one run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunStatus {
    pub run: String,
    pub path: String,
    /// Scalar events written to the run (all files), and the newest step.
    pub records: u64,
    pub last_step: i64,
    /// The scalars of the newest event.
    pub last: BTreeMap<String, f64>,
}

/// The writer; `write` is called every interval.
pub struct Writer {
    config: TensorboardConfig,
    files: BTreeMap<String, RunFile>,
    pub runs: BTreeMap<String, RunStatus>,
    pub errors: u64,
    step: i64,
    host: String,
}

impl Writer {
    pub fn new(config: TensorboardConfig) -> Writer {
        let host = sysinfo::System::host_name().unwrap_or_else(|| "localhost".into());
        Writer {
            config,
            files: BTreeMap::new(),
            runs: BTreeMap::new(),
            errors: 0,
            step: 0,
            host: safe(&host),
        }
    }

    fn open(&self, run: &str) -> std::io::Result<RunFile> {
        let dir = run
            .split('/')
            .fold(PathBuf::from(&self.config.dir), |p, part| {
                p.join(safe(part))
            });
        std::fs::create_dir_all(&dir)?;
        // The oldest files go first when there are too many.
        let mut existing: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("events.out.tfevents.") && n.ends_with(".modelwatch")
                })
            })
            .collect();
        existing.sort();
        while existing.len() >= self.config.max_files {
            let _ = std::fs::remove_file(existing.remove(0));
        }
        let t = now();
        let path = dir.join(format!(
            "events.out.tfevents.{:010}.{:06}.{}.modelwatch",
            t as u64,
            ((t.fract()) * 1e6) as u64,
            self.host
        ));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        let mut out = BufWriter::new(file);
        let header = Event {
            wall_time: t,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        };
        let rec = record(&prost::Message::encode_to_vec(&header));
        out.write_all(&rec)?;
        out.flush()?;
        Ok(RunFile {
            path,
            out,
            bytes: rec.len() as u64,
        })
    }

    /// Writes one event per run with the scalars of `status`.
    pub fn write(&mut self, status: &Value) {
        self.step += 1;
        let wall_time = now();
        for (run, values) in scalars(status) {
            if let Err(e) = self.write_run(&run, &values, wall_time) {
                self.errors += 1;
                tracing::warn!(run, error = %e, dir = %self.config.dir, "cannot write TensorBoard events");
                self.files.remove(&run);
            }
        }
    }

    fn write_run(
        &mut self,
        run: &str,
        values: &BTreeMap<String, f64>,
        wall_time: f64,
    ) -> std::io::Result<()> {
        let rotate = self
            .files
            .get(run)
            .is_some_and(|f| f.bytes >= self.config.max_file_bytes);
        if rotate || !self.files.contains_key(run) {
            let f = self.open(run)?;
            self.files.insert(run.to_string(), f);
        }
        let event = Event {
            wall_time,
            step: self.step,
            what: Some(What::Summary(Summary {
                value: values
                    .iter()
                    .map(|(tag, v)| SummaryValue {
                        tag: tag.clone(),
                        value: Some(Scalar::SimpleValue(*v as f32)),
                    })
                    .collect(),
            })),
        };
        let rec = record(&prost::Message::encode_to_vec(&event));
        let f = self.files.get_mut(run).expect("opened above");
        f.out.write_all(&rec)?;
        f.out.flush()?;
        f.bytes += rec.len() as u64;
        let st = self.runs.entry(run.to_string()).or_default();
        st.run = run.to_string();
        st.path = f
            .path
            .parent()
            .map(Path::display)
            .map(|d| d.to_string())
            .unwrap_or_default();
        st.records += 1;
        st.last_step = self.step;
        st.last = values.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::manual_rotate)] // TensorFlow's own formulation, on purpose
    fn tfrecord_framing_matches_tensorflow() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720, B.4).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let r = record(b"abc");
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        let masked = u32::from_le_bytes(r[15..19].try_into().unwrap());
        let crc = crc32c::crc32c(b"abc");
        assert_eq!(
            masked,
            ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn a_zero_is_written() {
        let v = SummaryValue {
            tag: "t".into(),
            value: Some(Scalar::SimpleValue(0.0)),
        };
        // tag (field 1, "t"), then simple_value (field 2, fixed32 0.0).
        assert_eq!(
            prost::Message::encode_to_vec(&v),
            [0x0a, 1, b't', 0x15, 0, 0, 0, 0]
        );
    }

    #[test]
    fn scalars_are_named_per_run() {
        let status = serde_json::json!({
            "quality": {"models": [{"model": "bc", "model_version": "v1", "windows": [
                {"window": "1h", "labelled": 200, "accuracy": 0.9, "macro_avg": {"f1": 0.8}}]}]},
            "drift": {"models": [{"model": "bc", "model_version": "v1", "share": 0.25,
                "drifted_features": ["a"], "features": [{"feature": "a", "method": "ks", "score": 0.01}]}]},
            "models": [{"model": "bc", "model_version": "v1", "requests": 10, "errors": 0,
                "latency_p50_seconds": 0.01, "latency_p95_seconds": null}]
        });
        let s = scalars(&status);
        let run = &s["bc/v1"];
        assert_eq!(run["quality/1h/accuracy"], 0.9);
        assert_eq!(run["quality/1h/labelled"], 200.0);
        assert_eq!(run["drift/ks/a"], 0.01);
        assert_eq!(run["drift/drifted_features"], 1.0);
        assert_eq!(run["traffic/requests"], 10.0);
        assert!(!run.contains_key("latency/p95_seconds"));
    }

    #[test]
    fn files_rotate_and_are_bounded() {
        let dir = tempfile_dir();
        let mut w = Writer::new(TensorboardConfig {
            enabled: true,
            dir: dir.display().to_string(),
            max_file_bytes: 4096,
            max_files: 2,
            ..Default::default()
        });
        let status = serde_json::json!({"models": [{"model": "m", "model_version": "1", "requests": 1, "errors": 0}]});
        for _ in 0..400 {
            w.write(&status);
        }
        let files = std::fs::read_dir(dir.join("m/1")).unwrap().count();
        assert!(files <= 2, "{files} files");
        assert_eq!(w.runs["m/1"].records, 400);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("mw-tb-{}-{}", std::process::id(), now()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
