//! Where a forward-path really sends mail.
//!
//! A relay check that only looks at the text after the last `@` is easy to
//! fool, because several old addressing forms hide a next hop inside an
//! address that ends in one of our domains. This module finds every
//! destination a forward-path names, and the filter then requires all of them
//! to be ours:
//!
//! * RFC 821 source routes, `@hop1,@hop2:user@final` (RFC 5321 §3.3, C): the
//!   mail goes to `final`; the route is validated, then ignored as RFC 5321
//!   says a server should.
//! * the `%`-hack, `user%remote@ours` (RFC 1123 §5.2.16): `ours` would pass it
//!   on to `remote`.
//! * UUCP bang paths, `remote!user@ours`.
//! * a quoted local part hiding any of these, `"user@remote"@ours`.
//! * address literals, `user@[192.0.2.1]`: never one of ours.
//!
//! Anything that does not parse as RFC 5321 `Path` content is an error, so
//! that the caller can fail closed.

use alloc::string::String;
use alloc::vec::Vec;

use sluice_plugin_sdk::syntax::{is_address_literal, is_domain};

/// One destination named by a forward-path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A domain name, to be checked against our local domains.
    Domain(String),
    /// An address literal (`[192.0.2.1]`, `[IPv6:…]`): never local.
    Literal(String),
}

/// What a forward-path asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `<Postmaster>` without a domain: ours by definition (RFC 5321 §4.5.1).
    Postmaster,
    /// A mailbox: the final domain first, then every next hop hidden in the
    /// local part.
    Mailbox(Vec<Dest>),
}

/// Why a forward-path is not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Empty argument.
    Empty,
    /// A source route that is not `@domain *(",@domain") ":"`.
    BadRoute,
    /// A local part that is neither a dot-string nor a quoted string.
    BadLocalPart,
    /// No `@` between local part and domain.
    NoDomain,
    /// A domain that is not RFC 5321 `Domain` syntax.
    BadDomain,
    /// An address literal that is not `"[" dcontent "]"`.
    BadLiteral,
    /// A next hop in the local part that is not a domain or a literal.
    BadHiddenRoute,
}

impl ParseError {
    /// A short explanation for replies and logs.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Empty => "empty address",
            Self::BadRoute => "malformed source route",
            Self::BadLocalPart => "malformed local part",
            Self::NoDomain => "no domain",
            Self::BadDomain => "malformed domain",
            Self::BadLiteral => "malformed address literal",
            Self::BadHiddenRoute => "malformed route in the local part",
        }
    }
}

/// Parses RFC 5321 `Path` content (what stands between `<` and `>`).
pub fn parse(path: &str) -> Result<Target, ParseError> {
    if path.is_empty() {
        return Err(ParseError::Empty);
    }
    if path.eq_ignore_ascii_case("postmaster") {
        return Ok(Target::Postmaster);
    }
    let mailbox = match path.strip_prefix('@') {
        Some(_) => {
            // A-d-l ":" Mailbox. Route domains contain no ':' (literals are
            // not allowed in a route), so the first ':' ends the route.
            let (route, mailbox) = path.split_once(':').ok_or(ParseError::BadRoute)?;
            for hop in route.split(',') {
                let domain = hop.strip_prefix('@').ok_or(ParseError::BadRoute)?;
                if !is_domain(domain) {
                    return Err(ParseError::BadRoute);
                }
            }
            mailbox
        }
        None => path,
    };
    let (local, rest) = split_local_part(mailbox)?;
    let domain = rest.strip_prefix('@').ok_or(ParseError::NoDomain)?;
    let mut dests = Vec::new();
    dests.push(dest(domain).map_err(|literal| {
        if literal {
            ParseError::BadLiteral
        } else {
            ParseError::BadDomain
        }
    })?);
    hidden_hops(&local, &mut dests)?;
    Ok(Target::Mailbox(dests))
}

/// Splits off the local part, returning it unquoted, and what follows it.
fn split_local_part(mailbox: &str) -> Result<(String, &str), ParseError> {
    if let Some(quoted) = mailbox.strip_prefix('"') {
        // Quoted-string = DQUOTE *QcontentSMTP DQUOTE
        let mut local = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((local, &quoted[i + 1..])),
                '\\' => match chars.next() {
                    Some((_, q)) if (' '..='~').contains(&q) => local.push(q),
                    _ => return Err(ParseError::BadLocalPart),
                },
                // qtextSMTP: printable ASCII but '"' and '\', or UTF-8.
                c if (' '..='~').contains(&c) || !c.is_ascii() => local.push(c),
                _ => return Err(ParseError::BadLocalPart),
            }
        }
        Err(ParseError::BadLocalPart)
    } else {
        // Dot-string: the local part ends at the first character that is not
        // atext or '.', which must be the '@'.
        let end = mailbox
            .find(|c: char| !(is_atext(c) || c == '.'))
            .unwrap_or(mailbox.len());
        let local = &mailbox[..end];
        if local.is_empty() || local.split('.').any(str::is_empty) {
            return Err(ParseError::BadLocalPart);
        }
        Ok((String::from(local), &mailbox[end..]))
    }
}

/// Collects the next hops a local part names through `@`, `%` (the host is
/// on the right) or `!` (the host is on the left), however they are nested.
/// Which of the characters binds first is not standardised, but the set of
/// host tokens found is the same either way, and the filter needs every one
/// of them to be ours.
fn hidden_hops(local: &str, out: &mut Vec<Dest>) -> Result<(), ParseError> {
    let mut rest = local;
    loop {
        if let Some(i) = rest.rfind(['@', '%']) {
            out.push(dest(&rest[i + 1..]).map_err(|_| ParseError::BadHiddenRoute)?);
            rest = &rest[..i];
        } else if let Some(i) = rest.find('!') {
            out.push(dest(&rest[..i]).map_err(|_| ParseError::BadHiddenRoute)?);
            rest = &rest[i + 1..];
        } else {
            return Ok(());
        }
    }
}

/// A domain or an address literal; `Err(true)` for a bad literal,
/// `Err(false)` for a bad domain.
fn dest(text: &str) -> Result<Dest, bool> {
    if text.starts_with('[') {
        return if is_address_literal(text) {
            Ok(Dest::Literal(String::from(text)))
        } else {
            Err(true)
        };
    }
    if is_domain(text) {
        Ok(Dest::Domain(String::from(text)))
    } else {
        Err(false)
    }
}

/// RFC 5322 atext, plus UTF-8 for SMTPUTF8 (RFC 6531).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(d: &str) -> Dest {
        Dest::Domain(d.into())
    }

    fn mailbox(dests: &[Dest]) -> Result<Target, ParseError> {
        Ok(Target::Mailbox(dests.to_vec()))
    }

    #[test]
    fn a_plain_mailbox_names_its_domain() {
        assert_eq!(parse("user@local.test"), mailbox(&[domain("local.test")]));
        assert_eq!(
            parse("first.last+tag@Sub.Local.Test"),
            mailbox(&[domain("Sub.Local.Test")])
        );
        assert_eq!(parse("用户@例子.测试"), mailbox(&[domain("例子.测试")]));
    }

    #[test]
    fn a_source_route_is_ignored_for_the_final_domain() {
        assert_eq!(
            parse("@local.test:x@remote.test"),
            mailbox(&[domain("remote.test")])
        );
        assert_eq!(
            parse("@a.test,@b.test:x@local.test"),
            mailbox(&[domain("local.test")])
        );
        assert_eq!(parse("@local.test:x"), Err(ParseError::NoDomain));
        assert_eq!(parse("@:x@local.test"), Err(ParseError::BadRoute));
        assert_eq!(
            parse("@a.test,b.test:x@local.test"),
            Err(ParseError::BadRoute)
        );
        assert_eq!(parse("@a.test x@local.test"), Err(ParseError::BadRoute));
    }

    #[test]
    fn the_percent_hack_exposes_its_hop() {
        assert_eq!(
            parse("user%remote.test@local.test"),
            mailbox(&[domain("local.test"), domain("remote.test")])
        );
        assert_eq!(
            parse("u%a.test%b.test@local.test"),
            mailbox(&[domain("local.test"), domain("b.test"), domain("a.test")])
        );
        assert_eq!(parse("user%@local.test"), Err(ParseError::BadHiddenRoute));
    }

    #[test]
    fn a_bang_path_exposes_its_hops() {
        assert_eq!(
            parse("remote.test!user@local.test"),
            mailbox(&[domain("local.test"), domain("remote.test")])
        );
        assert_eq!(
            parse("a.test!b.test!user@local.test"),
            mailbox(&[domain("local.test"), domain("a.test"), domain("b.test")])
        );
        assert_eq!(parse("!user@local.test"), Err(ParseError::BadHiddenRoute));
    }

    #[test]
    fn quoting_hides_nothing() {
        assert_eq!(
            parse("\"x@remote.test\"@local.test"),
            mailbox(&[domain("local.test"), domain("remote.test")])
        );
        assert_eq!(
            parse("\"x%remote.test\"@local.test"),
            mailbox(&[domain("local.test"), domain("remote.test")])
        );
        // A quoted-pair is unquoted before the search.
        assert_eq!(
            parse("\"x\\@remote.test\"@local.test"),
            mailbox(&[domain("local.test"), domain("remote.test")])
        );
        assert_eq!(
            parse("\"x@[192.0.2.1]\"@local.test"),
            mailbox(&[domain("local.test"), Dest::Literal("[192.0.2.1]".into())])
        );
        assert_eq!(
            parse("\"john doe\"@local.test"),
            mailbox(&[domain("local.test")])
        );
        assert_eq!(parse("\"\"@local.test"), mailbox(&[domain("local.test")]));
        assert_eq!(
            parse("\"unterminated@local.test"),
            Err(ParseError::BadLocalPart)
        );
        assert_eq!(parse("\"a\"b@local.test"), Err(ParseError::NoDomain));
        assert_eq!(
            parse("\"tab\there\"@local.test"),
            Err(ParseError::BadLocalPart)
        );
    }

    #[test]
    fn address_literals_are_recognised_and_checked() {
        assert_eq!(
            parse("x@[192.0.2.1]"),
            mailbox(&[Dest::Literal("[192.0.2.1]".into())])
        );
        assert_eq!(
            parse("x@[IPv6:2001:db8::1]"),
            mailbox(&[Dest::Literal("[IPv6:2001:db8::1]".into())])
        );
        assert_eq!(parse("x@[]"), Err(ParseError::BadLiteral));
        assert_eq!(parse("x@[1.2.3.4"), Err(ParseError::BadLiteral));
        assert_eq!(parse("x@[1.2.3.4]x"), Err(ParseError::BadLiteral));
    }

    #[test]
    fn malformed_paths_are_errors() {
        for (path, err) in [
            ("", ParseError::Empty),
            ("user", ParseError::NoDomain),
            ("user@", ParseError::BadDomain),
            ("@", ParseError::BadRoute),
            ("user@local.test.", ParseError::BadDomain),
            ("user@-local.test", ParseError::BadDomain),
            ("user@local..test", ParseError::BadDomain),
            ("user@local_test", ParseError::BadDomain),
            (".user@local.test", ParseError::BadLocalPart),
            ("us..er@local.test", ParseError::BadLocalPart),
            ("x@remote.test@local.test", ParseError::BadDomain),
            ("<user@local.test>", ParseError::BadLocalPart),
            ("user@local.test ", ParseError::BadDomain),
        ] {
            assert_eq!(parse(path), Err(err), "{path:?}");
        }
        let long_label = "a".repeat(64);
        assert_eq!(
            parse(&alloc::format!("x@{long_label}.test")),
            Err(ParseError::BadDomain)
        );
    }

    #[test]
    fn postmaster_alone_is_special_in_any_case() {
        assert_eq!(parse("Postmaster"), Ok(Target::Postmaster));
        assert_eq!(parse("POSTMASTER"), Ok(Target::Postmaster));
        assert_eq!(
            parse("postmaster@remote.test"),
            mailbox(&[domain("remote.test")])
        );
        assert_eq!(parse("webmaster"), Err(ParseError::NoDomain));
    }
}
