//! Mailboxes and paths (RFC 5321 §4.1.2, RFC 6531 for SMTPUTF8).
//!
//! ```text
//! Reverse-path   = Path / "<>"
//! Forward-path   = Path
//! Path           = "<" [ A-d-l ":" ] Mailbox ">"
//! A-d-l          = At-domain *( "," At-domain )     ; the RFC 821 source route
//! Mailbox        = Local-part "@" ( Domain / address-literal )
//! ```
//!
//! The source route is parsed and kept (it belongs in the trace) but never
//! used for routing: RFC 5321 Appendix C says to deliver to the mailbox.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A domain as it appears after `@` or in HELO/EHLO.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A host name, stored as received (ASCII LDH labels, or U-labels under SMTPUTF8).
    /// Comparisons that matter (local domain checks) go through [`Domain::eq_ignore_case`].
    Name(String),
    /// `[192.0.2.1]`, `[IPv6:2001:db8::1]` or a general literal `[tag:content]`.
    Literal(AddressLiteral),
}

/// RFC 5321 §4.1.3 address literals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddressLiteral {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// `General-address-literal = Standardized-tag ":" 1*dcontent`; kept so that
    /// a literal we do not understand can still be reported, never routed to.
    General {
        tag: String,
        content: String,
    },
}

/// The part before `@`. Stored in its canonical wire form: a dot-string as
/// is, a quoted string with its quotes and with only the escapes it needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalPart(pub(crate) String);

/// `Local-part "@" Domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    pub local_part: LocalPart,
    pub domain: Domain,
}

/// A mailbox with the RFC 821 source route it came with (empty almost always).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    /// `@host2,@host3:` — kept for the trace, ignored for routing.
    pub source_route: Vec<Domain>,
    pub mailbox: Mailbox,
}

/// The argument of MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications; must never itself be bounced.
    Null,
    Path(Path),
}

/// The argument of RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<postmaster>` without a domain (RFC 5321 §4.1.1.3): always accepted.
    Postmaster,
    Path(Path),
}

impl Domain {
    /// Case-insensitive comparison for host names (RFC 5321 §2.4); literals compare by value.
    pub fn eq_ignore_case(&self, other: &Domain) -> bool {
        match (self, other) {
            (Domain::Name(a), Domain::Name(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

impl LocalPart {
    /// The canonical wire form (quoted when it must be).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the canonical form is a quoted string.
    pub fn is_quoted(&self) -> bool {
        self.0.starts_with('"')
    }

    /// The local part with quoting removed: what a mailbox lookup compares.
    pub fn unquoted(&self) -> std::borrow::Cow<'_, str> {
        if !self.is_quoted() {
            return std::borrow::Cow::Borrowed(&self.0);
        }
        let inner = &self.0[1..self.0.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    out.push(escaped);
                }
            } else {
                out.push(c);
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for AddressLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressLiteral::Ipv4(ip) => write!(f, "[{ip}]"),
            AddressLiteral::Ipv6(ip) => write!(f, "[IPv6:{ip}]"),
            AddressLiteral::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(name) => f.write_str(name),
            Domain::Literal(lit) => lit.fmt(f),
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

/// Formats as the bracketed wire form, `<@a,@b:user@host>`.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<")?;
        for (i, hop) in self.source_route.iter().enumerate() {
            f.write_str(if i == 0 { "@" } else { ",@" })?;
            hop.fmt(f)?;
        }
        if !self.source_route.is_empty() {
            f.write_str(":")?;
        }
        write!(f, "{}>", self.mailbox)
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Path(p) => p.fmt(f),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<postmaster>"),
            ForwardPath::Path(p) => p.fmt(f),
        }
    }
}
