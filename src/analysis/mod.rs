//! Analysis of samples: plain code with no I/O and no knowledge of HTTP
//! servers. The analysis task drains the sample queue and hands each sample to
//! every [`Analyzer`] in turn. Later stages (protocol decoders, quality, drift)
//! plug in here as further analyzers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use tokio::sync::mpsc;

use crate::sample::Sample;
use crate::telemetry::names::attr;
use crate::telemetry::{Gauges, Instruments};

/// One stage of analysis. Implementations are synchronous and do no I/O; they
/// record figures into instruments they were built with.
pub trait Analyzer: Send {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Looks at one sample.
    fn analyze(&mut self, sample: &Sample);
}

/// HTTP-level figures of sampled exchanges: time to first byte and truncated bodies.
pub struct HttpAnalyzer {
    instruments: Instruments,
}

impl HttpAnalyzer {
    pub fn new(instruments: Instruments) -> HttpAnalyzer {
        HttpAnalyzer { instruments }
    }
}

impl Analyzer for HttpAnalyzer {
    fn name(&self) -> &'static str {
        "http"
    }

    fn analyze(&mut self, sample: &Sample) {
        if let Some(ttfb) = sample.timings.first_byte {
            self.instruments.sample_time_to_first_byte.record(
                ttfb.as_secs_f64(),
                &[KeyValue::new(attr::HTTP_ROUTE, sample.route)],
            );
        }
        for (direction, body) in [
            ("request", &sample.request_body),
            ("response", &sample.response_body),
        ] {
            if body.truncated {
                self.instruments
                    .bodies_truncated
                    .add(1, &[KeyValue::new(attr::DIRECTION, direction)]);
            }
        }
    }
}

/// How long the analysis thread waits after a batch before draining again.
/// Batching keeps the proxy from waking this thread once per sample.
const BATCH_PAUSE: Duration = Duration::from_millis(5);

/// Runs analysis on its own OS thread, so that it never competes with the
/// proxy's event loop. Drains the queue until every sender is gone (the proxy
/// has stopped), so samples taken before shutdown are still analyzed.
pub fn spawn(
    mut queue: mpsc::Receiver<Sample>,
    mut analyzers: Vec<Box<dyn Analyzer>>,
    instruments: Instruments,
    gauges: Arc<Gauges>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("modelwatch-analysis".into())
        .spawn(move || {
            // Blocks only while the queue is empty; then takes what has piled up.
            while let Some(first) = queue.blocking_recv() {
                let mut next = Some(first);
                while let Some(sample) = next {
                    for a in analyzers.iter_mut() {
                        a.analyze(&sample);
                    }
                    instruments.samples_analyzed.add(1, &[]);
                    gauges.samples_analyzed.fetch_add(1, Ordering::Relaxed);
                    next = queue.try_recv().ok();
                }
                gauges
                    .sample_queue_depth
                    .store(queue.len() as u64, Ordering::Relaxed);
                std::thread::sleep(BATCH_PAUSE);
            }
            tracing::debug!("analysis queue closed");
        })
}
