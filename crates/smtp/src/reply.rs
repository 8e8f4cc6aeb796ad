//! SMTP replies (RFC 5321 §4.2) with RFC 3463 enhanced status codes.
//!
//! A reply is a three-digit code, an optional enhanced code (`5.1.7`) and one
//! or more lines of text. The server formats them ([`Reply::write_to`]); the
//! delivery client parses them ([`Reply::parse`]).

use std::borrow::Cow;
use std::fmt;

use smallvec::{SmallVec, smallvec};

/// RFC 3463 `class.subject.detail`, e.g. `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digit by digit: a log line per message writes one, and the
        // integer formatting machinery costs more than the text.
        f.write_str(Decimal::decimal(self.class.into()).as_str())?;
        f.write_str(".")?;
        f.write_str(Decimal::decimal(self.subject.into()).as_str())?;
        f.write_str(".")?;
        f.write_str(Decimal::decimal(self.detail.into()).as_str())
    }
}

/// One SMTP reply, single- or multi-line.
///
/// The text lines never contain CR or LF: the constructors are the only way in
/// and they are given static or validated text, so a reply can never be used
/// to inject a second reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedCode>,
    /// Nearly every reply has one line: it is kept in place (a server makes
    /// four replies a message and its client reads as many).
    lines: SmallVec<[Cow<'static, str>; 1]>,
}

/// What the first digit of a reply code says (RFC 5321 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// 2yz
    Positive,
    /// 3yz: send more (DATA's 354, AUTH's 334)
    Intermediate,
    /// 4yz: try again later
    Transient,
    /// 5yz: do not try again
    Permanent,
}

impl Reply {
    /// A single-line reply. Any CR or LF in `text` is replaced by a space.
    pub fn new(
        code: u16,
        enhanced: Option<EnhancedCode>,
        text: impl Into<Cow<'static, str>>,
    ) -> Self {
        Reply {
            code,
            enhanced,
            lines: smallvec![sanitize(text.into())],
        }
    }

    /// A multi-line reply (EHLO's capability list, HELP). Empty `lines` gives one empty line.
    pub fn multiline<I, S>(code: u16, enhanced: Option<EnhancedCode>, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Cow<'static, str>>,
    {
        let mut lines: SmallVec<[_; 1]> = lines.into_iter().map(|l| sanitize(l.into())).collect();
        if lines.is_empty() {
            lines.push(Cow::Borrowed(""));
        }
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    pub fn lines(&self) -> &[Cow<'static, str>] {
        &self.lines
    }

    /// The text lines joined by a space: what a log line or a bounce quotes.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    pub fn severity(&self) -> Severity {
        match self.code / 100 {
            2 => Severity::Positive,
            3 => Severity::Intermediate,
            4 => Severity::Transient,
            _ => Severity::Permanent,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.severity() == Severity::Positive
    }

    /// Appends the wire form, every line ending in CRLF, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            // Digits by hand: four replies a message, and the formatting
            // machinery costs more than the rest of the reply.
            push_decimal(out, self.code);
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(e) = self.enhanced {
                push_decimal(out, e.class.into());
                out.push(b'.');
                push_decimal(out, e.subject);
                out.push(b'.');
                push_decimal(out, e.detail);
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_to(&mut out);
        out
    }
}

fn push_decimal(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(Decimal::decimal(n.into()).as_bytes());
}

/// A `u16` in decimal, on the stack.
type Decimal = crate::stack_text::StackText<5>;

/// Shows the reply as one log-friendly line: `550 5.1.1 No such user`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Decimal::decimal(self.code.into()).as_str())?;
        if let Some(e) = self.enhanced {
            f.write_str(" ")?;
            fmt::Display::fmt(&e, f)?;
        }
        for line in &self.lines {
            f.write_str(" ")?;
            f.write_str(line)?;
        }
        Ok(())
    }
}

fn sanitize(text: Cow<'static, str>) -> Cow<'static, str> {
    // Every reply made or read passes here: one vectorised search.
    if memchr::memchr2(b'\r', b'\n', text.as_bytes()).is_some() {
        Cow::Owned(text.replace(['\r', '\n'], " "))
    } else {
        text
    }
}

/// Longest reply line [`Reply::parse`] accepts, line ending included.
///
/// RFC 5321 §4.5.3.1.5 sets 512 octets, but it also asks clients to be
/// liberal, and real servers send longer text (policy URLs, base64 tokens).
/// The bound is what keeps a hostile server from growing the client's buffer
/// without end.
pub const MAX_REPLY_LINE: usize = 4096;

/// Most lines one reply may have (a generous EHLO list has about 20).
pub const MAX_REPLY_LINES: usize = 1000;

/// Why a reply could not be parsed. Lines are numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The line does not start with a reply code `[2-5][0-9][0-9]`.
    BadCode { line: usize },
    /// The code is followed by something other than SP, `-` or the line end.
    BadSeparator { line: usize },
    /// A continuation line carries another code than the first line.
    InconsistentCode {
        line: usize,
        expected: u16,
        found: u16,
    },
    /// The line is longer than [`MAX_REPLY_LINE`] octets.
    LineTooLong { line: usize },
    /// The reply goes on past [`MAX_REPLY_LINES`] lines.
    TooManyLines,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::BadCode { line } => write!(f, "reply line {line}: no valid reply code"),
            ReplyError::BadSeparator { line } => {
                write!(f, "reply line {line}: reply code not followed by SP or '-'")
            }
            ReplyError::InconsistentCode {
                line,
                expected,
                found,
            } => write!(
                f,
                "reply line {line}: code {found} differs from the first line's {expected}"
            ),
            ReplyError::LineTooLong { line } => {
                write!(f, "reply line {line}: longer than {MAX_REPLY_LINE} octets")
            }
            ReplyError::TooManyLines => write!(f, "reply has more than {MAX_REPLY_LINES} lines"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// One reply line as split off the wire, before enhanced codes are decided.
struct RawLine<'a> {
    /// After the code and its separator.
    rest: &'a [u8],
    /// An RFC 3463 code at the start of `rest`, and the text after it.
    enhanced: Option<(EnhancedCode, &'a [u8])>,
}

impl Reply {
    /// Parses one complete reply (single- or multi-line, RFC 5321 §4.2.1)
    /// from the front of `input`.
    ///
    /// `Ok(None)`: more bytes are needed. `Ok(Some((reply, consumed)))`: the
    /// reply took the first `consumed` octets; whatever follows is the next
    /// (pipelined) reply.
    ///
    /// Lines end at LF, and a CR right before it is dropped: a client has
    /// to take what servers send (RFC 5321 §4.5.2's "be liberal"), and a
    /// bare LF in a reply cannot smuggle anything. Text that is not UTF-8 is
    /// kept with U+FFFD in place of the bad octets, for logs and bounces.
    ///
    /// An enhanced code (RFC 2034, RFC 3463) is recognised only when every
    /// line starts with one whose class is the reply code's first digit,
    /// which is how RFC 2034 §3 says a server sends them; otherwise the
    /// lines are kept as they are. Should a later line carry a different
    /// enhanced code than the first, that line keeps it in its text, so
    /// nothing the server said is lost.
    ///
    /// The error cases are checked as soon as the bytes that prove them are
    /// there, so a broken server is caught without waiting for its reply to
    /// end, and a line never needs more than [`MAX_REPLY_LINE`] octets of
    /// buffer.
    pub fn parse(input: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        // Most replies are one line: no allocation for the lines' places.
        let mut lines: smallvec::SmallVec<[RawLine<'_>; 2]> = smallvec::SmallVec::new();
        let mut code = 0u16;
        let mut pos = 0;
        loop {
            let number = lines.len() + 1;
            let rest = &input[pos..];
            let Some(lf) = memchr::memchr(b'\n', &rest[..rest.len().min(MAX_REPLY_LINE)]) else {
                if rest.len() >= MAX_REPLY_LINE {
                    return Err(ReplyError::LineTooLong { line: number });
                }
                // Reject a bad code in a partial line now rather than after
                // up to 4 KiB more of it.
                if !code_prefix_ok(rest) {
                    return Err(ReplyError::BadCode { line: number });
                }
                return Ok(None);
            };
            let mut line = &rest[..lf];
            if let [head @ .., b'\r'] = line {
                line = head;
            }
            pos += lf + 1;

            let this_code = match line {
                [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
                    u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
                }
                _ => return Err(ReplyError::BadCode { line: number }),
            };
            if lines.is_empty() {
                code = this_code;
            } else if this_code != code {
                return Err(ReplyError::InconsistentCode {
                    line: number,
                    expected: code,
                    found: this_code,
                });
            }
            let (last, rest) = match line.get(3) {
                None => (true, &line[3..]),
                Some(b' ') => (true, &line[4..]),
                Some(b'-') => (false, &line[4..]),
                Some(_) => return Err(ReplyError::BadSeparator { line: number }),
            };
            lines.push(RawLine {
                rest,
                enhanced: parse_enhanced(rest, (code / 100) as u8),
            });
            if last {
                break;
            }
            if lines.len() == MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
        }

        // The first line's enhanced code, if every line has one.
        let enhanced = match lines.iter().all(|l| l.enhanced.is_some()) {
            true => lines[0].enhanced.map(|(e, _)| e),
            false => None,
        };
        let text = |l: &RawLine<'_>| {
            let bytes = match (enhanced, l.enhanced) {
                (Some(first), Some((e, after))) if e == first => after,
                _ => l.rest,
            };
            match bytes {
                // What Postfix, Sluice and most MTAs answer MAIL and RCPT
                // with: kept without a copy of its own.
                b"Ok" => Cow::Borrowed("Ok"),
                _ => Cow::Owned(String::from_utf8_lossy(bytes).into_owned()),
            }
        };
        let reply = Reply::multiline(code, enhanced, lines.iter().map(text));
        Ok(Some((reply, pos)))
    }
}

/// Whether an incomplete line can still become a valid reply line.
fn code_prefix_ok(partial: &[u8]) -> bool {
    partial.iter().take(3).enumerate().all(|(i, &b)| match i {
        0 => (b'2'..=b'5').contains(&b),
        _ => b.is_ascii_digit(),
    })
}

/// `class "." subject "." detail` (RFC 3463 §2: subject and detail are one to
/// three digits) followed by SP or the end of the line; returns the code and
/// the text after the SP.
fn parse_enhanced(rest: &[u8], class: u8) -> Option<(EnhancedCode, &[u8])> {
    fn number(s: &[u8]) -> Option<(u16, &[u8])> {
        let digits = s.iter().take(4).take_while(|b| b.is_ascii_digit()).count();
        if !(1..=3).contains(&digits) {
            return None;
        }
        let n = s[..digits]
            .iter()
            .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
        Some((n, &s[digits..]))
    }
    let [c, b'.', s @ ..] = rest else {
        return None;
    };
    if !matches!(class, 2 | 4 | 5) || *c != b'0' + class {
        return None;
    }
    let (subject, s) = number(s)?;
    let [b'.', s @ ..] = s else {
        return None;
    };
    let (detail, s) = number(s)?;
    let after = match s {
        [] => s,
        // A stray CR is read as the space it becomes in the text (see
        // `sanitize`), so that format → parse gives the same reply.
        [b' ' | b'\r', after @ ..] => after,
        _ => return None,
    };
    Some((EnhancedCode::new(class, subject, detail), after))
}
