//! LineReader: the lines found do not depend on how the stream is cut into
//! reads, and no line handed out is longer than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_smtp::line::{Line, LineReader};

/// Reads `stream` delivered in `pieces` the way a front end does: append to
/// a buffer, take lines off the front; the buffer must stay under max_len.
fn read(pieces: &[&[u8]], max_len: usize) -> Vec<Option<Vec<u8>>> {
    let mut reader = LineReader::new(max_len);
    let max_len = reader.max_len();
    let mut buf = Vec::new();
    let mut lines = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let (n, line) = reader.next_line(&buf);
            let line = line.map(|l| match l {
                Line::Complete(c) => {
                    assert!(c.len() + 2 <= max_len);
                    assert!(!c.contains(&b'\n'));
                    Some(c.to_vec())
                }
                Line::TooLong => None,
            });
            buf.drain(..n);
            match line {
                Some(l) => lines.push(l),
                None => break,
            }
        }
        assert!(buf.len() < max_len);
    }
    lines
}

fuzz_target!(|data: &[u8]| {
    let [m, s, input @ ..] = data else {
        return;
    };
    let max_len = usize::from(*m);
    let split = usize::from(*s) % (input.len() + 1);
    let whole = read(&[input], max_len);
    let (head, tail) = input.split_at(split);
    assert_eq!(read(&[head, tail], max_len), whole);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(read(&bytes, max_len), whole);
});
