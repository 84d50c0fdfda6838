//! The model server's own Prometheus endpoint, scraped on localhost and
//! re-exported under one set of names (`modelwatch.engine.*`), so that one
//! dashboard works for vLLM, TGI, Triton, llama.cpp and MLServer. Parsing is
//! the `nom-openmetrics` crate's (it accepts the `:` in vLLM's and llama.cpp's
//! names, which `prometheus-parse` does not); the mapping per engine is here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The engine's figures, summed over its series (models, label sets).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineReading {
    /// `vllm`, `tgi`, `triton`, `llamacpp`, `mlserver`, or `unknown`.
    pub engine: &'static str,
    pub up: bool,
    pub scrapes: u64,
    pub scrape_errors: u64,
    pub last_error: Option<String>,
    pub requests_running: Option<f64>,
    pub requests_waiting: Option<f64>,
    /// KV-cache usage, 0 to 1.
    pub kv_cache_usage: Option<f64>,
    pub batch_size: Option<f64>,
    pub ttft_sum_seconds: Option<f64>,
    pub ttft_count: Option<f64>,
    pub input_tokens: Option<f64>,
    pub output_tokens: Option<f64>,
    pub requests_ok: Option<f64>,
    pub requests_error: Option<f64>,
}

/// Every sample of a scrape: name and value (labels are summed over).
type Samples<'a> = Vec<(&'a str, f64)>;

/// The sum over every series of the first of `names` that exists.
fn sum(samples: &Samples, names: &[&str]) -> Option<f64> {
    names.iter().find_map(|n| {
        let mut found = false;
        let total: f64 = samples
            .iter()
            .filter(|(name, _)| name == n)
            .map(|(_, v)| *v)
            .inspect(|_| found = true)
            .sum();
        found.then_some(total)
    })
}

/// Which engine wrote this exposition.
fn engine_of(samples: &Samples) -> &'static str {
    let has = |p: &str| samples.iter().any(|(name, _)| name.starts_with(p));
    if has("vllm:") {
        "vllm"
    } else if has("tgi_") {
        "tgi"
    } else if has("nv_inference_") {
        "triton"
    } else if has("llamacpp:") {
        "llamacpp"
    } else if has("model_infer_request_") || has("rest_server_requests") {
        "mlserver"
    } else {
        "unknown"
    }
}

/// Maps one scrape to the common figures.
pub fn parse(text: &str) -> EngineReading {
    // The parser wants every line to end with a newline.
    let mut owned;
    let text = if text.ends_with('\n') {
        text
    } else {
        owned = text.to_string();
        owned.push('\n');
        owned.as_str()
    };
    let Ok((_, families)) = nom_openmetrics::parser::prometheus(text) else {
        return EngineReading {
            engine: "unknown",
            ..EngineReading::default()
        };
    };
    let s: Samples = families
        .iter()
        .flat_map(|f| f.samples.iter().map(|x| (x.name(), x.number())))
        .collect();
    let engine = engine_of(&s);
    let mut r = EngineReading {
        engine,
        up: true,
        ..EngineReading::default()
    };
    match engine {
        "vllm" => {
            r.requests_running = sum(&s, &["vllm:num_requests_running"]);
            r.requests_waiting = sum(&s, &["vllm:num_requests_waiting"]);
            r.kv_cache_usage = sum(
                &s,
                &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
            );
            r.ttft_sum_seconds = sum(&s, &["vllm:time_to_first_token_seconds_sum"]);
            r.ttft_count = sum(&s, &["vllm:time_to_first_token_seconds_count"]);
            r.input_tokens = sum(&s, &["vllm:prompt_tokens_total"]);
            r.output_tokens = sum(&s, &["vllm:generation_tokens_total"]);
            r.requests_ok = sum(&s, &["vllm:request_success_total"]);
        }
        "tgi" => {
            r.requests_running = sum(&s, &["tgi_batch_current_size"]);
            r.batch_size = r.requests_running;
            r.requests_waiting = sum(&s, &["tgi_queue_size"]);
            r.input_tokens = sum(&s, &["tgi_request_input_length_sum"]);
            r.output_tokens = sum(&s, &["tgi_request_generated_tokens_sum"]);
            r.requests_ok = sum(&s, &["tgi_request_success"]);
            r.requests_error = sum(&s, &["tgi_request_failure"]);
        }
        "triton" => {
            r.requests_waiting = sum(&s, &["nv_inference_pending_request_count"]);
            r.requests_ok = sum(&s, &["nv_inference_request_success"]);
            r.requests_error = sum(&s, &["nv_inference_request_failure"]);
        }
        "llamacpp" => {
            r.requests_running = sum(&s, &["llamacpp:requests_processing"]);
            r.requests_waiting = sum(&s, &["llamacpp:requests_deferred"]);
            r.kv_cache_usage = sum(&s, &["llamacpp:kv_cache_usage_ratio"]);
            r.batch_size = sum(&s, &["llamacpp:n_busy_slots_per_decode"]);
            r.input_tokens = sum(&s, &["llamacpp:prompt_tokens_total"]);
            r.output_tokens = sum(&s, &["llamacpp:tokens_predicted_total"]);
        }
        "mlserver" => {
            r.requests_running = sum(&s, &["rest_server_requests_in_progress"]);
            r.requests_ok = sum(
                &s,
                &[
                    "model_infer_request_success_total",
                    "model_infer_request_success",
                ],
            );
            r.requests_error = sum(
                &s,
                &[
                    "model_infer_request_failure_total",
                    "model_infer_request_failure",
                ],
            );
        }
        _ => {}
    }
    r
}

/// Scrapes `url` every `interval` until `stop`, into `reading`.
pub async fn run(
    client: crate::outbound::HttpClient,
    url: String,
    interval: Duration,
    timeout: Duration,
    reading: Arc<RwLock<EngineReading>>,
    stop: CancellationToken,
) {
    loop {
        let result = crate::outbound::get(&client, &url, 8 * 1024 * 1024, timeout)
            .await
            .map(|body| String::from_utf8_lossy(&body).into_owned());
        {
            let mut r = reading.write().expect("poisoned");
            let (scrapes, errors) = (r.scrapes + 1, r.scrape_errors);
            match result {
                Ok(text) => {
                    *r = parse(&text);
                    r.scrapes = scrapes;
                    r.scrape_errors = errors;
                }
                Err(e) => {
                    if r.up || r.scrapes == 0 {
                        tracing::warn!(%url, error = %e, "cannot scrape the model server's metrics");
                    }
                    r.up = false;
                    r.scrapes = scrapes;
                    r.scrape_errors = errors + 1;
                    r.last_error = Some(e);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/engine")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn a_real_llama_server_exposition() {
        let r = parse(&fixture("llamacpp.txt"));
        assert_eq!(r.engine, "llamacpp");
        assert_eq!(
            (r.requests_running, r.requests_waiting),
            (Some(0.0), Some(0.0))
        );
        assert_eq!((r.input_tokens, r.output_tokens), (Some(4.0), Some(5.0)));
        assert_eq!(r.batch_size, Some(1.0));
    }

    #[test]
    fn a_real_mlserver_exposition() {
        let r = parse(&fixture("mlserver.txt"));
        assert_eq!(r.engine, "mlserver");
        assert_eq!((r.requests_ok, r.requests_error), (Some(1.0), Some(0.0)));
        assert_eq!(r.requests_running, Some(0.0));
    }

    #[test]
    fn vllm_by_its_documented_names() {
        // Written from vLLM's documented metric names (no vLLM server here).
        let text = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 3\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 7\n# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.42\n# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.1\"} 2\nvllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 4\nvllm:time_to_first_token_seconds_sum{model_name=\"m\"} 0.9\nvllm:time_to_first_token_seconds_count{model_name=\"m\"} 4\n# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{model_name=\"m\"} 100\n# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{model_name=\"m\"} 250\n";
        let r = parse(text);
        assert_eq!(r.engine, "vllm");
        assert_eq!(
            (r.requests_running, r.requests_waiting, r.kv_cache_usage),
            (Some(3.0), Some(7.0), Some(0.42))
        );
        assert_eq!((r.ttft_sum_seconds, r.ttft_count), (Some(0.9), Some(4.0)));
        assert_eq!(
            (r.input_tokens, r.output_tokens),
            (Some(100.0), Some(250.0))
        );
    }

    #[test]
    fn garbage_is_an_unknown_engine() {
        let r = parse("not { a metric\n\u{0}\n");
        assert_eq!(r.engine, "unknown");
        assert_eq!(r.requests_running, None);
    }
}
