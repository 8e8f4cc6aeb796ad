//! How the SMTP client session reads the server: a whole conversation in
//! any chunking, multiline replies, garbage and out-of-step replies, 421,
//! timeouts and a lost connection.

mod client_support;

use client_support::*;

/// A whole conversation fed in one piece: the message and the QUIT are
/// given before the greeting, so the client never has to act in between
/// except to send the body.
const CONVERSATION: &[u8] = b"220 mx.example.net ESMTP\r\n\
250-mx.example.net at your service\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n\
250 2.1.0 OK\r\n\
550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n\
550-5.1.1 double-checking the recipient's email address for typos or\r\n\
550 5.1.1 unnecessary spaces.\r\n\
250 2.1.5 OK\r\n\
354  Go ahead\r\n\
250 2.0.0 OK 1712345678 x1si\r\n\
221 2.0.0 closing connection\r\n";

fn converse(chunks: &[&[u8]]) -> (String, Vec<ClientEvent>) {
    let mut s = ClientSession::new(config());
    s.send_message(envelope(&["<nobody@example.net>", "<a@example.net>"]))
        .unwrap();
    s.quit();
    let mut out = String::new();
    let mut all = Vec::new();
    for chunk in chunks {
        s.receive(chunk);
        loop {
            out += &sent(&mut s);
            let Some(event) = s.poll_event() else { break };
            if event == ClientEvent::SendBody(BodyFraming::DotStuffed) {
                s.send_body(BODY).unwrap();
            }
            all.push(event);
        }
    }
    (out, all)
}

#[test]
fn whole_conversation_and_multiline_replies() {
    let (out, events) = converse(&[CONVERSATION]);
    assert_eq!(
        out,
        "EHLO client.example.org\r\n\
         MAIL FROM:<sender@example.org> SIZE=31\r\n\
         RCPT TO:<nobody@example.net>\r\n\
         RCPT TO:<a@example.net>\r\n\
         DATA\r\n\
         Subject: test\r\n\r\n..leading dot\r\n.\r\n\
         QUIT\r\n"
    );
    let missing = Reply::multiline(
        550,
        Some(EnhancedCode::new(5, 1, 1)),
        [
            "The email account that you tried to reach does not exist. Please try",
            "double-checking the recipient's email address for typos or",
            "unnecessary spaces.",
        ],
    );
    assert_eq!(
        events,
        vec![
            ClientEvent::SendBody(BodyFraming::DotStuffed),
            ClientEvent::MessageDone(vec![
                remote(0, Stage::Rcpt, Outcome::Permanent(missing)),
                remote(
                    1,
                    Stage::EndOfData,
                    Outcome::Delivered(reply(250, (2, 0, 0), "OK 1712345678 x1si"))
                ),
            ]),
            ClientEvent::Closed(CloseReason::Quit),
        ]
    );
}

#[test]
fn replies_split_at_every_byte_boundary() {
    let whole = converse(&[CONVERSATION]);
    for cut in 0..=CONVERSATION.len() {
        let (a, b) = CONVERSATION.split_at(cut);
        assert_eq!(converse(&[a, b]), whole, "split at {cut}");
    }
    let bytes: Vec<&[u8]> = CONVERSATION.chunks(1).collect();
    assert_eq!(converse(&bytes), whole, "one byte at a time");
}

#[test]
fn service_closing_in_the_middle() {
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&[
        "<a@example.net>",
        "<b@example.net>",
        "<c@example.net>",
    ]))
    .unwrap();
    sent(&mut s);
    s.receive(
        b"250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n250 2.1.5 Ok\r\n421 4.4.2 Shutting down\r\n",
    );
    let closing = reply(421, (4, 4, 2), "Shutting down");
    assert_eq!(
        events(&mut s),
        vec![
            ClientEvent::MessageDone(vec![
                remote(
                    0,
                    Stage::Rcpt,
                    Outcome::Permanent(reply(550, (5, 1, 1), "No such user"))
                ),
                remote(1, Stage::Rcpt, Outcome::Transient(closing.clone())),
                remote(2, Stage::Rcpt, Outcome::Transient(closing.clone())),
            ]),
            ClientEvent::Closed(CloseReason::ServiceClosing(closing)),
        ]
    );
    // The server is gone: no QUIT, and nothing it sends later matters.
    assert_eq!(sent(&mut s), "");
    s.receive(b"250 late\r\n");
    assert_eq!(events(&mut s), vec![]);
    assert_eq!(s.timeout_class(), None);
}

#[test]
fn service_closing_while_idle() {
    let mut s = ready(EHLO_PIPELINING);
    s.receive(b"421 4.4.2 Idle timeout\r\n");
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::Closed(CloseReason::ServiceClosing(reply(
            421,
            (4, 4, 2),
            "Idle timeout"
        )))]
    );
}

#[test]
fn garbage_reply_is_a_transient_failure() {
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>", "<b@example.net>"]))
        .unwrap();
    sent(&mut s);
    s.receive(b"250 Ok\r\nHTTP/1.1 400 Bad Request\r\n");
    let ev = events(&mut s);
    assert!(matches!(
        ev.last(),
        Some(ClientEvent::Closed(CloseReason::ProtocolError(_)))
    ));
    let results = done(ev);
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.origin, ReplyOrigin::Local);
        assert!(
            matches!(&r.outcome, Outcome::Transient(reply) if reply.enhanced() == Some(EnhancedCode::new(4, 5, 0))),
            "{r:?}"
        );
    }
    assert_eq!(sent(&mut s), "", "no QUIT to a server out of step");
    assert!(s.is_closed());
}

#[test]
fn replies_that_make_no_sense_are_protocol_errors() {
    // 250 to DATA: the server did not take the body it would now read as commands.
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.receive(b"250 Ok\r\n250 Ok\r\n250 Ok\r\n");
    let ev = events(&mut s);
    assert!(matches!(
        ev.last(),
        Some(ClientEvent::Closed(CloseReason::ProtocolError(_)))
    ));
    assert!(matches!(done(ev)[0].outcome, Outcome::Transient(_)));

    // A reply to nothing.
    let mut s = ready(EHLO_PIPELINING);
    s.receive(b"250 Ok\r\n");
    assert!(matches!(
        events(&mut s).as_slice(),
        [ClientEvent::Closed(CloseReason::ProtocolError(_))]
    ));
}

#[test]
fn timeout_and_lost_connection_fail_what_is_pending() {
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>", "<b@example.net>"]))
        .unwrap();
    s.receive(b"250 Ok\r\n250 Ok\r\n550 5.1.1 No\r\n354 Go\r\n");
    s.send_body(BODY).unwrap();
    events(&mut s);
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataTermination));
    assert_eq!(
        TimeoutClass::DataTermination.rfc5321_minimum().as_secs(),
        600
    );
    s.timed_out();
    let ev = events(&mut s);
    assert_eq!(
        ev.last(),
        Some(&ClientEvent::Closed(CloseReason::TimedOut(Some(
            TimeoutClass::DataTermination
        ))))
    );
    let results = done(ev);
    assert!(
        matches!(results[0].outcome, Outcome::Transient(ref r) if r.enhanced() == Some(EnhancedCode::new(4, 4, 2)))
    );
    assert_eq!(results[0].origin, ReplyOrigin::Local);
    // The refusal already given stands.
    assert_eq!(results[1].origin, ReplyOrigin::Remote);
    assert!(matches!(results[1].outcome, Outcome::Permanent(_)));
    s.timed_out();
    s.connection_lost();
    assert_eq!(events(&mut s), vec![], "a closed session stays quiet");

    let mut s = ClientSession::new(config());
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.connection_lost();
    let ev = events(&mut s);
    assert_eq!(
        ev.last(),
        Some(&ClientEvent::Closed(CloseReason::ConnectionLost))
    );
    assert!(matches!(done(ev)[0].outcome, Outcome::Transient(_)));
}
