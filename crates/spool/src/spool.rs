//! The public face: [`Spool`] (open, read, shut down) and [`SpoolHandle`]
//! (what the front end's event loops and the delivery threads hold).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use memmap2::Mmap;
use sluice_sys::{Content, Spill};

use crate::id::IdGenerator;
use crate::index::{Index, map_of};
use crate::recovery::{self, RecoveryReport};
use crate::request::{Pending, Request};
use crate::stats::{SpoolStats, StatCounters};
use crate::storage::{RealStorage, Storage};
use crate::writer::Writer;
use crate::{
    Entry, JournalEntry, MessageMark, MessageSummary, QueueId, RecipientState, SpoolError,
};

/// Called once, on the writer thread, when a submitted message is durable
/// (`Ok(id)`) or has failed. Keep it cheap: push to a channel, wake a poller.
pub type Completion = Box<dyn FnOnce(Result<QueueId, SpoolError>) + Send>;

/// Called once, on the writer thread, when journal entries or a mark are
/// durable or have failed.
pub type JournalCompletion = Box<dyn FnOnce(Result<(), SpoolError>) + Send>;

/// Told, on the writer thread, of the new messages of each group commit the
/// moment they are durable: from the front end, a bounce, a forward,
/// whoever submitted them (not compaction's copies), in the order they were
/// written. The delivery scheduler listens here, so it needs no word from
/// the submitter. Keep it cheap: one channel send for the group.
pub type Arrivals = Arc<dyn Fn(Vec<Arrival>) + Send + Sync>;

/// A message that has just become durable.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The new message's queue id.
    pub id: QueueId,
    /// The message as [`SpoolHandle::get`] would read it back, handed over
    /// by the writer that still has its envelope in hand: the listener
    /// (the scheduler, for every message) need not lock the index and
    /// decode what was just encoded. `None` only if its segment could not
    /// be mapped; then `get` is the way.
    pub message: Option<StoredMessage>,
}

/// A piece of a message's body: the submitter's own bytes, or a range of
/// bytes it shares (the front end shares the received message with its
/// filters, and the spool writes the range without copying it; a large one
/// is a mapped file, and the writer copies it from there to the segment).
#[derive(Debug, Clone)]
pub enum BodyPart {
    /// Bytes the spool owns from now on.
    Owned(Vec<u8>),
    /// A range of bytes shared with others; out of range counts as empty.
    Shared(Arc<Content>, std::ops::Range<usize>),
}

impl BodyPart {
    /// The bytes this part stands for.
    pub fn bytes(&self) -> &[u8] {
        match self {
            BodyPart::Owned(v) => v,
            BodyPart::Shared(v, range) => v.get(range.clone()).unwrap_or_default(),
        }
    }
}

impl From<Vec<u8>> for BodyPart {
    fn from(bytes: Vec<u8>) -> Self {
        BodyPart::Owned(bytes)
    }
}

/// A message to queue: its entry, its body in parts written in order, and
/// whether it is held from the start (quarantine). The hold is in the same
/// record as the message: there is no moment at which it is durable and
/// deliverable before the hold is.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The envelope and the facts of its arrival.
    pub entry: Entry,
    /// The message content (trace headers first), written in this order.
    pub body: Vec<BodyPart>,
    /// Keep it queued but undelivered until the operator releases it.
    pub held: bool,
}

impl Submission {
    /// A message with its whole body in one piece, not held.
    pub fn new(entry: Entry, body: Vec<u8>) -> Submission {
        Submission {
            entry,
            body: vec![BodyPart::Owned(body)],
            held: false,
        }
    }
}

/// Tuning of a spool. `SpoolConfig::default()` suits production.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// A segment is rotated once the next record would take it past this size
    /// (a single larger record gets a segment of its own). Default 64 MiB.
    pub segment_size: u64,
    /// A batch stops taking requests once it holds this many bytes, so one
    /// fdatasync does not grow without bound. Default 16 MiB.
    pub max_batch_bytes: usize,
    /// The oldest segment is compacted when its live message bytes are below
    /// this percentage of its size. Default 50.
    pub compact_live_percent: u8,
    /// Bytes compaction copies per step between batches. Default 4 MiB.
    pub compaction_step_bytes: u64,
    /// Whether the next segment's file is zero-filled ahead (see
    /// `prepared.rs`). Default [`Preparation::Auto`].
    pub prepare_segments: Preparation,
}

/// When segments are prepared ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preparation {
    /// Where the file system writes in place (ext2/3/4, XFS): there, an
    /// `fdatasync` into blocks written ahead skips their allocation.
    /// Copy-on-write file systems and tmpfs would only write the zeros
    /// for nothing.
    #[default]
    Auto,
    /// Whatever the file system (tests of the mechanism use it).
    Always,
    /// Segments grow record by record.
    Never,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            segment_size: 64 << 20,
            max_batch_bytes: 16 << 20,
            compact_live_percent: 50,
            compaction_step_bytes: 4 << 20,
            prepare_segments: Preparation::Auto,
        }
    }
}

/// State shared by the writer thread and every reader.
pub(crate) struct Shared {
    pub(crate) index: Mutex<Index>,
    /// Who hears of new durable messages ([`SpoolHandle::on_arrival`]).
    pub(crate) arrivals: Mutex<Vec<Arrivals>>,
    pub(crate) ids: IdGenerator,
    pub(crate) stats: StatCounters,
    pub(crate) dir: PathBuf,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Index> {
        // The index is only changed by complete operations under the lock, so
        // a panic elsewhere while it was held leaves it consistent.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The durable message queue of one spool directory.
///
/// Dropping it is [`Spool::shutdown`].
#[derive(Debug)]
pub struct Spool {
    shared: Arc<Shared>,
    handle: SpoolHandle,
    writer: Option<JoinHandle<()>>,
    /// Holds `spool.lock` for the lifetime of a writable spool.
    _lock: Option<File>,
}

/// The cloneable, thread-safe way in: submit messages, journal delivery
/// outcomes, read messages. Requests after shutdown fail with
/// [`SpoolError::ShutDown`] (through their completion, as always).
#[derive(Debug, Clone)]
pub struct SpoolHandle {
    pub(crate) shared: Arc<Shared>,
    /// `None` for a read-only spool.
    tx: Option<Sender<Request>>,
}

/// A queued message with its body, which is borrowed from the segment's
/// memory map (no copy; the mapping stays alive as long as this value, even
/// if compaction deletes the segment file meanwhile).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The envelope and arrival facts as submitted.
    pub entry: Entry,
    /// One state per recipient of `envelope.recipients`.
    pub states: Vec<RecipientState>,
    /// Held by the operator.
    pub held: bool,
    map: Arc<Mmap>,
    body: std::ops::Range<usize>,
}

impl StoredMessage {
    /// A message just written: every recipient pending.
    pub(crate) fn arrived(
        entry: Entry,
        held: bool,
        map: Arc<Mmap>,
        body: std::ops::Range<usize>,
    ) -> StoredMessage {
        StoredMessage {
            states: vec![RecipientState::Pending; entry.envelope.recipients.len()],
            entry,
            held,
            map,
            body,
        }
    }

    /// The message content exactly as submitted (trace headers included).
    pub fn body(&self) -> &[u8] {
        &self.map[self.body.clone()]
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir` for reading and writing.
    ///
    /// Replays every segment, cuts a torn tail off the last one, deletes
    /// segments with nothing live, compacts if due, and starts the writer
    /// thread. Fails with [`SpoolError::Locked`] if another process has the
    /// spool open for writing.
    pub fn open(
        dir: impl AsRef<Path>,
        config: SpoolConfig,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        Spool::open_with(dir.as_ref(), config, Arc::new(RealStorage))
    }

    pub(crate) fn open_with(
        dir: &Path,
        config: SpoolConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("spool.lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let rec = recovery::recover(dir, true, config.segment_size)?;
        let mut report = rec.report;
        let shared = Arc::new(Shared {
            index: Mutex::new(rec.index),
            arrivals: Mutex::default(),
            ids: IdGenerator::new(rec.max_id),
            stats: StatCounters::default(),
            dir: dir.to_path_buf(),
        });
        let mut writer = Writer::start(shared.clone(), storage, config, rec.max_seq)?;
        writer.maintain()?;
        // What recovery found dead is gone before the report says so.
        writer.reaper.flush();
        let s = shared.stats.snapshot();
        report.deleted_segments = s.segments_deleted as usize;
        report.compacted_messages = s.messages_compacted as usize;
        report.live_messages = shared.lock().messages.len();

        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                // Every `250` waits for this thread's group commit: run it
                // soon after its fdatasync returns (sluice_sys::sched).
                if let Err(e) = sluice_sys::sched::prefer_latency() {
                    tracing::debug!(error = %e, "spool writer keeps the default time slice");
                }
                writer.run(rx)
            })?;
        let spool = Spool {
            handle: SpoolHandle {
                shared: shared.clone(),
                tx: Some(tx),
            },
            shared,
            writer: Some(thread),
            _lock: Some(lock),
        };
        Ok((spool, report))
    }

    /// Opens the spool in `dir` for reading only (`sluice queue list`),
    /// whether or not a server has it open: takes no lock, never truncates,
    /// renames or deletes anything, and ignores a torn (or still being
    /// written) tail. The view is a snapshot as of the call. Submits fail with
    /// [`SpoolError::ReadOnly`].
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<(Spool, RecoveryReport), SpoolError> {
        let dir = dir.as_ref();
        let rec = recovery::recover(dir, false, 0)?;
        let shared = Arc::new(Shared {
            index: Mutex::new(rec.index),
            arrivals: Mutex::default(),
            ids: IdGenerator::new(rec.max_id),
            stats: StatCounters::default(),
            dir: dir.to_path_buf(),
        });
        let spool = Spool {
            handle: SpoolHandle {
                shared: shared.clone(),
                tx: None,
            },
            shared,
            writer: None,
            _lock: None,
        };
        Ok((spool, rec.report))
    }

    /// A handle for submitting and reading; clone it freely.
    pub fn handle(&self) -> SpoolHandle {
        self.handle.clone()
    }

    /// A fresh queue id (see [`SpoolHandle::new_id`]).
    pub fn new_id(&self) -> QueueId {
        self.shared.ids.next()
    }

    /// Every queued message, oldest first.
    pub fn messages(&self) -> Result<Vec<MessageSummary>, SpoolError> {
        self.handle.messages()
    }

    /// One queued message with its body (see [`SpoolHandle::get`]).
    pub fn get(&self, id: QueueId) -> Result<Option<StoredMessage>, SpoolError> {
        self.handle.get(id)
    }

    /// Counters since open.
    pub fn stats(&self) -> SpoolStats {
        self.shared.stats.snapshot()
    }

    /// Runs segment deletion and compaction now, to completion, on the writer
    /// thread (it also runs by itself whenever the writer is idle).
    pub fn maintain(&self) -> Result<(), SpoolError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.handle.send(Request::Maintain {
            done: Pending::new(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        });
        rx.recv().unwrap_or(Err(SpoolError::ShutDown))
    }

    /// Flushes what is queued (every pending completion runs), stops the
    /// writer thread and releases the directory lock. Handles still held
    /// elsewhere then fail their requests with [`SpoolError::ShutDown`].
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = &self.handle.tx {
            let _ = tx.send(Request::Shutdown);
        }
        if let Some(t) = self.writer.take()
            && t.join().is_err()
        {
            tracing::error!("spool writer thread panicked");
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SpoolHandle {
    fn send(&self, req: Request) {
        match &self.tx {
            // On a closed channel the request comes back and is dropped,
            // which answers its completion with `ShutDown`.
            Some(tx) => drop(tx.send(req)),
            None => fail_read_only(req),
        }
    }

    /// A fresh queue id: cheap, thread-safe, unique across restarts and
    /// clock steps. Call it when the transaction starts (the id goes into the
    /// `Received:` header) and put it into [`Entry::id`].
    pub fn new_id(&self) -> QueueId {
        self.shared.ids.next()
    }

    /// An unnamed file in the spool's directory for a large message's bytes
    /// while they arrive: on the disk that will keep them, and gone without a
    /// trace if the process dies first. [`Spill::finish`] maps it; submit the
    /// result as a [`BodyPart::Shared`].
    pub fn spill(&self) -> std::io::Result<Spill> {
        Spill::create_in(&self.shared.dir)
    }

    /// Calls `f` with the new messages of every group commit as soon as
    /// they are durable, on the writer thread, from now on.
    pub fn on_arrival(&self, f: Arrivals) {
        self.shared
            .arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(f);
    }

    /// Queues a message; `done` runs once the message is durable (`Ok(id)`,
    /// the moment to answer `250`) or has failed (see
    /// [`SpoolError::is_storage_full`]).
    pub fn submit(&self, submission: Submission, done: Completion) {
        self.send(Request::Submit {
            submission,
            done: Pending::new(done),
        });
    }

    /// Appends per-recipient state changes, batched with everything else.
    /// A message whose recipients are then all final leaves the spool.
    /// Entries for messages no longer queued are ignored; an entry naming a
    /// recipient index the message lacks fails the whole call.
    ///
    /// `done` runs once the entries are written, not synced: they become
    /// durable with the next `fdatasync`, which a submission brings or the
    /// writer makes within 200 ms. A power failure in between repeats the
    /// deliveries they record (a `kill -9` does not: the page cache keeps
    /// them), which SMTP allows; nothing accepted is lost.
    pub fn journal(&self, entries: Vec<JournalEntry>, done: JournalCompletion) {
        self.send(Request::Journal {
            entries,
            done: Pending::new(done),
        });
    }

    /// Changes a whole message's state (done, deleted, held, released).
    /// Marking a message that is no longer queued succeeds without effect.
    /// `Done` (a finished message) is made durable as lazily as
    /// [`journal`](Self::journal)'s entries; an operator's `Deleted`,
    /// `Held` and `Released` are synced before `done` runs.
    pub fn mark(&self, id: QueueId, mark: MessageMark, done: JournalCompletion) {
        self.send(Request::Mark {
            id,
            mark,
            done: Pending::new(done),
        });
    }

    /// [`submit`](Self::submit), waiting for the outcome: for a thread that
    /// may block (a delivery thread queueing a forward, tools, tests); the
    /// front end uses the callback form.
    pub fn submit_wait(&self, submission: Submission) -> Result<QueueId, SpoolError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(
            submission,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(SpoolError::ShutDown))
    }

    /// [`journal`](Self::journal), waiting for the outcome.
    pub fn journal_wait(&self, entries: Vec<JournalEntry>) -> Result<(), SpoolError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.journal(
            entries,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(SpoolError::ShutDown))
    }

    /// [`mark`](Self::mark), waiting for the outcome.
    pub fn mark_wait(&self, id: QueueId, mark: MessageMark) -> Result<(), SpoolError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.mark(
            id,
            mark,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(SpoolError::ShutDown))
    }

    /// One queued message with its body, or `None` if it is not (or no
    /// longer) queued. Errors only if the segment cannot be mapped or the
    /// stored envelope does not decode.
    pub fn get(&self, id: QueueId) -> Result<Option<StoredMessage>, SpoolError> {
        let (map, loc, states, held) = {
            let mut index = self.shared.lock();
            let Index {
                messages, segments, ..
            } = &mut *index;
            let Some(m) = messages.get(&id) else {
                return Ok(None);
            };
            (
                map_of(segments, &m.loc)?,
                m.loc,
                m.recipient_states(),
                m.held,
            )
        };
        let entry = decode_at(&map, loc.envelope_start(), loc.envelope_len.into())?;
        let body = loc.body_start() as usize..loc.end() as usize;
        if map.get(body.clone()).is_none() {
            return Err(SpoolError::Corrupt("body outside its segment"));
        }
        Ok(Some(StoredMessage {
            entry,
            states,
            held,
            map,
            body,
        }))
    }

    /// Counters since open.
    pub fn stats(&self) -> SpoolStats {
        self.shared.stats.snapshot()
    }
}

pub(crate) fn decode_at(map: &Mmap, start: u64, len: u64) -> Result<Entry, SpoolError> {
    let bytes = map
        .get(start as usize..(start + len) as usize)
        .ok_or(SpoolError::Corrupt("envelope outside its segment"))?;
    Entry::decode(bytes)
}

fn fail_read_only(req: Request) {
    match req {
        Request::Submit { done, .. } => done.complete(Err(SpoolError::ReadOnly)),
        Request::Journal { done, .. } | Request::Mark { done, .. } | Request::Maintain { done } => {
            done.complete(Err(SpoolError::ReadOnly))
        }
        Request::Shutdown => {}
    }
}
