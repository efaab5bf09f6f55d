//! The address of whoever connected: [`PeerIp`].

use std::net::{IpAddr, SocketAddr};

use http::{request::Parts, Extensions};

use super::KeyExtractor;

/// The key extractor of [`peer_ip()`](super::peer_ip).
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerIp;

impl KeyExtractor for PeerIp {
    type Key = IpAddr;

    fn extract(&self, parts: &Parts) -> Option<IpAddr> {
        peer(&parts.extensions)
    }
}

/// The peer's address, from the first of axum's `ConnectInfo<SocketAddr>`
/// (feature `axum`), a `SocketAddr` and an `IpAddr` in the extensions;
/// an IPv4 address mapped into IPv6 as the IPv4 address it is.
pub(super) fn peer(extensions: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(connected) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(connected.0.ip().to_canonical());
    }
    let ip = match extensions.get::<SocketAddr>() {
        Some(address) => address.ip(),
        None => *extensions.get::<IpAddr>()?,
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn with<T: Clone + Send + Sync + 'static>(value: T) -> Parts {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.extensions.insert(value);
        parts
    }

    #[test]
    fn reads_the_peer_from_a_socket_address_or_an_ip() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(PeerIp.extract(&with(SocketAddr::new(v4, 443))), Some(v4));
        assert_eq!(PeerIp.extract(&with(v4)), Some(v4));
        assert_eq!(PeerIp.extract(&http::Request::new(()).into_parts().0), None);
    }

    #[cfg(feature = "axum")]
    #[test]
    fn reads_axums_connect_info_first() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mut parts = with(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let connected = axum::extract::ConnectInfo(SocketAddr::new(v4, 50_000));
        parts.extensions.insert(connected);
        assert_eq!(PeerIp.extract(&parts), Some(v4));
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_address() {
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(
            PeerIp.extract(&with(SocketAddr::new(mapped, 1))),
            Some(IpAddr::V4(v4)),
            "one client, two keys"
        );
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(PeerIp.extract(&with(v6)), Some(v6));
    }
}
