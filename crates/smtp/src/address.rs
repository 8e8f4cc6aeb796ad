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

use crate::syntax::{self, AnyPath, Scanner};

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

    /// The domain as text (its `Display` form): a name as it is, a literal
    /// in brackets.
    pub fn text(&self) -> String {
        self.as_text().into_owned()
    }

    /// [`Domain::text`], borrowed for a name (nearly every domain).
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Domain::Name(name) => std::borrow::Cow::Borrowed(name),
            Domain::Literal(lit) => std::borrow::Cow::Owned(lit.to_string()),
        }
    }

    /// Octets of [`Domain::text`] for a name; a literal's bound.
    fn text_len_bound(&self) -> usize {
        match self {
            Domain::Name(name) => name.len(),
            // `[IPv6:` and the longest IPv6 text, 45 octets, and `]`.
            Domain::Literal(AddressLiteral::Ipv4(_) | AddressLiteral::Ipv6(_)) => 52,
            Domain::Literal(AddressLiteral::General { tag, content }) => {
                tag.len() + content.len() + 3
            }
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
        unquote_local_part(&self.0)
    }
}

/// `"john smith"` → `john smith`, `"a\"b"` → `a"b`; an unquoted local part as
/// it is. For local parts kept in their wire form (the spool's envelopes)
/// that a mailbox lookup needs the content of.
pub fn unquote_local_part(wire: &str) -> std::borrow::Cow<'_, str> {
    let Some(inner) = wire.strip_prefix('"').and_then(|w| w.strip_suffix('"')) else {
        return std::borrow::Cow::Borrowed(wire);
    };
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
        // Piece by piece: one `write!` costs more than the text it writes.
        f.write_str(&self.local_part.0)?;
        f.write_str("@")?;
        self.domain.fmt(f)
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
        self.mailbox.fmt(f)?;
        f.write_str(">")
    }
}

impl Path {
    /// Appends the `Display` form: by hand for the usual path (no source
    /// route, a domain name), which the delivery client writes twice a
    /// message.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        match &self.mailbox.domain {
            Domain::Name(name) if self.source_route.is_empty() => {
                out.push(b'<');
                out.extend_from_slice(self.mailbox.local_part.0.as_bytes());
                out.push(b'@');
                out.extend_from_slice(name.as_bytes());
                out.push(b'>');
            }
            _ => {
                use std::io::Write as _;
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{self}");
            }
        }
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

impl Domain {
    /// Parses a domain name or an address literal, the whole of `s` (e.g. a
    /// local domain in the config, or the argument of EHLO).
    pub fn parse(s: &str) -> Option<Domain> {
        let mut sc = Scanner::new(s);
        let domain = sc.domain(AddressError::InvalidDomain).ok()?;
        sc.at_end().then_some(domain)
    }

    /// Whether the domain is pure ASCII (no U-label), so needs no SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        match self {
            Domain::Name(name) => name.is_ascii(),
            Domain::Literal(_) => true,
        }
    }
}

impl LocalPart {
    /// Builds a local part from its unquoted text, quoting it when it is not
    /// a dot-string (the same canonical form the parser produces).
    pub fn from_unquoted(s: &str) -> Result<LocalPart, AddressError> {
        if !syntax::is_quotable(s) {
            return Err(AddressError::ControlCharacter);
        }
        let canonical = syntax::canonical_local_part(s);
        if canonical.len() > syntax::MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        Ok(LocalPart(canonical))
    }
}

impl Mailbox {
    /// Parses `local-part@domain`, without angle brackets (e.g. from the config).
    pub fn parse(s: &[u8]) -> Result<Mailbox, AddressError> {
        let s = std::str::from_utf8(s).map_err(|_| AddressError::NotUtf8)?;
        Scanner::new(s).mailbox()
    }

    /// Whether the mailbox can be sent without SMTPUTF8 (RFC 6531).
    pub fn is_ascii(&self) -> bool {
        self.local_part.0.is_ascii() && self.domain.is_ascii()
    }

    /// `local-part@domain` as text (the `Display` form), made in one
    /// allocation: filters and trace fields take several a message, and
    /// `to_string` grows its string as it writes.
    pub fn text(&self) -> String {
        let mut text = String::with_capacity(self.text_len_bound());
        self.push_text(&mut text);
        text
    }

    /// Appends [`Mailbox::text`] to `out`.
    pub fn push_text(&self, out: &mut String) {
        out.reserve(self.text_len_bound());
        out.push_str(&self.local_part.0);
        out.push('@');
        match &self.domain {
            Domain::Name(name) => out.push_str(name),
            Domain::Literal(lit) => {
                use std::fmt::Write as _;
                let _ = write!(out, "{lit}");
            }
        }
    }

    fn text_len_bound(&self) -> usize {
        self.local_part.0.len() + 1 + self.domain.text_len_bound()
    }
}

impl Path {
    /// Parses a whole bracketed path, `<@a,@b:user@host>`. `<>` and
    /// `<postmaster>` are not paths (see [`ReversePath`], [`ForwardPath`]).
    pub fn parse(s: &[u8]) -> Result<Path, AddressError> {
        let s = std::str::from_utf8(s).map_err(|_| AddressError::NotUtf8)?;
        let mut sc = Scanner::new(s);
        let path = match sc.any_path()? {
            AnyPath::Path(path) => path,
            AnyPath::Null => return Err(AddressError::NullPath),
            AnyPath::Postmaster => return Err(AddressError::MissingDomain),
        };
        if !sc.at_end() {
            return Err(AddressError::TrailingCharacters);
        }
        Ok(path)
    }

    /// Whether the path, source route included, can be sent without SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.mailbox.is_ascii() && self.source_route.iter().all(Domain::is_ascii)
    }
}

impl ReversePath {
    /// Whether the path can be sent without SMTPUTF8; `<>` always can.
    pub fn is_ascii(&self) -> bool {
        match self {
            ReversePath::Null => true,
            ReversePath::Path(p) => p.is_ascii(),
        }
    }
}

impl ForwardPath {
    /// Whether the path can be sent without SMTPUTF8; `<postmaster>` always can.
    pub fn is_ascii(&self) -> bool {
        match self {
            ForwardPath::Postmaster => true,
            ForwardPath::Path(p) => p.is_ascii(),
        }
    }
}

/// Why a path or mailbox does not parse. [`AddressError::description`] is
/// the part of the reply text that tells the client what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressError {
    NotUtf8,
    /// The path does not start with `<` (RFC 5321 requires the brackets).
    NotBracketed,
    /// The closing `>` is missing.
    Unterminated,
    /// NUL, CR, LF or another control character inside the path.
    ControlCharacter,
    InvalidSourceRoute,
    InvalidLocalPart,
    /// `<user>`: no `@domain` (only `<postmaster>` may omit it, and only in RCPT).
    MissingDomain,
    InvalidDomain,
    InvalidAddressLiteral,
    /// Over 64 octets (RFC 5321 §4.5.3.1.1).
    LocalPartTooLong,
    /// Over 255 octets (RFC 5321 §4.5.3.1.2).
    DomainTooLong,
    /// A label over 63 octets (RFC 1035 §2.3.4).
    LabelTooLong,
    /// Over 256 octets (RFC 5321 §4.5.3.1.3).
    PathTooLong,
    /// `<>` where a mailbox is required (RCPT TO).
    NullPath,
    /// Something other than a space between `>` and the parameters.
    TrailingCharacters,
}

impl AddressError {
    /// What is wrong, in words for the reply text.
    pub fn description(self) -> &'static str {
        match self {
            AddressError::NotUtf8 => "the address is not valid UTF-8",
            AddressError::NotBracketed => {
                "the address must be enclosed in angle brackets, as in <user@example.com>"
            }
            AddressError::Unterminated => "the closing angle bracket is missing",
            AddressError::ControlCharacter => "control character in the address",
            AddressError::InvalidSourceRoute => "invalid source route (the @host,@host: part)",
            AddressError::InvalidLocalPart => "invalid local part (the part before the @)",
            AddressError::MissingDomain => "the domain is missing, expected user@domain",
            AddressError::InvalidDomain => "invalid domain name",
            AddressError::InvalidAddressLiteral => "invalid address literal",
            AddressError::LocalPartTooLong => "the local part is longer than 64 octets",
            AddressError::DomainTooLong => "the domain is longer than 255 octets",
            AddressError::LabelTooLong => "a domain label is longer than 63 octets",
            AddressError::PathTooLong => "the path is longer than 256 octets",
            AddressError::NullPath => "the null path <> is not a valid recipient",
            AddressError::TrailingCharacters => {
                "unexpected characters after the closing angle bracket"
            }
        }
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for AddressError {}

/// Sub-addressing (RFC 5233): the mailbox part of a local part with an
/// extension, `alice` for `alice+lists` when `+` is among `delimiters`; the
/// text before the first delimiter, when there is one and something
/// precedes it. Callers look the whole local part up first, so a name that
/// contains a delimiter itself still matches exactly.
pub fn without_extension<'a>(local_part: &'a str, delimiters: &str) -> Option<&'a str> {
    if delimiters.is_empty() {
        return None;
    }
    match local_part.find(|c| delimiters.contains(c)) {
        Some(at) if at > 0 => Some(&local_part[..at]),
        _ => None,
    }
}
