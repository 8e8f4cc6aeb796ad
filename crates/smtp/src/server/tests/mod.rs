//! Dialogs of exact bytes against the state machine, with a scripted policy
//! standing in for the front end.

use super::*;

mod content;
mod tls_auth;

/// Drives a session the way the front end does: feed everything, answer
/// every event with `policy`, keep the unconsumed rest for the next round.
struct Driver {
    session: ServerSession,
    pending_input: Vec<u8>,
    messages: Vec<(Envelope, Vec<u8>)>,
    events: Vec<Event>,
}

impl Driver {
    fn new(config: ServerConfig) -> Self {
        let mut session = ServerSession::new(config);
        session.greet(None);
        session.output().clear();
        Driver {
            session,
            pending_input: Vec::new(),
            messages: Vec::new(),
            events: Vec::new(),
        }
    }

    fn default() -> Self {
        Driver::new(ServerConfig {
            hostname: "mx.example.test".into(),
            ..ServerConfig::default()
        })
    }

    /// Sends `input` (possibly many pipelined commands), answering events with
    /// `policy`, and returns the replies produced.
    fn send_with(&mut self, input: &[u8], mut policy: impl FnMut(&Event) -> Decision) -> String {
        self.pending_input.extend_from_slice(input);
        loop {
            let used = self.session.receive(&self.pending_input);
            self.pending_input.drain(..used);
            let Some(event) = self.session.event().cloned() else {
                break;
            };
            if event == Event::StartData {
                self.session
                    .set_trace_header(b"Received: test\r\n")
                    .expect("DATA is pending");
            }
            let decision = policy(&event);
            if event == Event::Message && !matches!(decision, Decision::Reject(_)) {
                let envelope = self.session.transaction().cloned().expect("an envelope");
                let message = self.session.take_message().expect("message pending");
                self.messages.push((envelope, message));
            }
            self.events.push(event);
            self.session.decide(decision).expect("an event is pending");
        }
        String::from_utf8(std::mem::take(self.session.output())).expect("replies are ASCII")
    }

    fn send(&mut self, input: &[u8]) -> String {
        self.send_with(input, |_| Decision::Accept)
    }
}

fn codes(replies: &str) -> Vec<&str> {
    replies
        .split("\r\n")
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .map(|l| &l[..3])
        .collect()
}

#[test]
fn greeting_and_ehlo_advertise_the_configured_extensions() {
    let mut session = ServerSession::new(ServerConfig {
        hostname: "mx.example.test".into(),
        max_message_size: 1000,
        ..ServerConfig::default()
    });
    session.greet(None);
    assert_eq!(session.output(), b"220 mx.example.test ESMTP Sluice\r\n");
    session.output().clear();
    let mut d = Driver {
        session,
        pending_input: Vec::new(),
        messages: Vec::new(),
        events: Vec::new(),
    };
    let out = d.send(b"EHLO client.example\r\n");
    assert_eq!(
        out,
        "250-mx.example.test Hello client.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
    );
}

#[test]
fn a_pipelined_transaction_in_one_write_is_answered_in_order() {
    let mut d = Driver::default();
    let out = d.send(
        b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@mx.example.test>\r\n\
          RCPT TO:<c@mx.example.test>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        codes(&out),
        ["250", "250", "250", "250", "354", "250", "221"]
    );
    assert!(d.session.is_closed());
    let (tx, body) = &d.messages[0];
    assert_eq!(tx.recipients.len(), 2);
    assert_eq!(
        body,
        b"Received: test\r\nSubject: hi\r\n\r\n.dot\r\nbody\r\n"
    );
}

#[test]
fn input_split_at_every_byte_gives_the_same_dialog() {
    let script: &[u8] = b"HELO c\r\nMAIL FROM:<a@c>\r\nRCPT TO:<b@d>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    let mut whole = Driver::default();
    let expected = whole.send(script);
    for split in 1..script.len() {
        let mut d = Driver::default();
        let mut out = d.send(&script[..split]);
        out += &d.send(&script[split..]);
        assert_eq!(out, expected, "split at {split}");
        assert_eq!(d.messages, whole.messages);
    }
}

#[test]
fn no_command_is_consumed_while_a_decision_is_pending() {
    let mut session = ServerSession::new(ServerConfig::default());
    session.greet(None);
    let input = b"EHLO c\r\nMAIL FROM:<a@c>\r\n";
    let used = session.receive(input);
    assert_eq!(
        used,
        b"EHLO c\r\n".len(),
        "must stop after the line that raised the event"
    );
    assert!(matches!(
        session.event(),
        Some(Event::Hello {
            greeting: Greeting::Ehlo,
            ..
        })
    ));
    assert_eq!(
        session.receive(&input[used..]),
        0,
        "pending: nothing more is read"
    );
    session.decide(Decision::Accept).unwrap();
    assert_eq!(session.receive(&input[used..]), input.len() - used);
    assert!(matches!(session.event(), Some(Event::Mail { .. })));
}

#[test]
fn the_reverse_path_of_a_pending_mail_can_be_corrected_and_nothing_else() {
    let mut session = ServerSession::new(ServerConfig::default());
    session.greet(None);
    let own = ReversePath::Path(crate::Path::parse(b"<me@host.test>").unwrap());
    assert!(
        session.set_reverse_path(own.clone()).is_err(),
        "no MAIL pending"
    );
    let input = b"EHLO c\r\nMAIL FROM:<ceo@example.test>\r\n";
    let used = session.receive(input);
    session.decide(Decision::Accept).unwrap();
    session.receive(&input[used..]);
    session.set_reverse_path(own.clone()).unwrap();
    session.decide(Decision::Accept).unwrap();
    assert_eq!(session.transaction().map(|t| &t.reverse_path), Some(&own));
}

#[test]
fn commands_out_of_order_get_503() {
    let mut d = Driver::default();
    assert_eq!(
        d.send(b"MAIL FROM:<a@b>\r\n"),
        "503 5.5.1 Send HELO or EHLO first\r\n"
    );
    d.send(b"EHLO c\r\n");
    assert_eq!(
        d.send(b"RCPT TO:<a@b>\r\n"),
        "503 5.5.1 Need MAIL before RCPT\r\n"
    );
    assert_eq!(
        d.send(b"DATA\r\n"),
        "503 5.5.1 Need MAIL and RCPT before DATA\r\n"
    );
    d.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(
        d.send(b"MAIL FROM:<a@b>\r\n"),
        "503 5.5.1 Nested MAIL command; send RSET first\r\n"
    );
}

#[test]
fn data_with_every_recipient_refused_gets_554() {
    let mut d = Driver::default();
    let out = d.send_with(
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n",
        |e| match e {
            Event::Rcpt { .. } => Decision::Reject(Reply::new(
                550,
                Some(EnhancedCode::new(5, 1, 1)),
                "No such user",
            )),
            _ => Decision::Accept,
        },
    );
    assert_eq!(codes(&out), ["250", "250", "550", "554"]);
}

#[test]
fn rset_and_ehlo_reset_the_transaction() {
    let mut d = Driver::default();
    d.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
    assert!(d.session.transaction().is_some());
    assert_eq!(d.send(b"RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert!(d.session.transaction().is_none());
    assert_eq!(
        d.send(b"RCPT TO:<c@d>\r\n"),
        "503 5.5.1 Need MAIL before RCPT\r\n"
    );
    d.send(b"MAIL FROM:<a@b>\r\n");
    d.send(b"EHLO again\r\n");
    assert!(
        d.session.transaction().is_none(),
        "EHLO resets like RSET (RFC 5321 §4.1.4)"
    );
    assert!(
        d.session
            .take_notices()
            .any(|n| n == Notice::TransactionReset)
    );
}

#[test]
fn too_many_recipients_get_452_and_the_accepted_ones_stay() {
    let mut d = Driver::new(ServerConfig {
        max_recipients: 2,
        ..ServerConfig::default()
    });
    let out =
        d.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@d>\r\nRCPT TO:<2@d>\r\nRCPT TO:<3@d>\r\n");
    assert_eq!(codes(&out), ["250", "250", "250", "250", "452"]);
    assert!(out.ends_with("452 4.5.3 Too many recipients\r\n"));
    assert_eq!(d.session.transaction().map(|t| t.recipients.len()), Some(2));
}

#[test]
fn unadvertised_parameters_are_refused() {
    let mut d = Driver::new(ServerConfig {
        extensions: Extensions {
            smtputf8: false,
            ..Extensions::default()
        },
        ..ServerConfig::default()
    });
    d.send(b"EHLO c\r\n");
    assert!(
        d.send(b"MAIL FROM:<a@b> SMTPUTF8\r\n")
            .starts_with("555 5.5.4 ")
    );
    assert!(
        d.send(b"MAIL FROM:<a@b> RET=HDRS\r\n")
            .starts_with("555 5.5.4 "),
        "DSN is off by default"
    );
}

#[test]
fn utf8_addresses_need_smtputf8() {
    let mut d = Driver::default();
    d.send(b"EHLO c\r\n");
    let refused = d.send("MAIL FROM:<jos\u{e9}@b.example>\r\n".as_bytes());
    assert!(refused.starts_with("553 5.6.7 "), "{refused}");
    let ok = d.send(
        "MAIL FROM:<jos\u{e9}@b.example> SMTPUTF8\r\nRCPT TO:<\u{7528}\u{6237}@d.example>\r\n"
            .as_bytes(),
    );
    assert_eq!(codes(&ok), ["250", "250"]);
}

#[test]
fn too_many_errors_close_with_421() {
    let mut d = Driver::new(ServerConfig {
        max_errors: 3,
        ..ServerConfig::default()
    });
    let out = d.send(b"junk\r\n\x00\x01\x02\r\nFOO BAR\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["500", "500", "500", "421"]);
    assert!(out.ends_with("421 4.7.0 localhost Too many errors, closing connection\r\n"));
    assert!(d.session.is_closed());
}

#[test]
fn an_overlong_line_gets_500_and_the_session_resynchronises() {
    let mut d = Driver::default();
    let mut input = b"NOOP ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 100_000));
    input.extend_from_slice(b"\r\nNOOP\r\n");
    let out = d.send(&input);
    assert_eq!(out, "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
}

#[test]
fn a_refused_connection_only_says_goodbye() {
    let mut session = ServerSession::new(ServerConfig::default());
    session.greet(Some(Reply::new(
        554,
        Some(EnhancedCode::new(5, 7, 1)),
        "Go away",
    )));
    assert_eq!(session.output(), b"554 5.7.1 Go away\r\n");
    assert!(session.is_closed());
    assert_eq!(session.receive(b"EHLO c\r\n"), 0);
}

#[test]
fn a_message_refused_by_policy_ends_the_transaction() {
    let mut d = Driver::default();
    let out = d.send_with(
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\nRCPT TO:<c@d>\r\n",
        |e| match e {
            Event::Message => Decision::Reject(Reply::new(
                452,
                Some(EnhancedCode::new(4, 3, 1)),
                "Insufficient system storage",
            )),
            _ => Decision::Accept,
        },
    );
    assert_eq!(codes(&out), ["250", "250", "250", "354", "452", "503"]);
}

#[test]
fn disconnect_decisions_close_after_the_reply() {
    let mut d = Driver::default();
    let out = d.send_with(b"EHLO c\r\nMAIL FROM:<a@b>\r\n", |e| match e {
        Event::Mail { .. } => {
            Decision::Disconnect(Reply::new(421, Some(EnhancedCode::new(4, 7, 0)), "Bye"))
        }
        _ => Decision::Accept,
    });
    assert!(out.ends_with("421 4.7.0 Bye\r\n"));
    assert!(d.session.is_closed());
}

#[test]
fn a_421_refusal_closes_and_reads_no_further() {
    let mut d = Driver::default();
    let out = d.send_with(
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\nMAIL FROM:<e@f>\r\n",
        |e| match e {
            Event::Rcpt { .. } => Decision::Reject(Reply::new(
                421,
                Some(EnhancedCode::new(4, 3, 2)),
                "Shutting down",
            )),
            _ => Decision::Accept,
        },
    );
    assert_eq!(codes(&out), ["250", "250", "421"], "{out}");
    assert!(d.session.is_closed());
}

#[test]
fn helo_clients_get_a_one_line_reply_and_can_send_mail() {
    let mut d = Driver::default();
    let out =
        d.send(b"HELO old.example\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\n");
    assert_eq!(
        out.lines().next(),
        Some("250 mx.example.test Hello old.example")
    );
    assert_eq!(codes(&out), ["250", "250", "250", "354", "250"]);
    assert_eq!(
        d.session.greeting_name().map(|(g, _)| g),
        Some(Greeting::Helo)
    );
}
