//! Proxy errors carry their origin, which decides the status code returned,
//! the `error.type` label and the JSON body the client gets.

use std::error::Error as StdError;
use std::io;

use bytes::Bytes;
use serde::Serialize;

/// Why modelwatch answered instead of the model server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the model server refused the connection")]
    ConnectRefused,
    #[error("connecting to the model server timed out")]
    ConnectTimeout,
    #[error("the model server did not send response headers in time")]
    ResponseTimeout,
    #[error("the model server closed or reset the connection")]
    Reset,
    #[error("the model server sent an invalid HTTP response")]
    Protocol,
    #[error("the TLS handshake with the model server failed (its certificate or modelwatch's proxy.upstream_tls)")]
    Tls,
    #[error("modelwatch could not forward the request")]
    Internal,
}

/// Who caused an error.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    ModelServer,
    Modelwatch,
}

impl ProxyError {
    /// Every kind, for counters that start at 0.
    pub const ALL: [ProxyError; 7] = [
        ProxyError::ConnectRefused,
        ProxyError::ConnectTimeout,
        ProxyError::ResponseTimeout,
        ProxyError::Reset,
        ProxyError::Protocol,
        ProxyError::Tls,
        ProxyError::Internal,
    ];

    /// The bounded `error.type` value.
    pub fn kind(self) -> &'static str {
        match self {
            ProxyError::ConnectRefused => "connect_refused",
            ProxyError::ConnectTimeout => "connect_timeout",
            ProxyError::ResponseTimeout => "response_timeout",
            ProxyError::Reset => "reset",
            ProxyError::Protocol => "protocol",
            ProxyError::Tls => "tls",
            ProxyError::Internal => "internal",
        }
    }

    pub fn origin(self) -> Origin {
        match self {
            ProxyError::Internal => Origin::Modelwatch,
            _ => Origin::ModelServer,
        }
    }

    pub fn status(self) -> http::StatusCode {
        match self {
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => {
                http::StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }

    /// The small JSON body sent to the client.
    pub fn body(self, request_id: &str) -> Bytes {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            r#type: &'static str,
            origin: Origin,
            message: String,
            request_id: &'a str,
        }
        let body = Body {
            error: Inner {
                r#type: self.kind(),
                origin: self.origin(),
                message: self.to_string(),
                request_id,
            },
        };
        Bytes::from(serde_json::to_vec(&body).expect("serializes"))
    }

    /// Classifies an error from the upstream client by walking its sources.
    pub fn classify(err: &(dyn StdError + 'static)) -> ProxyError {
        let mut connect = false;
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(le) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
                connect |= le.is_connect();
            }
            if tls_cause(e).is_some() {
                return ProxyError::Tls;
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return match io.kind() {
                    io::ErrorKind::ConnectionRefused => ProxyError::ConnectRefused,
                    io::ErrorKind::TimedOut if connect => ProxyError::ConnectTimeout,
                    io::ErrorKind::TimedOut => ProxyError::ResponseTimeout,
                    _ if connect => ProxyError::ConnectRefused,
                    _ => ProxyError::Reset,
                };
            }
            if let Some(he) = e.downcast_ref::<hyper::Error>() {
                if he.is_parse() || he.is_parse_status() || he.is_user() {
                    return ProxyError::Protocol;
                }
                if he.is_incomplete_message() || he.is_canceled() || he.is_closed() {
                    return ProxyError::Reset;
                }
            }
            cur = e.source();
        }
        if connect {
            ProxyError::ConnectRefused
        } else {
            ProxyError::Reset
        }
    }
}

/// The rustls error behind an upstream failure, if a TLS handshake failed
/// (unknown issuer, a certificate for another name, expired, no ALPN).
pub fn tls_cause<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // An io::Error's own `source` skips the error it wraps: look inside.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(t) = tls_cause(inner) {
                return Some(t);
            }
        }
        cur = e.source();
    }
    None
}
