//! Splitting the command stream into lines (RFC 5321 §2.3.8, §4.5.3.1.4).
//!
//! The reader never copies and never buffers: it looks at the caller's
//! buffer and says how much of it a line took. Its one piece of state is
//! whether it is in the middle of throwing away an over-long line, so the
//! caller's buffer never has to hold more than `max_len` octets of a line.

/// Default longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const DEFAULT_MAX_COMMAND_LINE: usize = 512;

/// What [`LineReader::next_line`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// One line, without its line ending.
    Complete(&'a [u8]),
    /// A line longer than the limit. It is reported once, and the reader
    /// then drops everything up to and including its LF.
    TooLong,
}

/// Cuts command lines off the front of a byte buffer.
///
/// A line ends at CRLF. A bare LF also ends a command line: Postfix does the
/// same, some old clients send it, and outside DATA it cannot smuggle
/// anything, because a command line is parsed on its own and the command
/// grammar decides what it is. (Inside DATA a bare LF is never a line end;
/// see [`crate::data`].) A CR that is not followed by LF stays in the line,
/// where the command grammar rejects it.
#[derive(Debug, Clone)]
pub struct LineReader {
    max_len: usize,
    /// Inside an over-long line that has been reported but whose LF has not
    /// arrived yet.
    discarding: bool,
}

impl LineReader {
    /// `max_len` is the longest line accepted, counted with a CRLF ending
    /// whether the line had one or a bare LF (so the limit does not depend
    /// on the client's line endings). Values below 3 (one octet and CRLF)
    /// are taken as 3.
    pub fn new(max_len: usize) -> Self {
        LineReader {
            max_len: max_len.max(3),
            discarding: false,
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Whether the reader is dropping the rest of an over-long line.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Takes the next line from the front of `input`; returns how many octets
    /// were consumed and the line, if there was one.
    ///
    /// `(n, None)`: no complete line is there yet; the caller keeps the
    /// unconsumed rest and calls again with more bytes appended. `n` can be
    /// above 0 while an over-long line is being dropped.
    ///
    /// An over-long line is reported as [`Line::TooLong`] as soon as that is
    /// known, even before its LF has arrived. Once its LF is found, reading
    /// goes on with the next line within the same call: a caller that stops
    /// at `None` must never be left with a complete line in its buffer and
    /// nothing more to come (a pipelining client waits for our reply).
    pub fn next_line<'a>(&mut self, input: &'a [u8]) -> (usize, Option<Line<'a>>) {
        let mut skipped = 0;
        if self.discarding {
            match memchr::memchr(b'\n', input) {
                Some(lf) => {
                    self.discarding = false;
                    skipped = lf + 1;
                }
                None => return (input.len(), None),
            }
        }
        let rest = &input[skipped..];
        if rest.is_empty() {
            return (skipped, None);
        }
        let window = &rest[..rest.len().min(self.max_len)];
        // The longest content that, with CRLF, still fits.
        let max_content = self.max_len - 2;
        match memchr::memchr(b'\n', window) {
            Some(lf) => {
                let content = match rest[..lf] {
                    [ref head @ .., b'\r'] => head,
                    ref all => all,
                };
                let line = if content.len() > max_content {
                    Line::TooLong
                } else {
                    Line::Complete(content)
                };
                (skipped + lf + 1, Some(line))
            }
            // max_len octets and no LF: even if the last one is a CR, the
            // content is at least max_len - 1 octets.
            None if window.len() == self.max_len => {
                match memchr::memchr(b'\n', &rest[self.max_len..]) {
                    Some(lf) => (skipped + self.max_len + lf + 1, Some(Line::TooLong)),
                    None => {
                        self.discarding = true;
                        (input.len(), Some(Line::TooLong))
                    }
                }
            }
            None => (skipped, None),
        }
    }
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader::new(DEFAULT_MAX_COMMAND_LINE)
    }
}
