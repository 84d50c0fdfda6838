//! Live config reload: on SIGHUP, on `POST /-/reload` and when the config
//! file changes (a ConfigMap update), the file is read and checked as at
//! start; a bad one is refused (the key and the reason are logged and
//! answered) and the running config stays. A good one is compared with the
//! running config key by key: what [`crate::config::reload::LIVE_KEYS`]
//! names is applied in place (alert rules and sinks, the sample rate,
//! protocol model settings, drift profiles and thresholds, quality windows,
//! payload logging, the canary gate), without touching a connection; the
//! rest is reported as waiting for a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::reload::{changed_keys, hash, in_force, is_live};
use crate::config::{Config, ConfigError};
use crate::drift::profile::Profile;
use crate::telemetry::names::{attr, *};
use crate::telemetry::Telemetry;

/// Reads the config again as the start did: the file, the environment,
/// the command line's flags, validated.
pub type LoadFn = dyn Fn() -> Result<Config, ConfigError> + Send + Sync;

/// Where a reload reads its config from.
#[derive(Clone)]
pub struct Loader {
    /// The file watched for changes (none: only SIGHUP and `/-/reload`).
    pub path: Option<PathBuf>,
    pub load: Arc<LoadFn>,
}

/// How often the config file is read to see whether it changed.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// What the running parts expose to a reload.
pub struct Targets {
    /// The proxy's sampler (not the proxy: its sample sender must go
    /// when the proxy stops, so that analysis drains and ends).
    pub sampler: Arc<crate::sample::Sampler>,
    pub analysis: Arc<crate::analysis::Control>,
    pub quality: Option<crate::quality::QualityHandle>,
    pub alerts: Arc<tokio::sync::Mutex<Option<crate::alerts::Alerts>>>,
    pub alerts_snapshot: Arc<RwLock<crate::alerts::Snapshot>>,
    pub telemetry: Arc<Telemetry>,
    /// What a firing alert's diagnosis reads.
    pub diagnosis: crate::diagnosis::Sources,
}

/// The result of one reload, as answered and shown in `/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `applied`, `unchanged` or `refused`.
    pub result: &'static str,
    /// `signal`, `http` or `file`.
    pub trigger: &'static str,
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    /// Settings applied in place.
    pub applied: Vec<String>,
    /// Settings changed in the file that wait for a restart.
    pub restart_required: Vec<String>,
    /// Why the file was refused.
    pub error: Option<String>,
    /// The hash of the config in force afterwards (hex).
    pub hash: String,
}

#[derive(Default)]
pub(crate) struct Counts {
    success: u64,
    failure: u64,
    last: Option<Outcome>,
    pending_restart: Vec<String>,
}

impl Counts {
    /// Whether the last reload (or, before any, the start) loaded its config.
    fn last_ok(&self) -> bool {
        self.last.as_ref().is_none_or(|o| o.result != "refused")
    }
}

/// Holds the config in force and applies reloads, one at a time.
pub struct Reloader {
    loader: Option<Loader>,
    current: RwLock<Arc<Config>>,
    profiles: Mutex<HashMap<String, Profile>>,
    targets: Targets,
    counts: Arc<Mutex<Counts>>,
    hash: Arc<std::sync::atomic::AtomicU64>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        config: Config,
        profiles: HashMap<String, Profile>,
        loader: Option<Loader>,
        targets: Targets,
    ) -> Arc<Reloader> {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let h = Arc::new(std::sync::atomic::AtomicU64::new(hash(&config)));
        register(&targets.telemetry.meter, counts.clone(), h.clone());
        Arc::new(Reloader {
            loader,
            current: RwLock::new(Arc::new(config)),
            profiles: Mutex::new(profiles),
            targets,
            counts,
            hash: h,
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// The config in force.
    pub fn current(&self) -> Arc<Config> {
        self.current.read().expect("poisoned").clone()
    }

    /// What `/v1/status` shows.
    pub fn status(&self) -> serde_json::Value {
        let c = self.counts.lock().expect("poisoned");
        serde_json::json!({
            "hash": format!("{:012x}", self.hash.load(std::sync::atomic::Ordering::Relaxed)),
            "file": self.loader.as_ref().and_then(|l| l.path.as_ref()).map(|p| p.display().to_string()),
            "reloads": {"success": c.success, "failure": c.failure},
            "last_reload_successful": c.last_ok(),
            "last": c.last,
            "restart_required": c.pending_restart,
        })
    }

    /// Reads, checks and applies the config. Never fails the running
    /// modelwatch: a refused file leaves everything as it was.
    pub async fn reload(&self, trigger: &'static str) -> Outcome {
        let _one = self.one_at_a_time.lock().await;
        let Some(loader) = self.loader.clone() else {
            return self.refused(
                trigger,
                "this modelwatch was not started from a config that can be read again".into(),
            );
        };
        let checked = tokio::task::spawn_blocking(move || check(&loader)).await;
        let (loaded, profiles) = match checked {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return self.refused(trigger, e),
            Err(e) => return self.refused(trigger, format!("the check failed: {e}")),
        };
        let running = self.current();
        let mut changed = changed_keys(&running, &loaded);
        let profiles_changed = *self.profiles.lock().expect("poisoned") != profiles;
        if profiles_changed && !changed.iter().any(|k| k == "drift.profiles") {
            // Same paths, new contents: a profile file was rewritten.
            changed.push("drift.profiles".into());
            changed.sort();
        }
        let (live, restart): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| is_live(k));
        let config = in_force(&running, &loaded, &restart);
        self.apply(&config, &live, profiles.clone()).await;
        *self.current.write().expect("poisoned") = Arc::new(config.clone());
        *self.profiles.lock().expect("poisoned") = profiles;
        let h = hash(&config);
        self.hash.store(h, std::sync::atomic::Ordering::Relaxed);
        let outcome = Outcome {
            result: if live.is_empty() {
                "unchanged"
            } else {
                "applied"
            },
            trigger,
            at: SystemTime::now(),
            applied: live,
            restart_required: restart.clone(),
            error: None,
            hash: format!("{h:012x}"),
        };
        if !restart.is_empty() {
            tracing::warn!(%trigger, applied = ?outcome.applied, restart_required = ?restart, "config reloaded; some changed settings take effect only after a restart");
        } else {
            tracing::info!(%trigger, result = outcome.result, applied = ?outcome.applied, hash = %outcome.hash, "config reloaded");
        }
        let mut c = self.counts.lock().expect("poisoned");
        c.success += 1;
        c.pending_restart = restart;
        c.last = Some(outcome.clone());
        outcome
    }

    fn refused(&self, trigger: &'static str, error: String) -> Outcome {
        tracing::error!(%trigger, %error, "config reload refused; the running config stays");
        let outcome = Outcome {
            result: "refused",
            trigger,
            at: SystemTime::now(),
            applied: Vec::new(),
            restart_required: Vec::new(),
            error: Some(error),
            hash: format!(
                "{:012x}",
                self.hash.load(std::sync::atomic::Ordering::Relaxed)
            ),
        };
        let mut c = self.counts.lock().expect("poisoned");
        c.failure += 1;
        c.last = Some(outcome.clone());
        outcome
    }

    async fn apply(&self, config: &Config, live: &[String], profiles: HashMap<String, Profile>) {
        let under = |prefix: &str| {
            live.iter()
                .any(|k| k == prefix || k.starts_with(&format!("{prefix}.")))
        };
        let t = &self.targets;
        if under("sampling.rate") {
            t.sampler.set_rate(config.sampling.rate);
        }
        if under("protocol") || under("drift") || under("payload_logs") {
            t.analysis.put(crate::analysis::Update {
                config: config.clone(),
                drift_profiles: profiles,
            });
        }
        if under("quality") || under("protocol") {
            if let Some(q) = &t.quality {
                let q = q.clone();
                let c = config.clone();
                // The quality thread's queue may be full for a moment: wait off the event loop.
                let _ = tokio::task::spawn_blocking(move || q.reconfigure(&c)).await;
            }
        }
        if under("alerts") {
            let mut slot = t.alerts.lock().await;
            let states = match slot.take() {
                Some(old) => old.stop(Duration::from_secs(2)).await,
                None => Vec::new(),
            };
            match crate::alerts::spawn(
                config,
                &t.telemetry,
                t.alerts_snapshot.clone(),
                states,
                Some(t.diagnosis.clone()),
            ) {
                Ok(new) => *slot = new,
                Err(e) => tracing::error!(error = %e, "cannot restart the alert evaluator"),
            }
        }
    }

    /// Reloads on every SIGHUP until `stop`.
    pub async fn on_hangup(self: Arc<Self>, stop: CancellationToken) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hangup) = signal(SignalKind::hangup()) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = hangup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        tracing::info!("SIGHUP received: reloading the config");
                        self.reload("signal").await;
                    }
                }
            }
        }
        #[cfg(not(unix))]
        stop.cancelled().await;
    }

    /// Reads the config file every [`WATCH_INTERVAL`] and reloads when its
    /// content changed (a ConfigMap update swaps a symlink: the content, not
    /// the modification time, is compared).
    pub async fn watch_file(self: Arc<Self>, stop: CancellationToken) {
        let Some(path) = self.loader.as_ref().and_then(|l| l.path.clone()) else {
            return;
        };
        let read = |p: PathBuf| async move {
            tokio::task::spawn_blocking(move || std::fs::read(p).ok())
                .await
                .ok()
                .flatten()
        };
        let mut seen = read(path.clone()).await;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A file missing for a moment (being replaced) is no change.
            let Some(now) = read(path.clone()).await else {
                continue;
            };
            if seen.as_ref() != Some(&now) {
                seen = Some(now);
                tracing::info!(file = %path.display(), "the config file changed: reloading");
                self.reload("file").await;
            }
        }
    }
}

/// Everything a start would refuse, checked off the event loop: the file,
/// its validation, the drift profiles it names and the redaction patterns.
fn check(loader: &Loader) -> Result<(Config, HashMap<String, Profile>), String> {
    let config = (loader.load)().map_err(|e| e.to_string())?;
    let profiles = if config.drift.enabled {
        crate::drift::load_profiles(&config.drift).map_err(|e| format!("{e} (drift.profiles)"))?
    } else {
        HashMap::new()
    };
    let p = &config.payload_logs;
    crate::analysis::redact::Redactor::new(p.redact_builtin, &p.redact_patterns)
        .map_err(|e| format!("{e} (payload_logs.redact_patterns)"))?;
    Ok((config, profiles))
}

pub(crate) fn register(
    meter: &opentelemetry::metrics::Meter,
    counts: Arc<Mutex<Counts>>,
    h: Arc<std::sync::atomic::AtomicU64>,
) {
    let c = counts.clone();
    crate::telemetry::u64_counter(meter, CONFIG_RELOADS, move |o| {
        let c = c.lock().expect("poisoned");
        o.observe(c.success, &[KeyValue::new(attr::RESULT, "success")]);
        o.observe(c.failure, &[KeyValue::new(attr::RESULT, "failure")]);
    });
    let c = counts.clone();
    crate::telemetry::u64_gauge(meter, CONFIG_LAST_RELOAD_SUCCESSFUL, move |o| {
        o.observe(u64::from(c.lock().expect("poisoned").last_ok()), &[]);
    });
    crate::telemetry::u64_gauge(meter, CONFIG_HASH, move |o| {
        o.observe(h.load(std::sync::atomic::Ordering::Relaxed), &[]);
    });
    crate::telemetry::u64_gauge(meter, CONFIG_RESTART_REQUIRED, move |o| {
        o.observe(
            counts.lock().expect("poisoned").pending_restart.len() as u64,
            &[],
        );
    });
}
