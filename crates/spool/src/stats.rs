//! Counters the writer keeps, for metrics and for tests that must see batching.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of the spool's counters since open, from [`Spool::stats`](crate::Spool::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Batches made durable (one group commit each; a batch that crosses a
    /// segment boundary counts once per segment).
    pub batches: u64,
    /// `fdatasync` calls on segment files (batches, plus new segment headers).
    pub fdatasyncs: u64,
    /// `writev` calls.
    pub writes: u64,
    /// Records appended (messages, journal and done records, compaction copies).
    pub records: u64,
    /// Messages accepted through `submit`.
    pub messages: u64,
    /// Bytes appended to segments.
    pub bytes: u64,
    /// Largest number of requests in one batch.
    pub max_batch: u64,
    /// Batches that failed with an I/O error (every submitter got the error).
    pub write_errors: u64,
    /// Segment files created.
    pub segments_created: u64,
    /// Of those, the ones that began as a prepared (zero-filled) file.
    pub segments_from_prepared: u64,
    /// Files zero-filled ahead to become segments.
    pub segments_prepared: u64,
    /// Segment files deleted because nothing in them was live.
    pub segments_deleted: u64,
    /// Live messages copied forward by compaction.
    pub messages_compacted: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    pub(crate) batches: AtomicU64,
    pub(crate) fdatasyncs: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) max_batch: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) segments_created: AtomicU64,
    pub(crate) segments_from_prepared: AtomicU64,
    pub(crate) segments_prepared: AtomicU64,
    pub(crate) segments_deleted: AtomicU64,
    pub(crate) messages_compacted: AtomicU64,
}

impl StatCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SpoolStats {
        SpoolStats {
            batches: self.batches.load(Relaxed),
            fdatasyncs: self.fdatasyncs.load(Relaxed),
            writes: self.writes.load(Relaxed),
            records: self.records.load(Relaxed),
            messages: self.messages.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            max_batch: self.max_batch.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            segments_created: self.segments_created.load(Relaxed),
            segments_from_prepared: self.segments_from_prepared.load(Relaxed),
            segments_prepared: self.segments_prepared.load(Relaxed),
            segments_deleted: self.segments_deleted.load(Relaxed),
            messages_compacted: self.messages_compacted.load(Relaxed),
        }
    }
}
