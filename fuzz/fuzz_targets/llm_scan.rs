#![no_main]
// The scan that runs on the proxy's path for every LLM response: any bytes,
// cut into frames at any points, must never panic.
use libfuzzer_sys::fuzz_target;
use modelwatch::protocol::Operation;
use modelwatch::proxy::llm::LlmScan;

fuzz_target!(|data: &[u8]| {
    for streaming in [true, false] {
        let mut scan = LlmScan::new(Operation::Chat, streaming, 4096);
        let step = (data.first().copied().unwrap_or(7) as usize % 31) + 1;
        for (i, frame) in data.chunks(step).enumerate() {
            scan.frame(
                &bytes::Bytes::copy_from_slice(frame),
                std::time::Duration::from_millis(i as u64),
            );
        }
        let _ = scan.finish();
    }
    let _ = modelwatch::proxy::llm::request_model(data);
});
