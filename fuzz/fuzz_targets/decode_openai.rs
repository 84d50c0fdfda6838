#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let config = modelwatch::config::ProtocolConfig::default();
    for (path, ct) in [
        ("/v1/chat/completions", "application/json"),
        ("/v1/chat/completions", "text/event-stream"),
        ("/v1/completions", "text/event-stream"),
        ("/v1/embeddings", "application/json"),
    ] {
        let _ = modelwatch::protocol::decode(&common::sample(path, data, ct, None), &config);
    }
});
