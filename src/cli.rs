//! The command line: `run`, `check-config`, `demo`, `profile`, `joiner`, `diagnose`. Reads the config (file,
//! then environment, then flags), sets up logging, and hands over to `app`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, ConfigError, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "modelwatch",
    version,
    about = "A sidecar that watches AI models in production."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Proxy model traffic and export what it shows.
    Run(RunArgs),
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// The YAML file to check.
        file: PathBuf,
    },
    /// A self-contained demo: a built-in example model server, modelwatch in
    /// front of it, and a traffic generator, all on loopback.
    Demo(crate::demo::DemoArgs),
    /// Build a drift reference profile from training or validation data
    /// (CSV with a header row, or JSON Lines).
    Profile(ProfileArgs),
    /// The Kubernetes mutating admission webhook that adds the sidecar to pods
    /// (TLS; certificate and key reloaded when they change).
    InjectWebhook(crate::inject::webhook::WebhookArgs),
    /// Join predictions and labels from Kafka (`quality.backend: kafka`)
    /// and export the fleet's quality figures; run as a StatefulSet.
    Joiner(crate::kafka::joiner::JoinerArgs),
    /// Ask a running sidecar why a model got worse: the data, the model or
    /// the environment, with the evidence (its `GET /v1/diagnose`).
    Diagnose(crate::diagnosis::cli::DiagnoseArgs),
}

/// Flags of `profile`.
#[derive(Debug, Args, Clone)]
pub struct ProfileArgs {
    /// The data: `.csv` (header row) or `.jsonl` / `.ndjson` (one object per line).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Where to write the profile (JSON).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Values kept per numeric feature (a uniform sample beyond it).
    #[arg(long, default_value_t = 5000)]
    pub sample: usize,
    /// Quantile bins per numeric feature (PSI, Jensen-Shannon, Hellinger).
    #[arg(long, default_value_t = 10)]
    pub bins: usize,
    /// Categories kept per categorical feature (the rest is `other`).
    #[arg(long, default_value_t = 50)]
    pub top_categories: usize,
}

fn profile(args: ProfileArgs) -> Result<(), String> {
    use crate::drift::profile::{build_from_file, BuildOptions, InputFormat};
    let format = InputFormat::from_path(&args.input).ok_or_else(|| {
        format!(
            "{}: unknown input format (accepted: .csv, .jsonl, .ndjson)",
            args.input.display()
        )
    })?;
    if args.sample < 10 || !(2..=100).contains(&args.bins) || args.top_categories == 0 {
        return Err(
            "--sample must be at least 10, --bins 2 to 100, --top-categories at least 1".into(),
        );
    }
    let total = std::fs::metadata(&args.input).map(|m| m.len()).unwrap_or(0);
    let started = std::time::Instant::now();
    let mut last = started;
    let options = BuildOptions {
        sample_size: args.sample,
        bins: args.bins,
        top_categories: args.top_categories,
        ..BuildOptions::default()
    };
    let p = build_from_file(&args.input, format, options, |read, rows| {
        if last.elapsed() >= std::time::Duration::from_millis(500) {
            last = std::time::Instant::now();
            let pct = if total > 0 {
                read as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            let filled = (pct / 5.0) as usize;
            eprint!(
                "\r[{}{}] {pct:5.1}%  {rows} rows",
                "#".repeat(filled.min(20)),
                " ".repeat(20 - filled.min(20))
            );
        }
    })
    .map_err(|e| e.to_string())?;
    let text = serde_json::to_vec(&p).map_err(|e| e.to_string())?;
    std::fs::write(&args.output, text)
        .map_err(|e| format!("cannot write {}: {e}", args.output.display()))?;
    eprintln!(
        "\rprofiled {} rows, {} features in {:.1} s -> {}",
        p.rows,
        p.features.len(),
        started.elapsed().as_secs_f64(),
        args.output.display()
    );
    Ok(())
}

/// Flags of `run`; each overrides the environment and the file.
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// YAML config file (or MODELWATCH_CONFIG).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// proxy.listen: where model traffic arrives.
    #[arg(long)]
    pub listen: Option<String>,
    /// proxy.upstream: the model server's http:// URL.
    #[arg(long)]
    pub upstream: Option<String>,
    /// admin.listen: metrics, health and status.
    #[arg(long)]
    pub admin_listen: Option<String>,
}

/// File (or defaults), then environment, then flags; validated.
pub fn load_config(args: &RunArgs) -> Result<Config, ConfigError> {
    let path = args
        .config
        .clone()
        .or_else(|| config::env::config_path().map(PathBuf::from));
    let mut config = match &path {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    config::env::apply_process_env(&mut config)?;
    if let Some(v) = &args.listen {
        config.proxy.listen = v.clone();
    }
    if let Some(v) = &args.upstream {
        config.proxy.upstream = v.clone();
    }
    if let Some(v) = &args.admin_listen {
        config.admin.listen = v.clone();
    }
    config.validate()?;
    Ok(config)
}

/// Sets up `tracing` from the config (RUST_LOG is already folded into it).
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: `kubectl logs`, Fluent Bit and files get
    // plain text, not ANSI escape codes.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => {
            let args = RunArgs {
                config: Some(file),
                ..RunArgs::default()
            };
            match load_config(&args) {
                Ok(config) => {
                    print!("{}", config.to_shown_yaml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("modelwatch: config error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run(args) => {
            let config = match load_config(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("modelwatch: config error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config);
            let loader = crate::reload::Loader {
                path: args
                    .config
                    .clone()
                    .or_else(|| config::env::config_path().map(PathBuf::from)),
                load: std::sync::Arc::new(move || load_config(&args)),
            };
            match crate::app::run_blocking(config, Some(loader)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("modelwatch: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Profile(args) => match profile(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("modelwatch profile: {e}");
                ExitCode::from(2)
            }
        },
        Command::InjectWebhook(args) => {
            init_logging(&Config::default());
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("modelwatch inject-webhook: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(crate::inject::webhook::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("modelwatch inject-webhook: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Joiner(args) => match crate::kafka::joiner::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("modelwatch joiner: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Diagnose(args) => match crate::diagnosis::cli::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("modelwatch diagnose: {e}");
                ExitCode::from(2)
            }
        },
        Command::Demo(args) => match crate::demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("modelwatch demo: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
