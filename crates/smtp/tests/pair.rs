//! Our client against our server, in memory (quinn's `Pair`): the bytes one
//! state machine writes are the bytes the other reads, with no socket and
//! no clock. What the client sends, the server must read back as the same
//! typed envelope and the same content; what the server decides, the client
//! must report per recipient, at the right stage.

use proptest::prelude::*;
use sluice_smtp::client::{
    BdatPolicy, ClientConfig, ClientEvent, ClientSession, CloseReason, Credentials, Message,
    Outcome, RecipientResult, ReplyOrigin, TlsUse,
};
use sluice_smtp::server::{Decision, Event, Extensions, ServerConfig, ServerSession};
use sluice_smtp::{
    BodyType, Domain, EnhancedCode, Envelope, ForwardPath, MailParams, Notify, OriginalRecipient,
    Path, RcptParams, Recipient, Reply, Ret, ReversePath, Stage,
};

/// What the server's front end decides per event; `None` accepts.
type Policy = Box<dyn FnMut(&Event) -> Option<Decision>>;

/// A client and a server joined by two in-memory pipes.
struct Pair {
    client: ClientSession,
    server: ServerSession,
    /// Client → server bytes the server has not consumed yet.
    to_server: Vec<u8>,
    policy: Policy,
    /// What the server's front end saw: each message's envelope and content.
    received: Vec<(Envelope, Vec<u8>)>,
    /// Every client event, in order.
    events: Vec<ClientEvent>,
    /// The body the client sends when the session asks for one.
    body: Vec<u8>,
}

impl Pair {
    fn new(client: ClientConfig, server: ServerConfig, policy: Policy) -> Pair {
        let mut server = ServerSession::new(server);
        server.greet(None);
        Pair {
            client: ClientSession::new(client),
            server,
            to_server: Vec::new(),
            policy,
            received: Vec::new(),
            events: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Moves bytes both ways and answers events until neither side has
    /// anything left to say. Bounded: a livelock fails the test.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            // Server → client.
            let out = std::mem::take(self.server.output());
            if !out.is_empty() {
                self.client.receive(&out);
                moved = true;
            }
            // Client events.
            while let Some(event) = self.client.poll_event() {
                match event {
                    ClientEvent::SendBody(_) => {
                        let body = self.body.clone();
                        self.client.send_body(&body).expect("the body is expected");
                    }
                    // The "handshake": both sides agree they are inside TLS.
                    // The server has sent its 220 (the client read it) and
                    // reads nothing in clear after STARTTLS.
                    ClientEvent::StartTls => {
                        assert!(self.server.wants_tls());
                        self.to_server.clear();
                        self.server.tls_started();
                        self.client.tls_established();
                    }
                    _ => {}
                }
                self.events.push(event);
                moved = true;
            }
            // Client → server.
            let out = self.client.output().to_vec();
            if !out.is_empty() {
                self.client.consume_output(out.len());
                self.to_server.extend_from_slice(&out);
                moved = true;
            }
            let used = self.server.receive(&self.to_server);
            if used > 0 {
                self.to_server.drain(..used);
                moved = true;
            }
            // Server events.
            if let Some(event) = self.server.event().cloned() {
                if event == Event::Message {
                    let content = self.server.take_message().expect("a message is pending");
                    let envelope = self.server.transaction().cloned().expect("a transaction");
                    self.received.push((envelope, content));
                }
                let decision = (self.policy)(&event).unwrap_or(Decision::Accept);
                self.server.decide(decision).expect("an event is pending");
                moved = true;
            }
            self.server.take_notices().for_each(drop);
            if !moved {
                return;
            }
        }
        panic!("the pair never settled");
    }

    fn send(&mut self, message: Message, body: &[u8]) -> Vec<RecipientResult> {
        self.body = body.to_vec();
        let before = self.events.len();
        self.client
            .send_message(message)
            .expect("the client takes it");
        self.drive();
        self.events[before..]
            .iter()
            .find_map(|e| match e {
                ClientEvent::MessageDone(results) => Some(results.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no result; events: {:?}", self.events))
    }
}

fn domain(name: &str) -> Domain {
    Domain::parse(name).expect("a domain")
}

fn path(text: &str) -> Path {
    Path::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

fn forward(text: &str) -> ForwardPath {
    ForwardPath::Path(path(text))
}

fn server_config(extensions: Extensions) -> ServerConfig {
    ServerConfig {
        hostname: "mx.example.net".into(),
        extensions,
        ..ServerConfig::default()
    }
}

fn all_extensions() -> Extensions {
    Extensions {
        binary_mime: true,
        dsn: true,
        ..Extensions::default()
    }
}

fn refuse_rcpt(local: &'static str) -> Policy {
    Box::new(move |event| match event {
        Event::Rcpt {
            forward_path: ForwardPath::Path(p),
            ..
        } if p.mailbox.local_part.to_string() == local => Some(Decision::Reject(Reply::new(
            550,
            Some(EnhancedCode::new(5, 1, 1)),
            "No such user here",
        ))),
        _ => None,
    })
}

#[test]
fn the_server_reads_the_envelope_the_client_wrote() {
    let mut pair = Pair::new(
        ClientConfig::new(domain("client.example.org")),
        server_config(all_extensions()),
        Box::new(|_| None),
    );
    let envelope = Envelope {
        reverse_path: ReversePath::Path(path("<sender@example.org>")),
        params: MailParams {
            body: Some(BodyType::EightBitMime),
            ret: Some(Ret::Hdrs),
            envid: Some("QQ314159 +plus=".into()),
            ..MailParams::default()
        },
        recipients: vec![
            Recipient {
                forward_path: forward("<rcpt@example.net>"),
                params: RcptParams {
                    notify: Some(Notify::On {
                        success: true,
                        failure: true,
                        delay: false,
                    }),
                    orcpt: Some(OriginalRecipient {
                        addr_type: "rfc822".into(),
                        address: "Original=Rcpt@example.net".into(),
                    }),
                },
            },
            Recipient::new(ForwardPath::Postmaster),
        ],
    };
    let body = b"Subject: caf\xc3\xa9\r\n\r\n.leading dot\r\n..two\r\nend\r\n";
    let results = pair.send(
        Message {
            envelope: std::sync::Arc::new(envelope.clone()),
            body_size: body.len() as u64,
        },
        body,
    );
    assert_eq!(results.len(), 2);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.index, i);
        assert!(matches!(r.outcome, Outcome::Delivered(_)), "{r:?}");
        assert_eq!((r.stage, r.origin), (Stage::EndOfData, ReplyOrigin::Remote));
    }
    let (received, content) = &pair.received[0];
    // SIZE is the client's to add (from the body), the rest goes through as given.
    let mut expected = envelope;
    expected.params.size = Some(body.len() as u64);
    assert_eq!(*received, expected);
    assert_eq!(content, body, "dot-stuffing must round-trip");
}

#[test]
fn a_refused_recipient_is_reported_at_rcpt_and_the_rest_delivered() {
    for pipelining in [true, false] {
        let mut pair = Pair::new(
            ClientConfig::new(domain("client.example.org")),
            server_config(Extensions {
                pipelining,
                ..Extensions::default()
            }),
            refuse_rcpt("ghost"),
        );
        let message = Message::new(
            ReversePath::Path(path("<sender@example.org>")),
            vec![
                forward("<alice@example.net>"),
                forward("<ghost@example.net>"),
                forward("<bob@example.net>"),
            ],
            7,
        );
        let results = pair.send(message, b"hello\r\n");
        let ghost = &results[1];
        assert_eq!(ghost.stage, Stage::Rcpt, "pipelining {pipelining}");
        match &ghost.outcome {
            Outcome::Permanent(reply) => {
                assert_eq!(reply.to_string(), "550 5.1.1 No such user here")
            }
            other => panic!("{other:?}"),
        }
        for i in [0, 2] {
            assert!(matches!(results[i].outcome, Outcome::Delivered(_)));
            assert_eq!(results[i].stage, Stage::EndOfData);
        }
        // The server's envelope has only the recipients it accepted.
        let (received, _) = &pair.received[0];
        let accepted: Vec<String> = received
            .recipients
            .iter()
            .map(|r| match &r.forward_path {
                ForwardPath::Path(p) => p.mailbox.to_string(),
                ForwardPath::Postmaster => "postmaster".into(),
            })
            .collect();
        assert_eq!(accepted, ["alice@example.net", "bob@example.net"]);
    }
}

#[test]
fn a_421_mid_transaction_leaves_every_recipient_transient_at_its_stage() {
    let mut pair = Pair::new(
        ClientConfig::new(domain("client.example.org")),
        server_config(Extensions::default()),
        Box::new(|event| {
            matches!(event, Event::StartData).then(|| {
                Decision::Disconnect(Reply::new(
                    421,
                    Some(EnhancedCode::new(4, 3, 2)),
                    "Shutting down",
                ))
            })
        }),
    );
    let message = Message::new(
        ReversePath::Null,
        vec![forward("<a@example.net>"), forward("<b@example.net>")],
        3,
    );
    let results = pair.send(message, b"x\r\n");
    for r in &results {
        match &r.outcome {
            Outcome::Transient(reply) => assert_eq!(reply.code(), 421),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.stage, Stage::Data);
    }
    assert!(pair.received.is_empty());
    assert!(matches!(
        pair.events.last(),
        Some(ClientEvent::Closed(CloseReason::ServiceClosing(_)))
    ));
}

#[test]
fn two_messages_and_quit_on_one_connection() {
    let mut pair = Pair::new(
        ClientConfig::new(domain("client.example.org")),
        server_config(Extensions::default()),
        Box::new(|_| None),
    );
    for n in 0..2 {
        let body = format!("Subject: {n}\r\n\r\nbody {n}\r\n");
        let message = Message::new(
            ReversePath::Path(path("<s@example.org>")),
            vec![forward("<r@example.net>")],
            body.len() as u64,
        );
        let results = pair.send(message, body.as_bytes());
        assert!(matches!(results[0].outcome, Outcome::Delivered(_)));
        assert_eq!(pair.received[n].1, body.as_bytes());
    }
    pair.client.quit();
    pair.drive();
    assert!(pair.server.is_closed());
    assert_eq!(
        pair.events.last(),
        Some(&ClientEvent::Closed(CloseReason::Quit))
    );
}

/// STARTTLS between our two halves: the client asks because the server
/// offers it, both start over inside TLS, and a REQUIRETLS message (which
/// the server accepts only inside TLS) goes through with its flag.
#[test]
fn starttls_then_a_requiretls_message() {
    let mut pair = Pair::new(
        ClientConfig {
            tls: TlsUse::Required,
            ..ClientConfig::new(domain("client.example.org"))
        },
        server_config(Extensions {
            starttls: true,
            requiretls: true,
            ..Extensions::default()
        }),
        Box::new(|_| None),
    );
    let mut message = Message::new(
        ReversePath::Path(path("<s@example.org>")),
        vec![forward("<r@example.net>")],
        3,
    );
    message.envelope_mut().params.requiretls = true;
    let results = pair.send(message, b"x\r\n");
    assert!(
        matches!(results[0].outcome, Outcome::Delivered(_)),
        "{results:?}"
    );
    assert!(pair.client.is_tls() && pair.server.is_tls());
    assert!(pair.events.contains(&ClientEvent::StartTls));
    assert!(pair.received[0].0.params.requiretls);
}

fn auth_server() -> ServerConfig {
    ServerConfig {
        tls_required: true,
        auth_required: true,
        ..server_config(Extensions {
            starttls: true,
            auth: vec!["PLAIN".into(), "LOGIN".into()],
            ..Extensions::default()
        })
    }
}

/// Accepts alice with `s3cret`, and no one else.
fn check_password() -> Policy {
    Box::new(|event| match event {
        Event::Auth {
            login, password, ..
        } if login == "alice" && password.expose() == "s3cret" => None,
        Event::Auth { .. } => Some(Decision::Reject(Reply::new(
            535,
            Some(EnhancedCode::new(5, 7, 8)),
            "Authentication credentials invalid",
        ))),
        _ => None,
    })
}

/// Three octets from alice to one recipient: what the login tests send.
fn alices_message() -> Message {
    Message::new(
        ReversePath::Path(path("<alice@example.org>")),
        vec![forward("<r@example.net>")],
        3,
    )
}

fn client_with(password: &str, tls: TlsUse) -> ClientConfig {
    ClientConfig {
        tls,
        credentials: Some(Credentials {
            login: "alice".into(),
            password: password.into(),
            in_clear: false,
        }),
        ..ClientConfig::new(domain("client.example.org"))
    }
}

/// Our client logs in to our server (a provider's relay, say): after
/// STARTTLS, AUTH PLAIN, then the message.
#[test]
fn the_client_logs_in_inside_tls() {
    let mut pair = Pair::new(
        client_with("s3cret", TlsUse::Required),
        auth_server(),
        check_password(),
    );
    let results = pair.send(alices_message(), b"x\r\n");
    assert!(
        matches!(results[0].outcome, Outcome::Delivered(_)),
        "{results:?}"
    );
    assert_eq!(pair.server.login(), Some("alice"));
}

#[test]
fn a_refused_login_defers_every_recipient_at_the_auth_stage() {
    let mut pair = Pair::new(
        client_with("wrong", TlsUse::Required),
        auth_server(),
        check_password(),
    );
    let results = pair.send(alices_message(), b"x\r\n");
    match &results[0].outcome {
        Outcome::Transient(reply) => assert_eq!(
            reply.to_string().trim_end(),
            "451 4.7.0 Login to the next hop refused: 535 5.7.8 Authentication credentials invalid"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(results[0].stage, Stage::Auth);
    assert!(pair.received.is_empty());
    assert!(pair.events.iter().any(|e| matches!(
        e,
        ClientEvent::Closed(CloseReason::AuthFailed(Some(r))) if r.code() == 535
    )));
}

/// Without TLS the password stays home, and the message waits.
#[test]
fn credentials_are_not_sent_in_clear() {
    let mut server = auth_server();
    server.tls_required = false;
    server.extensions.starttls = false;
    let mut pair = Pair::new(client_with("s3cret", TlsUse::Off), server, check_password());
    let results = pair.send(alices_message(), b"x\r\n");
    assert!(matches!(&results[0].outcome, Outcome::Transient(r) if r.code() == 451));
    assert!(
        pair.events
            .iter()
            .any(|e| matches!(e, ClientEvent::Closed(CloseReason::AuthFailed(None))))
    );
    assert!(pair.server.login().is_none());
}

/// A body as a message would have it: CRLF lines, some starting with dots,
/// some 8-bit octets, possibly a line that is only a dot.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b"".to_vec()),
        proptest::collection::vec(
            prop_oneof![
                Just(b'.'),
                Just(b'a'),
                Just(b' '),
                Just(0xe9u8),
                0x21u8..0x7f
            ],
            0..40
        ),
    ];
    proptest::collection::vec(line, 0..12).prop_map(|lines| {
        let mut body = Vec::new();
        for line in lines {
            body.extend_from_slice(&line);
            body.extend_from_slice(b"\r\n");
        }
        body
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the body, over DATA (dot-stuffed) or BDAT (as it is), the
    /// server's content is the client's body, octet for octet.
    #[test]
    fn any_body_arrives_unchanged(body in body(), bdat in any::<bool>(), pipelining in any::<bool>()) {
        let client = ClientConfig {
            bdat: if bdat { BdatPolicy::WhenOffered } else { BdatPolicy::WhenRequired },
            ..ClientConfig::new(domain("client.example.org"))
        };
        let mut pair = Pair::new(
            client,
            server_config(Extensions { pipelining, ..all_extensions() }),
            Box::new(|_| None),
        );
        let mut message = Message::new(
            ReversePath::Path(path("<s@example.org>")),
            vec![forward("<r@example.net>")],
            body.len() as u64,
        );
        message.envelope_mut().params.body = Some(BodyType::EightBitMime);
        let results = pair.send(message, &body);
        prop_assert!(matches!(results[0].outcome, Outcome::Delivered(_)), "{:?}", results);
        prop_assert_eq!(&pair.received[0].1, &body);
    }
}

/// Three messages in flight at once, the second refused whole: our server
/// reads `RSET`, `MAIL`, `RCPT` and `BDAT … LAST` right behind the body
/// before them, answers each in turn, and the client gives each message its
/// own results, in order.
#[test]
fn messages_that_follow_each_other_without_waiting() {
    let mut client = ClientConfig::new(domain("client.example.org"));
    client.bdat = BdatPolicy::WhenOffered;
    let mut pair = Pair::new(
        client,
        server_config(Extensions::default()),
        refuse_rcpt("nobody"),
    );
    pair.drive();
    assert!(pair.client.is_ready());
    let body = b"Subject: run\r\n\r\nthe same body\r\n";
    pair.body = body.to_vec();
    for rcpt in ["<a@example.net>", "<nobody@example.net>", "<c@example.net>"] {
        let message = Message::new(
            ReversePath::Path(path("<s@example.org>")),
            vec![forward(rcpt)],
            body.len() as u64,
        );
        pair.client.send_message(message).expect("it follows");
        assert_eq!(
            pair.client.poll_event(),
            Some(ClientEvent::SendBody(
                sluice_smtp::client::BodyFraming::Raw {
                    size: body.len() as u64
                }
            ))
        );
        pair.client.send_body(body).unwrap();
    }
    pair.drive();
    let done: Vec<&Vec<RecipientResult>> = pair
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MessageDone(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 3);
    assert!(matches!(done[0][0].outcome, Outcome::Delivered(_)));
    assert!(
        matches!(&done[1][0].outcome, Outcome::Permanent(r) if r.code() == 550),
        "{:?}",
        done[1]
    );
    assert_eq!(done[1][0].stage, Stage::Rcpt);
    assert!(matches!(done[2][0].outcome, Outcome::Delivered(_)));
    let to: Vec<String> = pair
        .received
        .iter()
        .map(|(envelope, content)| {
            assert_eq!(content, body);
            envelope.recipients[0].forward_path.to_string()
        })
        .collect();
    assert_eq!(to, ["<a@example.net>", "<c@example.net>"]);
    assert!(pair.client.is_ready());
}
