use std::collections::{BTreeMap, HashMap};

use super::*;

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    let c = Config::from_yaml(yaml, "test.yaml")?;
    c.validate()?;
    Ok(c)
}

fn error(yaml: &str) -> String {
    parse(yaml).expect_err("should be refused").to_string()
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn refusals_name_the_key_the_value_and_what_is_accepted() {
    for (yaml, wants) in [
        (
            "proxy:\n  listne: 1\n",
            vec!["proxy", "unknown field `listne`", "listen"],
        ),
        ("bogus: 1\n", vec!["unknown field `bogus`", "proxy"]),
        (
            "proxy:\n  listen: localhost\n",
            vec!["proxy.listen", "\"localhost\"", "IP address and port"],
        ),
        (
            "proxy:\n  upstream: ftp://x:1\n",
            vec!["proxy.upstream", "ftp://x:1", "http:// or https:// URL"],
        ),
        (
            "proxy:\n  upstream: https://model:443\n  upstream_tls:\n    server_name: 'not a name'\n",
            vec!["proxy.upstream_tls.server_name", "not a name", "a DNS name or an IP address"],
        ),
        (
            "proxy:\n  upstream: https://model:443\n  upstream_tls:\n    ca_file: /nonexistent/ca.pem\n",
            vec!["proxy.upstream_tls.ca_file", "/nonexistent/ca.pem", "a readable PEM file"],
        ),
        (
            "proxy:\n  upstream: http://model\n",
            vec!["proxy.upstream", "with a host and a port"],
        ),
        (
            "proxy:\n  upstream: http://model:80/v1\n",
            vec!["proxy.upstream", "without a path"],
        ),
        (
            "sampling:\n  rate: 1.5\n",
            vec!["sampling.rate", "1.5", "from 0 to 1"],
        ),
        ("sampling:\n  rate: -0.1\n", vec!["sampling.rate", "-0.1"]),
        (
            "quality:\n  windows: [1h, 0s]\n",
            vec!["quality.windows", "[1h, 0s]", "durations above zero"],
        ),
        (
            "quality:\n  windows: [soon]\n",
            vec!["quality.windows", "soon"],
        ),
        (
            "quality:\n  max_classes: 1\n",
            vec!["quality.max_classes", "1", "from 2 to 1000"],
        ),
        (
            "quality:\n  join_key: header\n",
            vec!["quality.join_key", "request-id", "response-id"],
        ),
        (
            "quality:\n  feedback_token: short\n",
            vec!["quality.feedback_token", "(hidden)", "at least 16"],
        ),
        (
            "quality:\n  estimation:\n    reference_rows: 1\n",
            vec!["quality.estimation.reference_rows", "at least 2"],
        ),
        (
            "protocol:\n  models:\n    - name: m\n      task: ranking\n",
            vec!["task", "classification", "regression"],
        ),
        (
            "sampling:\n  rate: lots\n",
            vec!["sampling.rate", "invalid type"],
        ),
        (
            "sampling:\n  queue_capacity: 0\n",
            vec!["sampling.queue_capacity", "at least 1"],
        ),
        (
            "proxy:\n  connect_timeout: soon\n",
            vec!["proxy.connect_timeout"],
        ),
        (
            "proxy:\n  connect_timeout: 0s\n",
            vec!["proxy.connect_timeout", "above zero"],
        ),
        (
            "proxy:\n  upstream_http_version: http3\n",
            vec![
                "proxy.upstream_http_version",
                "http3",
                "auto",
                "http1",
                "http2",
            ],
        ),
        (
            "log:\n  format: xml\n",
            vec!["log.format", "xml", "text", "json"],
        ),
        (
            "telemetry:\n  otlp:\n    endpoint: collector:4318\n",
            vec!["telemetry.otlp.endpoint", "collector:4318", "http://"],
        ),
        (
            "telemetry:\n  otlp:\n    protocol: http/json\n",
            vec!["telemetry.otlp.protocol", "http/json", "grpc"],
        ),
        (
            "admin:\n  listen: 0.0.0.0:8080\n",
            vec!["admin.listen", "different from proxy.listen"],
        ),
        (
            "admin:\n  readiness:\n    http_path: health\n",
            vec!["admin.readiness.http_path", "starting with /"],
        ),
        (
            "proxy:\n  request_id_header: \"x id\"\n",
            vec!["proxy.request_id_header", "header name"],
        ),
        (
            "proxy:\n  extra_ports:\n    - {listen: 0.0.0.0:8080, upstream: http://127.0.0.1:8081}\n",
            vec!["proxy.extra_ports[0].listen", "0.0.0.0:8080", "do not use"],
        ),
        (
            "proxy:\n  extra_ports:\n    - {listen: 0.0.0.0:9081, upstream: 127.0.0.1:8081}\n",
            vec!["proxy.extra_ports[0].upstream", "127.0.0.1:8081", "http://"],
        ),
    ] {
        let e = error(yaml);
        for want in wants {
            assert!(e.contains(want), "{yaml:?}: {e:?} lacks {want:?}");
        }
    }
}

#[test]
fn environment_overrides_the_file() {
    let mut c =
        parse("proxy:\n  upstream: http://127.0.0.1:1111\nsampling:\n  rate: 0.5\n").unwrap();
    let env: HashMap<&str, &str> = [
        ("MODELWATCH_UPSTREAM", "http://127.0.0.1:2222"),
        (
            "MODELWATCH_EXTRA_PORTS",
            "0.0.0.0:9081=http://127.0.0.1:8081, 0.0.0.0:9082=https://127.0.0.1:8082",
        ),
        ("MODELWATCH_SAMPLE_RATE", "0.25"),
        ("OTEL_SERVICE_NAME", "iris"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod,team=ml%20platform",
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20x"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
        ("POD_NAME", "iris-0"),
        ("K8S_NAMESPACE_NAME", "models"),
    ]
    .into();
    env::apply(&mut c, |k| env.get(k).map(|v| v.to_string())).unwrap();
    c.validate().unwrap();
    assert_eq!(c.proxy.upstream, "http://127.0.0.1:2222");
    assert_eq!(
        c.proxy.extra_ports,
        vec![
            super::PortPair {
                listen: "0.0.0.0:9081".into(),
                upstream: "http://127.0.0.1:8081".into()
            },
            super::PortPair {
                listen: "0.0.0.0:9082".into(),
                upstream: "https://127.0.0.1:8082".into()
            }
        ]
    );
    assert_eq!(c.sampling.rate, 0.25);
    assert_eq!(c.telemetry.service_name, "iris");
    let attrs = &c.telemetry.resource_attributes;
    assert_eq!(attrs["deployment.environment"], "prod");
    assert_eq!(attrs["team"], "ml platform");
    assert_eq!(attrs["k8s.pod.name"], "iris-0");
    assert_eq!(attrs["k8s.namespace.name"], "models");
    let otlp = &c.telemetry.otlp;
    assert_eq!(otlp.endpoint, "http://collector:4317");
    assert_eq!(otlp.protocol, OtlpProtocol::Grpc);
    assert_eq!(otlp.headers["authorization"], "Bearer x");
    assert_eq!(otlp.timeout, Duration::from_millis(2500));
    assert_eq!(otlp.metrics_interval, Duration::from_secs(5));
}

#[test]
fn bad_environment_values_name_the_variable() {
    for (k, v, want) in [
        ("MODELWATCH_SAMPLE_RATE", "half", "MODELWATCH_SAMPLE_RATE"),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            "grpc or http/protobuf",
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
        ("OTEL_RESOURCE_ATTRIBUTES", "novalue", "key=value"),
    ] {
        let mut c = Config::default();
        let e = env::apply(&mut c, |name| (name == k).then(|| v.to_string())).unwrap_err();
        let e = e.to_string();
        assert!(e.contains(k) && e.contains(v) && e.contains(want), "{e}");
    }
}

/// Flattens a JSON value into dotted keys, the way docs/configuration.md names them.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(
                prefix.to_string(),
                if s.is_empty() {
                    "\"\"".into()
                } else {
                    s.clone()
                },
            );
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[test]
fn docs_list_every_key_with_its_default() {
    let mut code = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(Config::default()).unwrap(),
        &mut code,
    );
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let keys_section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Keys"))
        .expect("a ## Keys section");
    let mut documented = BTreeMap::new();
    for line in keys_section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 4 && cells[1].starts_with('`') && cells[2].starts_with('`') {
            let key = cells[1].trim_matches('`').to_string();
            let default = cells[2].trim_matches('`').to_string();
            documented.insert(key, default);
        }
    }
    assert_eq!(
        documented, code,
        "docs/configuration.md must list every key with its default, as `key` | `default` | ..."
    );
}

#[test]
fn docs_list_every_environment_variable() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    for (names, _) in env::VARIABLES {
        for name in names.split(" or ") {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/configuration.md lacks {name}"
            );
        }
    }
}

#[test]
fn otel_per_signal_variables_and_insecure() {
    let apply = |vars: &[(&str, &str)]| {
        let mut c = Config::default();
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env::apply(&mut c, |k| vars.get(k).cloned()).map(|()| c)
    };
    // A per-signal value overrides the generic one.
    let c = apply(&[
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic.pem"),
        ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "/metrics.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "api-key=abc"),
    ])
    .unwrap();
    assert_eq!(c.telemetry.otlp.tls.ca_file, "/metrics.pem");
    assert_eq!(
        c.telemetry.otlp.timeout,
        std::time::Duration::from_millis(2500)
    );
    assert_eq!(c.telemetry.otlp.headers["api-key"], "abc");
    // The same value for two signals is fine; different ones are refused with both names.
    assert!(apply(&[
        ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "/k.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/k.pem"),
    ])
    .is_ok());
    let e = apply(&[
        ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "/a.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/b.pem"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY")
            && e.contains("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY"),
        "{e}"
    );
    // An endpoint without a scheme: https, or http when insecure.
    let c = apply(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]).unwrap();
    assert_eq!(c.telemetry.otlp.endpoint, "https://collector:4317");
    let c = apply(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
    ])
    .unwrap();
    assert_eq!(c.telemetry.otlp.endpoint, "http://collector:4317");
    let c = apply(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
    ])
    .unwrap();
    assert_eq!(c.telemetry.otlp.endpoint, "https://collector:4317");
    assert!(apply(&[("OTEL_EXPORTER_OTLP_INSECURE", "yes")]).is_err());
}

#[test]
fn kafka_settings_are_checked_and_secrets_not_shown() {
    let mut c = Config::default();
    c.quality.backend = QualityBackend::Kafka;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("quality.kafka.bootstrap"), "{e}");
    c.quality.kafka.bootstrap = "127.0.0.1:9092".into();
    c.quality.kafka.labels_topic = "bad topic!".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("quality.kafka.labels_topic") && e.contains("bad topic!"),
        "{e}"
    );
    c.quality.kafka.labels_topic = "labels".into();
    c.quality.kafka.properties.insert(
        "sasl.password".into(),
        "${env:MODELWATCH_TEST_SURELY_UNSET}".into(),
    );
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("quality.kafka.properties.sasl.password")
            && e.contains("MODELWATCH_TEST_SURELY_UNSET"),
        "{e}"
    );
    c.quality
        .kafka
        .properties
        .insert("sasl.password".into(), "hunter2".into());
    c.validate().unwrap();
    let shown = c.to_shown_yaml();
    assert!(
        !shown.contains("hunter2") && shown.contains("(hidden)"),
        "{shown}"
    );
    let env = |name: &str| match name {
        "MODELWATCH_QUALITY_BACKEND" => Some("kafka".to_string()),
        "MODELWATCH_KAFKA_BOOTSTRAP" => Some("b1:9092,b2:9092".to_string()),
        _ => None,
    };
    let mut c = Config::default();
    super::env::apply(&mut c, env).unwrap();
    assert_eq!(c.quality.backend, QualityBackend::Kafka);
    assert_eq!(c.quality.kafka.bootstrap, "b1:9092,b2:9092");
    let e = super::env::apply(&mut c, |n| {
        (n == "MODELWATCH_QUALITY_BACKEND").then(|| "redis".into())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("embedded or kafka"), "{e}");
}
