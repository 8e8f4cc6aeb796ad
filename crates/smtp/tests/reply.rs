//! Reply parsing (RFC 5321 §4.2.1, RFC 2034 enhanced codes) and the
//! format → parse round trip.

use proptest::prelude::*;
use sluice_smtp::reply::{EnhancedCode, MAX_REPLY_LINE, MAX_REPLY_LINES, Reply, ReplyError};

fn parse_all(input: &[u8]) -> (Reply, usize) {
    Reply::parse(input)
        .expect("a valid reply")
        .expect("a complete reply")
}

fn lines(r: &Reply) -> Vec<&str> {
    r.lines().iter().map(|l| l.as_ref()).collect()
}

#[test]
fn single_line() {
    let (r, n) = parse_all(b"220 mx.example.org ESMTP ready\r\n");
    assert_eq!(r.code(), 220);
    assert_eq!(r.enhanced(), None);
    assert_eq!(lines(&r), ["mx.example.org ESMTP ready"]);
    assert_eq!(n, 32);
}

#[test]
fn single_line_with_enhanced_code() {
    let (r, _) = parse_all(b"550 5.1.1 <nobody@example.org>: Recipient address rejected\r\n");
    assert_eq!(r.code(), 550);
    assert_eq!(r.enhanced(), Some(EnhancedCode::new(5, 1, 1)));
    assert_eq!(
        lines(&r),
        ["<nobody@example.org>: Recipient address rejected"]
    );
}

#[test]
fn real_ehlo_reply_and_pipelined_rest() {
    let input = b"250-mx.example.org\r\n\
250-PIPELINING\r\n\
250-SIZE 10240000\r\n\
250-ETRN\r\n\
250-STARTTLS\r\n\
250-ENHANCEDSTATUSCODES\r\n\
250-8BITMIME\r\n\
250-DSN\r\n\
250-SMTPUTF8\r\n\
250 CHUNKING\r\n\
250 2.1.0 Ok\r\n";
    let (r, n) = parse_all(input);
    assert_eq!(r.code(), 250);
    assert_eq!(r.enhanced(), None);
    assert_eq!(r.lines().len(), 10);
    assert_eq!(r.lines()[0], "mx.example.org");
    assert_eq!(r.lines()[2], "SIZE 10240000");
    assert_eq!(r.lines()[9], "CHUNKING");
    // The next reply (pipelined MAIL FROM) is left for the next call.
    let (next, m) = parse_all(&input[n..]);
    assert_eq!(next.enhanced(), Some(EnhancedCode::new(2, 1, 0)));
    assert_eq!(lines(&next), ["Ok"]);
    assert_eq!(n + m, input.len());
}

#[test]
fn multi_line_with_enhanced_codes() {
    let input = b"550-5.7.1 The user you are trying to contact is receiving\r\n\
550-5.7.1 mail at a rate that prevents additional messages.\r\n\
550 5.7.1 Please try again later.\r\n";
    let (r, _) = parse_all(input);
    assert_eq!(r.enhanced(), Some(EnhancedCode::new(5, 7, 1)));
    assert_eq!(
        lines(&r),
        [
            "The user you are trying to contact is receiving",
            "mail at a rate that prevents additional messages.",
            "Please try again later.",
        ]
    );
}

#[test]
fn enhanced_code_needs_every_line_and_the_right_class() {
    // Missing on one line: kept as text everywhere.
    let (r, _) = parse_all(b"550-5.7.1 first\r\n550 second\r\n");
    assert_eq!(r.enhanced(), None);
    assert_eq!(lines(&r), ["5.7.1 first", "second"]);
    // Class 4 on a 5yz reply is not an enhanced code.
    let (r, _) = parse_all(b"550 4.7.1 text\r\n");
    assert_eq!(r.enhanced(), None);
    assert_eq!(lines(&r), ["4.7.1 text"]);
    // Not followed by SP: just text.
    let (r, _) = parse_all(b"250 2.0.0x\r\n");
    assert_eq!(r.enhanced(), None);
    // Four-digit subject.
    let (r, _) = parse_all(b"250 2.1000.0 x\r\n");
    assert_eq!(r.enhanced(), None);
    // Alone on the line.
    let (r, _) = parse_all(b"250 2.0.0\r\n");
    assert_eq!(r.enhanced(), Some(EnhancedCode::new(2, 0, 0)));
    assert_eq!(lines(&r), [""]);
}

#[test]
fn a_differing_enhanced_code_stays_in_its_line() {
    let (r, _) = parse_all(b"452-4.5.3 too many recipients\r\n452 4.3.1 out of space\r\n");
    assert_eq!(r.enhanced(), Some(EnhancedCode::new(4, 5, 3)));
    assert_eq!(lines(&r), ["too many recipients", "4.3.1 out of space"]);
}

#[test]
fn lenient_line_forms() {
    // Code alone, bare LF, and an empty continuation line.
    let (r, n) = parse_all(b"250-\n250\n");
    assert_eq!(r.code(), 250);
    assert_eq!(lines(&r), ["", ""]);
    assert_eq!(n, 9);
    // A stray CR counts as a space, as it becomes one in the text.
    let (r, _) = parse_all(b"550 5.1.1\rno\r\n");
    assert_eq!(r.enhanced(), Some(EnhancedCode::new(5, 1, 1)));
    assert_eq!(lines(&r), ["no"]);
    let (r, _) = parse_all(b"550 x\ry\r\r\n");
    assert_eq!(lines(&r), ["x y "]);
    // Non-UTF-8 text is kept, lossily.
    let (r, _) = parse_all(b"554 caf\xe9\r\n");
    assert_eq!(lines(&r), ["caf\u{fffd}"]);
}

#[test]
fn partial_input_needs_more() {
    let full = b"250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 1000\r\n";
    for end in 0..full.len() {
        assert_eq!(Reply::parse(&full[..end]), Ok(None), "cut at {end}");
    }
    assert!(Reply::parse(full).unwrap().is_some());
}

#[test]
fn malformed_replies_are_errors() {
    assert_eq!(
        Reply::parse(b"hello\r\n"),
        Err(ReplyError::BadCode { line: 1 })
    );
    assert_eq!(
        Reply::parse(b"25\r\n"),
        Err(ReplyError::BadCode { line: 1 })
    );
    assert_eq!(
        Reply::parse(b"650 x\r\n"),
        Err(ReplyError::BadCode { line: 1 })
    );
    assert_eq!(
        Reply::parse(b"150 x\r\n"),
        Err(ReplyError::BadCode { line: 1 })
    );
    assert_eq!(
        Reply::parse(b"2x0 x\r\n"),
        Err(ReplyError::BadCode { line: 1 })
    );
    assert_eq!(
        Reply::parse(b"250_x\r\n"),
        Err(ReplyError::BadSeparator { line: 1 })
    );
    assert_eq!(
        Reply::parse(b"2500\r\n"),
        Err(ReplyError::BadSeparator { line: 1 })
    );
    assert_eq!(
        Reply::parse(b"250-a\r\n251 b\r\n"),
        Err(ReplyError::InconsistentCode {
            line: 2,
            expected: 250,
            found: 251
        })
    );
    // Caught before the line is complete.
    assert_eq!(
        Reply::parse(b"250-a\r\nxy"),
        Err(ReplyError::BadCode { line: 2 })
    );
    assert_eq!(Reply::parse(b"X"), Err(ReplyError::BadCode { line: 1 }));
}

#[test]
fn line_length_limit() {
    let fits = [b"250 ", &[b'a'; MAX_REPLY_LINE - 6][..], b"\r\n"].concat();
    assert_eq!(fits.len(), MAX_REPLY_LINE);
    assert!(Reply::parse(&fits).unwrap().is_some());
    let long = [b"250 ", &[b'a'; MAX_REPLY_LINE - 5][..], b"\r\n"].concat();
    assert_eq!(
        Reply::parse(&long),
        Err(ReplyError::LineTooLong { line: 1 })
    );
    // Without its line ending yet: already known to be too long.
    assert_eq!(
        Reply::parse(&long[..MAX_REPLY_LINE]),
        Err(ReplyError::LineTooLong { line: 1 })
    );
    assert_eq!(Reply::parse(&long[..MAX_REPLY_LINE - 1]), Ok(None));
}

#[test]
fn line_count_limit() {
    let mut at_limit = b"250-x\r\n".repeat(MAX_REPLY_LINES - 1);
    at_limit.extend_from_slice(b"250 x\r\n");
    let (r, _) = parse_all(&at_limit);
    assert_eq!(r.lines().len(), MAX_REPLY_LINES);
    // One continuation more: the reply can no longer end in time.
    let over = b"250-x\r\n".repeat(MAX_REPLY_LINES);
    assert_eq!(Reply::parse(&over), Err(ReplyError::TooManyLines));
}

/// A line break in the text given to a reply cannot start a reply of its
/// own: every CR and LF becomes a space.
#[test]
fn text_with_line_breaks_stays_one_line() {
    for text in ["a\r\n250 forged", "a\n250 forged", "a\r250 forged", "\r\n"] {
        let reply = Reply::new(550, Some(EnhancedCode::new(5, 7, 1)), text.to_owned());
        let wire = String::from_utf8(reply.to_bytes()).unwrap();
        // The only line break is the reply's own, at its end.
        assert_eq!(wire.find(['\r', '\n']), Some(wire.len() - 2), "{wire:?}");
        assert_eq!(lines(&reply), vec![text.replace(['\r', '\n'], " ")]);
        let multi = Reply::multiline(250, None, ["ok", text]);
        assert_eq!(multi.to_bytes().iter().filter(|&&b| b == b'\n').count(), 2);
    }
    let clean = Reply::new(250, None, "Ok");
    assert_eq!(clean.to_bytes(), b"250 Ok\r\n");
}

fn arb_reply() -> impl Strategy<Value = Reply> {
    (200u16..600, any::<bool>(), 0u16..1000, 0u16..1000)
        .prop_flat_map(|(code, with_enhanced, subject, detail)| {
            let class = (code / 100) as u8;
            let enhanced =
                (with_enhanced && class != 3).then(|| EnhancedCode::new(class, subject, detail));
            (
                Just(code),
                Just(enhanced),
                prop::collection::vec("[ -~\té]{0,60}", 1..6),
            )
        })
        .prop_map(|(code, enhanced, lines)| Reply::multiline(code, enhanced, lines))
}

proptest! {
    #[test]
    fn format_then_parse_is_identity(reply in arb_reply(), tail in "[ -~]{0,10}") {
        // Text that starts like an enhanced code of the reply's own class
        // is indistinguishable on the wire; such replies are not round-trippable.
        let class = (reply.code() / 100) as u8;
        let confusable = reply.enhanced().is_none()
            && reply.lines().iter().all(|l| {
                let b = l.as_bytes();
                b.first() == Some(&(b'0' + class)) && b.get(1) == Some(&b'.')
            });
        prop_assume!(!confusable);
        let mut wire = reply.to_bytes();
        let len = wire.len();
        wire.extend_from_slice(tail.as_bytes());
        let (parsed, consumed) = Reply::parse(&wire).unwrap().unwrap();
        prop_assert_eq!(consumed, len);
        prop_assert_eq!(parsed, reply);
    }

    /// The text form (log lines): the code, the enhanced code and the
    /// lines, separated by single spaces, the numbers in plain decimal.
    #[test]
    fn display_is_the_codes_and_lines_on_one_line(reply in arb_reply()) {
        let mut expected = reply.code().to_string();
        if let Some(e) = reply.enhanced() {
            expected += &format!(" {}.{}.{}", e.class, e.subject, e.detail);
        }
        for line in reply.lines() {
            expected += " ";
            expected += line;
        }
        prop_assert_eq!(reply.to_string(), expected);
    }
}
