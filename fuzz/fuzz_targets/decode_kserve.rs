#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let mut config = modelwatch::config::ProtocolConfig::default();
    let _ = modelwatch::protocol::decode(&common::sample("/v1/models/m:predict", data, "application/json", None), &config);
    config.kind = modelwatch::config::ProtocolKind::TfServing;
    let _ = modelwatch::protocol::decode(&common::sample("/v1/models/m/versions/2:predict", data, "application/json", None), &config);
});
