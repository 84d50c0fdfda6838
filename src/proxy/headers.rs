//! Header handling for a reverse proxy (RFC 9110 §7.6.1): connection-specific
//! headers are removed, forwarding headers added, everything else untouched.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// True when the request asks for a protocol switch (`Connection: upgrade`
/// plus an `Upgrade` header), e.g. a WebSocket handshake.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes connection-specific headers, and those the `Connection` header
/// names. With `upgrade`, `Upgrade` and `Connection: upgrade` are kept so the
/// handshake reaches the other side. `TE: trailers` is kept (gRPC needs it).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most requests carry none of them: one pass over the names, no removals.
    if !upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // `keep-alive`, the option most answers carry, names a header removed
    // below anyway: no list is made for it.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        if upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(&name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
        .unwrap_or(false);
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The headers [`remove_hop_by_hop`] removes or rewrites whatever `Connection` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// The client's address as a header value: made once per connection.
pub fn client_ip(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
}

/// Adds `X-Forwarded-For` (appended), and `X-Forwarded-Proto` and
/// `X-Forwarded-Host` when no proxy before us set them.
pub fn add_forwarded(headers: &mut HeaderMap, client: &HeaderValue, host: Option<HeaderValue>) {
    let previous = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|prev| !prev.trim().is_empty());
    let xff = match previous {
        Some(prev) => {
            HeaderValue::from_str(&format!("{prev}, {}", client.to_str().unwrap_or(""))).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if let Some(host) = host {
        if !headers.contains_key(&X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    }
}

/// The client's request id when it is usable (1 to 128 visible ASCII bytes),
/// else a new one.
pub fn request_id(headers: &HeaderMap, name: &HeaderName) -> (HeaderValue, bool) {
    if let Some(v) = headers.get(name) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return (v.clone(), false);
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    (
        HeaderValue::from_str(&id).expect("hex is a valid header value"),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn hop_by_hop_headers_and_named_ones_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("content-type", "application/json"),
            ("authorization", "Bearer abc"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["content-type", "authorization"]);
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut h = map(&[("te", "trailers")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn upgrade_keeps_the_handshake() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_for_is_appended_and_proto_kept() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(
            &mut h,
            &client_ip("127.0.0.1".parse().unwrap()),
            Some(HeaderValue::from_static("model.example")),
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "model.example");
    }

    #[test]
    fn request_id_is_kept_or_made() {
        let name = HeaderName::from_static("x-request-id");
        let (id, made) = request_id(&map(&[("x-request-id", "abc-123")]), &name);
        assert_eq!((id.to_str().unwrap(), made), ("abc-123", false));
        let (id, made) = request_id(&map(&[("x-request-id", "has space")]), &name);
        assert!(made);
        assert_eq!(id.len(), 32);
        let (_, made) = request_id(&HeaderMap::new(), &name);
        assert!(made);
    }
}
