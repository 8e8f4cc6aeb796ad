//! The writer thread: group commit.
//!
//! Every append in the process goes through one thread. It blocks for the
//! first request, then drains whatever else is already queued (so the batch
//! grows with load and an idle server adds no latency: there is no timer),
//! writes the whole batch with `writev`, calls `fdatasync` once, updates the
//! index and only then runs the completions. A failed batch is cut off again
//! (`ftruncate` to the end of the last durable record) and every submitter in
//! it gets the error; what was acknowledged before is never touched.
//!
//! Why `writev` + `fdatasync` rather than writing through a shared mapping:
//! a write error (ENOSPC, EIO) comes back as an error code at a known point
//! instead of a SIGBUS while copying, the kernel can take the body pages
//! straight from the submitter's buffer, and the durability point is one
//! syscall whose success means exactly "this batch is on disk" (`msync` on a
//! mapping offers weaker and less portable error reporting). Reads still go
//! through the mapping, which sees the same page cache.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::IoSlice;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};
use memmap2::Mmap;

use crate::format::{self, JournalOp, MessageHead, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::index::{Index, Location, Segment};
use crate::spool::Shared;
use crate::stats::StatCounters;
use crate::storage::{SegmentFile, Storage, write_all_vectored};
use crate::{Envelope, JournalEntry, MessageMark, QueueId, RecipientState, SpoolConfig, SpoolError};

/// Requests per batch at most, so that one batch's completions do not delay
/// the next fdatasync for long under extreme load.
const MAX_BATCH_REQUESTS: usize = 4096;

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

pub(crate) enum Request {
    Submit {
        envelope: Envelope,
        body: Vec<Vec<u8>>,
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
fn weight(req: &Request) -> usize {
    match req {
        Request::Submit { body, .. } => 256 + body.iter().map(Vec::len).sum::<usize>(),
        Request::Journal { entries, .. } => 64 * entries.len(),
        _ => 64,
    }
}

/// A slice of bytes to write: owned (from a submitter) or borrowed from a
/// mapping (compaction copies bodies straight from the old segment's pages).
enum Part {
    Owned(Vec<u8>),
    Mapped(Arc<Mmap>, Range<usize>),
}

impl Part {
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Owned(v) => v,
            Part::Mapped(m, r) => &m[r.clone()],
        }
    }
}

/// What an appended record does to the index once it is durable.
enum Effect {
    Message {
        id: QueueId,
        arrival_unix_ms: u64,
        recipients: usize,
        envelope_len: u64,
        /// From the start of the record.
        body_offset: u64,
        states: Vec<RecipientState>,
        held: bool,
        /// A new message (as opposed to a compaction copy).
        submitted: bool,
    },
    Journal(Vec<JournalOp>),
    Done(Vec<QueueId>),
}

enum Reply {
    Id(Pending<QueueId>, QueueId),
    Unit(Pending<()>),
    None,
}

impl Reply {
    fn complete(self, result: Result<(), SpoolError>) {
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
    parts: Vec<Part>,
    len: u64,
    effect: Effect,
    reply: Reply,
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    storage: Arc<dyn Storage>,
    pub(crate) cfg: SpoolConfig,
    dir: PathBuf,
    dir_file: File,
    /// The newest segment, where appends go.
    pub(crate) head_seq: u64,
    next_seq: u64,
    /// `None` after a failure that left the head's tail in doubt: the next
    /// append starts a fresh segment.
    head: Option<Box<dyn SegmentFile>>,
    /// End of the last durable record in the head.
    head_len: u64,
    maintenance_paused: bool,
}

impl Writer {
    /// Takes over the recovered index's newest segment as head, or creates
    /// the first segment of an empty spool.
    pub(crate) fn start(
        shared: Arc<Shared>,
        storage: Arc<dyn Storage>,
        cfg: SpoolConfig,
        max_seq: u64,
    ) -> Result<Writer, SpoolError> {
        let dir = shared.dir.clone();
        let dir_file = File::open(&dir)?;
        let head = shared.lock().segments.iter().next_back().map(|(s, seg)| (*s, seg.len));
        let mut w = Writer {
            shared,
            storage,
            cfg,
            dir,
            dir_file,
            head_seq: 0,
            next_seq: max_seq + 1,
            head: None,
            head_len: 0,
            maintenance_paused: false,
        };
        match head {
            Some((seq, len)) => {
                let path = w.dir.join(format::segment_file_name(seq));
                w.head = Some(w.storage.open_append(&path, len)?);
                w.head_seq = seq;
                w.head_len = len;
            }
            None => w.rotate()?,
        }
        Ok(w)
    }

    fn stats(&self) -> &StatCounters {
        &self.shared.stats
    }

    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        let mut running = true;
        while running {
            let first = if !self.maintenance_paused && self.next_step().is_some() {
                // Maintenance only while nobody is waiting.
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => {
                        if let Err(e) = self.maintain_step() {
                            tracing::warn!(error = %e, "spool maintenance failed; retrying after the next batch");
                            self.maintenance_paused = true;
                        }
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            let mut batch = Batch::default();
            running &= batch.push(first);
            while running && batch.bytes < self.cfg.max_batch_bytes && batch.requests.len() < MAX_BATCH_REQUESTS {
                match rx.try_recv() {
                    Ok(r) => running &= batch.push(r),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
        // Requests queued before the shutdown are flushed: their submitters
        // are owed a real answer. Anything sent later is dropped with the
        // channel, and `Pending` answers it with `ShutDown`.
        loop {
            let mut batch = Batch::default();
            while batch.requests.len() < MAX_BATCH_REQUESTS
                && let Ok(r) = rx.try_recv()
            {
                batch.push(r);
            }
            if batch.requests.is_empty() && batch.maintain.is_empty() {
                break;
            }
            self.run_batch(batch);
        }
    }

    fn run_batch(&mut self, batch: Batch) {
        if !batch.requests.is_empty() {
            self.process(batch.requests);
            self.maintenance_paused = false;
        }
        for done in batch.maintain {
            let result = self.maintain();
            done.complete(result);
        }
    }

    /// Validates and encodes the batch's requests, then appends them.
    pub(crate) fn process(&mut self, requests: Vec<Request>) {
        self.stats().max_batch.fetch_max(requests.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let items: Vec<Item> = {
            let index = self.shared.lock();
            let mut seen = HashSet::new();
            requests.into_iter().filter_map(|r| plan(r, &index, &mut seen)).collect()
        };
        if let Err(e) = self.write_items(items) {
            tracing::warn!(error = %e, "spool batch failed");
        }
    }

    /// Appends records, rotating segments as they fill. On error every item
    /// not yet durable gets the error.
    pub(crate) fn write_items(&mut self, items: Vec<Item>) -> Result<(), SpoolError> {
        let mut items = VecDeque::from(items);
        while let Some(first) = items.front() {
            let seg_size = self.cfg.segment_size;
            let has_records = self.head_len > SEGMENT_HEADER_LEN as u64;
            if self.head.is_none() || (has_records && self.head_len + first.len > seg_size) {
                if let Err(e) = self.rotate() {
                    fail_all(items, &e);
                    return Err(e);
                }
            }
            // Everything that fits goes into one writev and one fdatasync; a
            // record larger than a whole segment gets a segment of its own.
            let mut end = self.head_len;
            let mut n = 0;
            for it in &items {
                if n > 0 && end + it.len > seg_size {
                    break;
                }
                end += it.len;
                n += 1;
            }
            let group: Vec<Item> = items.drain(..n).collect();
            let start = self.head_len;
            if let Err(e) = self.append(&group) {
                fail_all(group, &e);
                fail_all(items, &e);
                return Err(e);
            }
            self.apply(start, group);
        }
        Ok(())
    }

    /// One `writev` (more only if the kernel writes short) and one
    /// `fdatasync`; on failure, rewinds the head to its last durable byte.
    fn append(&mut self, group: &[Item]) -> Result<(), SpoolError> {
        let Some(head) = self.head.as_deref_mut() else {
            return Err(SpoolError::Io(Arc::new(std::io::Error::other("no open segment"))));
        };
        let mut slices: Vec<IoSlice<'_>> = group
            .iter()
            .flat_map(|it| it.parts.iter().map(|p| IoSlice::new(p.bytes())))
            .collect();
        let len: u64 = group.iter().map(|it| it.len).sum();
        let stats = &self.shared.stats;
        let outcome = match write_all_vectored(head, &mut slices) {
            Ok(calls) => {
                StatCounters::add(&stats.writes, calls);
                StatCounters::add(&stats.fdatasyncs, 1);
                head.sync_data().map_err(|e| (e, true))
            }
            Err(e) => Err((e, false)),
        };
        match outcome {
            Ok(()) => {
                self.head_len += len;
                StatCounters::add(&stats.batches, 1);
                StatCounters::add(&stats.records, group.len() as u64);
                StatCounters::add(&stats.bytes, len);
                Ok(())
            }
            Err((e, sync_failed)) => {
                StatCounters::add(&stats.write_errors, 1);
                let rewound = head.rewind_to(self.head_len);
                // After a failed fdatasync the kernel may already have dropped
                // the dirty pages: nothing about this file's tail can be
                // trusted, so the next batch starts a new segment.
                if sync_failed || rewound.is_err() {
                    tracing::warn!(segment = self.head_seq, error = %e, "sealing segment after a failed write");
                    self.head = None;
                }
                Err(SpoolError::from_io(e))
            }
        }
    }

    /// Makes a durable group visible in the index, then answers its submitters.
    fn apply(&mut self, start: u64, group: Vec<Item>) {
        let seq = self.head_seq;
        let mut replies = Vec::with_capacity(group.len());
        {
            let mut index = self.shared.lock();
            let mut offset = start;
            for item in group {
                match item.effect {
                    Effect::Message {
                        id,
                        arrival_unix_ms,
                        recipients,
                        envelope_len,
                        body_offset,
                        states,
                        held,
                        submitted,
                    } => {
                        let loc = Location {
                            seg: seq,
                            offset,
                            record_len: item.len,
                            envelope_start: offset + RECORD_HEADER_LEN as u64 + 4,
                            envelope_len,
                            body_start: offset + body_offset,
                            body_len: item.len - body_offset,
                        };
                        index.insert(id, loc, arrival_unix_ms, recipients, states, held);
                        self.shared.ids.observe(id.0);
                        let counter = if submitted {
                            &self.shared.stats.messages
                        } else {
                            &self.shared.stats.messages_compacted
                        };
                        StatCounters::add(counter, 1);
                    }
                    Effect::Journal(ops) => {
                        index.apply_journal(seq, &ops);
                    }
                    Effect::Done(ids) => {
                        for id in ids {
                            index.remove(id);
                        }
                    }
                }
                offset += item.len;
                replies.push(item.reply);
            }
            if let Some(seg) = index.segments.get_mut(&seq) {
                seg.len = offset;
            }
        }
        for r in replies {
            r.complete(Ok(()));
        }
    }

    /// Starts a new head segment. The header goes to a temporary name first
    /// and is renamed into place after it is durable, so a segment file with
    /// a valid name always has a valid header.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        let seq = self.next_seq;
        let name = format::segment_file_name(seq);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let header = SegmentHeader {
            seq,
            id_floor: self.shared.ids.high_water(),
        }
        .encode();
        StatCounters::add(&self.shared.stats.fdatasyncs, 1);
        let created = (|| {
            let mut f = self.storage.create(&tmp)?;
            write_all_vectored(f.as_mut(), &mut [IoSlice::new(&header)])?;
            f.sync_data()?;
            fs::rename(&tmp, &path)?;
            self.dir_file.sync_all()?;
            Ok::<_, std::io::Error>(f)
        })();
        let f = match created {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(SpoolError::from_io(e));
            }
        };
        let read = File::open(&path)?;
        {
            let mut index = self.shared.lock();
            if let Some(old) = index.segments.get_mut(&self.head_seq) {
                old.map_hint = old.len;
            }
            let capacity = self.cfg.segment_size.max(SEGMENT_HEADER_LEN as u64);
            index
                .segments
                .insert(seq, Segment::new(read, SEGMENT_HEADER_LEN as u64, capacity));
        }
        self.head = Some(f);
        self.head_seq = seq;
        self.next_seq = seq + 1;
        self.head_len = SEGMENT_HEADER_LEN as u64;
        StatCounters::add(&self.shared.stats.segments_created, 1);
        Ok(())
    }

    pub(crate) fn dir_sync(&self) -> std::io::Result<()> {
        self.dir_file.sync_all()
    }

    pub(crate) fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format::segment_file_name(seq))
    }
}

#[derive(Default)]
struct Batch {
    requests: Vec<Request>,
    maintain: Vec<Pending<()>>,
    bytes: usize,
}

impl Batch {
    /// Returns false for the shutdown request.
    fn push(&mut self, r: Request) -> bool {
        match r {
            Request::Shutdown => return false,
            Request::Maintain { done } => self.maintain.push(done),
            r => {
                self.bytes += weight(&r);
                self.requests.push(r);
            }
        }
        true
    }
}

fn fail_all(items: impl IntoIterator<Item = Item>, e: &SpoolError) {
    for it in items {
        it.reply.complete(Err(e.clone()));
    }
}

fn journal_item(ops: Vec<JournalOp>, reply: Reply) -> Item {
    let bytes = format::encode_journal(&ops);
    Item {
        len: bytes.len() as u64,
        parts: vec![Part::Owned(bytes)],
        effect: Effect::Journal(ops),
        reply,
    }
}

/// Turns a request into a record, or answers it at once when there is
/// nothing to write (or it is invalid).
fn plan(req: Request, index: &Index, seen: &mut HashSet<QueueId>) -> Option<Item> {
    match req {
        Request::Submit { envelope, body, done } => {
            let id = envelope.id;
            if index.messages.contains_key(&id) || !seen.insert(id) {
                done.complete(Err(SpoolError::DuplicateId(id)));
                return None;
            }
            let mut env_bytes = Vec::with_capacity(128);
            envelope.encode(&mut env_bytes);
            let slices: Vec<&[u8]> = body.iter().map(Vec::as_slice).collect();
            let head = match MessageHead::encode(&env_bytes, false, &[], &slices) {
                Ok(h) => h,
                Err(e) => {
                    done.complete(Err(e));
                    return None;
                }
            };
            let body_offset = head.bytes.len() as u64;
            let body_len: u64 = body.iter().map(|b| b.len() as u64).sum();
            let mut parts = Vec::with_capacity(1 + body.len());
            parts.push(Part::Owned(head.bytes));
            parts.extend(body.into_iter().filter(|b| !b.is_empty()).map(Part::Owned));
            Some(Item {
                parts,
                len: body_offset + body_len,
                effect: Effect::Message {
                    id,
                    arrival_unix_ms: envelope.arrival_unix_ms,
                    recipients: envelope.recipients.len(),
                    envelope_len: env_bytes.len() as u64,
                    body_offset,
                    states: Vec::new(),
                    held: false,
                    submitted: true,
                },
                reply: Reply::Id(done, id),
            })
        }
        Request::Journal { entries, done } => {
            let mut ops = Vec::with_capacity(entries.len());
            for e in entries {
                // A message that is gone (finished, deleted) takes no more
                // journal entries; late reports from delivery are no error.
                let Some(m) = index.messages.get(&e.id) else { continue };
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
            Some(journal_item(ops, Reply::Unit(done)))
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
                    })
                }
                MessageMark::Held => Some(journal_item(vec![JournalOp::Held(id)], Reply::Unit(done))),
                MessageMark::Released => Some(journal_item(vec![JournalOp::Released(id)], Reply::Unit(done))),
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
        .get(loc.envelope_start as usize..(loc.envelope_start + loc.envelope_len) as usize)
        .ok_or(SpoolError::Corrupt("envelope outside its segment"))?;
    let body_range = loc.body_start as usize..(loc.body_start + loc.body_len) as usize;
    let body = map
        .get(body_range.clone())
        .ok_or(SpoolError::Corrupt("body outside its segment"))?;
    let head = MessageHead::encode(env, held, states, &[body])?;
    let body_offset = head.bytes.len() as u64;
    Ok(Item {
        len: body_offset + loc.body_len,
        effect: Effect::Message {
            id,
            arrival_unix_ms,
            recipients: states.len(),
            envelope_len: loc.envelope_len,
            body_offset,
            states: states.to_vec(),
            held,
            submitted: false,
        },
        parts: vec![Part::Owned(head.bytes), Part::Mapped(map, body_range)],
        reply: Reply::None,
    })
}
