//! The one config file: its structs, defaults, validation, and the overlays
//! (environment variables, then flags) applied on top of it.
//!
//! Precedence, highest first: command-line flags, `MODELWATCH_*` and `OTEL_*`
//! environment variables, the YAML file, the defaults written here. Every key
//! is listed with its default in docs/configuration.md; a test keeps the two equal.

pub mod alerts;
pub mod env;
pub mod reload;

pub use alerts::{AlertsConfig, RolloutConfig};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A user's mistake in the configuration: which key, which value, what is accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for `{key}`: {value:?} (accepted: {accepted})")]
    Invalid {
        key: String,
        value: String,
        accepted: String,
    },
    #[error("in {file}: at `{key}`: {message}")]
    Parse {
        file: String,
        key: String,
        message: String,
    },
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
}

/// An upstream URL (`key` names it in the error) as scheme + authority.
pub fn parse_upstream(key: &str, value: &str) -> Result<Upstream, ConfigError> {
    let uri: http::Uri = value
        .parse()
        .map_err(|_| invalid(key, value, UPSTREAM_ACCEPTED))?;
    let scheme = match uri.scheme_str() {
        Some("http") => http::uri::Scheme::HTTP,
        Some("https") => http::uri::Scheme::HTTPS,
        _ => return Err(invalid(key, value, UPSTREAM_ACCEPTED)),
    };
    let authority = uri
        .authority()
        .filter(|a| a.port_u16().is_some() && !a.host().is_empty())
        .ok_or_else(|| invalid(key, value, UPSTREAM_ACCEPTED))?
        .clone();
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            key,
            value,
            "a URL without a path: requests keep their own path, e.g. http://127.0.0.1:8000",
        ));
    }
    Ok(Upstream { scheme, authority })
}

fn invalid(key: &str, value: impl ToString, accepted: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        accepted: accepted.to_string(),
    }
}

/// The whole configuration of one modelwatch process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The data path: where model traffic arrives and where it goes.
    pub proxy: ProxyConfig,
    /// The admin server: metrics, health, status. Never shares a listener with model traffic.
    pub admin: AdminConfig,
    /// Which requests are copied for analysis, and how much of each.
    pub sampling: SamplingConfig,
    /// How sampled exchanges are decoded into inference records.
    pub protocol: ProtocolConfig,
    /// LLM figures kept for every request (not only sampled ones).
    pub llm: LlmConfig,
    /// Sampled inputs and outputs as OTLP log records.
    pub payload_logs: PayloadLogsConfig,
    /// Model quality: predictions joined with ground-truth labels that arrive later.
    pub quality: QualityConfig,
    /// Drift and data quality against a reference profile.
    pub drift: DriftConfig,
    /// Anomalies in the time series modelwatch produces.
    pub anomaly: AnomalyConfig,
    /// Alert rules over any figure, and where alerts go.
    pub alerts: AlertsConfig,
    /// Model updates: canary gates and shadow traffic.
    pub rollout: RolloutConfig,
    /// Inference events from a payload logger (KServe's), on the admin port.
    pub cloudevents: CloudEventsConfig,
    /// Host, process, container (cgroup) and GPU figures.
    pub resources: ResourcesConfig,
    /// TensorBoard event files of the quality, drift and latency figures.
    pub tensorboard: TensorboardConfig,
    /// Payload records and events as ECS JSON lines (for Filebeat, Fluent Bit, Kibana).
    pub ecs_logs: EcsLogsConfig,
    /// OpenTelemetry export and resource identity.
    pub telemetry: TelemetryConfig,
    /// The async runtime.
    pub runtime: RuntimeConfig,
    /// modelwatch's own logs.
    pub log: LogConfig,
}

/// `POST /v1/cloudevents` on the admin port: KServe's payload logger (or any
/// producer of `org.kubeflow.serving.inference.request`/`.response` events)
/// as a source of samples, for models modelwatch does not proxy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CloudEventsConfig {
    pub enabled: bool,
    /// Events waiting for their other half (a request for its response, or
    /// the reverse): at most this many; the oldest is dropped, and counted.
    pub max_pending: usize,
    /// An event whose other half has not come within this long is dropped,
    /// and counted (KServe logs no response for a failed request).
    #[serde(with = "humantime_serde")]
    pub pair_timeout: Duration,
}

impl Default for CloudEventsConfig {
    fn default() -> Self {
        CloudEventsConfig {
            enabled: true,
            max_pending: 10_000,
            pair_timeout: Duration::from_secs(30),
        }
    }
}

/// TensorBoard event files: per model version a run folder
/// (`dir/MODEL/VERSION/`) of scalars, written every `interval`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TensorboardConfig {
    pub enabled: bool,
    /// Where the run folders go (required when enabled).
    pub dir: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A file is closed and a new one started at this size...
    pub max_file_bytes: u64,
    /// ... and only this many files are kept per run (the oldest is deleted).
    pub max_files: usize,
}

impl Default for TensorboardConfig {
    fn default() -> Self {
        TensorboardConfig {
            enabled: false,
            dir: String::new(),
            interval: Duration::from_secs(60),
            max_file_bytes: 16 * 1024 * 1024,
            max_files: 8,
        }
    }
}

/// Where ECS JSON lines go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EcsLogsConfig {
    pub enabled: bool,
    /// `stdout`, or a file path (appended to; rotate it with the log shipper).
    pub output: String,
    /// Records waiting to be written; beyond it they are dropped and counted.
    pub queue_capacity: usize,
}

impl Default for EcsLogsConfig {
    fn default() -> Self {
        EcsLogsConfig {
            enabled: false,
            output: "stdout".into(),
            queue_capacity: 4096,
        }
    }
}

/// The async runtime that runs the proxy and admin server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// 1: one event-loop thread (the default, cheapest per request); N > 1: N
    /// worker threads; 0: one per available CPU. Analysis and exporters always
    /// run on threads of their own.
    pub worker_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { worker_threads: 1 }
    }
}

/// The data path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the proxy listens on for model traffic (HTTP/1.1 and h2c).
    pub listen: String,
    /// The model server: an `http://host:port` URL (same pod, so usually
    /// cleartext), or `https://host:port` for a server that only speaks TLS.
    pub upstream: String,
    /// TLS towards an `https://` upstream (also used by the readiness and
    /// metadata probes, and engine scrapes on the same server).
    pub upstream_tls: ClientTlsConfig,
    /// How long to wait for a TCP connection to the model server.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for the model server's response headers (the body may stream longer).
    #[serde(with = "humantime_serde")]
    pub response_header_timeout: Duration,
    /// Header carrying the request id; taken from the client when present, else generated.
    pub request_id_header: String,
    /// Idle keep-alive connections to the model server are closed after this
    /// long: below the 5 s keep-alive of uvicorn (vLLM, MLServer, KServe) and
    /// llama.cpp, so that a connection the server is closing is never reused.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// At most this many idle keep-alive connections to the model server are kept.
    pub pool_max_idle: usize,
    /// A request whose body is at most this long (Content-Length, bytes) is
    /// sent once more, on another connection, when the model server closed
    /// the connection without answering (uvicorn closes a connection right
    /// after an error answer, and the next request on it would fail). 0: never.
    pub retry_body_bytes: usize,
    /// HTTP version towards the model server: `auto` uses HTTP/2 (h2c) for gRPC
    /// requests that arrived over HTTP/2 and HTTP/1.1 for everything else;
    /// `http1` or `http2` force one.
    pub upstream_http_version: UpstreamHttpVersion,
    /// On SIGTERM/SIGINT, in-flight requests and streams get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace_period: Duration,
    /// More (listen, upstream) pairs served the same way, for model servers
    /// with a second port: MLServer, Triton and KServe serve REST and gRPC
    /// on separate ports, and one modelwatch fronts both. Every other proxy
    /// setting applies to each pair; their traffic is sampled, decoded and
    /// counted together.
    pub extra_ports: Vec<PortPair>,
}

/// One more port modelwatch listens on, and where its traffic goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PortPair {
    /// Address to listen on, e.g. `0.0.0.0:9081`.
    pub listen: String,
    /// The model server's port behind it, e.g. `http://127.0.0.1:8081`.
    pub upstream: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "0.0.0.0:8080".into(),
            upstream: "http://127.0.0.1:8000".into(),
            upstream_tls: ClientTlsConfig::default(),
            connect_timeout: Duration::from_secs(2),
            response_header_timeout: Duration::from_secs(300),
            request_id_header: "x-request-id".into(),
            pool_idle_timeout: Duration::from_secs(4),
            retry_body_bytes: 64 * 1024,
            pool_max_idle: 256,
            upstream_http_version: UpstreamHttpVersion::Auto,
            shutdown_grace_period: Duration::from_secs(30),
            extra_ports: Vec::new(),
        }
    }
}

/// HTTP version used towards the model server.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamHttpVersion {
    Auto,
    Http1,
    Http2,
}

/// The admin server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`, `/v1/status`).
    pub listen: String,
    /// How `/readyz` decides that the model server is reachable.
    pub readiness: ReadinessConfig,
    /// Keep this many of the newest decoded inference records for
    /// `GET /v1/records` (0: off; the records hold inputs and outputs).
    pub recent_records: usize,
    /// The status page's charts: a point of figures this often...
    #[serde(with = "humantime_serde")]
    pub history_interval: Duration,
    /// ... and this many points kept (the default: one hour).
    pub history_points: usize,
    /// A file holding the admin token (16 characters or more), read at each
    /// request. When set, the endpoints that change state or reveal payloads
    /// (`POST /v1/feedback`, `GET /v1/records`, `POST
    /// /v1/quality/reference/reset`, `POST /v1/gate`) need `Authorization:
    /// Bearer <token>`; `/metrics`, health, status and figures stay open.
    pub token_file: String,
    /// TLS for the admin listener (certificate files re-read when they change).
    pub tls: ServerTlsConfig,
}

/// A TLS server certificate: PEM files, re-read every 10 s when they change
/// (a rotated Kubernetes secret is served without a restart).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain. Empty (with `key_file`): plain HTTP.
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "0.0.0.0:9464".into(),
            readiness: ReadinessConfig::default(),
            recent_records: 0,
            history_interval: Duration::from_secs(10),
            history_points: 360,
            token_file: String::new(),
            tls: ServerTlsConfig::default(),
        }
    }
}

/// Upstream readiness probing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessConfig {
    /// Empty: a TCP connect to the upstream. A path such as `/health`: an HTTP GET
    /// that must answer 2xx.
    pub http_path: String,
    /// Time between probes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A probe that takes longer than this fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            http_path: String::new(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Sampling of requests for analysis.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Fraction of requests (0 to 1) whose bodies are copied for analysis and traced.
    pub rate: f64,
    /// At most this many bytes of each request body and each response body are copied.
    pub max_body_bytes: usize,
    /// Samples waiting for analysis; when full, new samples are dropped and counted.
    pub queue_capacity: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            rate: 1.0,
            max_body_bytes: 64 * 1024,
            queue_capacity: 256,
        }
    }
}

/// The LLM scan of every request on an LLM route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Scan LLM routes (`/v1/chat/completions`, `/v1/completions`,
    /// `/v1/embeddings`, ...) for latency and token figures.
    pub enabled: bool,
    /// Distinct model names used as label values; later ones are `_OTHER`.
    pub max_models: usize,
    /// A non-streamed LLM answer is kept up to this many bytes to read its
    /// usage; a longer one is counted without token figures.
    pub max_body_bytes: usize,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            enabled: true,
            max_models: 32,
            max_body_bytes: 256 * 1024,
        }
    }
}

/// Sampled payloads as OTLP log records (sent while an OTLP endpoint is set).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PayloadLogsConfig {
    /// One log record per decoded inference record.
    pub enabled: bool,
    /// Include prompt and completion text (off: only features, predictions,
    /// scores, token counts and finish reasons go out).
    pub content: bool,
    /// Apply the built-in redaction patterns (e-mail, phone, card number, IP
    /// address, bearer token) to every string that goes out.
    pub redact_builtin: bool,
    /// More regular expressions whose matches are replaced by `[REDACTED:custom]`.
    pub redact_patterns: Vec<String>,
    /// A record's body is cut at this many bytes.
    pub max_record_bytes: usize,
    /// Log records waiting for export; beyond it they are dropped and counted.
    pub queue_capacity: usize,
}

impl Default for PayloadLogsConfig {
    fn default() -> Self {
        PayloadLogsConfig {
            enabled: true,
            content: false,
            redact_builtin: true,
            redact_patterns: Vec::new(),
            max_record_bytes: 16 * 1024,
            queue_capacity: 2048,
        }
    }
}

/// Protocol decoding of sampled exchanges.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// `auto` (by path, then body), `openai`, `open-inference-v2`, `kserve-v1`,
    /// `tf-serving` or `json-paths`.
    pub kind: ProtocolKind,
    /// Per-model settings: feature names, which output is the label, class names.
    pub models: Vec<ModelSettings>,
    /// Where things live in any other JSON API (used when `kind` is `json-paths`).
    pub json_paths: JsonPathsConfig,
    /// A response (or else request) header that carries the model version,
    /// used when the protocol reports none. Empty: not read.
    pub model_version_header: String,
    /// The model version when neither the protocol nor the header gives one
    /// (e.g. the image tag, set by the Helm chart).
    pub default_model_version: String,
}

/// The configured protocol.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolKind {
    #[default]
    Auto,
    Openai,
    OpenInferenceV2,
    KserveV1,
    TfServing,
    JsonPaths,
}

/// Settings for one model (`name: "*"` applies to models with no entry of their own).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// The model name as the protocol reports it, or `*`.
    pub name: String,
    /// Names for the input columns, in order (used when the count matches).
    pub features: Vec<String>,
    /// Names of the classes, by index (a predicted index becomes its name).
    pub class_names: Vec<String>,
    /// The output holding the predicted label (default: the single scalar output).
    pub label_output: String,
    /// The output holding scores or probabilities per class (default: a vector output).
    pub scores_output: String,
    /// `auto`, `classification` or `regression`: how predictions are compared
    /// with labels. `auto`: classification when the model reports scores, a
    /// text or boolean prediction, or `class_names` are set; else regression.
    pub task: Task,
    /// The positive class for binary precision, recall, F1 and AUC (default:
    /// the second class, as scikit-learn's `pos_label=1`).
    pub positive_class: String,
}

/// What kind of model it is, for quality metrics.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    #[default]
    Auto,
    Classification,
    Regression,
}

/// Model quality: the feedback API, the join store and the windows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Keep sampled predictions so that labels sent to `POST /v1/feedback` join them.
    pub enabled: bool,
    /// Where predictions meet their labels: `embedded` (this pod's store) or
    /// `kafka` (every replica produces to Kafka; `modelwatch joiner` joins).
    pub backend: QualityBackend,
    /// The Kafka backend's settings.
    pub kafka: KafkaConfig,
    /// The embedded store (a redb file on a volume) for predictions waiting for
    /// labels, joined results and totals. Empty: in memory (lost on restart).
    pub store_path: String,
    /// Memory for the store's page cache (bytes).
    pub store_cache_bytes: usize,
    /// What a label's `request_id` is matched against: `request-id` (the
    /// request id header) or `response-id` (the `id` in the response body:
    /// Open Inference Protocol and OpenAI responses).
    pub join_key: JoinKey,
    /// A prediction waits this long for its label; then it is expired and counted.
    #[serde(with = "humantime_serde")]
    pub label_ttl: Duration,
    /// A label that arrives before its prediction waits this long for it
    /// (then it is expired and counted); 0 refuses it as `unmatched`.
    #[serde(with = "humantime_serde")]
    pub early_label_ttl: Duration,
    /// Labels waiting for their prediction; past it, further early labels
    /// are refused as `unmatched`.
    pub max_early_labels: usize,
    /// At most this many predictions are kept in the store; beyond it the
    /// oldest are evicted and counted (fixes disk use during a label outage).
    pub max_predictions: usize,
    /// Sliding windows for the figures (a `total` window since the store was
    /// created is always kept too).
    #[serde(with = "humantime_list")]
    pub windows: Vec<Duration>,
    /// Predictions held in memory for the sliding windows; beyond it the
    /// oldest leave the windows early and are counted.
    pub max_window_rows: usize,
    /// A window with fewer labelled rows reports no figures (only its sample count).
    pub min_samples: usize,
    /// Windowed figures are recomputed this often.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Distinct (model, version) pairs tracked; predictions of further ones are dropped and counted.
    pub max_models: usize,
    /// Distinct classes per model; further ones fold into `other`.
    pub max_classes: usize,
    /// Messages (prediction batches, feedback calls) waiting for the quality
    /// thread; when full, predictions are dropped and counted and feedback
    /// calls get 503.
    pub queue_capacity: usize,
    /// Largest feedback request body accepted (bytes); larger ones get 413.
    pub max_feedback_bytes: usize,
    /// When set, `POST /v1/feedback` requires `Authorization: Bearer <token>`.
    pub feedback_token: String,
    /// Store commits are flushed to disk at least this often (and at shutdown);
    /// a crash loses at most this much.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Estimated performance before labels arrive (CBPE).
    pub estimation: EstimationConfig,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            enabled: true,
            backend: QualityBackend::Embedded,
            kafka: KafkaConfig::default(),
            store_path: String::new(),
            store_cache_bytes: 8 * 1024 * 1024,
            join_key: JoinKey::RequestId,
            label_ttl: Duration::from_secs(7 * 24 * 3600),
            early_label_ttl: Duration::from_secs(600),
            max_early_labels: 10_000,
            max_predictions: 100_000,
            windows: vec![Duration::from_secs(3600), Duration::from_secs(24 * 3600)],
            max_window_rows: 50_000,
            min_samples: 30,
            refresh_interval: Duration::from_secs(10),
            max_models: 16,
            max_classes: 20,
            queue_capacity: 1024,
            max_feedback_bytes: 16 * 1024 * 1024,
            feedback_token: String::new(),
            sync_interval: Duration::from_secs(1),
            estimation: EstimationConfig::default(),
        }
    }
}

/// Confidence-based performance estimation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EstimationConfig {
    /// Estimate accuracy, precision, recall and F1 from calibrated scores.
    pub enabled: bool,
    /// The first this many labelled rows of each model version form the
    /// reference on which the score calibration is fitted.
    pub reference_rows: usize,
}

impl Default for EstimationConfig {
    fn default() -> Self {
        EstimationConfig {
            enabled: true,
            reference_rows: 1000,
        }
    }
}

/// Drift and data-quality settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// Compare features, predictions and LLM figures with a reference.
    pub enabled: bool,
    /// Reference profiles (`modelwatch profile`) by model name.
    pub profiles: BTreeMap<String, String>,
    /// Without a profile, the first this many records of a model form its
    /// reference (0: no drift for models without a profile).
    pub live_reference_rows: usize,
    /// A folder (on a volume) where live references are written once taken,
    /// and read back at start, so a restart keeps them. Empty: kept in memory.
    pub reference_dir: String,
    /// Expected ranges by model and feature (`[min, max]`), used for
    /// `out_of_range` instead of the reference's observed range.
    pub ranges: BTreeMap<String, BTreeMap<String, [f64; 2]>>,
    /// Values per feature in the current window (count-based, sliding).
    pub window: usize,
    /// `values`: numeric windows keep their raw values (8 bytes each; every
    /// statistic exact). `sketch`: they keep `sketch_panes` mergeable quantile
    /// sketches instead (memory independent of the window size; statistics
    /// within a stated tolerance), for large windows.
    pub window_mode: WindowMode,
    /// Sketch mode: the window is this many sketches of `window / panes`
    /// values each; the oldest is dropped as a new one starts.
    pub sketch_panes: usize,
    /// A feature is tested once its window holds this many values.
    pub min_samples: usize,
    /// Statistics are recomputed this often (on the analysis thread).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Features tracked per model (a profile's first ones); further ones are dropped and counted.
    pub max_features: usize,
    /// Models tracked.
    pub max_models: usize,
    /// `auto` (KS up to `large_sample` reference values, then normed
    /// Wasserstein), `ks`, `wasserstein`, `psi`, `jensenshannon`, `hellinger`.
    pub numeric_method: DriftMethod,
    /// `auto` (chi-squared up to `large_sample`, then Jensen-Shannon), `chi2`,
    /// `jensenshannon`, `psi`, `hellinger`.
    pub categorical_method: DriftMethod,
    /// Reference size above which `auto` uses distances instead of p-values.
    pub large_sample: usize,
    /// p-value tests: drift when p is below this.
    pub p_value_threshold: f64,
    /// Distances: drift when the distance is at least this.
    pub distance_threshold: f64,
    /// Correction of p-values across features for the dataset verdict:
    /// `none`, `bonferroni` or `fdr` (Benjamini-Hochberg).
    pub correction: crate::drift::stats::Correction,
    /// The dataset drifts when at least this share of its features drift.
    pub dataset_share: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            enabled: true,
            profiles: BTreeMap::new(),
            live_reference_rows: 1000,
            reference_dir: String::new(),
            ranges: BTreeMap::new(),
            window: 1000,
            window_mode: WindowMode::Values,
            sketch_panes: 4,
            min_samples: 100,
            refresh_interval: Duration::from_secs(10),
            max_features: 200,
            max_models: 8,
            numeric_method: DriftMethod::Auto,
            categorical_method: DriftMethod::Auto,
            large_sample: 1000,
            p_value_threshold: 0.05,
            distance_threshold: 0.1,
            correction: crate::drift::stats::Correction::Bonferroni,
            dataset_share: 0.5,
        }
    }
}

/// Anomaly detection on modelwatch's own time series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Score latency, error rate, request and token rates, drift share and accuracy.
    pub enabled: bool,
    /// One point per series this often.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Points a series needs before it is scored.
    pub warmup: usize,
    /// Weight of the newest point in the EWMA mean and variance (0 to 1).
    pub ewma_alpha: f64,
    /// Points of history for the median/MAD detector.
    pub mad_window: usize,
    /// A point is an anomaly when both its EWMA z-score and its robust
    /// (MAD) z-score reach this, in absolute value.
    pub sensitivity: f64,
    /// ... and when it differs from the EWMA level by at least this share of
    /// the level (0: any change).
    pub min_relative_change: f64,
    /// Per request: a tabular input is an outlier when its largest robust
    /// z-distance from the reference (per feature) reaches this.
    pub outlier_threshold: f64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            enabled: true,
            interval: Duration::from_secs(60),
            warmup: 30,
            ewma_alpha: 0.1,
            mad_window: 120,
            sensitivity: 4.0,
            min_relative_change: 0.2,
            outlier_threshold: 6.0,
        }
    }
}

/// The resource sampler: host, processes, the container's cgroup, GPUs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesConfig {
    pub enabled: bool,
    /// One reading this often, on the sampler's own thread.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The model server's process, found by its executable name or a word of
    /// its command line (e.g. `vllm`, `llama-server`, `mlserver`); needs a
    /// shared process namespace in Kubernetes. Empty: not looked for.
    pub model_server_process: String,
    /// ... or by a file holding its PID (read at every sample).
    pub model_server_pid_file: String,
    /// Read GPUs through NVML (loaded at run time; no GPU or driver: one log line, `modelwatch.gpu.available` 0).
    pub gpu: bool,
    /// The model server's own Prometheus endpoint on localhost, e.g.
    /// `http://127.0.0.1:8000/metrics`, scraped every `interval` and
    /// re-exported as `modelwatch.engine.*`. Empty: not scraped.
    pub engine_metrics_url: String,
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        ResourcesConfig {
            enabled: true,
            interval: Duration::from_secs(15),
            model_server_process: String::new(),
            model_server_pid_file: String::new(),
            gpu: true,
            engine_metrics_url: String::new(),
        }
    }
}

/// How numeric drift windows hold their values.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WindowMode {
    #[default]
    Values,
    Sketch,
}

/// A drift statistic.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DriftMethod {
    #[default]
    Auto,
    Ks,
    Wasserstein,
    Psi,
    Jensenshannon,
    Hellinger,
    Chi2,
}

impl DriftMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftMethod::Auto => "auto",
            DriftMethod::Ks => "ks",
            DriftMethod::Wasserstein => "wasserstein",
            DriftMethod::Psi => "psi",
            DriftMethod::Jensenshannon => "jensenshannon",
            DriftMethod::Hellinger => "hellinger",
            DriftMethod::Chi2 => "chi2",
        }
    }
}

/// Where predictions meet their labels.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum QualityBackend {
    #[default]
    Embedded,
    Kafka,
}

/// Kafka for the fleet: sidecars produce predictions and labels, joiners consume them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` of the brokers.
    pub bootstrap: String,
    pub predictions_topic: String,
    pub labels_topic: String,
    /// Compacted topic where every joiner shares its partitions' figures, so
    /// that each one exports the figures of the whole fleet.
    pub state_topic: String,
    pub client_id: String,
    /// The joiners' consumer group.
    pub group_id: String,
    /// librdkafka properties passed through (`security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`, …). A value `${file:PATH}` or
    /// `${env:NAME}` is read from that file or variable at start; values are
    /// never logged.
    pub properties: std::collections::BTreeMap<String, String>,
    /// Create missing topics at start (with `partitions` and
    /// `replication_factor`); otherwise modelwatch waits for them.
    pub create_topics: bool,
    pub partitions: i32,
    /// -1: the broker's default.
    pub replication_factor: i32,
    /// The sidecar's on-disk outbox (redb) where prediction records wait
    /// while Kafka cannot take them. Empty: in memory.
    pub outbox_path: String,
    /// Records the outbox holds; past it, the newest are dropped and counted.
    pub outbox_max_records: usize,
    /// A record Kafka has not acknowledged in this time goes to the outbox
    /// (librdkafka's `message.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap: String::new(),
            predictions_topic: "modelwatch.predictions".into(),
            labels_topic: "modelwatch.labels".into(),
            state_topic: "modelwatch.quality-state".into(),
            client_id: "modelwatch".into(),
            group_id: "modelwatch-joiner".into(),
            properties: Default::default(),
            create_topics: false,
            partitions: 6,
            replication_factor: -1,
            outbox_path: String::new(),
            outbox_max_records: 100_000,
            delivery_timeout: Duration::from_secs(30),
        }
    }
}

/// What labels are joined by.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum JoinKey {
    RequestId,
    ResponseId,
}

/// A list of durations written like `1h`, `24h`.
mod humantime_list {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| super::window_name(*d)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        items
            .iter()
            .map(|s| {
                humantime::parse_duration(s).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "{s:?} is not a duration ({e}); write e.g. 15m, 1h, 24h"
                    ))
                })
            })
            .collect()
    }
}

/// JSONPath expressions (RFC 9535) evaluated against
/// `{"request": <request body>, "response": <response body>}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JsonPathsConfig {
    /// Features: one node per row, or one array of rows (objects or arrays).
    pub features: String,
    /// Predicted label or value per row.
    pub prediction: String,
    /// Score or probability vector per row.
    pub scores: String,
    /// The model name.
    pub model: String,
    /// The model version.
    pub model_version: String,
}

/// OpenTelemetry export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `service.name` of the exported resource (`OTEL_SERVICE_NAME` overrides).
    pub service_name: String,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES` adds to these).
    pub resource_attributes: BTreeMap<String, String>,
    /// OTLP push. Off while no endpoint is set.
    pub otlp: OtlpConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            service_name: "modelwatch".into(),
            resource_attributes: BTreeMap::new(),
            otlp: OtlpConfig::default(),
        }
    }
}

/// OTLP exporter settings, named after the standard `OTEL_EXPORTER_OTLP_*` variables.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// Base URL of the OTLP receiver, e.g. `http://otel-collector:4318` (HTTP) or
    /// `http://otel-collector:4317` (gRPC). Empty: no OTLP export.
    pub endpoint: String,
    /// Full URL for metrics only; overrides `endpoint` for metrics.
    pub metrics_endpoint: String,
    /// Full URL for traces only; overrides `endpoint` for traces.
    pub traces_endpoint: String,
    /// `http/protobuf` or `grpc`.
    pub protocol: OtlpProtocol,
    /// Headers sent with every export (e.g. an authorization token).
    pub headers: BTreeMap<String, String>,
    /// One export attempt is abandoned after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Metrics are pushed this often.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// After failed exports, attempts are skipped (and counted) for up to this long,
    /// doubling from one export interval.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Export one span per sampled request.
    pub traces: bool,
    /// Finished spans waiting for export; when full, spans are dropped.
    pub span_queue_capacity: usize,
    /// TLS for an `https://` endpoint (OTLP over HTTP/protobuf).
    pub tls: ClientTlsConfig,
}

/// TLS of an outbound connection (the OTLP exporter, Alertmanager,
/// webhooks): the system's roots plus an optional CA file, an optional
/// client certificate (mTLS).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM file of CA certificates trusted besides the system's
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`).
    pub ca_file: String,
    /// PEM client certificate chain for mTLS (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`).
    pub cert_file: String,
    /// PEM private key of `cert_file` (`OTEL_EXPORTER_OTLP_CLIENT_KEY`).
    pub key_file: String,
    /// Accept any server certificate. For tests only: warned about at start.
    pub insecure_skip_verify: bool,
    /// The name the server's certificate must carry, instead of the URL's
    /// host (a server reached by IP or through a tunnel); also sent as SNI
    /// where the client allows it.
    pub server_name: String,
}

/// HTTP basic authentication of an outbound call. The password is read from
/// its file at each call (a rotated secret is picked up) and never logged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuth {
    /// Empty: no basic authentication.
    pub username: String,
    /// A file holding the password (e.g. a mounted Kubernetes secret).
    pub password_file: String,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: String::new(),
            metrics_endpoint: String::new(),
            traces_endpoint: String::new(),
            protocol: OtlpProtocol::HttpProtobuf,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            metrics_interval: Duration::from_secs(15),
            max_backoff: Duration::from_secs(300),
            traces: true,
            span_queue_capacity: 2048,
            tls: ClientTlsConfig::default(),
        }
    }
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

/// modelwatch's own logs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

const ADDR_ACCEPTED: &str = "an IP address and port, e.g. 0.0.0.0:8080 or [::1]:8080";
const UPSTREAM_ACCEPTED: &str =
    "an http:// or https:// URL with a host and a port, e.g. http://127.0.0.1:8000";
const OTLP_ACCEPTED: &str =
    "empty (off) or an http:// or https:// URL, e.g. http://otel-collector:4318";

impl Config {
    /// Reads and parses a YAML file. Unknown keys are refused with their path.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Parse {
                file: origin.to_string(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: e.into_inner().to_string(),
            }
        })
    }

    /// Checks every value that the types alone do not; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cloudevents.max_pending == 0 {
            return Err(invalid(
                "cloudevents.max_pending",
                0,
                "a number of events above 0",
            ));
        }
        if self.cloudevents.pair_timeout < Duration::from_millis(100) {
            return Err(invalid(
                "cloudevents.pair_timeout",
                humantime::format_duration(self.cloudevents.pair_timeout),
                "a duration of at least 100ms, e.g. 30s",
            ));
        }
        parse_addr("proxy.listen", &self.proxy.listen)?;
        parse_addr("admin.listen", &self.admin.listen)?;
        if self.proxy.listen == self.admin.listen {
            return Err(invalid(
                "admin.listen",
                &self.admin.listen,
                "an address different from proxy.listen: the admin server never shares a listener with model traffic",
            ));
        }
        self.upstream()?;
        let mut listens = vec![self.proxy.listen.as_str(), self.admin.listen.as_str()];
        for (i, pair) in self.proxy.extra_ports.iter().enumerate() {
            let key = format!("proxy.extra_ports[{i}].listen");
            parse_addr(&key, &pair.listen)?;
            if listens.contains(&pair.listen.as_str()) {
                return Err(invalid(
                    &key,
                    &pair.listen,
                    "an address that proxy.listen, admin.listen and the other extra ports do not use",
                ));
            }
            listens.push(&pair.listen);
            parse_upstream(&format!("proxy.extra_ports[{i}].upstream"), &pair.upstream)?;
        }
        if let Err((key, value, accepted)) =
            crate::telemetry::tls::check_at("proxy.upstream_tls", &self.proxy.upstream_tls)
        {
            return Err(invalid(&key, value, &accepted));
        }
        if self.proxy.request_id_header.is_empty()
            || http::HeaderName::from_bytes(self.proxy.request_id_header.as_bytes()).is_err()
        {
            return Err(invalid(
                "proxy.request_id_header",
                &self.proxy.request_id_header,
                "a valid HTTP header name, e.g. x-request-id",
            ));
        }
        positive("proxy.connect_timeout", self.proxy.connect_timeout)?;
        positive(
            "proxy.response_header_timeout",
            self.proxy.response_header_timeout,
        )?;
        positive("admin.readiness.interval", self.admin.readiness.interval)?;
        if self.tensorboard.enabled {
            if self.tensorboard.dir.trim().is_empty() {
                return Err(invalid(
                    "tensorboard.dir",
                    "",
                    "a folder for the event files (required when tensorboard.enabled is true)",
                ));
            }
            if self.tensorboard.interval < Duration::from_millis(100) {
                return Err(invalid(
                    "tensorboard.interval",
                    humantime::format_duration(self.tensorboard.interval),
                    "a duration of at least 100ms, e.g. 1m",
                ));
            }
            if self.tensorboard.max_file_bytes < 4096 || self.tensorboard.max_files == 0 {
                return Err(invalid(
                    "tensorboard.max_file_bytes",
                    format!(
                        "{} (max_files {})",
                        self.tensorboard.max_file_bytes, self.tensorboard.max_files
                    ),
                    "at least 4096 bytes, and max_files at least 1",
                ));
            }
        }
        if self.ecs_logs.enabled {
            if self.ecs_logs.output.trim().is_empty() {
                return Err(invalid("ecs_logs.output", "", "stdout or a file path"));
            }
            if self.ecs_logs.queue_capacity == 0 {
                return Err(invalid("ecs_logs.queue_capacity", 0, "at least 1"));
            }
        }
        if self.admin.history_interval < Duration::from_millis(100) {
            return Err(invalid(
                "admin.history_interval",
                humantime::format_duration(self.admin.history_interval),
                "a duration of at least 100ms, e.g. 10s",
            ));
        }
        if !(2..=100_000).contains(&self.admin.history_points) {
            return Err(invalid(
                "admin.history_points",
                self.admin.history_points,
                "2 to 100000 points",
            ));
        }
        positive("admin.readiness.timeout", self.admin.readiness.timeout)?;
        let path = &self.admin.readiness.http_path;
        if !path.is_empty()
            && (!path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err())
        {
            return Err(invalid(
                "admin.readiness.http_path",
                path,
                "empty (TCP connect) or a path starting with /, e.g. /health",
            ));
        }
        let rate = self.sampling.rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(invalid("sampling.rate", rate, "a number from 0 to 1"));
        }
        if self.sampling.queue_capacity == 0 {
            return Err(invalid(
                "sampling.queue_capacity",
                0,
                "an integer of at least 1",
            ));
        }
        let otlp = &self.telemetry.otlp;
        for (key, value) in [
            ("telemetry.otlp.endpoint", &otlp.endpoint),
            ("telemetry.otlp.metrics_endpoint", &otlp.metrics_endpoint),
            ("telemetry.otlp.traces_endpoint", &otlp.traces_endpoint),
        ] {
            if !value.is_empty() {
                let ok = value.parse::<http::Uri>().ok().filter(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
                if ok.is_none() {
                    return Err(invalid(key, value, OTLP_ACCEPTED));
                }
            }
        }
        positive("telemetry.otlp.timeout", otlp.timeout)?;
        positive("telemetry.otlp.metrics_interval", otlp.metrics_interval)?;
        if let Err((key, value, problem)) = crate::telemetry::tls::check(&otlp.tls) {
            return Err(invalid(&key, value, &problem));
        }
        self.validate_admin_security()?;
        if otlp.span_queue_capacity == 0 {
            return Err(invalid(
                "telemetry.otlp.span_queue_capacity",
                0,
                "an integer of at least 1",
            ));
        }
        for name in otlp.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(
                    "telemetry.otlp.headers",
                    name,
                    "valid HTTP header names",
                ));
            }
        }
        for (key, path) in [
            (
                "protocol.json_paths.features",
                &self.protocol.json_paths.features,
            ),
            (
                "protocol.json_paths.prediction",
                &self.protocol.json_paths.prediction,
            ),
            (
                "protocol.json_paths.scores",
                &self.protocol.json_paths.scores,
            ),
            ("protocol.json_paths.model", &self.protocol.json_paths.model),
            (
                "protocol.json_paths.model_version",
                &self.protocol.json_paths.model_version,
            ),
        ] {
            if !path.is_empty() {
                if let Err(e) = serde_json_path::JsonPath::parse(path) {
                    return Err(invalid(
                        key,
                        path,
                        &format!("a JSONPath (RFC 9535) such as $.response.predictions[*]: {e}"),
                    ));
                }
            }
        }
        if self.protocol.kind == ProtocolKind::JsonPaths
            && self.protocol.json_paths.features.is_empty()
            && self.protocol.json_paths.prediction.is_empty()
        {
            return Err(invalid(
                "protocol.json_paths",
                "(empty)",
                "with protocol.kind json-paths, at least protocol.json_paths.features or .prediction",
            ));
        }
        for (i, m) in self.protocol.models.iter().enumerate() {
            if m.name.is_empty() {
                return Err(invalid(
                    &format!("protocol.models[{i}].name"),
                    "",
                    "a model name, or * for every model",
                ));
            }
        }
        if let Err(e) =
            crate::analysis::redact::Redactor::new(false, &self.payload_logs.redact_patterns)
        {
            return Err(invalid(
                &format!("payload_logs.redact_patterns[{}]", e.index),
                &self.payload_logs.redact_patterns[e.index],
                &format!("a regular expression (Rust regex syntax): {}", e.message),
            ));
        }
        if self.payload_logs.queue_capacity == 0 {
            return Err(invalid(
                "payload_logs.queue_capacity",
                0,
                "an integer of at least 1",
            ));
        }
        self.validate_quality()?;
        self.validate_drift()?;
        self.validate_anomaly()?;
        positive("resources.interval", self.resources.interval)?;
        let engine = &self.resources.engine_metrics_url;
        if !engine.is_empty()
            && engine
                .parse::<http::Uri>()
                .ok()
                .filter(|u| u.scheme_str() == Some("http") && u.host().is_some())
                .is_none()
        {
            return Err(invalid(
                "resources.engine_metrics_url",
                engine,
                "empty or an http:// URL, e.g. http://127.0.0.1:8000/metrics",
            ));
        }
        self.alerts.validate()?;
        self.rollout.validate()?;
        let header = &self.protocol.model_version_header;
        if !header.is_empty() && http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(invalid(
                "protocol.model_version_header",
                header,
                "empty or a valid HTTP header name, e.g. x-model-version",
            ));
        }
        if self.telemetry.service_name.is_empty() {
            return Err(invalid("telemetry.service_name", "", "a non-empty name"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                &self.log.level,
                "a RUST_LOG-style filter, e.g. info or modelwatch=debug,info",
            ));
        }
        Ok(())
    }

    fn validate_admin_security(&self) -> Result<(), ConfigError> {
        let a = &self.admin;
        if !a.token_file.is_empty() {
            match std::fs::read_to_string(&a.token_file) {
                Ok(t) if t.trim().len() >= 16 => {}
                Ok(_) => {
                    return Err(invalid(
                        "admin.token_file",
                        &a.token_file,
                        "a file holding a token of at least 16 characters",
                    ))
                }
                Err(e) => {
                    return Err(invalid(
                        "admin.token_file",
                        &a.token_file,
                        &format!("a readable file holding the token ({e})"),
                    ))
                }
            }
        }
        match (a.tls.cert_file.is_empty(), a.tls.key_file.is_empty()) {
            (true, true) => Ok(()),
            (false, false) => crate::inject::tls::ReloadingCert::new(
                a.tls.cert_file.clone().into(),
                a.tls.key_file.clone().into(),
            )
            .map(|_| ())
            .map_err(|e| {
                invalid(
                    "admin.tls.cert_file",
                    &a.tls.cert_file,
                    &format!("a PEM certificate chain whose key is admin.tls.key_file ({e})"),
                )
            }),
            (true, false) => Err(invalid(
                "admin.tls.cert_file",
                "",
                "a certificate to go with admin.tls.key_file",
            )),
            (false, true) => Err(invalid(
                "admin.tls.key_file",
                "",
                "the private key of admin.tls.cert_file",
            )),
        }
    }

    fn validate_anomaly(&self) -> Result<(), ConfigError> {
        let a = &self.anomaly;
        positive("anomaly.interval", a.interval)?;
        if !(a.ewma_alpha > 0.0 && a.ewma_alpha < 1.0) {
            return Err(invalid(
                "anomaly.ewma_alpha",
                a.ewma_alpha,
                "a number between 0 and 1, e.g. 0.1",
            ));
        }
        if a.mad_window < 3 || a.mad_window > 10_000 {
            return Err(invalid(
                "anomaly.mad_window",
                a.mad_window,
                "an integer from 3 to 10000",
            ));
        }
        if !(a.min_relative_change >= 0.0 && a.min_relative_change.is_finite()) {
            return Err(invalid(
                "anomaly.min_relative_change",
                a.min_relative_change,
                "a number of at least 0, e.g. 0.2",
            ));
        }
        if a.warmup < 2 {
            return Err(invalid(
                "anomaly.warmup",
                a.warmup,
                "an integer of at least 2",
            ));
        }
        for (key, v) in [
            ("anomaly.sensitivity", a.sensitivity),
            ("anomaly.outlier_threshold", a.outlier_threshold),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(invalid(key, v, "a number above 0, e.g. 4"));
            }
        }
        Ok(())
    }

    fn validate_drift(&self) -> Result<(), ConfigError> {
        let d = &self.drift;
        positive("drift.refresh_interval", d.refresh_interval)?;
        for (key, value) in [
            ("drift.window", d.window),
            ("drift.min_samples", d.min_samples),
            ("drift.max_features", d.max_features),
            ("drift.max_models", d.max_models),
            ("drift.sketch_panes", d.sketch_panes),
        ] {
            if value == 0 {
                return Err(invalid(key, 0, "an integer of at least 1"));
            }
        }
        if d.min_samples > d.window {
            return Err(invalid(
                "drift.min_samples",
                d.min_samples,
                "at most drift.window (a window never holds more)",
            ));
        }
        if d.numeric_method == DriftMethod::Chi2 {
            return Err(invalid(
                "drift.numeric_method",
                "chi2",
                "auto, ks, wasserstein, psi, jensenshannon or hellinger",
            ));
        }
        if matches!(
            d.categorical_method,
            DriftMethod::Ks | DriftMethod::Wasserstein
        ) {
            return Err(invalid(
                "drift.categorical_method",
                d.categorical_method.as_str(),
                "auto, chi2, jensenshannon, psi or hellinger",
            ));
        }
        for (key, v) in [
            ("drift.p_value_threshold", d.p_value_threshold),
            ("drift.dataset_share", d.dataset_share),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(invalid(key, v, "a number above 0 and at most 1"));
            }
        }
        if !(d.distance_threshold > 0.0 && d.distance_threshold.is_finite()) {
            return Err(invalid(
                "drift.distance_threshold",
                d.distance_threshold,
                "a number above 0",
            ));
        }
        for (model, features) in &d.ranges {
            for (feature, [lo, hi]) in features {
                if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                    return Err(invalid(
                        &format!("drift.ranges.{model}.{feature}"),
                        format!("[{lo}, {hi}]"),
                        "[min, max] with finite numbers and min <= max",
                    ));
                }
            }
        }
        for (model, path) in &d.profiles {
            if path.is_empty() {
                return Err(invalid(
                    &format!("drift.profiles.{model}"),
                    "",
                    "the path of a profile written by `modelwatch profile`",
                ));
            }
        }
        Ok(())
    }

    fn validate_quality(&self) -> Result<(), ConfigError> {
        let q = &self.quality;
        positive("quality.label_ttl", q.label_ttl)?;
        positive("quality.refresh_interval", q.refresh_interval)?;
        positive("quality.sync_interval", q.sync_interval)?;
        for (key, value) in [
            ("quality.max_predictions", q.max_predictions),
            ("quality.max_window_rows", q.max_window_rows),
            ("quality.min_samples", q.min_samples),
            ("quality.max_models", q.max_models),
            ("quality.queue_capacity", q.queue_capacity),
            ("quality.max_feedback_bytes", q.max_feedback_bytes),
            ("quality.store_cache_bytes", q.store_cache_bytes),
            ("quality.max_early_labels", q.max_early_labels),
        ] {
            if value == 0 {
                return Err(invalid(key, 0, "an integer of at least 1"));
            }
        }
        if q.backend == QualityBackend::Kafka {
            let k = &q.kafka;
            if k.bootstrap.trim().is_empty() {
                return Err(invalid(
                    "quality.kafka.bootstrap",
                    "",
                    "comma-separated host:port of the Kafka brokers (or MODELWATCH_KAFKA_BOOTSTRAP) when quality.backend is kafka",
                ));
            }
            for (key, topic) in [
                ("quality.kafka.predictions_topic", &k.predictions_topic),
                ("quality.kafka.labels_topic", &k.labels_topic),
                ("quality.kafka.state_topic", &k.state_topic),
            ] {
                let ok = !topic.is_empty()
                    && topic.len() <= 249
                    && topic
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !ok {
                    return Err(invalid(
                        key,
                        topic,
                        "a Kafka topic name: 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-'",
                    ));
                }
            }
            if k.predictions_topic == k.labels_topic {
                return Err(invalid(
                    "quality.kafka.labels_topic",
                    &k.labels_topic,
                    "a topic other than quality.kafka.predictions_topic",
                ));
            }
            if k.partitions < 1 {
                return Err(invalid(
                    "quality.kafka.partitions",
                    k.partitions,
                    "at least 1",
                ));
            }
            if k.outbox_max_records == 0 {
                return Err(invalid("quality.kafka.outbox_max_records", 0, "at least 1"));
            }
            positive("quality.kafka.delivery_timeout", k.delivery_timeout)?;
            for (name, value) in &k.properties {
                crate::kafka::resolve_property(name, value).map_err(|e| {
                    invalid(
                        &format!("quality.kafka.properties.{name}"),
                        "(not shown)",
                        &e,
                    )
                })?;
            }
        }
        if q.max_models > u16::MAX as usize {
            return Err(invalid("quality.max_models", q.max_models, "1 to 65535"));
        }
        if !(2..=1000).contains(&q.max_classes) {
            return Err(invalid(
                "quality.max_classes",
                q.max_classes,
                "an integer from 2 to 1000",
            ));
        }
        if q.windows.len() > 8 || q.windows.iter().any(|w| w.is_zero()) {
            let shown: Vec<String> = q
                .windows
                .iter()
                .map(|d| humantime::format_duration(*d).to_string())
                .collect();
            return Err(invalid(
                "quality.windows",
                format!("[{}]", shown.join(", ")),
                "up to 8 durations above zero, e.g. [1h, 24h]",
            ));
        }
        if q.estimation.reference_rows < 2 {
            return Err(invalid(
                "quality.estimation.reference_rows",
                q.estimation.reference_rows,
                "an integer of at least 2",
            ));
        }
        if !q.feedback_token.is_empty()
            && (q.feedback_token.len() < 16
                || !q.feedback_token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid(
                "quality.feedback_token",
                "(hidden)",
                "empty (no authentication) or at least 16 visible ASCII characters",
            ));
        }
        Ok(())
    }

    pub fn proxy_listen(&self) -> SocketAddr {
        self.proxy.listen.parse().expect("validated")
    }

    pub fn admin_listen(&self) -> SocketAddr {
        self.admin.listen.parse().expect("validated")
    }

    /// The upstream as scheme + authority.
    pub fn upstream(&self) -> Result<Upstream, ConfigError> {
        parse_upstream("proxy.upstream", &self.proxy.upstream)
    }

    /// The effective configuration as YAML, as `check-config` prints it.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("config serializes")
    }

    /// The YAML to show a person (`check-config`): secret Kafka properties
    /// given literally are hidden (references like `${file:…}` are shown).
    pub fn to_shown_yaml(&self) -> String {
        let mut shown = self.clone();
        for (name, value) in shown.quality.kafka.properties.iter_mut() {
            if crate::kafka::is_secret(name) && !value.starts_with("${") {
                *value = "(hidden)".into();
            }
        }
        shown.to_yaml()
    }
}

/// Where model traffic goes.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
}

impl Upstream {
    pub fn host_port(&self) -> String {
        self.authority.as_str().to_string()
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, value, ADDR_ACCEPTED))
}

fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(invalid(
            key,
            "0s",
            "a duration above zero, e.g. 500ms, 2s, 1m",
        ));
    }
    Ok(())
}

/// A window's label value: `1h`, `24h`, `15m`, `90s`.
pub fn window_name(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else if s > 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests;
