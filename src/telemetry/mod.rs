//! The telemetry pipeline: one OpenTelemetry meter provider with two readers
//! (OTLP push and the Prometheus text endpoint), the tracer for request spans,
//! the resource that names this pod, and the typed instruments every stage
//! records into.

pub mod bound;
pub mod ecs;
pub mod export;
pub mod names;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider, UpDownCounter};
use opentelemetry::trace::TracerProvider;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;

use crate::config::{Config, OtlpProtocol};
use export::{
    Backoff, ExportState, GuardedLogExporter, GuardedMetricExporter, GuardedSpanExporter,
    LogQueueGate, QueueBound, SpanQueueGate,
};
use names::{attr, MetricName};

/// Errors while building the pipeline (bad exporter settings).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP {signal} exporter: {message}")]
    Exporter {
        signal: &'static str,
        message: String,
    },
    #[error("cannot build the Prometheus reader: {0}")]
    Prometheus(String),
    #[error("cannot start the ECS log writer: {0}")]
    Ecs(String),
}

/// Values read by observable instruments and `/v1/status`; written by the
/// stages that own them.
#[derive(Debug, Default)]
pub struct Gauges {
    pub sample_queue_depth: AtomicU64,
    pub sample_queue_capacity: AtomicU64,
    pub upstream_up: AtomicBool,
    pub samples_taken: AtomicU64,
    pub samples_dropped_queue_full: AtomicU64,
    pub samples_dropped_shutdown: AtomicU64,
    pub samples_analyzed: AtomicU64,
}

/// The instruments the proxy and the analysis task record into: a handle
/// that is cheap to clone (one reference count), as every request holds one.
#[derive(Debug, Clone)]
pub struct Instruments(Arc<InstrumentSet>);

impl std::ops::Deref for Instruments {
    type Target = InstrumentSet;
    fn deref(&self) -> &InstrumentSet {
        &self.0
    }
}

/// The instruments themselves (see [`Instruments`]).
#[derive(Debug)]
pub struct InstrumentSet {
    /// The HTTP server figures bound per attribute set (see [`bound::HttpBindings`]).
    pub http: bound::HttpBindings,
    /// The GenAI figures bound per series (see [`bound::GenAiBindings`]).
    pub gen_ai_bound: bound::GenAiBindings,
    pub request_duration: Histogram<f64>,
    pub active_requests: UpDownCounter<i64>,
    pub request_body_size: Histogram<u64>,
    pub response_body_size: Histogram<u64>,
    pub samples_taken: Counter<u64>,
    pub samples_dropped: Counter<u64>,
    pub samples_analyzed: Counter<u64>,
    pub bodies_truncated: Counter<u64>,
    pub sample_time_to_first_byte: Histogram<f64>,
    pub upstream_errors: Counter<u64>,
    pub upstream_retries: Counter<u64>,
    pub admin_auth_failures: Counter<u64>,
    pub cloudevents_received: Counter<u64>,
    pub gen_ai_duration: Histogram<f64>,
    pub gen_ai_ttft: Histogram<f64>,
    pub gen_ai_tpot: Histogram<f64>,
    pub gen_ai_tokens: Histogram<u64>,
    pub llm_requests: Counter<u64>,
    pub llm_finish_reasons: Counter<u64>,
    pub llm_empty_responses: Counter<u64>,
    pub llm_output_characters: Histogram<u64>,
    pub inferences: Counter<u64>,
    pub decode_errors: Counter<u64>,
    pub quality_predictions: Counter<u64>,
    pub quality_predictions_dropped: Counter<u64>,
    pub quality_feedback: Counter<u64>,
    pub quality_labels: Counter<u64>,
    pub quality_confusion: Counter<u64>,
    pub quality_score: Histogram<f64>,
    pub quality_log_loss: Counter<f64>,
    pub quality_error_absolute: Counter<f64>,
    pub quality_error_squared: Counter<f64>,
    pub quality_error_percentage: Counter<f64>,
    pub quality_label_sum: UpDownCounter<f64>,
    pub quality_label_squares: Counter<f64>,
    pub quality_label_delay: Histogram<f64>,
    pub quality_pending_removed: Counter<u64>,
    pub quality_early_labels_joined: Counter<u64>,
    pub kafka_produced: Counter<u64>,
    pub kafka_outbox_dropped: Counter<u64>,
    pub kafka_consumed: Counter<u64>,
    pub kafka_malformed: Counter<u64>,
    pub quality_window_evicted: Counter<u64>,
    pub outlier_score: Histogram<f64>,
    pub outliers: Counter<u64>,
    pub model_request_duration: Histogram<f64>,
    pub model_requests: Counter<u64>,
    pub alert_transitions: Counter<u64>,
    pub alert_notifications: Counter<u64>,
    pub alert_series_dropped: Counter<u64>,
    pub shadow_requests: Counter<u64>,
    pub shadow_duration: Histogram<f64>,
    pub shadow_comparisons: Counter<u64>,
    pub shadow_difference: Histogram<f64>,
    pub shadow_latency_difference: Histogram<f64>,
    pub shadow_output_length_ratio: Histogram<f64>,
    pub environment_changes: Counter<u64>,
}

fn describe<T>(
    builder: opentelemetry::metrics::InstrumentBuilder<'_, T>,
    m: MetricName,
) -> opentelemetry::metrics::InstrumentBuilder<'_, T> {
    builder.with_unit(m.unit).with_description(m.description)
}

impl Instruments {
    pub fn new(meter: &Meter) -> Instruments {
        use names::*;
        let f64_hist = |m: MetricName, buckets: &[f64]| {
            meter
                .f64_histogram(m.name)
                .with_unit(m.unit)
                .with_description(m.description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let u64_hist = |m: MetricName, buckets: &[f64]| {
            meter
                .u64_histogram(m.name)
                .with_unit(m.unit)
                .with_description(m.description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let counter = |m: MetricName| describe(meter.u64_counter(m.name), m).build();
        let f64_counter = |m: MetricName| describe(meter.f64_counter(m.name), m).build();
        Instruments(Arc::new(InstrumentSet {
            http: bound::HttpBindings::default(),
            gen_ai_bound: bound::GenAiBindings::default(),
            request_duration: f64_hist(HTTP_SERVER_REQUEST_DURATION, DURATION_BUCKETS),
            active_requests: describe(
                meter.i64_up_down_counter(HTTP_SERVER_ACTIVE_REQUESTS.name),
                HTTP_SERVER_ACTIVE_REQUESTS,
            )
            .build(),
            request_body_size: u64_hist(HTTP_SERVER_REQUEST_BODY_SIZE, SIZE_BUCKETS),
            response_body_size: u64_hist(HTTP_SERVER_RESPONSE_BODY_SIZE, SIZE_BUCKETS),
            samples_taken: counter(SAMPLES_TAKEN),
            samples_dropped: counter(SAMPLES_DROPPED),
            samples_analyzed: counter(SAMPLES_ANALYZED),
            bodies_truncated: counter(SAMPLE_BODIES_TRUNCATED),
            sample_time_to_first_byte: f64_hist(SAMPLE_TIME_TO_FIRST_BYTE, DURATION_BUCKETS),
            upstream_errors: counter(UPSTREAM_ERRORS),
            upstream_retries: counter(UPSTREAM_RETRIES),
            admin_auth_failures: counter(ADMIN_AUTH_FAILURES),
            cloudevents_received: counter(CLOUDEVENTS_RECEIVED),
            gen_ai_duration: f64_hist(GEN_AI_SERVER_REQUEST_DURATION, GEN_AI_DURATION_BUCKETS),
            gen_ai_ttft: f64_hist(GEN_AI_SERVER_TIME_TO_FIRST_TOKEN, GEN_AI_TTFT_BUCKETS),
            gen_ai_tpot: f64_hist(GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN, GEN_AI_TPOT_BUCKETS),
            gen_ai_tokens: u64_hist(GEN_AI_CLIENT_TOKEN_USAGE, GEN_AI_TOKEN_BUCKETS),
            llm_requests: counter(LLM_REQUESTS),
            llm_finish_reasons: counter(LLM_FINISH_REASONS),
            llm_empty_responses: counter(LLM_EMPTY_RESPONSES),
            llm_output_characters: u64_hist(LLM_OUTPUT_CHARACTERS, CHARACTER_BUCKETS),
            inferences: counter(INFERENCES),
            decode_errors: counter(DECODE_ERRORS),
            quality_predictions: counter(QUALITY_PREDICTIONS),
            quality_predictions_dropped: counter(QUALITY_PREDICTIONS_DROPPED),
            quality_feedback: counter(QUALITY_FEEDBACK),
            quality_labels: counter(QUALITY_LABELS),
            quality_confusion: counter(QUALITY_CONFUSION),
            quality_score: f64_hist(QUALITY_SCORE, SCORE_BUCKETS),
            quality_log_loss: f64_counter(QUALITY_LOG_LOSS_SUM),
            quality_error_absolute: f64_counter(QUALITY_ERROR_ABSOLUTE),
            quality_error_squared: f64_counter(QUALITY_ERROR_SQUARED),
            quality_error_percentage: f64_counter(QUALITY_ERROR_PERCENTAGE),
            quality_label_sum: describe(
                meter.f64_up_down_counter(QUALITY_LABEL_SUM.name),
                QUALITY_LABEL_SUM,
            )
            .build(),
            quality_label_squares: f64_counter(QUALITY_LABEL_SQUARES),
            quality_label_delay: f64_hist(QUALITY_LABEL_DELAY, LABEL_DELAY_BUCKETS),
            quality_pending_removed: counter(QUALITY_PENDING_REMOVED),
            quality_early_labels_joined: counter(QUALITY_EARLY_LABELS_DONE),
            kafka_produced: counter(KAFKA_PRODUCED),
            kafka_outbox_dropped: counter(KAFKA_OUTBOX_DROPPED),
            kafka_consumed: counter(KAFKA_CONSUMED),
            kafka_malformed: counter(KAFKA_MALFORMED),
            quality_window_evicted: counter(QUALITY_WINDOW_EVICTED),
            outlier_score: f64_hist(OUTLIER_SCORE, OUTLIER_BUCKETS),
            outliers: counter(OUTLIERS),
            model_request_duration: f64_hist(MODEL_REQUEST_DURATION, DURATION_BUCKETS),
            model_requests: counter(MODEL_REQUESTS),
            alert_transitions: counter(ALERT_TRANSITIONS),
            alert_notifications: counter(ALERT_NOTIFICATIONS),
            alert_series_dropped: counter(ALERT_SERIES_DROPPED),
            shadow_requests: counter(SHADOW_REQUESTS),
            shadow_duration: f64_hist(SHADOW_DURATION, DURATION_BUCKETS),
            shadow_comparisons: counter(SHADOW_COMPARISONS),
            shadow_difference: f64_hist(SHADOW_DIFFERENCE, DIFFERENCE_BUCKETS),
            shadow_latency_difference: f64_hist(
                SHADOW_LATENCY_DIFFERENCE,
                LATENCY_DIFFERENCE_BUCKETS,
            ),
            shadow_output_length_ratio: f64_hist(SHADOW_OUTPUT_LENGTH_RATIO, DIFFERENCE_BUCKETS),
            environment_changes: counter(ENVIRONMENT_CHANGES),
        }))
    }
}

/// The pipeline. Dropping it does not flush: call [`Telemetry::shutdown`].
pub struct Telemetry {
    meter_provider: SdkMeterProvider,
    tracer_provider: Option<SdkTracerProvider>,
    registry: prometheus::Registry,
    pub meter: Meter,
    pub instruments: Instruments,
    pub tracer: Option<Tracer>,
    pub gauges: Arc<Gauges>,
    pub metrics_export: Option<Arc<ExportState>>,
    pub traces_export: Option<Arc<ExportState>>,
    pub logs_export: Option<Arc<ExportState>>,
    logger_provider: Option<opentelemetry_sdk::logs::SdkLoggerProvider>,
    pub resource: Resource,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// The resource: service identity, host and Kubernetes attributes.
pub fn resource(config: &Config) -> Resource {
    let host = sysinfo::System::host_name().unwrap_or_default();
    let mut attrs = vec![
        KeyValue::new(attr::SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
        KeyValue::new(attr::HOST_NAME, host),
        KeyValue::new("os.type", std::env::consts::OS),
        KeyValue::new(
            "host.arch",
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            },
        ),
    ];
    if let Some(kernel) = crate::resources::environment::kernel() {
        attrs.push(KeyValue::new("os.description", kernel));
    }
    for (k, v) in &config.telemetry.resource_attributes {
        if k != attr::SERVICE_NAME {
            attrs.push(KeyValue::new(k.clone(), v.clone()));
        }
    }
    Resource::builder_empty()
        .with_service_name(config.telemetry.service_name.clone())
        .with_attributes(attrs)
        .build()
}

/// Full OTLP URL for one signal: the signal-specific endpoint as given, or the
/// base endpoint plus the signal's path (HTTP), as the OTLP spec says.
fn signal_endpoint(
    base: &str,
    specific: &str,
    protocol: OtlpProtocol,
    path: &str,
) -> Option<String> {
    if !specific.is_empty() {
        return Some(specific.to_string());
    }
    if base.is_empty() {
        return None;
    }
    Some(match protocol {
        OtlpProtocol::HttpProtobuf => format!("{}{}", base.trim_end_matches('/'), path),
        OtlpProtocol::Grpc => base.to_string(),
    })
}

/// Builds one OTLP exporter (`MetricExporter`, `SpanExporter`, `LogExporter`)
/// for the configured transport. The gRPC channel is created inside `runtime`.
macro_rules! otlp_exporter {
    ($kind:ident, $signal:literal, $otlp:expr, $url:expr, $runtime:expr, $state:expr) => {{
        let _enter = $runtime.enter();
        let b = opentelemetry_otlp::$kind::builder();
        match $otlp.protocol {
            OtlpProtocol::HttpProtobuf => b
                .with_http()
                .with_http_client(
                    tls::OtlpHttpClient::new($otlp, $state.transport_cause.clone()).map_err(
                        |message| TelemetryError::Exporter {
                            signal: $signal,
                            message,
                        },
                    )?,
                )
                .with_endpoint($url.clone())
                .with_timeout($otlp.timeout)
                .with_headers(headers($otlp))
                .build(),
            // TLS through modelwatch's own rustls settings (CA, client
            // certificate that follows its files, server name), not tonic's.
            OtlpProtocol::Grpc if $url.starts_with("https://") => b
                .with_tonic()
                .with_channel(tls::grpc_channel($otlp, &$url).map_err(|message| {
                    TelemetryError::Exporter {
                        signal: $signal,
                        message,
                    }
                })?)
                .with_timeout($otlp.timeout)
                .with_metadata(metadata($otlp))
                .build(),
            OtlpProtocol::Grpc => b
                .with_tonic()
                .with_endpoint($url.clone())
                .with_timeout($otlp.timeout)
                .with_metadata(metadata($otlp))
                .build(),
        }
        .map_err(|e| TelemetryError::Exporter {
            signal: $signal,
            message: e.to_string(),
        })
    }};
}

impl Telemetry {
    /// Builds the pipeline. Call it outside async code: the HTTP exporter's
    /// blocking client owns its own thread. `runtime` hosts the gRPC channel.
    pub fn new(
        config: &Config,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Telemetry, TelemetryError> {
        let resource = resource(config);
        let otlp = &config.telemetry.otlp;
        let backoff = Backoff {
            base: otlp.metrics_interval,
            max: otlp.max_backoff.max(otlp.metrics_interval),
        };

        // Spans and logs are batched every 2 s: their backoff starts at 5 s.
        let batch_backoff = Backoff {
            base: Duration::from_secs(5),
            max: backoff.max,
        };

        let registry = prometheus::Registry::new();
        let prometheus_reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(prometheus_reader);

        let mut metrics_export = None;
        if let Some(url) = signal_endpoint(
            &otlp.endpoint,
            &otlp.metrics_endpoint,
            otlp.protocol,
            "/v1/metrics",
        ) {
            let state = Arc::new(ExportState::default());
            let exporter = otlp_exporter!(MetricExporter, "metrics", otlp, &url, runtime, state)?;
            let guarded = GuardedMetricExporter {
                inner: exporter,
                state: state.clone(),
                backoff,
            };
            builder = builder.with_reader(
                PeriodicReader::builder(guarded)
                    .with_interval(otlp.metrics_interval)
                    .build(),
            );
            metrics_export = Some(state);
            tracing::info!(%url, protocol = ?otlp.protocol, "OTLP metrics export on");
        }
        let meter_provider = builder.build();

        let mut tracer_provider = None;
        let mut traces_export = None;
        if otlp.traces {
            if let Some(url) = signal_endpoint(
                &otlp.endpoint,
                &otlp.traces_endpoint,
                otlp.protocol,
                "/v1/traces",
            ) {
                let state = Arc::new(ExportState::default());
                let exporter = otlp_exporter!(SpanExporter, "traces", otlp, &url, runtime, state)?;
                let capacity = otlp.span_queue_capacity;
                let bound = QueueBound::new(capacity, state.clone());
                let guarded = GuardedSpanExporter {
                    inner: exporter,
                    backoff: batch_backoff,
                    bound: bound.clone(),
                };
                let batch = BatchSpanProcessor::builder(guarded)
                    .with_batch_config(
                        BatchConfigBuilder::default()
                            .with_max_queue_size(capacity + 1)
                            .with_max_export_batch_size(512.min(capacity))
                            .with_scheduled_delay(Duration::from_secs(2))
                            .build(),
                    )
                    .build();
                let gate = SpanQueueGate {
                    inner: batch,
                    bound,
                };
                let provider = SdkTracerProvider::builder()
                    .with_resource(resource.clone())
                    .with_span_processor(gate)
                    .build();
                tracer_provider = Some(provider);
                traces_export = Some(state);
                tracing::info!(%url, protocol = ?otlp.protocol, "OTLP trace export on");
            }
        }
        let tracer = tracer_provider.as_ref().map(|p| p.tracer("modelwatch"));

        let mut logger_provider = None;
        let mut logs_export = None;
        let mut ecs = None;
        // Logs carry payloads and events (anomalies, alert transitions, drift).
        let wants_logs = config.payload_logs.enabled
            || config.anomaly.enabled
            || config.drift.enabled
            || config.resources.enabled
            || !config.alerts.rules.is_empty();
        if wants_logs {
            let mut builder = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
                .with_resource(resource.clone());
            let mut any = false;
            if let Some(url) = signal_endpoint(&otlp.endpoint, "", otlp.protocol, "/v1/logs") {
                let state = Arc::new(ExportState::default());
                let exporter = otlp_exporter!(LogExporter, "logs", otlp, &url, runtime, state)?;
                let capacity = config.payload_logs.queue_capacity;
                let bound = QueueBound::new(capacity, state.clone());
                let batch =
                    opentelemetry_sdk::logs::BatchLogProcessor::builder(GuardedLogExporter {
                        inner: exporter,
                        backoff: batch_backoff,
                        bound: bound.clone(),
                    })
                    .with_batch_config(
                        opentelemetry_sdk::logs::BatchConfigBuilder::default()
                            .with_max_queue_size(capacity + 1)
                            .with_max_export_batch_size(512.min(capacity))
                            .with_scheduled_delay(Duration::from_secs(2))
                            .build(),
                    )
                    .build();
                builder = builder.with_log_processor(LogQueueGate {
                    inner: batch,
                    bound,
                });
                logs_export = Some(state);
                any = true;
                tracing::info!(%url, protocol = ?otlp.protocol, "OTLP logs (payloads and events) on");
            }
            if config.ecs_logs.enabled {
                let processor =
                    ecs::EcsProcessor::new(&config.ecs_logs).map_err(TelemetryError::Ecs)?;
                ecs = Some(processor.stats.clone());
                builder = builder.with_log_processor(processor);
                any = true;
                tracing::info!(output = %config.ecs_logs.output, "ECS JSON lines (payloads and events) on");
            }
            if any {
                logger_provider = Some(builder.build());
            }
        }

        let meter = meter_provider.meter("modelwatch");
        let instruments = Instruments::new(&meter);
        // Drop counters exist at 0 from the start, so that rate() panels and
        // alerts over them show 0, not "no data", until the first drop.
        for reason in [
            crate::sample::drop_reason::QUEUE_FULL,
            crate::sample::drop_reason::SHUTDOWN,
        ] {
            instruments
                .samples_dropped
                .add(0, &[KeyValue::new(attr::REASON, reason)]);
        }
        // Upstream errors too: a healthy model server shows 0 errors of each
        // kind, not "no data".
        for error in crate::proxy::error::ProxyError::ALL {
            instruments
                .upstream_errors
                .add(0, &[KeyValue::new(attr::ERROR_TYPE, error.kind())]);
        }
        instruments.upstream_retries.add(0, &[]);
        for outcome in crate::cloudevents::EventOutcome::ALL {
            instruments
                .cloudevents_received
                .add(0, &[KeyValue::new(attr::CE_OUTCOME, outcome.as_str())]);
        }
        for endpoint in [
            "feedback",
            "records",
            "reference_reset",
            "gate",
            "reload",
            "cloudevents",
        ] {
            instruments
                .admin_auth_failures
                .add(0, &[KeyValue::new(attr::ENDPOINT, endpoint)]);
        }
        let gauges = Arc::new(Gauges::default());
        register_observables(
            &meter,
            &gauges,
            metrics_export.clone(),
            traces_export.clone(),
            logs_export.clone(),
        );
        if let Some(st) = ecs.clone() {
            let written = st.clone();
            u64_counter(&meter, names::ECS_WRITTEN, move |o| {
                o.observe(written.written.load(Ordering::Relaxed), &[])
            });
            u64_counter(&meter, names::ECS_DROPPED, move |o| {
                o.observe(st.dropped.load(Ordering::Relaxed), &[])
            });
        }

        Ok(Telemetry {
            meter_provider,
            tracer_provider,
            registry,
            meter,
            instruments,
            tracer,
            gauges,
            metrics_export,
            traces_export,
            logs_export,
            logger_provider,
            resource,
        })
    }

    /// The registry `/metrics` reads: alert rules and the gate read it too.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render_prometheus(&self) -> String {
        use prometheus::Encoder;
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "cannot encode the Prometheus exposition");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The logger for payload records and events, when OTLP logs are on.
    pub fn logger(&self) -> Option<opentelemetry_sdk::logs::SdkLogger> {
        use opentelemetry::logs::LoggerProvider as _;
        self.logger_provider
            .as_ref()
            .map(|p| p.logger("modelwatch"))
    }

    /// Flushes and stops the exporters (blocking; call outside async code or in
    /// `spawn_blocking`).
    pub fn shutdown(&self) {
        if let Some(lp) = &self.logger_provider {
            if let Err(e) = lp.shutdown() {
                tracing::warn!(error = %e, "log exporter shutdown");
            }
        }
        if let Some(tp) = &self.tracer_provider {
            if let Err(e) = tp.shutdown() {
                tracing::warn!(error = %e, "trace exporter shutdown");
            }
        }
        if let Err(e) = self.meter_provider.shutdown() {
            tracing::debug!(error = %e, "meter provider shutdown");
        }
    }
}

fn headers(otlp: &crate::config::OtlpConfig) -> HashMap<String, String> {
    otlp.headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn metadata(otlp: &crate::config::OtlpConfig) -> tonic::metadata::MetadataMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in &otlp.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            map.insert(k, v);
        }
    }
    tonic::metadata::MetadataMap::from_headers(map)
}

fn register_observables(
    meter: &Meter,
    gauges: &Arc<Gauges>,
    metrics_export: Option<Arc<ExportState>>,
    traces_export: Option<Arc<ExportState>>,
    logs_export: Option<Arc<ExportState>>,
) {
    use names::*;
    let g = gauges.clone();
    u64_gauge(meter, SAMPLE_QUEUE_DEPTH, move |o| {
        o.observe(g.sample_queue_depth.load(Ordering::Relaxed), &[])
    });
    let g = gauges.clone();
    u64_gauge(meter, SAMPLE_QUEUE_CAPACITY, move |o| {
        o.observe(g.sample_queue_capacity.load(Ordering::Relaxed), &[])
    });
    let g = gauges.clone();
    u64_gauge(meter, UPSTREAM_UP, move |o| {
        o.observe(g.upstream_up.load(Ordering::Relaxed) as u64, &[])
    });

    let logs_dropped = logs_export.clone();
    u64_counter(meter, LOGS_DROPPED, move |o| {
        if let Some(st) = &logs_dropped {
            o.observe(st.dropped.load(Ordering::Relaxed), &[]);
        }
    });
    let signals: Vec<(&'static str, Arc<ExportState>)> = [
        ("metrics", metrics_export),
        ("traces", traces_export),
        ("logs", logs_export),
    ]
    .into_iter()
    .filter_map(|(s, st)| st.map(|st| (s, st)))
    .collect();
    let failures = signals.clone();
    u64_counter(meter, EXPORT_FAILURES, move |o| {
        for (signal, st) in &failures {
            o.observe(
                st.failures.load(Ordering::Relaxed),
                &[KeyValue::new(attr::SIGNAL, *signal)],
            );
        }
    });
    let dropped = signals
        .iter()
        .find(|(s, _)| *s == "traces")
        .map(|(_, st)| st.clone());
    u64_counter(meter, SPANS_DROPPED, move |o| {
        if let Some(st) = &dropped {
            o.observe(st.dropped.load(Ordering::Relaxed), &[]);
        }
    });
    u64_counter(meter, EXPORT_SKIPPED, move |o| {
        for (signal, st) in &signals {
            o.observe(
                st.skipped.load(Ordering::Relaxed),
                &[KeyValue::new(attr::SIGNAL, *signal)],
            );
        }
    });
}

/// Registers an observable f64 gauge described by `m`, read by `f` at each collection.
pub fn f64_gauge<F>(meter: &Meter, m: MetricName, f: F)
where
    F: Fn(&dyn opentelemetry::metrics::AsyncInstrument<f64>) + Send + Sync + 'static,
{
    meter
        .f64_observable_gauge(m.name)
        .with_unit(m.unit)
        .with_description(m.description)
        .with_callback(f)
        .build();
}

/// Registers an observable u64 gauge described by `m`.
pub fn u64_gauge<F>(meter: &Meter, m: MetricName, f: F)
where
    F: Fn(&dyn opentelemetry::metrics::AsyncInstrument<u64>) + Send + Sync + 'static,
{
    meter
        .u64_observable_gauge(m.name)
        .with_unit(m.unit)
        .with_description(m.description)
        .with_callback(f)
        .build();
}

/// Registers an observable (cumulative) u64 counter described by `m`.
pub fn u64_counter<F>(meter: &Meter, m: MetricName, f: F)
where
    F: Fn(&dyn opentelemetry::metrics::AsyncInstrument<u64>) + Send + Sync + 'static,
{
    meter
        .u64_observable_counter(m.name)
        .with_unit(m.unit)
        .with_description(m.description)
        .with_callback(f)
        .build();
}

/// Registers an observable (cumulative) f64 counter described by `m`.
pub fn f64_counter<F>(meter: &Meter, m: MetricName, f: F)
where
    F: Fn(&dyn opentelemetry::metrics::AsyncInstrument<f64>) + Send + Sync + 'static,
{
    meter
        .f64_observable_counter(m.name)
        .with_unit(m.unit)
        .with_description(m.description)
        .with_callback(f)
        .build();
}

/// The Prometheus name of an OpenTelemetry metric, as the exporter translates it.
pub fn prometheus_name(m: &names::MetricName) -> String {
    let mut name = m.name.replace('.', "_");
    let unit = match m.unit {
        "s" => "_seconds",
        "By" => "_bytes",
        "1" => "_ratio",
        "W" => "_watts",
        "Cel" => "_celsius",
        "Hz" => "_hertz",
        _ => "",
    };
    name.push_str(unit);
    if m.kind == names::Kind::Counter {
        name.push_str("_total");
    }
    name
}

#[cfg(test)]
mod tests;
