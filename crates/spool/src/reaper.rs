//! Deleting dead segment files off the writer thread, and gently; and
//! preparing the next one (`prepared`), also off the writer thread.
//!
//! Unlinking a full segment makes ext4 free tens of megabytes of blocks at
//! once: about 15 ms for 64 MiB here, and any `fdatasync` in the meantime
//! waits for the journal commit that carries those frees. On the writer
//! thread, or beside it, that was a stall of every group commit behind it
//! once per segment under steady load: the open-loop bench's tail above
//! p99.9 (docs/benchmarks.md, "The stall above p99.9"). So a segment goes in
//! two steps, on a thread of its own:
//!
//! 1. At once, it is renamed to `seg-N.log.dead` and the directory synced:
//!    from then on it is gone for recovery (a writable open removes
//!    `.dead` leftovers without reading them), as an unlink made durable
//!    would be. A rename frees no blocks.
//! 2. Then the file shrinks by [`STEP`] at a time with a pause between
//!    steps, so each journal commit carries a small free, and is unlinked.
//!    Not while a reader still holds the segment's mapping (a
//!    [`StoredMessage`](crate::StoredMessage) taken before its message was
//!    finished or copied forward, a delivery under way): cutting the file
//!    behind the mapping would make its next read of those pages a SIGBUS.
//!    The reaper keeps the mapping and shrinks once it holds the last
//!    reference; no new one can be taken, the segment being out of the
//!    index. Readers in other processes (`sluice queue list`) hold a
//!    shared `flock` on each segment they map, taken while the file still
//!    has its name; the reaper shrinks only under an exclusive one.
//!
//! Crash safety is as before: the writer has already taken the segment out
//! of the index, and a segment whose rename was not yet durable only holds
//! messages that are done or copied to a later segment, whose later records
//! win at replay (see `compaction`). Truncating a still-named segment would
//! not be safe (a crash could leave a prefix holding a message record but
//! not the record that finished it), hence the rename first.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use memmap2::Mmap;

use crate::index::Segment;
use crate::spool::Shared;
use crate::stats::StatCounters;

/// How much a dead file shrinks per step: a 1 MiB free keeps a concurrent
/// `fdatasync` under a millisecond here (a whole 64 MiB unlink: 12 ms).
const STEP: u64 = 1 << 20;
/// The pause between steps, in which group commits go on.
const PAUSE: Duration = Duration::from_millis(2);
/// How often a dead file that a reader still maps is looked at again.
const PINNED_RECHECK: Duration = Duration::from_millis(100);

/// Added to a dead segment's name while it shrinks; recovery removes such
/// files unread.
pub(crate) const DEAD_SUFFIX: &str = ".dead";

fn dead_name(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(DEAD_SUFFIX);
    PathBuf::from(name)
}

/// A renamed file on its way out, open for shrinking.
struct Shrinking {
    path: PathBuf,
    file: File,
    /// What is left of it.
    len: u64,
    /// The segment's mappings that readers may hold: shrinking waits until
    /// none is left.
    mappings: Vec<Weak<Mmap>>,
    /// Whether this thread holds the file's exclusive lock: no other
    /// process maps it.
    locked: bool,
}

impl Shrinking {
    /// Whether a reader, here or in another process, still maps the file.
    fn pinned(&self) -> bool {
        !self.locked || self.mappings.iter().any(|m| m.strong_count() > 0)
    }

    /// Takes the exclusive lock if no other process holds a shared one
    /// now. A file system without `flock` has no readers' locks to wait
    /// for either.
    fn try_lock(&mut self) {
        if !self.locked {
            self.locked = !matches!(self.file.try_lock(), Err(TryLockError::WouldBlock));
        }
    }
}

enum Work {
    /// A segment out of the index (its entry, if it had one, goes with it:
    /// the mapping and handle are dropped here, not under the index lock,
    /// and what readers still map of it is known here).
    Delete {
        seq: u64,
        segment: Option<Segment>,
        path: PathBuf,
    },
    /// Answered once every segment asked for before is renamed away.
    Flush(Sender<()>),
    /// The next segment's file, zero-filled ahead (see `prepared`).
    Prepare { size: u64 },
}

pub(crate) struct Reaper {
    work: Option<Sender<Work>>,
    thread: Option<JoinHandle<()>>,
    /// Set when the spool closes: a preparation under way stops (a file
    /// nobody will take is not worth a shutdown's wait).
    closing: Arc<AtomicBool>,
    /// Set while a prepared segment waits to be taken.
    ready: Arc<AtomicBool>,
}

impl Reaper {
    pub(crate) fn start(shared: Arc<Shared>, dir: File) -> std::io::Result<Reaper> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let closing = Arc::new(AtomicBool::new(false));
        // One left from before (recovery keeps finished ones).
        let ready = Arc::new(AtomicBool::new(
            shared.dir.join(crate::prepared::PREPARED).exists(),
        ));
        let (stop, prepared) = (closing.clone(), ready.clone());
        let thread = std::thread::Builder::new()
            .name("spool-reaper".into())
            .spawn(move || reap(&shared, &dir, &rx, &stop, &prepared))?;
        Ok(Reaper {
            work: Some(tx),
            thread: Some(thread),
            closing,
            ready,
        })
    }

    /// Deletes the file of segment `seq`, already out of the index.
    pub(crate) fn delete(&self, seq: u64, segment: Option<Segment>, path: PathBuf) {
        if let Some(work) = &self.work {
            // The thread lives as long as the sender; were it gone, the
            // file would stay until the next open's recovery.
            let _ = work.send(Work::Delete { seq, segment, path });
        }
    }

    /// Prepares the next segment's file, of `size` bytes, unless one is
    /// ready.
    pub(crate) fn prepare(&self, size: u64) {
        if let Some(work) = &self.work {
            let _ = work.send(Work::Prepare { size });
        }
    }

    /// Whether a prepared segment waits to be taken (no system call).
    pub(crate) fn prepared_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The writer took the prepared segment (or found none).
    pub(crate) fn prepared_taken(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// Waits until every segment asked for so far is gone for recovery
    /// (renamed; its blocks may still be being freed).
    pub(crate) fn flush(&self) {
        let Some(work) = &self.work else {
            return;
        };
        let (done, wait) = crossbeam_channel::bounded(1);
        if work.send(Work::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Drop for Reaper {
    /// Queued deletions are finished (without pauses) before the spool goes.
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        drop(self.work.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn reap(
    shared: &Shared,
    dir: &File,
    work: &Receiver<Work>,
    closing: &AtomicBool,
    ready: &AtomicBool,
) {
    // Renamed files still to shrink, oldest first.
    let mut shrinking: VecDeque<Shrinking> = VecDeque::new();
    loop {
        let next = if shrinking.is_empty() {
            work.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else if shrinking.iter().all(Shrinking::pinned) {
            work.recv_timeout(PINNED_RECHECK)
        } else {
            work.recv_timeout(PAUSE)
        };
        match next {
            Ok(Work::Delete { seq, segment, path }) => {
                let mappings = segment.map(Segment::into_mappings).unwrap_or_default();
                if let Some(dead) = rename_away(dir, seq, &path) {
                    StatCounters::add(&shared.stats.segments_deleted, 1);
                    let opened = OpenOptions::new().write(true).open(&dead);
                    match opened.and_then(|file| Ok((file.metadata()?.len(), file))) {
                        Ok((len, file)) => {
                            let mut dead = Shrinking {
                                path: dead,
                                file,
                                len,
                                mappings,
                                locked: false,
                            };
                            dead.try_lock();
                            shrinking.push_back(dead);
                        }
                        // Cannot shrink it: unlink it whole rather than leave it.
                        Err(_) => remove(&dead),
                    }
                }
            }
            Ok(Work::Flush(done)) => {
                let _ = done.send(());
            }
            Ok(Work::Prepare { size }) => {
                match crate::prepared::prepare(&shared.dir, size, closing) {
                    Ok(true) => {
                        StatCounters::add(&shared.stats.segments_prepared, 1);
                        ready.store(true, Ordering::Release);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prepare the next spool segment; it will be created when needed")
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => shrink_step(&mut shrinking),
            Err(RecvTimeoutError::Disconnected) => {
                // Unlinked whole: a mapping outlives its file's name.
                for dead in shrinking {
                    remove(&dead.path);
                }
                return;
            }
        }
    }
}

/// Step 1: the segment is renamed away and that is made durable. `None`
/// when it could not be (it then stays for the next open to look at).
fn rename_away(dir: &File, seq: u64, path: &Path) -> Option<PathBuf> {
    let dead = dead_name(path);
    match std::fs::rename(path, &dead).and_then(|()| dir.sync_all()) {
        Ok(()) => {
            tracing::debug!(segment = seq, "deleted spool segment");
            Some(dead)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(segment = seq, file = %path.display(), error = %e, "cannot delete a dead spool segment");
            None
        }
    }
}

/// Step 2, one piece of it: the oldest renamed file no reader maps
/// shrinks by [`STEP`], or goes once it is small.
fn shrink_step(shrinking: &mut VecDeque<Shrinking>) {
    shrinking.iter_mut().for_each(Shrinking::try_lock);
    let Some(at) = shrinking.iter().position(|dead| !dead.pinned()) else {
        return;
    };
    let dead = &mut shrinking[at];
    dead.len = dead.len.saturating_sub(STEP);
    // Small enough, or it cannot shrink: unlink what is left.
    if dead.len == 0 || dead.file.set_len(dead.len).is_err() {
        remove(&dead.path);
        shrinking.remove(at);
    }
}

fn remove(dead: &Path) {
    if let Err(e) = std::fs::remove_file(dead)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %dead.display(), error = %e, "cannot remove a dead spool segment");
    }
}
