//! The SMTP client session from the greeting to Ready: EHLO, the fallback
//! to HELO, refused greetings, and what an EHLO reply advertises.

mod client_support;

use client_support::*;

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
        vec![remote(0, Stage::Hello, Outcome::Permanent(refusal.clone()))]
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
            remote(0, Stage::Greeting, Outcome::Transient(greeting.clone())),
            remote(1, Stage::Greeting, Outcome::Transient(greeting.clone())),
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
            ClientEvent::MessageDone(vec![remote(
                0,
                Stage::Greeting,
                Outcome::Transient(r.clone())
            )]),
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
