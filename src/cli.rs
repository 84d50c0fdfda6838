//! The command line: `run`, `check-config`, `demo`. Reads the config (file,
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
                    print!("{}", config.to_yaml());
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
            match crate::app::run_blocking(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("modelwatch: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo(args) => match crate::demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("modelwatch demo: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
