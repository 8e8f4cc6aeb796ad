//! Dialogs of exact bytes against the state machine, with a scripted policy
//! standing in for the front end.

use super::*;

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
fn oversize_messages_are_refused_early_and_late() {
    let mut d = Driver::new(ServerConfig {
        max_message_size: 10,
        ..ServerConfig::default()
    });
    d.send(b"EHLO c\r\n");
    let early = d.send(b"MAIL FROM:<a@b> SIZE=11\r\n");
    assert!(early.starts_with("552 5.3.4 "), "{early}");
    let late =
        d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n0123456789\r\nmore\r\n.\r\nNOOP\r\n");
    assert_eq!(codes(&late), ["250", "250", "354", "552", "250"]);
    assert!(d.messages.is_empty());
    assert!(d.session.transaction().is_none());
}

/// The room made at DATA holds a message a little longer than its declared
/// SIZE (a CR per line more, as Postfix declares it), and one of no
/// declared size: the content is written where it lands, never copied into
/// a larger buffer on the way.
#[test]
fn a_message_is_collected_in_the_buffer_made_for_it_at_data() {
    let mut body = b"Subject: room\r\n\r\n".to_vec();
    while body.len() < 20 * 1024 {
        body.extend_from_slice(
            b"Sixty-odd octets of prose, the length of a line in most mail.\r\n",
        );
    }
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    for declared in [Some(body.len() - lines), Some(4096 - 80), None] {
        let mut d = Driver::default();
        let size = declared.map_or(String::new(), |n| format!(" SIZE={n}"));
        // A twentieth past the declaration, to the end of that line.
        let cut = declared.map_or(4096, |n| body.len().min(n + n / 20));
        let cut = cut
            + body[cut..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(0, |at| at + 1);
        let content = &body[..cut];
        d.send(format!("EHLO c\r\nMAIL FROM:<a@b>{size}\r\nRCPT TO:<c@d>\r\nDATA\r\n").as_bytes());
        let room = d.session.message.capacity();
        assert!(room > 0, "room is made at DATA");
        let mut wire = content.to_vec();
        wire.extend_from_slice(b".\r\n");
        // In pieces, as reads bring it.
        for piece in wire.chunks(1000) {
            d.send(piece);
        }
        let (_, message) = d.messages.last().expect("the message");
        assert!(message.ends_with(&content[content.len() - 20..]));
        assert_eq!(
            message.capacity(),
            room,
            "declared {declared:?}, {} octets",
            message.len()
        );
    }
}

/// A buffer given back after a message collects the next one; a large one
/// is not kept, nor one given back while a message is being collected.
#[test]
fn a_message_buffer_given_back_collects_the_next_message() {
    let mut d = Driver::default();
    let transaction = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n";
    d.send(b"EHLO c\r\n");
    d.send(transaction);
    let (_, first) = d.messages.pop().expect("the first message");
    let (at, room) = (first.as_ptr(), first.capacity());
    d.session.reuse_buffer(first);
    d.send(transaction);
    let (_, second) = d.messages.pop().expect("the second message");
    assert_eq!((second.as_ptr(), second.capacity()), (at, room));
    assert!(
        second.ends_with(b"\r\nhi\r\n"),
        "the bytes are the new message's"
    );
    assert!(second.starts_with(b"Received: test\r\n"));

    // Too large to keep: the next message gets a buffer of its own.
    let large = Vec::with_capacity(1 << 20);
    let large_at = large.as_ptr();
    d.session.reuse_buffer(large);
    d.send(transaction);
    let (_, third) = d.messages.pop().expect("the third message");
    assert_ne!(third.as_ptr(), large_at);
    assert!(third.capacity() < 1 << 20);

    // Given back in the middle of a message: the message keeps its own.
    d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: y\r\n");
    let collecting = d.session.message.as_ptr();
    d.session.reuse_buffer(third);
    assert_eq!(d.session.message.as_ptr(), collecting);
    d.send(b"\r\nhi\r\n.\r\n");
    let (_, fourth) = d.messages.pop().expect("the fourth message");
    assert_eq!(fourth.as_ptr(), collecting);
    assert!(fourth.ends_with(b"Subject: y\r\n\r\nhi\r\n"));
}

#[test]
fn smuggled_end_of_data_is_neither_an_end_nor_accepted() {
    // SEC Consult's variants: none may end the data; the message is refused
    // whole, and the "second message" never becomes a transaction.
    for smuggle in [
        &b"\n.\n"[..],
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n.\r",
    ] {
        let mut d = Driver::default();
        let mut input = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nfirst".to_vec();
        input.extend_from_slice(smuggle);
        input.extend_from_slice(
            b"MAIL FROM:<evil@b>\r\nRCPT TO:<victim@d>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n",
        );
        let out = d.send(&input);
        assert_eq!(
            codes(&out),
            ["250", "250", "250", "354", "550", "221"],
            "variant {smuggle:?}"
        );
        assert!(
            d.messages.is_empty(),
            "variant {smuggle:?} delivered something"
        );
        assert!(!d.events.iter().any(
            |e| matches!(e, Event::Mail { reverse_path: ReversePath::Path(p), .. }
            if p.mailbox.local_part.as_str() == "evil")
        ));
    }
}

#[test]
fn bdat_chunks_are_counted_and_joined() {
    let mut d = Driver::default();
    let out = d.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nHelloBDAT 8 LAST\r\n world\r\nQUIT\r\n");
    assert_eq!(codes(&out), ["250", "250", "250", "250", "250", "221"]);
    assert!(out.contains("250 2.0.0 5 octets received\r\n"));
    assert_eq!(d.messages[0].1, b"Received: test\r\nHello world\r\n");
}

/// A front end that keeps large messages on disk drains what the session
/// collected after each read; the drained parts and the rest it takes at the
/// end must be the message, byte for byte, by DATA and by BDAT alike.
#[test]
fn drained_parts_and_the_rest_make_the_whole_message() {
    fn feed(d: &mut Driver, input: &[u8], drained: &mut Vec<u8>) -> Option<Vec<u8>> {
        d.pending_input.extend_from_slice(input);
        loop {
            let used = d.session.receive(&d.pending_input);
            d.pending_input.drain(..used);
            d.session.drain_collected(|b| drained.extend_from_slice(b));
            match d.session.event() {
                None => {
                    assert_eq!(d.session.collected_len(), 0, "nothing held after a drain");
                    return None;
                }
                Some(Event::Message) => {
                    let rest = d.session.take_message().unwrap();
                    d.session.decide(Decision::Accept).unwrap();
                    return Some(rest);
                }
                Some(Event::StartData) => {
                    d.session.set_trace_header(b"Received: test\r\n").unwrap();
                }
                Some(_) => {}
            }
            d.session.decide(Decision::Accept).unwrap();
        }
    }
    for (start, pieces) in [
        (
            &b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"[..],
            vec![
                &b"Subject: x\r\n\r\nline one\r\n.."[..],
                b"dot\r\nline",
                b" two\r\n.\r\n",
            ],
        ),
        (
            &b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"[..],
            vec![
                &b"BDAT 12\r\nSubject: x\r\n"[..],
                b"BDAT 4\r\n\r\nab",
                b"BDAT 3 LAST\r\nc\r\n",
            ],
        ),
    ] {
        let mut d = Driver::default();
        let mut drained = Vec::new();
        assert_eq!(feed(&mut d, start, &mut drained), None);
        let mut rest = None;
        for piece in pieces {
            assert!(rest.is_none(), "the message ended early");
            rest = feed(&mut d, piece, &mut drained);
        }
        let rest = rest.expect("the message ended");
        drained.extend_from_slice(&rest);
        let want: &[u8] = if start.ends_with(b"DATA\r\n") {
            b"Received: test\r\nSubject: x\r\n\r\nline one\r\n.dot\r\nline two\r\n"
        } else {
            b"Received: test\r\nSubject: x\r\n\r\nabc\r\n"
        };
        assert_eq!(
            String::from_utf8_lossy(&drained),
            String::from_utf8_lossy(want)
        );
        // Outside a transaction's content, nothing is collected or drained.
        assert_eq!(d.session.drain_collected(|_| ()), None);
    }
}

/// RFC 3030 §2 allows `BDAT 0 LAST`; with no octets to follow, it must be
/// answered at once, not when the next bytes happen to arrive.
#[test]
fn an_empty_last_chunk_is_answered_without_more_input() {
    let mut d = Driver::default();
    let out = d.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\n");
    assert_eq!(codes(&out), ["250", "250", "250", "250", "250"]);
    assert_eq!(d.messages[0].1, b"Received: test\r\nabc");
    let out = d.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 0 LAST\r\n");
    assert_eq!(codes(&out), ["250", "250", "250"]);
    assert_eq!(d.messages[1].1, b"Received: test\r\n");
    // Refused (no transaction) just as promptly.
    let out = d.send(b"BDAT 0 LAST\r\n");
    assert_eq!(codes(&out), ["503"]);
}

#[test]
fn bdat_without_a_transaction_still_consumes_its_chunk() {
    let mut d = Driver::default();
    // "MAIL FROM:<x@y>\r\n" inside the chunk must not be executed as a command.
    let out = d.send(b"EHLO c\r\nBDAT 17\r\nMAIL FROM:<x@y>\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["250", "503", "250"]);
    assert!(d.session.transaction().is_none());
}

#[test]
fn bdat_then_data_is_refused() {
    let mut d = Driver::default();
    let out = d.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2\r\nabDATA\r\n");
    assert_eq!(codes(&out), ["250", "250", "250", "250", "503"]);
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

#[test]
fn bdat_content_with_a_bare_lf_is_refused_like_data() {
    let mut d = Driver::default();
    let out = d.send(
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\na\nbBDAT 3 LAST\r\nc\r\nNOOP\r\n",
    );
    assert_eq!(codes(&out), ["250", "250", "250", "250", "550", "250"]);
    assert!(d.messages.is_empty());
}

#[test]
fn a_bdat_chunk_over_the_size_limit_ends_the_session_unread() {
    let mut d = Driver::new(ServerConfig {
        hostname: "mx.example.test".into(),
        max_message_size: 8,
        ..ServerConfig::default()
    });
    // The second chunk would take the message to 9 octets: refused before a
    // byte of it is read, and the connection closes, so "NOOP" after it is
    // never taken for a command (nor its octets for content).
    let out = d.send(
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 4\r\n1234BDAT 5 LAST\r\nNOOP\r\n",
    );
    assert!(
        out.ends_with(
            "250 2.0.0 4 octets received\r\n\
             552 5.3.4 Message size exceeds fixed maximum message size; closing the connection\r\n"
        ),
        "{out}"
    );
    assert!(d.session.is_closed());
    assert!(d.messages.is_empty());
    assert_eq!(d.pending_input, b"NOOP\r\n");
}

#[test]
fn a_bdat_size_that_cannot_be_skipped_ends_the_session() {
    // 2^64 does not parse; 2^63 parses but is far over any limit. Either way
    // the client's idea of where the chunk ends is not ours, so nothing after
    // the command may be read as a command (SMTP smuggling).
    for (command, reply) in [
        (
            "BDAT 18446744073709551616 LAST",
            "501 5.5.4 Syntax error, expected BDAT <chunk size> [LAST]; closing the connection",
        ),
        (
            "BDAT 9223372036854775808 LAST",
            "552 5.3.4 Message size exceeds fixed maximum message size; closing the connection",
        ),
        (
            "BDAT",
            "501 5.5.4 Syntax error, argument missing: BDAT <chunk size> [LAST]; closing the connection",
        ),
        (
            "BDAT 12 LAST NOW",
            "501 5.5.4 Syntax error, expected BDAT <chunk size> [LAST]; closing the connection",
        ),
    ] {
        let mut d = Driver::default();
        let input = format!("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n{command}\r\nRSET\r\n");
        let out = d.send(input.as_bytes());
        assert!(
            out.ends_with(&format!("250 2.1.5 Ok\r\n{reply}\r\n")),
            "{command}: {out}"
        );
        assert!(d.session.is_closed(), "{command}");
        let notices: Vec<Notice> = d.session.take_notices().collect();
        assert!(
            notices.iter().any(|n| matches!(
                n,
                Notice::Refused {
                    verb: Some(Verb::Bdat),
                    ..
                }
            )),
            "{command}: {notices:?}"
        );
    }
    // Without a transaction too: the octets still follow the command.
    let mut d = Driver::default();
    let out = d.send(b"EHLO c\r\nBDAT x\r\nNOOP\r\n");
    assert!(out.ends_with("closing the connection\r\n"), "{out}");
    assert!(d.session.is_closed());
}

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
