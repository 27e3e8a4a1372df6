//! A client's address ([`ClientAddress`]), and what counts as one client address: an IPv4
//! address, or an IPv6 /64 (one customer's network, usually, since a host may use any address
//! in it). Connection caps and login throttling both count by it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Where a client connects from (the real client's, behind a trusted proxy): printed as the
/// original printed it, and the key its connections and failures count under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientAddress(SocketAddr);

impl ClientAddress {
    /// The client at `socket`.
    pub(crate) fn new(socket: SocketAddr) -> ClientAddress {
        ClientAddress(socket)
    }

    /// Its IP address, for the store (which throttles by [`address_key`] of it).
    pub(crate) fn ip(self) -> IpAddr {
        self.0.ip()
    }

    /// The key its connections and failures count under ([`address_key`]).
    pub(crate) fn key(self) -> String {
        address_key(self.0.ip())
    }
}

/// As the original prints a peer (`inet_ntoa(addr):port`); IPv4 clients of a dual-stack
/// socket appear as plain IPv4.
impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => write!(f, "{v4}:{}", v6.port()),
                None => write!(f, "{v6}"),
            },
            SocketAddr::V4(v4) => write!(f, "{v4}"),
        }
    }
}

/// The key under which connections and failures from `addr` count together: the IPv4
/// address (also for an IPv4-mapped IPv6 address), or the IPv6 /64 as `a:b:c:d::/64`.
pub(crate) fn address_key(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_print_as_the_original_and_count_by_their_key() {
        let mapped = ClientAddress::new("[::ffff:127.0.0.1]:46142".parse().unwrap());
        assert_eq!(mapped.to_string(), "127.0.0.1:46142");
        assert_eq!(mapped.key(), "127.0.0.1");
        let v6 = ClientAddress::new("[2001:db8::1]:8081".parse().unwrap());
        assert_eq!(v6.to_string(), "[2001:db8::1]:8081");
        assert_eq!(v6.key(), "2001:db8:0:0::/64");
    }

    #[test]
    fn addresses_count_by_ipv4_and_ipv6_prefix() {
        assert_eq!(address_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            address_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7"
        );
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }
}
