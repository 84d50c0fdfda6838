//! Bounded route templates for the `http.route` label: the paths model servers
//! use, with model names and versions replaced by placeholders. Any other path
//! is `other`, so a client can never create new series.

/// The template for `path` (query excluded), or `"other"`.
pub fn template(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or("");
    const EXACT: &[&str] = &[
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/models",
        "/v1/rerank",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models",
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/generate",
        "/generate_stream",
        "/completion",
        "/completions",
        "/embedding",
        "/invocations",
        "/predict",
        "/health",
        "/healthz",
        "/ready",
        "/readyz",
        "/metrics",
        "/",
    ];
    if let Some(t) = EXACT.iter().find(|t| **t == path) {
        return t;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        // KServe v1 / TF Serving
        ["v1", "models", m] if m.ends_with(":predict") => "/v1/models/{model}:predict",
        ["v1", "models", m] if m.ends_with(":explain") => "/v1/models/{model}:explain",
        ["v1", "models", m] if m.ends_with(":classify") => "/v1/models/{model}:classify",
        ["v1", "models", m] if m.ends_with(":regress") => "/v1/models/{model}:regress",
        ["v1", "models", _] => "/v1/models/{model}",
        ["v1", "models", _, "versions", v] if v.ends_with(":predict") => {
            "/v1/models/{model}/versions/{version}:predict"
        }
        ["v1", "models", _, "versions", _] => "/v1/models/{model}/versions/{version}",
        // Open Inference Protocol v2
        ["v2", "models", _] => "/v2/models/{model}",
        ["v2", "models", _, "infer"] => "/v2/models/{model}/infer",
        ["v2", "models", _, "ready"] => "/v2/models/{model}/ready",
        ["v2", "models", _, "generate"] => "/v2/models/{model}/generate",
        ["v2", "models", _, "generate_stream"] => "/v2/models/{model}/generate_stream",
        ["v2", "models", _, "versions", _] => "/v2/models/{model}/versions/{version}",
        ["v2", "models", _, "versions", _, "infer"] => {
            "/v2/models/{model}/versions/{version}/infer"
        }
        ["v2", "models", _, "versions", _, "ready"] => {
            "/v2/models/{model}/versions/{version}/ready"
        }
        // gRPC: /package.Service/Method for the inference services in common use
        ["inference.GRPCInferenceService", _] => "/inference.GRPCInferenceService/{method}",
        ["tensorflow.serving.PredictionService", _] => {
            "/tensorflow.serving.PredictionService/{method}"
        }
        ["grpc.health.v1.Health", _] => "/grpc.health.v1.Health/{method}",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::template;

    #[test]
    fn templates() {
        for (path, want) in [
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/v1/chat/completions?x=1", "/v1/chat/completions"),
            ("/v2/models/iris/infer", "/v2/models/{model}/infer"),
            (
                "/v2/models/iris/versions/3/infer",
                "/v2/models/{model}/versions/{version}/infer",
            ),
            ("/v1/models/iris:predict", "/v1/models/{model}:predict"),
            (
                "/grpc.health.v1.Health/Check",
                "/grpc.health.v1.Health/{method}",
            ),
            ("/users/12345/secret", "other"),
            ("/v2/models/a/b/c/d/e", "other"),
        ] {
            assert_eq!(template(path), want, "{path}");
        }
    }
}
