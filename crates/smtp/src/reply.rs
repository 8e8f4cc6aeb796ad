//! SMTP replies (RFC 5321 §4.2) with RFC 3463 enhanced status codes.
//!
//! A reply is a three-digit code, an optional enhanced code (`5.1.7`) and one
//! or more lines of text. The server formats them; the delivery client parses
//! them (see [`ReplyParser`]).

use std::borrow::Cow;
use std::fmt;

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
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
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
    lines: Vec<Cow<'static, str>>,
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
            lines: vec![sanitize(text.into())],
        }
    }

    /// A multi-line reply (EHLO's capability list, HELP). Empty `lines` gives one empty line.
    pub fn multiline<I, S>(code: u16, enhanced: Option<EnhancedCode>, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Cow<'static, str>>,
    {
        let mut lines: Vec<_> = lines.into_iter().map(|l| sanitize(l.into())).collect();
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
        use std::io::Write as _;
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{}{}", self.code, sep);
            if let Some(e) = self.enhanced {
                let _ = write!(out, "{e}");
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

/// Shows the reply as one log-friendly line: `550 5.1.1 No such user`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

fn sanitize(text: Cow<'static, str>) -> Cow<'static, str> {
    if text.contains(['\r', '\n']) {
        Cow::Owned(text.replace(['\r', '\n'], " "))
    } else {
        text
    }
}
