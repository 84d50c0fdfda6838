//! `modelwatch demo`: a demo, not a product feature. It starts a built-in
//! example model server on loopback (an OpenAI-style chat endpoint that
//! streams, and an Open Inference Protocol classifier), modelwatch in front of
//! it, and a traffic generator, then prints where to look.

pub mod model_server;
mod traffic;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::app::{self, App};
use crate::config::Config;
use crate::telemetry::Telemetry;

/// Flags of `modelwatch demo`.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Where the demo's modelwatch proxy listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the demo's modelwatch admin server listens.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub admin_listen: String,
    /// Requests per second sent by the traffic generator (0: none).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Stop after this long (e.g. 30s); default: run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Also write TensorBoard event files here, every 5 s
    /// (then: tensorboard --logdir DIR).
    #[arg(long)]
    pub tensorboard: Option<std::path::PathBuf>,
    /// A modelwatch config file laid over the demo's settings (alert rules,
    /// ECS logs, payload logs, ...): its keys win, except the listen
    /// addresses (the flags above) and the upstream (the built-in server).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Lays the YAML file at `path` over `base`: every key the file sets wins,
/// maps are merged key by key, lists and scalars replaced whole.
fn overlay(base: &Config, path: &std::path::Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)?;
    // Parsed alone first, so that a bad key is refused with its name.
    Config::from_yaml(&text, &path.display().to_string())?;
    let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    let mut merged = serde_yaml_ng::to_value(base)?;
    fn merge(into: &mut serde_yaml_ng::Value, from: serde_yaml_ng::Value) {
        match (into, from) {
            (serde_yaml_ng::Value::Mapping(a), serde_yaml_ng::Value::Mapping(b)) => {
                for (k, v) in b {
                    match a.get_mut(&k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            a.insert(k, v);
                        }
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }
    if !file.is_null() {
        merge(&mut merged, file);
    }
    Ok(serde_yaml_ng::from_value(merged)?)
}

/// Runs the demo until Ctrl-C or `--duration`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.proxy.listen = args.listen.clone();
    config.admin.listen = args.admin_listen.clone();
    config.log.level = "warn,modelwatch=info".into();
    // The demo's model is a stand-in: showing its decoded records is harmless.
    config.admin.recent_records = 20;
    // Short windows and a small reference, so that quality figures and
    // estimates appear within seconds of starting.
    config.quality.windows = vec![Duration::from_secs(60), Duration::from_secs(3600)];
    config.quality.refresh_interval = Duration::from_secs(2);
    config.quality.min_samples = 10;
    config.quality.estimation.reference_rows = 30;
    config.protocol.models.push(crate::config::ModelSettings {
        name: "demo-classifier".into(),
        class_names: vec!["setosa".into(), "versicolor".into(), "virginica".into()],
        features: ["sepal_length", "sepal_width", "petal_length", "petal_width"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    // Drift: the first 100 classifier rows are the reference; a small window
    // so the injected drift shows within seconds.
    config.drift.live_reference_rows = 100;
    config.drift.window = 100;
    config.drift.min_samples = 50;
    config.drift.refresh_interval = Duration::from_secs(2);
    if let Some(path) = &args.config {
        let demo_model = config.protocol.models[0].clone();
        config = overlay(&config, path)?;
        if !config
            .protocol
            .models
            .iter()
            .any(|m| m.name == demo_model.name)
        {
            config.protocol.models.push(demo_model);
        }
        config.proxy.listen = args.listen.clone();
        config.admin.listen = args.admin_listen.clone();
    }
    crate::config::env::apply_process_env(&mut config)?;
    crate::cli::init_logging(&config);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let model = runtime.block_on(model_server::start())?;
    config.proxy.upstream = format!("http://{model}");
    config.admin.readiness.http_path = "/health".into();
    if let Some(dir) = &args.tensorboard {
        config.tensorboard.enabled = true;
        config.tensorboard.dir = dir.display().to_string();
        config.tensorboard.interval = Duration::from_secs(5);
    }
    config.validate()?;
    let telemetry = Arc::new(Telemetry::new(&config, runtime.handle())?);

    let result = runtime.block_on(async {
        let app = App::start(config, telemetry.clone()).await?;
        let proxy = app.proxy_addr;
        let admin = app.admin_addr;
        println!("modelwatch demo (a built-in example model server; not a real model)");
        println!("  example model server   http://{model}");
        println!("  modelwatch proxy       http://{proxy}");
        println!("  metrics (Prometheus)   http://{admin}/metrics");
        println!("  status (JSON)          http://{admin}/v1/status");
        println!("  readiness              http://{admin}/readyz");
        println!("  decoded records        http://{admin}/v1/records");
        println!("  quality (labels)       http://{admin}/v1/quality");
        println!("try:");
        println!(
            "  curl -s http://{proxy}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"demo-llm\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
        );
        println!(
            "  curl -s http://{proxy}/v2/models/demo-classifier/infer -H 'content-type: application/json' \\\n    -d '{{\"inputs\":[{{\"name\":\"features\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[5.1,3.5,1.4,0.2]}}]}}'"
        );
        println!("  curl -s http://{admin}/metrics | grep http_server_request_duration_seconds_count");
        println!("  curl -s http://{admin}/metrics | grep -E '^gen_ai_(server_time_to_first_token_seconds|client_token_usage)_sum'");
        println!("  curl -s http://{admin}/metrics | grep -E '^modelwatch_quality_(accuracy|estimated_accuracy)_ratio'");
        println!(
            "  curl -s http://{admin}/v1/feedback -d '{{\"request_id\":\"<x-request-id of a classifier answer>\",\"label\":\"setosa\"}}'"
        );
        let stop = app.shutdown_token();
        let generator = tokio::spawn(traffic::run(
            proxy,
            admin,
            args.rate,
            args.duration.map(|d| d / 2).unwrap_or(Duration::from_secs(60)),
            stop.clone(),
        ));
        let reporter = tokio::spawn(traffic::report(admin, stop.clone()));
        match args.duration {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {},
                    _ = app::shutdown_signal() => {},
                }
            }
            None => app::shutdown_signal().await,
        }
        stop.cancel();
        let sent = generator.await.unwrap_or_default();
        let _ = reporter.await;
        app.wait().await;
        println!("demo finished: {} requests sent through modelwatch", sent);
        let t = telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        anyhow::Ok(())
    });
    result
}
