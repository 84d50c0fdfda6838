//! The data path: a reverse proxy (HTTP/1.1 and h2c) that forwards every byte
//! as it arrives, and hands sampled copies to the sample queue without waiting.

pub mod body;
pub mod error;
pub mod headers;
pub mod llm;
pub mod route;

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Tracer;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, UpstreamHttpVersion};
use crate::sample::{Capture, Outcome, SampleSender, Sampler};
use crate::telemetry::names::attr;
use crate::telemetry::Instruments;
use body::{Exchange, InFlight, PendingSample, Replay, RequestBody, ResponseBody};
use error::ProxyError;

type UpstreamClient = Client<hyper_rustls::HttpsConnector<CountingConnector>, RequestBody>;

/// The upstream connector, counting each new connection to the model server
/// (requests over a pooled connection do not connect: their share is the reuse rate).
#[derive(Clone)]
pub struct CountingConnector {
    inner: HttpConnector,
    connections: Arc<ProxyCounters>,
}

impl tower_service::Service<http::Uri> for CountingConnector {
    type Response = <HttpConnector as tower_service::Service<http::Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<http::Uri>>::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let counters = self.connections.clone();
        Box::pin(async move {
            let conn = connecting.await?;
            counters
                .upstream_connections
                .fetch_add(1, Ordering::Relaxed);
            Ok(conn)
        })
    }
}

/// Live counts for `/v1/status` and the leak tests.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    pub requests_active: AtomicI64,
    pub requests_total: AtomicU64,
    pub upgrades_active: AtomicI64,
    /// New TCP connections to the model server.
    pub upstream_connections: AtomicU64,
}

/// A snapshot of [`ProxyCounters`].
#[derive(Debug, Serialize)]
pub struct CountersSnapshot {
    pub connections_open: i64,
    pub connections_total: u64,
    pub requests_active: i64,
    pub requests_total: u64,
    pub upgrades_active: i64,
    pub upstream_connections: u64,
}

/// Registers the connection and request counts as observable instruments.
pub fn register_counters(meter: &opentelemetry::metrics::Meter, counters: Arc<ProxyCounters>) {
    use crate::telemetry::names::*;
    use crate::telemetry::{u64_counter, u64_gauge};
    let c = counters.clone();
    u64_counter(meter, CLIENT_CONNECTIONS, move |o| {
        o.observe(c.connections_total.load(Ordering::Relaxed), &[])
    });
    let c = counters.clone();
    u64_gauge(meter, CLIENT_CONNECTIONS_OPEN, move |o| {
        o.observe(
            c.connections_open.load(Ordering::Relaxed).max(0) as u64,
            &[],
        )
    });
    let c = counters.clone();
    u64_counter(meter, PROXY_REQUESTS, move |o| {
        o.observe(c.requests_total.load(Ordering::Relaxed), &[])
    });
    u64_counter(meter, UPSTREAM_CONNECTIONS, move |o| {
        o.observe(counters.upstream_connections.load(Ordering::Relaxed), &[])
    });
}

impl ProxyCounters {
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            requests_active: self.requests_active.load(Ordering::Relaxed),
            requests_total: self.requests_total.load(Ordering::Relaxed),
            upgrades_active: self.upgrades_active.load(Ordering::Relaxed),
            upstream_connections: self.upstream_connections.load(Ordering::Relaxed),
        }
    }
}

/// Everything a request handler needs, shared by all connections.
pub struct Proxy {
    tls_warned: crate::outbound::Throttle,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    http1: UpstreamClient,
    http2: UpstreamClient,
    version: UpstreamHttpVersion,
    response_header_timeout: Duration,
    request_id_header: HeaderName,
    pub sampler: Arc<Sampler>,
    max_body_bytes: usize,
    retry_body_bytes: usize,
    samples: SampleSender,
    instruments: Instruments,
    tracer: Option<Tracer>,
    /// LLM scanning: bounded model labels and the plain-answer cap (None: off).
    llm: Option<(Arc<llm::ModelLabels>, usize)>,
    pub counters: Arc<ProxyCounters>,
}

/// The client towards the model server: plain TCP for `http://`, rustls for
/// `https://` (`proxy.upstream_tls`), where HTTP/2 is taken when the server
/// offers it by ALPN (the HTTP/2 client offers only h2).
fn client(config: &Config, http2: bool, counters: Arc<ProxyCounters>) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.proxy.connect_timeout));
    connector.enforce_http(false);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(config.proxy.pool_idle_timeout)
        .pool_max_idle_per_host(config.proxy.pool_max_idle)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .timer(hyper_util::rt::TokioTimer::new());
    if http2 {
        builder.http2_only(true);
    }
    let alpn = if http2 {
        crate::outbound::Alpn::Http2
    } else {
        crate::outbound::Alpn::Both
    };
    let counting = CountingConnector {
        inner: connector,
        connections: counters,
    };
    builder.build(
        crate::outbound::https_connector(&config.proxy.upstream_tls, alpn, counting)
            .expect("proxy.upstream_tls checked at start"),
    )
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);
impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);
impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

use crate::protocol::grpc::is_grpc;

fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

fn version_label(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "other",
    }
}

impl Proxy {
    pub fn new(
        config: &Config,
        samples: SampleSender,
        instruments: Instruments,
        tracer: Option<Tracer>,
    ) -> Proxy {
        let upstream = config.upstream().expect("validated");
        let counters = Arc::new(ProxyCounters::default());
        Proxy {
            tls_warned: crate::outbound::Throttle::default(),
            scheme: upstream.scheme,
            authority: upstream.authority,
            http1: client(config, false, counters.clone()),
            http2: client(config, true, counters.clone()),
            version: config.proxy.upstream_http_version,
            response_header_timeout: config.proxy.response_header_timeout,
            request_id_header: HeaderName::from_bytes(config.proxy.request_id_header.as_bytes())
                .expect("validated"),
            sampler: Arc::new(Sampler::new(config.sampling.rate)),
            max_body_bytes: config.sampling.max_body_bytes,
            retry_body_bytes: config.proxy.retry_body_bytes,
            samples,
            instruments,
            tracer,
            llm: config.llm.enabled.then(|| {
                (
                    Arc::new(llm::ModelLabels::new(config.llm.max_models)),
                    config.llm.max_body_bytes,
                )
            }),
            counters,
        }
    }

    /// The same proxy in front of another port of the model server
    /// (`proxy.extra_ports`): it shares the upstream clients and their pools,
    /// the sampler, the sample queue and the counters.
    pub fn for_upstream(&self, upstream: crate::config::Upstream) -> Proxy {
        Proxy {
            tls_warned: crate::outbound::Throttle::default(),
            scheme: upstream.scheme,
            authority: upstream.authority,
            http1: self.http1.clone(),
            http2: self.http2.clone(),
            version: self.version,
            response_header_timeout: self.response_header_timeout,
            request_id_header: self.request_id_header.clone(),
            sampler: self.sampler.clone(),
            max_body_bytes: self.max_body_bytes,
            retry_body_bytes: self.retry_body_bytes,
            samples: self.samples.clone(),
            instruments: self.instruments.clone(),
            tracer: self.tracer.clone(),
            llm: self.llm.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Handles one request: forward, watch, never fail because of monitoring.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client_ip: HeaderValue,
    ) -> Response<ResponseBody> {
        let (mut parts, incoming) = req.into_parts();
        let method = method_label(&parts.method);
        let route = route::template(parts.uri.path());
        let client_version = parts.version;
        let in_flight = InFlight::start(
            self.counters.clone(),
            self.instruments.clone(),
            crate::telemetry::bound::HttpLabels {
                method,
                route,
                version: version_label(client_version),
                scheme: "http",
            },
        );
        let sampled = self.sampler.decide();

        let (request_id, request_id_generated) =
            headers::request_id(&parts.headers, &self.request_id_header);
        parts
            .headers
            .insert(self.request_id_header.clone(), request_id.clone());
        let span = if sampled {
            self.start_span(&mut parts, method, route, &request_id)
        } else {
            None
        };
        let pending = sampled.then(|| PendingSample {
            sender: self.samples.clone(),
            request_id: request_id.to_str().unwrap_or("").to_string(),
            request_id_generated,
            method: parts.method.clone(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            route,
            request_headers: parts.headers.clone(),
            response_headers: http::HeaderMap::new(),
            response_trailers: http::HeaderMap::new(),
        });
        let llm = self.llm.as_ref().and_then(|(labels, max_body)| {
            crate::protocol::openai::operation_for_path(parts.uri.path()).map(|operation| {
                llm::LlmExchange {
                    operation,
                    scan: None,
                    labels: labels.clone(),
                    max_body: *max_body,
                }
            })
        });
        // LLM routes keep the head of every request body: the model name is there.
        let request_capture = Arc::new(match (sampled, llm.is_some()) {
            (true, _) => Capture::new(self.max_body_bytes, true),
            (false, true) => Capture::new(4096, true),
            (false, false) => Capture::new(0, false),
        });
        let mut exchange = Exchange {
            in_flight,
            response_headers_after: None,
            request: request_capture.clone(),
            span,
            sample: pending,
            status: 0,
            grpc_status: None,
            llm,
        };

        let upgrade = client_version == Version::HTTP_11 && headers::is_upgrade(&parts.headers);
        let host = match parts.headers.get(http::header::HOST) {
            Some(h) => Some(h.clone()),
            None => parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        headers::remove_hop_by_hop(&mut parts.headers, upgrade);
        headers::add_forwarded(&mut parts.headers, &client_ip, host);

        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        match http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
        {
            Ok(uri) => parts.uri = uri,
            Err(_) => return self.fail(ProxyError::Internal, exchange, request_id),
        }
        let use_http2 = match self.version {
            UpstreamHttpVersion::Http2 => true,
            UpstreamHttpVersion::Http1 => false,
            // HTTP/2 only for gRPC: it needs HTTP/2 end to end, while most model
            // servers (uvicorn, for one) speak no h2c, so other HTTP/2 clients
            // are translated to HTTP/1.1.
            UpstreamHttpVersion::Auto => {
                client_version == Version::HTTP_2 && is_grpc(&parts.headers)
            }
        };
        parts.version = if use_http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        if use_http2 {
            parts.headers.remove(http::header::HOST);
        }

        let mut body = RequestBody::new(incoming, request_capture);
        // A small HTTP/1.1 request keeps its forwarded frames, to be sent once
        // more if the model server closes the connection without answering.
        let replay = match body.exact_len() {
            Some(n) if !use_http2 && !upgrade && n <= self.retry_body_bytes as u64 => {
                let r = Replay::new(n);
                body = body.with_replay(r.clone());
                Some((
                    r,
                    parts.method.clone(),
                    parts.uri.clone(),
                    parts.headers.clone(),
                ))
            }
            _ => None,
        };
        let mut upstream_req = Request::from_parts(parts, body);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut upstream_req));
        let client = if use_http2 { &self.http2 } else { &self.http1 };
        let deadline = tokio::time::Instant::now() + self.response_header_timeout;
        let sent = tokio::time::timeout_at(deadline, client.request(upstream_req)).await;
        let sent = match (sent, replay) {
            (Ok(Err(e)), Some((replay, method, uri, headers)))
                if ProxyError::classify(&e) == ProxyError::Reset =>
            {
                match replay.body() {
                    Some(again) => {
                        tracing::debug!(error = %e, "the model server closed the connection without answering; sending the request again");
                        self.instruments.upstream_retries.add(1, &[]);
                        let mut retry = Request::new(RequestBody::replayed(again));
                        *retry.method_mut() = method;
                        *retry.uri_mut() = uri;
                        *retry.headers_mut() = headers;
                        tokio::time::timeout_at(deadline, client.request(retry)).await
                    }
                    None => Ok(Err(e)),
                }
            }
            (sent, _) => sent,
        };
        let mut response = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let kind = ProxyError::classify(&e);
                match error::tls_cause(&e) {
                    // Said at WARN (at most every 10 s): a certificate problem
                    // fails every request until someone fixes it.
                    Some(cause) if self.tls_warned.due(std::time::Duration::from_secs(10)) => {
                        tracing::warn!(cause = %cause, upstream = %self.authority, "TLS handshake with the model server failed")
                    }
                    _ => tracing::debug!(error = %e, kind = kind.kind(), "upstream request failed"),
                }
                return self.fail(kind, exchange, request_id);
            }
            Err(_) => return self.fail(ProxyError::ResponseTimeout, exchange, request_id),
        };
        exchange.response_headers_after = Some(exchange.in_flight.started.elapsed());
        let status = response.status();
        exchange.status = status.as_u16();
        if is_grpc(response.headers()) {
            // A trailers-only answer (an error without a body) has it here.
            exchange.grpc_status = crate::protocol::grpc::status(response.headers());
        }
        if let Some(l) = exchange.llm.as_mut() {
            let streaming = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes().starts_with(b"text/event-stream"))
                .unwrap_or(false);
            l.scan = Some(llm::LlmScan::new(l.operation, streaming, l.max_body));
        }

        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                let counters = self.counters.clone();
                counters.upgrades_active.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                        let mut c = TokioIo::new(c);
                        let mut u = TokioIo::new(u);
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                    counters.upgrades_active.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }

        let (mut rparts, rbody) = response.into_parts();
        headers::remove_hop_by_hop(
            &mut rparts.headers,
            status == StatusCode::SWITCHING_PROTOCOLS,
        );
        rparts
            .headers
            .insert(self.request_id_header.clone(), request_id);
        rparts.version = client_version;
        if let Some(p) = exchange.sample.as_mut() {
            p.response_headers = rparts.headers.clone();
        }
        let body =
            ResponseBody::streamed(rbody, Capture::new(self.max_body_bytes, sampled), exchange);
        Response::from_parts(rparts, body)
    }

    /// Starts the request's span as a child of the client's `traceparent`, and
    /// passes the span's own context on to the model server.
    fn start_span(
        &self,
        parts: &mut http::request::Parts,
        method: &'static str,
        route: &'static str,
        request_id: &HeaderValue,
    ) -> Option<opentelemetry_sdk::trace::Span> {
        let tracer = self.tracer.as_ref()?;
        let propagator = TraceContextPropagator::new();
        let parent = propagator.extract(&HeaderExtractor(&parts.headers));
        let span = tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new(attr::HTTP_REQUEST_METHOD, method),
                KeyValue::new(attr::HTTP_ROUTE, route),
                KeyValue::new(attr::URL_PATH, parts.uri.path().to_string()),
                KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, version_label(parts.version)),
                KeyValue::new(
                    attr::REQUEST_ID,
                    request_id.to_str().unwrap_or("").to_string(),
                ),
            ])
            .start_with_context(tracer, &parent);
        let cx = opentelemetry::Context::new()
            .with_remote_span_context(opentelemetry::trace::Span::span_context(&span).clone());
        propagator.inject_context(&cx, &mut HeaderInjector(&mut parts.headers));
        Some(span)
    }

    /// Answers for the model server when it could not: JSON body, figures recorded.
    fn fail(
        &self,
        error: ProxyError,
        mut exchange: Exchange,
        request_id: HeaderValue,
    ) -> Response<ResponseBody> {
        exchange.status = error.status().as_u16();
        self.instruments
            .upstream_errors
            .add(1, &[KeyValue::new(attr::ERROR_TYPE, error.kind())]);
        let body = error.body(request_id.to_str().unwrap_or(""));
        let response_capture = Capture::new(0, false);
        response_capture.push(&body);
        exchange.finish(
            Outcome::UpstreamError(error.kind()),
            None,
            Some(&response_capture),
        );
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(self.request_id_header.clone(), request_id);
        response
    }
}

/// Accepts connections until `shutdown` fires, then lets in-flight requests
/// and streams finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new());
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let p = proxy.clone();
        let client_ip = headers::client_ip(peer.ip());
        let service = hyper::service::service_fn(move |req| {
            let p = p.clone();
            let client_ip = client_ip.clone();
            async move { Ok::<_, Infallible>(p.handle(req, client_ip).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let counters = proxy.counters.clone();
        counters.connections_open.fetch_add(1, Ordering::Relaxed);
        counters.connections_total.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            counters.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    let open = proxy.counters.connections_open.load(Ordering::Relaxed);
    tracing::info!(open_connections = open, grace = %humantime::format_duration(grace), "proxy stopped accepting; draining");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!(
            open_connections = proxy.counters.connections_open.load(Ordering::Relaxed),
            "grace period over; closing the remaining connections"
        ),
    }
}
