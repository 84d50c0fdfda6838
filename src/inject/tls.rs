//! The webhook's TLS: a certificate and key read from PEM files and read again
//! when they change (cert-manager and Kubernetes Secret volumes replace them in
//! place), without dropping connections or restarting. A change that does not
//! parse keeps the certificate in use and is counted and logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;

/// The certificate in use, swapped when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<(Vec<u8>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<Vec<u8>, String> {
    let mut both = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    both.extend(std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?);
    Ok(both)
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no CERTIFICATE block", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{} does not match {}: {e}", key.display(), cert.display()))?;
    Ok(certified)
}

impl ReloadingCert {
    /// Loads the pair once; an error here stops the injector at start.
    pub fn new(cert_path: PathBuf, key_path: PathBuf) -> Result<Arc<Self>, String> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let bytes = read_pair(&cert_path, &key_path)?;
        let key = load(&cert_path, &key_path, &provider)?;
        Ok(Arc::new(ReloadingCert {
            cert_path,
            key_path,
            provider,
            current: RwLock::new((bytes, Arc::new(key))),
        }))
    }

    /// A TLS server config (HTTP/2 and HTTP/1.1 by ALPN) that asks this resolver.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, String> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The pair in use (a client certificate resolver hands it out too).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("poisoned").1.clone()
    }

    /// Reads the files again; `Ok(true)` when a new pair is in use.
    pub fn reload(&self) -> Result<bool, String> {
        let bytes = read_pair(&self.cert_path, &self.key_path)?;
        if self.current.read().expect("poisoned").0 == bytes {
            return Ok(false);
        }
        let key = load(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().expect("poisoned") = (bytes, Arc::new(key));
        Ok(true)
    }

    /// Checks the files every `interval` until `cancel`; `on_result` counts.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        cancel: tokio_util::sync::CancellationToken,
        on_result: impl Fn(&Result<bool, String>) + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = self.reload();
            match &result {
                Ok(true) => tracing::info!(
                    cert = %self.cert_path.display(),
                    "TLS certificate reloaded"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "TLS certificate files changed but cannot be used; keeping the current certificate"
                ),
            }
            on_result(&result);
        }
    }
}
