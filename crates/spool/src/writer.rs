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
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};

use crate::SpoolError;
use crate::format::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::index::{Location, Segment};
use crate::reaper::Reaper;
use crate::request::{Durability, Effect, Item, Pending, Request, fail_all, plan, weight};
use crate::spool::{Arrival, Shared, StoredMessage};
use crate::stats::StatCounters;
use crate::storage::{SegmentFile, Storage, write_all_vectored};
use crate::{Preparation, SpoolConfig};

/// Requests per batch at most, so that one batch's completions do not delay
/// the next fdatasync for long under extreme load.
const MAX_BATCH_REQUESTS: usize = 4096;

/// A head asks for the next segment's prepared file after this many
/// bytes: traffic enough to be worth 64 MiB of zeros (a test's handful of
/// messages is not).
const PREPARE_EARLY: u64 = 1 << 20;

/// Under sustained load, one maintenance step per this many batches.
const MAINTENANCE_EVERY: u32 = 32;

/// Records written with [`Durability::Soon`] are on disk at most this long
/// after they were written, when no batch that syncs came meanwhile.
pub(crate) const LAZY_SYNC: std::time::Duration = std::time::Duration::from_millis(200);

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
    /// The head's [`SegmentHeader::seed`], which its record headers'
    /// checksums start from.
    head_seed: u32,
    /// End of the last record written to the head: durable, or (when
    /// `unsynced`) waiting for the next `fdatasync`.
    head_len: u64,
    /// [`Durability::Soon`] records in the head not yet synced.
    unsynced: usize,
    maintenance_paused: bool,
    /// Deletes dead segments' files and prepares the next, off this thread.
    pub(crate) reaper: Reaper,
    /// Whether segments' files are prepared ahead (see `prepared`);
    /// whether the head began as one; whether the next was asked for
    /// since the last rotation.
    prepare: bool,
    head_prepared: bool,
    prepare_asked: bool,
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
        let prepare = match cfg.prepare_segments {
            Preparation::Always => true,
            Preparation::Never => false,
            Preparation::Auto => sluice_sys::disk::overwrites_in_place(&dir).unwrap_or(false),
        };
        let reaper = Reaper::start(shared.clone(), File::open(&dir)?)?;
        // Recovery mapped every segment it kept and read its header there;
        // the head's seed (zero for a version 1 head, which keeps its
        // unseeded checksums to the end) comes from that mapping.
        let head = shared
            .lock()
            .segments
            .iter()
            .next_back()
            .map(|(s, seg)| (*s, seg.len, seg.map.clone()));
        let mut w = Writer {
            shared,
            storage,
            cfg,
            dir,
            dir_file,
            head_seq: 0,
            next_seq: max_seq + 1,
            head: None,
            head_seed: 0,
            head_len: 0,
            unsynced: 0,
            maintenance_paused: false,
            reaper,
            prepare,
            head_prepared: false,
            prepare_asked: false,
        };
        match head {
            Some((seq, len, map)) => {
                let path = w.dir.join(format::segment_file_name(seq));
                let map = map.ok_or(SpoolError::Corrupt("the head segment is not mapped"))?;
                w.head_seed = SegmentHeader::decode(&map)?.seed;
                w.head = Some(w.storage.open_append(&path, len)?);
                w.head_seq = seq;
                w.head_len = len;
                // Room of zeros after the records: it began as a prepared file.
                // (The file's length now, not the mapping's: recovery may have
                // cut a torn tail after mapping it.)
                w.head_prepared = fs::metadata(&path)?.len() > len;
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
        let mut batches_since_step = 0u32;
        // Idle waits park at once rather than spin and yield.
        let mut waiting = sluice_sys::parked(&rx);
        while running {
            let first = if !self.maintenance_paused && self.next_step().is_some() {
                // Maintenance runs while nobody is waiting, and under
                // sustained load once every MAINTENANCE_EVERY batches, so
                // that a busy spool still reclaims space.
                let request = if batches_since_step >= MAINTENANCE_EVERY {
                    Err(TryRecvError::Empty)
                } else {
                    rx.try_recv()
                };
                match request {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => {
                        batches_since_step = 0;
                        if let Err(e) = self.maintain_step() {
                            tracing::warn!(error = %e, "spool maintenance failed; retrying after the next batch");
                            self.maintenance_paused = true;
                        }
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else if self.unsynced > 0 {
                // Outcomes wait for the next batch's fdatasync; with none
                // coming, for this one.
                match sluice_sys::parked_timeout(&rx, LAZY_SYNC) {
                    Ok(r) => r,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        self.sync_head();
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match waiting.next() {
                    Some(r) => r,
                    None => break,
                }
            };
            let mut batch = Batch::default();
            running &= batch.push(first);
            while running
                && batch.bytes < self.cfg.max_batch_bytes
                && batch.requests.len() < MAX_BATCH_REQUESTS
            {
                match rx.try_recv() {
                    Ok(r) => running &= batch.push(r),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
            batches_since_step = batches_since_step.saturating_add(1);
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
        self.sync_head();
    }

    /// Makes the head's [`Durability::Soon`] records durable, if it has
    /// any. A failure seals the head, as a failed batch does: the records
    /// in doubt were outcomes, which a restart repeats.
    fn sync_head(&mut self) {
        let records = std::mem::take(&mut self.unsynced);
        if records == 0 {
            return;
        }
        let Some(head) = self.head.as_deref_mut() else {
            return;
        };
        StatCounters::add(&self.shared.stats.fdatasyncs, 1);
        let started = std::time::Instant::now();
        match head.sync_data() {
            Ok(()) => sluice_metrics::spool_commit(records, started.elapsed()),
            Err(e) => {
                StatCounters::add(&self.shared.stats.write_errors, 1);
                tracing::warn!(segment = self.head_seq, error = %e, "sealing segment after a failed fdatasync");
                self.head = None;
            }
        }
    }

    fn run_batch(&mut self, batch: Batch) {
        if !batch.requests.is_empty() {
            self.process(batch.requests);
            self.maintenance_paused = false;
        }
        for done in batch.maintain {
            let result = self.maintain();
            // Asked for, maintenance is over when the files are gone.
            self.reaper.flush();
            done.complete(result);
        }
    }

    /// Validates and encodes the batch's requests, then appends them.
    pub(crate) fn process(&mut self, requests: Vec<Request>) {
        self.stats()
            .max_batch
            .fetch_max(requests.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let items: Vec<Item> = {
            let index = self.shared.lock();
            let mut seen = HashSet::new();
            requests
                .into_iter()
                .filter_map(|r| plan(r, &index, &mut seen))
                .collect()
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
            // A head that grows record by record moves to a prepared file as
            // soon as one is ready: a short segment costs nothing.
            let to_prepared = has_records && !self.head_prepared && self.reaper.prepared_ready();
            if (self.head.is_none()
                || (has_records && self.head_len + first.len > seg_size)
                || to_prepared)
                && let Err(e) = self.rotate()
            {
                fail_all(items, &e);
                return Err(e);
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
            let mut group: Vec<Item> = items.drain(..n).collect();
            let start = self.head_len;
            for item in &mut group {
                item.seal(self.head_seed);
            }
            if let Err(e) = self.append(&group) {
                fail_all(group, &e);
                fail_all(items, &e);
                return Err(e);
            }
            self.apply(start, group);
            self.prepare_ahead();
        }
        Ok(())
    }

    /// Asks for the next segment's file once the head holds its first
    /// [`PREPARE_EARLY`] bytes (a quarter of a small test segment): a
    /// test's handful of messages asks for nothing, a quiet server's file
    /// may wait days to be taken (64 MiB of disk, nothing else), and under
    /// load the reaper has the rest of the segment's life to write it (at
    /// three quarters, as first done, it was ready for only two segments in
    /// three at 6,000 messages a second: docs/benchmarks.md, "Prepared
    /// segments"). A head that grows record by record (a new spool's first,
    /// or one made while none was ready) moves to the file as soon as it is
    /// ready.
    fn prepare_ahead(&mut self) {
        let size = self.cfg.segment_size;
        if self.prepare && !self.prepare_asked && self.head_len >= PREPARE_EARLY.min(size / 4) {
            self.prepare_asked = true;
            self.reaper.prepare(size);
        }
    }

    /// One `writev` (more only if the kernel writes short) and one
    /// `fdatasync`, unless every record of the group may wait for a later
    /// one ([`Durability::Soon`]); on failure, rewinds the head to the end
    /// of its last record.
    fn append(&mut self, group: &[Item]) -> Result<(), SpoolError> {
        let sync = group.iter().any(|it| it.durability == Durability::Now);
        let Some(head) = self.head.as_deref_mut() else {
            return Err(SpoolError::Io(Arc::new(std::io::Error::other(
                "no open segment",
            ))));
        };
        let mut slices: Vec<IoSlice<'_>> = group
            .iter()
            .flat_map(|it| it.parts.iter().map(|p| IoSlice::new(p.bytes())))
            .collect();
        let len: u64 = group.iter().map(|it| it.len).sum();
        let stats = &self.shared.stats;
        let started = std::time::Instant::now();
        let outcome = match write_all_vectored(head, &mut slices) {
            Ok(calls) => {
                StatCounters::add(&stats.writes, calls);
                if sync {
                    StatCounters::add(&stats.fdatasyncs, 1);
                    head.sync_data().map_err(|e| (e, true))
                } else {
                    Ok(())
                }
            }
            Err(e) => Err((e, false)),
        };
        match outcome {
            Ok(()) => {
                if sync {
                    // The records written lazily before it are durable too.
                    let records = group.len() + std::mem::take(&mut self.unsynced);
                    sluice_metrics::spool_commit(records, started.elapsed());
                } else {
                    self.unsynced += group.len();
                }
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
                    self.unsynced = 0;
                }
                Err(SpoolError::from_io(e))
            }
        }
    }

    /// Makes a durable group visible in the index, announces its new
    /// messages, then answers its submitters.
    fn apply(&mut self, start: u64, group: Vec<Item>) {
        let seq = self.head_seq;
        let mut replies = Vec::with_capacity(group.len());
        let mut arrived = Vec::new();
        let mut map = None;
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
                        new,
                    } => {
                        let loc = Location::new(seq, offset, item.len, envelope_len, body_offset);
                        index.insert(id, loc, arrival_unix_ms, recipients, &states, held);
                        self.shared.ids.observe(id.0);
                        let submitted = new.is_some();
                        if let Some(entry) = new {
                            let body = loc.body_start() as usize..loc.end() as usize;
                            arrived.push((*entry, held, body));
                        }
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
                // Mapped once per segment, at the head's capacity.
                if !arrived.is_empty() {
                    map = seg.map_covering(offset).ok();
                }
            }
        }
        if !arrived.is_empty() {
            let listeners = self
                .shared
                .arrivals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let arrivals: Vec<Arrival> = arrived
                .into_iter()
                .map(|(entry, held, body)| Arrival {
                    id: entry.id,
                    message: map
                        .clone()
                        .map(|map| StoredMessage::arrived(entry, held, map, body)),
                })
                .collect();
            if let Some((last, others)) = listeners.split_last() {
                for listener in others {
                    listener(arrivals.clone());
                }
                last(arrivals);
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
        // The old head's last outcomes, before it stops being the head.
        self.sync_head();
        let seq = self.next_seq;
        let name = format::segment_file_name(seq);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let seed = format::new_seed();
        let header = SegmentHeader {
            seq,
            id_floor: self.shared.ids.high_water(),
            seed,
        }
        .encode();
        StatCounters::add(&self.shared.stats.fdatasyncs, 1);
        let mut prepared = false;
        let created = (|| {
            // A prepared file keeps its length: the header goes over its
            // first zeros, the records after it.
            prepared = crate::prepared::take(&self.dir, &tmp)?;
            let mut f = if prepared {
                self.storage.open_append(&tmp, 0)?
            } else {
                self.storage.create(&tmp)?
            };
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
        self.head_seed = seed;
        self.head_seq = seq;
        self.next_seq = seq + 1;
        self.head_len = SEGMENT_HEADER_LEN as u64;
        StatCounters::add(&self.shared.stats.segments_created, 1);
        if prepared {
            StatCounters::add(&self.shared.stats.segments_from_prepared, 1);
        }
        // Taken, or gone: either way no reason to rotate again for it.
        self.reaper.prepared_taken();
        self.head_prepared = prepared;
        self.prepare_asked = false;
        Ok(())
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
