//! Every metric name, unit and attribute key modelwatch registers. No metric
//! name is written as a string literal anywhere else; docs/metrics.md lists
//! the same set and a test keeps the two equal.

/// One registered metric: its OpenTelemetry name, unit, kind and description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricName {
    pub name: &'static str,
    pub unit: &'static str,
    pub kind: Kind,
    pub description: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    UpDownCounter,
    Histogram,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::UpDownCounter => "updowncounter",
            Kind::Histogram => "histogram",
            Kind::Gauge => "gauge",
        }
    }
}

macro_rules! metric {
    ($id:ident, $name:literal, $unit:literal, $kind:ident, $desc:literal) => {
        pub const $id: MetricName = MetricName {
            name: $name,
            unit: $unit,
            kind: Kind::$kind,
            description: $desc,
        };
    };
}

// OpenTelemetry HTTP semantic conventions (stable).
metric!(
    HTTP_SERVER_REQUEST_DURATION,
    "http.server.request.duration",
    "s",
    Histogram,
    "Duration of proxied requests, from the first request byte to the last response byte."
);
metric!(
    HTTP_SERVER_ACTIVE_REQUESTS,
    "http.server.active_requests",
    "{request}",
    UpDownCounter,
    "Requests in flight through the proxy."
);
metric!(
    HTTP_SERVER_REQUEST_BODY_SIZE,
    "http.server.request.body.size",
    "By",
    Histogram,
    "Size of request bodies as forwarded."
);
metric!(
    HTTP_SERVER_RESPONSE_BODY_SIZE,
    "http.server.response.body.size",
    "By",
    Histogram,
    "Size of response bodies as forwarded."
);

// modelwatch self-metrics.
metric!(
    SAMPLES_TAKEN,
    "modelwatch.samples.taken",
    "{sample}",
    Counter,
    "Requests chosen for sampling whose copy reached the analysis queue."
);
metric!(
    SAMPLES_DROPPED,
    "modelwatch.samples.dropped",
    "{sample}",
    Counter,
    "Samples lost before analysis, by reason (queue_full, shutdown)."
);
metric!(
    SAMPLES_ANALYZED,
    "modelwatch.samples.analyzed",
    "{sample}",
    Counter,
    "Samples the analysis task has processed."
);
metric!(
    SAMPLE_QUEUE_DEPTH,
    "modelwatch.sample.queue.depth",
    "{sample}",
    Gauge,
    "Samples waiting in the analysis queue."
);
metric!(
    SAMPLE_QUEUE_CAPACITY,
    "modelwatch.sample.queue.capacity",
    "{sample}",
    Gauge,
    "Bound of the analysis queue (sampling.queue_capacity)."
);
metric!(
    SAMPLE_BODIES_TRUNCATED,
    "modelwatch.sample.bodies.truncated",
    "{body}",
    Counter,
    "Sampled bodies longer than sampling.max_body_bytes, by direction (request, response)."
);
metric!(SAMPLE_TIME_TO_FIRST_BYTE, "modelwatch.sample.time_to_first_byte", "s", Histogram,
    "Sampled requests: time from the request's arrival to the model server's first response body byte.");
metric!(
    ADMIN_AUTH_FAILURES,
    "modelwatch.admin.auth.failures",
    "{request}",
    Counter,
    "Admin requests refused for a missing or wrong token (admin.token_file, quality.feedback_token), by endpoint."
);
metric!(
    CLOUDEVENTS_RECEIVED,
    "modelwatch.cloudevents.received",
    "{event}",
    Counter,
    "Inference events received on POST /v1/cloudevents, by outcome (joined, pending, duplicate, expired, dropped_full, invalid)."
);
metric!(
    CONFIG_RELOADS,
    "modelwatch.config.reloads",
    "{reload}",
    Counter,
    "Live config reloads (SIGHUP, POST /-/reload, a changed file), by result: success (applied or unchanged) or failure (refused; the running config stays)."
);
metric!(
    CONFIG_LAST_RELOAD_SUCCESSFUL,
    "modelwatch.config.last_reload_successful",
    "",
    Gauge,
    "1 when the last reload (or the start) loaded its config, 0 when it was refused."
);
metric!(
    CONFIG_HASH,
    "modelwatch.config.hash",
    "",
    Gauge,
    "Hash of the config in force (the first 48 bits of the SHA-256 of its YAML): replicas with the same value run the same config."
);
metric!(
    CONFIG_RESTART_REQUIRED,
    "modelwatch.config.restart_required",
    "{setting}",
    Gauge,
    "Settings changed in the file that a reload cannot apply (listeners, upstream, stores, bounds, exporters): they wait for a restart."
);
metric!(
    UPSTREAM_RETRIES,
    "modelwatch.upstream.retries",
    "{request}",
    Counter,
    "Requests sent a second time because the model server closed the connection without answering (a kept-alive connection it had just closed)."
);
metric!(UPSTREAM_ERRORS, "modelwatch.upstream.errors", "{error}", Counter,
    "Requests the model server could not answer, by error.type (connect_refused, connect_timeout, response_timeout, reset, protocol).");
metric!(
    UPSTREAM_UP,
    "modelwatch.upstream.up",
    "",
    Gauge,
    "1 when the last readiness probe of the model server succeeded, else 0."
);
metric!(
    EXPORT_FAILURES,
    "modelwatch.export.failures",
    "{export}",
    Counter,
    "OTLP export attempts that failed, by signal (metrics, traces)."
);
metric!(EXPORT_SKIPPED, "modelwatch.export.skipped", "{export}", Counter,
    "OTLP exports not attempted while backing off after failures, by signal; for traces the spans of a skipped batch are lost.");

metric!(SPANS_DROPPED, "modelwatch.export.spans.dropped", "{span}", Counter,
    "Finished spans dropped because telemetry.otlp.span_queue_capacity spans were already waiting for export.");

// OpenTelemetry GenAI semantic conventions: every LLM request, whatever the sample rate.
metric!(
    GEN_AI_SERVER_REQUEST_DURATION,
    "gen_ai.server.request.duration",
    "s",
    Histogram,
    "LLM requests: from arrival to the last response byte."
);
metric!(
    GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
    "gen_ai.server.time_to_first_token",
    "s",
    Histogram,
    "Streamed LLM requests: from arrival to the first content chunk, by the proxy's clock."
);
metric!(
    GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
    "gen_ai.server.time_per_output_token",
    "s",
    Histogram,
    "Streamed LLM requests: (last content chunk - first content chunk) / (output tokens - 1)."
);
metric!(GEN_AI_CLIENT_TOKEN_USAGE, "gen_ai.client.token.usage", "{token}", Histogram,
    "Tokens per LLM request by gen_ai.token.type (input, output), from the server's usage; estimated from the stream when it gives none.");

// modelwatch LLM figures.
metric!(LLM_REQUESTS, "modelwatch.llm.requests", "{request}", Counter,
    "LLM requests by operation, streaming (true/false) and outcome (complete, aborted = cut off by the client, error).");
metric!(LLM_FINISH_REASONS, "modelwatch.llm.finish_reasons", "{choice}", Counter,
    "Choices by finish reason (stop, length = truncated, tool_calls, function_call, content_filter, other).");
metric!(
    LLM_EMPTY_RESPONSES,
    "modelwatch.llm.empty_responses",
    "{request}",
    Counter,
    "Completed LLM requests that produced no content and no tool call."
);
metric!(
    LLM_OUTPUT_CHARACTERS,
    "modelwatch.llm.output.characters",
    "{character}",
    Histogram,
    "Characters of generated text per LLM request."
);

// Decoding of sampled exchanges.
metric!(INFERENCES, "modelwatch.inferences", "{record}", Counter,
    "Inference records decoded from sampled exchanges (one per batch row), by protocol and operation.");
metric!(
    DECODE_ERRORS,
    "modelwatch.decode.errors",
    "{sample}",
    Counter,
    "Sampled exchanges that could not be decoded, by protocol and a bounded reason."
);

metric!(LOGS_DROPPED, "modelwatch.export.logs.dropped", "{record}", Counter,
    "Payload log records dropped because payload_logs.queue_capacity records were already waiting for export.");
metric!(
    ECS_WRITTEN,
    "modelwatch.ecs.records.written",
    "{record}",
    Counter,
    "Payload records and events written as ECS JSON lines (ecs_logs)."
);
metric!(
    ECS_DROPPED,
    "modelwatch.ecs.records.dropped",
    "{record}",
    Counter,
    "ECS lines dropped because ecs_logs.queue_capacity lines were already waiting to be written."
);

// Model quality (labels joined to predictions). Counters and histograms add
// up across replicas; gauges carry the windowed figures of one pod.
metric!(
    QUALITY_PREDICTIONS,
    "modelwatch.quality.predictions",
    "{prediction}",
    Counter,
    "Predictions stored to wait for their labels, by model and version."
);
metric!(QUALITY_PREDICTIONS_DROPPED, "modelwatch.quality.predictions.dropped", "{prediction}", Counter,
    "Predictions not stored: queue_full, model_limit (quality.max_models reached), no_join_key (join_key response-id and the response has no id), no_prediction, duplicate (the same join key again: the first is kept).");
metric!(
    QUALITY_FEEDBACK,
    "modelwatch.quality.feedback.items",
    "{label}",
    Counter,
    "Labels received by the feedback API, by result: joined, waiting (its prediction has not arrived yet), unmatched, duplicate, invalid."
);
metric!(
    QUALITY_LABELS,
    "modelwatch.quality.labels",
    "{label}",
    Counter,
    "Labels joined to a prediction, by model and version."
);
metric!(
    QUALITY_CONFUSION,
    "modelwatch.quality.confusion",
    "{row}",
    Counter,
    "Joined classification rows by actual and predicted class: the confusion matrix, cell by cell."
);
metric!(QUALITY_SCORE, "modelwatch.quality.score", "", Histogram,
    "Joined rows' score for each class, split by whether that class was the actual one (actual=true/false): ROC AUC can be computed fleet-wide from the buckets.");
metric!(
    QUALITY_LOG_LOSS_SUM,
    "modelwatch.quality.log_loss.sum",
    "",
    Counter,
    "Sum of the log loss of joined classification rows with scores."
);
metric!(
    QUALITY_ERROR_ABSOLUTE,
    "modelwatch.quality.error.absolute",
    "",
    Counter,
    "Regression: sum of |label - prediction| of joined rows."
);
metric!(
    QUALITY_ERROR_SQUARED,
    "modelwatch.quality.error.squared",
    "",
    Counter,
    "Regression: sum of (label - prediction)^2 of joined rows."
);
metric!(
    QUALITY_ERROR_PERCENTAGE,
    "modelwatch.quality.error.absolute_percentage",
    "",
    Counter,
    "Regression: sum of |label - prediction| / max(|label|, eps) of joined rows."
);
metric!(
    QUALITY_LABEL_SUM,
    "modelwatch.quality.label.sum",
    "",
    UpDownCounter,
    "Regression: sum of the labels of joined rows (with label.squares, R^2 fleet-wide)."
);
metric!(
    QUALITY_LABEL_SQUARES,
    "modelwatch.quality.label.squares",
    "",
    Counter,
    "Regression: sum of the squared labels of joined rows."
);
metric!(
    QUALITY_LABEL_DELAY,
    "modelwatch.quality.label.delay",
    "s",
    Histogram,
    "Time from a prediction to its label (the label's timestamp, else its arrival)."
);
metric!(QUALITY_PENDING_REMOVED, "modelwatch.quality.pending.removed", "{prediction}", Counter,
    "Predictions removed before a label arrived: expired (quality.label_ttl) or evicted (quality.max_predictions).");
metric!(QUALITY_EARLY_LABELS_DONE, "modelwatch.quality.early_labels.done", "{label}", Counter,
    "Labels that came before their prediction and stopped waiting, by result: joined (the prediction arrived), invalid (it did not fit the prediction: wrong type, other model), expired (quality.early_label_ttl).");
metric!(
    QUALITY_EARLY_LABELS,
    "modelwatch.quality.early_labels",
    "{label}",
    Gauge,
    "Labels waiting for their prediction (quality.early_label_ttl, at most quality.max_early_labels)."
);
// The Kafka backend (quality.backend: kafka).
metric!(KAFKA_PRODUCED, "modelwatch.kafka.produced", "{record}", Counter,
    "Prediction records Kafka acknowledged (result=delivered) or did not take in quality.kafka.delivery_timeout (result=failed: they wait in the outbox), by topic.");
metric!(
    KAFKA_OUTBOX_RECORDS,
    "modelwatch.kafka.outbox.records",
    "{record}",
    Gauge,
    "Prediction records waiting in the sidecar's outbox for Kafka."
);
metric!(KAFKA_OUTBOX_DROPPED, "modelwatch.kafka.outbox.dropped", "{record}", Counter,
    "Prediction records dropped because the outbox held quality.kafka.outbox_max_records (reason=outbox_full).");
metric!(
    KAFKA_CONSUMED,
    "modelwatch.kafka.consumed",
    "{record}",
    Counter,
    "Records the joiner consumed, by topic."
);
metric!(
    KAFKA_MALFORMED,
    "modelwatch.kafka.records.malformed",
    "{record}",
    Counter,
    "Records the joiner skipped, by topic and reason: not_json, unknown_version, bad_fields."
);
metric!(
    JOINER_PARTITIONS,
    "modelwatch.joiner.partitions",
    "{partition}",
    Gauge,
    "Partitions assigned to this joiner (state=owned), and partitions whose figures its quality gauges include (state=fleet)."
);
metric!(
    QUALITY_WINDOW_EVICTED,
    "modelwatch.quality.window.evicted",
    "{prediction}",
    Counter,
    "Predictions that left the sliding windows early because quality.max_window_rows were held."
);
metric!(
    QUALITY_PENDING,
    "modelwatch.quality.pending",
    "{prediction}",
    Gauge,
    "Predictions waiting for a label."
);
metric!(
    QUALITY_STORE_SIZE,
    "modelwatch.quality.store.size",
    "By",
    Gauge,
    "Size of the quality store file."
);
metric!(
    QUALITY_SAMPLES,
    "modelwatch.quality.samples",
    "{row}",
    Gauge,
    "Labelled rows in the window. Below quality.min_samples, the window reports no figures."
);
metric!(
    QUALITY_WINDOW_PREDICTIONS,
    "modelwatch.quality.window.predictions",
    "{prediction}",
    Gauge,
    "Predictions made in the window, labelled or not."
);
metric!(
    QUALITY_ACCURACY,
    "modelwatch.quality.accuracy",
    "1",
    Gauge,
    "Accuracy in the window."
);
metric!(QUALITY_PRECISION, "modelwatch.quality.precision", "1", Gauge,
    "Precision in the window: per class (average=none, class=...), macro, weighted, or binary (class = the positive class).");
metric!(
    QUALITY_RECALL,
    "modelwatch.quality.recall",
    "1",
    Gauge,
    "Recall in the window, as precision."
);
metric!(
    QUALITY_F1,
    "modelwatch.quality.f1",
    "1",
    Gauge,
    "F1 in the window, as precision."
);
metric!(
    QUALITY_ROC_AUC,
    "modelwatch.quality.roc_auc",
    "1",
    Gauge,
    "ROC AUC in the window: binary (the positive class's score) or one-vs-rest macro."
);
metric!(
    QUALITY_LOG_LOSS,
    "modelwatch.quality.log_loss",
    "",
    Gauge,
    "Mean log loss in the window."
);
metric!(
    QUALITY_MAE,
    "modelwatch.quality.mae",
    "",
    Gauge,
    "Regression: mean absolute error in the window."
);
metric!(
    QUALITY_RMSE,
    "modelwatch.quality.rmse",
    "",
    Gauge,
    "Regression: root mean squared error in the window."
);
metric!(
    QUALITY_MAPE,
    "modelwatch.quality.mape",
    "",
    Gauge,
    "Regression: mean absolute percentage error (a fraction) in the window."
);
metric!(
    QUALITY_R2,
    "modelwatch.quality.r2",
    "",
    Gauge,
    "Regression: coefficient of determination in the window."
);
metric!(QUALITY_ESTIMATED_ACCURACY, "modelwatch.quality.estimated_accuracy", "1", Gauge,
    "Accuracy estimated from calibrated scores (CBPE) over every prediction in the window, labelled or not.");
metric!(
    QUALITY_ESTIMATED_PRECISION,
    "modelwatch.quality.estimated_precision",
    "1",
    Gauge,
    "Estimated precision (macro, or binary for the positive class)."
);
metric!(
    QUALITY_ESTIMATED_RECALL,
    "modelwatch.quality.estimated_recall",
    "1",
    Gauge,
    "Estimated recall (macro, or binary)."
);
metric!(
    QUALITY_ESTIMATED_F1,
    "modelwatch.quality.estimated_f1",
    "1",
    Gauge,
    "Estimated F1 (macro, or binary)."
);
metric!(
    QUALITY_ESTIMATION_GAP,
    "modelwatch.quality.estimation_gap",
    "1",
    Gauge,
    "Estimated minus realized accuracy over the window's labelled rows."
);

// Drift and data quality (per model and feature; features bounded by drift.max_features).
metric!(DRIFT_SCORE, "modelwatch.drift.score", "", Gauge,
    "The feature's drift statistic over its current window: a p-value (ks, chi2) or a distance (wasserstein, psi, jensenshannon, hellinger).");
metric!(
    DRIFT_STATISTIC,
    "modelwatch.drift.statistic",
    "",
    Gauge,
    "The test statistic behind the score, for ranking features that all drift: the KS distance D (largest gap between the ECDFs), the chi-squared statistic; for distance methods, the distance."
);
metric!(
    DRIFT_THRESHOLD,
    "modelwatch.drift.threshold",
    "",
    Gauge,
    "The threshold the statistic is compared with."
);
metric!(
    DRIFT_DETECTED,
    "modelwatch.drift.detected",
    "",
    Gauge,
    "1 when the feature drifted (p below the threshold, or distance at or above it)."
);
metric!(
    DRIFT_SHARE,
    "modelwatch.drift.share",
    "1",
    Gauge,
    "Share of the model's tested features that drifted (p-value tests corrected across features)."
);
metric!(
    DRIFT_DATASET,
    "modelwatch.drift.dataset",
    "",
    Gauge,
    "1 when the share of drifted features reaches drift.dataset_share."
);
metric!(DRIFT_BIN, "modelwatch.drift.bin", "{value}", Counter,
    "Values seen per reference bin (quantile bins of numeric features, categories then other): a fleet-wide PSI in PromQL.");
metric!(
    DRIFT_REFERENCE_SHARE,
    "modelwatch.drift.reference.share",
    "1",
    Gauge,
    "The reference's share of each bin (the other side of a fleet-wide PSI)."
);
metric!(DATA_QUALITY_ISSUES, "modelwatch.data_quality.issues", "{value}", Counter,
    "Values with a data-quality issue: missing, non_finite, wrong_type, out_of_range, new_category, not_in_profile.");
metric!(
    DATA_QUALITY_CONSTANT,
    "modelwatch.data_quality.constant",
    "",
    Gauge,
    "1 when a tested feature's whole current window holds one value while its reference varied."
);
metric!(
    DRIFT_FEATURES_DROPPED,
    "modelwatch.drift.features.dropped",
    "{feature}",
    Counter,
    "Feature values not tracked because drift.max_features or drift.max_models were reached."
);

// Anomalies in modelwatch's own series, and per-request outliers.
metric!(ANOMALY_SCORE, "modelwatch.anomaly.score", "", Gauge,
    "The last point's score: a z-score from the EWMA detector or a robust z-score from the median/MAD detector.");
metric!(ANOMALY_VALUE, "modelwatch.anomaly.value", "", Gauge,
    "The last point of each scored series (latency_p95 in seconds, error_rate, request_rate and output_tokens_rate per second, drift_share, accuracy).");
metric!(
    ANOMALY_EVENTS,
    "modelwatch.anomaly.events",
    "{event}",
    Counter,
    "Points both detectors scored at or above anomaly.sensitivity."
);
metric!(OUTLIER_SCORE, "modelwatch.anomaly.outlier_score", "", Histogram,
    "Per request with tabular inputs: the largest robust z-distance of a feature from its reference median (|x - median| / (1.4826 MAD)).");
metric!(
    OUTLIERS,
    "modelwatch.anomaly.outliers",
    "{row}",
    Counter,
    "Rows whose outlier score reached anomaly.outlier_threshold."
);

// Per model version (for comparing versions and canary gates).
metric!(MODEL_REQUEST_DURATION, "modelwatch.model.request.duration", "s", Histogram,
    "Sampled model requests by model and model_version: time from arrival to the last response byte.");
metric!(MODEL_REQUESTS, "modelwatch.model.requests", "{request}", Counter,
    "Sampled model requests by model, model_version and result (ok, or error for a 5xx answer or an unreachable model server).");

// Diagnosis.
metric!(
    DIAGNOSIS_CAUSE,
    "modelwatch.diagnosis.cause",
    "{score}",
    Gauge,
    "The diagnosis's score of each cause (data, model, environment) per model version, 0 to 1."
);

// Alerts.
metric!(
    ALERTS,
    "modelwatch.alerts",
    "{alert}",
    Gauge,
    "Alert series by alertname, severity and alertstate (pending or firing)."
);
metric!(
    ALERT_TRANSITIONS,
    "modelwatch.alert.transitions",
    "{transition}",
    Counter,
    "Alert state changes by alertname and alertstate (pending, firing, resolved)."
);
metric!(ALERT_NOTIFICATIONS, "modelwatch.alert.notifications", "{notification}", Counter,
    "Notification calls by sink (alertmanager, webhook:NAME, action:NAME) and result (sent, failed, dropped).");
metric!(
    ALERT_SERIES_DROPPED,
    "modelwatch.alert.series_dropped",
    "{series}",
    Counter,
    "Series a rule did not follow because it already followed alerts.max_series, by alertname."
);

// Shadow traffic.
metric!(SHADOW_REQUESTS, "modelwatch.shadow.requests", "{request}", Counter,
    "Requests mirrored to the shadow upstream, by result (ok, error, timeout, skipped_busy, skipped_body).");
metric!(
    SHADOW_DURATION,
    "modelwatch.shadow.request.duration",
    "s",
    Histogram,
    "Shadow upstream: time from sending the mirrored request to its last response byte."
);
metric!(SHADOW_COMPARISONS, "modelwatch.shadow.comparisons", "{comparison}", Counter,
    "Primary and shadow outputs compared, by model and agreement (true or false; classifiers and LLM finish reasons).");
metric!(
    SHADOW_DIFFERENCE,
    "modelwatch.shadow.difference",
    "1",
    Histogram,
    "Absolute difference between primary and shadow numeric predictions (regressors), by model."
);
metric!(
    SHADOW_LATENCY_DIFFERENCE,
    "modelwatch.shadow.latency_difference",
    "s",
    Histogram,
    "Shadow duration minus primary duration of the same request, by model."
);
metric!(
    SHADOW_OUTPUT_LENGTH_RATIO,
    "modelwatch.shadow.output_length_ratio",
    "1",
    Histogram,
    "LLMs: shadow output characters divided by primary output characters, by model."
);

// Host, processes and the container (resources sampler).
metric!(
    SYSTEM_CPU_UTILIZATION,
    "system.cpu.utilization",
    "1",
    Gauge,
    "CPU busy share of the node as the pod sees it (all logical CPUs), between two samples."
);
metric!(
    SYSTEM_CPU_LOGICAL_COUNT,
    "system.cpu.logical",
    "{cpu}",
    Gauge,
    "Logical CPUs of the node."
);
metric!(
    SYSTEM_MEMORY_USAGE,
    "system.memory.usage",
    "By",
    Gauge,
    "Memory of the node by system.memory.state (used, free)."
);
metric!(PROCESS_CPU_TIME, "process.cpu.time", "s", Counter,
    "CPU time of a process since it started, by modelwatch.process.role (modelwatch, model_server) and process.executable.name.");
metric!(
    PROCESS_MEMORY_USAGE,
    "process.memory.usage",
    "By",
    Gauge,
    "Resident memory of a process, by modelwatch.process.role and process.executable.name."
);
metric!(
    PROCESS_THREAD_COUNT,
    "process.threads",
    "{thread}",
    Gauge,
    "Threads of a process, by modelwatch.process.role and process.executable.name."
);
metric!(
    PROCESS_FILE_DESCRIPTORS,
    "process.open_file_descriptors",
    "{file_descriptor}",
    Gauge,
    "Open file descriptors of a process, by modelwatch.process.role and process.executable.name."
);
metric!(CONTAINER_CPU_LIMIT, "container.cpu.limit", "{cpu}", Gauge,
    "The container's CPU limit in cores (cgroup cpu.max, or cfs_quota_us / cfs_period_us); absent when unlimited.");
metric!(
    CONTAINER_CPU_TIME,
    "container.cpu.time",
    "s",
    Counter,
    "CPU time used by the container's cgroup."
);
metric!(
    CONTAINER_CPU_PERIODS,
    "container.cpu.periods",
    "{period}",
    Counter,
    "CFS enforcement periods in which the cgroup was runnable."
);
metric!(
    CONTAINER_CPU_THROTTLED_PERIODS,
    "container.cpu.throttled.periods",
    "{period}",
    Counter,
    "Periods in which the cgroup was throttled for reaching its CPU limit."
);
metric!(
    CONTAINER_CPU_THROTTLED_TIME,
    "container.cpu.throttled.time",
    "s",
    Counter,
    "Time the cgroup's threads were throttled."
);
metric!(
    CONTAINER_MEMORY_USAGE,
    "container.memory.usage",
    "By",
    Gauge,
    "Memory charged to the container's cgroup (memory.current, or memory.usage_in_bytes)."
);
metric!(
    CONTAINER_MEMORY_LIMIT,
    "container.memory.limit",
    "By",
    Gauge,
    "The container's memory limit; absent when unlimited."
);
metric!(
    CONTAINER_MEMORY_OOM_KILLS,
    "container.memory.oom_kills",
    "{kill}",
    Counter,
    "Processes of the cgroup killed by the OOM killer."
);
metric!(
    CONTAINER_DISK_IO,
    "container.disk.io",
    "By",
    Counter,
    "Bytes read and written by the cgroup, by disk.io.direction (read, write)."
);
metric!(
    GPU_AVAILABLE,
    "modelwatch.gpu.available",
    "",
    Gauge,
    "1 when NVML answered and GPU figures are read; 0 with no GPU or no driver."
);
metric!(
    HW_GPU_UTILIZATION,
    "hw.gpu.utilization",
    "1",
    Gauge,
    "Share of time a kernel ran on the GPU, by hw.id (the GPU's UUID) and hw.name."
);
metric!(
    HW_GPU_MEMORY_USAGE,
    "hw.gpu.memory.usage",
    "By",
    Gauge,
    "GPU memory in use, by hw.id and hw.name."
);
metric!(
    HW_GPU_MEMORY_LIMIT,
    "hw.gpu.memory.limit",
    "By",
    Gauge,
    "GPU memory in total, by hw.id and hw.name."
);
metric!(
    HW_GPU_TEMPERATURE,
    "hw.gpu.temperature",
    "Cel",
    Gauge,
    "GPU core temperature, by hw.id and hw.name."
);
metric!(
    HW_GPU_POWER_DRAW,
    "hw.gpu.power.draw",
    "W",
    Gauge,
    "GPU power draw, by hw.id and hw.name."
);
metric!(
    HW_GPU_POWER_LIMIT,
    "hw.gpu.power.limit",
    "W",
    Gauge,
    "GPU enforced power limit, by hw.id and hw.name."
);
metric!(
    HW_GPU_CLOCK_SM,
    "hw.gpu.clock.sm",
    "Hz",
    Gauge,
    "GPU streaming-multiprocessor clock, by hw.id and hw.name."
);
metric!(HW_GPU_THROTTLE, "hw.gpu.throttle", "", Gauge,
    "1 for each active clock throttle reason, by hw.id, hw.name and reason (power_cap, hw_slowdown, sw_thermal, hw_thermal, ...).");
metric!(HW_GPU_ERRORS, "hw.gpu.errors", "{error}", Counter,
    "GPU errors by hw.id, hw.name and error.type: ecc_corrected and ecc_uncorrected since the driver loaded, xid (critical XID events) since modelwatch started.");

// The model server's own metrics, re-exported (resources.engine_metrics_url).
metric!(
    ENGINE_UP,
    "modelwatch.engine.up",
    "",
    Gauge,
    "1 when the last scrape of the model server's metrics endpoint worked, by engine."
);
metric!(ENGINE_REQUESTS_RUNNING, "modelwatch.engine.requests.running", "{request}", Gauge,
    "Requests the engine is running, by engine (vllm:num_requests_running, tgi_batch_current_size, llamacpp:requests_processing, MLServer rest_server_requests_in_progress).");
metric!(ENGINE_REQUESTS_WAITING, "modelwatch.engine.requests.waiting", "{request}", Gauge,
    "Requests queued in the engine, by engine (vllm:num_requests_waiting, tgi_queue_size, llamacpp:requests_deferred, nv_inference_pending_request_count).");
metric!(ENGINE_KV_CACHE_USAGE, "modelwatch.engine.kv_cache.usage", "1", Gauge,
    "KV-cache usage, 0 to 1, by engine (vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc, llamacpp:kv_cache_usage_ratio).");
metric!(
    ENGINE_BATCH_SIZE,
    "modelwatch.engine.batch.size",
    "{request}",
    Gauge,
    "Current batch size, by engine (tgi_batch_current_size, llamacpp:n_busy_slots_per_decode)."
);
metric!(ENGINE_TTFT_SUM, "modelwatch.engine.time_to_first_token.sum", "s", Counter,
    "Engine-side time to first token, summed over requests, by engine (vllm:time_to_first_token_seconds_sum).");
metric!(
    ENGINE_TTFT_COUNT,
    "modelwatch.engine.time_to_first_token.count",
    "{request}",
    Counter,
    "Requests behind modelwatch.engine.time_to_first_token.sum, by engine."
);
metric!(
    ENGINE_TOKENS,
    "modelwatch.engine.tokens",
    "{token}",
    Counter,
    "Tokens the engine processed, by engine and gen_ai.token.type (input, output)."
);
metric!(
    ENGINE_REQUESTS,
    "modelwatch.engine.requests",
    "{request}",
    Counter,
    "Requests the engine finished, by engine and result (ok, error)."
);

metric!(ENVIRONMENT_INFO, "modelwatch.environment.info", "", Gauge,
    "1, with what the model runs on as labels: modelwatch_version, kernel_version, gpu_driver_version, cuda_version, model_server_name, model_server_version.");
metric!(ENVIRONMENT_CHANGES, "modelwatch.environment.changes", "{change}", Counter,
    "Changes of the environment since start, by component (kernel, gpu_driver, cuda, model_server:NAME, model:NAME:VERSION for a model version first seen).");

// Network: the proxy's own connection counts.
metric!(
    CLIENT_CONNECTIONS,
    "modelwatch.client.connections",
    "{connection}",
    Counter,
    "Client connections accepted on the proxy listener."
);
metric!(
    CLIENT_CONNECTIONS_OPEN,
    "modelwatch.client.connections.open",
    "{connection}",
    Gauge,
    "Client connections open now."
);
metric!(
    PROXY_REQUESTS,
    "modelwatch.proxy.requests",
    "{request}",
    Counter,
    "Requests received from clients (every request, sampled or not)."
);
metric!(UPSTREAM_CONNECTIONS, "modelwatch.upstream.connections", "{connection}", Counter,
    "New TCP connections to the model server; 1 - rate(this) / rate(modelwatch.proxy.requests) is the share of requests that reused a pooled connection.");

/// Every metric above, for docs and tests.
pub const ALL: &[MetricName] = &[
    HTTP_SERVER_REQUEST_DURATION,
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_BODY_SIZE,
    HTTP_SERVER_RESPONSE_BODY_SIZE,
    SAMPLES_TAKEN,
    SAMPLES_DROPPED,
    SAMPLES_ANALYZED,
    SAMPLE_QUEUE_DEPTH,
    SAMPLE_QUEUE_CAPACITY,
    SAMPLE_BODIES_TRUNCATED,
    SAMPLE_TIME_TO_FIRST_BYTE,
    UPSTREAM_ERRORS,
    UPSTREAM_RETRIES,
    ADMIN_AUTH_FAILURES,
    CLOUDEVENTS_RECEIVED,
    CONFIG_RELOADS,
    CONFIG_LAST_RELOAD_SUCCESSFUL,
    CONFIG_HASH,
    CONFIG_RESTART_REQUIRED,
    UPSTREAM_UP,
    EXPORT_FAILURES,
    EXPORT_SKIPPED,
    SPANS_DROPPED,
    GEN_AI_SERVER_REQUEST_DURATION,
    GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
    GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
    GEN_AI_CLIENT_TOKEN_USAGE,
    LLM_REQUESTS,
    LLM_FINISH_REASONS,
    LLM_EMPTY_RESPONSES,
    LLM_OUTPUT_CHARACTERS,
    INFERENCES,
    DECODE_ERRORS,
    LOGS_DROPPED,
    ECS_WRITTEN,
    ECS_DROPPED,
    QUALITY_PREDICTIONS,
    QUALITY_PREDICTIONS_DROPPED,
    QUALITY_FEEDBACK,
    QUALITY_LABELS,
    QUALITY_CONFUSION,
    QUALITY_SCORE,
    QUALITY_LOG_LOSS_SUM,
    QUALITY_ERROR_ABSOLUTE,
    QUALITY_ERROR_SQUARED,
    QUALITY_ERROR_PERCENTAGE,
    QUALITY_LABEL_SUM,
    QUALITY_LABEL_SQUARES,
    QUALITY_LABEL_DELAY,
    QUALITY_PENDING_REMOVED,
    QUALITY_EARLY_LABELS_DONE,
    QUALITY_EARLY_LABELS,
    KAFKA_PRODUCED,
    KAFKA_OUTBOX_RECORDS,
    KAFKA_OUTBOX_DROPPED,
    KAFKA_CONSUMED,
    KAFKA_MALFORMED,
    JOINER_PARTITIONS,
    QUALITY_WINDOW_EVICTED,
    QUALITY_PENDING,
    QUALITY_STORE_SIZE,
    QUALITY_SAMPLES,
    QUALITY_WINDOW_PREDICTIONS,
    QUALITY_ACCURACY,
    QUALITY_PRECISION,
    QUALITY_RECALL,
    QUALITY_F1,
    QUALITY_ROC_AUC,
    QUALITY_LOG_LOSS,
    QUALITY_MAE,
    QUALITY_RMSE,
    QUALITY_MAPE,
    QUALITY_R2,
    QUALITY_ESTIMATED_ACCURACY,
    QUALITY_ESTIMATED_PRECISION,
    QUALITY_ESTIMATED_RECALL,
    QUALITY_ESTIMATED_F1,
    QUALITY_ESTIMATION_GAP,
    DRIFT_SCORE,
    DRIFT_STATISTIC,
    DRIFT_THRESHOLD,
    DRIFT_DETECTED,
    DRIFT_SHARE,
    DRIFT_DATASET,
    DRIFT_BIN,
    DRIFT_REFERENCE_SHARE,
    DATA_QUALITY_ISSUES,
    DATA_QUALITY_CONSTANT,
    DRIFT_FEATURES_DROPPED,
    ANOMALY_SCORE,
    ANOMALY_VALUE,
    ANOMALY_EVENTS,
    OUTLIER_SCORE,
    OUTLIERS,
    MODEL_REQUEST_DURATION,
    MODEL_REQUESTS,
    DIAGNOSIS_CAUSE,
    ALERTS,
    ALERT_TRANSITIONS,
    ALERT_NOTIFICATIONS,
    ALERT_SERIES_DROPPED,
    SHADOW_REQUESTS,
    SHADOW_DURATION,
    SHADOW_COMPARISONS,
    SHADOW_DIFFERENCE,
    SHADOW_LATENCY_DIFFERENCE,
    SHADOW_OUTPUT_LENGTH_RATIO,
    SYSTEM_CPU_UTILIZATION,
    SYSTEM_CPU_LOGICAL_COUNT,
    SYSTEM_MEMORY_USAGE,
    PROCESS_CPU_TIME,
    PROCESS_MEMORY_USAGE,
    PROCESS_THREAD_COUNT,
    PROCESS_FILE_DESCRIPTORS,
    CONTAINER_CPU_LIMIT,
    CONTAINER_CPU_TIME,
    CONTAINER_CPU_PERIODS,
    CONTAINER_CPU_THROTTLED_PERIODS,
    CONTAINER_CPU_THROTTLED_TIME,
    CONTAINER_MEMORY_USAGE,
    CONTAINER_MEMORY_LIMIT,
    CONTAINER_MEMORY_OOM_KILLS,
    CONTAINER_DISK_IO,
    GPU_AVAILABLE,
    HW_GPU_UTILIZATION,
    HW_GPU_MEMORY_USAGE,
    HW_GPU_MEMORY_LIMIT,
    HW_GPU_TEMPERATURE,
    HW_GPU_POWER_DRAW,
    HW_GPU_POWER_LIMIT,
    HW_GPU_CLOCK_SM,
    HW_GPU_THROTTLE,
    HW_GPU_ERRORS,
    ENGINE_UP,
    ENGINE_REQUESTS_RUNNING,
    ENGINE_REQUESTS_WAITING,
    ENGINE_KV_CACHE_USAGE,
    ENGINE_BATCH_SIZE,
    ENGINE_TTFT_SUM,
    ENGINE_TTFT_COUNT,
    ENGINE_TOKENS,
    ENGINE_REQUESTS,
    ENVIRONMENT_INFO,
    ENVIRONMENT_CHANGES,
    CLIENT_CONNECTIONS,
    CLIENT_CONNECTIONS_OPEN,
    PROXY_REQUESTS,
    UPSTREAM_CONNECTIONS,
];

/// Attribute keys.
pub mod attr {
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// gRPC calls' status code (spans).
    pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const ERROR_TYPE: &str = "error.type";
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
    pub const URL_SCHEME: &str = "url.scheme";
    pub const REASON: &str = "reason";
    pub const ENDPOINT: &str = "endpoint";
    pub const DIRECTION: &str = "direction";
    pub const SIGNAL: &str = "signal";
    pub const SERVICE_NAME: &str = "service.name";
    pub const SERVICE_VERSION: &str = "service.version";
    pub const HOST_NAME: &str = "host.name";
    pub const REQUEST_ID: &str = "modelwatch.request.id";
    pub const URL_PATH: &str = "url.path";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
    pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
    pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
    pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
    pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    pub const USAGE_ESTIMATED: &str = "modelwatch.usage.estimated";
    pub const STREAMING: &str = "modelwatch.llm.streaming";
    pub const OUTCOME: &str = "modelwatch.llm.outcome";
    pub const PROTOCOL: &str = "modelwatch.protocol";
    pub const MODEL: &str = "model";
    pub const MODEL_VERSION: &str = "model_version";
    pub const WINDOW: &str = "window";
    pub const AVERAGE: &str = "average";
    pub const CLASS: &str = "class";
    pub const ACTUAL: &str = "actual";
    pub const PREDICTED: &str = "predicted";
    pub const CORRECT: &str = "correct";
    pub const FEATURE: &str = "feature";
    pub const METHOD: &str = "method";
    pub const BIN: &str = "bin";
    pub const ISSUE: &str = "issue";
    pub const SERIES: &str = "series";
    pub const DETECTOR: &str = "detector";
    pub const RESULT: &str = "result";
    /// What became of a received CloudEvent.
    pub const CE_OUTCOME: &str = "outcome";
    pub const TOPIC: &str = "topic";
    pub const PARTITION: &str = "partition";
    pub const ALERTNAME: &str = "alertname";
    pub const SEVERITY: &str = "severity";
    pub const ALERTSTATE: &str = "alertstate";
    pub const SINK: &str = "sink";
    pub const AGREEMENT: &str = "agreement";
    pub const PROCESS_ROLE: &str = "modelwatch.process.role";
    pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
    pub const SYSTEM_MEMORY_STATE: &str = "system.memory.state";
    pub const DISK_IO_DIRECTION: &str = "disk.io.direction";
    pub const HW_ID: &str = "hw.id";
    pub const HW_NAME: &str = "hw.name";
    pub const ENGINE: &str = "engine";
    pub const COMPONENT: &str = "component";
    pub const CAUSE: &str = "cause";
}

/// Buckets of `modelwatch.shadow.difference` and `modelwatch.shadow.output_length_ratio`.
pub const DIFFERENCE_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 5.0, 10.0, 100.0,
];

/// Buckets (seconds) of `modelwatch.shadow.latency_difference`, both signs.
pub const LATENCY_DIFFERENCE_BUCKETS: &[f64] = &[
    -10.0, -1.0, -0.5, -0.1, -0.05, -0.01, -0.001, 0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// Buckets of `modelwatch.quality.score`: twenty equal bins of [0, 1].
pub const SCORE_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
    0.9, 0.95,
];

/// Buckets of `modelwatch.anomaly.outlier_score` (robust z units).
pub const OUTLIER_BUCKETS: &[f64] = &[0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 50.0];

/// Buckets (seconds) of `modelwatch.quality.label.delay`: one second to 30 days.
pub const LABEL_DELAY_BUCKETS: &[f64] = &[
    1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 10800.0, 21600.0, 43200.0, 86400.0, 259200.0, 604800.0,
    2592000.0,
];

/// Bucket boundaries (seconds) for request durations: the HTTP convention's
/// boundaries, extended up to 5 minutes because LLM requests run that long.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Bucket boundaries (bytes) for body sizes: powers of four from 64 B to 64 MiB.
pub const SIZE_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// GenAI convention buckets for `gen_ai.server.request.duration`.
pub const GEN_AI_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// GenAI convention buckets for `gen_ai.server.time_to_first_token`.
pub const GEN_AI_TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// GenAI convention buckets for `gen_ai.server.time_per_output_token`.
pub const GEN_AI_TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// GenAI convention buckets for `gen_ai.client.token.usage`.
pub const GEN_AI_TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Buckets for generated characters per request.
pub const CHARACTER_BUCKETS: &[f64] = &[
    0.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
];
