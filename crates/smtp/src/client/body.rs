//! Framing the body for DATA without copying it.

use memchr::memchr2;

/// The DATA form of a whole body as a series of slices: pieces of `body`
/// itself, with the few octets dot-stuffing adds (an extra "." before a line
/// that starts with one, CRLF for a bare CR or bare LF, the final
/// `CRLF "." CRLF`) as static slices in between.
///
/// The concatenation is exactly what [`DotStuffer`](crate::data::DotStuffer)
/// writes for the same body followed by `finish`. The point is that nothing
/// is copied: a body read through a memory map goes to the socket with
/// vectored writes (`writev`, at most `IOV_MAX` = 1024 slices per call) of
/// slices that point into the map. A typical body is one slice plus the
/// terminator; each line starting with "." adds two.
#[derive(Debug, Clone)]
pub struct DotStuffed<'a> {
    body: &'a [u8],
    pos: usize,
    at_line_start: bool,
    /// A CRLF owed for a bare line ending, after the run before it.
    owe_crlf: bool,
    done: bool,
}

/// See [`DotStuffed`].
pub fn dot_stuffed(body: &[u8]) -> DotStuffed<'_> {
    DotStuffed {
        body,
        pos: 0,
        // The DATA command's CRLF comes right before the body.
        at_line_start: true,
        owe_crlf: false,
        done: false,
    }
}

impl<'a> Iterator for DotStuffed<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if std::mem::take(&mut self.owe_crlf) {
            return Some(b"\r\n");
        }
        if self.done {
            return None;
        }
        let body = self.body;
        let len = body.len();
        if self.pos == len {
            self.done = true;
            return Some(if self.at_line_start {
                b".\r\n"
            } else {
                b"\r\n.\r\n"
            });
        }
        if std::mem::take(&mut self.at_line_start) && body[self.pos] == b'.' {
            // The body's own dot starts the next run.
            return Some(b".");
        }
        let start = self.pos;
        let mut i = start;
        loop {
            let Some(off) = memchr2(b'\r', b'\n', &body[i..]) else {
                self.pos = len;
                return Some(&body[start..]);
            };
            let p = i + off;
            if body[p] == b'\r' && body.get(p + 1) == Some(&b'\n') {
                i = p + 2;
                // A run can go on across line ends, but not into a line that
                // needs a dot, nor past the end.
                if i == len || body[i] == b'.' {
                    self.pos = i;
                    self.at_line_start = true;
                    return Some(&body[start..i]);
                }
                continue;
            }
            // A bare CR or bare LF goes out as CRLF (RFC 5321 §2.3.8), so the
            // next hop can never see an end of data we did not mean.
            self.pos = p + 1;
            self.at_line_start = true;
            if p == start {
                return Some(b"\r\n");
            }
            self.owe_crlf = true;
            return Some(&body[start..p]);
        }
    }
}

impl std::iter::FusedIterator for DotStuffed<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DotStuffer;
    use proptest::prelude::*;

    fn reference(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stuffer = DotStuffer::new();
        stuffer.encode(body, &mut out);
        stuffer.finish(&mut out);
        out
    }

    fn joined(body: &[u8]) -> Vec<u8> {
        dot_stuffed(body).flatten().copied().collect()
    }

    #[test]
    fn examples() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..\r\n", b"a\r\n..b\r\n...\r\n.\r\n"),
            (b"a\nb\rc", b"a\r\nb\r\nc\r\n.\r\n"),
            (b"a\n.\r\n", b"a\r\n..\r\n.\r\n"),
            (b"\r", b"\r\n.\r\n"),
            (b"\r\r\n", b"\r\n\r\n.\r\n"),
        ];
        for (body, wire) in cases {
            assert_eq!(
                joined(body),
                *wire,
                "body {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_ordinary_body_is_one_slice_of_itself() {
        let body = b"Subject: x\r\n\r\nhello\r\n";
        let slices: Vec<&[u8]> = dot_stuffed(body).collect();
        assert_eq!(slices.len(), 2);
        assert!(std::ptr::eq(slices[0], &body[..]));
    }

    proptest! {
        #[test]
        fn same_bytes_as_the_dot_stuffer(
            body in proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()],
                0..64,
            )
        ) {
            prop_assert_eq!(joined(&body), reference(&body));
            prop_assert!(dot_stuffed(&body).all(|s| !s.is_empty()));
        }
    }
}
