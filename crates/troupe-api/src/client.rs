//! Who is calling: the peer address of the connection and the client address a reverse proxy in
//! front reports.

use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;

/// The address of the connection's peer, a request extension set by [`crate::serve`] (absent
/// when the router is driven some other way, e.g. in-process).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The headers a reverse proxy sets that troupe trusts for the client's address, in order:
/// `X-Forwarded-For` (its first address: the client as the first proxy saw it), `X-Real-IP`.
/// A value that is not an IP address (optionally with a port) is ignored.
pub const TRUSTED_HEADERS: [&str; 2] = ["x-forwarded-for", "x-real-ip"];

/// The client's address: what a trusted proxy header reports, else the connection's peer.
pub fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
    TRUSTED_HEADERS
        .iter()
        .find_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            parse_ip(value.split(',').next()?.trim())
        })
        .or(peer.map(|p| p.ip()))
}

/// Extractor: the client's address as [`client_ip`] finds it (runs record it as `meta.clientIp`).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// As text, the way run objects carry it.
    pub fn text(self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<PeerAddr>().map(|peer| peer.0);
        Ok(ClientIp(client_ip(&parts.headers, peer)))
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_then_peer() {
        let peer: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            client_ip(&headers, Some(peer)),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(client_ip(&headers, None), None);
        headers.insert("x-real-ip", "192.0.2.7".parse().unwrap());
        assert_eq!(
            client_ip(&headers, Some(peer)),
            Some("192.0.2.7".parse().unwrap())
        );
        headers.insert("x-forwarded-for", "2001:db8::1, 192.0.2.9".parse().unwrap());
        assert_eq!(
            client_ip(&headers, Some(peer)),
            Some("2001:db8::1".parse().unwrap())
        );
        // Not an address: ignored, the next source answers.
        headers.insert("x-forwarded-for", "unknown".parse().unwrap());
        headers.insert("x-real-ip", "[::1]:80".parse().unwrap());
        assert_eq!(
            client_ip(&headers, Some(peer)),
            Some("::1".parse().unwrap())
        );
        headers.insert("x-real-ip", "nonsense".parse().unwrap());
        assert_eq!(
            client_ip(&headers, Some(peer)),
            Some("10.1.2.3".parse().unwrap())
        );
    }
}
