//! OTLP exporters wrapped so that a backend that is down or black-holing never
//! costs more than a bounded, counted loss: failures start a backoff during
//! which exports are skipped (and counted), and finished spans beyond the span
//! queue's bound are dropped (and counted) before they reach the SDK's queue.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter, LogProcessor, SdkLogRecord};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use serde::Serialize;

/// Health of one signal's export, shared with `/v1/status` and the self-metrics.
#[derive(Debug, Default)]
pub struct ExportState {
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
    pub skipped: AtomicU64,
    /// Spans or log records dropped because their queue was full.
    pub dropped: AtomicU64,
    consecutive_failures: AtomicU32,
    backoff_until: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// Why the HTTP client could not send (the exporter itself only says
    /// "network error"): TLS, connection, DNS. Taken by the next failure.
    pub transport_cause: Arc<Mutex<Option<String>>>,
}

/// A snapshot for `/v1/status`.
#[derive(Debug, Serialize)]
pub struct ExportSnapshot {
    pub attempts: u64,
    pub failures: u64,
    pub skipped: u64,
    pub dropped: u64,
    pub backing_off: bool,
    pub last_error: Option<String>,
}

impl ExportState {
    pub fn snapshot(&self) -> ExportSnapshot {
        ExportSnapshot {
            attempts: self.attempts.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            backing_off: self.in_backoff(Instant::now()),
            last_error: self.last_error.lock().expect("poisoned").clone(),
        }
    }

    fn in_backoff(&self, now: Instant) -> bool {
        matches!(*self.backoff_until.lock().expect("poisoned"), Some(until) if now < until)
    }

    fn failed(&self, error: &OTelSdkError, base: Duration, max: Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .min(16);
        let backoff = base.saturating_mul(1 << n).min(max);
        *self.backoff_until.lock().expect("poisoned") = Some(Instant::now() + backoff);
        let cause = self.transport_cause.lock().expect("poisoned").take();
        let text = match &cause {
            Some(c) => format!("{error}: {c}"),
            None => error.to_string(),
        };
        *self.last_error.lock().expect("poisoned") = Some(text.clone());
        tracing::warn!(error = %text, backoff = %humantime::format_duration(backoff), "OTLP export failed");
    }

    fn succeeded(&self) {
        if self.consecutive_failures.swap(0, Ordering::Relaxed) > 0 {
            tracing::info!("OTLP export recovered");
        }
        *self.backoff_until.lock().expect("poisoned") = None;
    }
}

impl ExportState {
    /// Runs one export unless in backoff (then it is skipped and counted), and
    /// records its outcome. Every exporter wrapper goes through here.
    async fn guard<F>(&self, backoff: Backoff, export: impl FnOnce() -> F) -> OTelSdkResult
    where
        F: std::future::Future<Output = OTelSdkResult>,
    {
        if self.in_backoff(Instant::now()) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let result = export().await;
        match &result {
            Ok(()) => self.succeeded(),
            Err(e) => self.failed(e, backoff.base, backoff.max),
        }
        result
    }
}

/// The bound on items (spans, log records) waiting for export: the gate in
/// front of the SDK's batch processor admits an item only while fewer than
/// `capacity` wait, and the exporter reports the items that have left.
#[derive(Debug, Clone)]
pub struct QueueBound {
    pub capacity: u64,
    pub queued: Arc<AtomicU64>,
    pub state: Arc<ExportState>,
}

impl QueueBound {
    pub fn new(capacity: usize, state: Arc<ExportState>) -> QueueBound {
        QueueBound {
            capacity: capacity as u64,
            queued: Arc::new(AtomicU64::new(0)),
            state,
        }
    }

    /// True when the item may enter; otherwise it is counted as dropped.
    fn admit(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn left(&self, n: u64) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Backoff policy shared by the exporters.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

/// A metric exporter that backs off after failures. Metrics are cumulative, so
/// the next successful export carries everything a skipped one would have.
#[derive(Debug)]
pub struct GuardedMetricExporter<E> {
    pub inner: E,
    pub state: Arc<ExportState>,
    pub backoff: Backoff,
}

impl<E: PushMetricExporter> PushMetricExporter for GuardedMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.state
            .guard(self.backoff, || self.inner.export(metrics))
            .await
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// A span exporter that backs off after failures (spans of a skipped batch are
/// lost and counted) and tells the queue gate how many spans have left.
#[derive(Debug)]
pub struct GuardedSpanExporter<E> {
    pub inner: E,
    pub backoff: Backoff,
    pub bound: QueueBound,
}

impl<E: SpanExporter> SpanExporter for GuardedSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self
            .bound
            .state
            .guard(self.backoff, || self.inner.export(batch))
            .await;
        self.bound.left(n);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

/// Admits a finished span to the batch processor only while fewer than
/// `capacity` spans are waiting for export; counts the others as dropped.
#[derive(Debug)]
pub struct SpanQueueGate<P> {
    pub inner: P,
    pub bound: QueueBound,
}

impl<P: SpanProcessor> SpanProcessor for SpanQueueGate<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx)
    }

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() && self.bound.admit() {
            self.inner.on_end(span)
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

/// A log exporter that backs off after failures (the records of a skipped
/// batch are lost and counted) and tells the queue gate how many have left.
#[derive(Debug)]
pub struct GuardedLogExporter<E> {
    pub inner: E,
    pub backoff: Backoff,
    pub bound: QueueBound,
}

impl<E: LogExporter> LogExporter for GuardedLogExporter<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count() as u64;
        let result = self
            .bound
            .state
            .guard(self.backoff, || self.inner.export(batch))
            .await;
        self.bound.left(n);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

/// Admits a log record to the batch processor only while fewer than
/// `capacity` records are waiting for export; counts the others as dropped.
#[derive(Debug)]
pub struct LogQueueGate<P> {
    pub inner: P,
    pub bound: QueueBound,
}

impl<P: LogProcessor> LogProcessor for LogQueueGate<P> {
    fn emit(&self, data: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if self.bound.admit() {
            self.inner.emit(data, scope)
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}
