//! DATA and BDAT: sizes, buffers, line endings, chunks.

use super::*;

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
