#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

// The Open Inference Protocol over gRPC: ModelInfer, and ModelStreamInfer
// (several messages each way), from framed bodies.
fuzz_target!(|data: &[u8]| {
    let config = modelwatch::config::ProtocolConfig::default();
    for path in [
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelStreamInfer",
    ] {
        let s = common::grpc_sample(path, data);
        let _ = modelwatch::protocol::decode(&s, &config);
    }
});
