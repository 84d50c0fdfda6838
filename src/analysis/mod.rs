//! Analysis of samples: plain code with no I/O and no knowledge of HTTP
//! servers. The analysis task drains the sample queue and hands each sample to
//! every [`Analyzer`] in turn. Later stages (protocol decoders, quality, drift)
//! plug in here as further analyzers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

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

/// Drains the queue until every sender is gone (the proxy has stopped), so
/// that samples taken before shutdown are still analyzed.
pub async fn run(
    mut queue: mpsc::Receiver<Sample>,
    mut analyzers: Vec<Box<dyn Analyzer>>,
    instruments: Instruments,
    gauges: Arc<Gauges>,
) {
    while let Some(sample) = queue.recv().await {
        gauges
            .sample_queue_depth
            .store(queue.len() as u64, Ordering::Relaxed);
        for a in analyzers.iter_mut() {
            a.analyze(&sample);
        }
        instruments.samples_analyzed.add(1, &[]);
        gauges.samples_analyzed.fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!("analysis queue closed");
}
