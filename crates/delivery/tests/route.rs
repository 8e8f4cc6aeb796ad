//! Next-hop routing against a real name server (dnsmasq on loopback).

mod remote_support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use remote_support::Dnsmasq;
use sluice_delivery::route::{NextHop, RouteConfig, RouteError, Router};
use sluice_dns::Resolver;

fn records(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn router(dns: SocketAddr) -> Router {
    router_with(dns, BTreeMap::new(), None)
}

fn router_with(
    dns: SocketAddr,
    routes: BTreeMap<String, String>,
    smarthost: Option<&str>,
) -> Router {
    Router::new(
        RouteConfig {
            routes,
            smarthost: smarthost.map(str::to_owned),
        },
        resolver(dns, Duration::from_secs(2)),
    )
    .expect("router")
}

fn resolver(dns: SocketAddr, timeout: Duration) -> Resolver {
    Resolver::new(&[dns], timeout).expect("resolver")
}

/// A resolver for tests that must never ask DNS: nothing answers there.
fn no_dns() -> Resolver {
    resolver(addr("127.0.0.1:9"), Duration::from_secs(5))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn hosts(hops: &[NextHop]) -> Vec<(&str, u16)> {
    hops.iter()
        .map(|h| (h.host.as_str(), h.preference))
        .collect()
}

fn failure(result: Result<Vec<NextHop>, RouteError>) -> RouteError {
    match result {
        Ok(hops) => panic!("expected a failure, got {hops:?}"),
        Err(e) => e,
    }
}

/// What every recipient of the domain would get, as a reply line.
fn reply(e: &RouteError) -> String {
    e.outcome().reply().to_string()
}

#[test]
fn mx_records_by_preference_each_with_its_addresses() {
    let dns = Dnsmasq::start(&records(&[
        // Listed out of order, so the order must come from the preferences.
        "--mx-host=two.test,mx2.two.test,20",
        "--mx-host=two.test,mx1.two.test,10",
        "--mx-host=two.test,backup.two.test,30",
        "--host-record=mx1.two.test,127.0.0.2",
        "--host-record=mx2.two.test,127.0.0.3,::1",
        "--host-record=backup.two.test,127.0.0.4",
    ]));
    let router = router(dns.addr);
    let hops = router.next_hops("two.test").unwrap();
    assert_eq!(
        hosts(&hops),
        [
            ("mx1.two.test", 10),
            ("mx2.two.test", 20),
            ("backup.two.test", 30)
        ]
    );
    assert_eq!(hops[0].addrs, [addr("127.0.0.2:25")]);
    // A and AAAA both, A first.
    assert_eq!(hops[1].addrs, [addr("127.0.0.3:25"), addr("[::1]:25")]);

    // Case and a final dot make no difference; the port can be changed.
    let router = router.with_smtp_port(2525);
    let hops = router.next_hops("TWO.Test.").unwrap();
    assert_eq!(hops[0].addrs, [addr("127.0.0.2:2525")]);
    assert_eq!(&*router.destination_key("TWO.test"), "two.test");
}

#[test]
fn equal_preferences_are_shuffled() {
    let dns = Dnsmasq::start(&records(&[
        "--mx-host=even.test,a.even.test,10",
        "--mx-host=even.test,b.even.test,10",
        "--mx-host=even.test,c.even.test,10",
        "--mx-host=even.test,z.even.test,50",
        "--host-record=a.even.test,127.0.0.11",
        "--host-record=b.even.test,127.0.0.12",
        "--host-record=c.even.test,127.0.0.13",
        "--host-record=z.even.test,127.0.0.19",
    ]));
    let router = router(dns.addr);
    let mut first = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let hops = router.next_hops("even.test").unwrap();
        let mut equal: Vec<&str> = hops[..3].iter().map(|h| h.host.as_str()).collect();
        first.insert(equal[0].to_owned());
        equal.sort_unstable();
        assert_eq!(equal, ["a.even.test", "b.even.test", "c.even.test"]);
        assert_eq!(hops[3].host, "z.even.test");
    }
    // With a fair shuffle, all three lead at some point (a miss has a
    // probability of about 3 * (2/3)^30, under 1 in 10 000).
    assert_eq!(first.len(), 3, "{first:?}");
}

#[test]
fn no_mx_means_the_domain_itself() {
    let dns = Dnsmasq::start(&records(&[
        "--host-record=plain.test,127.0.0.5",
        "--txt-record=textonly.test,nothing here",
    ]));
    let router = router(dns.addr);
    let hops = router.next_hops("plain.test").unwrap();
    assert_eq!(
        hops,
        [NextHop {
            host: "plain.test".into(),
            addrs: vec![addr("127.0.0.5:25")],
            preference: 0,
            from_mx: true,
        }]
    );
    // The name exists, but with neither MX nor address records.
    let e = failure(router.next_hops("textonly.test"));
    assert_eq!(
        e,
        RouteError::NoAddress {
            domain: "textonly.test".into(),
            via_mx: false
        }
    );
    assert!(reply(&e).starts_with("550 5.4.4 "), "{e:?}");
}

#[test]
fn null_mx_fails_with_556() {
    // dnsmasq writes MX "." with preference 0 as RFC 7505 has it: the
    // exchange is the root name.
    let dns = Dnsmasq::start(&records(&["--mx-host=nullmx.test,.,0"]));
    let e = failure(router(dns.addr).next_hops("nullmx.test"));
    assert_eq!(
        e,
        RouteError::NullMx {
            domain: "nullmx.test".into()
        }
    );
    assert!(!e.is_temporary());
    assert_eq!(
        reply(&e),
        "556 5.1.10 Recipient address rejected: nullmx.test does not accept mail (null MX)"
    );
}

#[test]
fn mx_hosts_without_addresses_are_skipped() {
    let dns = Dnsmasq::start(&records(&[
        "--mx-host=half.test,ghost.half.test,5",
        "--mx-host=half.test,real.half.test,10",
        "--host-record=real.half.test,127.0.0.7",
        "--mx-host=ghosts.test,ghost.ghosts.test,5",
    ]));
    let router = router(dns.addr);
    let hops = router.next_hops("half.test").unwrap();
    assert_eq!(hosts(&hops), [("real.half.test", 10)]);
    let e = failure(router.next_hops("ghosts.test"));
    assert_eq!(
        e,
        RouteError::NoAddress {
            domain: "ghosts.test".into(),
            via_mx: true
        }
    );
}

#[test]
fn nxdomain_fails_and_a_refusing_server_defers() {
    let dns = Dnsmasq::start(&records(&["--host-record=exists.test,127.0.0.8"]));
    let router = router(dns.addr);
    let e = failure(router.next_hops("nope.test"));
    assert!(
        matches!(&e, RouteError::BadDestination { domain, .. } if domain == "nope.test"),
        "{e:?}"
    );
    assert!(reply(&e).starts_with("550 5.1.2 "), "{e:?}");
    // Outside its local zone, with no upstream, dnsmasq answers REFUSED:
    // the name server failed, not the domain, so the mail waits.
    let e = failure(router.next_hops("elsewhere.example"));
    assert!(
        matches!(&e, RouteError::Dns { domain, lookup: "MX records", .. } if domain == "elsewhere.example"),
        "{e:?}"
    );
    assert!(e.is_temporary());
    assert!(reply(&e).starts_with("451 4.4.3 "), "{e:?}");
}

#[test]
fn routes_and_the_smarthost_come_before_dns() {
    let dns = Dnsmasq::start(&records(&[
        "--mx-host=two.test,mx1.two.test,10",
        "--host-record=mx1.two.test,127.0.0.2",
        "--host-record=relay.test,127.0.0.30",
    ]));
    let mut routes = BTreeMap::new();
    routes.insert("two.test".to_owned(), "[127.0.0.20]:2526".to_owned());
    routes.insert("Named.Example".to_owned(), "relay.test:2527".to_owned());

    let router = router_with(dns.addr, routes.clone(), None);
    assert_eq!(
        router.next_hops("two.test").unwrap(),
        [NextHop {
            host: "[127.0.0.20]".into(),
            addrs: vec![addr("127.0.0.20:2526")],
            preference: 0,
            from_mx: false,
        }]
    );
    let hops = router.next_hops("named.example").unwrap();
    assert_eq!(hops[0].host, "relay.test");
    assert_eq!(hops[0].addrs, [addr("127.0.0.30:2527")]);
    assert_eq!(&*router.destination_key("two.test"), "[127.0.0.20]:2526");
    assert_eq!(&*router.destination_key("NAMED.example"), "relay.test:2527");
    assert_eq!(&*router.destination_key("other.test"), "other.test");

    // The smarthost takes everything without a route, even domains with
    // MX records of their own and domains that do not exist.
    let router = router_with(dns.addr, routes, Some("relay.test:2525"));
    for domain in ["nowhere.test", "plain.example"] {
        let hops = router.next_hops(domain).unwrap();
        assert_eq!(hops.len(), 1);
        assert_eq!(hops[0].addrs, [addr("127.0.0.30:2525")], "{domain}");
        assert_eq!(&*router.destination_key(domain), "relay.test:2525");
    }
    assert_eq!(
        router.next_hops("two.test").unwrap()[0].addrs,
        [addr("127.0.0.20:2526")]
    );
}

#[test]
fn an_unresolvable_route_target_defers() {
    let dns = Dnsmasq::start(&records(&["--host-record=exists.test,127.0.0.8"]));
    let router = router_with(dns.addr, BTreeMap::new(), Some("missing.test:25"));
    let e = failure(router.next_hops("any.example"));
    // A mistake in our own configuration never bounces mail.
    assert!(
        matches!(&e, RouteError::UnresolvedTarget { target, .. } if target == "missing.test:25"),
        "{e:?}"
    );
    assert!(e.is_temporary());
    assert!(reply(&e).starts_with("451 4.4.3 "), "{e:?}");
}

#[test]
fn address_literals_are_their_own_next_hop() {
    // Nothing is asked of DNS: an address with no server behind it will do.
    let router = Router::new(RouteConfig::default(), no_dns()).unwrap();
    let hops = router.next_hops("[192.0.2.1]").unwrap();
    assert_eq!(hops[0].addrs, [addr("192.0.2.1:25")]);
    let hops = router.next_hops("[IPv6:2001:db8::1]").unwrap();
    assert_eq!(hops[0].addrs, [addr("[2001:db8::1]:25")]);
    let e = failure(router.next_hops("[x-tag:whatever]"));
    assert!(matches!(&e, RouteError::BadDestination { .. }), "{e:?}");
    assert!(reply(&e).starts_with("550 5.1.2 "), "{e:?}");
}

#[test]
fn bad_routes_are_refused_at_start() {
    for (domain, target) in [
        ("a.test", "2001:db8::1:25"),
        ("a.test", "host:0"),
        ("a.test", "[not-an-ip]:25"),
    ] {
        let mut routes = BTreeMap::new();
        routes.insert(domain.to_owned(), target.to_owned());
        let error = Router::new(
            RouteConfig {
                routes,
                ..RouteConfig::default()
            },
            no_dns(),
        )
        .unwrap_err();
        assert!(
            matches!(&error, RouteError::InvalidTarget { target: t, .. } if t == target),
            "{domain}: {error:?}"
        );
    }
    let error = Router::new(
        RouteConfig {
            smarthost: Some("relay:port".into()),
            ..RouteConfig::default()
        },
        no_dns(),
    )
    .unwrap_err();
    assert!(
        matches!(&error, RouteError::InvalidTarget { target, .. } if target == "relay:port"),
        "{error:?}"
    );
}

/// A name server that answers every query with SERVFAIL.
fn servfail_server() -> (SocketAddr, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                let mut answer = buf[..n].to_vec();
                // QR, the query's opcode and RD; RA; RCODE 2 (SERVFAIL).
                answer[2] = 0x80 | (buf[2] & 0x79);
                answer[3] = 0x80 | 2;
                // Only the question goes back (drop EDNS records).
                answer[6..12].fill(0);
                let _ = socket.send_to(&answer, from);
            }
        })
    };
    (addr, stop, thread)
}

#[test]
fn servfail_and_timeouts_defer() {
    let (addr, stop, thread) = servfail_server();
    let e = failure(router(addr).next_hops("broken.test"));
    assert!(matches!(&e, RouteError::Dns { .. }), "{e:?}");
    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap();

    // A server that never answers: bound but never read.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let router = Router::new(
        RouteConfig::default(),
        resolver(silent.local_addr().unwrap(), Duration::from_millis(200)),
    )
    .unwrap();
    let started = Instant::now();
    let e = failure(router.next_hops("slow.test"));
    assert!(matches!(&e, RouteError::Dns { .. }), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn router_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Router>();
    shareable::<sluice_delivery::remote::Remote>();

    let dns = Dnsmasq::start(&records(&[
        "--mx-host=two.test,mx1.two.test,10",
        "--host-record=mx1.two.test,127.0.0.2",
    ]));
    let router = router(dns.addr);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..5 {
                    let hops = router.next_hops("two.test").unwrap();
                    assert_eq!(hops[0].addrs, [addr("127.0.0.2:25")]);
                }
            });
        }
    });
}
