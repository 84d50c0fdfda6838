//! The least a reverse proxy built on hyper and tokio does per request: the
//! floor under modelwatch's request path, for `benches/proxy.sh`-style
//! comparisons (docs/benchmarks.md, "The floor of the stack").
//!
//! It forwards every request to the upstream with nothing watched, counted or
//! copied, on the same single-threaded runtime modelwatch uses, in one of two
//! ways:
//!
//! - `pooled` (default): hyper-util's pooled client, as modelwatch uses it;
//! - `paired`: each client connection gets one upstream connection of its
//!   own (`hyper::client::conn::http1`), kept while the client stays, so that
//!   no pool is consulted per request.
//!
//! ```sh
//! cargo run --release --example hyper_floor -- 127.0.0.1:18080 127.0.0.1:18081 [pooled|paired]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Pooled = Client<HttpConnector, Incoming>;

fn upstream_uri(upstream: &str, req: &Request<Incoming>) -> Uri {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("http://{upstream}{path}").parse().expect("uri")
}

async fn pooled(
    client: Pooled,
    upstream: Arc<str>,
    mut req: Request<Incoming>,
) -> Response<http_body_util::Either<Incoming, String>> {
    *req.uri_mut() = upstream_uri(&upstream, &req);
    match client.request(req).await {
        Ok(r) => r.map(http_body_util::Either::Left),
        Err(e) => bad_gateway(e),
    }
}

fn bad_gateway(e: impl std::fmt::Display) -> Response<http_body_util::Either<Incoming, String>> {
    let mut r = Response::new(http_body_util::Either::Right(e.to_string()));
    *r.status_mut() = http::StatusCode::BAD_GATEWAY;
    r
}

/// One client connection's own upstream connection, opened on first use.
type Paired = Arc<Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>>;

async fn paired(
    conn: Paired,
    upstream: Arc<str>,
    req: Request<Incoming>,
) -> Response<http_body_util::Either<Incoming, String>> {
    let mut guard = conn.lock().await;
    if guard.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = match TcpStream::connect(&*upstream).await {
            Ok(s) => s,
            Err(e) => return bad_gateway(e),
        };
        let _ = stream.set_nodelay(true);
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok((send, connection)) => {
                tokio::spawn(connection);
                *guard = Some(send);
            }
            Err(e) => return bad_gateway(e),
        }
    }
    let send = guard.as_mut().expect("connected");
    if send.ready().await.is_err() {
        *guard = None;
        return bad_gateway("upstream connection closed");
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .expect("path");
    match send.send_request(Request::from_parts(parts, body)).await {
        Ok(r) => r.map(http_body_util::Either::Left),
        Err(e) => bad_gateway(e),
    }
}

/// How a client connection's requests reach the upstream.
#[derive(Clone)]
enum Way {
    Pooled(Arc<Pooled>),
    Paired(Paired),
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or("127.0.0.1:18080".into())
        .parse()
        .expect("listen address");
    let upstream: Arc<str> = args.next().unwrap_or("127.0.0.1:18081".into()).into();
    let mode = args.next().unwrap_or("pooled".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await.expect("bind");
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Arc<Pooled> = Arc::new(
            Client::builder(TokioExecutor::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(connector),
        );
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let upstream = upstream.clone();
            let builder = builder.clone();
            let way = if mode == "paired" {
                Way::Paired(Paired::default())
            } else {
                Way::Pooled(client.clone())
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let way = way.clone();
                    let upstream = upstream.clone();
                    async move {
                        Ok::<_, Infallible>(match way {
                            Way::Pooled(client) => pooled((*client).clone(), upstream, req).await,
                            Way::Paired(conn) => paired(conn, upstream, req).await,
                        })
                    }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
