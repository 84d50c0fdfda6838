// Shared by the fuzz targets: builds a sample from fuzz input (request and
// response bodies split at the first 0xFF 0x00 pair, or at the middle).
use modelwatch::sample::Sample;

pub fn sample(path: &str, data: &[u8], content_type: &str, header_len: Option<usize>) -> Sample {
    let split = data
        .windows(2)
        .position(|w| w == [0xff, 0x00])
        .unwrap_or(data.len() / 2);
    let (req, resp) = data.split_at(split);
    let resp = resp.get(2..).unwrap_or(&[]);
    let mut s = Sample::from_bodies(path, req, resp, content_type);
    if let Some(n) = header_len {
        s.request_headers.insert("inference-header-content-length", n.into());
        s.response_headers.insert("inference-header-content-length", n.into());
    }
    s
}

/// A gRPC exchange from fuzz input, split as [`sample`] does; gzip on both
/// directions when the input's first byte is odd.
#[allow(dead_code)]
pub fn grpc_sample(path: &str, data: &[u8]) -> Sample {
    let mut s = sample(path, data, "application/grpc", None);
    s.request_headers
        .insert("content-type", http::HeaderValue::from_static("application/grpc"));
    if data.first().is_some_and(|b| b & 1 == 1) {
        for h in [&mut s.request_headers, &mut s.response_headers] {
            h.insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
        }
    }
    s.grpc_status = Some(0);
    s
}
