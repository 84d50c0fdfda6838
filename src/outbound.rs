//! HTTP clients for modelwatch's own calls (alert sinks, shadow requests,
//! scrapes of the model server's metrics, metadata probes), and the two
//! calls they make: a GET of a bounded body and a JSON POST, each with a
//! timeout and an error that says what went wrong.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::config::{BasicAuth, ClientTlsConfig};

/// http:// and https:// (rustls) URLs alike.
pub type HttpClient = Client<HttpsConnector<ProxiedConnector>, Full<Bytes>>;

/// TCP connections, through an HTTP proxy (CONNECT) where `HTTPS_PROXY`,
/// `HTTP_PROXY` or `ALL_PROXY` (and `NO_PROXY`) say so, as curl reads them.
/// Connections to the model server (the proxy's own client, probes) never
/// use one.
#[derive(Clone)]
pub struct ProxiedConnector {
    http: HttpConnector,
    proxies: Option<Arc<hyper_util::client::proxy::matcher::Matcher>>,
}

impl tower_service::Service<http::Uri> for ProxiedConnector {
    type Response = <HttpConnector as tower_service::Service<http::Uri>>::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        match self.proxies.as_ref().and_then(|m| m.intercept(&dst)) {
            Some(via) => {
                let mut tunnel = hyper_util::client::legacy::connect::proxy::Tunnel::new(
                    via.uri().clone(),
                    self.http.clone(),
                );
                if let Some(auth) = via.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { tunnel.call(dst).await.map_err(Into::into) })
            }
            None => {
                let connecting = self.http.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
        }
    }
}

/// A pooled client (idle connections kept for a minute), trusting the system's roots.
pub fn client() -> HttpClient {
    client_for(&ClientTlsConfig::default()).expect("the default TLS settings")
}

/// A pooled client with these TLS settings (checked at start by `validate`).
pub fn client_for(tls: &ClientTlsConfig) -> Result<HttpClient, String> {
    if tls.insecure_skip_verify {
        tracing::warn!("tls.insecure_skip_verify is on for an outbound connection: the server's certificate is not checked");
    }
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector(Duration::from_secs(5), tls, true)?))
}

/// A client that keeps no idle connection: for occasional probes, so that
/// nothing stays open to the model server between them. `tls`: the model
/// server's (`proxy.upstream_tls`), checked at start.
pub fn client_no_pool(tls: &ClientTlsConfig) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector(Duration::from_secs(2), tls, false).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "TLS settings unusable for probes; the system's roots are used");
            connector(Duration::from_secs(2), &ClientTlsConfig::default(), false)
                .expect("the default TLS settings")
        }))
}

/// `use_proxy`: honour the proxy environment variables (not for the model
/// server, which is in the pod).
fn connector(
    connect_timeout: Duration,
    tls: &ClientTlsConfig,
    use_proxy: bool,
) -> Result<HttpsConnector<ProxiedConnector>, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    let proxies = use_proxy
        .then(hyper_util::client::proxy::matcher::Matcher::from_env)
        .map(Arc::new);
    https_connector(tls, Alpn::Http1, ProxiedConnector { http, proxies })
}

/// Which protocols a TLS connection offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
    Both,
}

/// The TLS half of a connector (http:// URLs pass through untouched):
/// [`rustls_config`], `server_name` also sent as SNI, ALPN as asked.
pub fn https_connector<H>(
    tls: &ClientTlsConfig,
    alpn: Alpn,
    inner: H,
) -> Result<HttpsConnector<H>, String> {
    let mut b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls_config(tls)?)
        .https_or_http();
    if !tls.server_name.is_empty() {
        let name = ServerName::try_from(tls.server_name.clone())
            .map_err(|e| format!("server_name {:?}: {e}", tls.server_name))?;
        b = b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    Ok(match alpn {
        Alpn::Http1 => b.enable_http1().wrap_connector(inner),
        Alpn::Http2 => b.enable_http2().wrap_connector(inner),
        Alpn::Both => b.enable_all_versions().wrap_connector(inner),
    })
}

/// rustls (ring): the system's roots plus `ca_file`, an optional client
/// certificate, or, when asked, no verification at all.
pub fn rustls_config(tls: &ClientTlsConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else if !tls.server_name.is_empty() || !tls.ca_file.is_empty() {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier::new(tls, provider)?))
    } else {
        builder.with_root_certificates(roots(tls)?)
    };
    if tls.cert_file.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let pair = crate::inject::tls::ReloadingCert::new(
        tls.cert_file.clone().into(),
        tls.key_file.clone().into(),
    )?;
    Ok(builder.with_client_cert_resolver(Arc::new(ClientCert {
        pair,
        check: Throttle::default(),
    })))
}

/// Lets something through at most once per period (a repeated warning, a
/// look at files that may have changed); lock-free, for hot paths.
#[derive(Debug, Default)]
pub struct Throttle {
    last_ms: std::sync::atomic::AtomicU64,
}

impl Throttle {
    pub fn due(&self, period: Duration) -> bool {
        use std::sync::atomic::Ordering;
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
            + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= period.as_millis() as u64)
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// How often a handshake may look whether certificate files changed.
const FILE_CHECK: Duration = Duration::from_secs(1);

/// A client certificate that follows its files (the admin port's and the
/// injector's reloading pair, [`crate::inject::tls::ReloadingCert`]): before
/// a handshake, at most once a second, a changed pair (a rotated Kubernetes
/// secret) is read again; one that does not load keeps the previous pair.
#[derive(Debug)]
struct ClientCert {
    pair: Arc<crate::inject::tls::ReloadingCert>,
    check: Throttle,
}

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if self.check.due(FILE_CHECK) {
            match self.pair.reload() {
                Ok(true) => tracing::info!("client certificate reloaded"),
                Ok(false) => {}
                // A pair caught half-written is tried again at the next handshake.
                Err(e) => {
                    tracing::warn!(error = %e, "the changed client certificate does not load; the previous one is used")
                }
            }
        }
        Some(self.pair.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The system's roots and `ca_file`'s certificates.
fn roots(tls: &ClientTlsConfig) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if !tls.ca_file.is_empty() {
        for cert in CertificateDer::pem_file_iter(&tls.ca_file)
            .map_err(|e| format!("{}: {e}", tls.ca_file))?
        {
            roots
                .add(cert.map_err(|e| format!("{}: {e}", tls.ca_file))?)
                .map_err(|e| format!("{}: {e}", tls.ca_file))?;
        }
    }
    Ok(roots)
}

/// webpki's verification (chain, validity, name) with two additions: the
/// name checked is `server_name` when set, not the URL's host; and the CA
/// file is looked at again (at most once a second, before a handshake) and
/// read when its content changed, so a rotated CA is trusted without a restart (a file that does
/// not load keeps the previous roots, and says why).
#[derive(Debug)]
struct Verifier {
    tls: ClientTlsConfig,
    name: Option<ServerName<'static>>,
    provider: Arc<CryptoProvider>,
    check: Throttle,
    /// The CA file's content and the verifier built from it.
    state: std::sync::Mutex<(Vec<u8>, Arc<rustls::client::WebPkiServerVerifier>)>,
}

impl Verifier {
    fn new(tls: &ClientTlsConfig, provider: Arc<CryptoProvider>) -> Result<Verifier, String> {
        let name = if tls.server_name.is_empty() {
            None
        } else {
            Some(
                ServerName::try_from(tls.server_name.clone())
                    .map_err(|e| format!("server_name {:?}: {e}", tls.server_name))?,
            )
        };
        let ca = std::fs::read(&tls.ca_file).unwrap_or_default();
        let inner = Self::build(tls, &provider)?;
        Ok(Verifier {
            tls: tls.clone(),
            name,
            provider,
            check: Throttle::default(),
            state: std::sync::Mutex::new((ca, inner)),
        })
    }

    fn build(
        tls: &ClientTlsConfig,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<rustls::client::WebPkiServerVerifier>, String> {
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots(tls)?),
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string())
    }

    fn current(&self) -> Arc<rustls::client::WebPkiServerVerifier> {
        let mut s = self.state.lock().expect("poisoned");
        if !self.tls.ca_file.is_empty() && self.check.due(FILE_CHECK) {
            // A file missing for a moment (being replaced) is no change.
            match std::fs::read(&self.tls.ca_file) {
                Ok(ca) if ca != s.0 => match Self::build(&self.tls, &self.provider) {
                    Ok(inner) => {
                        tracing::info!(ca_file = %self.tls.ca_file, "CA file reloaded");
                        *s = (ca, inner);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the changed CA file does not load; the previous roots are used")
                    }
                },
                _ => {}
            }
        }
        s.1.clone()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.name.as_ref().unwrap_or(server_name);
        self.current()
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate is taken; signatures are still
/// checked, so the handshake itself is sound.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `Authorization` header of a call: basic (the password read from its
/// file now) or bearer (the token read from its file now); None without
/// either. Secrets are read at each call, so a rotated file is picked up,
/// and they never reach a log.
pub fn authorization(
    basic: &BasicAuth,
    bearer_token_file: &str,
) -> Result<Option<(String, String)>, String> {
    use base64::Engine;
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| format!("cannot read {path}: {e}"))
    };
    if !basic.username.is_empty() {
        let password = read(&basic.password_file)?;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{password}", basic.username));
        return Ok(Some(("authorization".into(), format!("Basic {token}"))));
    }
    if !bearer_token_file.is_empty() {
        return Ok(Some((
            "authorization".into(),
            format!("Bearer {}", read(bearer_token_file)?),
        )));
    }
    Ok(None)
}

fn no_answer(timeout: Duration) -> String {
    format!("no answer within {}", humantime::format_duration(timeout))
}

fn describe(e: hyper_util::client::legacy::Error) -> String {
    // The whole chain: a TLS failure says why (unknown issuer, another name).
    crate::telemetry::tls::error_chain(&e)
}

/// GET `url`; the body of a 2xx answer, read up to `limit` bytes.
pub async fn get(
    client: &HttpClient,
    url: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, String> {
    match get_answer(client, url, limit, timeout).await? {
        (status, body) if status.is_success() => Ok(body),
        (status, _) => Err(format!("HTTP {status}")),
    }
}

/// GET `url`; the status and body of any answer, the body read up to
/// `limit` bytes.
pub async fn get_answer(
    client: &HttpClient,
    url: &str,
    limit: usize,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), String> {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let call = async {
        let resp = client.request(req).await.map_err(describe)?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(no_answer(timeout)))
}

/// POST a JSON `body` with `headers`; Ok when the answer is 2xx.
pub async fn post(
    client: &HttpClient,
    url: &str,
    body: Bytes,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    let mut req = http::Request::post(url).header(http::header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let call = async {
        let resp = client.request(req).await.map_err(describe)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(no_answer(timeout)))
}
