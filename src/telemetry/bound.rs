//! The figures that every request records (the HTTP server histograms and
//! active requests, the GenAI histograms and LLM counters), through
//! instruments bound once per series.
//!
//! An unbound `record` makes the SDK hash every attribute (key and value) to
//! find its series, on every call: a request records about ten figures with up
//! to six attributes each. A bound handle (the SDK's
//! `experimental_metrics_bound_instruments`) skips that lookup. Here one map
//! lookup, on a key of static strings and the status code (or the model
//! labels), finds all of a request's bound handles.
//!
//! Each map is bounded ([`MAX_BOUND`] series): a series past it is recorded
//! unbound, so no figure is lost, only the shortcut. Lookups share a read lock
//! (worker threads do not queue behind each other); a new series takes the
//! write lock once. A handle is bound with the first value of its series: a
//! bound instrument is exported from the moment it is bound, and binding ahead
//! would add empty series.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use opentelemetry::metrics::{BoundCounter, BoundHistogram, BoundUpDownCounter};
use opentelemetry::KeyValue;

use super::names::attr;
use super::InstrumentSet;

/// The most series each map binds; later ones are recorded unbound.
pub const MAX_BOUND: usize = 512;

/// A bounded map from a series key to its bound handles.
struct BoundMap<K, V> {
    map: RwLock<HashMap<K, V>>,
}

impl<K, V> Default for BoundMap<K, V> {
    fn default() -> Self {
        BoundMap {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V> BoundMap<K, V> {
    /// Calls `f` with the handles of `key`, made by `make` when the key is
    /// new and there is room; with None when the map is full.
    fn with<R>(&self, key: &K, make: impl FnOnce() -> V, f: impl FnOnce(Option<&V>) -> R) -> R {
        {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(v) = map.get(key) {
                return f(Some(v));
            }
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(key) && map.len() < MAX_BOUND {
            map.insert(key.clone(), make());
        }
        f(map.get(key))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The labels a request is known by when it arrives (all bounded values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HttpLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub version: &'static str,
    pub scheme: &'static str,
}

impl HttpLabels {
    /// method, route, protocol version and scheme as attributes.
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(6);
        a.extend([
            KeyValue::new(attr::HTTP_REQUEST_METHOD, self.method),
            KeyValue::new(attr::HTTP_ROUTE, self.route),
            KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, self.version),
            KeyValue::new(attr::URL_SCHEME, self.scheme),
        ]);
        a
    }

    /// The attributes of a finished request: the labels, the status code
    /// (when one was sent) and the error type (when it failed).
    pub fn finished(&self, status: Option<u16>, error: Option<&'static str>) -> Vec<KeyValue> {
        let mut a = self.attributes();
        if let Some(s) = status {
            a.push(KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, s as i64));
        }
        if let Some(e) = error {
            a.push(KeyValue::new(attr::ERROR_TYPE, e));
        }
        a
    }

    /// The active-requests attributes: method and scheme, as the convention says.
    fn active(&self) -> [KeyValue; 2] {
        [
            KeyValue::new(attr::HTTP_REQUEST_METHOD, self.method),
            KeyValue::new(attr::URL_SCHEME, self.scheme),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey {
    labels: HttpLabels,
    status: Option<u16>,
    error: Option<&'static str>,
}

struct Series {
    duration: BoundHistogram<f64>,
    /// Request and response size (a request aborted before its end records none).
    sizes: OnceLock<(BoundHistogram<u64>, BoundHistogram<u64>)>,
}

/// The bound HTTP server instruments.
#[derive(Default)]
pub struct HttpBindings {
    series: BoundMap<SeriesKey, Series>,
    active: BoundMap<(&'static str, &'static str), BoundUpDownCounter<i64>>,
}

impl std::fmt::Debug for HttpBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBindings").finish_non_exhaustive()
    }
}

/// One finished request's figures.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// The status sent to the client; None when none was (the client left first).
    pub status: Option<u16>,
    pub error: Option<&'static str>,
    pub duration_s: f64,
    /// Body sizes; None records no size (a request aborted before its end).
    pub sizes: Option<(u64, u64)>,
}

impl InstrumentSet {
    /// Records `http.server.request.duration` and, with `sizes`, the request
    /// and response body sizes of one finished request.
    pub fn record_http(&self, labels: HttpLabels, f: Finished) {
        let key = SeriesKey {
            labels,
            status: f.status,
            error: f.error,
        };
        let attributes = || labels.finished(f.status, f.error);
        let make = || Series {
            duration: self.request_duration.bind(&attributes()),
            sizes: OnceLock::new(),
        };
        self.http.series.with(&key, make, |series| match series {
            Some(s) => {
                s.duration.record(f.duration_s);
                if let Some((request, response)) = f.sizes {
                    let (q, r) = s.sizes.get_or_init(|| {
                        let a = attributes();
                        (
                            self.request_body_size.bind(&a),
                            self.response_body_size.bind(&a),
                        )
                    });
                    q.record(request);
                    r.record(response);
                }
            }
            None => {
                let a = attributes();
                self.request_duration.record(f.duration_s, &a);
                if let Some((request, response)) = f.sizes {
                    self.request_body_size.record(request, &a);
                    self.response_body_size.record(response, &a);
                }
            }
        })
    }

    /// Adds `delta` to `http.server.active_requests` for `labels`' method and scheme.
    pub fn add_active(&self, labels: &HttpLabels, delta: i64) {
        self.http.active.with(
            &(labels.method, labels.scheme),
            || self.active_requests.bind(&labels.active()),
            |bound| match bound {
                Some(c) => c.add(delta),
                None => self.active_requests.add(delta, &labels.active()),
            },
        )
    }
}

/// The labels of an LLM exchange's GenAI series (model names already bounded
/// by `llm.max_models`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GenAiLabels {
    pub operation: &'static str,
    pub request_model: Option<Arc<str>>,
    pub response_model: Option<Arc<str>>,
}

impl GenAiLabels {
    fn attributes(&self) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(6);
        a.push(KeyValue::new(attr::GEN_AI_OPERATION_NAME, self.operation));
        if let Some(m) = &self.request_model {
            a.push(KeyValue::new(
                attr::GEN_AI_REQUEST_MODEL,
                opentelemetry::StringValue::from(m.clone()),
            ));
        }
        if let Some(m) = &self.response_model {
            a.push(KeyValue::new(
                attr::GEN_AI_RESPONSE_MODEL,
                opentelemetry::StringValue::from(m.clone()),
            ));
        }
        a
    }

    fn with(&self, more: impl IntoIterator<Item = KeyValue>) -> Vec<KeyValue> {
        let mut a = self.attributes();
        a.extend(more);
        a
    }
}

/// One GenAI series' bound instruments, each bound when first recorded.
#[derive(Default)]
struct GenAiSeries {
    /// Of exchanges that succeeded (failed ones, with their `error.type`, are
    /// few and recorded unbound).
    duration: OnceLock<BoundHistogram<f64>>,
    ttft: OnceLock<BoundHistogram<f64>>,
    tpot: OnceLock<BoundHistogram<f64>>,
    /// input, output × reported, estimated.
    tokens: [OnceLock<BoundHistogram<u64>>; 4],
    output_chars: OnceLock<BoundHistogram<u64>>,
    empty: OnceLock<BoundCounter<u64>>,
}

/// By operation, streaming, outcome.
type RequestKey = (&'static str, bool, &'static str);

/// The bound GenAI instruments.
#[derive(Default)]
pub struct GenAiBindings {
    series: BoundMap<GenAiLabels, GenAiSeries>,
    requests: BoundMap<RequestKey, BoundCounter<u64>>,
    finish_reasons: BoundMap<&'static str, BoundCounter<u64>>,
}

impl std::fmt::Debug for GenAiBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenAiBindings").finish_non_exhaustive()
    }
}

/// Records into one GenAI series: through its bound instruments, or unbound
/// when the series is past [`MAX_BOUND`].
pub struct GenAiRecorder<'a> {
    set: &'a InstrumentSet,
    labels: &'a GenAiLabels,
    series: Option<&'a GenAiSeries>,
}

impl GenAiRecorder<'_> {
    /// Records `v` into `histogram`: through the handle in the series' `slot`
    /// (bound with `attributes` the first time), or unbound past the bound.
    fn record<T: Copy>(
        &self,
        slot: impl FnOnce(&GenAiSeries) -> &OnceLock<BoundHistogram<T>>,
        histogram: &opentelemetry::metrics::Histogram<T>,
        attributes: impl Fn() -> Vec<KeyValue>,
        v: T,
    ) {
        match self.series {
            Some(s) => slot(s)
                .get_or_init(|| histogram.bind(&attributes()))
                .record(v),
            None => histogram.record(v, &attributes()),
        }
    }

    /// [`Self::record`] with the series' own attributes and no others.
    fn record_plain<T: Copy>(
        &self,
        slot: impl FnOnce(&GenAiSeries) -> &OnceLock<BoundHistogram<T>>,
        histogram: &opentelemetry::metrics::Histogram<T>,
        v: T,
    ) {
        let labels = self.labels;
        self.record(slot, histogram, || labels.attributes(), v)
    }

    /// `gen_ai.server.request.duration`, with `error.type` when it failed
    /// (a failed exchange's series is recorded unbound: failures are few).
    pub fn duration(&self, seconds: f64, error: Option<&'static str>) {
        let (set, labels) = (self.set, self.labels);
        match error {
            None => self.record_plain(|s| &s.duration, &set.gen_ai_duration, seconds),
            Some(e) => set
                .gen_ai_duration
                .record(seconds, &labels.with([KeyValue::new(attr::ERROR_TYPE, e)])),
        }
    }

    /// `gen_ai.server.time_to_first_token`.
    pub fn ttft(&self, seconds: f64) {
        self.record_plain(|s| &s.ttft, &self.set.gen_ai_ttft, seconds)
    }

    /// `gen_ai.server.time_per_output_token`.
    pub fn tpot(&self, seconds: f64) {
        self.record_plain(|s| &s.tpot, &self.set.gen_ai_tpot, seconds)
    }

    /// `gen_ai.client.token.usage` of `kind` ("input" or "output").
    pub fn tokens(&self, kind: &'static str, estimated: bool, n: u64) {
        let labels = self.labels;
        let attributes = || {
            labels.with([
                KeyValue::new(attr::GEN_AI_TOKEN_TYPE, kind),
                KeyValue::new(attr::USAGE_ESTIMATED, estimated),
            ])
        };
        let index = usize::from(kind == "output") * 2 + usize::from(estimated);
        self.record(|s| &s.tokens[index], &self.set.gen_ai_tokens, attributes, n)
    }

    /// The characters of a complete answer.
    pub fn output_chars(&self, n: u64) {
        self.record_plain(|s| &s.output_chars, &self.set.llm_output_characters, n)
    }

    /// A complete answer without text or tool calls.
    pub fn empty(&self) {
        let (set, labels) = (self.set, self.labels);
        match self.series {
            Some(s) => s
                .empty
                .get_or_init(|| set.llm_empty_responses.bind(&labels.attributes()))
                .add(1),
            None => set.llm_empty_responses.add(1, &labels.attributes()),
        }
    }
}

impl InstrumentSet {
    /// Hands `record` a recorder for the GenAI series of `labels`.
    pub fn gen_ai(&self, labels: &GenAiLabels, record: impl FnOnce(&GenAiRecorder)) {
        self.gen_ai_bound
            .series
            .with(labels, GenAiSeries::default, |series| {
                record(&GenAiRecorder {
                    set: self,
                    labels,
                    series,
                })
            })
    }

    /// Counts an LLM request by operation, streaming and outcome.
    pub fn llm_request(&self, operation: &'static str, streaming: bool, outcome: &'static str) {
        let attributes = || {
            [
                KeyValue::new(attr::GEN_AI_OPERATION_NAME, operation),
                KeyValue::new(attr::STREAMING, streaming),
                KeyValue::new(attr::OUTCOME, outcome),
            ]
        };
        self.gen_ai_bound.requests.with(
            &(operation, streaming, outcome),
            || self.llm_requests.bind(&attributes()),
            |bound| match bound {
                Some(c) => c.add(1),
                None => self.llm_requests.add(1, &attributes()),
            },
        )
    }

    /// Counts a finish reason (a bounded label).
    pub fn llm_finish_reason(&self, reason: &'static str) {
        let attributes = [KeyValue::new(attr::REASON, reason)];
        self.gen_ai_bound.finish_reasons.with(
            &reason,
            || self.llm_finish_reasons.bind(&attributes),
            |bound| match bound {
                Some(c) => c.add(1),
                None => self.llm_finish_reasons.add(1, &attributes),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::telemetry::Telemetry;

    fn telemetry(runtime: &tokio::runtime::Runtime) -> Telemetry {
        Telemetry::new(&Config::default(), runtime.handle()).unwrap()
    }

    /// The lines of the Prometheus page that start with one of `prefixes`.
    fn lines(t: &Telemetry, prefixes: &[&str]) -> Vec<String> {
        let mut lines: Vec<String> = t
            .render_prometheus()
            .lines()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    fn assert_same(b: &[String], p: &[String]) {
        let diff: Vec<_> = b.iter().zip(p).filter(|(x, y)| x != y).take(4).collect();
        assert_eq!(b.len(), p.len());
        assert!(diff.is_empty(), "{diff:#?}");
    }

    /// Bound records (more series than the bound, so some go unbound) give
    /// exactly the series, counts, sums and buckets that plain records with
    /// the same attributes give.
    #[test]
    fn bound_records_equal_unbound_ones_and_past_the_bound_nothing_is_lost() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (bound, plain) = (telemetry(&runtime), telemetry(&runtime));
        let routes: Vec<&'static str> = (0..40)
            .map(|r| &*Box::leak(format!("/r{r}").into_boxed_str()))
            .collect();
        let mut n = 0u64;
        for round in 0..3 {
            for (r, route) in routes.iter().enumerate() {
                for status in [200u16, 404, 500, 503] {
                    for error in [None, Some("500"), Some("timeout")] {
                        n += 1;
                        let labels = HttpLabels {
                            method: if r % 2 == 0 { "POST" } else { "GET" },
                            route,
                            version: "1.1",
                            scheme: "http",
                        };
                        let f = Finished {
                            status: (round < 2).then_some(status),
                            error,
                            duration_s: (n % 97) as f64 / 100.0,
                            sizes: (status != 503).then_some((n % 5000, n % 7000)),
                        };
                        bound.instruments.add_active(&labels, 1);
                        bound.instruments.record_http(labels, f);
                        let a = labels.finished(f.status, f.error);
                        let p = &plain.instruments;
                        p.active_requests.add(1, &labels.active());
                        p.request_duration.record(f.duration_s, &a);
                        if let Some((q, s)) = f.sizes {
                            p.request_body_size.record(q, &a);
                            p.response_body_size.record(s, &a);
                        }
                    }
                }
            }
        }
        let series = bound.instruments.http.series.len();
        assert_eq!(
            series, MAX_BOUND,
            "40 routes × 4 statuses × 3 errors × 2 = 960 series"
        );
        let (b, p) = (
            lines(&bound, &["http_server_"]),
            lines(&plain, &["http_server_"]),
        );
        assert!(b.len() > 1000, "{}", b.len());
        assert_same(&b, &p);
    }

    /// The same for the GenAI figures: models past the bound are recorded
    /// unbound, and series that only some requests reach (tokens, empty
    /// answers) appear only once recorded.
    #[test]
    fn bound_gen_ai_records_equal_unbound_ones() {
        use crate::telemetry::names::attr;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (bound, plain) = (telemetry(&runtime), telemetry(&runtime));
        let mut n = 0u64;
        for m in 0..(MAX_BOUND + 40) {
            for error in [None, Some("500")] {
                n += 1;
                let model: Arc<str> = format!("model-{}", m % (MAX_BOUND + 20)).into();
                let labels = GenAiLabels {
                    operation: "chat",
                    request_model: Some(model.clone()),
                    response_model: (m % 3 != 0).then(|| model.clone()),
                };
                let (streaming, outcome) = (
                    m % 2 == 0,
                    if error.is_some() { "error" } else { "complete" },
                );
                let reason = ["stop", "length", "tool_calls"][m % 3];
                let v = (n % 89) as f64 / 10.0;
                let tokens = [
                    ("input", Some(n % 300)),
                    ("output", (m % 4 != 0).then_some(n % 50)),
                ];
                bound.instruments.llm_request("chat", streaming, outcome);
                bound.instruments.llm_finish_reason(reason);
                bound.instruments.gen_ai(&labels, |s| {
                    s.duration(v, error);
                    if streaming {
                        s.ttft(v / 10.0);
                        s.tpot(v / 100.0);
                    }
                    for (kind, t) in tokens {
                        if let Some(t) = t {
                            s.tokens(kind, m % 5 == 0, t);
                        }
                    }
                    if error.is_none() {
                        s.output_chars(n % 700);
                        if m % 7 == 0 {
                            s.empty();
                        }
                    }
                });
                let p = &plain.instruments;
                let base = labels.attributes();
                p.llm_requests.add(
                    1,
                    &[
                        KeyValue::new(attr::GEN_AI_OPERATION_NAME, "chat"),
                        KeyValue::new(attr::STREAMING, streaming),
                        KeyValue::new(attr::OUTCOME, outcome),
                    ],
                );
                p.llm_finish_reasons
                    .add(1, &[KeyValue::new(attr::REASON, reason)]);
                p.gen_ai_duration.record(
                    v,
                    &labels.with(error.map(|e| KeyValue::new(attr::ERROR_TYPE, e))),
                );
                if streaming {
                    p.gen_ai_ttft.record(v / 10.0, &base);
                    p.gen_ai_tpot.record(v / 100.0, &base);
                }
                for (kind, t) in tokens {
                    if let Some(t) = t {
                        let a = labels.with([
                            KeyValue::new(attr::GEN_AI_TOKEN_TYPE, kind),
                            KeyValue::new(attr::USAGE_ESTIMATED, m % 5 == 0),
                        ]);
                        p.gen_ai_tokens.record(t, &a);
                    }
                }
                if error.is_none() {
                    p.llm_output_characters.record(n % 700, &base);
                    if m % 7 == 0 {
                        p.llm_empty_responses.add(1, &base);
                    }
                }
            }
        }
        assert_eq!(bound.instruments.gen_ai_bound.series.len(), MAX_BOUND);
        let prefixes = ["gen_ai_", "modelwatch_llm_"];
        let (b, p) = (lines(&bound, &prefixes), lines(&plain, &prefixes));
        assert!(b.len() > 10_000, "{}", b.len());
        assert_same(&b, &p);
    }
}
