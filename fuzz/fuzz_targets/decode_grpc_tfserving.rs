#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

// TF Serving's gRPC Predict from framed bodies.
fuzz_target!(|data: &[u8]| {
    let config = modelwatch::config::ProtocolConfig::default();
    let s = common::grpc_sample("/tensorflow.serving.PredictionService/Predict", data);
    let _ = modelwatch::protocol::decode(&s, &config);
});
