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
];

/// Attribute keys.
pub mod attr {
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const ERROR_TYPE: &str = "error.type";
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
    pub const URL_SCHEME: &str = "url.scheme";
    pub const REASON: &str = "reason";
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
}

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
