//! Transactions that follow one another on a connection without waiting
//! for each other's replies (RFC 2920 with RFC 3030): while a message with
//! its body is in flight, the next goes out behind it as `RSET`, `MAIL`,
//! `RCPT`s and `BDAT <n> LAST` with its body, so several messages cost one
//! round trip. Exact bytes both ways.

mod client_support;

use client_support::*;
use sluice_smtp::client::{PIPELINED_BODY_MAX, PIPELINED_RUN_MAX};

const EHLO_CHUNKING: &[u8] =
    b"250-mx.example.net Hello\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n";

const BODY_RAW: BodyFraming = BodyFraming::Raw {
    size: BODY.len() as u64,
};

fn session(ehlo: &[u8], bdat: BdatPolicy) -> ClientSession {
    let mut cfg = config();
    cfg.bdat = bdat;
    let mut s = ClientSession::new(cfg);
    s.receive(GREETING);
    assert_eq!(sent(&mut s), EHLO);
    s.receive(ehlo);
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
    s
}

fn chunking() -> ClientSession {
    session(EHLO_CHUNKING, BdatPolicy::WhenOffered)
}

/// Gives the session a message and writes its body at once, as the
/// delivery side does; returns what went on the wire.
fn give(s: &mut ClientSession, recipients: &[&str]) -> String {
    s.send_message(envelope(recipients)).unwrap();
    let commands = sent(s);
    assert_eq!(events(s), vec![ClientEvent::SendBody(BODY_RAW)]);
    s.send_body(BODY).unwrap();
    commands + &sent(s)
}

fn body() -> &'static str {
    std::str::from_utf8(BODY).unwrap()
}

/// The MessageDones among `events`, in order.
fn all_done(events: Vec<ClientEvent>) -> Vec<Vec<RecipientResult>> {
    events
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::MessageDone(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn delivered(text: &'static str) -> Outcome {
    Outcome::Delivered(reply(250, (2, 0, 0), text))
}

#[test]
fn the_next_message_goes_behind_the_first_before_its_replies() {
    let mut s = chunking();
    let first = give(&mut s, &["<a@example.net>"]);
    assert_eq!(
        first,
        format!(
            "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nBDAT 31 LAST\r\n{}",
            body()
        )
    );
    let second = give(&mut s, &["<b@example.net>", "<c@example.net>"]);
    assert_eq!(
        second,
        format!(
            "RSET\r\n\
             MAIL FROM:<sender@example.org>\r\n\
             RCPT TO:<b@example.net>\r\n\
             RCPT TO:<c@example.net>\r\n\
             BDAT 31 LAST\r\n{}",
            body()
        ),
        "RSET first, then the whole transaction with its body"
    );
    // The first message's replies are awaited first.
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Mail));
    s.receive(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Queued as A1\r\n");
    let ev = events(&mut s);
    assert_eq!(
        all_done(ev.clone()),
        vec![vec![remote(0, Stage::EndOfData, delivered("Queued as A1"))]]
    );
    assert!(!ev.contains(&ClientEvent::Ready), "the second is in flight");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Rset));
    s.receive(b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user\r\n");
    assert_eq!(events(&mut s), vec![]);
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataTermination));
    s.receive(b"250 2.0.0 Queued as B2\r\n");
    let ev = events(&mut s);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    assert_eq!(
        all_done(ev),
        vec![vec![
            remote(0, Stage::EndOfData, delivered("Queued as B2")),
            remote(
                1,
                Stage::Rcpt,
                Outcome::Permanent(reply(550, (5, 1, 1), "No such user"))
            ),
        ]]
    );
    assert_eq!(sent(&mut s), "", "nothing more to say");
}

#[test]
fn replies_for_several_messages_in_one_read_decide_each_in_turn() {
    let mut s = chunking();
    give(&mut s, &["<a@example.net>"]);
    give(&mut s, &["<b@example.net>"]);
    give(&mut s, &["<c@example.net>"]);
    s.receive(
        b"250 Ok\r\n250 Ok\r\n250 2.0.0 One\r\n\
          250 Ok\r\n250 Ok\r\n250 Ok\r\n451 4.3.0 Try later\r\n\
          250 Ok\r\n250 Ok\r\n250 Ok\r\n250 2.0.0 Three\r\n",
    );
    let ev = events(&mut s);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    assert_eq!(
        all_done(ev),
        vec![
            vec![remote(0, Stage::EndOfData, delivered("One"))],
            vec![remote(
                0,
                Stage::EndOfData,
                Outcome::Transient(reply(451, (4, 3, 0), "Try later"))
            )],
            vec![remote(0, Stage::EndOfData, delivered("Three"))],
        ],
        "the first message's RSET-less replies, then four per follower"
    );
    assert_eq!(
        sent(&mut s),
        "",
        "a refused BDAT with a follower needs no RSET of its own: the follower's did it"
    );
}

#[test]
fn a_message_refused_whole_does_not_hold_up_the_next() {
    let mut s = chunking();
    give(&mut s, &["<a@example.net>"]);
    give(&mut s, &["<b@example.net>"]);
    // Every recipient of the first refused: its BDAT is refused too; the
    // follower's RSET closes whatever the server kept of it.
    s.receive(
        b"250 Ok\r\n550 5.1.1 No\r\n554 5.5.1 No valid recipients\r\n\
          250 Ok\r\n250 Ok\r\n250 Ok\r\n250 2.0.0 Queued\r\n",
    );
    let ev = events(&mut s);
    assert_eq!(
        all_done(ev),
        vec![
            vec![remote(
                0,
                Stage::Rcpt,
                Outcome::Permanent(reply(550, (5, 1, 1), "No"))
            )],
            vec![remote(0, Stage::EndOfData, delivered("Queued"))],
        ]
    );
    assert_eq!(sent(&mut s), "");
    assert!(s.is_ready());
}

#[test]
fn the_last_refused_message_still_gets_its_rset() {
    let mut s = chunking();
    give(&mut s, &["<a@example.net>"]);
    give(&mut s, &["<b@example.net>"]);
    s.receive(
        b"250 Ok\r\n250 Ok\r\n250 2.0.0 Queued\r\n\
          250 Ok\r\n250 Ok\r\n550 5.1.1 No\r\n554 5.5.1 No valid recipients\r\n",
    );
    assert_eq!(all_done(events(&mut s)).len(), 2);
    assert_eq!(
        sent(&mut s),
        "RSET\r\n",
        "no follower to clear the server's state"
    );
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Rset));
    s.receive(b"250 2.0.0 Ok\r\n");
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
}

#[test]
fn a_lost_connection_defers_every_message_still_in_flight() {
    let mut s = chunking();
    give(&mut s, &["<a@example.net>"]);
    give(&mut s, &["<b@example.net>"]);
    give(&mut s, &["<c@example.net>"]);
    s.receive(b"250 Ok\r\n250 Ok\r\n250 2.0.0 One\r\n250 Ok\r\n");
    s.connection_lost();
    let ev = events(&mut s);
    assert_eq!(
        ev.last(),
        Some(&ClientEvent::Closed(CloseReason::ConnectionLost))
    );
    let done = all_done(ev);
    assert_eq!(done.len(), 3, "one result per message, whatever happened");
    assert!(matches!(done[0][0].outcome, Outcome::Delivered(_)));
    for later in &done[1..] {
        assert_eq!(later.len(), 1);
        assert!(
            matches!(&later[0].outcome, Outcome::Transient(r) if r.code() == 451),
            "{later:?}"
        );
        assert_eq!(later[0].origin, ReplyOrigin::Local);
    }
}

#[test]
fn a_421_between_messages_defers_the_followers_with_it() {
    let mut s = chunking();
    give(&mut s, &["<a@example.net>"]);
    give(&mut s, &["<b@example.net>"]);
    s.receive(b"250 Ok\r\n250 Ok\r\n250 2.0.0 One\r\n421 4.3.2 Shutting down\r\n");
    let ev = events(&mut s);
    assert!(matches!(
        ev.last(),
        Some(ClientEvent::Closed(CloseReason::ServiceClosing(_)))
    ));
    let done = all_done(ev);
    assert!(matches!(done[0][0].outcome, Outcome::Delivered(_)));
    assert_eq!(
        done[1],
        vec![remote(
            0,
            Stage::Connect,
            Outcome::Transient(reply(421, (4, 3, 2), "Shutting down"))
        )]
    );
    assert_eq!(sent(&mut s), "", "no QUIT after a 421");
}

#[test]
fn a_refused_rset_puts_the_session_out_of_step() {
    let mut s = chunking();
    give(&mut s, &["<a@example.net>"]);
    give(&mut s, &["<b@example.net>"]);
    s.receive(b"250 Ok\r\n250 Ok\r\n250 2.0.0 One\r\n500 5.5.1 What?\r\n");
    let ev = events(&mut s);
    assert!(matches!(
        ev.last(),
        Some(ClientEvent::Closed(CloseReason::ProtocolError(_)))
    ));
    let done = all_done(ev);
    assert!(matches!(done[0][0].outcome, Outcome::Delivered(_)));
    assert!(matches!(&done[1][0].outcome, Outcome::Transient(r) if r.code() == 451));
}

#[test]
fn a_message_waits_for_its_turn_when_it_cannot_follow() {
    let busy = |s: &mut ClientSession, message: Message| {
        let refused = s.send_message(message).unwrap_err();
        assert_eq!(refused.kind, SendErrorKind::Busy);
        assert_eq!(sent(s), "", "nothing written for a message refused");
    };
    // Without CHUNKING there is no body that goes with its envelope.
    let mut s = session(EHLO_PIPELINING, BdatPolicy::WhenOffered);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    sent(&mut s);
    busy(&mut s, envelope(&["<b@example.net>"]));
    // With BDAT only when required.
    let mut s = session(EHLO_CHUNKING, BdatPolicy::WhenRequired);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    sent(&mut s);
    busy(&mut s, envelope(&["<b@example.net>"]));
    // While the body of the one before is not out yet.
    let mut s = chunking();
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    assert_eq!(events(&mut s), vec![ClientEvent::SendBody(BODY_RAW)]);
    sent(&mut s);
    busy(&mut s, envelope(&["<b@example.net>"]));
    s.send_body(BODY).unwrap();
    sent(&mut s);
    // A body too large to go with its envelope.
    let mut big = envelope(&["<b@example.net>"]);
    big.body_size = PIPELINED_BODY_MAX + 1;
    busy(&mut s, big);
    // Nor more in flight than the limit.
    let mut s = chunking();
    let mut given = 0u64;
    let mut at_max = envelope(&["<a@example.net>"]);
    at_max.body_size = PIPELINED_BODY_MAX;
    loop {
        match s.send_message(at_max.clone()) {
            Ok(()) => {
                events(&mut s);
                s.body_sent().unwrap();
                sent(&mut s);
                given += 1;
            }
            Err(e) => {
                assert_eq!(e.kind, SendErrorKind::Busy);
                break;
            }
        }
        assert!(given <= 64, "the limit never came");
    }
    assert_eq!(given, PIPELINED_RUN_MAX / PIPELINED_BODY_MAX);
    // Once the replies are in, the session takes the next one as usual.
    let mut s = chunking();
    give(&mut s, &["<a@example.net>"]);
    s.receive(b"250 Ok\r\n250 Ok\r\n250 2.0.0 One\r\n");
    assert_eq!(all_done(events(&mut s)).len(), 1);
    let next = give(&mut s, &["<b@example.net>"]);
    assert!(
        next.starts_with("MAIL FROM:"),
        "no RSET on an idle session: {next}"
    );
}

#[test]
fn lmtp_never_runs_transactions_together() {
    let mut cfg = ClientConfig::lmtp(Domain::Name("client.example.org".into()));
    cfg.bdat = BdatPolicy::WhenOffered;
    let mut s = ClientSession::new(cfg);
    s.receive(GREETING);
    assert_eq!(sent(&mut s), "LHLO client.example.org\r\n");
    s.receive(EHLO_CHUNKING);
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    sent(&mut s);
    let refused = s.send_message(envelope(&["<b@example.net>"])).unwrap_err();
    assert_eq!(refused.kind, SendErrorKind::Busy);
}
