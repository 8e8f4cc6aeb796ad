//! xtext (RFC 3461 §4): how ENVID, ORCPT and AUTH= carry arbitrary text in
//! an ESMTP parameter value. Printable ASCII other than `+` and `=` stands for
//! itself; any other octet is `+` and two upper-case hex digits.

use std::fmt;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        // RFC 3461 says upper case; lower case is taken too, since it is not
        // ambiguous and some clients send it.
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn is_xchar(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'+' && b != b'='
}

/// Decodes xtext. `None` when it is malformed or does not decode to UTF-8.
///
/// Raw UTF-8 is let through as itself: RFC 6533 allows it in ORCPT under
/// SMTPUTF8, and the caller checks what each parameter may hold.
pub(crate) fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if !b.contains(&b'+') {
        return b
            .iter()
            .all(|&c| is_xchar(c) || c >= 0x80)
            .then(|| s.to_owned());
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'+' {
            let hi = hex_value(*b.get(i + 1)?)?;
            let lo = hex_value(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else if is_xchar(c) || c >= 0x80 {
            out.push(c);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// Writes `s` as xtext. Non-ASCII is hex-encoded too, so the result is
/// plain RFC 3461 xtext that any server takes.
pub(crate) fn write(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let b = s.as_bytes();
    let mut plain_from = 0;
    for (i, &c) in b.iter().enumerate() {
        if is_xchar(c) {
            continue;
        }
        if plain_from < i {
            // A run of xchars is ASCII, so always UTF-8.
            f.write_str(std::str::from_utf8(&b[plain_from..i]).unwrap_or_default())?;
        }
        let hex = [b'+', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]];
        f.write_str(std::str::from_utf8(&hex).unwrap_or_default())?;
        plain_from = i + 1;
    }
    if plain_from < b.len() {
        f.write_str(std::str::from_utf8(&b[plain_from..]).unwrap_or_default())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Encoded<'a>(&'a str);

    impl fmt::Display for Encoded<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write(f, self.0)
        }
    }

    #[test]
    fn rfc3461_examples() {
        // RFC 3461 §4.2: ORCPT=rfc822;Bob@Example.COM and the "+" example of §4.
        assert_eq!(
            decode("Bob@Example.COM").as_deref(),
            Some("Bob@Example.COM")
        );
        assert_eq!(decode("a+2Bb@c").as_deref(), Some("a+b@c"));
        assert_eq!(decode("+3D").as_deref(), Some("="));
        assert_eq!(decode("x+2b").as_deref(), Some("x+"));
        assert_eq!(decode("caf+C3+A9").as_deref(), Some("café"));
        assert_eq!(Encoded("a+b=c d").to_string(), "a+2Bb+3Dc+20d");
        assert_eq!(Encoded("café").to_string(), "caf+C3+A9");
        assert_eq!(Encoded("").to_string(), "");
    }

    #[test]
    fn rejects_malformed_xtext() {
        for bad in ["a=b", "a+", "a+2", "a+G0", "a b", "a\u{1}b", "+FF"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
