//! The DATA decoder: the same result however the input is split, never a
//! panic, and the dot-stuffer's output always decodes back cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_smtp::data::{DataDecoder, DotStuffer, LineEndingCheck};

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    content: Vec<u8>,
    consumed: usize,
    done: bool,
    bare: bool,
    has_8bit: bool,
    exceeded: bool,
    size: u64,
}

fn decode(pieces: &[&[u8]], limit: usize) -> Decoded {
    let mut dec = DataDecoder::new(limit);
    let mut content = Vec::new();
    let mut consumed = 0;
    let mut done = false;
    for piece in pieces {
        let p = dec.decode(piece, &mut content);
        consumed += p.consumed;
        assert!(p.consumed <= piece.len());
        if p.done {
            done = true;
            break;
        }
        assert_eq!(p.consumed, piece.len());
    }
    assert!(content.len() <= limit);
    assert!(content.len() as u64 <= dec.size());
    Decoded {
        content,
        consumed,
        done,
        bare: dec.bare_line_ending(),
        has_8bit: dec.has_8bit(),
        exceeded: dec.exceeded(),
        size: dec.size(),
    }
}

/// Every bare CR and bare LF as CRLF, and a final CRLF if missing.
fn normalised(x: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() + 2);
    let mut i = 0;
    while i < x.len() {
        match x[i] {
            b'\r' if x.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn has_bare(x: &[u8]) -> bool {
    x.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => x.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || x[i - 1] != b'\r',
        _ => false,
    })
}

fuzz_target!(|data: &[u8]| {
    // Two octets pick the split point, one the size limit.
    let [a, b, l, input @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([*a, *b])) % (input.len() + 1);
    let limit = if *l == 255 {
        usize::MAX
    } else {
        usize::from(*l) * 3
    };

    let whole = decode(&[input], limit);
    let (head, tail) = input.split_at(split);
    assert_eq!(decode(&[head, tail], limit), whole, "split at {split}");
    if whole.done {
        let ended = &input[..whole.consumed];
        assert!(ended.ends_with(b"\r\n.\r\n") || ended == b".\r\n");
    }

    // The flag is exactly "the content so far has a bare CR or LF", where
    // a CR at the very end of an unfinished input is still undecided.
    let seen = match &input[..whole.consumed] {
        [head @ .., b'\r'] if !whole.done => head,
        seen => seen,
    };
    assert_eq!(whole.bare, has_bare(seen));

    let mut stuffer = DotStuffer::new();
    let mut wire = Vec::new();
    stuffer.encode(head, &mut wire);
    stuffer.encode(tail, &mut wire);
    stuffer.finish(&mut wire);
    let back = decode(&[&wire], usize::MAX);
    assert!(back.done && !back.bare);
    assert_eq!(back.consumed, wire.len());
    assert_eq!(back.content, normalised(input));

    let mut check = LineEndingCheck::new();
    check.feed(head);
    check.feed(tail);
    let clean = check.finish();
    assert_eq!(clean, !has_bare(input));
});
