#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let mut config = modelwatch::config::ProtocolConfig::default();
    config.kind = modelwatch::config::ProtocolKind::JsonPaths;
    config.json_paths.features = "$.request.rows[*]".into();
    config.json_paths.prediction = "$.response..label".into();
    config.json_paths.scores = "$.response.scores".into();
    config.json_paths.model = "$.request.model".into();
    let _ = modelwatch::protocol::decode(&common::sample("/score", data, "application/json", None), &config);
});
