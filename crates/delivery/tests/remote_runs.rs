//! Runs: several messages for one next hop on one connection, each behind
//! the one before without waiting for its replies, against a real server
//! on loopback (`ServerSession` threads).

mod remote_support;

use std::net::SocketAddr;
use std::sync::Arc;

use remote_support::{Script, SmtpServer, config, reply, routed_to};
use sluice_delivery::Outcome;
use sluice_delivery::remote::{Remote, RemoteConfig, RunItem};
use sluice_smtp::client::PIPELINED_BODY_MAX;
use sluice_smtp::server::Extensions;
use sluice_smtp::{Envelope, ForwardPath, Path, Recipient, ReversePath};

const BODY: &[u8] = b"Subject: run\r\n\r\nHello.\r\n";

fn routed(routes: &[(&str, SocketAddr)], config: RemoteConfig) -> Remote {
    routed_to(routes, config)
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn envelope(to: &str) -> Envelope {
    let path = |m: &str| Path::parse(format!("<{m}>").as_bytes()).unwrap();
    Envelope {
        reverse_path: ReversePath::Path(path("sender@example.org")),
        params: Default::default(),
        recipients: vec![Recipient::new(ForwardPath::Path(path(to)))],
    }
}

fn item<'a>(to: &str, body: &'a [u8]) -> RunItem<'a> {
    RunItem {
        domain: to.rsplit_once('@').unwrap().1.to_owned().into(),
        envelope: std::sync::Arc::new(envelope(to)),
        body,
    }
}

fn delivered(outcomes: &[Outcome]) -> bool {
    outcomes.len() == 1 && matches!(outcomes[0], Outcome::Delivered(_))
}

fn reads(server: &SmtpServer) -> Vec<String> {
    server
        .reads()
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

#[test]
fn a_run_goes_out_in_one_write_and_each_message_keeps_its_own_outcome() {
    let script = Script {
        rcpt: Arc::new(|to: &str| {
            (to == "<nobody@one.test>").then(|| reply(550, (5, 1, 1), "No such user"))
        }),
        ..Script::default()
    };
    let server = SmtpServer::start(local(), script).unwrap();
    let remote = routed(&[("one.test", server.addr)], config());
    let key = remote.router().destination_key("one.test");
    assert!(
        !remote.takes_runs(&key),
        "nothing known before a connection"
    );
    // The first message opens the connection and shows what it can take.
    let first = remote.deliver("one.test", &envelope("a@one.test"), BODY);
    assert!(delivered(&first), "{first:?}");
    assert!(
        remote.takes_runs(&key),
        "PIPELINING and CHUNKING were offered"
    );
    let before = server.reads().len();

    let run = [
        item("b@one.test", BODY),
        item("nobody@one.test", BODY),
        item("c@one.test", BODY),
    ];
    let outcomes = remote.deliver_run(&run).expect("the run goes together");
    assert_eq!(outcomes.len(), 3);
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    assert!(
        matches!(&outcomes[1][..], [Outcome::Failed(r)] if r.reply.code() == 550),
        "{outcomes:?}"
    );
    assert!(delivered(&outcomes[2]), "{outcomes:?}");
    assert_eq!(server.accepts(), 1, "the cached connection carried the run");
    let received: Vec<Vec<String>> = server
        .received()
        .into_iter()
        .map(|r| {
            assert_eq!(r.body, BODY);
            r.recipients
        })
        .collect();
    assert_eq!(
        received,
        [["<a@one.test>"], ["<b@one.test>"], ["<c@one.test>"]]
    );
    // All three transactions were written before any reply was read: the
    // server's first read of the run holds them all, RSET between them.
    let run_reads = &reads(&server)[before..];
    let first_read = &run_reads[0];
    assert_eq!(first_read.matches("MAIL FROM:").count(), 3, "{run_reads:?}");
    // The first goes on an idle session; each that follows resets first.
    assert_eq!(first_read.matches("RSET\r\n").count(), 2, "{run_reads:?}");
    assert_eq!(
        first_read.matches("BDAT 24 LAST\r\n").count(),
        3,
        "{run_reads:?}"
    );
    assert!(!first_read.contains("DATA\r\n"), "{run_reads:?}");
}

#[test]
fn a_run_that_cannot_go_together_is_left_to_the_one_message_path() {
    let one = SmtpServer::start(local(), Script::default()).unwrap();
    let two = SmtpServer::start(local(), Script::default()).unwrap();
    let remote = routed(&[("one.test", one.addr), ("two.test", two.addr)], config());
    // Different next hops.
    let split = [item("a@one.test", BODY), item("b@two.test", BODY)];
    assert!(remote.deliver_run(&split).is_none());
    // A body too large to go with its envelope.
    let large = vec![b'x'; PIPELINED_BODY_MAX as usize + 1];
    let mixed = [item("a@one.test", BODY), item("b@one.test", &large)];
    assert!(remote.deliver_run(&mixed).is_none());
    // A single message is no run.
    assert!(remote.deliver_run(&[item("a@one.test", BODY)]).is_none());
    // Chunking off: every message waits for DATA's 354.
    let off = routed(
        &[("one.test", one.addr)],
        RemoteConfig {
            chunking: false,
            ..config()
        },
    );
    let run = [item("a@one.test", BODY), item("b@one.test", BODY)];
    assert!(off.deliver_run(&run).is_none());
    assert_eq!(one.accepts() + two.accepts(), 0, "nothing was sent");
}

#[test]
fn a_next_hop_without_chunking_is_not_asked_to_take_runs() {
    let script = Script {
        extensions: Extensions {
            chunking: false,
            ..Extensions::default()
        },
        ..Script::default()
    };
    let server = SmtpServer::start(local(), script).unwrap();
    let remote = routed(&[("one.test", server.addr)], config());
    let key = remote.router().destination_key("one.test");
    assert!(delivered(&remote.deliver(
        "one.test",
        &envelope("a@one.test"),
        BODY
    )));
    assert!(!remote.takes_runs(&key));
    // Handed a run anyway, it sends the messages one after the other.
    let run = [item("b@one.test", BODY), item("c@one.test", BODY)];
    let outcomes = remote.deliver_run(&run).expect("same next hop");
    assert!(outcomes.iter().all(|o| delivered(o)), "{outcomes:?}");
    assert!(
        !reads(&server).iter().any(|r| r.contains("RSET")),
        "no transaction followed another: {:?}",
        reads(&server)
    );
    assert_eq!(server.received().len(), 3);
}

#[test]
fn messages_a_closing_server_left_unanswered_go_again_on_a_new_connection() {
    // The second message of the run is answered with 421, and the server
    // hangs up: it and the third go again, on a connection of their own.
    let script = Script {
        message: Arc::new(|n| (n == 1).then(|| reply(421, (4, 3, 2), "Going down"))),
        ..Script::default()
    };
    let server = SmtpServer::start(local(), script).unwrap();
    let remote = routed(&[("one.test", server.addr)], config());
    assert!(delivered(&remote.deliver(
        "one.test",
        &envelope("a@one.test"),
        BODY
    )));
    let run = [
        item("b@one.test", BODY),
        item("c@one.test", BODY),
        item("d@one.test", BODY),
    ];
    let outcomes = remote.deliver_run(&run).expect("the run goes together");
    assert!(outcomes.iter().all(|o| delivered(o)), "{outcomes:?}");
    let mut got: Vec<String> = server
        .received()
        .into_iter()
        .map(|r| r.recipients[0].clone())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "<a@one.test>",
            "<b@one.test>",
            "<c@one.test>",
            "<d@one.test>"
        ]
    );
    assert!(server.accepts() >= 2, "a new connection after the 421");
}

#[test]
fn an_unreachable_first_address_costs_the_run_one_attempt_then_each_goes_on() {
    use remote_support::Dnsmasq;
    use sluice_delivery::route::{RouteConfig, Router};
    let second = SmtpServer::start(local(), Script::default()).unwrap();
    let port = second.addr.port();
    // Nothing listens on mx1's address at that port: connection refused.
    let dns = Dnsmasq::start(&[
        "--mx-host=runs.test,mx1.runs.test,10".into(),
        "--mx-host=runs.test,mx2.runs.test,20".into(),
        "--host-record=mx1.runs.test,127.0.0.5".into(),
        "--host-record=mx2.runs.test,127.0.0.1".into(),
    ]);
    let router = Router::new(
        RouteConfig::default(),
        sluice_dns::Resolver::new(&[dns.addr], std::time::Duration::from_secs(5)).unwrap(),
    )
    .unwrap()
    .with_smtp_port(port);
    let remote = Remote::new(config(), router);
    let run = [
        item("a@runs.test", BODY),
        item("b@runs.test", BODY),
        item("c@runs.test", BODY),
    ];
    let outcomes = remote.deliver_run(&run).expect("one first address");
    assert!(outcomes.iter().all(|o| delivered(o)), "{outcomes:?}");
    assert_eq!(second.received().len(), 3);

    // With no other address, every message keeps the refusal, deferred.
    let closed = std::net::TcpListener::bind(local()).unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let remote = routed(&[("gone.test", nowhere)], config());
    let run = [item("a@gone.test", BODY), item("b@gone.test", BODY)];
    let outcomes = remote.deliver_run(&run).expect("one first address");
    for o in &outcomes {
        assert!(
            matches!(&o[..], [Outcome::Deferred(r)] if r.reply.to_string().contains("Connection refused")),
            "{outcomes:?}"
        );
    }
}

#[test]
fn a_next_hop_listed_without_chunking_gets_data_and_no_runs() {
    let server = SmtpServer::start(local(), Script::default()).unwrap();
    // The same next hop, CHUNKING offered: BDAT by default...
    let plain = routed(&[("one.test", server.addr)], config());
    assert!(delivered(&plain.deliver(
        "one.test",
        &envelope("a@one.test"),
        BODY
    )));
    assert!(reads(&server).iter().any(|r| r.contains("BDAT")));
    // ...and DATA when the operator names it (its address and port here).
    let listed =
        routed(&[("one.test", server.addr)], config()).with_no_chunking([server.addr.to_string()]);
    let before = server.reads().len();
    assert!(delivered(&listed.deliver(
        "one.test",
        &envelope("b@one.test"),
        BODY
    )));
    let after: Vec<String> = reads(&server).split_off(before);
    assert!(
        after.iter().any(|r| r.contains("DATA\r\n")),
        "DATA to the listed hop: {after:?}"
    );
    assert!(
        !after.iter().any(|r| r.contains("BDAT")),
        "no BDAT to the listed hop: {after:?}"
    );
    let key = listed.router().destination_key("one.test");
    assert!(!listed.takes_runs(&key), "no runs to the listed hop");
    let run = [item("c@one.test", BODY), item("d@one.test", BODY)];
    assert!(listed.deliver_run(&run).is_none(), "one by one");
    assert_eq!(server.received().len(), 2);
}
