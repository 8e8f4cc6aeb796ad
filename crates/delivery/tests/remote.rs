//! The SMTP and LMTP client transport against real servers on loopback:
//! SMTP server threads built on `ServerSession`, a scripted LMTP server on a
//! unix socket, and dnsmasq for the MX records.

mod remote_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use remote_support::{Dnsmasq, LmtpServer, Script, SmtpServer, config, reply, routed_to};
use sluice_delivery::Outcome;
use sluice_delivery::outcome::RemoteMta;
use sluice_delivery::remote::{Remote, RemoteConfig};
use sluice_delivery::route::{RouteConfig, Router};
use sluice_dns::Resolver;
use sluice_smtp::server::Extensions;
use sluice_smtp::{
    BodyType, Envelope, ForwardPath, MailParams, Path, RcptParams, Recipient, ReversePath, Stage,
};

const BODY: &[u8] = b"Subject: test\r\n\r\nHello.\r\n";

/// A Remote whose only route sends `domain` to `server`; DNS is never asked.
fn routed(domain: &str, server: SocketAddr, config: RemoteConfig) -> Remote {
    routed_to(&[(domain, server)], config)
}

/// A Remote that finds MX hosts through `dns`, on the test servers' port.
fn through_dns(dns: &Dnsmasq, port: u16) -> Remote {
    let router = Router::new(
        RouteConfig::default(),
        Resolver::new(&[dns.addr], Duration::from_secs(5)).unwrap(),
    )
    .unwrap()
    .with_smtp_port(port);
    Remote::new(config(), router)
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One message as the tests write it: addresses and parameters as on the
/// wire, turned into the typed envelope the transport takes by [`send`].
#[derive(Debug, Clone, Copy)]
struct Message<'a> {
    /// Without brackets; `""` for `<>`.
    reverse_path: &'a str,
    mail_params: &'a str,
    recipients: &'a [(&'a str, &'a str)],
    body: &'a [u8],
    /// 0 7bit, 1 8BITMIME, 2 BINARYMIME.
    body_type: u8,
}

fn message<'a>(recipients: &'a [(&'a str, &'a str)], body: &'a [u8]) -> Message<'a> {
    Message {
        reverse_path: "sender@example.org",
        mail_params: "",
        recipients,
        body,
        body_type: 0,
    }
}

fn path(mailbox: &str) -> Path {
    Path::parse(format!("<{mailbox}>").as_bytes()).unwrap()
}

fn envelope(m: &Message<'_>) -> Envelope {
    let mut params = MailParams::parse(m.mail_params).unwrap();
    params.body = [
        None,
        Some(BodyType::EightBitMime),
        Some(BodyType::BinaryMime),
    ][usize::from(m.body_type)];
    Envelope {
        reverse_path: if m.reverse_path.is_empty() {
            ReversePath::Null
        } else {
            ReversePath::Path(path(m.reverse_path))
        },
        params,
        recipients: m
            .recipients
            .iter()
            .map(|&(address, params)| Recipient {
                forward_path: ForwardPath::Path(path(address)),
                params: RcptParams::parse(params).unwrap(),
            })
            .collect(),
    }
}

fn send(remote: &Remote, domain: &str, m: &Message<'_>) -> Vec<Outcome> {
    remote.deliver(domain, &envelope(m), m.body)
}

fn send_lmtp(remote: &Remote, target: &str, m: &Message<'_>) -> Vec<Outcome> {
    remote.deliver_lmtp(target, &envelope(m), m.body)
}

/// An outcome as one line of text, as a log would show it: the host that
/// said the reply first, when a host said it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    Delivered(String),
    Deferred(String),
    Failed(String),
}

fn said(o: &Outcome) -> Said {
    let reason = o.reason();
    let text = match &reason.remote_mta {
        Some(remote) => format!("{remote} said: {}", reason.reply),
        None => reason.reply.to_string(),
    };
    kind(o, text)
}

fn kind(o: &Outcome, text: String) -> Said {
    match o {
        Outcome::Delivered(_) => Said::Delivered(text),
        Outcome::Deferred(_) => Said::Deferred(text),
        Outcome::Failed(_) => Said::Failed(text),
    }
}

/// The outcomes' replies alone, for tests about the replies themselves.
fn replies_only(outcomes: &[Outcome]) -> Vec<Said> {
    outcomes
        .iter()
        .map(|o| kind(o, o.reply().to_string()))
        .collect()
}

fn delivered(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Delivered(_))
}

fn records(list: &[String]) -> Dnsmasq {
    Dnsmasq::start(list)
}

/// Two listeners on the same port, one on 127.0.0.1 and one on another
/// loopback address, as two MX hosts of one domain.
fn pair(first_ip: [u8; 4], first: Script, second: Script) -> (SmtpServer, SmtpServer) {
    for _ in 0..10 {
        let second = SmtpServer::start(local(0), second.clone()).unwrap();
        let port = second.addr.port();
        if let Ok(first) = SmtpServer::start(SocketAddr::from((first_ip, port)), first.clone()) {
            return (first, second);
        }
    }
    panic!("no port free on both addresses");
}

#[test]
fn several_recipients_go_in_one_transaction() {
    let server = SmtpServer::start(local(0), Script::default()).unwrap();
    let remote = routed("one.test", server.addr, config());
    let recipients = [
        ("alice@one.test", ""),
        ("bob@one.test", ""),
        ("carol@one.test", ""),
    ];
    let outcomes = send(&remote, "one.test", &message(&recipients, BODY));
    assert_eq!(
        replies_only(&outcomes),
        vec![Said::Delivered("250 2.0.0 Ok: queued as M0".into()); 3]
    );
    let received = server.received();
    assert_eq!(received.len(), 1, "one message for three recipients");
    assert_eq!(received[0].reverse_path, "<sender@example.org>");
    assert_eq!(
        received[0].recipients,
        ["<alice@one.test>", "<bob@one.test>", "<carol@one.test>"]
    );
    assert_eq!(received[0].body, BODY);
    assert_eq!(server.accepts(), 1);
}

#[test]
fn each_recipient_gets_its_own_reply() {
    let script = Script {
        rcpt: Arc::new(|path| {
            (path == "<bob@one.test>")
                .then(|| reply(550, (5, 1, 1), "<bob@one.test>: no such user"))
        }),
        ..Script::default()
    };
    let server = SmtpServer::start(local(0), script).unwrap();
    let remote = routed("one.test", server.addr, config());
    let recipients = [
        ("alice@one.test", ""),
        ("bob@one.test", ""),
        ("carol@one.test", ""),
    ];
    let outcomes = send(&remote, "one.test", &message(&recipients, BODY));
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    // The reason names the host that gave the reply (the bounce's Remote-MTA)
    // and the command it answered, as fields.
    let Outcome::Failed(reason) = &outcomes[1] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(
        reason.reply.to_string(),
        "550 5.1.1 <bob@one.test>: no such user"
    );
    assert_eq!(
        reason.remote_mta,
        Some(RemoteMta {
            name: "[127.0.0.1]".into(),
            addr: Some(server.addr),
        })
    );
    assert_eq!(reason.stage, Some(Stage::Rcpt));
    assert_eq!(
        said(&outcomes[1]),
        Said::Failed(format!(
            "[127.0.0.1]:{} said: 550 5.1.1 <bob@one.test>: no such user",
            server.addr.port()
        ))
    );
    let Outcome::Delivered(ok) = &outcomes[2] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(ok.stage, Some(Stage::EndOfData));
    let received = server.received();
    assert_eq!(
        received[0].recipients,
        ["<alice@one.test>", "<carol@one.test>"]
    );
}

#[test]
fn a_transient_refusal_then_success_on_the_same_connection() {
    let script = Script {
        message: Arc::new(|n| (n == 0).then(|| reply(451, (4, 3, 0), "Try again later"))),
        ..Script::default()
    };
    let server = SmtpServer::start(local(0), script).unwrap();
    let remote = routed("one.test", server.addr, config());
    let recipients = [("alice@one.test", ""), ("bob@one.test", "")];
    let first = send(&remote, "one.test", &message(&recipients, BODY));
    assert_eq!(
        replies_only(&first),
        vec![Said::Deferred("451 4.3.0 Try again later".into()); 2]
    );
    let second = send(&remote, "one.test", &message(&recipients, BODY));
    assert!(second.iter().all(delivered), "{second:?}");
    assert_eq!(server.received().len(), 1);
    assert_eq!(server.accepts(), 1);
}

#[test]
fn connections_are_reused_up_to_the_limit() {
    let server = SmtpServer::start(local(0), Script::default()).unwrap();
    let remote = routed(
        "one.test",
        server.addr,
        RemoteConfig {
            max_messages_per_connection: 2,
            ..config()
        },
    );
    let recipients = [("alice@one.test", "")];
    for _ in 0..3 {
        let outcomes = send(&remote, "one.test", &message(&recipients, BODY));
        assert!(delivered(&outcomes[0]), "{outcomes:?}");
    }
    let connections: Vec<usize> = server.received().iter().map(|r| r.connection).collect();
    assert_eq!(connections, [0, 0, 1]);
    assert_eq!(server.accepts(), 2);
    // The first connection was closed politely after its second message.
    server.wait_for("the QUIT", |s| s.quits() == 1);
    assert_eq!(remote.idle_connections(), 1);
    assert_eq!(remote.close_all(), 1);
    server.wait_for("the second QUIT", |s| s.quits() == 2);
}

#[test]
fn idle_connections_are_closed() {
    let server = SmtpServer::start(local(0), Script::default()).unwrap();
    let remote = routed(
        "one.test",
        server.addr,
        RemoteConfig {
            idle_close: Duration::from_millis(400),
            ..config()
        },
    );
    let recipients = [("alice@one.test", "")];
    send(&remote, "one.test", &message(&recipients, BODY));
    assert_eq!(remote.close_idle(), 0, "not idle long enough yet");
    assert_eq!(remote.idle_connections(), 1);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(remote.close_idle(), 1);
    assert_eq!(remote.idle_connections(), 0);
    server.wait_for("the QUIT", |s| s.quits() == 1);

    // Expired connections found at checkout are closed too, and a new one
    // carries the message.
    send(&remote, "one.test", &message(&recipients, BODY));
    std::thread::sleep(Duration::from_millis(600));
    let outcomes = send(&remote, "one.test", &message(&recipients, BODY));
    assert!(delivered(&outcomes[0]));
    assert_eq!(server.accepts(), 3);
    server.wait_for("the second QUIT", |s| s.quits() == 2);
}

#[test]
fn a_cached_connection_the_server_dropped_is_replaced() {
    let server = SmtpServer::start(local(0), Script::default()).unwrap();
    let addr = server.addr;
    let remote = routed("one.test", addr, config());
    let recipients = [("alice@one.test", "")];
    assert!(delivered(
        &send(&remote, "one.test", &message(&recipients, BODY))[0]
    ));
    assert_eq!(remote.idle_connections(), 1);
    // The server goes away (closing its end) and comes back on the same port.
    // A connection used a moment ago is taken without asking the socket: the
    // send fails before any reply and a fresh connection carries the message.
    drop(server);
    let server = SmtpServer::start(addr, Script::default()).unwrap();
    let outcomes = send(&remote, "one.test", &message(&recipients, BODY));
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    assert_eq!(server.received().len(), 1);
    // One idle for longer is asked first (a peek sees the close) and replaced.
    std::thread::sleep(Duration::from_millis(1100));
    drop(server);
    let server = SmtpServer::start(addr, Script::default()).unwrap();
    let outcomes = send(&remote, "one.test", &message(&recipients, BODY));
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    assert_eq!(server.received().len(), 1);
    assert_eq!(
        server.accepts(),
        1,
        "one fresh connection, no failed attempt on it"
    );
}

#[test]
fn eight_bit_body_needs_8bitmime() {
    let script = Script {
        extensions: Extensions {
            eight_bit_mime: false,
            ..Extensions::default()
        },
        ..Script::default()
    };
    let server = SmtpServer::start(local(0), script).unwrap();
    let remote = routed("one.test", server.addr, config());
    let recipients = [("alice@one.test", "")];
    let body = "Subject: café\r\n\r\nnaïve\r\n".as_bytes();
    let outcomes = send(
        &remote,
        "one.test",
        &Message {
            body_type: 1,
            ..message(&recipients, body)
        },
    );
    let Said::Failed(reply) = said(&outcomes[0]) else {
        panic!("{outcomes:?}");
    };
    assert!(reply.starts_with("554 5.6.3 "), "{reply}");
    assert!(reply.contains("8BITMIME"), "{reply}");
    let host = format!("[127.0.0.1]:{}", server.addr.port());
    assert!(reply.contains(&host), "names the host: {reply}");
    assert!(server.received().is_empty());
}

#[test]
fn bodies_arrive_byte_exact() {
    let server = SmtpServer::start(local(0), Script::default()).unwrap();
    let remote = routed("one.test", server.addr, config());
    let recipients = [("alice@one.test", "")];

    // Lines that need dot-stuffing, and 8-bit octets.
    let mut body = b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nmiddle . dot\r\n".to_vec();
    body.extend_from_slice("caf\u{e9} \u{2603}\r\n".as_bytes());
    body.extend_from_slice(b"\xff\xfe raw octets\r\n");
    // Past IOV_MAX slices: every line starts with a dot, two slices each.
    for i in 0..3000 {
        body.extend_from_slice(format!(".line {i}\r\n").as_bytes());
    }
    let outcomes = send(
        &remote,
        "one.test",
        &Message {
            body_type: 1,
            ..message(&recipients, &body)
        },
    );
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    let received = server.received();
    assert_eq!(received[0].body_type, BodyType::EightBitMime);
    assert!(received[0].body == body, "the body changed on the way");

    // BINARYMIME goes by BDAT, octets as they are, bare LF and NUL included.
    let script = Script {
        extensions: Extensions {
            chunking: true,
            binary_mime: true,
            ..Extensions::default()
        },
        ..Script::default()
    };
    let server = SmtpServer::start(local(0), script).unwrap();
    let remote = routed("one.test", server.addr, config());
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let outcomes = send(
        &remote,
        "one.test",
        &Message {
            body_type: 2,
            ..message(&recipients, &binary)
        },
    );
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    let received = server.received();
    assert_eq!(received[0].body_type, BodyType::BinaryMime);
    assert!(
        received[0].body == binary,
        "the binary body changed on the way"
    );
}

#[test]
fn null_reverse_path_and_parameters_pass_through() {
    let script = Script {
        extensions: Extensions {
            dsn: true,
            ..Extensions::default()
        },
        ..Script::default()
    };
    let server = SmtpServer::start(local(0), script).unwrap();
    let remote = routed("one.test", server.addr, config());
    let recipients = [("alice@one.test", "NOTIFY=FAILURE")];
    let outcomes = send(
        &remote,
        "one.test",
        &Message {
            reverse_path: "",
            mail_params: "RET=HDRS ENVID=abc",
            ..message(&recipients, BODY)
        },
    );
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    let received = &server.received()[0];
    assert_eq!(received.reverse_path, "<>");
    assert!(
        received.mail_params.contains("RET=HDRS"),
        "{}",
        received.mail_params
    );
    assert!(
        received.mail_params.contains("ENVID=abc"),
        "{}",
        received.mail_params
    );
    assert_eq!(received.rcpt_params, ["NOTIFY=FAILURE"]);
}

#[test]
fn unreachable_preferred_mx_falls_through_to_the_next() {
    let server = SmtpServer::start(local(0), Script::default()).unwrap();
    let port = server.addr.port();
    // mx1 is 127.0.0.2, where nothing listens on the port.
    let dns = records(&[
        "--mx-host=two.test,mx1.two.test,10".into(),
        "--mx-host=two.test,mx2.two.test,20".into(),
        "--host-record=mx1.two.test,127.0.0.2".into(),
        "--host-record=mx2.two.test,127.0.0.1".into(),
        "--mx-host=dead.test,mx1.two.test,10".into(),
    ]);
    let remote = through_dns(&dns, port);
    let recipients = [("alice@two.test", ""), ("bob@two.test", "")];
    let outcomes = send(&remote, "two.test", &message(&recipients, BODY));
    assert!(outcomes.iter().all(delivered), "{outcomes:?}");
    assert_eq!(server.received().len(), 1);

    // Nowhere to go: the mail waits, and the reply names the host.
    let outcomes = send(&remote, "dead.test", &message(&recipients[..1], BODY));
    assert_eq!(
        outcomes.iter().map(said).collect::<Vec<_>>(),
        [Said::Deferred(format!(
            "451 4.4.1 Connection refused by mx1.two.test[127.0.0.2]:{port}"
        ))]
    );
    // And a domain that does not exist fails every recipient.
    let outcomes = send(&remote, "nope.test", &message(&recipients, BODY));
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(said(o), Said::Failed(reply) if reply.starts_with("550 5.1.2"))),
        "{outcomes:?}"
    );
}

#[test]
fn a_4xx_greeting_sends_the_message_to_the_next_mx() {
    let busy = Script {
        greeting: Some(reply(421, (4, 3, 2), "mx1 too busy")),
        ..Script::default()
    };
    let (first, second) = pair([127, 0, 0, 3], busy, Script::default());
    let dns = records(&[
        "--mx-host=busy.test,mx1.busy.test,10".into(),
        "--mx-host=busy.test,mx2.busy.test,20".into(),
        "--host-record=mx1.busy.test,127.0.0.3".into(),
        "--host-record=mx2.busy.test,127.0.0.1".into(),
    ]);
    let remote = through_dns(&dns, second.addr.port());
    let recipients = [("alice@busy.test", "")];
    let outcomes = send(&remote, "busy.test", &message(&recipients, BODY));
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    assert_eq!(first.accepts(), 1, "mx1 was tried first");
    assert!(first.received().is_empty());
    assert_eq!(second.received().len(), 1);
}

#[test]
fn a_5xx_greeting_is_final_only_from_the_last_mx() {
    let refusing = || Script {
        greeting: Some(reply(554, (5, 7, 1), "No SMTP service here")),
        ..Script::default()
    };
    let (first, second) = pair([127, 0, 0, 4], refusing(), Script::default());
    let dns = records(&[
        "--mx-host=mixed.test,mx1.mixed.test,10".into(),
        "--mx-host=mixed.test,mx2.mixed.test,20".into(),
        "--host-record=mx1.mixed.test,127.0.0.4".into(),
        "--host-record=mx2.mixed.test,127.0.0.1".into(),
        "--mx-host=closed.test,mx1.mixed.test,10".into(),
    ]);
    let remote = through_dns(&dns, second.addr.port());
    let recipients = [("alice@mixed.test", "")];
    let outcomes = send(&remote, "mixed.test", &message(&recipients, BODY));
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    assert_eq!(first.accepts(), 1);
    assert_eq!(second.received().len(), 1);

    let outcomes = send(&remote, "closed.test", &message(&recipients, BODY));
    assert_eq!(
        replies_only(&outcomes),
        [Said::Failed("554 5.7.1 No SMTP service here".into())]
    );
}

#[test]
fn delivery_threads_share_one_remote() {
    let server = SmtpServer::start(local(0), Script::default()).unwrap();
    let remote = routed("one.test", server.addr, config());
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (remote, done) = (&remote, &done);
            scope.spawn(move || {
                for i in 0..5 {
                    let address = format!("user{t}.{i}@one.test");
                    let recipients = [(address.as_str(), "")];
                    let outcomes = send(remote, "one.test", &message(&recipients, BODY));
                    assert!(delivered(&outcomes[0]), "{outcomes:?}");
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(done.load(Ordering::SeqCst), 20);
    assert_eq!(server.received().len(), 20);
    // Never more connections than threads, and all of them reused.
    assert!(server.accepts() <= 4, "{} connections", server.accepts());
    assert_eq!(remote.idle_connections(), server.accepts());
}

#[test]
fn lmtp_over_a_unix_socket_with_a_reply_per_recipient() {
    let server = LmtpServer::start(
        Arc::new(|path| {
            (path == "<nobody@mail.test>").then(|| reply(550, (5, 1, 1), "No such user"))
        }),
        Arc::new(|path| {
            (path == "<full@mail.test>")
                .then(|| reply(452, (4, 2, 2), "<full@mail.test> Mailbox full"))
        }),
    );
    let target = server.target.clone();
    // LMTP needs no route: a Router that knows nothing will do.
    let remote = routed("unused.test", local(9), config());
    let recipients = [
        ("alice@mail.test", ""),
        ("nobody@mail.test", ""),
        ("full@mail.test", ""),
        ("bob@mail.test", ""),
    ];
    let mut body = b"Subject: lmtp\r\n\r\n.dot first\r\n".to_vec();
    body.extend_from_slice("\u{e9}t\u{e9}\r\n".as_bytes());
    let outcomes = send_lmtp(
        &remote,
        &target,
        &Message {
            body_type: 1,
            ..message(&recipients, &body)
        },
    );
    assert_eq!(
        replies_only(&outcomes),
        vec![
            Said::Delivered("250 2.0.0 <alice@mail.test> Saved".into()),
            Said::Failed("550 5.1.1 No such user".into()),
            Said::Deferred("452 4.2.2 <full@mail.test> Mailbox full".into()),
            Said::Delivered("250 2.0.0 <bob@mail.test> Saved".into()),
        ]
    );
    let received = server.received();
    assert_eq!(
        received[0].recipients,
        ["<alice@mail.test>", "<bob@mail.test>"]
    );
    assert!(received[0].body == body, "the body changed on the way");

    // The connection stays for the next message.
    let outcomes = send_lmtp(&remote, &target, &message(&recipients[..1], BODY));
    assert!(delivered(&outcomes[0]), "{outcomes:?}");
    assert_eq!(server.accepts(), 1);

    // No server there: the mail waits.
    let missing = format!("{target}.missing");
    let outcomes = send_lmtp(&remote, &missing, &message(&recipients[..1], BODY));
    assert!(
        matches!(said(&outcomes[0]), Said::Deferred(reply) if reply.starts_with("451 4.4.1")),
        "{outcomes:?}"
    );
}

#[test]
fn lmtp_over_tcp() {
    let server = LmtpServer::start_tcp(Arc::new(|_| None), Arc::new(|_| None));
    let remote = routed("unused.test", local(9), config());
    let recipients = [("alice@mail.test", ""), ("bob@mail.test", "")];
    let outcomes = send_lmtp(&remote, &server.target, &message(&recipients, BODY));
    assert!(outcomes.iter().all(delivered), "{outcomes:?}");
    assert_eq!(server.received()[0].body, BODY);
    // LMTP has no default port to fall back on.
    let outcomes = send_lmtp(&remote, "127.0.0.1", &message(&recipients, BODY));
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(said(o), Said::Deferred(reply) if reply.contains("no port"))),
        "{outcomes:?}"
    );
}

#[test]
fn a_small_body_goes_with_its_envelope_and_chunking_off_means_data() {
    for chunking in [true, false] {
        let server = SmtpServer::start(local(0), Script::default()).unwrap();
        let remote = routed(
            "one.test",
            server.addr,
            RemoteConfig {
                chunking,
                ..config()
            },
        );
        let outcomes = send(
            &remote,
            "one.test",
            &message(&[("alice@one.test", "")], BODY),
        );
        assert!(delivered(&outcomes[0]), "{outcomes:?}");
        assert_eq!(server.received()[0].body, BODY);
        let reads: Vec<String> = server
            .reads()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        let envelope = reads
            .iter()
            .find(|r| r.contains("MAIL FROM:"))
            .expect("a MAIL command");
        if chunking {
            // One write, so one read: the body did not wait for a reply.
            let bdat = format!("RCPT TO:<alice@one.test>\r\nBDAT {} LAST\r\n", BODY.len());
            assert!(envelope.contains(&bdat), "{reads:?}");
            assert!(
                envelope.ends_with(std::str::from_utf8(BODY).unwrap()),
                "{reads:?}"
            );
            assert!(!reads.iter().any(|r| r.contains("DATA\r\n")), "{reads:?}");
        } else {
            assert!(
                envelope.contains("RCPT TO:<alice@one.test>\r\nDATA\r\n"),
                "{reads:?}"
            );
            assert!(!reads.iter().any(|r| r.contains("BDAT")), "{reads:?}");
        }
    }
}
