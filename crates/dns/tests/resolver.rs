//! The resolver against a real name server (dnsmasq on loopback).
//!
//! Covered: A, AAAA, MX (null MX included), TXT and PTR answers; addresses
//! with A before AAAA; the hosts file never read; NXDOMAIN and NODATA with
//! their negative TTL; REFUSED, a silent server and an invalid name as
//! failures; the overall bound of `lookup_within`; clones sharing one
//! resolver across threads. SERVFAIL is covered by delivery's route tests.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sluice_dns::{DEFAULT_NEGATIVE_TTL, LookupError, Record, RecordType, Resolver};
use sluice_testkit::Dnsmasq;

/// dnsmasq answering `options`, and everything else under `.test` itself
/// (`--local=/test/`): unknown names there are NXDOMAIN and names without
/// the type asked for NODATA, as an authoritative server would say. Names
/// elsewhere are REFUSED (no upstream). Ready once `probe` has an address.
fn dnsmasq(options: &[&str], probe: &str) -> Dnsmasq {
    let mut all = vec!["--local=/test/"];
    all.extend_from_slice(options);
    Dnsmasq::start(&all, probe)
}

fn resolver(dns: &Dnsmasq) -> Resolver {
    Resolver::new(&[dns.addr()], Duration::from_secs(2)).expect("resolver")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn records(resolver: &Resolver, record_type: RecordType, name: &str) -> Vec<Record> {
    match resolver.lookup(record_type, name) {
        Ok(answer) => {
            // dnsmasq gives its local records a TTL of 0 unless told.
            assert!(answer.ttl <= Duration::from_secs(600), "{answer:?}");
            answer.records
        }
        Err(e) => panic!("{record_type:?} {name}: {e:?}"),
    }
}

#[test]
fn each_record_type_in_our_own_form() {
    let dns = dnsmasq(
        &[
            "--host-record=mx1.a.test,127.0.0.2,::2",
            "--mx-host=a.test,MX1.A.test,10",
            "--mx-host=a.test,mx2.a.test,20",
            "--mx-host=null.test,.,0",
            "--txt-record=a.test,v=spf1 ,-all",
            "--ptr-record=9.2.0.192.in-addr.arpa,Mail.A.test",
            "--local-ttl=120",
        ],
        "mx1.a.test",
    );
    let resolver = resolver(&dns);

    assert_eq!(
        records(&resolver, RecordType::A, "mx1.a.test"),
        [Record::A("127.0.0.2".parse().unwrap())]
    );
    assert_eq!(
        records(&resolver, RecordType::Aaaa, "MX1.a.test."),
        [Record::Aaaa("::2".parse().unwrap())]
    );

    let mut mx = resolver.mx("a.test").unwrap();
    mx.sort();
    // Lower-case, without the final dot.
    assert_eq!(
        mx,
        [(10, "mx1.a.test".to_owned()), (20, "mx2.a.test".to_owned())]
    );
    assert_eq!(resolver.mx("null.test").unwrap(), [(0, String::new())]);

    // The character-strings as sent: joining them is the caller's choice.
    assert_eq!(
        records(&resolver, RecordType::Txt, "a.test"),
        [Record::Txt(vec![b"v=spf1 ".to_vec(), b"-all".to_vec()])]
    );

    // PTR takes the address itself. (Not a loopback one: hickory answers
    // those with "localhost" itself, RFC 6761 §6.3.)
    let ptr = resolver.lookup(RecordType::Ptr, "192.0.2.9").unwrap();
    assert_eq!(ptr.records, [Record::Ptr("mail.a.test".into())]);
    // What is left of the TTL that --local-ttl gave.
    assert!(
        ptr.ttl > Duration::from_secs(100) && ptr.ttl <= Duration::from_secs(120),
        "{:?}",
        ptr.ttl
    );
}

#[test]
fn addresses_come_a_first_in_the_order_asked() {
    let dns = dnsmasq(
        &[
            "--host-record=both.test,::1,127.0.0.3",
            "--host-record=four.test,127.0.0.4",
            "--host-record=six.test,::6",
            "--txt-record=none.test,no addresses",
        ],
        "both.test",
    );
    let resolver = resolver(&dns);
    let results = resolver.addresses(&["six.test", "both.test", "missing.test", "four.test"]);
    assert_eq!(results.len(), 4);
    assert_eq!(results[0], Ok(vec![ip("::6")]));
    assert_eq!(results[1], Ok(vec![ip("127.0.0.3"), ip("::1")]));
    assert!(
        matches!(results[2], Err(LookupError::NoSuchName { .. })),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3], Ok(vec![ip("127.0.0.4")]));

    let none = resolver.addresses(&["none.test"]).remove(0);
    assert!(
        matches!(none, Err(LookupError::NoRecords { .. })),
        "{none:?}"
    );
}

/// A name that /etc/hosts gives an address, other than localhost (which
/// hickory answers itself, RFC 6761 §6.3, hosts file or not).
fn name_in_hosts_file() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.split_whitespace().skip(1))
        .find(|name| {
            !name.to_ascii_lowercase().starts_with("localhost")
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .map(str::to_owned)
}

#[test]
fn the_hosts_file_is_never_read() {
    let Some(name) = name_in_hosts_file() else {
        eprintln!("skipped: /etc/hosts names no host but localhost");
        return;
    };
    // DNS says otherwise than /etc/hosts: DNS must win, for mail routing and
    // for plugins alike.
    let record = format!("--host-record={name},127.0.0.77");
    let dns = dnsmasq(&[&record], &name);
    let resolver = resolver(&dns);
    assert_eq!(
        resolver.addresses(&[&name]).remove(0),
        Ok(vec![ip("127.0.0.77")]),
        "{name}"
    );
    assert_eq!(
        records(&resolver, RecordType::A, &name),
        [Record::A("127.0.0.77".parse().unwrap())]
    );
}

#[test]
fn nxdomain_and_nodata_carry_a_negative_ttl() {
    let dns = dnsmasq(&["--host-record=exists.test,127.0.0.8"], "exists.test");
    let resolver = resolver(&dns);
    // dnsmasq sends no SOA with answers for its local names: the default.
    assert_eq!(
        resolver.lookup(RecordType::A, "nope.exists.test"),
        Err(LookupError::NoSuchName {
            negative_ttl: DEFAULT_NEGATIVE_TTL
        })
    );
    assert_eq!(
        resolver.mx("nope.exists.test"),
        Err(LookupError::NoSuchName {
            negative_ttl: DEFAULT_NEGATIVE_TTL
        })
    );
    for record_type in [RecordType::Mx, RecordType::Txt, RecordType::Aaaa] {
        assert_eq!(
            resolver.lookup(record_type, "exists.test"),
            Err(LookupError::NoRecords {
                negative_ttl: DEFAULT_NEGATIVE_TTL
            }),
            "{record_type:?}"
        );
    }
}

#[test]
fn refused_silence_and_bad_names_fail() {
    let dns = dnsmasq(&["--host-record=exists.test,127.0.0.8"], "exists.test");
    let resolver = resolver(&dns);
    // Outside its local zone, with no upstream, dnsmasq answers REFUSED: the
    // name server failed, not the name.
    let refused = resolver.lookup(RecordType::A, "elsewhere.example");
    assert!(
        matches!(refused, Err(LookupError::Temporary(_))),
        "{refused:?}"
    );
    let bad = format!("{}.test", "x".repeat(64));
    assert!(matches!(
        resolver.lookup(RecordType::A, &bad),
        Err(LookupError::InvalidName(_))
    ));
    assert!(matches!(
        resolver.addresses(&[&bad]).remove(0),
        Err(LookupError::InvalidName(_))
    ));

    // A name server that never answers: bound but never read. Its own
    // timeout ends a lookup; lookup_within ends one sooner.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = silent.local_addr().unwrap();
    let resolver = Resolver::new(&[addr], Duration::from_millis(200)).unwrap();
    let started = Instant::now();
    let slow = resolver.mx("slow.test");
    assert!(matches!(slow, Err(LookupError::Temporary(_))), "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let resolver = Resolver::new(&[addr], Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    let bounded = resolver.lookup_within(RecordType::A, "slow.test", Duration::from_millis(300));
    let elapsed = started.elapsed();
    assert!(
        matches!(&bounded, Err(LookupError::Temporary(e)) if e.contains("within")),
        "{bounded:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[test]
fn clones_share_one_resolver_across_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Resolver>();

    let mut dns = dnsmasq(
        &["--host-record=shared.test,127.0.0.5", "--local-ttl=300"],
        "shared.test",
    );
    let first = resolver(&dns);
    let second = first.clone();
    std::thread::scope(|scope| {
        for resolver in [&first, &second, &first, &second] {
            scope.spawn(move || {
                for _ in 0..5 {
                    let answer = resolver.addresses(&["shared.test"]).remove(0);
                    assert_eq!(answer, Ok(vec![ip("127.0.0.5")]));
                }
            });
        }
    });
    // One cache: with the server gone, what one clone learnt the other still
    // answers, and a clone outlives the resolver it came from.
    dns.stop();
    drop(first);
    assert_eq!(
        second
            .lookup(RecordType::A, "shared.test")
            .map(|a| a.records),
        Ok(vec![Record::A("127.0.0.5".parse().unwrap())])
    );
}
