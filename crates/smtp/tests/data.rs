//! The DATA codec: unstuffing, the end marker, SMTP smuggling, splits,
//! limits, and the stuff → unstuff round trip.

use proptest::prelude::*;
use sluice_smtp::data::{DataDecoder, DotStuffer, LineEndingCheck};

const NO_LIMIT: usize = usize::MAX;

/// Everything one decoder run produced.
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

/// Feeds `input` cut at `cuts` (sorted offsets), the way a socket would
/// deliver it; stops feeding once the decoder is done.
fn decode_split(input: &[u8], cuts: &[usize], limit: usize) -> Decoded {
    let mut dec = DataDecoder::new(limit);
    let mut content = Vec::new();
    let mut consumed = 0;
    let mut done = false;
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let piece = &input[start..end];
        let p = dec.decode(piece, &mut content);
        consumed += p.consumed;
        if p.done {
            done = true;
            break;
        }
        assert_eq!(
            p.consumed,
            piece.len(),
            "a piece before the end is used whole"
        );
        start = end;
    }
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

fn decode(input: &[u8]) -> Decoded {
    decode_split(input, &[], NO_LIMIT)
}

fn stuff_split(content: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut s = DotStuffer::new();
    let mut out = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([content.len()]) {
        s.encode(&content[start..end], &mut out);
        start = end;
    }
    s.finish(&mut out);
    out
}

fn stuff(content: &[u8]) -> Vec<u8> {
    stuff_split(content, &[])
}

/// What the next hop must see of `x`: every bare CR and bare LF as CRLF,
/// and a final CRLF if the content does not end with one.
fn normalised(x: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
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

#[test]
fn leading_dot_is_removed() {
    let d = decode(b"..x\r\na.b\r\n...\r\n.\r\n");
    assert!(d.done);
    assert_eq!(d.content, b".x\r\na.b\r\n..\r\n");
    assert!(!d.bare);
    assert_eq!(d.size, d.content.len() as u64);
}

#[test]
fn empty_message_gives_nothing() {
    let input = b".\r\nQUIT\r\n";
    let d = decode(input);
    assert!(d.done);
    assert_eq!(d.consumed, 3);
    assert!(d.content.is_empty());
    assert_eq!(d.size, 0);
}

#[test]
fn message_of_only_dot_lines() {
    let d = decode(b"..\r\n..\r\n..\r\n.\r\n");
    assert!(d.done);
    assert_eq!(d.content, b".\r\n.\r\n.\r\n");
}

#[test]
fn end_stops_before_the_pipelined_command() {
    let input = b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    let d = decode(input);
    assert!(d.done);
    assert_eq!(&input[d.consumed..], b"QUIT\r\n");
    assert_eq!(d.content, b"Subject: hi\r\n\r\nbody\r\n");
}

#[test]
fn nothing_is_consumed_after_the_end() {
    let mut dec = DataDecoder::new(NO_LIMIT);
    let mut out = Vec::new();
    assert!(dec.decode(b"a\r\n.\r\n", &mut out).done);
    let p = dec.decode(b"more\r\n.\r\n", &mut out);
    assert_eq!((p.consumed, p.done), (0, true));
    assert_eq!(out, b"a\r\n");
}

/// The SEC Consult end-of-data variants and more: none of them may end the
/// data, all are flagged, and the smuggled commands stay inside the message
/// up to the real CRLF.CRLF.
const SMUGGLING: &[&[u8]] = &[
    b"\r\n.\n",
    b"\n.\r\n",
    b"\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\r\n.\r\r\n",
    b"\r\n.\r\r\n",
    b"\n\n.\n\n",
    b"\r\r.\r\r",
    b"\r\n\n.\r\n",
    b"\r\n.\n\r\n",
];

fn smuggling_message(prefix: &[u8], variant: &[u8]) -> (Vec<u8>, usize) {
    let mut m = Vec::new();
    m.extend_from_slice(prefix);
    m.extend_from_slice(variant);
    m.extend_from_slice(b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.org>\r\n");
    m.extend_from_slice(b"DATA\r\nFrom: admin@bank.example\r\n\r\nforged\r\n");
    m.extend_from_slice(b".\r\n");
    let end = m.len();
    m.extend_from_slice(b"QUIT\r\n");
    (m, end)
}

#[test]
fn smuggling_variants_do_not_end_the_data() {
    for prefix in [&b"Subject: x\r\n\r\nhello"[..], b""] {
        for variant in SMUGGLING {
            let (m, end) = smuggling_message(prefix, variant);
            let d = decode(&m);
            let what = String::from_utf8_lossy(variant);
            assert!(d.done, "{what:?}");
            assert_eq!(d.consumed, end, "{what:?} ended the data early");
            assert_eq!(&m[d.consumed..], b"QUIT\r\n");
            assert!(d.bare, "{what:?} not flagged");
            let inside = b"MAIL FROM:<admin@bank.example>\r\n";
            assert!(
                d.content.windows(inside.len()).any(|w| w == inside),
                "{what:?}: the smuggled command must stay in the content"
            );
            // Byte by byte: the end is found at the same place.
            let cuts: Vec<usize> = (1..m.len()).collect();
            assert_eq!(decode_split(&m, &cuts, NO_LIMIT), d, "{what:?}");
        }
    }
}

#[test]
fn dot_then_bare_ending_at_data_start_is_not_an_end() {
    for start in [&b".\n"[..], b".\r", b".\rX"] {
        let mut m = start.to_vec();
        m.extend_from_slice(b"rest\r\n.\r\n");
        let d = decode(&m);
        assert!(d.done);
        assert_eq!(d.consumed, m.len());
        assert!(d.bare);
    }
}

#[test]
fn bare_line_endings_are_flagged_only_when_present() {
    assert!(!decode(b"a\r\nb\r\n\r\n.\r\n").bare);
    assert!(decode(b"a\nb\r\n.\r\n").bare);
    assert!(decode(b"a\rb\r\n.\r\n").bare);
    assert!(decode(b"a\r\r\n.\r\n").bare);
    assert!(decode(b"a\r\n\n.\r\n").bare);
}

fn sample() -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"From: a@example.org\r\nSubject: caf\xc3\xa9\r\n\r\n");
    m.extend_from_slice(b"..stuffed\r\n.\r.\n..\r\nx\ry\nz\r\r\n");
    m.extend_from_slice(b"\r\n.\n\n.\r\n.x\r\n\r\n.\r\nQUIT\r\n");
    m
}

#[test]
fn every_split_point_gives_the_same_result() {
    let m = sample();
    let whole = decode(&m);
    assert!(whole.done);
    assert_eq!(&m[whole.consumed..], b"QUIT\r\n");
    assert!(whole.bare && whole.has_8bit);
    for a in 0..=m.len() {
        assert_eq!(decode_split(&m, &[a], NO_LIMIT), whole, "split at {a}");
    }
    for a in 0..=m.len() {
        for b in a..=m.len() {
            assert_eq!(
                decode_split(&m, &[a, b], NO_LIMIT),
                whole,
                "split at {a}, {b}"
            );
        }
    }
}

#[test]
fn every_split_point_of_a_clean_message() {
    let m = b"Subject: t\r\n\r\n..a\r\n..\r\n\r\nend\r\n.\r\nNOOP\r\n";
    let whole = decode(m);
    assert_eq!(whole.content, b"Subject: t\r\n\r\n.a\r\n.\r\n\r\nend\r\n");
    assert!(!whole.bare && !whole.has_8bit);
    for a in 0..=m.len() {
        for b in a..=m.len() {
            assert_eq!(
                decode_split(m, &[a, b], NO_LIMIT),
                whole,
                "split at {a}, {b}"
            );
        }
    }
}

#[test]
fn content_past_the_limit_is_counted_not_stored() {
    let m = b"0123456789\r\n0123456789\r\n.\r\n";
    let d = decode_split(m, &[5, 13], 10);
    assert!(d.done && d.exceeded);
    assert_eq!(d.size, 24);
    assert_eq!(d.content, b"0123456789");
    assert_eq!(d.consumed, m.len());

    let exact = decode_split(m, &[], 24);
    assert!(!exact.exceeded);
    assert_eq!(exact.content.len(), 24);
    assert!(decode_split(m, &[], 23).exceeded);
}

#[test]
fn eight_bit_detection() {
    assert!(!decode(b"plain ascii\r\n.\r\n").has_8bit);
    let ascii = [b"plain ascii ".repeat(30), b"\r\n.\r\n".to_vec()].concat();
    assert!(!decode(&ascii).has_8bit);
    assert!(decode(b"caf\xc3\xa9\r\n.\r\n").has_8bit);
    // Past the first 64-octet block, and in a block's tail.
    let mut long = vec![b'a'; 200];
    long[130] = 0x80;
    long.extend_from_slice(b"\r\n.\r\n");
    assert!(decode(&long).has_8bit);
    let mut tail = vec![b'a'; 130];
    tail[129] = 0xff;
    tail.extend_from_slice(b"\r\n.\r\n");
    assert!(decode(&tail).has_8bit);
    // Octets after the end belong to the next command.
    assert!(!decode(b"a\r\n.\r\n\xff").has_8bit);
}

#[test]
fn stuffer_doubles_leading_dots() {
    assert_eq!(stuff(b".x\r\n"), b"..x\r\n.\r\n");
    assert_eq!(stuff(b"a\r\n.\r\nb"), b"a\r\n..\r\nb\r\n.\r\n");
    assert_eq!(stuff(b"a.b\r\n"), b"a.b\r\n.\r\n");
}

#[test]
fn stuffer_ends_the_data() {
    assert_eq!(stuff(b""), b".\r\n");
    assert_eq!(stuff(b"a\r\n"), b"a\r\n.\r\n");
    assert_eq!(stuff(b"a"), b"a\r\n.\r\n");
    assert_eq!(stuff(b"a\r"), b"a\r\n.\r\n");
}

#[test]
fn stuffer_normalises_bare_line_endings() {
    assert_eq!(stuff(b"a\nb"), b"a\r\nb\r\n.\r\n");
    assert_eq!(stuff(b"a\rb"), b"a\r\nb\r\n.\r\n");
    assert_eq!(stuff(b"a\r\r\nb"), b"a\r\n\r\nb\r\n.\r\n");
    assert_eq!(stuff(b"\n.\n"), b"\r\n..\r\n.\r\n");
    // A CR at the end of one chunk and its LF at the start of the next.
    assert_eq!(stuff_split(b"a\r\n.b", &[2]), b"a\r\n..b\r\n.\r\n");
    assert_eq!(stuff_split(b"a\r.b", &[2]), b"a\r\n..b\r\n.\r\n");
}

#[test]
fn stuffer_is_reusable_after_finish() {
    let mut s = DotStuffer::new();
    let mut out = Vec::new();
    s.encode(b"x", &mut out);
    s.finish(&mut out);
    s.encode(b".y\r\n", &mut out);
    s.finish(&mut out);
    assert_eq!(out, b"x\r\n.\r\n..y\r\n.\r\n");
}

#[test]
fn stuffed_smuggling_payload_is_one_clean_message() {
    for variant in SMUGGLING {
        let (m, end) = smuggling_message(b"hello", variant);
        let content = &m[..end];
        let wire = stuff(content);
        let d = decode(&wire);
        assert!(d.done && !d.bare, "{:?}", String::from_utf8_lossy(variant));
        assert_eq!(d.consumed, wire.len());
        assert_eq!(d.content, normalised(content));
    }
}

#[test]
fn line_ending_check() {
    let check = |chunks: &[&[u8]]| {
        let mut c = LineEndingCheck::new();
        for chunk in chunks {
            c.feed(chunk);
        }
        c.finish()
    };
    assert!(check(&[b"a\r\nb\r\n"]));
    assert!(check(&[b"a\r", b"\nb\r", b"", b"\n"]));
    assert!(check(&[]));
    assert!(!check(&[b"a\nb\r\n"]));
    assert!(!check(&[b"a\rb\r\n"]));
    assert!(!check(&[b"a\r", b"b\r\n"]));
    assert!(!check(&[b"a\r\n", b"\n"]));
    assert!(!check(&[b"a\r"]), "a message ending in a bare CR");
    assert!(!check(&[b"a\r\r\n"]));

    let mut c = LineEndingCheck::new();
    c.feed(b"ascii\r\n");
    assert!(!c.has_8bit());
    c.feed(b"\xe2\x82\xac\r\n");
    assert!(c.has_8bit());
}

/// Sorted cut points into a buffer of `len` octets.
fn cuts(len: usize, picks: &[prop::sample::Index]) -> Vec<usize> {
    let mut c: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    c.sort_unstable();
    c
}

proptest! {
    #[test]
    fn stuff_then_unstuff_is_identity_for_crlf_lines(
        lines in prop::collection::vec(
            prop::collection::vec(any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..40),
            0..20,
        ),
        final_crlf in any::<bool>(),
        stuff_picks in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        decode_picks in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut content = lines.join(&b"\r\n"[..]);
        if final_crlf && !lines.is_empty() {
            content.extend_from_slice(b"\r\n");
        }
        let mut wire = stuff_split(&content, &cuts(content.len(), &stuff_picks));
        let wire_len = wire.len();
        wire.extend_from_slice(b"QUIT\r\n");
        let d = decode_split(&wire, &cuts(wire.len(), &decode_picks), NO_LIMIT);
        prop_assert!(d.done);
        prop_assert!(!d.bare);
        prop_assert_eq!(d.consumed, wire_len);
        prop_assert_eq!(d.content, normalised(&content));
    }

    #[test]
    fn stuff_then_unstuff_normalises_arbitrary_bytes(
        content in prop::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()],
            0..200,
        ),
        stuff_picks in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        decode_picks in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let wire = stuff_split(&content, &cuts(content.len(), &stuff_picks));
        prop_assert_eq!(&wire, &stuff(&content), "stuffing is split-invariant");
        let d = decode_split(&wire, &cuts(wire.len(), &decode_picks), NO_LIMIT);
        prop_assert!(d.done);
        prop_assert!(!d.bare);
        prop_assert_eq!(d.consumed, wire.len());
        prop_assert_eq!(d.content, normalised(&content));
        let mut check = LineEndingCheck::new();
        check.feed(&normalised(&content));
        prop_assert!(check.finish());
    }

    #[test]
    fn decoding_is_split_invariant_on_arbitrary_bytes(
        input in prop::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()],
            0..200,
        ),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        limit in 0usize..100,
    ) {
        let whole = decode_split(&input, &[], limit);
        prop_assert_eq!(decode_split(&input, &cuts(input.len(), &picks), limit), whole);
    }
}
