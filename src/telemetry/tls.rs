//! TLS of the OTLP exporter over HTTP: the blocking client the exporter runs
//! on its own threads, with modelwatch's one rustls configuration
//! ([`crate::outbound::rustls_config`]: system roots, a CA file, an optional
//! client certificate). The exporter reports any
//! transport failure as "network error"; the client kept here records the
//! real cause (unknown issuer, name mismatch, expired, refused) for the log
//! and `/v1/status`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};

use crate::config::{ClientTlsConfig, OtlpConfig};

/// Checks the TLS files of `telemetry.otlp.tls` at start: `(key, value,
/// what is accepted)` of the first problem.
pub fn check(tls: &ClientTlsConfig) -> Result<(), (String, String, String)> {
    check_at("telemetry.otlp.tls", tls)
}

/// Checks the TLS files of the section `at` (e.g. `alerts.alertmanager.tls`)
/// by building the client configuration every client uses
/// ([`crate::outbound::rustls_config`]).
pub fn check_at(at: &str, tls: &ClientTlsConfig) -> Result<(), (String, String, String)> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    if !tls.ca_file.is_empty() {
        let key = format!("{at}.ca_file");
        if let Err(e) = std::fs::metadata(&tls.ca_file) {
            return Err((
                key,
                tls.ca_file.clone(),
                format!("a readable PEM file ({e})"),
            ));
        }
        let certs = CertificateDer::pem_file_iter(&tls.ca_file)
            .map(|certs| certs.filter(Result::is_ok).count())
            .unwrap_or(0);
        if certs == 0 {
            return Err((
                key,
                tls.ca_file.clone(),
                "a PEM file of one or more CA certificates".into(),
            ));
        }
    }
    match (tls.cert_file.is_empty(), tls.key_file.is_empty()) {
        (true, false) => {
            return Err((
                format!("{at}.cert_file"),
                String::new(),
                format!("a client certificate to go with {at}.key_file"),
            ))
        }
        (false, true) => {
            return Err((
                format!("{at}.key_file"),
                String::new(),
                format!("the private key of {at}.cert_file"),
            ))
        }
        _ => {}
    }
    if !tls.server_name.is_empty()
        && rustls_pki_types::ServerName::try_from(tls.server_name.as_str()).is_err()
    {
        return Err((
            format!("{at}.server_name"),
            tls.server_name.clone(),
            "a DNS name or an IP address, e.g. model.internal".into(),
        ));
    }
    crate::outbound::rustls_config(tls)
        .map(|_| ())
        .map_err(|e| {
            (
                format!("{at}.cert_file"),
                tls.cert_file.clone(),
                format!("a PEM certificate chain whose key is {at}.key_file ({e})"),
            )
        })
}

/// An OTLP/gRPC channel to an `https://` endpoint: HTTP/2 over rustls with
/// [`crate::outbound::rustls_config`]'s settings, connected on first use.
/// Call inside the runtime.
pub fn grpc_channel(
    otlp: &crate::config::OtlpConfig,
    url: &str,
) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{url}: {e}"))?
        .timeout(otlp.timeout)
        .connect_timeout(otlp.timeout);
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector =
        crate::outbound::https_connector(&otlp.tls, crate::outbound::Alpn::Http2, http)?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// The exporter's HTTP client; records why a request could not be sent.
#[derive(Debug, Clone)]
pub struct OtlpHttpClient {
    inner: reqwest_otlp::blocking::Client,
    cause: Arc<Mutex<Option<String>>>,
}

impl OtlpHttpClient {
    pub fn new(otlp: &OtlpConfig, cause: Arc<Mutex<Option<String>>>) -> Result<Self, String> {
        if otlp.tls.insecure_skip_verify {
            tracing::warn!("telemetry.otlp.tls.insecure_skip_verify is on: the OTLP receiver's certificate is not checked, anyone in the path can read and change the exported data");
        }
        // The same rustls configuration as every other client of modelwatch.
        let inner = reqwest_otlp::blocking::Client::builder()
            .timeout(otlp.timeout)
            .tls_backend_preconfigured(crate::outbound::rustls_config(&otlp.tls)?)
            .build()
            .map_err(|e| error_chain(&e))?;
        Ok(OtlpHttpClient { inner, cause })
    }
}

/// An error and its sources, outermost first: "error sending request …:
/// client error (Connect): invalid peer certificate: UnknownIssuer".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        match self.inner.send_bytes(request).await {
            Ok(r) => Ok(r),
            Err(e) => {
                *self.cause.lock().expect("poisoned") = Some(error_chain(&*e));
                Err(e)
            }
        }
    }
}
