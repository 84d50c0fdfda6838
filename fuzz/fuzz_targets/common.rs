// Shared by the fuzz targets: builds a sample from fuzz input (request and
// response bodies split at the first 0xFF 0x00 pair, or at the middle).
use bytes::Bytes;
use modelwatch::sample::{CapturedBody, Outcome, Sample, Timings};

pub fn sample(path: &str, data: &[u8], content_type: &str, header_len: Option<usize>) -> Sample {
    let split = data
        .windows(2)
        .position(|w| w == [0xff, 0x00])
        .unwrap_or(data.len() / 2);
    let (req, resp) = data.split_at(split);
    let resp = resp.get(2..).unwrap_or(&[]);
    let body = |b: &[u8]| CapturedBody { bytes: Bytes::copy_from_slice(b), size: b.len() as u64, truncated: false };
    let mut response_headers = http::HeaderMap::new();
    response_headers.insert("content-type", http::HeaderValue::from_str(content_type).unwrap());
    let mut request_headers = http::HeaderMap::new();
    if let Some(n) = header_len {
        request_headers.insert("inference-header-content-length", n.into());
        response_headers.insert("inference-header-content-length", n.into());
    }
    Sample {
        request_id: "fuzz".into(),
        trace_id: None,
        span_id: None,
        method: http::Method::POST,
        path: path.into(),
        route: "other",
        request_headers,
        response_headers,
        status: 200,
        request_body: body(req),
        response_body: body(resp),
        timings: Timings { start: std::time::SystemTime::UNIX_EPOCH, response_headers: None, first_byte: None, total: Default::default() },
        outcome: Outcome::Complete,
    }
}
