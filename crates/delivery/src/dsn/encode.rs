//! The MIME and header encodings a notification needs: header folding,
//! quoted-printable, RFC 6533 address escapes, and the RFC 5322 date.
//!
//! How text that is not ASCII is carried:
//!
//! - In `message/delivery-status`, which RFC 3464 keeps to US-ASCII, an
//!   address with other characters is written as type `utf-8` with RFC 6533
//!   `\x{HEX}` escapes (`utf-8-addr-xtext`); other text (diagnostics, host
//!   names) has those characters replaced by `?`. The human-readable part
//!   keeps them.
//! - The human-readable part and the original's header section are
//!   quoted-printable when they hold anything but 7-bit lines.

use std::borrow::Cow;

/// Longest header line we write; RFC 5322 §2.1.1 says SHOULD 78, MUST 998.
const FOLD_AT: usize = 78;
/// A single word that cannot be folded is cut here, to stay under 998.
const MAX_WORD: usize = 900;
/// RFC 5322 §2.1.1 and RFC 5321 §4.5.3.1.6: 998 octets before CRLF.
const MAX_LINE: usize = 998;
/// RFC 2045 §6.7 (5): encoded lines are at most 76 characters; one is
/// kept for the `=` of a soft line break.
const QP_LINE: usize = 75;

/// Text for an ASCII-only field: controls become spaces (no line can be
/// injected), other non-ASCII characters `?`.
pub(super) fn ascii_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            c if c.is_ascii_control() => ' ',
            c if c.is_ascii() => c,
            c if c.is_control() => ' ',
            _ => '?',
        })
        .collect()
}

/// Writes `Name: value` folded at spaces to lines of at most 78 octets
/// where the words allow. `value` must be ASCII without controls (see
/// [`ascii_text`]); runs of spaces collapse to one, as folding whitespace
/// means no more than that.
pub(super) fn push_folded(out: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(
        value.bytes().all(|b| (b' '..=b'~').contains(&b)),
        "{value:?}"
    );
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    let mut line = name.len() + 1;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        let word = &word.as_bytes()[..word.len().min(MAX_WORD)];
        if line + 1 + word.len() > FOLD_AT && line > name.len() + 1 {
            out.extend_from_slice(b"\r\n");
            line = 0;
        }
        out.push(b' ');
        out.extend_from_slice(word);
        line += 1 + word.len();
    }
    out.extend_from_slice(b"\r\n");
}

/// `Name: type; address` (RFC 3464 §2.3.1, §2.3.2); an address that is
/// not plain ASCII goes as type `utf-8` with RFC 6533 escapes.
pub(super) fn push_address_field(out: &mut Vec<u8>, name: &str, addr_type: &str, address: &str) {
    let plain = |s: &str| s.bytes().all(|b| (b' '..=b'~').contains(&b));
    if plain(address) && plain(addr_type) {
        push_folded(out, name, &format!("{addr_type}; {address}"));
        return;
    }
    let mut escaped = String::with_capacity(address.len() + 16);
    for c in address.chars() {
        // QCHAR of RFC 6533 §3: printable ASCII but "+", "=" and "\".
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            escaped.push(c);
        } else {
            escaped.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    push_folded(out, name, &format!("utf-8; {escaped}"));
}

/// Whether `content` may go under `Content-Transfer-Encoding: 7bit`
/// (RFC 2045 §2.7): octets 1–127, CR and LF only as CRLF, lines of at
/// most 998 octets.
pub(super) fn is_7bit_clean(content: &[u8]) -> bool {
    let mut line = 0usize;
    for (i, &b) in content.iter().enumerate() {
        match b {
            0 | 0x80..=0xff => return false,
            b'\r' => {
                if content.get(i + 1) != Some(&b'\n') {
                    return false;
                }
            }
            b'\n' => {
                if i == 0 || content[i - 1] != b'\r' {
                    return false;
                }
                line = 0;
            }
            _ => {
                line += 1;
                if line > MAX_LINE {
                    return false;
                }
            }
        }
    }
    true
}

/// Quoted-printable (RFC 2045 §6.7): CRLF stays a line break; every other
/// octet outside printable ASCII, `=`, and white space before a line end
/// are `=XX`; lines are soft-broken to stay within 76 characters.
pub(super) fn quoted_printable(input: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(input.len() + input.len() / 4 + 16);
    let mut rest = input;
    while !rest.is_empty() {
        let (line, had_crlf) = match memchr::memmem::find(rest, b"\r\n") {
            Some(at) => (&rest[..at], true),
            None => (rest, false),
        };
        rest = &rest[line.len() + if had_crlf { 2 } else { 0 }..];
        let mut column = 0;
        for (i, &b) in line.iter().enumerate() {
            let at_end = i + 1 == line.len();
            let literal = match b {
                b' ' | b'\t' => !at_end,
                b'=' => false,
                33..=126 => true,
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            if column + width > QP_LINE {
                out.extend_from_slice(b"=\r\n");
                column = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            column += width;
        }
        if had_crlf {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// The body of a text part: as is when 7-bit clean, else quoted-printable.
/// Returns the Content-Transfer-Encoding header line to add, if any.
fn text_body(content: &[u8]) -> (&'static str, Cow<'_, [u8]>) {
    if is_7bit_clean(content) {
        ("", Cow::Borrowed(content))
    } else {
        (
            "Content-Transfer-Encoding: quoted-printable\r\n",
            Cow::Owned(quoted_printable(content)),
        )
    }
}

/// The charset parameter for text that may not be ASCII.
fn charset(content: &[u8]) -> &'static str {
    if content.is_ascii() {
        "us-ascii"
    } else if std::str::from_utf8(content).is_ok() {
        "utf-8"
    } else {
        // Raw 8-bit headers in no declared charset: say nothing rather
        // than something wrong.
        ""
    }
}

/// The human-readable first part, with its MIME headers.
pub(super) fn text_part(text: &str) -> Vec<u8> {
    let (cte, body) = text_body(text.as_bytes());
    let mut part = format!(
        "Content-Description: Notification\r\n\
         Content-Type: text/plain; charset={}\r\n{cte}\r\n",
        charset(text.as_bytes())
    )
    .into_bytes();
    part.extend_from_slice(&body);
    part
}

/// The original's header section as a `text/rfc822-headers` part (RFC 6522
/// §4), with its MIME headers: every header line up to the empty line that
/// ends them (or the whole message when there is none).
pub(super) fn header_section(message: &[u8]) -> Vec<u8> {
    let end = if message.starts_with(b"\r\n") {
        0
    } else {
        memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |at| at + 2)
    };
    let headers = &message[..end];
    let (cte, body) = text_body(headers);
    let mut part = b"Content-Type: text/rfc822-headers".to_vec();
    match charset(headers) {
        "" | "us-ascii" => {}
        cs => part.extend_from_slice(format!("; charset={cs}").as_bytes()),
    }
    part.extend_from_slice(b"\r\n");
    part.extend_from_slice(cte.as_bytes());
    part.extend_from_slice(b"\r\n");
    part.extend_from_slice(&body);
    part
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_bit_check_catches_each_violation() {
        assert!(is_7bit_clean(b"Subject: hi\r\n\r\nbody\r\n"));
        assert!(!is_7bit_clean(b"caf\xc3\xa9\r\n"));
        assert!(!is_7bit_clean(b"a\0b\r\n"));
        assert!(!is_7bit_clean(b"bare\nlf\r\n"));
        assert!(!is_7bit_clean(b"bare\rcr\r\n"));
        assert!(!is_7bit_clean(b"\n"));
        let mut long = vec![b'x'; MAX_LINE];
        assert!(is_7bit_clean(&long));
        long.push(b'x');
        assert!(!is_7bit_clean(&long));
    }

    #[test]
    fn quoted_printable_keeps_lines_short_and_7bit() {
        let mut input = b"caf\xc3\xa9 = ok \r\ntrailing space \r\n".to_vec();
        input.extend(std::iter::repeat_n(b'\xff', 200));
        input.extend_from_slice(b"\r\n");
        input.extend(std::iter::repeat_n(b'y', 2000));
        let out = quoted_printable(&input);
        assert!(is_7bit_clean(&out));
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= 77, "{}", String::from_utf8_lossy(line));
        }
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("caf=C3=A9 =3D ok=20\r\ntrailing space=20\r\n=FF=FF"),
            "{text}"
        );
    }

    #[test]
    fn folding_keeps_words_and_line_limits() {
        let mut out = Vec::new();
        let words: Vec<String> = (0..40).map(|i| format!("word{i}")).collect();
        let long = "z".repeat(2000);
        push_folded(
            &mut out,
            "Diagnostic-Code",
            &format!("smtp; {} {long}", words.join(" ")),
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n"));
        let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
        assert!(lines.len() > 3, "{text}");
        for (i, line) in lines.iter().enumerate() {
            assert!(line.len() <= MAX_LINE, "{line}");
            // Every continuation line starts with white space.
            assert_eq!(i > 0, line.starts_with(' '), "{line}");
        }
        let unfolded = text.replace("\r\n ", " ");
        assert!(unfolded.contains(&words.join(" ")), "{unfolded}");
    }

    #[test]
    fn non_ascii_addresses_use_rfc6533_escapes() {
        let mut out = Vec::new();
        push_address_field(
            &mut out,
            "Final-Recipient",
            "rfc822",
            "jos\u{e9}+x@b\u{fc}cher.test",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Final-Recipient: utf-8; jos\\x{E9}\\x{2B}x@b\\x{FC}cher.test\r\n"
        );
    }
}
