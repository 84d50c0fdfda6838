use super::*;
use crate::config::Config;

/// Every metric in `names::ALL` is registered, under the Prometheus name the
/// docs give, once each instrument has seen a value.
#[test]
fn every_listed_metric_is_exported_under_its_documented_name() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    // Export on (to a closed port) so the export self-metrics exist too.
    config.telemetry.otlp.endpoint = "http://127.0.0.1:9".into();
    config.telemetry.otlp.metrics_interval = std::time::Duration::from_secs(3600);
    // ECS lines on too (to a scratch file), for their counters.
    let ecs_out =
        std::env::temp_dir().join(format!("modelwatch-ecs-{}.ndjson", std::process::id()));
    config.ecs_logs.enabled = true;
    config.ecs_logs.output = ecs_out.display().to_string();
    let t = Telemetry::new(&config, runtime.handle()).unwrap();
    let i = &t.instruments;
    i.request_duration.record(0.1, &[]);
    i.active_requests.add(1, &[]);
    i.request_body_size.record(1, &[]);
    i.response_body_size.record(1, &[]);
    i.samples_taken.add(1, &[]);
    i.samples_dropped.add(1, &[]);
    i.samples_analyzed.add(1, &[]);
    i.bodies_truncated.add(1, &[]);
    i.sample_time_to_first_byte.record(0.1, &[]);
    i.upstream_errors.add(1, &[]);
    i.gen_ai_duration.record(0.1, &[]);
    i.gen_ai_ttft.record(0.1, &[]);
    i.gen_ai_tpot.record(0.1, &[]);
    i.gen_ai_tokens.record(1, &[]);
    i.llm_requests.add(1, &[]);
    i.llm_finish_reasons.add(1, &[]);
    i.llm_empty_responses.add(1, &[]);
    i.llm_output_characters.record(1, &[]);
    i.inferences.add(1, &[]);
    i.decode_errors.add(1, &[]);
    i.quality_predictions.add(1, &[]);
    i.quality_predictions_dropped.add(1, &[]);
    i.quality_feedback.add(1, &[]);
    i.quality_labels.add(1, &[]);
    i.quality_confusion.add(1, &[]);
    i.quality_score.record(0.5, &[]);
    i.quality_log_loss.add(0.5, &[]);
    i.quality_error_absolute.add(0.5, &[]);
    i.quality_error_squared.add(0.5, &[]);
    i.quality_error_percentage.add(0.5, &[]);
    i.quality_label_sum.add(0.5, &[]);
    i.quality_label_squares.add(0.5, &[]);
    i.quality_label_delay.record(0.5, &[]);
    i.quality_pending_removed.add(1, &[]);
    i.quality_early_labels_joined.add(1, &[]);
    i.quality_window_evicted.add(1, &[]);
    i.kafka_produced.add(1, &[]);
    i.kafka_outbox_dropped.add(1, &[]);
    i.kafka_consumed.add(1, &[]);
    i.kafka_malformed.add(1, &[]);
    crate::kafka::producer::register_gauges(&t.meter, Default::default());
    crate::kafka::joiner::register_gauges(&t.meter, Default::default());
    crate::quality::register_gauges(
        &t.meter,
        std::sync::Arc::new(std::sync::RwLock::new(
            crate::quality::engine::tests::full_snapshot(),
        )),
        Default::default(),
    );
    crate::drift::register_instruments(
        &t.meter,
        std::sync::Arc::new(std::sync::RwLock::new(crate::drift::tests::full_snapshot())),
    );
    i.outlier_score.record(1.0, &[]);
    i.outliers.add(1, &[]);
    crate::anomaly::register_instruments(
        &t.meter,
        std::sync::Arc::new(std::sync::RwLock::new(
            crate::anomaly::tests::full_snapshot(),
        )),
    );
    i.model_request_duration.record(0.1, &[]);
    i.model_requests.add(1, &[]);
    i.alert_transitions.add(1, &[]);
    i.alert_notifications.add(1, &[]);
    i.alert_series_dropped.add(1, &[]);
    i.shadow_requests.add(1, &[]);
    i.shadow_duration.record(0.1, &[]);
    i.shadow_comparisons.add(1, &[]);
    i.shadow_difference.record(0.1, &[]);
    i.shadow_latency_difference.record(0.1, &[]);
    i.shadow_output_length_ratio.record(0.1, &[]);
    crate::alerts::register_gauge(
        &t.meter,
        std::sync::Arc::new(std::sync::RwLock::new(crate::alerts::Snapshot {
            rules: vec![crate::alerts::RuleSummary {
                name: "A".into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    );
    crate::resources::register_instruments(
        &t.meter,
        std::sync::Arc::new(std::sync::RwLock::new(
            crate::resources::tests::full_snapshot(),
        )),
    );
    crate::resources::register_engine(
        &t.meter,
        std::sync::Arc::new(std::sync::RwLock::new(
            crate::resources::engine::EngineReading {
                engine: "vllm",
                up: true,
                scrapes: 1,
                scrape_errors: 0,
                last_error: None,
                requests_running: Some(1.0),
                requests_waiting: Some(2.0),
                kv_cache_usage: Some(0.5),
                batch_size: Some(4.0),
                ttft_sum_seconds: Some(1.0),
                ttft_count: Some(3.0),
                input_tokens: Some(10.0),
                output_tokens: Some(20.0),
                requests_ok: Some(3.0),
                requests_error: Some(0.0),
            },
        )),
    );
    i.environment_changes.add(1, &[]);
    crate::proxy::register_counters(&t.meter, Default::default());
    crate::resources::environment::register(
        &t.meter,
        std::sync::Arc::new(std::sync::RwLock::new(
            [("modelwatch".to_string(), "0.1.0".to_string())].into(),
        )),
    );
    crate::reload::register(&t.meter, Default::default(), Default::default());
    crate::diagnosis::register_gauge(
        &t.meter,
        crate::diagnosis::Sources {
            quality: Some(std::sync::Arc::new(std::sync::RwLock::new(
                crate::quality::engine::tests::full_snapshot(),
            ))),
            ..Default::default()
        },
        || std::sync::Arc::new(crate::config::Config::default()),
    );
    let text = t.render_prometheus();
    let _ = std::fs::remove_file(&ecs_out);
    for m in names::ALL {
        let name = prometheus_name(m);
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{} is not exported as {name}:\n{text}",
            m.name
        );
    }
    t.shutdown();
}

#[test]
fn docs_metrics_md_lists_every_metric() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let mut documented = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 6 && cells[1].starts_with('`') && cells[3].starts_with('`') {
            documented.push((
                cells[1].trim_matches('`').to_string(),
                cells[2].to_string(),
                cells[3].trim_matches('`').to_string(),
            ));
        }
    }
    let code: Vec<(String, String, String)> = names::ALL
        .iter()
        .map(|m| {
            (
                m.name.to_string(),
                m.kind.as_str().to_string(),
                prometheus_name(m),
            )
        })
        .collect();
    assert_eq!(
        documented, code,
        "docs/metrics.md rows: `otel name` | kind | `prometheus name` | ..."
    );
}
