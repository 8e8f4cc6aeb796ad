//! The SMTP client session's content phase: DATA and BDAT, and the messages
//! refused locally because the server lacks SIZE room, 8BITMIME, SMTPUTF8
//! or BINARYMIME. Exact bytes both ways.

mod client_support;

use client_support::*;

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
    env.envelope_mut().params.body = Some(BodyType::EightBitMime);
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
    env.envelope_mut().params.smtputf8 = true;
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
    env.envelope_mut().params.body = Some(BodyType::BinaryMime);
    let mut s = ready(b"250-mx.example.net\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
    s.send_message(env.clone()).unwrap();
    assert!(matches!(
        &done(events(&mut s))[0].outcome,
        Outcome::Permanent(r) if r.enhanced() == Some(EnhancedCode::new(5, 6, 3))
    ));

    let mut s =
        ready(b"250-mx.example.net\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 BINARYMIME\r\n");
    s.send_message(env).unwrap();
    // No DATA: BDAT, with the envelope (a small body; client_bdat.rs has
    // the rest of that).
    assert_eq!(
        sent(&mut s),
        "MAIL FROM:<sender@example.org> BODY=BINARYMIME\r\nRCPT TO:<a@example.net>\r\n\
         BDAT 31 LAST\r\n"
    );
    assert_eq!(
        events(&mut s),
        vec![ClientEvent::SendBody(BodyFraming::Raw { size: 31 })]
    );
    s.send_body(BODY).unwrap();
    // As is: no dot-stuffing, no terminator.
    assert_eq!(sent(&mut s).as_bytes(), BODY);
    s.receive(b"250 Ok\r\n250 Ok\r\n");
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
            remote(0, Stage::Data, full.clone()),
            remote(
                1,
                Stage::Rcpt,
                Outcome::Permanent(reply(550, (5, 1, 1), "No"))
            ),
            remote(2, Stage::Data, full),
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
            Stage::EndOfData,
            Outcome::Transient(reply(452, (4, 3, 1), "Insufficient system storage"))
        )]
    );
    assert_eq!(sent(&mut s), "");
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
