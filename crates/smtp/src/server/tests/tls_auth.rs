//! STARTTLS, implicit TLS, REQUIRETLS and AUTH.

use super::*;

fn tls_config(tls_required: bool) -> ServerConfig {
    ServerConfig {
        hostname: "mx.example.test".into(),
        extensions: Extensions {
            starttls: true,
            requiretls: true,
            ..Extensions::default()
        },
        tls_required,
        ..ServerConfig::default()
    }
}

#[test]
fn starttls_is_refused_where_it_is_not_offered_and_before_ehlo() {
    let mut d = Driver::default();
    let out = d.send(b"EHLO c\r\nSTARTTLS\r\n");
    assert!(!out.contains("STARTTLS"), "{out}");
    assert!(
        out.ends_with("502 5.5.1 Command not implemented\r\n"),
        "{out}"
    );
    let mut d = Driver::new(tls_config(false));
    assert_eq!(d.send(b"STARTTLS\r\n"), "503 5.5.1 Send EHLO first\r\n");
    assert!(!d.session.wants_tls());
}

/// RFC 3207 §4.2 and §5: the 220, then nothing more is read in clear (what
/// followed STARTTLS in the same packet is the front end's to throw away);
/// after the handshake the client starts again from EHLO, which no longer
/// offers STARTTLS.
#[test]
fn starttls_stops_reading_and_tls_starts_the_session_over() {
    let mut d = Driver::new(tls_config(false));
    let out = d.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\n");
    assert!(out.contains("250 STARTTLS\r\n"), "{out}");
    assert!(!out.contains("REQUIRETLS"), "{out}");
    let out = d.send(b"STARTTLS\r\nRSET\r\n");
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert!(d.session.wants_tls());
    assert_eq!(d.session.waiting(), Waiting::TlsHandshake);
    assert_eq!(
        d.pending_input, b"RSET\r\n",
        "the injected command is not read"
    );
    d.pending_input.clear();
    d.session.tls_started();
    assert!(d.session.is_tls() && !d.session.wants_tls());
    assert!(
        d.session.transaction().is_none(),
        "the transaction is forgotten"
    );
    let out = d.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(out, "503 5.5.1 Send HELO or EHLO first\r\n");
    let out = d.send(b"EHLO c\r\n");
    assert!(!out.contains("STARTTLS\r\n"), "{out}");
    assert!(out.ends_with("250 REQUIRETLS\r\n"), "{out}");
    let out = d.send(b"STARTTLS\r\n");
    assert_eq!(out, "503 5.5.1 TLS is already active\r\n");
}

#[test]
fn submission_wants_tls_before_mail() {
    let mut d = Driver::new(tls_config(true));
    let out = d.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\n");
    assert!(
        out.ends_with("530 5.7.0 Must issue a STARTTLS command first\r\n"),
        "{out}"
    );
    d.send(b"STARTTLS\r\n");
    d.session.tls_started();
    let out = d.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\n");
    assert!(out.ends_with("250 2.1.0 Ok\r\n"), "{out}");
}

#[test]
fn requiretls_is_accepted_only_inside_tls() {
    let mut d = Driver::new(tls_config(false));
    let out = d.send(b"EHLO c\r\nMAIL FROM:<a@b> REQUIRETLS\r\n");
    assert!(
        out.ends_with("555 5.5.4 Parameter REQUIRETLS is not supported here\r\n"),
        "{out}"
    );
    d.send(b"STARTTLS\r\n");
    d.session.tls_started();
    let out = d.send(b"EHLO c\r\nMAIL FROM:<a@b> REQUIRETLS\r\n");
    assert!(out.ends_with("250 2.1.0 Ok\r\n"), "{out}");
    assert!(matches!(
        d.events.last(),
        Some(Event::Mail { params, .. }) if params.requiretls
    ));
}

/// Implicit TLS (RFC 8314): the handshake comes before the greeting, and
/// the session is inside TLS from its first command.
#[test]
fn implicit_tls_starts_inside_tls() {
    let mut session = ServerSession::new(tls_config(true));
    session.tls_started();
    session.greet(None);
    let mut d = Driver {
        session,
        pending_input: Vec::new(),
        messages: Vec::new(),
        events: Vec::new(),
    };
    d.session.output().clear();
    let out = d.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\n");
    assert!(!out.contains("STARTTLS"), "{out}");
    assert!(out.ends_with("250 2.1.0 Ok\r\n"), "{out}");
}

fn auth_config(tls_required: bool) -> ServerConfig {
    ServerConfig {
        extensions: Extensions {
            auth: vec!["PLAIN".into(), "LOGIN".into()],
            ..tls_config(tls_required).extensions
        },
        auth_required: true,
        ..tls_config(tls_required)
    }
}

/// A session inside TLS, past EHLO.
fn authenticating(tls_required: bool) -> Driver {
    let mut d = Driver::new(auth_config(tls_required));
    d.send(b"EHLO c\r\nSTARTTLS\r\n");
    d.pending_input.clear();
    d.session.tls_started();
    let ehlo = d.send(b"EHLO c\r\n");
    assert!(ehlo.ends_with("250 AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    d
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn auth_is_offered_and_taken_only_inside_tls() {
    let mut d = Driver::new(auth_config(false));
    let out = d.send(b"EHLO c\r\n");
    assert!(!out.contains("AUTH"), "{out}");
    let out = d.send(format!("AUTH PLAIN {}\r\n", b64("\0alice\0pw")).as_bytes());
    assert_eq!(
        out,
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    let mut d = Driver::new(auth_config(true));
    d.send(b"EHLO c\r\n");
    let out = d.send(b"AUTH LOGIN\r\n");
    assert_eq!(
        out,
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
}

#[test]
fn plain_and_login_raise_the_credentials_and_235_logs_in() {
    let mut d = authenticating(true);
    let out = d.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(out, "530 5.7.0 Authentication required\r\n");
    let out = d.send(format!("AUTH PLAIN {}\r\n", b64("\0alice\0s3cret")).as_bytes());
    assert_eq!(out, "235 2.7.0 Authentication successful\r\n");
    match d.events.last() {
        Some(Event::Auth {
            mechanism,
            login,
            password,
        }) => {
            assert_eq!((*mechanism, login.as_str()), (Mechanism::Plain, "alice"));
            assert_eq!(password.expose(), "s3cret");
            assert_eq!(format!("{password:?}"), "Password(…)", "never in a log");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.session.login(), Some("alice"));
    assert_eq!(
        d.send(b"AUTH LOGIN\r\n"),
        "503 5.5.1 Already authenticated\r\n"
    );
    assert!(d.send(b"MAIL FROM:<a@b> AUTH=<>\r\n").starts_with("250 "));

    // LOGIN, step by step; and PLAIN without an initial response.
    let mut d = authenticating(false);
    assert_eq!(d.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        d.send(format!("{}\r\n", b64("bob")).as_bytes()),
        "334 UGFzc3dvcmQ6\r\n"
    );
    let out = d.send_with(format!("{}\r\n", b64("pw")).as_bytes(), |e| match e {
        Event::Auth { .. } => Decision::Reject(Reply::new(
            535,
            Some(EnhancedCode::new(5, 7, 8)),
            "Authentication credentials invalid",
        )),
        _ => Decision::Accept,
    });
    assert_eq!(out, "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(d.session.login(), None);
    assert_eq!(d.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        d.send(format!("{}\r\n", b64("\0bob\0pw")).as_bytes()),
        "235 2.7.0 Authentication successful\r\n"
    );
}

#[test]
fn broken_and_canceled_exchanges_are_refused() {
    let mut d = authenticating(false);
    assert_eq!(d.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(d.send(b"*\r\n"), "501 5.0.0 Authentication canceled\r\n");
    assert_eq!(
        d.send(b"AUTH PLAIN !!!\r\n"),
        "501 5.5.4 Syntax error, expected AUTH <mechanism> [initial response]\r\n"
    );
    assert_eq!(d.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        d.send(b"bm90IGJhc2U2NA=\r\n"),
        "501 5.5.2 Invalid base64 in the authentication response\r\n"
    );
    assert_eq!(
        d.send(format!("AUTH PLAIN {}\r\n", b64("carol\0alice\0pw")).as_bytes()),
        "535 5.7.8 Authentication credentials invalid: logging in as someone else is not allowed\r\n"
    );
    assert_eq!(
        d.send(b"AUTH CRAM-MD5\r\n"),
        "504 5.5.4 Unrecognized authentication type\r\n"
    );
    assert!(d.events.iter().all(|e| !matches!(e, Event::Auth { .. })));
}

/// RFC 4954 §4: AUTH lines may be 12,288 octets; other commands keep the
/// command line limit.
#[test]
fn auth_lines_may_be_long_and_other_commands_may_not() {
    let mut d = authenticating(false);
    let long_password = "p".repeat(3000);
    let out = d.send(
        format!(
            "AUTH PLAIN {}\r\n",
            b64(&format!("\0alice\0{long_password}"))
        )
        .as_bytes(),
    );
    assert_eq!(out, "235 2.7.0 Authentication successful\r\n");
    let long_mail = format!("MAIL FROM:<a@b> ENVID={}\r\n", "x".repeat(600));
    assert_eq!(d.send(long_mail.as_bytes()), "500 5.5.2 Line too long\r\n");
}
