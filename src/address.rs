//! What counts as one client address: an IPv4 address, or an IPv6 /64 (one customer's
//! network, usually, since a host may use any address in it). Connection caps and login
//! throttling both count by it.

use std::net::IpAddr;

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
