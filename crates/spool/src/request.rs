//! Requests from handles, and the records they become.
//!
//! `plan` validates a request against the index and encodes it into an
//! [`Item`] (the bytes to append plus what they do to the index once
//! durable), or answers it at once when there is nothing to write.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use memmap2::Mmap;

use crate::format::{self, JournalOp, MessageHead};
use crate::index::{Index, Location};
use crate::spool::{BodyPart, Submission};
use crate::{Entry, JournalEntry, MessageMark, QueueId, RecipientState, SpoolError};

pub(crate) type Callback<T> = Box<dyn FnOnce(Result<T, SpoolError>) + Send>;

/// A completion that runs exactly once: explicitly, or with
/// [`SpoolError::ShutDown`] when dropped unanswered (a request still in the
/// channel when the writer is gone, or a writer that panicked).
pub(crate) struct Pending<T> {
    f: Option<Callback<T>>,
}

impl<T> Pending<T> {
    pub(crate) fn new(f: Callback<T>) -> Self {
        Pending { f: Some(f) }
    }

    pub(crate) fn complete(mut self, result: Result<T, SpoolError>) {
        if let Some(f) = self.f.take() {
            f(result);
        }
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            f(Err(SpoolError::ShutDown));
        }
    }
}

// Submit is the large variant, and the common one: boxing it would cost an
// allocation per message to save a few hundred bytes per channel slot.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Request {
    Submit {
        submission: Submission,
        done: Pending<QueueId>,
    },
    Journal {
        entries: Vec<JournalEntry>,
        done: Pending<()>,
    },
    Mark {
        id: QueueId,
        mark: MessageMark,
        done: Pending<()>,
    },
    Maintain {
        done: Pending<()>,
    },
    Shutdown,
}

/// Bytes a request adds to the batch (to bound one batch's size).
pub(crate) fn weight(req: &Request) -> usize {
    match req {
        Request::Submit { submission, .. } => {
            256 + submission
                .body
                .iter()
                .map(|p| p.bytes().len())
                .sum::<usize>()
        }
        Request::Journal { entries, .. } => 64 * entries.len(),
        _ => 64,
    }
}

/// A slice of bytes to write: a submitter's, or borrowed from a mapping
/// (compaction copies bodies straight from the old segment's pages).
pub(crate) enum Part {
    Owned(Vec<u8>),
    Body(BodyPart),
    Mapped(Arc<Mmap>, Range<usize>),
}

impl Part {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Part::Owned(v) => v,
            Part::Body(b) => b.bytes(),
            Part::Mapped(m, r) => &m[r.clone()],
        }
    }
}

/// What an appended record does to the index once it is durable.
pub(crate) enum Effect {
    Message {
        id: QueueId,
        arrival_unix_ms: u64,
        recipients: usize,
        envelope_len: u32,
        /// From the start of the record.
        body_offset: u32,
        states: Vec<RecipientState>,
        held: bool,
        /// A new message's envelope, to announce it with (a compaction
        /// copy has none: it is not news).
        new: Option<Box<Entry>>,
    },
    Journal(Vec<JournalOp>),
    Done(Vec<QueueId>),
}

pub(crate) enum Reply {
    Id(Pending<QueueId>, QueueId),
    Unit(Pending<()>),
    None,
}

impl Reply {
    pub(crate) fn complete(self, result: Result<(), SpoolError>) {
        match (self, result) {
            (Reply::Id(p, id), Ok(())) => p.complete(Ok(id)),
            (Reply::Id(p, _), Err(e)) => p.complete(Err(e)),
            (Reply::Unit(p), r) => p.complete(r),
            (Reply::None, _) => {}
        }
    }
}

/// One record to append.
pub(crate) struct Item {
    pub(crate) parts: Vec<Part>,
    pub(crate) len: u64,
    pub(crate) effect: Effect,
    pub(crate) reply: Reply,
    pub(crate) durability: Durability,
}

impl Item {
    /// Makes the record's header checksum right for the segment it goes
    /// into. Every item `plan` makes starts with the writer's own bytes,
    /// record header first; an item that did not would be unreadable after
    /// a restart, so it stops the writer here instead.
    pub(crate) fn seal(&mut self, seed: u32) {
        match self.parts.first_mut() {
            Some(Part::Owned(bytes)) if bytes.len() >= format::RECORD_HEADER_LEN => {
                format::seal_record_header(&mut bytes[..format::RECORD_HEADER_LEN], seed);
            }
            _ => panic!("a spool record that does not start with its header"),
        }
    }
}

/// When a record must be on disk before its requester hears back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `fdatasync` first: an accepted message (its `250` waits for this),
    /// a compaction copy, an operator's command.
    Now,
    /// Written at once and made durable by the next `fdatasync`, which the
    /// next batch that needs one brings, or the writer at most
    /// [`LAZY_SYNC`](crate::writer::LAZY_SYNC) later: a delivery outcome and
    /// the end of a finished message. Lost to a power failure (a `kill -9`
    /// leaves the page cache), it means that delivery is repeated: a
    /// duplicate, which SMTP allows, never a loss. Postfix does not sync
    /// the removal of a delivered message either.
    Soon,
}

pub(crate) fn fail_all(items: impl IntoIterator<Item = Item>, e: &SpoolError) {
    for it in items {
        it.reply.complete(Err(e.clone()));
    }
}

pub(crate) fn journal_item(ops: Vec<JournalOp>, reply: Reply, durability: Durability) -> Item {
    let bytes = format::encode_journal(&ops);
    Item {
        len: bytes.len() as u64,
        parts: vec![Part::Owned(bytes)],
        effect: Effect::Journal(ops),
        reply,
        durability,
    }
}

/// Turns a request into a record, or answers it at once when there is
/// nothing to write (or it is invalid).
pub(crate) fn plan(req: Request, index: &Index, seen: &mut HashSet<QueueId>) -> Option<Item> {
    match req {
        Request::Submit { submission, done } => {
            let Submission { entry, body, held } = submission;
            let id = entry.id;
            if index.messages.contains_key(&id) || !seen.insert(id) {
                done.complete(Err(SpoolError::DuplicateId(id)));
                return None;
            }
            let mut entry_bytes = Vec::with_capacity(128);
            entry.encode(&mut entry_bytes);
            let slices: Vec<&[u8]> = body.iter().map(BodyPart::bytes).collect();
            // `held` goes in with the message, in the same record: a
            // quarantined message is never durable without its hold.
            let head = match MessageHead::encode(&entry_bytes, held, &[], &slices) {
                Ok(h) => h,
                Err(e) => {
                    done.complete(Err(e));
                    return None;
                }
            };
            // The head is within MAX_PAYLOAD, which `encode` checked.
            let body_offset = head.bytes.len() as u32;
            let body_len: u64 = slices.iter().map(|b| b.len() as u64).sum();
            let mut parts = Vec::with_capacity(1 + body.len());
            parts.push(Part::Owned(head.bytes));
            parts.extend(
                body.into_iter()
                    .filter(|b| !b.bytes().is_empty())
                    .map(Part::Body),
            );
            Some(Item {
                parts,
                len: u64::from(body_offset) + body_len,
                effect: Effect::Message {
                    id,
                    arrival_unix_ms: entry.arrival_unix_ms,
                    recipients: entry.envelope.recipients.len(),
                    // Within MAX_PAYLOAD, which MessageHead::encode checked.
                    envelope_len: entry_bytes.len() as u32,
                    body_offset,
                    states: Vec::new(),
                    held,
                    new: Some(Box::new(entry)),
                },
                reply: Reply::Id(done, id),
                durability: Durability::Now,
            })
        }
        Request::Journal { entries, done } => {
            let mut ops = Vec::with_capacity(entries.len());
            for e in entries {
                // A message that is gone (finished, deleted) takes no more
                // journal entries; late reports from delivery are no error.
                let Some(m) = index.messages.get(&e.id) else {
                    continue;
                };
                if e.recipient as usize >= m.states.len() {
                    done.complete(Err(SpoolError::NoSuchRecipient {
                        id: e.id,
                        recipient: e.recipient,
                    }));
                    return None;
                }
                ops.push(JournalOp::Recipient(e));
            }
            if ops.is_empty() {
                done.complete(Ok(()));
                return None;
            }
            Some(journal_item(ops, Reply::Unit(done), Durability::Soon))
        }
        Request::Mark { id, mark, done } => {
            if !index.messages.contains_key(&id) {
                done.complete(Ok(()));
                return None;
            }
            match mark {
                MessageMark::Done | MessageMark::Deleted => {
                    let bytes = format::encode_done(&[(id, mark)]);
                    Some(Item {
                        len: bytes.len() as u64,
                        parts: vec![Part::Owned(bytes)],
                        effect: Effect::Done(vec![id]),
                        reply: Reply::Unit(done),
                        // A finished message's end may wait; an operator's
                        // deletion is done when the command says so.
                        durability: if mark == MessageMark::Done {
                            Durability::Soon
                        } else {
                            Durability::Now
                        },
                    })
                }
                MessageMark::Held => Some(journal_item(
                    vec![JournalOp::Held(id)],
                    Reply::Unit(done),
                    Durability::Now,
                )),
                MessageMark::Released => Some(journal_item(
                    vec![JournalOp::Released(id)],
                    Reply::Unit(done),
                    Durability::Now,
                )),
            }
        }
        Request::Maintain { done } => {
            done.complete(Ok(()));
            None
        }
        Request::Shutdown => None,
    }
}

/// Builds a compaction copy of a live message: its envelope and body from
/// the old segment's mapping, its current recipient states as the snapshot.
pub(crate) fn copy_item(
    id: QueueId,
    arrival_unix_ms: u64,
    states: &[RecipientState],
    held: bool,
    loc: &Location,
    map: Arc<Mmap>,
) -> Result<Item, SpoolError> {
    let env = map
        .get(loc.envelope_start() as usize..loc.envelope_end() as usize)
        .ok_or(SpoolError::Corrupt("envelope outside its segment"))?;
    let body_range = loc.body_start() as usize..loc.end() as usize;
    let body = map
        .get(body_range.clone())
        .ok_or(SpoolError::Corrupt("body outside its segment"))?;
    let head = MessageHead::encode(env, held, states, &[body])?;
    // The head is within MAX_PAYLOAD, which `encode` checked.
    let body_offset = head.bytes.len() as u32;
    Ok(Item {
        len: u64::from(body_offset) + loc.body_len(),
        effect: Effect::Message {
            id,
            arrival_unix_ms,
            recipients: states.len(),
            envelope_len: loc.envelope_len,
            body_offset,
            states: states.to_vec(),
            held,
            new: None,
        },
        parts: vec![Part::Owned(head.bytes), Part::Mapped(map, body_range)],
        reply: Reply::None,
        durability: Durability::Now,
    })
}
