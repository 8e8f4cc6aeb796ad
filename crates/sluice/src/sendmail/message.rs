//! The message a local program hands `sendmail`: read from standard input,
//! its recipients found in the header (`-t`), `Bcc:` taken out, a `From:`
//! made when the caller named the sender's full name (`-F`).

use std::io::{self, BufRead};

/// Reads the message, with every line ended by CRLF (scripts write LF).
/// Unless `ignore_dots`, a line holding a single `.` ends it, as the
/// original sendmail did.
pub fn read(input: impl BufRead, ignore_dots: bool) -> io::Result<Vec<u8>> {
    let mut message = Vec::new();
    for line in input.split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !ignore_dots && line == b"." {
            break;
        }
        message.extend_from_slice(&line);
        message.extend_from_slice(b"\r\n");
    }
    Ok(message)
}

/// The header section's length, through the empty line that ends it; 0
/// when the message does not start with a header field (all body).
fn header_len(message: &[u8]) -> usize {
    let starts_with_field = message
        .iter()
        .position(|&b| b == b':' || b == b'\r')
        .is_some_and(|i| {
            i > 0 && message[i] == b':' && message[..i].iter().all(|b| b.is_ascii_graphic())
        });
    if !starts_with_field {
        return 0;
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => i + 4,
        None => message.len(),
    }
}

/// One header field: its name, and the whole field (folded lines and the
/// final CRLF) as a range of the message.
fn fields(header: &[u8]) -> Vec<(&[u8], std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < header.len() {
        let end = header[i..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header.len(), |p| i + p + 2);
        let folded = matches!(header.get(i), Some(b' ' | b'\t'));
        if !folded && i > start {
            out.push(start..i);
            start = i;
        }
        i = end;
    }
    if start < header.len() {
        out.push(start..header.len());
    }
    out.into_iter()
        .filter_map(|range| {
            let field = &header[range.clone()];
            let colon = field.iter().position(|&b| b == b':')?;
            Some((field[..colon].trim_ascii(), range))
        })
        .collect()
}

/// What the command submits.
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    pub message: Vec<u8>,
    /// The addresses of `To:`, `Cc:` and `Bcc:` (for `-t`), as written.
    pub header_recipients: Vec<String>,
}

/// Takes the recipients from the header, removes `Bcc:` (its recipients
/// must not see each other), and adds `From: full_name <sender>` when
/// there is none and a full name was given (without one, the server adds
/// `From: <sender>`).
pub fn prepare(message: Vec<u8>, full_name: Option<&str>, sender: Option<&str>) -> Prepared {
    let len = header_len(&message);
    let header_recipients = if len == 0 {
        Vec::new()
    } else {
        recipients_in(&message[..len])
    };
    let fields = fields(&message[..len]);
    let has_from = fields
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(b"From"));
    let mut out = Vec::with_capacity(message.len() + 64);
    if let (false, Some(name), Some(sender)) = (has_from, full_name, sender) {
        out.extend_from_slice(format!("From: {} <{sender}>\r\n", display_name(name)).as_bytes());
    }
    if len == 0 {
        // All body: an empty header section first, so that the fields the
        // server adds on top cannot swallow the first line of text.
        out.extend_from_slice(b"\r\n");
    }
    let mut copied = 0;
    for (name, range) in &fields {
        if name.eq_ignore_ascii_case(b"Bcc") {
            out.extend_from_slice(&message[copied..range.start]);
            copied = range.end;
        }
    }
    out.extend_from_slice(&message[copied..]);
    Prepared {
        message: out,
        header_recipients,
    }
}

fn recipients_in(header: &[u8]) -> Vec<String> {
    // mail-parser knows RFC 5322's address grammar (groups, comments,
    // quoted names, encoded words) so that this file does not have to.
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(header) else {
        return Vec::new();
    };
    parsed
        .all_to()
        .chain(parsed.all_cc())
        .chain(parsed.all_bcc())
        .flat_map(|address| address.iter())
        .filter_map(|addr| {
            // `To: root` is no RFC 5322 address, but scripts write it and
            // mean the local user; the parser reads it as a display name.
            addr.address()
                .or_else(|| addr.name().filter(|n| !n.contains(char::is_whitespace)))
                .map(str::to_string)
        })
        .collect()
}

/// A display name as a phrase: quoted unless it is plain words.
fn display_name(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        name.to_string()
    } else {
        let escaped: String = name
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_in_crlf_and_a_lone_dot_ends_the_message_unless_told() {
        let input = b"Subject: x\n\nline\r\n.\nafter\n";
        assert_eq!(
            read(&input[..], false).unwrap(),
            b"Subject: x\r\n\r\nline\r\n"
        );
        assert_eq!(
            read(&input[..], true).unwrap(),
            b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n"
        );
        assert_eq!(read(&b"no newline"[..], true).unwrap(), b"no newline\r\n");
    }

    #[test]
    fn recipients_come_from_to_cc_and_bcc_and_bcc_goes() {
        let message = b"From: me@host.test\r\nTo: Alice <alice@example.test>, bob@example.test\r\n\
            Cc: \"Carol, C.\" <carol@example.test>, root\r\nBcc: secret@example.test,\r\n  other@example.test\r\n\
            Subject: Bcc: not a field\r\n\r\nBcc: body text stays\r\n"
            .to_vec();
        let prepared = prepare(message, None, None);
        assert_eq!(
            prepared.header_recipients,
            [
                "alice@example.test",
                "bob@example.test",
                "carol@example.test",
                "root",
                "secret@example.test",
                "other@example.test"
            ]
        );
        let text = String::from_utf8(prepared.message).unwrap();
        assert!(!text.contains("secret@"), "{text}");
        assert!(!text.contains("other@"), "the folded line went too: {text}");
        assert!(text.contains("Subject: Bcc: not a field\r\n"));
        assert!(text.ends_with("\r\n\r\nBcc: body text stays\r\n"));
    }

    #[test]
    fn a_from_is_made_only_when_missing_and_a_name_is_given() {
        let bare = b"Subject: backup\r\n\r\nok\r\n".to_vec();
        let named = prepare(bare.clone(), Some("Cron Daemon"), Some("root@h.test"));
        assert!(
            named
                .message
                .starts_with(b"From: Cron Daemon <root@h.test>\r\nSubject: backup\r\n")
        );
        let odd = prepare(bare.clone(), Some("Smith, J."), Some("j@h.test"));
        assert!(
            odd.message
                .starts_with(b"From: \"Smith, J.\" <j@h.test>\r\n")
        );
        assert_eq!(prepare(bare.clone(), None, Some("x@h")).message, bare);
        let has = b"From: a@b\r\n\r\n".to_vec();
        assert_eq!(prepare(has.clone(), Some("N"), Some("x@h")).message, has);
    }

    #[test]
    fn a_message_without_a_header_is_all_body() {
        let body = b"just text: with a colon later\r\n".to_vec();
        // "just text" has a space before the colon: not a field name.
        let prepared = prepare(body.clone(), None, None);
        assert!(prepared.header_recipients.is_empty());
        assert_eq!(prepared.message, [&b"\r\n"[..], &body].concat());
        let named = prepare(body.clone(), Some("N"), Some("x@h"));
        assert_eq!(
            named.message,
            [&b"From: N <x@h>\r\n\r\n"[..], &body].concat()
        );
    }
}
