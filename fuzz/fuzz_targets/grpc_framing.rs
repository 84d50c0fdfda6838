#![no_main]
use libfuzzer_sys::fuzz_target;

// gRPC's length-prefixed framing, with compressed messages: the first byte
// picks the direction's grpc-encoding and whether the capture was cut.
fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    let encoding = ["gzip", "deflate", "identity", "snappy"][(mode & 3) as usize];
    headers.insert("grpc-encoding", http::HeaderValue::from_static(encoding));
    let captured = modelwatch::sample::CapturedBody {
        bytes: bytes::Bytes::copy_from_slice(body),
        size: body.len() as u64,
        truncated: mode & 4 != 0,
    };
    let _ = modelwatch::protocol::grpc::messages(&captured, &headers);
});
