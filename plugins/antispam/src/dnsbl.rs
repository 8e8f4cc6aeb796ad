//! DNS blocklist lookups of the client address (RFC 5782).

use alloc::format;
use alloc::string::String;
use core::fmt::Write;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_plugin_sdk::{Ctx, DnsResult, Qtype};

/// The name to look up for `ip` in `zone`: the IPv4 octets reversed
/// (`2.0.0.127.zone`), or the 32 nibbles of an IPv6 address reversed (RFC
/// 5782 §2.4); an IPv4-mapped IPv6 address is asked about as IPv4. `None`
/// for addresses no public list covers (loopback, private, link-local,
/// unspecified), which would only waste a query, with one exception:
/// 127.0.0.2, the test entry every DNSBL must list (RFC 5782 §5), so that an
/// operator can check the whole setup by connecting from it.
pub fn query_name(ip: IpAddr, zone: &str) -> Option<String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if worth_asking_v4(v4) => {
            let [a, b, c, d] = v4.octets();
            Some(format!("{d}.{c}.{b}.{a}.{zone}"))
        }
        IpAddr::V6(v6) if worth_asking_v6(v6) => {
            let mut name = String::with_capacity(64 + zone.len());
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            name.push_str(zone);
            Some(name)
        }
        _ => None,
    }
}

/// RFC 5782 §5: the address every IPv4 DNSBL lists, for testing.
const TEST_ENTRY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn worth_asking_v4(ip: Ipv4Addr) -> bool {
    ip == TEST_ENTRY
        || !(ip.is_loopback()
            || ip.is_private()
            || ip.is_link_local()
            || ip.is_unspecified()
            || ip.is_broadcast())
}

fn worth_asking_v6(ip: Ipv6Addr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_unique_local() || ip.is_unicast_link_local())
}

/// Whether an answer means "listed". Listings are A records in 127.0.0.0/8
/// (RFC 5782 §2.1). 127.0.0.1 is never a listing, and 127.255.255.0/24 is
/// how Spamhaus says "query refused" (e.g. through a public resolver), so
/// neither counts: a refused query must not block mail.
pub fn is_listing(answer: &DnsResult) -> bool {
    answer.ipv4_addrs().iter().any(|a| {
        let [first, second, third, _] = a.octets();
        first == 127 && *a != Ipv4Addr::LOCALHOST && !(second == 255 && third == 255)
    })
}

/// The first zone of `zones` that lists `ip`, asking them in order.
pub fn first_listing<'z>(ctx: &Ctx<'_>, ip: IpAddr, zones: &'z [String]) -> Option<&'z str> {
    zones.iter().map(String::as_str).find(|zone| {
        let Some(name) = query_name(ip, zone) else {
            return false;
        };
        let answer = ctx.dns_lookup(Qtype::A, &name);
        if answer.is_failed() {
            ctx.debug(&format!(
                "DNSBL {zone}: lookup of {name} failed; not listed"
            ));
        }
        is_listing(&answer)
    })
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use sluice_plugin_sdk::testing::MockHost;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_octets_are_reversed() {
        assert_eq!(
            query_name(ip("192.0.2.99"), "bl.test").as_deref(),
            Some("99.2.0.192.bl.test")
        );
        assert_eq!(
            query_name(ip("198.51.100.1"), "zen.example").as_deref(),
            Some("1.100.51.198.zen.example")
        );
        assert_eq!(
            query_name(ip("::ffff:192.0.2.99"), "bl.test").as_deref(),
            Some("99.2.0.192.bl.test"),
            "mapped IPv6 is asked about as IPv4"
        );
    }

    #[test]
    fn ipv6_nibbles_are_reversed() {
        // RFC 5782 §2.4's example address.
        assert_eq!(
            query_name(ip("2001:db8:1:2:3:4:567:89ab"), "ugly.example.com").as_deref(),
            Some(
                "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
            )
        );
    }

    #[test]
    fn the_rfc_5782_test_address_is_asked_about() {
        assert_eq!(
            query_name(ip("127.0.0.2"), "bl.test").as_deref(),
            Some("2.0.0.127.bl.test")
        );
    }

    #[test]
    fn private_and_loopback_clients_are_not_asked_about() {
        for addr in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::",
        ] {
            assert_eq!(query_name(ip(addr), "bl.test"), None, "{addr}");
        }
    }

    #[test]
    fn only_real_listings_count() {
        let a = |addrs: &[&str]| DnsResult::Records(addrs.iter().map(|s| (*s).into()).collect());
        assert!(is_listing(&a(&["127.0.0.2"])));
        assert!(is_listing(&a(&["127.0.0.1", "127.0.0.10"])));
        assert!(!is_listing(&a(&["127.0.0.1"])));
        assert!(
            !is_listing(&a(&["127.255.255.254"])),
            "Spamhaus: query refused"
        );
        assert!(!is_listing(&a(&["192.0.2.1"])), "not in 127/8");
        assert!(!is_listing(&DnsResult::NxDomain));
        assert!(!is_listing(&DnsResult::Failed));
    }

    #[test]
    fn zones_are_asked_in_order_until_one_lists() {
        let host = MockHost::new()
            .with_dns(
                Qtype::A,
                "7.2.0.192.two.test",
                DnsResult::Records(vec!["127.0.0.4".into()]),
            )
            .with_dns(Qtype::A, "7.2.0.192.one.test", DnsResult::Failed);
        let zones = ["one.test".into(), "two.test".into(), "three.test".into()];
        let ctx = host.ctx();
        assert_eq!(
            first_listing(&ctx, ip("192.0.2.7"), &zones),
            Some("two.test")
        );
        assert_eq!(host.dns_queries().len(), 2, "three.test not asked");
        assert_eq!(first_listing(&ctx, ip("192.0.2.8"), &zones), None);
        assert_eq!(first_listing(&ctx, ip("10.0.0.1"), &zones), None);
        assert_eq!(
            host.dns_queries().len(),
            5,
            "private address not asked about"
        );
    }
}
