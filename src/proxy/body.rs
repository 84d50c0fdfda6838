//! Body wrappers that watch frames as they pass. They never hold a frame back:
//! each frame is returned from `poll_frame` in the same call that received it,
//! after a bounded copy when the request is sampled.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use opentelemetry::trace::Span as _;
use opentelemetry::KeyValue;

use super::llm::{self, LlmExchange};
use super::ProxyCounters;
use crate::sample::{Capture, Outcome, Sample, SampleSender, Timings};
use crate::telemetry::bound::{Finished, HttpLabels};
use crate::telemetry::names::attr;
use crate::telemetry::Instruments;

/// The request body as forwarded to the model server: the client's body as
/// it arrives, or, for a second attempt, the frames the first one forwarded.
#[derive(Debug)]
pub struct RequestBody {
    inner: Source,
    capture: Arc<Capture>,
    replay: Option<Arc<Replay>>,
}

#[derive(Debug)]
enum Source {
    Incoming(Incoming),
    Replayed(Option<Bytes>),
}

impl RequestBody {
    pub fn new(inner: Incoming, capture: Arc<Capture>) -> RequestBody {
        RequestBody {
            inner: Source::Incoming(inner),
            capture,
            replay: None,
        }
    }

    /// Also keeps the forwarded frames (shared `Bytes`, no copy) in `replay`.
    pub fn with_replay(mut self, replay: Arc<Replay>) -> RequestBody {
        self.replay = Some(replay);
        self
    }

    /// The whole body again, for a second attempt.
    pub fn replayed(body: Bytes) -> RequestBody {
        RequestBody {
            inner: Source::Replayed(Some(body)),
            capture: Arc::new(Capture::new(0, false)),
            replay: None,
        }
    }

    /// The body's exact length when it is known before it is read.
    pub fn exact_len(&self) -> Option<u64> {
        self.size_hint().exact()
    }
}

/// The frames of a small request body as they were forwarded, so that the
/// request can be sent again when the model server closed the connection
/// without answering. Made only for a body whose length is known and small
/// (`proxy.retry_body_bytes`); one that turns out longer, or has trailers,
/// cannot be replayed.
#[derive(Debug)]
pub struct Replay {
    expected: u64,
    state: std::sync::Mutex<ReplayState>,
}

#[derive(Debug, Default)]
struct ReplayState {
    frames: Vec<Bytes>,
    len: u64,
    unusable: bool,
}

impl Replay {
    /// For a body of exactly `expected` bytes.
    pub fn new(expected: u64) -> Arc<Replay> {
        Arc::new(Replay {
            expected,
            state: Default::default(),
        })
    }

    fn push(&self, data: &Bytes) {
        let mut s = self.state.lock().expect("poisoned");
        s.len += data.len() as u64;
        if s.len > self.expected {
            s.unusable = true;
            s.frames = Vec::new();
        } else if !s.unusable {
            s.frames.push(data.clone());
        }
    }

    fn unusable(&self) {
        let mut s = self.state.lock().expect("poisoned");
        s.unusable = true;
        s.frames = Vec::new();
    }

    /// The whole body, when every byte of it was forwarded and kept.
    pub fn body(&self) -> Option<Bytes> {
        let s = self.state.lock().expect("poisoned");
        if s.unusable || s.len != self.expected {
            return None;
        }
        match s.frames.as_slice() {
            [] => Some(Bytes::new()),
            [one] => Some(one.clone()),
            many => Some(many.concat().into()),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = match &mut self.inner {
            Source::Incoming(inner) => Pin::new(inner).poll_frame(cx),
            Source::Replayed(body) => {
                return Poll::Ready(
                    body.take()
                        .filter(|b| !b.is_empty())
                        .map(|b| Ok(Frame::data(b))),
                )
            }
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            match frame.data_ref() {
                Some(data) => {
                    self.capture.push(data);
                    if let Some(r) = &self.replay {
                        r.push(data);
                    }
                }
                None => {
                    if let Some(r) = &self.replay {
                        r.unusable();
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Incoming(inner) => inner.is_end_stream(),
            Source::Replayed(body) => body.as_ref().is_none_or(|b| b.is_empty()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Incoming(inner) => inner.size_hint(),
            Source::Replayed(body) => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// One request in flight. Created when the request arrives; when dropped it
/// takes the request out of the active counts, and if the exchange never
/// finished (the client left while the model server was still thinking) it
/// records the request's duration as aborted.
pub struct InFlight {
    pub started: Instant,
    pub started_at: SystemTime,
    counters: Arc<ProxyCounters>,
    instruments: Instruments,
    pub labels: HttpLabels,
    finished: bool,
}

impl InFlight {
    pub fn start(
        counters: Arc<ProxyCounters>,
        instruments: Instruments,
        labels: HttpLabels,
    ) -> InFlight {
        counters.requests_total.fetch_add(1, Ordering::Relaxed);
        counters.requests_active.fetch_add(1, Ordering::Relaxed);
        instruments.add_active(&labels, 1);
        InFlight {
            started: Instant::now(),
            started_at: SystemTime::now(),
            counters,
            instruments,
            labels,
            finished: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counters
            .requests_active
            .fetch_sub(1, Ordering::Relaxed);
        self.instruments.add_active(&self.labels, -1);
        if !self.finished {
            self.instruments.record_http(
                self.labels,
                Finished {
                    status: None,
                    error: Some("aborted"),
                    duration_s: self.started.elapsed().as_secs_f64(),
                    sizes: None,
                },
            );
        }
    }
}

/// What a finished exchange needs to record its figures and hand over its sample.
pub struct Exchange {
    pub in_flight: InFlight,
    pub response_headers_after: Option<Duration>,
    pub request: Arc<Capture>,
    pub span: Option<opentelemetry_sdk::trace::Span>,
    pub sample: Option<PendingSample>,
    /// The status sent to the client (0 until known).
    pub status: u16,
    /// A gRPC call's `grpc-status` (trailers, or a trailers-only answer's headers).
    pub grpc_status: Option<u32>,
    /// LLM routes: the scan that gives the GenAI figures.
    pub llm: Option<LlmExchange>,
}

/// The parts of a sample known before the response body has passed.
pub struct PendingSample {
    pub sender: SampleSender,
    pub request_id: String,
    pub request_id_generated: bool,
    pub method: http::Method,
    pub path: String,
    pub route: &'static str,
    pub request_headers: http::HeaderMap,
    pub response_headers: http::HeaderMap,
    pub response_trailers: http::HeaderMap,
}

impl Exchange {
    /// Records duration, sizes and active requests; ends the span; offers the sample.
    pub fn finish(
        mut self,
        outcome: Outcome,
        first_byte: Option<Duration>,
        response: Option<&Capture>,
    ) {
        self.in_flight.finished = true;
        let total = self.in_flight.started.elapsed();
        let error_type = match outcome {
            Outcome::Complete if self.status >= 500 => Some(status_error(self.status)),
            // A gRPC call fails inside a 200: its status code names the error.
            Outcome::Complete => crate::protocol::grpc::server_failure(self.grpc_status),
            Outcome::Aborted => Some("aborted"),
            Outcome::UpstreamError(kind) => Some(kind),
        };
        let i = &self.in_flight.instruments;
        i.record_http(
            self.in_flight.labels,
            Finished {
                status: Some(self.status),
                error: error_type,
                duration_s: total.as_secs_f64(),
                sizes: Some((self.request.size(), response.map(|r| r.size()).unwrap_or(0))),
            },
        );
        if let Some(x) = self.llm.take() {
            let ending = llm::Ending {
                total,
                outcome,
                status: self.status,
                error_type,
            };
            llm::record(i, x, ending, &self.request, self.span.as_mut());
        }

        let trace_id = self
            .span
            .as_ref()
            .map(|s| s.span_context().trace_id().to_string());
        let span_id = self
            .span
            .as_ref()
            .map(|s| s.span_context().span_id().to_string());
        if let Some(mut span) = self.span.take() {
            span.set_attribute(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                self.status as i64,
            ));
            if let Some(code) = self.grpc_status {
                span.set_attribute(KeyValue::new(attr::RPC_GRPC_STATUS_CODE, code as i64));
            }
            if let Some(e) = error_type {
                span.set_attribute(KeyValue::new(attr::ERROR_TYPE, e));
                span.set_status(opentelemetry::trace::Status::error(e));
            }
            span.end();
        }
        if let Some(p) = self.sample.take() {
            let sample = Sample {
                source: crate::sample::SampleSource::Proxy,
                request_id: p.request_id,
                request_id_generated: p.request_id_generated,
                trace_id,
                span_id,
                method: p.method,
                path: p.path,
                route: p.route,
                request_headers: p.request_headers,
                response_headers: p.response_headers,
                response_trailers: p.response_trailers,
                status: self.status,
                grpc_status: self.grpc_status,
                request_body: self.request.finish(),
                response_body: response.map(|r| r.finish()).unwrap_or_default(),
                timings: Timings {
                    start: self.in_flight.started_at,
                    response_headers: self.response_headers_after,
                    first_byte,
                    total,
                },
                outcome,
            };
            p.sender.offer(sample);
        }
    }
}

fn status_error(status: u16) -> &'static str {
    match status {
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "5xx",
    }
}

/// The response body as forwarded to the client. When it ends, or is dropped
/// because the client went away, the exchange is finished exactly once.
pub struct ResponseBody {
    kind: Kind,
}

// The streamed variant is large, but a body is built once per request and
// boxing it would add an allocation on every request.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Streamed {
        inner: Incoming,
        capture: Capture,
        exchange: Option<Exchange>,
        first_byte: Option<Duration>,
    },
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub fn streamed(inner: Incoming, capture: Capture, exchange: Exchange) -> ResponseBody {
        ResponseBody {
            kind: Kind::Streamed {
                inner,
                capture,
                exchange: Some(exchange),
                first_byte: None,
            },
        }
    }

    /// A body modelwatch wrote itself (an error answer, an upgrade).
    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Streamed {
                inner,
                capture,
                exchange,
                first_byte,
            } => {
                let polled = Pin::new(inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            if let Some(x) = exchange.as_mut() {
                                if first_byte.is_none() && !data.is_empty() {
                                    *first_byte = Some(x.in_flight.started.elapsed());
                                }
                                if let Some(scan) = x.llm.as_mut().and_then(|l| l.scan.as_mut()) {
                                    scan.frame(data, x.in_flight.started.elapsed());
                                }
                            }
                            capture.push(data);
                        } else if let (Some(trailers), Some(x)) =
                            (frame.trailers_ref(), exchange.as_mut())
                        {
                            // gRPC's status travels in the trailers: read for
                            // every call (the error figures), kept for samples.
                            if let Some(code) = crate::protocol::grpc::status(trailers) {
                                x.grpc_status = Some(code);
                            }
                            if let Some(p) = x.sample.as_mut() {
                                p.response_trailers = trailers.clone();
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(x) = exchange.take() {
                            finish_later(x, *first_byte, capture);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(x) = exchange.take() {
                            x.finish(Outcome::UpstreamError("reset"), *first_byte, Some(capture));
                        }
                    }
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Streamed { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Streamed { inner, .. } => inner.size_hint(),
        }
    }
}

/// Finishes a completed exchange in a task of its own. hyper polls the body
/// for its end, or drops it, before it flushes the last bytes to the client;
/// recording the figures there would delay them, so the work runs once this
/// task has yielded. The response's capture goes with it.
fn finish_later(x: Exchange, first_byte: Option<Duration>, capture: &mut Capture) {
    let capture = std::mem::replace(capture, Capture::new(0, false));
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move { x.finish(Outcome::Complete, first_byte, Some(&capture)) });
        }
        Err(_) => x.finish(Outcome::Complete, first_byte, Some(&capture)),
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Kind::Streamed {
            inner,
            capture,
            exchange,
            first_byte,
        } = &mut self.kind
        {
            if let Some(x) = exchange.take() {
                // hyper drops a body whose length it knows as soon as the last
                // byte is written to its buffer, before the flush: a completed
                // exchange (an empty body, a 204 or a HEAD, included) is
                // finished once the bytes are on their way, like one whose end
                // was polled. One cut off is finished now.
                if inner.is_end_stream() {
                    finish_later(x, *first_byte, capture);
                } else {
                    x.finish(Outcome::Aborted, *first_byte, Some(capture));
                }
            }
        }
    }
}
