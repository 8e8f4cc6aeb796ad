//! The client session in LMTP mode (RFC 2033), driven by scripted servers:
//! exact bytes both ways.

use sluice_smtp::client::{
    BdatPolicy, BodyFraming, ClientConfig, ClientEvent, ClientSession, CloseReason, Message,
    Outcome, RecipientResult, ReplyOrigin, TimeoutClass,
};
use sluice_smtp::{Domain, EnhancedCode, ForwardPath, Path, Reply, ReversePath, Stage};

const GREETING: &[u8] = b"220 imap.example.org Dovecot ready.\r\n";
const LHLO: &str = "LHLO mx.example.org\r\n";
const LHLO_REPLY: &[u8] =
    b"250-imap.example.org\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n";
const BODY: &[u8] = b"Subject: hi\r\n\r\n.dot\r\n";

fn path(s: &str) -> Path {
    Path::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e:?}"))
}

fn envelope(recipients: &[&str]) -> Message {
    Message::new(
        ReversePath::Path(path("<sender@example.net>")),
        recipients
            .iter()
            .map(|r| ForwardPath::Path(path(r)))
            .collect(),
        BODY.len() as u64,
    )
}

fn config() -> ClientConfig {
    ClientConfig::lmtp(Domain::Name("mx.example.org".into()))
}

fn sent(s: &mut ClientSession) -> String {
    let out = s.output().to_vec();
    s.consume_output(out.len());
    String::from_utf8(out).expect("client output is ASCII here")
}

fn events(s: &mut ClientSession) -> Vec<ClientEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn reply(code: u16, e: (u8, u16, u16), text: &'static str) -> Reply {
    Reply::new(code, Some(EnhancedCode::new(e.0, e.1, e.2)), text)
}

fn remote(index: usize, stage: Stage, outcome: Outcome) -> RecipientResult {
    RecipientResult {
        index,
        outcome,
        stage,
        origin: ReplyOrigin::Remote,
    }
}

/// A session past the greeting and LHLO.
fn ready(config: ClientConfig, lhlo_reply: &[u8]) -> ClientSession {
    let mut s = ClientSession::new(config);
    s.receive(GREETING);
    assert_eq!(sent(&mut s), LHLO);
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Hello));
    s.receive(lhlo_reply);
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
    s
}

#[test]
fn one_reply_per_accepted_recipient_in_rcpt_order() {
    let mut s = ready(config(), LHLO_REPLY);
    assert!(s.capabilities().pipelining && s.capabilities().eight_bit_mime);
    assert_eq!(s.remote_name(), Some("imap.example.org"));

    s.send_message(envelope(&[
        "<a@example.org>",
        "<b@example.org>",
        "<c@example.org>",
    ]))
    .unwrap();
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.net>\r\n\
         RCPT TO:<a@example.org>\r\n\
         RCPT TO:<b@example.org>\r\n\
         RCPT TO:<c@example.org>\r\n\
         DATA\r\n"
    );
    s.receive(
        b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 <b@example.org> User doesn't exist\r\n\
          250 2.1.5 OK\r\n354 OK\r\n",
    );
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::SendBody(BodyFraming::DotStuffed)]
    );
    s.send_body(BODY).unwrap();
    assert_eq!(sent(&mut s), "Subject: hi\r\n\r\n..dot\r\n.\r\n");

    // The first reply is a's alone: c is still waiting, and so is the session.
    s.receive(b"250 2.0.0 <a@example.org> Saved\r\n");
    assert_eq!(events(&mut s), vec![]);
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataTermination));
    s.receive(b"452 4.2.2 <c@example.org> Quota exceeded\r\n");
    assert_eq!(
        events(&mut s),
        vec![
            ClientEvent::MessageDone(vec![
                remote(
                    0,
                    Stage::EndOfData,
                    Outcome::Delivered(reply(250, (2, 0, 0), "<a@example.org> Saved"))
                ),
                remote(
                    1,
                    Stage::Rcpt,
                    Outcome::Permanent(reply(550, (5, 1, 1), "<b@example.org> User doesn't exist"))
                ),
                remote(
                    2,
                    Stage::EndOfData,
                    Outcome::Transient(reply(452, (4, 2, 2), "<c@example.org> Quota exceeded"))
                ),
            ]),
            ClientEvent::Ready,
        ]
    );
    assert_eq!(s.timeout_class(), None);
    // No RSET after a finished transaction, in LMTP as in SMTP.
    assert_eq!(sent(&mut s), "");
}

#[test]
fn replies_for_several_recipients_in_one_read() {
    let mut s = ready(config(), LHLO_REPLY);
    s.send_message(envelope(&["<a@example.org>", "<b@example.org>"]))
        .unwrap();
    sent(&mut s);
    s.receive(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 OK\r\n");
    events(&mut s);
    s.send_body(BODY).unwrap();
    sent(&mut s);
    s.receive(b"554 5.6.0 <a@example.org> Sieve rejected\r\n250 2.0.0 <b@example.org> Saved\r\n");
    assert_eq!(
        events(&mut s),
        vec![
            ClientEvent::MessageDone(vec![
                remote(
                    0,
                    Stage::EndOfData,
                    Outcome::Permanent(reply(554, (5, 6, 0), "<a@example.org> Sieve rejected"))
                ),
                remote(
                    1,
                    Stage::EndOfData,
                    Outcome::Delivered(reply(250, (2, 0, 0), "<b@example.org> Saved"))
                ),
            ]),
            ClientEvent::Ready,
        ]
    );
}

#[test]
fn lockstep_server_and_a_second_message() {
    let mut s = ready(
        config(),
        b"250-imap.example.org\r\n250 ENHANCEDSTATUSCODES\r\n",
    );
    for round in 0..2 {
        s.send_message(envelope(&["<a@example.org>", "<b@example.org>"]))
            .unwrap();
        assert_eq!(
            sent(&mut s),
            "MAIL FROM:<sender@example.net>\r\n",
            "round {round}"
        );
        s.receive(b"250 2.1.0 OK\r\n");
        assert_eq!(sent(&mut s), "RCPT TO:<a@example.org>\r\n");
        s.receive(b"250 2.1.5 OK\r\n");
        assert_eq!(sent(&mut s), "RCPT TO:<b@example.org>\r\n");
        s.receive(b"250 2.1.5 OK\r\n");
        assert_eq!(sent(&mut s), "DATA\r\n");
        s.receive(b"354 OK\r\n");
        assert_eq!(
            events(&mut s),
            vec![ClientEvent::SendBody(BodyFraming::DotStuffed)]
        );
        s.send_body(BODY).unwrap();
        sent(&mut s);
        s.receive(b"250 2.0.0 Saved\r\n");
        assert_eq!(events(&mut s), vec![]);
        s.receive(b"250 2.0.0 Saved\r\n");
        let ev = events(&mut s);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(matches!(&ev[0], ClientEvent::MessageDone(r)
            if r.len() == 2 && r.iter().all(|r| matches!(r.outcome, Outcome::Delivered(_)))));
        assert_eq!(ev[1], ClientEvent::Ready);
    }
    s.quit();
    assert_eq!(sent(&mut s), "QUIT\r\n");
    s.receive(b"221 2.0.0 Bye\r\n");
    assert_eq!(events(&mut s), vec![ClientEvent::Closed(CloseReason::Quit)]);
}

#[test]
fn lhlo_refused_has_no_helo_fallback() {
    let mut s = ClientSession::new(config());
    s.send_message(envelope(&["<a@example.org>"])).unwrap();
    s.receive(GREETING);
    assert_eq!(sent(&mut s), LHLO);
    s.receive(b"500 5.5.1 Unknown command\r\n");
    // Straight to QUIT: an SMTP client would have tried HELO here.
    assert_eq!(sent(&mut s), "QUIT\r\n");
    let refusal = reply(500, (5, 5, 1), "Unknown command");
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::MessageDone(vec![remote(
            0,
            Stage::Hello,
            Outcome::Permanent(refusal.clone())
        )])]
    );
    s.receive(b"221 Bye\r\n");
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::Closed(CloseReason::HelloRefused(refusal))]
    );
}

#[test]
fn service_closing_between_recipient_replies() {
    let mut s = ready(config(), LHLO_REPLY);
    s.send_message(envelope(&["<a@example.org>", "<b@example.org>"]))
        .unwrap();
    sent(&mut s);
    s.receive(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 OK\r\n");
    events(&mut s);
    s.send_body(BODY).unwrap();
    sent(&mut s);
    s.receive(b"250 2.0.0 <a@example.org> Saved\r\n421 4.3.0 Shutting down\r\n");
    let closing = reply(421, (4, 3, 0), "Shutting down");
    assert_eq!(
        events(&mut s),
        vec![
            ClientEvent::MessageDone(vec![
                remote(
                    0,
                    Stage::EndOfData,
                    Outcome::Delivered(reply(250, (2, 0, 0), "<a@example.org> Saved"))
                ),
                remote(1, Stage::EndOfData, Outcome::Transient(closing.clone())),
            ]),
            ClientEvent::Closed(CloseReason::ServiceClosing(closing)),
        ]
    );
    assert_eq!(sent(&mut s), "");
}

#[test]
fn connection_lost_after_some_replies_keeps_them() {
    let mut s = ready(config(), LHLO_REPLY);
    s.send_message(envelope(&["<a@example.org>", "<b@example.org>"]))
        .unwrap();
    sent(&mut s);
    s.receive(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 OK\r\n");
    events(&mut s);
    s.send_body(BODY).unwrap();
    sent(&mut s);
    s.receive(b"250 2.0.0 Saved\r\n");
    s.connection_lost();
    let ev = events(&mut s);
    let ClientEvent::MessageDone(results) = &ev[0] else {
        panic!("{ev:?}");
    };
    assert!(matches!(results[0].outcome, Outcome::Delivered(_)));
    assert_eq!(results[0].origin, ReplyOrigin::Remote);
    assert!(matches!(&results[1].outcome, Outcome::Transient(r) if r.code() == 451));
    assert_eq!(results[1].origin, ReplyOrigin::Local);
    assert_eq!(ev[1], ClientEvent::Closed(CloseReason::ConnectionLost));
}

#[test]
fn data_accepted_with_no_recipient_is_a_protocol_error() {
    let mut s = ready(config(), LHLO_REPLY);
    s.send_message(envelope(&["<a@example.org>"])).unwrap();
    sent(&mut s);
    // RFC 2033 §4.2 says DATA MUST fail here; a server that says 354 anyway
    // would answer the lone dot with no reply, and the client would hang.
    s.receive(b"250 2.1.0 OK\r\n550 5.1.1 No such user\r\n354 OK\r\n");
    let ev = events(&mut s);
    assert_eq!(
        ev[0],
        ClientEvent::MessageDone(vec![remote(
            0,
            Stage::Rcpt,
            Outcome::Permanent(reply(550, (5, 1, 1), "No such user"))
        )])
    );
    assert!(
        matches!(&ev[1], ClientEvent::Closed(CloseReason::ProtocolError(d)) if d.contains("354")),
        "{ev:?}"
    );
    assert_eq!(
        sent(&mut s),
        "",
        "no dot, no QUIT: the server is out of step"
    );
}

#[test]
fn bdat_body_gets_per_recipient_replies_too() {
    let mut config = config();
    config.bdat = BdatPolicy::WhenOffered;
    let mut s = ready(
        config,
        b"250-imap.example.org\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n",
    );
    s.send_message(envelope(&["<a@example.org>", "<b@example.org>"]))
        .unwrap();
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.net>\r\n\
         RCPT TO:<a@example.org>\r\n\
         RCPT TO:<b@example.org>\r\n"
    );
    s.receive(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n");
    assert_eq!(sent(&mut s), format!("BDAT {} LAST\r\n", BODY.len()));
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::SendBody(BodyFraming::Raw {
            size: BODY.len() as u64
        })]
    );
    s.send_body(BODY).unwrap();
    assert_eq!(sent(&mut s).as_bytes(), BODY);
    s.receive(b"250 2.0.0 Saved\r\n");
    assert_eq!(events(&mut s), vec![]);
    s.receive(b"250 2.0.0 Saved\r\n");
    assert!(matches!(&events(&mut s)[0], ClientEvent::MessageDone(r) if r.len() == 2));
}

#[test]
fn smtp_mode_still_takes_one_reply_for_all() {
    // The same dialog without LMTP: the first end-of-data reply decides both
    // recipients, and a second one is out of step.
    let mut s = ClientSession::new(ClientConfig::new(Domain::Name("mx.example.org".into())));
    s.receive(GREETING);
    assert_eq!(sent(&mut s), "EHLO mx.example.org\r\n");
    s.receive(LHLO_REPLY);
    events(&mut s);
    s.send_message(envelope(&["<a@example.org>", "<b@example.org>"]))
        .unwrap();
    sent(&mut s);
    s.receive(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 OK\r\n");
    events(&mut s);
    s.send_body(BODY).unwrap();
    sent(&mut s);
    s.receive(b"250 2.0.0 Saved\r\n");
    let ev = events(&mut s);
    assert!(matches!(&ev[0], ClientEvent::MessageDone(r)
        if r.len() == 2 && r.iter().all(|r| matches!(r.outcome, Outcome::Delivered(_)))));
    assert_eq!(ev[1], ClientEvent::Ready);
}
