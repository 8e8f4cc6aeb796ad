//! Finding `Authentication-Results:` fields that claim to be ours.
//!
//! RFC 8601 §5: a border MTA removes (or renames) any such field that
//! carries its own authserv-id before adding its own, or a sender could
//! write `Authentication-Results: mx.example.com; dmarc=pass` and be
//! believed by every filter and mail client downstream.

use std::ops::Range;

/// The byte ranges of the header fields in `message` (CRLF line ends)
/// named `Authentication-Results` whose authserv-id is `authserv_id`
/// (compared without case), each with its folded lines and final CRLF.
/// Only the header section is looked at.
pub fn forged_results(message: &[u8], authserv_id: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut start = 0;
    while start < message.len() {
        let end = field_end(message, start);
        let field = &message[start..end];
        if field == b"\r\n" || field.is_empty() {
            // The empty line: the body begins.
            break;
        }
        if let Some(value) = value_of(field, b"Authentication-Results")
            && authserv_id_of(value).eq_ignore_ascii_case(authserv_id)
        {
            found.push(start..end);
        }
        start = end;
    }
    found
}

/// Where the field starting at `start` ends: after the CRLF of its last
/// line, folded lines (starting with SP or HTAB) included.
fn field_end(message: &[u8], start: usize) -> usize {
    let mut at = start;
    loop {
        let line_end = message[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(message.len(), |p| at + p + 2);
        at = line_end;
        if at >= message.len() || !matches!(message[at], b' ' | b'\t') || line_end == start + 2 {
            return at;
        }
    }
}

/// The value of `field` if its name is `name` (without case).
fn value_of<'a>(field: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let colon = field.iter().position(|&b| b == b':')?;
    field[..colon]
        .trim_ascii()
        .eq_ignore_ascii_case(name)
        .then(|| &field[colon + 1..])
}

/// The authserv-id: the value's first token, before `;` and an optional
/// version, with comments and folding skipped.
fn authserv_id_of(value: &[u8]) -> String {
    let mut id = String::new();
    let mut depth = 0u32;
    for &b in value {
        match b {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            b';' => break,
            b' ' | b'\t' | b'\r' | b'\n' if !id.is_empty() => break,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => id.push(b as char),
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fields_with_our_id_are_found_folded_lines_and_all() {
        let message = b"Received: from x\r\n\
            Authentication-Results: MX.example.test;\r\n\tdmarc=pass header.from=bank.test\r\n\
            Authentication-Results: other.test; spf=pass\r\n\
            authentication-results: (a comment) mx.example.test 1; none\r\n\
            Subject: Authentication-Results: mx.example.test; x\r\n\
            \r\n\
            Authentication-Results: mx.example.test; in the body\r\n";
        let found = forged_results(message, "mx.example.test");
        let texts: Vec<&str> = found
            .iter()
            .map(|r| std::str::from_utf8(&message[r.clone()]).unwrap())
            .collect();
        assert_eq!(
            texts,
            [
                "Authentication-Results: MX.example.test;\r\n\tdmarc=pass header.from=bank.test\r\n",
                "authentication-results: (a comment) mx.example.test 1; none\r\n",
            ]
        );
    }

    #[test]
    fn a_message_without_a_header_or_a_final_crlf_is_fine() {
        assert!(forged_results(b"\r\nbody only\r\n", "mx.test").is_empty());
        let tail = b"Authentication-Results: mx.test; none";
        let found = forged_results(tail, "mx.test");
        assert_eq!((found.len(), found[0].clone()), (1, 0..tail.len()));
        assert!(forged_results(b"", "mx.test").is_empty());
    }
}
