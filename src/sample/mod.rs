//! Sampling: the decision, the byte-capped copies of bodies taken as frames
//! pass, the finished [`Sample`], and the bounded queue that carries samples
//! to analysis. Nothing here ever waits: a full queue drops the sample and
//! counts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use opentelemetry::KeyValue;
use tokio::sync::mpsc;

use crate::telemetry::names::attr;
use crate::telemetry::{Gauges, Instruments};

/// How a proxied exchange ended, as seen by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response body was forwarded to its end.
    Complete,
    /// The client went away (or the stream broke) before the response ended.
    Aborted,
    /// The model server could not be reached or failed; modelwatch answered.
    UpstreamError(&'static str),
}

/// Timings of one exchange, from the proxy's clock.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Wall-clock time the request arrived.
    pub start: SystemTime,
    /// From arrival to the response headers from the model server.
    pub response_headers: Option<Duration>,
    /// From arrival to the first response body byte.
    pub first_byte: Option<Duration>,
    /// From arrival to the last response byte (or the abort).
    pub total: Duration,
}

/// A byte-capped copy of one body.
#[derive(Debug, Clone, Default)]
pub struct CapturedBody {
    /// The first `max_body_bytes` bytes.
    pub bytes: Bytes,
    /// Bytes that passed, captured or not.
    pub size: u64,
    /// True when `size` exceeded the cap.
    pub truncated: bool,
}

/// Where a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleSource {
    /// An exchange the proxy carried and timed.
    #[default]
    Proxy,
    /// A request and its response reported by a payload logger
    /// (`POST /v1/cloudevents`): the records are the same, but there are no
    /// timings of the model's work.
    CloudEvents,
}

/// One sampled exchange, handed to analysis.
#[derive(Debug, Clone)]
pub struct Sample {
    pub source: SampleSource,
    pub request_id: String,
    /// True when the client sent no usable request id and the proxy made one.
    pub request_id_generated: bool,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub method: http::Method,
    /// Path and query as the client sent them (never used as a metric label).
    pub path: String,
    /// Bounded route template for labels.
    pub route: &'static str,
    pub request_headers: http::HeaderMap,
    pub response_headers: http::HeaderMap,
    /// The response's trailers (gRPC: `grpc-status`, trailing metadata).
    pub response_trailers: http::HeaderMap,
    pub status: u16,
    /// A gRPC exchange's status code (trailers, or the headers of a
    /// trailers-only answer); None for other traffic.
    pub grpc_status: Option<u32>,
    pub request_body: CapturedBody,
    pub response_body: CapturedBody,
    pub timings: Timings,
    pub outcome: Outcome,
}

impl Sample {
    /// True when the model server (or the proxy for it) failed the request:
    /// a 5xx answer, no answer, or a gRPC status that means a server error
    /// (the codes gRPC maps to 5xx: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
    /// INTERNAL, UNAVAILABLE, DATA_LOSS). Client errors (4xx, INVALID_ARGUMENT,
    /// NOT_FOUND, …) are not the model's failures, as over HTTP.
    pub fn failed(&self) -> bool {
        self.status >= 500
            || matches!(self.outcome, Outcome::UpstreamError(_))
            || crate::protocol::grpc::server_failure(self.grpc_status).is_some()
    }

    /// True for gRPC traffic (`content-type: application/grpc…`).
    pub fn is_grpc(&self) -> bool {
        crate::protocol::grpc::is_grpc(&self.request_headers)
    }

    /// A completed POST exchange made from two whole bodies: for tests,
    /// benchmarks and fuzzing of the stages after the proxy, and the base of a
    /// payload logger's exchange (`cloudevents::sample`).
    pub fn from_bodies(
        path: &str,
        request: &[u8],
        response: &[u8],
        response_content_type: &str,
    ) -> Sample {
        let body = |b: &[u8]| CapturedBody {
            bytes: Bytes::copy_from_slice(b),
            size: b.len() as u64,
            truncated: false,
        };
        let mut response_headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(response_content_type) {
            response_headers.insert(http::header::CONTENT_TYPE, v);
        }
        Sample {
            source: SampleSource::Proxy,
            request_id: "synthetic".into(),
            request_id_generated: false,
            trace_id: None,
            span_id: None,
            method: http::Method::POST,
            path: path.into(),
            route: crate::proxy::route::template(path),
            request_headers: http::HeaderMap::new(),
            response_headers,
            response_trailers: http::HeaderMap::new(),
            status: 200,
            grpc_status: None,
            request_body: body(request),
            response_body: body(response),
            timings: Timings {
                start: SystemTime::now(),
                response_headers: None,
                first_byte: None,
                total: Duration::ZERO,
            },
            outcome: Outcome::Complete,
        }
    }
}

/// A body copy under way: frames are appended up to the cap. The lock is held
/// only for a memcpy and is never contended in practice (one writer at a time).
#[derive(Debug)]
pub struct Capture {
    cap: usize,
    size: AtomicU64,
    buf: Option<Mutex<BytesMut>>,
}

impl Capture {
    /// `copy`: false counts bytes only.
    pub fn new(cap: usize, copy: bool) -> Capture {
        Capture {
            cap,
            size: AtomicU64::new(0),
            buf: copy.then(|| Mutex::new(BytesMut::new())),
        }
    }

    pub fn push(&self, chunk: &[u8]) {
        self.size.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(buf) = &self.buf {
            let mut buf = buf.lock().expect("poisoned");
            let room = self.cap.saturating_sub(buf.len());
            if room > 0 {
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
        }
    }

    /// Reads up to `limit` of the bytes captured so far in place, without a copy.
    pub fn with_head<R>(&self, limit: usize, read: impl FnOnce(&[u8]) -> R) -> R {
        match &self.buf {
            Some(b) => {
                let b = b.lock().expect("poisoned");
                read(&b[..b.len().min(limit)])
            }
            None => read(&[]),
        }
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    pub fn finish(&self) -> CapturedBody {
        let size = self.size();
        let bytes = self
            .buf
            .as_ref()
            .map(|b| std::mem::take(&mut *b.lock().expect("poisoned")).freeze())
            .unwrap_or_default();
        CapturedBody {
            truncated: size > self.cap as u64,
            bytes,
            size,
        }
    }
}

/// Decides which requests are sampled.
#[derive(Debug)]
pub struct Sampler {
    /// The rate's f64 bits: a live reload changes it while requests read it.
    rate: AtomicU64,
}

impl Sampler {
    pub fn new(rate: f64) -> Sampler {
        Sampler {
            rate: AtomicU64::new(rate.to_bits()),
        }
    }

    pub fn set_rate(&self, rate: f64) {
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// The rate in force.
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    pub fn decide(&self) -> bool {
        let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
        rate >= 1.0 || (rate > 0.0 && fastrand::f64() < rate)
    }
}

/// The sending side of the bounded sample queue.
#[derive(Debug, Clone)]
pub struct SampleSender {
    tx: mpsc::Sender<Sample>,
    capacity: usize,
    instruments: Instruments,
    gauges: Arc<Gauges>,
    shadow: Option<Arc<crate::rollout::shadow::Shadow>>,
}

/// Reasons a sample is lost before analysis (the `reason` label).
pub mod drop_reason {
    pub const QUEUE_FULL: &str = "queue_full";
    pub const SHUTDOWN: &str = "shutdown";
}

impl SampleSender {
    /// Mirrors a share of the samples offered to a shadow upstream.
    pub fn with_shadow(
        mut self,
        shadow: Option<Arc<crate::rollout::shadow::Shadow>>,
    ) -> SampleSender {
        self.shadow = shadow;
        self
    }

    /// Never waits: a full or closed queue drops the sample and counts it.
    pub fn offer(&self, sample: Sample) {
        if let Some(s) = &self.shadow {
            s.mirror(&sample);
        }
        match self.tx.try_send(sample) {
            Ok(()) => {
                self.instruments.samples_taken.add(1, &[]);
                self.gauges.samples_taken.fetch_add(1, Ordering::Relaxed);
                self.gauges.sample_queue_depth.store(
                    (self.capacity - self.tx.capacity()) as u64,
                    Ordering::Relaxed,
                );
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.gauges
                    .samples_dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                self.instruments
                    .samples_dropped
                    .add(1, &[KeyValue::new(attr::REASON, drop_reason::QUEUE_FULL)])
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.gauges
                    .samples_dropped_shutdown
                    .fetch_add(1, Ordering::Relaxed);
                self.instruments
                    .samples_dropped
                    .add(1, &[KeyValue::new(attr::REASON, drop_reason::SHUTDOWN)])
            }
        }
    }
}

/// Makes the bounded queue.
pub fn queue(
    capacity: usize,
    instruments: Instruments,
    gauges: Arc<Gauges>,
) -> (SampleSender, mpsc::Receiver<Sample>) {
    let (tx, rx) = mpsc::channel(capacity);
    gauges
        .sample_queue_capacity
        .store(capacity as u64, Ordering::Relaxed);
    (
        SampleSender {
            tx,
            capacity,
            instruments,
            gauges,
            shadow: None,
        },
        rx,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_first_bytes_and_counts_all() {
        let c = Capture::new(5, true);
        c.push(b"abc");
        c.push(b"defgh");
        c.push(b"ij");
        let body = c.finish();
        assert_eq!(&body.bytes[..], b"abcde");
        assert_eq!(body.size, 10);
        assert!(body.truncated);
    }

    #[test]
    fn capture_at_exactly_the_cap_is_not_truncated() {
        let c = Capture::new(4, true);
        c.push(b"abcd");
        let body = c.finish();
        assert_eq!(&body.bytes[..], b"abcd");
        assert!(!body.truncated);
    }

    #[test]
    fn counting_only_capture_copies_nothing() {
        let c = Capture::new(4, false);
        c.push(b"abcdef");
        let body = c.finish();
        assert!(body.bytes.is_empty());
        assert_eq!(body.size, 6);
    }

    #[test]
    fn sampler_edges() {
        assert!(Sampler::new(1.0).decide());
        assert!(!Sampler::new(0.0).decide());
        let hits = (0..10_000).filter(|_| Sampler::new(0.25).decide()).count();
        assert!((2000..3000).contains(&hits), "{hits}");
    }
}
