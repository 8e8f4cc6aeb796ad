//! The SMTP client session, driven by scripted servers: exact bytes both ways.

mod client_support;

use client_support::*;

#[test]
fn pipelined_transaction_with_one_refused_recipient() {
    let mut s = ready(EHLO_PIPELINING);
    let caps = s.capabilities();
    assert!(caps.pipelining && caps.eight_bit_mime && caps.enhanced_status_codes);
    assert_eq!(caps.size, Some(1_000_000));
    assert_eq!(s.remote_name(), Some("mx.example.net"));

    s.send_message(envelope(&[
        "<a@example.net>",
        "<b@example.net>",
        "<c@example.net>",
    ]))
    .unwrap();
    // One batch, before any reply (RFC 2920).
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.org> SIZE=31\r\n\
         RCPT TO:<a@example.net>\r\n\
         RCPT TO:<b@example.net>\r\n\
         RCPT TO:<c@example.net>\r\n\
         DATA\r\n"
    );
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Mail));
    s.receive(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Rcpt));
    s.receive(b"550 5.1.1 No such user\r\n250 2.1.5 Ok\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataInit));
    assert_eq!(events(&mut s), vec![]);
    s.receive(b"354 End data with <CR><LF>.<CR><LF>\r\n");
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::SendBody(BodyFraming::DotStuffed)]
    );
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataBlock));
    s.send_body(BODY).unwrap();
    assert_eq!(sent(&mut s), "Subject: test\r\n\r\n..leading dot\r\n.\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataTermination));
    s.receive(b"250 2.0.0 Ok: queued as 4F2A\r\n");
    let ev = events(&mut s);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    let delivered = Outcome::Delivered(reply(250, (2, 0, 0), "Ok: queued as 4F2A"));
    assert_eq!(
        done(ev),
        vec![
            remote(0, delivered.clone()),
            remote(1, Outcome::Permanent(reply(550, (5, 1, 1), "No such user"))),
            remote(2, delivered),
        ]
    );

    s.quit();
    assert_eq!(sent(&mut s), "QUIT\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Quit));
    s.receive(b"221 2.0.0 Bye\r\n");
    assert_eq!(events(&mut s), vec![ClientEvent::Closed(CloseReason::Quit)]);
    assert!(s.is_closed());
}

#[test]
fn lockstep_server_gets_one_command_per_reply() {
    let mut s = ready(EHLO_LOCKSTEP);
    s.send_message(envelope(&["<a@example.net>", "<b@example.net>"]))
        .unwrap();
    assert_eq!(sent(&mut s), "MAIL FROM:<sender@example.org> SIZE=31\r\n");
    // Nothing more until MAIL is answered, however long the caller waits.
    assert_eq!(sent(&mut s), "");
    s.receive(b"250 2.1.0 Ok\r\n");
    assert_eq!(sent(&mut s), "RCPT TO:<a@example.net>\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Rcpt));
    // Half a reply sends nothing.
    s.receive(b"250 2.1");
    assert_eq!(sent(&mut s), "");
    s.receive(b".5 Ok\r\n");
    assert_eq!(sent(&mut s), "RCPT TO:<b@example.net>\r\n");
    s.receive(b"250 2.1.5 Ok\r\n");
    assert_eq!(sent(&mut s), "DATA\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataInit));
    s.receive(b"354 Go ahead\r\n");
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::SendBody(BodyFraming::DotStuffed)]
    );
    // The zero-copy path: the caller writes the body itself.
    let wire: Vec<u8> = sluice_smtp::client::dot_stuffed(BODY)
        .flatten()
        .copied()
        .collect();
    assert_eq!(wire, b"Subject: test\r\n\r\n..leading dot\r\n.\r\n");
    s.body_sent().unwrap();
    assert_eq!(s.body_sent(), Err(BodyError::NotExpected));
    assert_eq!(sent(&mut s), "");
    s.receive(b"250 2.0.0 Ok\r\n");
    let results = done(events(&mut s));
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Delivered(_)))
    );
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let mut s = ClientSession::new(config());
    s.receive(GREETING);
    assert_eq!(sent(&mut s), EHLO);
    s.receive(b"502 5.5.2 Command not implemented\r\n");
    assert_eq!(sent(&mut s), "HELO client.example.org\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Hello));
    s.receive(b"250 old.example.net\r\n");
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
    assert_eq!(s.capabilities(), &Capabilities::default());
    assert_eq!(s.remote_name(), Some("old.example.net"));
    // No extensions: no SIZE parameter, one command at a time.
    s.send_message(envelope(&["<a@example.net>", "<b@example.net>"]))
        .unwrap();
    assert_eq!(sent(&mut s), "MAIL FROM:<sender@example.org>\r\n");
}

#[test]
fn helo_refused_too_ends_the_session() {
    let mut s = ClientSession::new(config());
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.receive(GREETING);
    s.receive(b"500 what?\r\n");
    assert_eq!(sent(&mut s), format!("{EHLO}HELO client.example.org\r\n"));
    s.receive(b"550 5.7.1 Go away\r\n");
    assert_eq!(sent(&mut s), "QUIT\r\n");
    let refusal = reply(550, (5, 7, 1), "Go away");
    assert_eq!(
        done(events(&mut s)),
        vec![remote(0, Outcome::Permanent(refusal.clone()))]
    );
    s.receive(b"221 Bye\r\n");
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::Closed(CloseReason::HelloRefused(refusal))]
    );
}

#[test]
fn transient_greeting_fails_the_waiting_message_and_quits() {
    let mut s = ClientSession::new(config());
    // Given before the greeting: waits for it.
    s.send_message(envelope(&["<a@example.net>", "<b@example.net>"]))
        .unwrap();
    assert_eq!(sent(&mut s), "");
    s.receive(b"450 4.3.2 Too busy, try later\r\n");
    let greeting = reply(450, (4, 3, 2), "Too busy, try later");
    let ev = events(&mut s);
    assert_eq!(
        done(ev),
        vec![
            remote(0, Outcome::Transient(greeting.clone())),
            remote(1, Outcome::Transient(greeting.clone())),
        ]
    );
    assert_eq!(sent(&mut s), "QUIT\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Quit));
    s.receive(b"221 2.0.0 Bye\r\n");
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::Closed(CloseReason::GreetingRefused(greeting))]
    );
    assert!(s.is_closed());
    assert_eq!(
        s.send_message(envelope(&["<a@example.net>"]))
            .unwrap_err()
            .kind,
        SendErrorKind::Closed
    );
}

#[test]
fn greeting_421_closes_without_quit_and_554_is_permanent() {
    let mut s = ClientSession::new(config());
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.receive(b"421 4.3.2 Service not available\r\n");
    let ev = events(&mut s);
    let r = reply(421, (4, 3, 2), "Service not available");
    assert_eq!(
        ev,
        vec![
            ClientEvent::MessageDone(vec![remote(0, Outcome::Transient(r.clone()))]),
            ClientEvent::Closed(CloseReason::GreetingRefused(r)),
        ]
    );
    assert_eq!(sent(&mut s), "");

    let mut s = ClientSession::new(config());
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.receive(b"554 5.7.1 No SMTP service here\r\n");
    assert!(matches!(
        &done(events(&mut s))[0].outcome,
        Outcome::Permanent(r) if r.code() == 554
    ));
    assert_eq!(sent(&mut s), "QUIT\r\n");
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
                remote(0, Outcome::Permanent(reply(550, (5, 1, 1), "No such user"))),
                remote(1, Outcome::Transient(closing.clone())),
                remote(2, Outcome::Transient(closing.clone())),
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
fn size_over_the_advertised_limit_is_refused_before_sending() {
    let mut s = ready(b"250-mx.example.net\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
    let mut env = envelope(&["<a@example.net>", "<b@example.net>"]);
    env.body_size = 1001;
    s.send_message(env).unwrap();
    assert_eq!(sent(&mut s), "", "nothing goes to the server");
    let ev = events(&mut s);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    let results = done(ev);
    assert_eq!(results.len(), 2);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.index, i);
        assert_eq!(r.origin, ReplyOrigin::Local);
        let Outcome::Permanent(reply) = &r.outcome else {
            panic!("{r:?}")
        };
        assert_eq!(reply.code(), 552);
        assert_eq!(reply.enhanced(), Some(EnhancedCode::new(5, 3, 4)));
        assert!(reply.text().contains("1000"), "{reply}");
    }
    // Exactly at the limit goes.
    let mut env = envelope(&["<a@example.net>"]);
    env.body_size = 1000;
    s.send_message(env).unwrap();
    assert!(sent(&mut s).starts_with("MAIL FROM:<sender@example.org> SIZE=1000\r\n"));
}

#[test]
fn eight_bit_body_needs_8bitmime() {
    let mut s = ready(EHLO_LOCKSTEP);
    let mut env = envelope(&["<a@example.net>"]);
    env.body_type = BodyType::EightBitMime;
    s.send_message(env.clone()).unwrap();
    assert_eq!(sent(&mut s), "");
    let results = done(events(&mut s));
    let Outcome::Permanent(r) = &results[0].outcome else {
        panic!("{results:?}")
    };
    assert_eq!(r.enhanced(), Some(EnhancedCode::new(5, 6, 3)));
    assert_eq!(results[0].origin, ReplyOrigin::Local);

    // Offered: the body type is declared.
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(env).unwrap();
    assert!(sent(&mut s).starts_with("MAIL FROM:<sender@example.org> SIZE=31 BODY=8BITMIME\r\n"));
}

#[test]
fn smtputf8_message_needs_smtputf8() {
    let mut s = ready(EHLO_PIPELINING);
    let mut env = envelope(&["<a@example.net>"]);
    env.smtputf8 = true;
    s.send_message(env.clone()).unwrap();
    assert_eq!(sent(&mut s), "");
    let results = done(events(&mut s));
    assert!(matches!(
        &results[0].outcome,
        Outcome::Permanent(r) if r.enhanced() == Some(EnhancedCode::new(5, 6, 7))
    ));

    let mut s = ready(b"250-mx.example.net\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n");
    s.send_message(env).unwrap();
    assert!(sent(&mut s).starts_with("MAIL FROM:<sender@example.org> SMTPUTF8\r\n"));
}

#[test]
fn binary_body_goes_by_bdat_or_not_at_all() {
    let mut env = envelope(&["<a@example.net>"]);
    env.body_type = BodyType::BinaryMime;
    let mut s = ready(b"250-mx.example.net\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
    s.send_message(env.clone()).unwrap();
    assert!(matches!(
        &done(events(&mut s))[0].outcome,
        Outcome::Permanent(r) if r.enhanced() == Some(EnhancedCode::new(5, 6, 3))
    ));

    let mut s =
        ready(b"250-mx.example.net\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 BINARYMIME\r\n");
    s.send_message(env).unwrap();
    // No DATA in the batch, and no BDAT before a recipient is accepted.
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.org> BODY=BINARYMIME\r\nRCPT TO:<a@example.net>\r\n"
    );
    s.receive(b"250 Ok\r\n250 Ok\r\n");
    assert_eq!(sent(&mut s), "BDAT 31 LAST\r\n");
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::SendBody(BodyFraming::Raw { size: 31 })]
    );
    s.send_body(BODY).unwrap();
    // As is: no dot-stuffing, no terminator.
    assert_eq!(sent(&mut s).as_bytes(), BODY);
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataTermination));
    s.receive(b"250 2.0.0 Ok\r\n");
    assert!(matches!(
        done(events(&mut s))[0].outcome,
        Outcome::Delivered(_)
    ));
}

#[test]
fn bdat_when_offered_policy_and_size_mismatch() {
    let mut cfg = config();
    cfg.bdat = BdatPolicy::WhenOffered;
    let mut s = ClientSession::new(cfg);
    s.receive(GREETING);
    s.receive(b"250-mx.example.net\r\n250 CHUNKING\r\n");
    sent(&mut s);
    events(&mut s);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    assert_eq!(sent(&mut s), "MAIL FROM:<sender@example.org>\r\n");
    s.receive(b"250 Ok\r\n");
    assert_eq!(sent(&mut s), "RCPT TO:<a@example.net>\r\n");
    s.receive(b"250 Ok\r\n");
    assert_eq!(sent(&mut s), "BDAT 31 LAST\r\n");
    events(&mut s);
    assert_eq!(
        s.send_body(b"short"),
        Err(BodyError::SizeMismatch {
            declared: 31,
            actual: 5
        })
    );
    assert_eq!(sent(&mut s), "", "not a byte of the wrong body");
    let ev = events(&mut s);
    assert!(matches!(
        ev.last(),
        Some(ClientEvent::Closed(CloseReason::CallerError(_)))
    ));
    assert!(matches!(done(ev)[0].outcome, Outcome::Transient(_)));
}

#[test]
fn mail_refused_fails_every_recipient() {
    // Pipelined: the RCPT and DATA replies still come and are read.
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>", "<b@example.net>"]))
        .unwrap();
    sent(&mut s);
    s.receive(b"550 5.7.1 Sender rejected\r\n503 5.5.1 Need MAIL\r\n503 5.5.1 Need MAIL\r\n");
    assert_eq!(events(&mut s), vec![], "DATA's reply is still due");
    s.receive(b"503 5.5.1 Need RCPT\r\n");
    let refusal = Outcome::Permanent(reply(550, (5, 7, 1), "Sender rejected"));
    assert_eq!(
        done(events(&mut s)),
        vec![remote(0, refusal.clone()), remote(1, refusal)]
    );
    assert_eq!(sent(&mut s), "RSET\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Rset));
    s.receive(b"250 2.0.0 Ok\r\n");
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);

    // Lock-step: no RCPT after a refused MAIL.
    let mut s = ready(EHLO_LOCKSTEP);
    s.send_message(envelope(&["<a@example.net>", "<b@example.net>"]))
        .unwrap();
    sent(&mut s);
    s.receive(b"451 4.3.0 Try later\r\n");
    assert_eq!(sent(&mut s), "RSET\r\n");
    let results = done(events(&mut s));
    assert!(
        results
            .iter()
            .all(|r| matches!(&r.outcome, Outcome::Transient(r) if r.code() == 451))
    );
}

#[test]
fn no_recipient_accepted_means_no_data() {
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>", "<b@example.net>"]))
        .unwrap();
    sent(&mut s);
    s.receive(b"250 Ok\r\n550 5.1.1 No\r\n450 4.2.1 Later\r\n554 5.5.1 No valid recipients\r\n");
    let ev = events(&mut s);
    assert!(!ev.iter().any(|e| matches!(e, ClientEvent::SendBody(_))));
    assert_eq!(
        done(ev),
        vec![
            remote(0, Outcome::Permanent(reply(550, (5, 1, 1), "No"))),
            remote(1, Outcome::Transient(reply(450, (4, 2, 1), "Later"))),
        ]
    );
    assert_eq!(sent(&mut s), "RSET\r\n");

    // Lock-step: not even DATA.
    let mut s = ready(EHLO_LOCKSTEP);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    sent(&mut s);
    s.receive(b"250 Ok\r\n");
    sent(&mut s);
    s.receive(b"550 5.1.1 No\r\n");
    assert_eq!(sent(&mut s), "RSET\r\n");
}

#[test]
fn data_accepted_with_nobody_to_deliver_to_gets_a_lone_dot() {
    // RFC 2920 §3.1: the client cannot assume DATA fails when every RCPT did.
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    sent(&mut s);
    s.receive(b"250 Ok\r\n550 5.1.1 No\r\n354 Go ahead\r\n");
    let ev = events(&mut s);
    assert!(!ev.iter().any(|e| matches!(e, ClientEvent::SendBody(_))));
    assert!(matches!(done(ev)[0].outcome, Outcome::Permanent(_)));
    assert_eq!(sent(&mut s), ".\r\n");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::DataTermination));
    s.receive(b"554 5.5.1 No valid recipients\r\n");
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
}

#[test]
fn data_refused_with_452_is_transient_for_the_accepted() {
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&[
        "<a@example.net>",
        "<b@example.net>",
        "<c@example.net>",
    ]))
    .unwrap();
    sent(&mut s);
    s.receive(
        b"250 Ok\r\n250 Ok\r\n550 5.1.1 No\r\n250 Ok\r\n452 4.3.1 Insufficient system storage\r\n",
    );
    let full = Outcome::Transient(reply(452, (4, 3, 1), "Insufficient system storage"));
    assert_eq!(
        done(events(&mut s)),
        vec![
            remote(0, full.clone()),
            remote(1, Outcome::Permanent(reply(550, (5, 1, 1), "No"))),
            remote(2, full),
        ]
    );
    assert_eq!(sent(&mut s), "RSET\r\n");

    // The same refusal after the body: no RSET needed, the transaction is over.
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    sent(&mut s);
    s.receive(b"250 Ok\r\n250 Ok\r\n354 Go\r\n");
    s.send_body(BODY).unwrap();
    sent(&mut s);
    s.receive(b"452 4.3.1 Insufficient system storage\r\n");
    let ev = events(&mut s);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    assert_eq!(
        done(ev),
        vec![remote(
            0,
            Outcome::Transient(reply(452, (4, 3, 1), "Insufficient system storage"))
        )]
    );
    assert_eq!(sent(&mut s), "");
}

#[test]
fn two_messages_on_one_connection() {
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    assert_eq!(
        s.send_message(envelope(&["<b@example.net>"]))
            .unwrap_err()
            .kind,
        SendErrorKind::Busy
    );
    sent(&mut s);
    s.receive(b"250 Ok\r\n250 Ok\r\n354 Go\r\n");
    s.send_body(BODY).unwrap();
    sent(&mut s);
    s.receive(b"250 Ok: queued as 1\r\n");
    let ev = events(&mut s);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));

    s.send_message(envelope(&["<b@example.net>"])).unwrap();
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.org> SIZE=31\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
        "no RSET after a finished transaction"
    );
    s.receive(b"250 Ok\r\n250 Ok\r\n354 Go\r\n");
    s.send_body(BODY).unwrap();
    sent(&mut s);
    s.receive(b"250 Ok: queued as 2\r\n");
    let results = done(events(&mut s));
    assert_eq!(
        results[0].outcome,
        Outcome::Delivered(Reply::new(250, None, "Ok: queued as 2"))
    );
}

#[test]
fn next_message_waits_for_the_reset() {
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    sent(&mut s);
    s.receive(b"250 Ok\r\n550 No\r\n554 No valid recipients\r\n");
    events(&mut s);
    assert_eq!(sent(&mut s), "RSET\r\n");
    // Given while RSET is out: sent only once the server is clean.
    s.send_message(envelope(&["<b@example.net>"])).unwrap();
    assert_eq!(sent(&mut s), "");
    s.receive(b"250 Ok\r\n");
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.org> SIZE=31\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
    );
    // A refused RSET leaves the server in an unknown state: give up on it.
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.receive(b"250 Ok\r\n550 No\r\n554 No valid recipients\r\n");
    s.send_message(envelope(&["<b@example.net>"])).unwrap();
    s.receive(b"500 RSET?\r\n");
    let ev = events(&mut s);
    assert!(matches!(
        ev.last(),
        Some(ClientEvent::Closed(CloseReason::ProtocolError(_)))
    ));
    let dones: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, ClientEvent::MessageDone(_)))
        .collect();
    assert_eq!(dones.len(), 2, "the waiting message gets its result too");
}

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
                remote(0, Outcome::Permanent(missing)),
                remote(
                    1,
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
fn replies_during_the_body_wait_for_it() {
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.receive(b"250 Ok\r\n250 Ok\r\n354 Go\r\n250 early\r\n");
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::SendBody(BodyFraming::DotStuffed)]
    );
    s.body_sent().unwrap();
    assert!(matches!(
        &done(events(&mut s))[0].outcome,
        Outcome::Delivered(r) if r.text() == "early"
    ));

    // But a server that will not stop talking is cut off, not buffered forever.
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.receive(b"250 Ok\r\n250 Ok\r\n354 Go\r\n");
    events(&mut s);
    let noise = b"250 chatter\r\n".repeat(1024);
    for _ in 0..8 {
        s.receive(&noise);
    }
    let ev = events(&mut s);
    assert!(matches!(
        ev.last(),
        Some(ClientEvent::Closed(CloseReason::ProtocolError(_)))
    ));
    assert!(matches!(done(ev)[0].outcome, Outcome::Transient(_)));
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

#[test]
fn dsn_and_auth_parameters_only_to_a_server_that_offers_them() {
    let mut env = envelope(&["<a@example.net>"]);
    env.recipients[0].1 = RcptParams {
        notify: Some(Notify::Never),
        orcpt: None,
    };
    env.ret = Some(Ret::Hdrs);
    env.envid = Some("q1".into());
    env.auth = Some("<>".into());
    let mut s = ready(EHLO_PIPELINING);
    s.send_message(env.clone()).unwrap();
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.org> SIZE=31\r\nRCPT TO:<a@example.net>\r\nDATA\r\n"
    );

    let mut s = ready(b"250-mx.example.net\r\n250-PIPELINING\r\n250-DSN\r\n250 AUTH PLAIN\r\n");
    s.send_message(env).unwrap();
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.org> RET=HDRS ENVID=q1 AUTH=<>\r\n\
         RCPT TO:<a@example.net> NOTIFY=NEVER\r\n\
         DATA\r\n"
    );
}

#[test]
fn ehlo_keywords() {
    let ehlo = Reply::multiline(
        250,
        None,
        [
            "mx.example.net greets you",
            "pipelining",
            "SIZE",
            "Auth LOGIN plain",
            "AUTH=LOGIN XOAUTH2",
            "CHUNKING",
            "BINARYMIME",
            "DSN",
            "SMTPUTF8",
            "STARTTLS",
            "X-EXPS GSSAPI NTLM",
        ],
    );
    let caps = Capabilities::from_ehlo_reply(&ehlo);
    assert!(caps.pipelining && caps.chunking && caps.binary_mime && caps.dsn);
    assert!(caps.smtputf8 && caps.starttls);
    assert!(!caps.eight_bit_mime && !caps.enhanced_status_codes);
    assert_eq!(caps.size, Some(0));
    assert_eq!(caps.size_limit(), None);
    assert_eq!(caps.auth, ["LOGIN", "PLAIN", "XOAUTH2"]);
    assert_eq!(caps.other.len(), 1);
    assert_eq!(caps.other[0].keyword, "X-EXPS");
    assert_eq!(caps.other[0].params, ["GSSAPI", "NTLM"]);
}
