//! The DATA codec: dot-unstuffing on receive, dot-stuffing on send
//! (RFC 5321 §4.1.1.4, §4.5.2), and the line-ending check for BDAT chunks
//! (RFC 3030).
//!
//! # Bare CR and bare LF (SMTP smuggling)
//!
//! The end of the data is recognised only at CRLF "." CRLF. SMTP smuggling
//! (SEC Consult, December 2023; CVE-2023-51764 Postfix, CVE-2023-51765
//! Sendmail, CVE-2023-51766 Exim) works because two hops disagree about
//! where the data ends: the sending hop sees one message containing
//! `\n.\r\n MAIL FROM:...`, the receiving hop sees the end of the data
//! and then a second, forged transaction. So [`DataDecoder`] takes no end
//! marker but the exact one: not `\r\n.\n`, `\n.\r\n`, `\n.\n`, `\r.\r\n`,
//! `\r\n.\r`, `\r\n.\r\r\n`, nor any other mix. A "." after a bare LF is
//! not even at the start of a line.
//!
//! Any bare CR or bare LF in the content is flagged
//! ([`DataDecoder::bare_line_ending`]) and the server rejects the whole
//! message (`550 5.5.2`), rather than turning them into CRLF and accepting:
//!
//! - Normalising changes the content, which breaks DKIM signatures made over
//!   the original bytes, and hides from the operator that the client is
//!   broken or hostile.
//! - Rejecting keeps a smuggled "second message" inside the first: the
//!   decoder goes on to the real CRLF.CRLF (so the session stays in step
//!   with the client), and the whole thing, forged part included, is
//!   refused as one.
//!
//! The send side, [`DotStuffer`], does normalise: whatever the spool holds,
//! the next hop must never get a line ending that it might read differently
//! from us.

use memchr::memchr2;

/// Where the decoder is relative to lines and the end marker. The states
/// after a "." hold octets that are not yet written out, because they would
/// belong to the end marker if the right octets followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Right after CRLF, or at the very start (the DATA command's CRLF
    /// comes before it).
    LineStart,
    /// "." at the start of a line, held back.
    Dot,
    /// "." CR at the start of a line, both held back.
    DotCr,
    /// Inside a line.
    Mid,
    /// After a CR inside a line (the CR is written; the next octet tells
    /// whether it was a bare CR or a line end).
    Cr,
    /// The end marker was read.
    Done,
}

/// The receive side of DATA: dot-unstuffs the data into the caller's buffer
/// and finds its end.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: DecodeState,
    limit: usize,
    size: u64,
    bare_line_ending: bool,
    has_8bit: bool,
}

/// What one [`DataDecoder::decode`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeProgress {
    /// Octets of the input used; when `done`, the rest of the input is the
    /// next (pipelined) command.
    pub consumed: usize,
    /// The end of the data (CRLF "." CRLF) was reached.
    pub done: bool,
}

impl DataDecoder {
    /// `limit`: the largest message accepted, in octets of unstuffed
    /// content. Past it, content is counted but no longer stored, so the
    /// session can read on to the end and answer `552` in step.
    pub fn new(limit: usize) -> Self {
        DataDecoder {
            state: DecodeState::LineStart,
            limit,
            size: 0,
            bare_line_ending: false,
            has_8bit: false,
        }
    }

    /// Dot-unstuffs `input` into `out`.
    ///
    /// The data ends only at CRLF "." CRLF; decoding stops right after it,
    /// and `consumed` counts up to there. The content written to `out` ends
    /// with the CRLF before the final dot (an empty message writes
    /// nothing). The input may be split at any octet across calls. After
    /// the end, further calls consume nothing.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> DecodeProgress {
        use DecodeState::*;
        let n = input.len();
        let mut i = 0;
        // input[run..i] is content not yet written to `out`: written in one
        // piece when a held-back "." breaks the run, or at the end.
        let mut run = 0;
        while i < n {
            match self.state {
                Mid => match memchr2(b'\r', b'\n', &input[i..]) {
                    None => i = n,
                    Some(off) => {
                        let p = i + off;
                        match (input[p], input.get(p + 1), input.get(p + 2)) {
                            // The common line end: CRLF and a next line that
                            // starts with anything but "." stay in one state
                            // (one search a line, not three state changes).
                            (b'\r', Some(b'\n'), Some(&next)) if next != b'.' => i = p + 2,
                            (b'\r', _, _) => {
                                i = p + 1;
                                self.state = Cr;
                            }
                            _ => {
                                i = p + 1;
                                self.bare_line_ending = true;
                            }
                        }
                    }
                },
                Cr => {
                    let b = input[i];
                    i += 1;
                    self.state = match b {
                        b'\n' => LineStart,
                        b'\r' => {
                            self.bare_line_ending = true;
                            Cr
                        }
                        _ => {
                            self.bare_line_ending = true;
                            Mid
                        }
                    };
                }
                LineStart => {
                    let b = input[i];
                    if b == b'.' {
                        self.emit(&input[run..i], out);
                        i += 1;
                        run = i;
                        self.state = Dot;
                    } else {
                        self.state = Mid;
                    }
                }
                Dot => {
                    if input[i] == b'\r' {
                        i += 1;
                        run = i;
                        self.state = DotCr;
                    } else {
                        // The stuffed dot is dropped; the octet is read as
                        // the start of an ordinary line.
                        self.state = Mid;
                    }
                }
                DotCr => {
                    if input[i] == b'\n' {
                        self.state = Done;
                        i += 1;
                        self.note_8bit(&input[..i]);
                        return DecodeProgress {
                            consumed: i,
                            done: true,
                        };
                    }
                    // "." CR and not LF: the dot was stuffing, the CR is
                    // bare, and the octet after it starts over inside a line.
                    self.emit(b"\r", out);
                    self.bare_line_ending = true;
                    self.state = Mid;
                }
                Done => {
                    return DecodeProgress {
                        consumed: 0,
                        done: true,
                    };
                }
            }
        }
        self.emit(&input[run..i], out);
        self.note_8bit(input);
        DecodeProgress {
            consumed: n,
            done: self.state == Done,
        }
    }

    /// Whether the end of the data has been reached.
    pub fn is_done(&self) -> bool {
        self.state == DecodeState::Done
    }

    /// The content passed `limit`.
    pub fn exceeded(&self) -> bool {
        self.size > self.limit as u64
    }

    /// A bare CR or bare LF was seen; the message must be rejected (see the
    /// module documentation).
    pub fn bare_line_ending(&self) -> bool {
        self.bare_line_ending
    }

    /// An octet >= 0x80 was seen (a `BODY=7BIT` message must have none).
    pub fn has_8bit(&self) -> bool {
        self.has_8bit
    }

    /// Octets of unstuffed content seen, stored or not.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn emit(&mut self, content: &[u8], out: &mut Vec<u8>) {
        let stored = self.size.min(self.limit as u64) as usize;
        let room = self.limit - stored;
        out.extend_from_slice(&content[..content.len().min(room)]);
        self.size += content.len() as u64;
    }

    /// Looks at all the input rather than only the content: the octets that
    /// are not content (dots, CR, LF) are ASCII, so the answer is the same,
    /// and one pass over a large slice is faster than many small ones.
    fn note_8bit(&mut self, seen: &[u8]) {
        if !self.has_8bit {
            self.has_8bit = any_8bit(seen);
        }
    }
}

/// OR of all octets, in blocks the compiler turns into vector code; an
/// early exit per octet (`iter().any`) would keep it from doing so.
fn any_8bit(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(64);
    for chunk in &mut chunks {
        if chunk.iter().fold(0u8, |acc, &b| acc | b) & 0x80 != 0 {
            return true;
        }
    }
    chunks.remainder().iter().fold(0u8, |acc, &b| acc | b) & 0x80 != 0
}

/// The send side of DATA: dot-stuffs a message as it streams out.
///
/// It also turns every bare CR and bare LF into CRLF (RFC 5321 §2.3.8), so
/// that this client never sends a line ending the next hop might read as
/// the end of the data (SMTP smuggling, see the module documentation).
#[derive(Debug, Clone)]
pub struct DotStuffer {
    /// The last octet written ended a line (true at the start: the DATA
    /// command's CRLF came before).
    at_line_start: bool,
    /// The input ended in a CR that is not written yet: whether it ends a
    /// line or is bare depends on the first octet of the next input.
    pending_cr: bool,
}

impl DotStuffer {
    pub fn new() -> Self {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Dot-stuffs `input` into `out`, with bare CR and bare LF written as
    /// CRLF.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let n = input.len();
        let mut i = 0;
        if self.pending_cr && n > 0 {
            self.pending_cr = false;
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
            if input[0] == b'\n' {
                i = 1;
            }
        }
        // input[run..i] is written as it is, in one piece.
        let mut run = i;
        while i < n {
            if self.at_line_start {
                self.at_line_start = false;
                if input[i] == b'.' {
                    // The extra dot goes out first; the dot itself stays in
                    // the run.
                    out.extend_from_slice(&input[run..i]);
                    out.push(b'.');
                    run = i;
                }
            }
            let Some(off) = memchr2(b'\r', b'\n', &input[i..]) else {
                i = n;
                break;
            };
            let p = i + off;
            if input[p] == b'\r' && p + 1 < n && input[p + 1] == b'\n' {
                i = p + 2;
                self.at_line_start = true;
                continue;
            }
            out.extend_from_slice(&input[run..p]);
            if input[p] == b'\r' && p + 1 == n {
                self.pending_cr = true;
                return;
            }
            // A bare CR or bare LF.
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
            i = p + 1;
            run = i;
        }
        out.extend_from_slice(&input[run..i]);
    }

    /// Ends the data: CRLF if the content did not end with one, then
    /// ".\r\n". The stuffer is then ready for the next message.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DotStuffer::new();
    }
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

/// Checks BDAT chunks (RFC 3030) for bare CR and bare LF as they stream in.
///
/// BDAT has no dot-stuffing and no end marker, so it cannot be smuggled
/// through by itself; but content with bare line endings received by BDAT
/// would be relayed onward with DATA, where it could. The same policy as
/// for DATA applies: reject, do not normalise.
#[derive(Debug, Clone)]
pub struct LineEndingCheck {
    /// The last chunk ended in a CR; the next chunk must start with LF.
    pending_cr: bool,
    /// A bare CR or bare LF was seen.
    bare: bool,
    has_8bit: bool,
}

impl LineEndingCheck {
    pub fn new() -> Self {
        LineEndingCheck {
            pending_cr: false,
            bare: false,
            has_8bit: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if !self.has_8bit {
            self.has_8bit = any_8bit(chunk);
        }
        if self.bare {
            return;
        }
        let mut i = 0;
        if self.pending_cr {
            self.pending_cr = false;
            if chunk[0] != b'\n' {
                self.bare = true;
                return;
            }
            i = 1;
        }
        while let Some(off) = memchr2(b'\r', b'\n', &chunk[i..]) {
            let p = i + off;
            if chunk[p] == b'\n' {
                self.bare = true;
                return;
            }
            match chunk.get(p + 1) {
                Some(b'\n') => i = p + 2,
                Some(_) => {
                    self.bare = true;
                    return;
                }
                None => {
                    self.pending_cr = true;
                    return;
                }
            }
        }
    }

    /// Whether everything fed so far (the message ending in a bare CR
    /// counts) was free of bare CR and bare LF.
    pub fn finish(&mut self) -> bool {
        if self.pending_cr {
            self.pending_cr = false;
            self.bare = true;
        }
        !self.bare
    }

    /// An octet >= 0x80 was fed (a `BODY=7BIT` message must have none).
    pub fn has_8bit(&self) -> bool {
        self.has_8bit
    }
}

impl Default for LineEndingCheck {
    fn default() -> Self {
        LineEndingCheck::new()
    }
}
