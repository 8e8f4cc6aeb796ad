//! BDAT with the envelope (RFC 3030 with RFC 2920): a small body goes in
//! the same write as MAIL and RCPT, and the replies to all of them are read
//! once it is out. Exact bytes both ways.

mod client_support;

use client_support::*;
use sluice_smtp::client::PIPELINED_BODY_MAX;

const EHLO_CHUNKING: &[u8] =
    b"250-mx.example.net Hello\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n";

fn chunking() -> ClientSession {
    let mut cfg = config();
    cfg.bdat = BdatPolicy::WhenOffered;
    let mut s = ClientSession::new(cfg);
    s.receive(GREETING);
    assert_eq!(sent(&mut s), EHLO);
    s.receive(EHLO_CHUNKING);
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
    s
}

const BODY_RAW: BodyFraming = BodyFraming::Raw {
    size: BODY.len() as u64,
};

/// Sends `recipients` a message and writes its body: everything up to the
/// server's first reply.
fn sent_with_body(s: &mut ClientSession, recipients: &[&str]) -> String {
    s.send_message(envelope(recipients)).unwrap();
    let envelope = sent(s);
    assert_eq!(events(s), vec![ClientEvent::SendBody(BODY_RAW)]);
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataBlock));
    s.send_body(BODY).unwrap();
    envelope + &sent(s)
}

#[test]
fn a_small_body_goes_with_its_envelope() {
    let mut s = chunking();
    let wire = sent_with_body(&mut s, &["<a@example.net>", "<b@example.net>"]);
    assert_eq!(
        wire,
        format!(
            "MAIL FROM:<sender@example.org>\r\n\
             RCPT TO:<a@example.net>\r\n\
             RCPT TO:<b@example.net>\r\n\
             BDAT 31 LAST\r\n{}",
            std::str::from_utf8(BODY).unwrap()
        ),
        "one write: no DATA, no dot-stuffing, no terminator"
    );
    // The replies come in order, and the MAIL one is awaited first.
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Mail));
    s.receive(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Rcpt));
    s.receive(b"550 5.1.1 No such user\r\n");
    assert_eq!(events(&mut s), vec![], "no result before the end of data");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataTermination));
    s.receive(b"250 2.0.0 Queued as X1\r\n");
    let ev = events(&mut s);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    assert_eq!(
        done(ev),
        vec![
            remote(
                0,
                Stage::EndOfData,
                Outcome::Delivered(reply(250, (2, 0, 0), "Queued as X1"))
            ),
            remote(
                1,
                Stage::Rcpt,
                Outcome::Permanent(reply(550, (5, 1, 1), "No such user"))
            ),
        ]
    );
    assert_eq!(sent(&mut s), "", "the transaction is over: no RSET");

    // The session goes on with the next message the same way.
    let wire = sent_with_body(&mut s, &["<c@example.net>"]);
    assert!(
        wire.starts_with("MAIL FROM:<sender@example.org>\r\n"),
        "{wire}"
    );
    assert!(wire.contains("BDAT 31 LAST\r\n"), "{wire}");
}

#[test]
fn replies_that_come_during_the_body_wait_for_it() {
    let mut s = chunking();
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    sent(&mut s);
    assert_eq!(events(&mut s), vec![ClientEvent::SendBody(BODY_RAW)]);
    // A fast server answers everything before the caller has written the
    // body: nothing is decided until the body is out.
    s.receive(b"250 Ok\r\n250 Ok\r\n250 2.0.0 Ok\r\n");
    assert_eq!(events(&mut s), vec![]);
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataBlock));
    s.send_body(BODY).unwrap();
    let ev = events(&mut s);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    assert!(matches!(done(ev)[0].outcome, Outcome::Delivered(_)));
}

#[test]
fn every_recipient_refused_the_body_is_refused_too_and_rset_follows() {
    let mut s = chunking();
    sent_with_body(&mut s, &["<a@example.net>", "<b@example.net>"]);
    s.receive(b"250 Ok\r\n550 5.1.1 No\r\n450 4.2.1 Later\r\n554 5.5.1 No valid recipients\r\n");
    assert_eq!(
        done(events(&mut s)),
        vec![
            remote(
                0,
                Stage::Rcpt,
                Outcome::Permanent(reply(550, (5, 1, 1), "No"))
            ),
            remote(
                1,
                Stage::Rcpt,
                Outcome::Transient(reply(450, (4, 2, 1), "Later"))
            ),
        ],
        "each recipient keeps its own RCPT reply, not the 554"
    );
    // The server may still hold the reverse-path: RSET clears it.
    assert_eq!(sent(&mut s), "RSET\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Rset));
    s.receive(b"250 Ok\r\n");
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
}

#[test]
fn a_refused_mail_decides_for_everyone() {
    let mut s = chunking();
    sent_with_body(&mut s, &["<a@example.net>", "<b@example.net>"]);
    s.receive(
        b"550 5.7.1 Sender refused\r\n503 5.5.1 Need MAIL\r\n503 5.5.1 Need MAIL\r\n\
          503 5.5.1 Need MAIL before BDAT\r\n",
    );
    let refused = Outcome::Permanent(reply(550, (5, 7, 1), "Sender refused"));
    assert_eq!(
        done(events(&mut s)),
        vec![
            remote(0, Stage::Mail, refused.clone()),
            remote(1, Stage::Mail, refused),
        ]
    );
    assert_eq!(sent(&mut s), "RSET\r\n");
}

#[test]
fn a_refused_bdat_is_the_accepted_recipients_result() {
    let mut s = chunking();
    sent_with_body(&mut s, &["<a@example.net>", "<b@example.net>"]);
    s.receive(b"250 Ok\r\n250 Ok\r\n550 5.1.1 No\r\n452 4.3.1 Insufficient storage\r\n");
    assert_eq!(
        done(events(&mut s)),
        vec![
            remote(
                0,
                Stage::EndOfData,
                Outcome::Transient(reply(452, (4, 3, 1), "Insufficient storage"))
            ),
            remote(
                1,
                Stage::Rcpt,
                Outcome::Permanent(reply(550, (5, 1, 1), "No"))
            ),
        ]
    );
    assert_eq!(sent(&mut s), "RSET\r\n");
}

#[test]
fn a_421_in_the_replies_closes_with_every_recipient_deferred() {
    let mut s = chunking();
    sent_with_body(&mut s, &["<a@example.net>"]);
    s.receive(b"250 Ok\r\n421 4.3.2 Shutting down\r\n");
    let ev = events(&mut s);
    assert!(
        matches!(
            ev.last(),
            Some(ClientEvent::Closed(CloseReason::ServiceClosing(_)))
        ),
        "{ev:?}"
    );
    assert!(matches!(done(ev)[0].outcome, Outcome::Transient(_)));
    assert_eq!(sent(&mut s), "");
}

#[test]
fn the_connection_lost_during_the_body_defers_the_message() {
    let mut s = chunking();
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    sent(&mut s);
    assert_eq!(events(&mut s), vec![ClientEvent::SendBody(BODY_RAW)]);
    s.connection_lost();
    let ev = events(&mut s);
    assert_eq!(
        ev.last(),
        Some(&ClientEvent::Closed(CloseReason::ConnectionLost))
    );
    let results = done(ev);
    assert!(matches!(results[0].outcome, Outcome::Transient(_)));
    assert_eq!(results[0].origin, ReplyOrigin::Local);
}

#[test]
fn a_large_body_waits_for_an_accepted_recipient() {
    // Up to the limit, the body goes with the envelope…
    let mut s = chunking();
    let mut message = envelope(&["<a@example.net>"]);
    message.body_size = PIPELINED_BODY_MAX;
    s.send_message(message).unwrap();
    assert!(sent(&mut s).ends_with(&format!("BDAT {PIPELINED_BODY_MAX} LAST\r\n")));
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::SendBody(BodyFraming::Raw {
            size: PIPELINED_BODY_MAX
        })]
    );

    // …past it, it waits, so it is never sent for nobody.
    let mut s = chunking();
    let mut message = envelope(&["<a@example.net>"]);
    let size = PIPELINED_BODY_MAX + 1;
    message.body_size = size;
    s.send_message(message).unwrap();
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\n"
    );
    assert_eq!(events(&mut s), vec![]);
    s.receive(b"250 Ok\r\n250 Ok\r\n");
    assert_eq!(sent(&mut s), format!("BDAT {size} LAST\r\n"));
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::SendBody(BodyFraming::Raw { size })]
    );
}

#[test]
fn without_pipelining_the_body_waits_its_turn() {
    let mut cfg = config();
    cfg.bdat = BdatPolicy::WhenOffered;
    let mut s = ClientSession::new(cfg);
    s.receive(GREETING);
    sent(&mut s);
    s.receive(b"250-mx.example.net\r\n250 CHUNKING\r\n");
    events(&mut s);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    assert_eq!(sent(&mut s), "MAIL FROM:<sender@example.org>\r\n");
    assert_eq!(events(&mut s), vec![]);
}

#[test]
fn data_unless_told_otherwise() {
    // The default policy sends DATA even to a server offering CHUNKING.
    let mut s = ClientSession::new(config());
    s.receive(GREETING);
    sent(&mut s);
    s.receive(EHLO_CHUNKING);
    events(&mut s);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n"
    );
}
