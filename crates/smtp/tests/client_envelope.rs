//! The SMTP client session's envelope: MAIL and RCPT with and without
//! PIPELINING, per-recipient results, RSET, and the next message on the
//! same connection. Exact bytes both ways.

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
            remote(0, Stage::EndOfData, delivered.clone()),
            remote(
                1,
                Stage::Rcpt,
                Outcome::Permanent(reply(550, (5, 1, 1), "No such user"))
            ),
            remote(2, Stage::EndOfData, delivered),
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
        vec![
            remote(0, Stage::Mail, refusal.clone()),
            remote(1, Stage::Mail, refusal)
        ]
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
fn dsn_and_auth_parameters_only_to_a_server_that_offers_them() {
    let mut env = envelope(&["<a@example.net>"]);
    env.envelope_mut().recipients[0].params = RcptParams {
        notify: Some(Notify::Never),
        orcpt: None,
    };
    env.envelope_mut().params.ret = Some(Ret::Hdrs);
    env.envelope_mut().params.envid = Some("q1".into());
    env.envelope_mut().params.auth = Some("<>".into());
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
