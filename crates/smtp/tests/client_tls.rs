//! The client's STARTTLS (RFC 3207): when it asks, what it does when the
//! server cannot, and the injection defence. The handshake itself is the
//! caller's; here the caller just says it is done.

mod client_support;

use client_support::*;
use sluice_smtp::client::TlsUse;

const EHLO_TLS: &[u8] =
    b"250-mx.example.net Hello\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n";
const EHLO_INSIDE: &[u8] =
    b"250-mx.example.net Hello\r\n250-PIPELINING\r\n250-REQUIRETLS\r\n250 ENHANCEDSTATUSCODES\r\n";

fn session(tls: TlsUse) -> ClientSession {
    let mut s = ClientSession::new(ClientConfig { tls, ..config() });
    s.receive(GREETING);
    assert_eq!(sent(&mut s), EHLO);
    s
}

#[test]
fn starttls_when_offered_then_ehlo_again_inside() {
    for tls in [TlsUse::IfOffered, TlsUse::Required] {
        let mut s = session(tls);
        s.send_message(envelope(&["<a@example.net>"])).unwrap();
        s.receive(EHLO_TLS);
        assert_eq!(sent(&mut s), "STARTTLS\r\n");
        assert_eq!(s.timeout_class(), Some(TimeoutClass::StartTls));
        s.receive(b"220 2.0.0 Ready to start TLS\r\n");
        assert_eq!(events(&mut s), vec![ClientEvent::StartTls]);
        assert_eq!(sent(&mut s), "", "nothing in clear after the 220");
        s.tls_established();
        assert!(s.is_tls());
        assert_eq!(sent(&mut s), EHLO, "RFC 3207 §4.2: EHLO again");
        assert!(
            !s.capabilities().pipelining,
            "what was offered in clear is forgotten"
        );
        s.receive(EHLO_INSIDE);
        // No second STARTTLS; the queued message starts.
        assert!(sent(&mut s).starts_with("MAIL FROM:<sender@example.org>"));
        assert!(s.capabilities().requiretls);
    }
}

#[test]
fn off_never_asks() {
    let mut s = session(TlsUse::Off);
    s.receive(EHLO_TLS);
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
    assert_eq!(sent(&mut s), "");
}

#[test]
fn if_offered_goes_on_in_clear_when_not_offered_or_refused() {
    let mut s = session(TlsUse::IfOffered);
    s.receive(EHLO_PIPELINING);
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
    assert!(!s.is_tls());

    let mut s = session(TlsUse::IfOffered);
    s.receive(EHLO_TLS);
    assert_eq!(sent(&mut s), "STARTTLS\r\n");
    s.receive(b"454 4.7.0 TLS not available due to temporary reason\r\n");
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
    assert!(!s.is_tls());
}

#[test]
fn required_fails_every_recipient_temporarily_when_tls_is_not_to_be_had() {
    let mut s = session(TlsUse::Required);
    s.send_message(envelope(&["<a@example.net>", "<b@example.net>"]))
        .unwrap();
    s.receive(EHLO_PIPELINING);
    let events = events(&mut s);
    let results = done(events.clone());
    assert_eq!(results.len(), 2);
    for r in &results {
        match &r.outcome {
            Outcome::Transient(reply) => assert_eq!(
                reply.to_string().trim_end(),
                "451 4.7.4 TLS is required, but the server does not offer STARTTLS"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.origin, ReplyOrigin::Local);
    }
    assert_eq!(sent(&mut s), "QUIT\r\n");
    s.receive(b"221 2.0.0 Bye\r\n");
    assert!(matches!(
        std::iter::from_fn(|| s.poll_event()).last(),
        Some(ClientEvent::Closed(CloseReason::TlsUnavailable(None)))
    ));

    let mut s = session(TlsUse::Required);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.receive(EHLO_TLS);
    sent(&mut s);
    s.receive(b"502 5.5.1 Not now\r\n");
    let results = done(events_of(&mut s));
    assert!(matches!(&results[0].outcome, Outcome::Transient(r) if r.code() == 451));
}

fn events_of(s: &mut ClientSession) -> Vec<ClientEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// CVE-2011-0411's client side: a reply that came in clear after the 220
/// must not be taken for one that came inside TLS.
#[test]
fn bytes_after_the_220_end_the_session() {
    let mut s = session(TlsUse::IfOffered);
    s.send_message(envelope(&["<a@example.net>"])).unwrap();
    s.receive(EHLO_TLS);
    sent(&mut s);
    s.receive(b"220 2.0.0 Go ahead\r\n250-mx.example.net forged\r\n250 AUTH PLAIN\r\n");
    let events = events_of(&mut s);
    assert!(!events.contains(&ClientEvent::StartTls), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            ClientEvent::Closed(CloseReason::ProtocolError(why)) if why.contains("STARTTLS injection")
        )),
        "{events:?}"
    );
    assert!(matches!(&done(events)[0].outcome, Outcome::Transient(_)));
    assert!(s.is_closed());
}
