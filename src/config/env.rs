//! The one place where environment variables are read: `MODELWATCH_*`, the
//! standard `OTEL_*` variables, `RUST_LOG`, and the Kubernetes downward-API
//! variables that name the pod. Each overrides the matching config key.

use std::time::Duration;

use super::{invalid, Config, ConfigError, LogFormat, OtlpProtocol};

/// Every variable this module reads, for the docs and `--help`.
pub const VARIABLES: &[(&str, &str)] = &[
    ("MODELWATCH_CONFIG", "config file path (same as --config)"),
    ("MODELWATCH_LISTEN", "proxy.listen"),
    ("MODELWATCH_UPSTREAM", "proxy.upstream"),
    (
        "MODELWATCH_EXTRA_PORTS",
        "proxy.extra_ports (`listen=upstream,listen2=upstream2`)",
    ),
    ("MODELWATCH_ADMIN_LISTEN", "admin.listen"),
    ("MODELWATCH_ADMIN_TOKEN_FILE", "admin.token_file"),
    ("MODELWATCH_SAMPLE_RATE", "sampling.rate"),
    ("MODELWATCH_LOG_FORMAT", "log.format"),
    ("MODELWATCH_STORE_PATH", "quality.store_path"),
    ("MODELWATCH_FEEDBACK_TOKEN", "quality.feedback_token"),
    ("MODELWATCH_QUALITY_BACKEND", "quality.backend (`embedded` or `kafka`)"),
    ("MODELWATCH_KAFKA_BOOTSTRAP", "quality.kafka.bootstrap"),
    ("MODELWATCH_KAFKA_PREDICTIONS_TOPIC", "quality.kafka.predictions_topic"),
    ("MODELWATCH_KAFKA_LABELS_TOPIC", "quality.kafka.labels_topic"),
    (
        "MODELWATCH_KAFKA_PROPERTIES",
        "added to quality.kafka.properties (`name=value,name2=value2`)",
    ),
    ("MODELWATCH_MODEL_VERSION", "protocol.default_model_version"),
    ("MODELWATCH_PROTOCOL", "protocol.kind"),
    ("MODELWATCH_ALERTMANAGER_URL", "alerts.alertmanager.url"),
    ("RUST_LOG", "log.level"),
    ("OTEL_SERVICE_NAME", "telemetry.service_name"),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
        "added to telemetry.resource_attributes",
    ),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp.endpoint"),
    (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "telemetry.otlp.metrics_endpoint",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "telemetry.otlp.traces_endpoint",
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "telemetry.otlp.protocol"),
    (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "added to telemetry.otlp.headers",
    ),
    (
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "telemetry.otlp.timeout (milliseconds)",
    ),
    (
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "telemetry.otlp.tls.ca_file",
    ),
    (
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        "telemetry.otlp.tls.cert_file",
    ),
    (
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "telemetry.otlp.tls.key_file",
    ),
    (
        "OTEL_EXPORTER_OTLP_INSECURE",
        "`true`: an endpoint given without a scheme is `http://`, else `https://`",
    ),
    (
        "OTEL_EXPORTER_OTLP_{METRICS,TRACES,LOGS}_{HEADERS,TIMEOUT,CERTIFICATE,CLIENT_CERTIFICATE,CLIENT_KEY,INSECURE}",
        "as the generic variable (one setting serves every signal: values that differ between signals are refused)",
    ),
    (
        "OTEL_METRIC_EXPORT_INTERVAL",
        "telemetry.otlp.metrics_interval (milliseconds)",
    ),
    (
        "OTEL_TRACES_EXPORTER",
        "`none` turns telemetry.otlp.traces off",
    ),
    (
        "K8S_POD_NAME or POD_NAME",
        "resource attribute k8s.pod.name",
    ),
    (
        "K8S_NAMESPACE_NAME or POD_NAMESPACE",
        "resource attribute k8s.namespace.name",
    ),
    (
        "MODELWATCH_MODEL_IMAGE",
        "resource attribute container.image.name (the model server's image, e.g. set by the Helm chart)",
    ),
    (
        "K8S_NODE_NAME or NODE_NAME",
        "resource attribute k8s.node.name",
    ),
];

/// The path of the config file named by the environment, if any.
pub fn config_path() -> Option<String> {
    std::env::var("MODELWATCH_CONFIG")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Applies the process environment to `config`.
pub fn apply_process_env(config: &mut Config) -> Result<(), ConfigError> {
    apply(config, |name| std::env::var(name).ok())
}

/// Applies variables looked up through `var` (a map in tests) to `config`.
pub fn apply(config: &mut Config, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());

    if let Some(v) = get("MODELWATCH_LISTEN") {
        config.proxy.listen = v;
    }
    if let Some(v) = get("MODELWATCH_UPSTREAM") {
        config.proxy.upstream = v;
    }
    if let Some(v) = get("MODELWATCH_EXTRA_PORTS") {
        config.proxy.extra_ports = v
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((listen, upstream)) => Ok(super::PortPair {
                    listen: listen.trim().to_string(),
                    upstream: upstream.trim().to_string(),
                }),
                None => Err(invalid(
                    "MODELWATCH_EXTRA_PORTS",
                    &v,
                    "listen=upstream pairs separated by commas, e.g. 0.0.0.0:9081=http://127.0.0.1:8081",
                )),
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = get("MODELWATCH_ADMIN_LISTEN") {
        config.admin.listen = v;
    }
    if let Some(v) = get("MODELWATCH_ADMIN_TOKEN_FILE") {
        config.admin.token_file = v;
    }
    if let Some(v) = get("MODELWATCH_SAMPLE_RATE") {
        config.sampling.rate = v
            .trim()
            .parse()
            .map_err(|_| invalid("MODELWATCH_SAMPLE_RATE", &v, "a number from 0 to 1"))?;
    }
    if let Some(v) = get("MODELWATCH_STORE_PATH") {
        config.quality.store_path = v;
    }
    if let Some(v) = get("MODELWATCH_FEEDBACK_TOKEN") {
        config.quality.feedback_token = v.trim().to_string();
    }
    if let Some(v) = get("MODELWATCH_QUALITY_BACKEND") {
        config.quality.backend = match v.trim() {
            "embedded" => super::QualityBackend::Embedded,
            "kafka" => super::QualityBackend::Kafka,
            _ => {
                return Err(invalid(
                    "MODELWATCH_QUALITY_BACKEND",
                    &v,
                    "embedded or kafka",
                ))
            }
        };
    }
    if let Some(v) = get("MODELWATCH_KAFKA_BOOTSTRAP") {
        config.quality.kafka.bootstrap = v.trim().to_string();
    }
    if let Some(v) = get("MODELWATCH_KAFKA_PREDICTIONS_TOPIC") {
        config.quality.kafka.predictions_topic = v.trim().to_string();
    }
    if let Some(v) = get("MODELWATCH_KAFKA_LABELS_TOPIC") {
        config.quality.kafka.labels_topic = v.trim().to_string();
    }
    if let Some(v) = get("MODELWATCH_KAFKA_PROPERTIES") {
        for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(invalid(
                    "MODELWATCH_KAFKA_PROPERTIES",
                    "(not shown)",
                    "comma-separated name=value pairs of librdkafka properties",
                ));
            };
            config
                .quality
                .kafka
                .properties
                .insert(name.trim().to_string(), value.trim().to_string());
        }
    }
    if let Some(v) = get("MODELWATCH_MODEL_VERSION") {
        config.protocol.default_model_version = v.trim().to_string();
    }
    if let Some(v) = get("MODELWATCH_PROTOCOL") {
        config.protocol.kind = serde_yaml_ng::from_str(v.trim()).map_err(|_| {
            invalid(
                "MODELWATCH_PROTOCOL",
                &v,
                "auto, openai, open-inference-v2, kserve-v1, tf-serving or json-paths",
            )
        })?;
    }
    if let Some(v) = get("MODELWATCH_ALERTMANAGER_URL") {
        config.alerts.alertmanager.url = v.trim().to_string();
    }
    if let Some(v) = get("MODELWATCH_LOG_FORMAT") {
        config.log.format = match v.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(invalid("MODELWATCH_LOG_FORMAT", &v, "text or json")),
        };
    }
    if let Some(v) = get("RUST_LOG") {
        config.log.level = v;
    }

    if let Some(v) = get("OTEL_SERVICE_NAME") {
        config.telemetry.service_name = v;
    }
    if let Some(v) = get("OTEL_RESOURCE_ATTRIBUTES") {
        for (k, val) in parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v)? {
            config.telemetry.resource_attributes.insert(k, val);
        }
    }
    let otlp = &mut config.telemetry.otlp;
    if let Some(v) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
        otlp.endpoint = v;
    }
    if let Some(v) = get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        otlp.metrics_endpoint = v;
    }
    if let Some(v) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        otlp.traces_endpoint = v;
    }
    if let Some(v) = get("OTEL_EXPORTER_OTLP_PROTOCOL") {
        otlp.protocol = match v.trim() {
            "grpc" => OtlpProtocol::Grpc,
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            _ => {
                return Err(invalid(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    &v,
                    "grpc or http/protobuf",
                ))
            }
        };
    }
    // The generic variable, or its per-signal forms (`…_METRICS_…`,
    // `…_TRACES_…`, `…_LOGS_…`), which override it as the specification says.
    // modelwatch has one exporter setting for every signal: per-signal
    // values that differ from one another are refused, not half-applied.
    let otel = |suffix: &str| -> Result<Option<(String, String)>, ConfigError> {
        let mut found: Option<(String, String)> = None;
        for signal in ["METRICS", "TRACES", "LOGS"] {
            let name = format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}");
            if let Some(v) = get(&name) {
                match &found {
                    Some((first, seen)) if *seen != v => {
                        return Err(invalid(
                            &name,
                            &v,
                            &format!("the value of {first} ({seen:?}): modelwatch uses one {suffix} for every signal"),
                        ))
                    }
                    Some(_) => {}
                    None => found = Some((name, v)),
                }
            }
        }
        let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
        Ok(found.or_else(|| get(&generic).map(|v| (generic, v))))
    };
    if let Some((name, v)) = otel("HEADERS")? {
        for (k, val) in parse_pairs(&name, &v)? {
            otlp.headers.insert(k, val);
        }
    }
    if let Some((name, v)) = otel("TIMEOUT")? {
        otlp.timeout = millis(&name, &v)?;
    }
    if let Some((_, v)) = otel("CERTIFICATE")? {
        otlp.tls.ca_file = v;
    }
    if let Some((_, v)) = otel("CLIENT_CERTIFICATE")? {
        otlp.tls.cert_file = v;
    }
    if let Some((_, v)) = otel("CLIENT_KEY")? {
        otlp.tls.key_file = v;
    }
    // An endpoint given without a scheme (host:port, as gRPC users write
    // it): https unless OTEL_EXPORTER_OTLP_INSECURE is true, as the
    // specification says for OTLP/gRPC. Endpoints with a scheme keep it.
    let insecure = match otel("INSECURE")? {
        None => false,
        Some((name, v)) => match v.trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(invalid(&name, &v, "true or false")),
        },
    };
    for endpoint in [
        &mut otlp.endpoint,
        &mut otlp.metrics_endpoint,
        &mut otlp.traces_endpoint,
    ] {
        if !endpoint.is_empty() && !endpoint.contains("://") {
            let scheme = if insecure { "http" } else { "https" };
            *endpoint = format!("{scheme}://{endpoint}");
        }
    }
    if let Some(v) = get("OTEL_METRIC_EXPORT_INTERVAL") {
        otlp.metrics_interval = millis("OTEL_METRIC_EXPORT_INTERVAL", &v)?;
    }
    if let Some(v) = get("OTEL_TRACES_EXPORTER") {
        if v.trim() == "none" {
            otlp.traces = false;
        }
    }

    let attrs = &mut config.telemetry.resource_attributes;
    for (attribute, names) in [
        ("k8s.pod.name", ["K8S_POD_NAME", "POD_NAME"]),
        (
            "k8s.namespace.name",
            ["K8S_NAMESPACE_NAME", "POD_NAMESPACE"],
        ),
        ("k8s.node.name", ["K8S_NODE_NAME", "NODE_NAME"]),
        (
            "container.image.name",
            ["MODELWATCH_MODEL_IMAGE", "MODELWATCH_MODEL_IMAGE"],
        ),
    ] {
        if attrs.contains_key(attribute) {
            continue;
        }
        if let Some(v) = names.iter().find_map(|n| get(n)) {
            attrs.insert(attribute.to_string(), v);
        }
    }
    Ok(())
}

/// `key1=value1,key2=value2` with percent-encoded values, as the OTel spec writes them.
fn parse_pairs(name: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| invalid(name, text, "comma-separated key=value pairs"))?;
        out.push((k.trim().to_string(), percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn millis(name: &str, v: &str) -> Result<Duration, ConfigError> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| invalid(name, v, "a whole number of milliseconds above zero"))
}
