//! The path grammar of RFC 5321 §4.1.2 and §4.1.3, with the RFC 6531
//! extensions (UTF-8 in atoms, quoted strings and domain labels).
//!
//! A hand-written scanner over text already checked to be UTF-8: it walks the
//! bytes once, allocates only the strings it hands back (one per local part,
//! one per domain), and reports the first thing that is wrong as an
//! [`AddressError`] a person can act on.

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::address::{AddressError, AddressLiteral, Domain, LocalPart, Mailbox, Path};

/// RFC 5321 §4.5.3.1.1.
pub(crate) const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2.
pub(crate) const MAX_DOMAIN: usize = 255;
/// RFC 1035 §2.3.4. For a U-label this counts UTF-8 octets, a cheap stand-in
/// for the length of its A-label (which is what DNS limits).
pub(crate) const MAX_LABEL: usize = 63;
/// RFC 5321 §4.5.3.1.3, brackets and source route included.
pub(crate) const MAX_PATH: usize = 256;

/// What can stand between the angle brackets of MAIL FROM or RCPT TO.
#[derive(Debug)]
pub(crate) enum AnyPath {
    /// `<>`
    Null,
    /// `<postmaster>`, without a domain, in any case.
    Postmaster,
    Path(Path),
}

/// RFC 5322 `atext` (the ASCII part; RFC 6531 adds UTF-8, see [`is_utf8_atext`]).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// RFC 6531 lets any non-ASCII character into atoms and labels; control
/// characters and Unicode white space are still refused, because nothing
/// legitimate needs them and they make addresses that look alike.
fn is_utf8_atext(c: char) -> bool {
    !c.is_control() && !c.is_whitespace()
}

/// Inside a quoted string white space is fine, control characters are not.
fn is_utf8_qtext(c: char) -> bool {
    !c.is_control()
}

/// Length of the `Dot-string` at the start of `s`: every atom and the dots
/// between them, stopping before a dot that no atom follows.
fn scan_dot_string(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    let mut end = 0;
    loop {
        let atom_start = i;
        while let Some(&c) = b.get(i) {
            if c < 0x80 {
                if !is_atext(c) {
                    break;
                }
                i += 1;
            } else {
                match s.get(i..).and_then(|rest| rest.chars().next()) {
                    Some(ch) if is_utf8_atext(ch) => i += ch.len_utf8(),
                    _ => break,
                }
            }
        }
        if i == atom_start {
            return end;
        }
        end = i;
        if b.get(i) != Some(&b'.') {
            return end;
        }
        i += 1;
    }
}

pub(crate) fn is_dot_string(s: &str) -> bool {
    !s.is_empty() && scan_dot_string(s) == s.len()
}

/// The canonical form of a local part given without quoting: as is when it
/// is a dot-string, else quoted with only `"` and `\` escaped.
pub(crate) fn canonical_local_part(unquoted: &str) -> String {
    if is_dot_string(unquoted) {
        return unquoted.to_owned();
    }
    let mut out = String::with_capacity(unquoted.len() + 2);
    out.push('"');
    for c in unquoted.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Whether `s` can be the content of a quoted local part once unquoted.
pub(crate) fn is_quotable(s: &str) -> bool {
    s.chars().all(|c| {
        if c.is_ascii() {
            (' '..='~').contains(&c)
        } else {
            is_utf8_qtext(c)
        }
    })
}

/// `Ldh-str`, as in a General-address-literal's tag.
fn is_ldh_str(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The inside of `[...]`, already known to be `dcontent` and `:` only.
fn parse_literal(inner: &str) -> Option<AddressLiteral> {
    let b = inner.as_bytes();
    if b.len() >= 5 && b[..5].eq_ignore_ascii_case(b"IPv6:") {
        // std's parser takes the IPv4-embedded forms (`::ffff:192.0.2.1`) and
        // refuses zone ids, which have no place in mail.
        return inner[5..]
            .parse::<Ipv6Addr>()
            .ok()
            .map(AddressLiteral::Ipv6);
    }
    match inner.split_once(':') {
        Some((tag, content)) if is_ldh_str(tag) && !content.is_empty() => {
            Some(AddressLiteral::General {
                tag: tag.to_owned(),
                content: content.to_owned(),
            })
        }
        Some(_) => None,
        None => inner.parse::<Ipv4Addr>().ok().map(AddressLiteral::Ipv4),
    }
}

/// Counts the octets a value would format to, without allocating.
struct Counter(usize);

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn domain_len(d: &Domain) -> usize {
    match d {
        Domain::Name(name) => name.len(),
        Domain::Literal(lit) => {
            let mut n = Counter(0);
            let _ = write!(n, "{lit}");
            n.0
        }
    }
}

/// The length of the canonical wire form, `<@a,@b:local@domain>`. The limit
/// is checked on this form rather than on what was received so that a path
/// that parses always formats to one that parses.
pub(crate) fn path_len(p: &Path) -> usize {
    let route: usize = p.source_route.iter().map(|d| 2 + domain_len(d)).sum();
    2 + route + p.mailbox.local_part.as_str().len() + 1 + domain_len(&p.mailbox.domain)
}

pub(crate) struct Scanner<'a> {
    s: &'a str,
    pos: usize,
    /// Inside `<...>` running out of input means the `>` is missing.
    bracketed: bool,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Scanner {
            s,
            pos: 0,
            bracketed: false,
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// The error to report at the current position: a control character or a
    /// missing `>` says more than the rule that happened to be running.
    fn fail(&self, kind: AddressError) -> AddressError {
        match self.s.get(self.pos..).and_then(|rest| rest.chars().next()) {
            None if self.bracketed => AddressError::Unterminated,
            Some(c) if c.is_control() => AddressError::ControlCharacter,
            _ => kind,
        }
    }

    /// `Reverse-path` / `Forward-path` / `"<postmaster>"` at the current position.
    pub(crate) fn any_path(&mut self) -> Result<AnyPath, AddressError> {
        if !self.eat(b'<') {
            return Err(self.fail(AddressError::NotBracketed));
        }
        self.bracketed = true;
        if self.eat(b'>') {
            return Ok(AnyPath::Null);
        }
        let mut source_route = Vec::new();
        if self.peek() == Some(b'@') {
            loop {
                self.pos += 1;
                source_route.push(self.domain(AddressError::InvalidSourceRoute)?);
                if self.eat(b':') {
                    break;
                }
                if !self.eat(b',') {
                    return Err(self.fail(AddressError::InvalidSourceRoute));
                }
                // `<@host2,user1@host1>`: a comma where RFC 5321 puts the
                // colon, as RFC 821-era clients wrote it. The route is ignored
                // for routing anyway, so reading it leniently is harmless;
                // refusing it would bounce mail from those clients.
                if self.peek() != Some(b'@') {
                    break;
                }
            }
        }
        let local_part = self.local_part()?;
        if self.peek() == Some(b'>')
            && source_route.is_empty()
            && local_part.as_str().eq_ignore_ascii_case("postmaster")
        {
            self.pos += 1;
            return Ok(AnyPath::Postmaster);
        }
        match self.peek() {
            Some(b'@') => self.pos += 1,
            Some(b'>') => return Err(AddressError::MissingDomain),
            _ => return Err(self.fail(AddressError::InvalidLocalPart)),
        }
        let domain = self.domain(AddressError::InvalidDomain)?;
        if !self.eat(b'>') {
            // `<a@b SIZE=1`: the domain is fine, the bracket is what is missing.
            let no_bracket_follows = !self.s.as_bytes()[self.pos..].contains(&b'>');
            return Err(match self.fail(AddressError::InvalidDomain) {
                AddressError::InvalidDomain if no_bracket_follows => AddressError::Unterminated,
                other => other,
            });
        }
        let path = Path {
            source_route,
            mailbox: Mailbox { local_part, domain },
        };
        if path_len(&path) > MAX_PATH {
            return Err(AddressError::PathTooLong);
        }
        Ok(AnyPath::Path(path))
    }

    /// `Mailbox` without brackets, to the end of the input.
    pub(crate) fn mailbox(&mut self) -> Result<Mailbox, AddressError> {
        let local_part = self.local_part()?;
        if !self.eat(b'@') {
            return Err(if self.at_end() {
                AddressError::MissingDomain
            } else {
                self.fail(AddressError::InvalidLocalPart)
            });
        }
        let domain = self.domain(AddressError::InvalidDomain)?;
        if !self.at_end() {
            return Err(self.fail(AddressError::InvalidDomain));
        }
        Ok(Mailbox { local_part, domain })
    }

    /// `Local-part = Dot-string / Quoted-string`, in canonical form.
    pub(crate) fn local_part(&mut self) -> Result<LocalPart, AddressError> {
        let canonical = if self.peek() == Some(b'"') {
            self.quoted_string()?
        } else {
            let len = scan_dot_string(&self.s[self.pos..]);
            if len == 0 {
                return Err(self.fail(AddressError::InvalidLocalPart));
            }
            let atom = &self.s[self.pos..self.pos + len];
            self.pos += len;
            atom.to_owned()
        };
        if canonical.len() > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        Ok(LocalPart(canonical))
    }

    /// `Quoted-string`, returned in canonical form: unquoted when its content
    /// is a dot-string (`"john"` is `john`), else with only the escapes needed.
    fn quoted_string(&mut self) -> Result<String, AddressError> {
        let open = self.pos;
        self.pos += 1;
        let mut escapes = false;
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => match self.s.as_bytes().get(self.pos + 1) {
                    Some(b' '..=b'~') => {
                        self.pos += 2;
                        escapes = true;
                    }
                    _ => {
                        self.pos += 1;
                        return Err(self.fail(AddressError::InvalidLocalPart));
                    }
                },
                Some(b' '..=b'~') => self.pos += 1,
                Some(0x80..) => match self.s[self.pos..].chars().next() {
                    Some(c) if is_utf8_qtext(c) => self.pos += c.len_utf8(),
                    _ => return Err(self.fail(AddressError::InvalidLocalPart)),
                },
                _ => return Err(self.fail(AddressError::InvalidLocalPart)),
            }
        }
        let close = self.pos;
        self.pos += 1;
        let content = &self.s[open + 1..close];
        if !escapes {
            // Already canonical either way: no escape to drop, none needed.
            return Ok(if is_dot_string(content) {
                content.to_owned()
            } else {
                self.s[open..=close].to_owned()
            });
        }
        let mut unquoted = String::with_capacity(content.len());
        let mut chars = content.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => unquoted.extend(chars.next()),
                c => unquoted.push(c),
            }
        }
        if is_dot_string(&unquoted) {
            Ok(unquoted)
        } else {
            Ok(canonical_local_part(&unquoted))
        }
    }

    /// `Domain / address-literal`. `invalid` is what a malformed name is
    /// reported as (a bad hop in a source route is named as such).
    pub(crate) fn domain(&mut self, invalid: AddressError) -> Result<Domain, AddressError> {
        if self.peek() == Some(b'[') {
            return self.address_literal().map(Domain::Literal);
        }
        let start = self.pos;
        loop {
            let label = self.pos;
            let mut ends_with_hyphen = false;
            while let Some(c) = self.peek() {
                if c.is_ascii_alphanumeric() {
                    ends_with_hyphen = false;
                    self.pos += 1;
                } else if c == b'-' && self.pos != label {
                    ends_with_hyphen = true;
                    self.pos += 1;
                } else if c >= 0x80 {
                    match self.s[self.pos..].chars().next() {
                        Some(ch) if is_utf8_atext(ch) => {
                            ends_with_hyphen = false;
                            self.pos += ch.len_utf8();
                        }
                        _ => break,
                    }
                } else {
                    break;
                }
            }
            if self.pos == label || ends_with_hyphen {
                return Err(self.fail(invalid));
            }
            if self.pos - label > MAX_LABEL {
                return Err(AddressError::LabelTooLong);
            }
            if !self.eat(b'.') {
                break;
            }
        }
        let name = &self.s[start..self.pos];
        if name.len() > MAX_DOMAIN {
            return Err(AddressError::DomainTooLong);
        }
        Ok(Domain::Name(name.to_owned()))
    }

    /// `"[" ( IPv4 / "IPv6:" IPv6 / tag ":" 1*dcontent ) "]"`.
    fn address_literal(&mut self) -> Result<AddressLiteral, AddressError> {
        self.pos += 1;
        let start = self.pos;
        // Everything any literal may hold is dcontent (which includes ':').
        while let Some(33..=90 | 94..=126) = self.peek() {
            self.pos += 1;
        }
        let inner = &self.s[start..self.pos];
        if !self.eat(b']') {
            // The `>` went into the literal, so "missing >" would mislead.
            return Err(match self.fail(AddressError::InvalidAddressLiteral) {
                AddressError::Unterminated => AddressError::InvalidAddressLiteral,
                other => other,
            });
        }
        parse_literal(inner).ok_or(AddressError::InvalidAddressLiteral)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_string_stops_before_a_dangling_dot() {
        assert_eq!(scan_dot_string("a.b@c"), 3);
        assert_eq!(scan_dot_string("a.@c"), 1);
        assert_eq!(scan_dot_string("a..b"), 1);
        assert_eq!(scan_dot_string(".a"), 0);
        assert_eq!(scan_dot_string("δοκιμή@x"), "δοκιμή".len());
        // U+00A0 is white space: not an atom character even under RFC 6531.
        assert_eq!(scan_dot_string("a\u{a0}b"), 1);
    }

    #[test]
    fn canonical_local_part_quotes_only_when_needed() {
        assert_eq!(canonical_local_part("john"), "john");
        assert_eq!(canonical_local_part("john smith"), r#""john smith""#);
        assert_eq!(canonical_local_part(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(canonical_local_part(""), r#""""#);
        assert_eq!(canonical_local_part(".a"), r#"".a""#);
    }

    #[test]
    fn literals() {
        assert_eq!(
            parse_literal("192.0.2.1"),
            Some(AddressLiteral::Ipv4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(
            parse_literal("ipv6:::ffff:192.0.2.1"),
            Some(AddressLiteral::Ipv6(
                "::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap()
            ))
        );
        assert_eq!(parse_literal("IPv6:192.0.2.1"), None);
        assert_eq!(parse_literal("256.0.0.1"), None);
        assert_eq!(parse_literal("x-:y"), None);
        assert_eq!(parse_literal("tag:"), None);
        assert_eq!(
            parse_literal("x-tag:a:b"),
            Some(AddressLiteral::General {
                tag: "x-tag".into(),
                content: "a:b".into()
            })
        );
    }

    #[test]
    fn path_len_counts_the_canonical_form() {
        let mut sc = Scanner::new("<@a,@[1.2.3.4]:\"x\"@[IPv6:1::2:3:4:5:6:7]>");
        let AnyPath::Path(p) = sc.any_path().unwrap() else {
            panic!("not a path")
        };
        // std writes the zero group out (RFC 5952 compresses runs of two or more only).
        assert_eq!(p.to_string(), "<@a,@[1.2.3.4]:x@[IPv6:1:0:2:3:4:5:6:7]>");
        assert_eq!(path_len(&p), p.to_string().len());
    }
}
