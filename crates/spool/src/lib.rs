//! Sluice's durable on-disk queue: the boundary between receiving and
//! delivering.
//!
//! A `250` after DATA is a promise: the SMTP front end answers only when the
//! spool's completion says the message is on disk (`fdatasync` returned), and
//! `kill -9` or a power cut at any moment loses nothing acknowledged. The
//! spool stores the typed SMTP envelope ([`sluice_smtp::Envelope`], inside an
//! [`Entry`]) field by field, and typed delivery reasons ([`Reason`]); it
//! knows the protocol's data types but nothing about SMTP sessions. It tells
//! whoever listens ([`SpoolHandle::on_arrival`]) of every new message as soon
//! as it is durable.
//!
//! # How it works
//!
//! - **Segments**: append-only files `seg-NNNNNNNNNNNN.log` (12 decimal
//!   digits, increasing) in the spool directory, rotated at
//!   [`SpoolConfig::segment_size`]. Every record carries CRC32C checksums.
//! - **Group commit**: one writer thread takes the appends of every
//!   connection from a channel, writes whatever is queued with one `writev`
//!   and makes it durable with one `fdatasync`, then runs each submitter's
//!   completion. See `writer.rs` for why writes are `writev` rather than
//!   stores into a writable mapping.
//! - **Reads** go through read-only memory maps of the segments (`memmap2`);
//!   [`StoredMessage::body`] borrows the mapped bytes.
//! - **State**: a message's state is its message record plus the replay of
//!   the journal records after it. Once every recipient is final (delivered
//!   or failed), or the message is marked done or deleted, it leaves the
//!   in-memory index.
//! - **Recovery** ([`Spool::open`]) replays all segments in order, cuts a
//!   torn tail off the last one, skips damaged records elsewhere with a
//!   warning, and rebuilds the index.
//! - **Prepared segments**: after the head's first mebibyte, the next
//!   segment's file is written full of zeros in the background, so that the
//!   `fdatasync`s into it write data only (no block allocation, no inode
//!   write). See `prepared.rs`.
//! - **Space**: segments are deleted oldest first, once nothing in the
//!   oldest is live; compaction copies the few live messages of a mostly
//!   dead oldest segment (with their current states) to the head first. See
//!   `compaction.rs` for the policy and why deletion is front-only.
//! - `spool.lock` in the directory is held (`flock`) by the one process that
//!   has the spool open for writing; [`Spool::open_read_only`] takes no lock.
//!
//! # On-disk format (version 2)
//!
//! All integers are little-endian. CRC32C is the Castagnoli CRC (as in
//! iSCSI/ext4), computed with the `crc32c` crate.
//!
//! ## Segment file
//!
//! A 40-byte header, then records back to back (no padding, no alignment),
//! then, in a segment that began as a prepared file, zeros to its end
//! (unused room; a record never starts with a zero byte):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8 | magic `SLUICESG` (ASCII) |
//! | 8  | 4 | format version, `2` (`1` is still read) |
//! | 12 | 4 | seed: random, never zero (version 1: zero) |
//! | 16 | 8 | segment sequence number (equals the number in the file name) |
//! | 24 | 8 | id floor: the largest queue id issued when the segment was created |
//! | 32 | 4 | CRC32C of bytes 0..32 |
//! | 36 | 4 | reserved, zero |
//!
//! A new segment is written as `seg-N.log.tmp`, fdatasync'd, renamed to
//! `seg-N.log`, and the directory fsync'd, so a segment name always has a
//! valid header. A file whose header is damaged is renamed `*.damaged` at
//! open and otherwise ignored. A dead segment is renamed `seg-N.log.dead`
//! (the directory fsync'd) before it is shrunk and unlinked in the
//! background; an open removes `*.log.dead` leftovers without reading them.
//!
//! ## Record
//!
//! A 20-byte header, then `length` bytes of payload:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4 | magic `SLRC` (ASCII) |
//! | 4  | 1 | type: 1 message, 2 journal, 3 done |
//! | 5  | 1 | flags, zero |
//! | 6  | 2 | reserved, zero |
//! | 8  | 4 | payload length |
//! | 12 | 4 | CRC32C of the payload |
//! | 16 | 4 | CRC32C of header bytes 0..16, started from the segment's seed |
//!
//! The seed is why bytes that look like a record but were not written as
//! one of this segment's records do not pass: a client can put a
//! well-formed record inside a message body, and if a crash tears that
//! message's write, the scanner searches the torn bytes for the next valid
//! record; it would find the client's, and recovery would queue a message
//! nobody accepted, were the checksum one anyone can compute. (CRC32C
//! "started from" a value `s`: the CRC register begins at `s` instead of
//! zero, `crc32c_append(s, bytes)`; with `s` zero it is the plain CRC32C of
//! version 1.)
//!
//! The header's own CRC makes the length trustworthy on its own: a record
//! whose header checks out but whose payload does not is skipped by its
//! length; after a damaged header the scanner searches forward for the next
//! position holding a record with both checksums right.
//!
//! Payload fields below use `str` = u32 byte length + UTF-8 bytes.
//!
//! ## Type 1: message
//!
//! | field | encoding |
//! |-------|----------|
//! | entry length | u32 |
//! | entry | see below |
//! | state length | u32 |
//! | state snapshot | u8 held (0/1), u32 count, `count` × recipient state |
//! | body | the rest of the payload, exactly as submitted |
//!
//! `count` is 0 for a fresh submit (every recipient pending) and equal to the
//! number of recipients in a compaction copy. A message record whose queue id
//! is already live replaces the earlier one (latest wins, with its snapshot).
//!
//! Entry (version 2, written since the typed envelope): u8 version (`2`), u64
//! queue id, u64 arrival (ms since the Unix epoch), address (u8 family 4 or
//! 6 + 4 or 16 bytes), str HELO, reverse-path (u8 0 null, or 1 + path), MAIL
//! parameters, u32 recipient count, then per recipient: forward-path (u8 0
//! `<Postmaster>`, or 1 + path) and RCPT parameters.
//!
//! - path: u32 source-route length + that many domains, str local part
//!   (unquoted), domain;
//! - domain: u8 tag, then `0` str name, `1` 4 IPv4 bytes, `2` 16 IPv6
//!   bytes, `3` str tag + str content (a general address literal);
//! - MAIL parameters: SIZE (u8 0, or 1 + u64), u8 BODY (0 none, 1 7BIT,
//!   2 8BITMIME, 3 BINARYMIME), u8 flags (bit 0 SMTPUTF8, bit 1 REQUIRETLS), u8 RET (0 none, 1 FULL, 2 HDRS),
//!   ENVID and AUTH (each u8 0, or 1 + str, decoded from xtext);
//! - RCPT parameters: u8 NOTIFY (0 none, 1 NEVER, else bit 1 set and bits
//!   2, 3, 4 for SUCCESS, FAILURE, DELAY), ORCPT (u8 0, or 1 + str type +
//!   str address).
//!
//! Version 1 entries (u8 version `1`, u64 id, u64 arrival, address, u8 body
//! type, u8 SMTPUTF8, str reverse-path, str MAIL parameters as text, str
//! HELO, u32 count, per recipient str forward-path and str RCPT parameters
//! as text) are still read, and parsed with the SMTP grammar.
//!
//! Recipient state: u8 tag, then: `0` pending; `1` delivered; `4` failed:
//! reason; `5` deferred: u64 retry-not-before (ms), u32 attempts, reason.
//! Tags `2` (failed: str reply) and `3` (deferred: u64, u32, str reply) are
//! the text forms of version 1, read and never written.
//!
//! Reason: u16 reply code, enhanced code (u8 0, or 1 + u8 class, u16
//! subject, u16 detail), u32 line count + that many str lines, remote MTA (u8
//! 0, or 1 + str name + address (u8 0, or 1 + address + u16 port)), u8
//! stage (0 unknown; 1 connect, 2 greeting, 3 EHLO, 4 MAIL, 5 RCPT, 6 DATA,
//! 7 end of data, 8 AUTH).
//!
//! ## Type 2: journal
//!
//! u32 count, then `count` entries of u64 queue id, u8 kind, and for kind `1`
//! (recipient state) u32 recipient index + recipient state; kind `2` held and
//! kind `3` released have no more fields. Entries for queue ids not live at
//! that point of the replay are ignored.
//!
//! ## Type 3: done
//!
//! u32 count, then `count` × (u64 queue id, u8 reason: 0 done, 1 deleted).
//! The messages leave the spool.
//!
//! # Usage
//!
//! ```no_run
//! use sluice_smtp::{Envelope, ForwardPath, MailParams, Path, Recipient, ReversePath};
//! use sluice_spool::{Entry, Spool, SpoolConfig, Submission};
//! # fn main() -> Result<(), sluice_spool::SpoolError> {
//! let (spool, _report) = Spool::open("/var/spool/sluice", SpoolConfig::default())?;
//! let handle = spool.handle();
//! let path = |s: &str| Path::parse(s.as_bytes()).unwrap();
//! let mut envelope = Envelope::new(ReversePath::Path(path("<alice@example.org>")), MailParams::default());
//! envelope.recipients.push(Recipient::new(ForwardPath::Path(path("<bob@example.net>"))));
//! let entry = Entry {
//!     id: handle.new_id(),
//!     arrival_unix_ms: 0,
//!     client_ip: "192.0.2.1".parse().unwrap(),
//!     helo: "mail.example.org".into(),
//!     envelope: envelope.into(),
//! };
//! let body = b"Subject: hi\r\n\r\nhello\r\n".to_vec();
//! handle.submit(Submission::new(entry, body), Box::new(|result| {
//!     // On the writer thread: hand the outcome to the connection's event loop.
//!     let _ = result;
//! }));
//! spool.shutdown();
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod codec;
mod compaction;
mod entry;
mod error;
mod format;
mod id;
mod index;
mod legacy;
mod mmap;
mod prepared;
mod queue_map;
mod reaper;
mod recovery;
mod request;
mod scan;
mod spool;
mod state;
mod stats;
mod storage;
mod writer;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod test_support;

pub use entry::Entry;
pub use error::SpoolError;
pub use id::{ParseQueueIdError, QUEUE_ID_LEN, QueueId, QueueIdText};
pub use queue_map::{QueueMap, QueueSlot};
pub use recovery::RecoveryReport;
pub use scan::{MessageSummary, RecipientStatus, SCAN_BATCH, ScanOrder};
pub use spool::{
    Arrival, Arrivals, BodyPart, Completion, JournalCompletion, Preparation, Spool, SpoolConfig,
    SpoolHandle, StoredMessage, Submission,
};
pub use state::{JournalEntry, MessageMark, Reason, RecipientState, RemoteMta};
pub use stats::SpoolStats;
