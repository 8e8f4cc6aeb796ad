//! The on-disk format: segment headers, record framing, record payloads and
//! the scanner that walks a segment (see the crate documentation for the
//! layout in prose).

use crate::codec::{Reader, put_u8, put_u32, put_u64};
use crate::{Entry, JournalEntry, MessageMark, QueueId, RecipientState, SpoolError};

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"SLUICESG";
/// Version 2: the segment header carries a seed, and its records' header
/// checksums start from it. Version 1 (seed zero: plain CRC32C) is still read.
pub(crate) const FORMAT_VERSION: u32 = 2;
pub(crate) const SEGMENT_HEADER_LEN: usize = 40;

pub(crate) const RECORD_MAGIC: &[u8; 4] = b"SLRC";
pub(crate) const RECORD_HEADER_LEN: usize = 20;
/// Largest payload a record can carry (the length field is 32 bits).
pub(crate) const MAX_PAYLOAD: u64 = u32::MAX as u64;

pub(crate) const KIND_MESSAGE: u8 = 1;
pub(crate) const KIND_JOURNAL: u8 = 2;
pub(crate) const KIND_DONE: u8 = 3;

const JOURNAL_RECIPIENT: u8 = 1;
const JOURNAL_HELD: u8 = 2;
const JOURNAL_RELEASED: u8 = 3;

const DONE_DONE: u8 = 0;
const DONE_DELETED: u8 = 1;

/// The file name of segment `seq`: fixed width so that names sort like numbers.
pub(crate) fn segment_file_name(seq: u64) -> String {
    format!("seg-{seq:012}.log")
}

/// The sequence number of a segment file name, if it is one.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The fixed header at offset 0 of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) seq: u64,
    /// The id generator's high-water mark when the segment was created: keeps
    /// ids unique across restarts after every older segment is gone.
    pub(crate) id_floor: u64,
    /// Random, per segment: every record header's checksum in it starts from
    /// this value instead of zero. Bytes that look like a record but were not
    /// written as one of this segment's records (a record someone put inside a
    /// message body, hoping a torn write makes the scanner look inside it)
    /// fail the check, since nobody outside knows the seed. Zero in version 1.
    pub(crate) seed: u32,
}

/// A random seed for a new segment, never zero (zero is version 1's
/// unseeded checksum).
pub(crate) fn new_seed() -> u32 {
    use std::hash::BuildHasher;
    // std's hasher keys come from the operating system's random source; a
    // fresh `RandomState` per call gives a fresh key.
    let seed = std::collections::hash_map::RandomState::new().hash_one(0u8) as u32;
    seed.max(1)
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.seed.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.id_floor.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<SegmentHeader, SpoolError> {
        let h = buf
            .get(..SEGMENT_HEADER_LEN)
            .ok_or(SpoolError::Corrupt("segment shorter than its header"))?;
        if &h[0..8] != SEGMENT_MAGIC {
            return Err(SpoolError::Corrupt("not a spool segment (bad magic)"));
        }
        if le32(&h[32..36]) != crc32c::crc32c(&h[0..32]) {
            return Err(SpoolError::Corrupt("segment header checksum mismatch"));
        }
        let seed = match le32(&h[8..12]) {
            1 => 0,
            FORMAT_VERSION => le32(&h[12..16]),
            _ => return Err(SpoolError::Corrupt("unsupported segment format version")),
        };
        Ok(SegmentHeader {
            seq: le64(&h[16..24]),
            id_floor: le64(&h[24..32]),
            seed,
        })
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The checksum of a record header's first 16 bytes in a segment with
/// this seed.
fn header_crc(seed: u32, h: &[u8]) -> u32 {
    crc32c::crc32c_append(seed, &h[0..16])
}

/// Makes a record header, filled in by [`record_header`] before the record's
/// segment was known, right for the segment with this seed.
pub(crate) fn seal_record_header(h: &mut [u8], seed: u32) {
    let crc = header_crc(seed, h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Fills in a record header for a payload whose CRC32C is `payload_crc`,
/// checksummed as in a version 1 segment ([`seal_record_header`] makes it
/// right for a seeded one).
pub(crate) fn record_header(
    kind: u8,
    payload_len: u32,
    payload_crc: u32,
) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(RECORD_MAGIC);
    h[4] = kind;
    h[8..12].copy_from_slice(&payload_len.to_le_bytes());
    h[12..16].copy_from_slice(&payload_crc.to_le_bytes());
    seal_record_header(&mut h, 0);
    h
}

/// A whole record (header and payload) in one buffer, for the small records.
pub(crate) fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&record_header(
        kind,
        payload.len() as u32,
        crc32c::crc32c(payload),
    ));
    out.extend_from_slice(payload);
    out
}

/// A message record without its body: header, envelope and state snapshot.
/// The body follows it on disk unchanged, so it is never copied to be written.
#[derive(Debug)]
pub(crate) struct MessageHead {
    pub(crate) bytes: Vec<u8>,
}

impl MessageHead {
    /// `states` empty means "every recipient pending" (a fresh submit);
    /// compaction passes the current states so the copy carries them along.
    pub(crate) fn encode(
        envelope_bytes: &[u8],
        held: bool,
        states: &[RecipientState],
        body: &[&[u8]],
    ) -> Result<MessageHead, SpoolError> {
        let mut state_bytes = Vec::new();
        put_u8(&mut state_bytes, u8::from(held));
        put_u32(&mut state_bytes, states.len() as u32);
        for s in states {
            s.encode(&mut state_bytes);
        }
        let body_len: u64 = body.iter().map(|b| b.len() as u64).sum();
        let payload_len = 8 + envelope_bytes.len() as u64 + state_bytes.len() as u64 + body_len;
        if payload_len > MAX_PAYLOAD {
            return Err(SpoolError::TooLarge(body_len));
        }
        let mut bytes =
            Vec::with_capacity(RECORD_HEADER_LEN + payload_len as usize - body_len as usize);
        bytes.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
        put_u32(&mut bytes, envelope_bytes.len() as u32);
        bytes.extend_from_slice(envelope_bytes);
        put_u32(&mut bytes, state_bytes.len() as u32);
        bytes.extend_from_slice(&state_bytes);
        let mut crc = crc32c::crc32c(&bytes[RECORD_HEADER_LEN..]);
        for part in body {
            crc = crc32c::crc32c_append(crc, part);
        }
        let header = record_header(KIND_MESSAGE, payload_len as u32, crc);
        bytes[..RECORD_HEADER_LEN].copy_from_slice(&header);
        Ok(MessageHead { bytes })
    }
}

/// A decoded message record.
#[derive(Debug)]
pub(crate) struct MessageRecord {
    pub(crate) entry: Entry,
    pub(crate) held: bool,
    /// Empty: every recipient pending; otherwise one state per recipient.
    pub(crate) states: Vec<RecipientState>,
    /// Where the body starts, counted from the start of the payload.
    pub(crate) body_offset: usize,
}

/// Where the envelope sits inside a message payload (to decode it again later
/// without the state snapshot).
pub(crate) fn message_envelope_bytes(payload: &[u8]) -> Result<&[u8], SpoolError> {
    let mut r = Reader::new(payload);
    let n = r.u32()? as usize;
    r.take(n)
}

pub(crate) fn decode_message(payload: &[u8]) -> Result<MessageRecord, SpoolError> {
    let mut r = Reader::new(payload);
    let env_len = r.u32()? as usize;
    let entry = Entry::decode(r.take(env_len)?)?;
    let state_len = r.u32()? as usize;
    let mut s = Reader::new(r.take(state_len)?);
    let held = match s.u8()? {
        0 => false,
        1 => true,
        _ => return Err(SpoolError::Corrupt("bad hold flag")),
    };
    let n = s.count(1)?;
    if n != 0 && n != entry.envelope.recipients.len() {
        return Err(SpoolError::Corrupt(
            "state snapshot does not match the recipients",
        ));
    }
    let mut states = Vec::with_capacity(n);
    for _ in 0..n {
        states.push(RecipientState::decode(&mut s)?);
    }
    s.finish()?;
    let body_offset = payload.len() - r.remaining();
    Ok(MessageRecord {
        entry,
        held,
        states,
        body_offset,
    })
}

/// One change in a journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JournalOp {
    Recipient(JournalEntry),
    Held(QueueId),
    Released(QueueId),
}

pub(crate) fn encode_journal(ops: &[JournalOp]) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, ops.len() as u32);
    for op in ops {
        match op {
            JournalOp::Recipient(e) => {
                put_u64(&mut p, e.id.0);
                put_u8(&mut p, JOURNAL_RECIPIENT);
                put_u32(&mut p, e.recipient);
                e.state.encode(&mut p);
            }
            JournalOp::Held(id) => {
                put_u64(&mut p, id.0);
                put_u8(&mut p, JOURNAL_HELD);
            }
            JournalOp::Released(id) => {
                put_u64(&mut p, id.0);
                put_u8(&mut p, JOURNAL_RELEASED);
            }
        }
    }
    frame(KIND_JOURNAL, &p)
}

pub(crate) fn decode_journal(payload: &[u8]) -> Result<Vec<JournalOp>, SpoolError> {
    let mut r = Reader::new(payload);
    let n = r.count(9)?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let id = QueueId(r.u64()?);
        ops.push(match r.u8()? {
            JOURNAL_RECIPIENT => JournalOp::Recipient(JournalEntry {
                id,
                recipient: r.u32()?,
                state: RecipientState::decode(&mut r)?,
            }),
            JOURNAL_HELD => JournalOp::Held(id),
            JOURNAL_RELEASED => JournalOp::Released(id),
            _ => return Err(SpoolError::Corrupt("unknown journal entry kind")),
        });
    }
    r.finish()?;
    Ok(ops)
}

/// `Done` and `Deleted` marks: the message leaves the spool.
pub(crate) fn encode_done(ids: &[(QueueId, MessageMark)]) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, ids.len() as u32);
    for (id, mark) in ids {
        put_u64(&mut p, id.0);
        put_u8(
            &mut p,
            if *mark == MessageMark::Deleted {
                DONE_DELETED
            } else {
                DONE_DONE
            },
        );
    }
    frame(KIND_DONE, &p)
}

pub(crate) fn decode_done(payload: &[u8]) -> Result<Vec<QueueId>, SpoolError> {
    let mut r = Reader::new(payload);
    let n = r.count(9)?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(QueueId(r.u64()?));
        if !matches!(r.u8()?, DONE_DONE | DONE_DELETED) {
            return Err(SpoolError::Corrupt("unknown done reason"));
        }
    }
    r.finish()?;
    Ok(ids)
}

/// What the scanner finds at one position of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scanned<'a> {
    /// A record whose header and payload checksums are both right.
    Record {
        offset: usize,
        kind: u8,
        payload: &'a [u8],
        end: usize,
    },
    /// Bytes `offset..resume` hold no valid record. `resume` is `None` when no
    /// valid record follows at all (a torn tail, if this is the last segment).
    Corrupt {
        offset: usize,
        resume: Option<usize>,
    },
}

/// Walks the records of one segment's bytes from `start`.
///
/// A record with a sane header (magic and header CRC right, payload within
/// the buffer) but a wrong payload CRC is skipped by its length, which the
/// header CRC vouches for. Anything else is resynchronised by searching for
/// the next position where a fully valid record starts, unless only zeros
/// follow: the unused room of a prepared segment ends the walk.
#[derive(Debug)]
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The segment's [`SegmentHeader::seed`].
    seed: u32,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(buf: &'a [u8], start: usize, seed: u32) -> Self {
        Scanner {
            buf,
            pos: start,
            seed,
        }
    }
}

enum Probe<'a> {
    Valid {
        kind: u8,
        payload: &'a [u8],
        end: usize,
    },
    BadPayload {
        end: usize,
    },
    Invalid,
}

fn probe(buf: &[u8], at: usize, seed: u32) -> Probe<'_> {
    let Some(h) = buf.get(at..at + RECORD_HEADER_LEN) else {
        return Probe::Invalid;
    };
    if &h[0..4] != RECORD_MAGIC || le32(&h[16..20]) != header_crc(seed, h) {
        return Probe::Invalid;
    }
    let len = le32(&h[8..12]) as usize;
    let start = at + RECORD_HEADER_LEN;
    let Some(payload) = buf.get(start..start + len) else {
        return Probe::Invalid;
    };
    if le32(&h[12..16]) != crc32c::crc32c(payload) {
        return Probe::BadPayload { end: start + len };
    }
    Probe::Valid {
        kind: h[4],
        payload,
        end: start + len,
    }
}

fn resync(buf: &[u8], from: usize, seed: u32) -> Option<usize> {
    let rest = buf.get(from..)?;
    memchr::memmem::find_iter(rest, RECORD_MAGIC)
        .map(|q| from + q)
        .find(|&q| matches!(probe(buf, q, seed), Probe::Valid { .. }))
}

/// Whether everything from `at` on is zeros: room a prepared segment has
/// not used yet (see `prepared`), not damage. Records never start with a
/// zero byte (their magic does not), so a zero where a record should be
/// ends the records when the rest is zeros too.
pub(crate) fn unused_from(buf: &[u8], at: usize) -> bool {
    // Or-ing a block at a time: the compiler vectorises it, and a 64 MiB
    // tail takes milliseconds.
    buf.get(at..).is_some_and(|rest| {
        rest.chunks(4096)
            .all(|c| c.iter().fold(0, |a, &b| a | b) == 0)
    })
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Scanned<'a>;

    fn next(&mut self) -> Option<Scanned<'a>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let offset = self.pos;
        match probe(self.buf, offset, self.seed) {
            Probe::Valid { kind, payload, end } => {
                self.pos = end;
                Some(Scanned::Record {
                    offset,
                    kind,
                    payload,
                    end,
                })
            }
            Probe::BadPayload { end } => {
                self.pos = end;
                Some(Scanned::Corrupt {
                    offset,
                    resume: Some(end),
                })
            }
            Probe::Invalid if unused_from(self.buf, offset) => {
                self.pos = self.buf.len();
                None
            }
            Probe::Invalid => {
                let resume = resync(self.buf, offset + 1, self.seed);
                self.pos = resume.unwrap_or(self.buf.len());
                Some(Scanned::Corrupt { offset, resume })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(buf: &[u8]) -> Vec<Scanned<'_>> {
        Scanner::new(buf, 0, 0).collect()
    }

    #[test]
    fn segment_names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_file_name(42), "seg-000000000042.log");
        assert_eq!(parse_segment_file_name("seg-000000000042.log"), Some(42));
        assert_eq!(parse_segment_file_name("seg-42.log"), None);
        assert_eq!(parse_segment_file_name("seg-000000000042.log.tmp"), None);
    }

    #[test]
    fn segment_header_detects_damage() {
        let header = SegmentHeader {
            seq: 7,
            id_floor: 99,
            seed: 0xdead_beef,
        };
        let h = header.encode();
        assert_eq!(SegmentHeader::decode(&h).unwrap(), header);
        for i in 0..36 {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert!(
                SegmentHeader::decode(&bad).is_err(),
                "flip at byte {i} undetected"
            );
        }
    }

    #[test]
    fn version_1_headers_read_as_seed_zero_and_unknown_versions_are_refused() {
        let mut h = SegmentHeader {
            seq: 3,
            id_floor: 5,
            seed: 0,
        }
        .encode();
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&h).unwrap().seed, 0);
        h[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        assert!(SegmentHeader::decode(&h).is_err());
        // Seeds are drawn fresh: two segments never share one by design.
        let seeds: std::collections::HashSet<u32> = (0..64).map(|_| new_seed()).collect();
        assert!(seeds.len() > 60 && !seeds.contains(&0), "{seeds:?}");
    }

    #[test]
    fn a_record_checks_out_only_in_a_segment_with_its_seed() {
        let mut rec = frame(KIND_DONE, b"cc");
        assert_eq!(Scanner::new(&rec, 0, 0).count(), 1, "version 1: unseeded");
        seal_record_header(&mut rec[..RECORD_HEADER_LEN], 0x1234_5678);
        let seeded: Vec<_> = Scanner::new(&rec, 0, 0x1234_5678).collect();
        assert!(matches!(
            seeded[..],
            [Scanned::Record {
                kind: KIND_DONE,
                ..
            }]
        ));
        for other in [0, 0x1234_5679, 0x8765_4321] {
            assert!(
                matches!(
                    Scanner::new(&rec, 0, other).collect::<Vec<_>>()[..],
                    [Scanned::Corrupt { resume: None, .. }]
                ),
                "valid with seed {other:#x}"
            );
        }
    }

    #[test]
    fn scanner_skips_bad_payload_by_length_and_resyncs_after_bad_header() {
        let a = frame(KIND_JOURNAL, b"aaaa");
        let b = frame(KIND_JOURNAL, b"bbbbbbbb");
        let c = frame(KIND_DONE, b"cc");
        let clean: Vec<u8> = [a.clone(), b.clone(), c.clone()].concat();
        assert_eq!(records(&clean).len(), 3);

        // Payload of b damaged: skipped by its (trusted) length.
        let mut buf = clean.clone();
        buf[a.len() + RECORD_HEADER_LEN + 2] ^= 1;
        let got = records(&buf);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1],
            Scanned::Corrupt {
                offset: a.len(),
                resume: Some(a.len() + b.len())
            }
        );
        assert!(matches!(
            got[2],
            Scanned::Record {
                kind: KIND_DONE,
                payload: b"cc",
                ..
            }
        ));

        // Length field of b damaged: the header CRC catches it, then resync.
        let mut buf = clean.clone();
        buf[a.len() + 9] ^= 0x40;
        let got = records(&buf);
        assert_eq!(
            got[1],
            Scanned::Corrupt {
                offset: a.len(),
                resume: Some(a.len() + b.len())
            }
        );
        assert!(matches!(got[2], Scanned::Record { payload: b"cc", .. }));

        // Torn tail: the last record cut short leaves no valid record after it.
        let cut = &clean[..clean.len() - 1];
        let got = records(cut);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[2],
            Scanned::Corrupt {
                offset: a.len() + b.len(),
                resume: None
            }
        );
    }

    #[test]
    fn zeros_after_the_records_are_room_and_anything_else_is_not() {
        let a = frame(KIND_JOURNAL, b"aaaa");
        let b = frame(KIND_DONE, b"bb");
        let mut buf: Vec<u8> = [a.clone(), b.clone()].concat();
        buf.resize(buf.len() + 100_000, 0);
        let got = records(&buf);
        assert_eq!(got.len(), 2, "the zeros are no record and no damage");
        assert!(unused_from(&buf, a.len() + b.len()));
        assert!(!unused_from(&buf, a.len()));
        assert!(unused_from(&buf, buf.len()), "nothing left is room too");
        assert!(!unused_from(&buf, buf.len() + 1));

        // A torn record before the zeros is damage, reported where it starts.
        let torn_at = a.len() + 7;
        buf[a.len()..torn_at].copy_from_slice(&b[..7]);
        buf[torn_at..a.len() + b.len()].fill(0);
        let got = records(&buf);
        assert_eq!(
            got[1],
            Scanned::Corrupt {
                offset: a.len(),
                resume: None
            }
        );
        assert!(!unused_from(&buf, a.len()));

        // A record after a run of zeros is found again: zeros stop the walk
        // only when nothing but zeros follows.
        let mut gap: Vec<u8> = a.clone();
        gap.resize(a.len() + 64, 0);
        gap.extend_from_slice(&b);
        let got = records(&gap);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1],
            Scanned::Corrupt {
                offset: a.len(),
                resume: Some(a.len() + 64)
            }
        );
    }

    #[test]
    fn journal_and_done_payloads_round_trip() {
        let ops = vec![
            JournalOp::Recipient(JournalEntry {
                id: QueueId(5),
                recipient: 2,
                state: RecipientState::Deferred {
                    until_unix_ms: 9,
                    attempts: 3,
                    last: crate::Reason::local(sluice_smtp::Reply::new(451, None, "later")),
                },
            }),
            JournalOp::Held(QueueId(6)),
            JournalOp::Released(QueueId(6)),
        ];
        let rec = encode_journal(&ops);
        let Some(Scanned::Record { kind, payload, .. }) = Scanner::new(&rec, 0, 0).next() else {
            panic!("journal record not found");
        };
        assert_eq!(kind, KIND_JOURNAL);
        assert_eq!(decode_journal(payload).unwrap(), ops);

        let rec = encode_done(&[
            (QueueId(1), MessageMark::Done),
            (QueueId(2), MessageMark::Deleted),
        ]);
        let Some(Scanned::Record { payload, .. }) = Scanner::new(&rec, 0, 0).next() else {
            panic!("done record not found");
        };
        assert_eq!(decode_done(payload).unwrap(), vec![QueueId(1), QueueId(2)]);
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = decode_message(&bytes);
            let _ = decode_journal(&bytes);
            let _ = decode_done(&bytes);
            let _ = SegmentHeader::decode(&bytes);
            let _ = Scanner::new(&bytes, 0, 0).count();
        }
    }
}
