//! The command line reader: line endings, the length limit, resynchronising.

use sluice_smtp::line::{Line, LineReader};

/// Reads every line the reader can find in `input`, the way a front end
/// loops over its buffer; returns the lines and the octets consumed.
fn read_all<'a>(r: &mut LineReader, input: &'a [u8]) -> (Vec<Line<'a>>, usize) {
    let mut lines = Vec::new();
    let mut pos = 0;
    loop {
        let (n, line) = r.next_line(&input[pos..]);
        pos += n;
        match line {
            Some(l) => lines.push(l),
            None => return (lines, pos),
        }
    }
}

#[test]
fn crlf_and_bare_lf_end_a_line() {
    let mut r = LineReader::new(512);
    let (lines, used) = read_all(&mut r, b"EHLO a\r\nNOOP\nQUIT\r\nRS");
    assert_eq!(
        lines,
        [
            Line::Complete(b"EHLO a"),
            Line::Complete(b"NOOP"),
            Line::Complete(b"QUIT")
        ]
    );
    assert_eq!(used, 19, "the partial RS stays for the next read");
}

#[test]
fn cr_without_lf_stays_in_the_line() {
    let mut r = LineReader::new(512);
    let (lines, _) = read_all(&mut r, b"NO\rOP\r\nA\r\r\n");
    assert_eq!(lines, [Line::Complete(b"NO\rOP"), Line::Complete(b"A\r")]);
    // A lone CR at the end of the buffer is not yet a line end.
    assert_eq!(r.next_line(b"QUIT\r"), (0, None));
}

#[test]
fn empty_lines_and_empty_input() {
    let mut r = LineReader::new(512);
    assert_eq!(r.next_line(b""), (0, None));
    assert_eq!(r.next_line(b"\r\n"), (2, Some(Line::Complete(b""))));
    assert_eq!(r.next_line(b"\n"), (1, Some(Line::Complete(b""))));
}

#[test]
fn limit_counts_the_crlf() {
    // max_len 10: at most 8 octets of content.
    let mut r = LineReader::new(10);
    assert_eq!(
        r.next_line(b"12345678\r\n"),
        (10, Some(Line::Complete(b"12345678")))
    );
    assert_eq!(
        r.next_line(b"12345678\n"),
        (9, Some(Line::Complete(b"12345678")))
    );
    assert_eq!(r.next_line(b"123456789\n"), (10, Some(Line::TooLong)));
    assert_eq!(r.next_line(b"123456789\r\nX"), (11, Some(Line::TooLong)));
    assert!(!r.is_discarding());
    // Nine octets and no LF yet: it could still end in CRLF.
    assert_eq!(r.next_line(b"12345678\r"), (0, None));
}

#[test]
fn over_long_line_is_reported_before_its_end_arrives() {
    let mut r = LineReader::new(10);
    // Ten octets, no LF: too long whatever comes next; all of it is dropped.
    assert_eq!(r.next_line(b"0123456789"), (10, Some(Line::TooLong)));
    assert!(r.is_discarding());
    // More of the same line: dropped, and not reported again.
    assert_eq!(r.next_line(b"abcdefghijklmnop"), (16, None));
    assert_eq!(r.next_line(b"xyz\r"), (4, None));
    // Its LF arrives with the next command: the reader resynchronises and
    // returns that command in the same call.
    assert_eq!(
        r.next_line(b"\nQUIT\r\nNO"),
        (7, Some(Line::Complete(b"QUIT")))
    );
    assert!(!r.is_discarding());
}

#[test]
fn resync_in_the_same_buffer() {
    let mut r = LineReader::new(10);
    let mut input = vec![b'x'; 30];
    input.extend_from_slice(b"\r\nHELO a\r\n");
    let (lines, used) = read_all(&mut r, &input);
    assert_eq!(lines, [Line::TooLong, Line::Complete(b"HELO a")]);
    assert_eq!(used, input.len());
}

#[test]
fn discarded_tail_without_a_following_line() {
    let mut r = LineReader::new(10);
    assert_eq!(r.next_line(b"0123456789012"), (13, Some(Line::TooLong)));
    assert_eq!(r.next_line(b"34\r\n"), (4, None));
    assert!(!r.is_discarding());
    assert_eq!(r.next_line(b"NOOP\r\n"), (6, Some(Line::Complete(b"NOOP"))));
}

#[test]
fn the_buffer_never_needs_more_than_max_len() {
    // Feed one octet at a time into a buffer the way a front end would:
    // the reader must have decided before the buffer reaches max_len.
    let max = 16;
    let mut r = LineReader::new(max);
    let stream: Vec<u8> = [&[b'a'; 100][..], b"\r\nNOOP\r\n", &[b'b'; 40], b"\n"].concat();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for &b in &stream {
        buf.push(b);
        loop {
            let (n, line) = r.next_line(&buf);
            let line = line.map(|l| match l {
                Line::Complete(c) => Some(c.to_vec()),
                Line::TooLong => None,
            });
            buf.drain(..n);
            match line {
                Some(l) => got.push(l),
                None => break,
            }
        }
        assert!(buf.len() < max, "buffer grew to {}", buf.len());
    }
    assert_eq!(got, [None, Some(b"NOOP".to_vec()), None]);
}

#[test]
fn default_is_rfc_5321_limit() {
    let r = LineReader::default();
    assert_eq!(r.max_len(), 512);
    let mut r = r;
    let ok = [&[b'a'; 510][..], b"\r\n"].concat();
    assert_eq!(r.next_line(&ok), (512, Some(Line::Complete(&ok[..510]))));
    let long = [&[b'a'; 511][..], b"\r\n"].concat();
    assert_eq!(r.next_line(&long), (513, Some(Line::TooLong)));
}
