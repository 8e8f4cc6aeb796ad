//! The messages the generator sends: realistic headers, a random text body,
//! and the `X-Loadgen-Sent` timestamp the sink reads to measure end to end.
//!
//! Bodies are made once, up front, in a few variants already dot-stuffed,
//! so that the generator spends its share of the two cores on sending, not
//! on making random text: per message only the header block is written.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_smtp::data::DotStuffer;

/// The header the sink reads: nanoseconds since the Unix epoch at which the
/// generator started writing the message.
pub const SENT_HEADER: &str = "X-Loadgen-Sent";

/// Body variants kept in memory; messages cycle through them.
const VARIANTS: usize = 32;

/// What the messages look like.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    /// The whole message (header block and body) in octets, before
    /// dot-stuffing. Small sizes get the header block alone.
    pub size: usize,
    /// `local@domain`, for `From:` (and MAIL FROM).
    pub from: String,
    /// `local@domain` of each recipient, for `To:`.
    pub to: Vec<String>,
    /// The seed for the bodies, so a run can be repeated byte for byte.
    pub seed: u64,
}

/// Writes messages to `spec`.
#[derive(Debug)]
pub struct MessageFactory {
    spec: MessageSpec,
    to_header: String,
    /// Dot-stuffed bodies, each ending in CRLF, without the final ".".
    bodies: Vec<Vec<u8>>,
}

impl MessageFactory {
    pub fn new(spec: MessageSpec) -> MessageFactory {
        let to_header = spec
            .to
            .iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(",\r\n ");
        let mut factory = MessageFactory {
            spec,
            to_header,
            bodies: Vec::new(),
        };
        // The header block's length varies by a few octets with the
        // sequence number and the clock; a typical one sets the body size.
        let mut probe = Vec::new();
        factory.write_headers(10_000, SystemTime::now(), &mut probe);
        let body_len = factory.spec.size.saturating_sub(probe.len());
        let mut rng = fastrand::Rng::with_seed(factory.spec.seed);
        factory.bodies = (0..VARIANTS)
            .map(|_| {
                let text = random_text(&mut rng, body_len);
                let mut stuffed = Vec::with_capacity(text.len() + text.len() / 64);
                DotStuffer::new().encode(&text, &mut stuffed);
                stuffed
            })
            .collect();
        factory
    }

    /// Appends message `seq` as it goes on the wire after DATA's 354:
    /// dot-stuffed and ended by `CRLF "." CRLF`. `sent` goes into
    /// [`SENT_HEADER`] and `Date:`.
    pub fn write_wire(&self, seq: u64, sent: SystemTime, out: &mut Vec<u8>) {
        // No header line starts with ".", so the header block needs no stuffing.
        self.write_headers(seq, sent, out);
        out.extend_from_slice(&self.bodies[(seq % VARIANTS as u64) as usize]);
        out.extend_from_slice(b".\r\n");
    }

    fn write_headers(&self, seq: u64, sent: SystemTime, out: &mut Vec<u8>) {
        let since_epoch = sent.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let nanos = since_epoch.as_nanos();
        let from = &self.spec.from;
        let domain = from.rsplit_once('@').map_or("loadgen.invalid", |(_, d)| d);
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "Date: {date}\r\n\
             From: Load Generator <{from}>\r\n\
             To: {to}\r\n\
             Subject: Sluice load test message {seq}\r\n\
             Message-ID: <{seq}.{nanos}.loadgen@{domain}>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             Content-Transfer-Encoding: 7bit\r\n\
             {SENT_HEADER}: {nanos}\r\n\
             \r\n",
            date = sluice_smtp::date::rfc5322_date(sent),
            to = self.to_header,
        );
    }
}

/// Lines of random lowercase words, 40 to 76 octets each, CRLF-terminated,
/// `len` octets in all. About one line in forty starts with a dot, so the
/// dot-stuffing paths of every hop are exercised.
fn random_text(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let remaining = len - out.len();
        if remaining <= 2 {
            // Too short for a line of its own: lengthen the previous one
            // (or, in a text of one or two octets, make it an empty line).
            if out.is_empty() {
                out.extend_from_slice(b"\r\n");
            } else {
                out.truncate(out.len() - 2);
                out.extend(std::iter::repeat_n(b'x', remaining));
                out.extend_from_slice(b"\r\n");
            }
            break;
        }
        let line_len = rng.usize(38..=74).min(remaining - 2);
        let start = out.len();
        if rng.usize(0..40) == 0 {
            out.push(b'.');
        }
        while out.len() - start < line_len {
            let word = rng.usize(1..=9).min(line_len - (out.len() - start));
            out.extend((0..word).map(|_| rng.lowercase() as u8));
            if out.len() - start < line_len {
                out.push(b' ');
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads [`SENT_HEADER`] from a message's header block: the nanoseconds
/// since the Unix epoch, or `None` if it is missing or malformed.
pub fn sent_timestamp(message: &[u8]) -> Option<u128> {
    let header_end = memchr::memmem::find(message, b"\r\n\r\n").unwrap_or(message.len());
    let headers = &message[..header_end];
    let name = SENT_HEADER.as_bytes();
    // Header names are case-insensitive (RFC 5322 §1.2.2); the block is
    // short, so a line-by-line walk costs nothing next to the message.
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
        {
            let value = std::str::from_utf8(&line[name.len() + 1..]).ok()?;
            return value.trim().parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_smtp::data::DataDecoder;

    fn spec(size: usize) -> MessageSpec {
        MessageSpec {
            size,
            from: "gen@bench.test".into(),
            to: vec!["a@remote.test".into(), "b@remote.test".into()],
            seed: 7,
        }
    }

    /// Decodes the wire form as a receiving server would.
    fn decode(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut decoder = DataDecoder::new(usize::MAX);
        let progress = decoder.decode(wire, &mut out);
        assert!(progress.done, "no end of data");
        assert_eq!(
            progress.consumed,
            wire.len(),
            "octets after the end of data"
        );
        assert!(!decoder.bare_line_ending());
        out
    }

    #[test]
    fn wire_form_decodes_to_a_message_of_the_asked_size() {
        let f = MessageFactory::new(spec(4096));
        for seq in [0, 1, 31, 12_345] {
            let mut wire = Vec::new();
            f.write_wire(seq, SystemTime::now(), &mut wire);
            let content = decode(&wire);
            // Only the sequence number's and clock's digits vary.
            assert!(
                content.len().abs_diff(4096) <= 24,
                "seq {seq}: {} octets",
                content.len()
            );
            assert!(content.ends_with(b"\r\n"));
            assert!(
                content
                    .split(|&b| b == b'\n')
                    .all(|l| l.is_empty() || l.ends_with(b"\r")),
                "every line ends in CRLF"
            );
        }
    }

    #[test]
    fn bodies_contain_dot_lines_and_survive_stuffing() {
        let f = MessageFactory::new(spec(64 * 1024));
        let mut wire = Vec::new();
        f.write_wire(3, SystemTime::now(), &mut wire);
        assert!(memchr::memmem::find(&wire, b"\r\n..").is_some());
        let content = decode(&wire);
        assert!(memchr::memmem::find(&content, b"\r\n.").is_some());
        assert!(memchr::memmem::find(&content, b"\r\n..").is_none());
    }

    #[test]
    fn tiny_sizes_still_make_a_valid_message() {
        let f = MessageFactory::new(spec(10));
        let mut wire = Vec::new();
        f.write_wire(0, SystemTime::now(), &mut wire);
        let content = decode(&wire);
        assert!(content.ends_with(b"\r\n\r\n"), "header block, empty body");
    }

    #[test]
    fn random_text_is_exact_length_with_crlf_lines() {
        let mut rng = fastrand::Rng::with_seed(1);
        for len in [0, 1, 2, 3, 5, 77, 78, 1000, 4001] {
            let t = random_text(&mut rng, len);
            assert_eq!(t.len(), len.max(if len > 0 { 2 } else { 0 }), "len {len}");
            if len > 0 {
                assert!(t.ends_with(b"\r\n"));
            }
            assert!(t.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        }
    }

    #[test]
    fn same_seed_same_bodies_other_seed_other_bodies() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let wire = |seed| {
            let mut s = spec(2000);
            s.seed = seed;
            let mut w = Vec::new();
            MessageFactory::new(s).write_wire(5, now, &mut w);
            w
        };
        assert_eq!(wire(1), wire(1));
        assert_ne!(wire(1), wire(2));
    }

    #[test]
    fn the_sent_header_round_trips() {
        let f = MessageFactory::new(spec(1000));
        let sent = UNIX_EPOCH + Duration::from_nanos(1_763_847_227_266_308_123);
        let mut wire = Vec::new();
        f.write_wire(9, sent, &mut wire);
        let content = decode(&wire);
        // A relay puts its trace header on top; that must not matter.
        let mut relayed = b"Received: from x by y; Sat, 22 Nov 2026\r\n".to_vec();
        relayed.extend_from_slice(&content);
        assert_eq!(sent_timestamp(&relayed), Some(1_763_847_227_266_308_123));
    }

    #[test]
    fn sent_timestamp_ignores_the_body_and_bad_values() {
        assert_eq!(
            sent_timestamp(b"Subject: x\r\n\r\nX-Loadgen-Sent: 5\r\n"),
            None
        );
        assert_eq!(
            sent_timestamp(b"x-loadgen-sent:  42 \r\n\r\nbody"),
            Some(42)
        );
        assert_eq!(sent_timestamp(b"X-Loadgen-Sent: soon\r\n\r\n"), None);
        assert_eq!(sent_timestamp(b"X-Loadgen-Sentinel: 1\r\n\r\n"), None);
    }
}
