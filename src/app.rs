//! Wires the stages together: listeners, proxy, sample queue, analysis,
//! readiness probe, admin server; and takes them down in order on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::readiness::{self, Readiness};
use crate::admin::{self, AdminState};
use crate::analysis::{self, Analyzer, HttpAnalyzer};
use crate::config::Config;
use crate::proxy::{self, Proxy};
use crate::sample;
use crate::telemetry::Telemetry;

/// A running modelwatch: its bound addresses and the handle to stop it.
pub struct App {
    pub proxy_addr: SocketAddr,
    /// The bound addresses of `proxy.extra_ports`, in order.
    pub extra_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// Applies live reloads (also on SIGHUP and `POST /-/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
}

impl App {
    /// Binds both listeners (so a bad address fails here, before any traffic),
    /// then starts every stage.
    pub async fn start(config: Config, telemetry: Arc<Telemetry>) -> anyhow::Result<App> {
        Self::start_with(config, telemetry, None).await
    }

    /// As [`App::start`], with where a live reload reads the config again.
    pub async fn start_with(
        config: Config,
        telemetry: Arc<Telemetry>,
        loader: Option<crate::reload::Loader>,
    ) -> anyhow::Result<App> {
        let proxy_listener = TcpListener::bind(config.proxy_listen())
            .await
            .with_context(|| format!("cannot listen on proxy.listen = {}", config.proxy.listen))?;
        let admin_listener = TcpListener::bind(config.admin_listen())
            .await
            .with_context(|| format!("cannot listen on admin.listen = {}", config.admin.listen))?;
        let mut extra_listeners = Vec::new();
        for (i, pair) in config.proxy.extra_ports.iter().enumerate() {
            let addr: std::net::SocketAddr = pair.listen.parse().expect("validated");
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen on proxy.extra_ports[{i}].listen = {}",
                    pair.listen
                )
            })?;
            let upstream = crate::config::parse_upstream("", &pair.upstream).expect("validated");
            extra_listeners.push((listener, upstream));
        }
        let proxy_addr = proxy_listener.local_addr()?;
        let extra_addrs = extra_listeners
            .iter()
            .map(|(l, _)| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let admin_addr = admin_listener.local_addr()?;

        let shutdown = CancellationToken::new();
        let (sender, queue) = sample::queue(
            config.sampling.queue_capacity,
            telemetry.instruments.clone(),
            telemetry.gauges.clone(),
        );
        // Payload-logger events become samples too (not mirrored to a shadow:
        // they were served already).
        let cloudevents = config.cloudevents.enabled.then(|| {
            Arc::new(crate::cloudevents::Receiver::new(
                sender.clone(),
                config.cloudevents.clone(),
                config.sampling.max_body_bytes,
                telemetry.instruments.cloudevents_received.clone(),
            ))
        });
        let sender = sender.with_shadow(crate::rollout::shadow::Shadow::new(
            &config,
            telemetry.instruments.clone(),
        ));
        let proxy = Arc::new(Proxy::new(
            &config,
            sender,
            telemetry.instruments.clone(),
            telemetry.tracer.clone(),
        ));
        let seen_models = Arc::new(crate::resources::environment::SeenModels::default());
        proxy::register_counters(&telemetry.meter, proxy.counters.clone());
        let recent = analysis::RecentRecords::new(config.admin.recent_records);
        let mut analyzers: Vec<Box<dyn Analyzer>> = vec![
            Box::new(HttpAnalyzer::new(telemetry.instruments.clone())),
            Box::new(
                analysis::VersionAnalyzer::new(telemetry.instruments.clone(), &config.protocol)
                    .with_models(seen_models.clone()),
            ),
        ];
        if recent.enabled() {
            analyzers.push(Box::new(analysis::RecentRecordsAnalyzer(recent.clone())));
        }
        if config.tensorboard.enabled {
            std::fs::create_dir_all(&config.tensorboard.dir).with_context(|| {
                format!("cannot create tensorboard.dir {:?}", config.tensorboard.dir)
            })?;
        }
        let mut reference_writer = None;
        let mut drift_profiles = std::collections::HashMap::new();
        let drift_analyzer = if config.drift.enabled {
            let profiles = crate::drift::load_profiles(&config.drift)
                .map_err(|e| anyhow::anyhow!("{e} (drift.profiles)"))?;
            drift_profiles = profiles.clone();
            let mut analyzer = crate::drift::DriftAnalyzer::new(config.drift.clone(), profiles)
                .with_logger(telemetry.logger());
            if !config.drift.reference_dir.is_empty() {
                let (saver, writer) = crate::drift::spawn_reference_writer(
                    std::path::PathBuf::from(&config.drift.reference_dir),
                )
                .context("cannot start the drift reference writer")?;
                analyzer = analyzer.with_saver(saver);
                reference_writer = Some(writer);
            }
            if config.anomaly.enabled {
                analyzer = analyzer.with_outliers(
                    telemetry.instruments.clone(),
                    config.anomaly.outlier_threshold,
                );
            }
            Some(analyzer)
        } else {
            None
        };
        let layouts = drift_analyzer.as_ref().map(|a| a.layouts.clone());
        let quality = if config.quality.enabled {
            let q = crate::quality::spawn(
                &config,
                telemetry.instruments.clone(),
                &telemetry.meter,
                proxy.sampler.clone(),
            )?;
            let mut analyzer = crate::quality::QualityAnalyzer::new(
                q.handle.clone(),
                &config,
                telemetry.instruments.clone(),
            );
            if let Some(l) = layouts.clone() {
                analyzer = analyzer.with_layouts(l);
            }
            analyzers.push(Box::new(analyzer));
            Some(q)
        } else {
            None
        };
        let drift = if let Some(analyzer) = drift_analyzer {
            let snapshot = analyzer.snapshot.clone();
            crate::drift::register_instruments(&telemetry.meter, snapshot.clone());
            analyzers.push(Box::new(analyzer));
            Some(snapshot)
        } else {
            None
        };
        let anomaly = if config.anomaly.enabled {
            let analyzer = crate::anomaly::AnomalyAnalyzer::new(
                config.anomaly.clone(),
                drift.clone(),
                quality.as_ref().map(|q| q.handle.snapshot.clone()),
                telemetry.logger(),
            );
            let snapshot = analyzer.snapshot.clone();
            crate::anomaly::register_instruments(&telemetry.meter, snapshot.clone());
            analyzers.push(Box::new(analyzer));
            Some(snapshot)
        } else {
            None
        };
        if let Some(logger) = telemetry.logger().filter(|_| config.payload_logs.enabled) {
            analyzers.push(Box::new(analysis::payload::PayloadLogger::new(
                logger,
                &config.payload_logs,
            )?));
        }
        let decoder =
            analysis::Decoder::new(config.protocol.clone(), telemetry.instruments.clone());
        let decode_problems = decoder.problems();
        let control = Arc::new(analysis::Control::default());
        let analysis = analysis::spawn(
            queue,
            decoder,
            analyzers,
            control.clone(),
            telemetry.instruments.clone(),
            telemetry.gauges.clone(),
        )
        .context("cannot start the analysis thread")?;

        let resources = crate::resources::spawn(&config.resources, &telemetry.meter)
            .context("cannot start the resource sampler")?;
        let side_early = CancellationToken::new();
        let engine = crate::resources::spawn_engine(&config, &telemetry.meter, side_early.clone());
        let environment = Arc::new(std::sync::RwLock::new(
            crate::resources::environment::Versions::new(),
        ));
        let changes = Arc::new(crate::resources::environment::ChangeLog::default());
        if config.resources.enabled {
            crate::resources::environment::register(&telemetry.meter, environment.clone());
            let watcher = crate::resources::environment::Watcher {
                upstream: config.proxy.upstream.clone(),
                tls: config.proxy.upstream_tls.clone(),
                interval: config.resources.interval,
                resources: resources.as_ref().map(|r| r.snapshot.clone()),
                models: seen_models.clone(),
                current: environment.clone(),
                changes: changes.clone(),
                logger: telemetry.logger(),
                instruments: telemetry.instruments.clone(),
            };
            tokio::spawn(watcher.run(side_early.clone()));
        }
        let readiness = Arc::new(Readiness::new(&config, telemetry.gauges.clone()));
        let diagnosis = crate::diagnosis::Sources {
            quality: quality.as_ref().map(|q| q.handle.snapshot.clone()),
            drift: drift.clone(),
            layouts,
            anomaly: anomaly.clone(),
            resources: resources.as_ref().map(|r| r.snapshot.clone()),
            readiness: Some(readiness.clone()),
            changes,
            versions: seen_models,
            registry: Some(telemetry.registry().clone()),
        };
        let alerts_snapshot = Arc::new(std::sync::RwLock::new(crate::alerts::Snapshot::default()));
        crate::alerts::register_gauge(&telemetry.meter, alerts_snapshot.clone());
        let alerts = Arc::new(tokio::sync::Mutex::new(
            crate::alerts::spawn(
                &config,
                &telemetry,
                alerts_snapshot.clone(),
                Vec::new(),
                Some(diagnosis.clone()),
            )
            .context("cannot start the alert evaluator")?,
        ));
        let side = CancellationToken::new();
        let reloader = crate::reload::Reloader::new(
            config.clone(),
            drift_profiles,
            loader,
            crate::reload::Targets {
                sampler: proxy.sampler.clone(),
                analysis: control,
                quality: quality.as_ref().map(|q| q.handle.clone()),
                alerts: alerts.clone(),
                alerts_snapshot: alerts_snapshot.clone(),
                telemetry: telemetry.clone(),
                diagnosis: diagnosis.clone(),
            },
        );
        tokio::spawn(reloader.clone().on_hangup(side.clone()));
        tokio::spawn(reloader.clone().watch_file(side.clone()));
        let probe = tokio::spawn(readiness::run(
            readiness.clone(),
            config.clone(),
            side.clone(),
        ));
        let events = cloudevents.clone();
        let current = reloader.clone();
        crate::diagnosis::register_gauge(&telemetry.meter, diagnosis.clone(), move || {
            current.current()
        });
        let admin_state = Arc::new(AdminState {
            diagnosis,
            config: config.clone(),
            telemetry: telemetry.clone(),
            readiness,
            counters: proxy.counters.clone(),
            recent,
            decode_problems,
            quality: quality.as_ref().map(|q| q.handle.clone()),
            cloudevents,
            drift,
            anomaly,
            alerts: alerts_snapshot,
            reloader: reloader.clone(),
            resources: resources.as_ref().map(|r| r.snapshot.clone()),
            engine,
            environment,
            started: Instant::now(),
            proxy_addr,
            tensorboard: config.tensorboard.enabled.then(|| {
                Arc::new(std::sync::Mutex::new(crate::tensorboard::Writer::new(
                    config.tensorboard.clone(),
                )))
            }),
            history: admin::history::History::new(
                config.admin.history_interval,
                config.admin.history_points,
            ),
        });
        let admin = tokio::spawn(admin::serve(admin_listener, admin_state, side.clone()));

        let grace = config.proxy.shutdown_grace_period;
        let stop = shutdown.clone();
        let extra_servers: Vec<_> = extra_listeners
            .into_iter()
            .map(|(listener, upstream)| {
                let p = Arc::new(proxy.for_upstream(upstream));
                tokio::spawn(proxy::serve(listener, p, stop.clone(), grace))
            })
            .collect();
        let done = tokio::spawn(async move {
            proxy::serve(proxy_listener, proxy, stop, grace).await;
            for s in extra_servers {
                let _ = s.await;
            }
            // The proxy (and with it every sample sender) is gone, and the
            // event receiver lets go of its own: analysis drains what is
            // queued, then ends.
            if let Some(r) = &events {
                r.close();
            }
            if tokio::task::spawn_blocking(move || analysis.join())
                .await
                .is_err()
            {
                tracing::warn!("analysis thread failed");
            }
            // Its sender went with the analysis thread: saves what is queued, then ends.
            if let Some(w) = reference_writer {
                let _ = tokio::task::spawn_blocking(move || w.join()).await;
            }
            side.cancel();
            let _ = probe.await;
            let _ = admin.await;
            let running_alerts = alerts.lock().await.take();
            if let Some(a) = running_alerts {
                a.stop(std::time::Duration::from_secs(2)).await;
            }
            side_early.cancel();
            if let Some(r) = resources {
                let _ = tokio::task::spawn_blocking(move || r.stop()).await;
            }
            // Last: the quality thread flushes the store once nothing feeds it.
            if let Some(q) = quality {
                let _ = tokio::task::spawn_blocking(move || q.stop()).await;
            }
        });
        tracing::info!(%proxy_addr, %admin_addr, upstream = %config.proxy.upstream, extra_ports = ?extra_addrs, "modelwatch started");
        Ok(App {
            proxy_addr,
            extra_addrs,
            admin_addr,
            reloader,
            shutdown,
            done,
        })
    }

    /// A token that stops the app when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the app has stopped (after its token was cancelled).
    pub async fn wait(self) {
        if let Err(e) = self.done.await {
            tracing::warn!(error = %e, "shutdown task failed");
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // SIGHUP (what config reloaders and habits send) is never an exit:
        // the app's reloader takes it (`Reloader::on_hangup`).
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}

/// The runtime: `worker_threads` 1 is a single-threaded event loop (the
/// default: a sidecar proxy is I/O-bound and this is its cheapest shape);
/// 0 means one worker per available CPU.
pub fn build_runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if worker_threads == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().thread_name("modelwatch-worker");
    if worker_threads > 1 {
        b.worker_threads(worker_threads);
    }
    b.build()
}

/// Runs the whole program: build telemetry, start, wait for a signal, drain,
/// flush telemetry. Blocking; creates its own runtime.
pub fn run_blocking(config: Config, loader: Option<crate::reload::Loader>) -> anyhow::Result<()> {
    let runtime = build_runtime(config.runtime.worker_threads)?;
    let telemetry = Arc::new(Telemetry::new(&config, runtime.handle())?);
    let result = runtime.block_on(async {
        let started = App::start_with(config, telemetry.clone(), loader).await;
        if let Ok(app) = started.as_ref().map(|a| a.shutdown_token()) {
            shutdown_signal().await;
            app.cancel();
        }
        let result = match started {
            Ok(app) => {
                app.wait().await;
                Ok(())
            }
            Err(e) => Err(e),
        };
        // Flush while the runtime still runs (the gRPC exporter lives on it).
        let t = telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        result
    });
    drop(runtime);
    tracing::info!("modelwatch stopped");
    result
}
