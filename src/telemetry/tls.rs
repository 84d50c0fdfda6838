//! TLS of the OTLP exporter over HTTP: rustls (ring) with the system's
//! roots, a CA file and an optional client certificate, in the blocking
//! client the exporter runs on its own threads. The exporter reports any
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

/// Checks the TLS files of the section `at` (e.g. `alerts.alertmanager.tls`).
pub fn check_at(at: &str, tls: &ClientTlsConfig) -> Result<(), (String, String, String)> {
    let read = |key: &str, path: &str| -> Result<Vec<u8>, (String, String, String)> {
        std::fs::read(path).map_err(|e| {
            (
                key.to_string(),
                path.to_string(),
                format!("a readable PEM file ({e})"),
            )
        })
    };
    if !tls.ca_file.is_empty() {
        let pem = read(&format!("{at}.ca_file"), &tls.ca_file)?;
        match reqwest_otlp::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => {}
            _ => {
                return Err((
                    format!("{at}.ca_file"),
                    tls.ca_file.clone(),
                    "a PEM file of one or more CA certificates".into(),
                ))
            }
        }
    }
    match (tls.cert_file.is_empty(), tls.key_file.is_empty()) {
        (true, true) => Ok(()),
        (false, false) => identity(tls).map(|_| ()).map_err(|e| {
            (
                format!("{at}.cert_file"),
                tls.cert_file.clone(),
                format!("a PEM certificate chain whose key is {at}.key_file ({e})"),
            )
        }),
        (true, false) => Err((
            format!("{at}.cert_file"),
            String::new(),
            format!("a client certificate to go with {at}.key_file"),
        )),
        (false, true) => Err((
            format!("{at}.key_file"),
            String::new(),
            format!("the private key of {at}.cert_file"),
        )),
    }
}

fn identity(tls: &ClientTlsConfig) -> Result<reqwest_otlp::Identity, String> {
    let mut pem = std::fs::read(&tls.key_file).map_err(|e| format!("{}: {e}", tls.key_file))?;
    pem.push(b'\n');
    pem.extend(std::fs::read(&tls.cert_file).map_err(|e| format!("{}: {e}", tls.cert_file))?);
    reqwest_otlp::Identity::from_pem(&pem).map_err(|e| e.to_string())
}

/// The exporter's HTTP client; records why a request could not be sent.
#[derive(Debug, Clone)]
pub struct OtlpHttpClient {
    inner: reqwest_otlp::blocking::Client,
    cause: Arc<Mutex<Option<String>>>,
}

impl OtlpHttpClient {
    pub fn new(otlp: &OtlpConfig, cause: Arc<Mutex<Option<String>>>) -> Result<Self, String> {
        // One crypto provider for the process: ring, as the webhook's TLS.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = &otlp.tls;
        let mut b = reqwest_otlp::blocking::Client::builder()
            .timeout(otlp.timeout)
            .tls_backend_rustls();
        if !tls.ca_file.is_empty() {
            let pem = std::fs::read(&tls.ca_file).map_err(|e| format!("{}: {e}", tls.ca_file))?;
            let certs = reqwest_otlp::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: {e}", tls.ca_file))?;
            b = b.tls_certs_merge(certs);
        }
        if !tls.cert_file.is_empty() {
            b = b.identity(identity(tls)?);
        }
        if tls.insecure_skip_verify {
            tracing::warn!("telemetry.otlp.tls.insecure_skip_verify is on: the OTLP receiver's certificate is not checked, anyone in the path can read and change the exported data");
            b = b.tls_danger_accept_invalid_certs(true);
        }
        Ok(OtlpHttpClient {
            inner: b.build().map_err(|e| error_chain(&e))?,
            cause,
        })
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
