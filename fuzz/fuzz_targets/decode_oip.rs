#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let config = modelwatch::config::ProtocolConfig::default();
    let s = common::sample("/v2/models/m/versions/1/infer", data, "application/json", None);
    let _ = modelwatch::protocol::decode(&s, &config);
    // The binary tensor extension, with a header length taken from the input.
    let n = data.first().copied().unwrap_or(0) as usize;
    let s = common::sample("/v2/models/m/infer", data, "application/json", Some(n));
    let _ = modelwatch::protocol::decode(&s, &config);
});
