//! Disk-full and I/O-error injection through the private `Storage` trait,
//! driving the real writer thread: batching, rewind, sealing, recovery.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use crate::storage::{SegmentFile, Storage};
use crate::{Entry, QueueId, Spool, SpoolConfig, SpoolError, SpoolHandle, Submission};

#[derive(Default)]
struct Faults {
    /// Bytes that may still be written; `None` = unlimited.
    budget: Mutex<Option<u64>>,
    fail_sync: AtomicBool,
    fail_create: AtomicBool,
    /// Every fdatasync that succeeded: the file, and its length then.
    synced: Mutex<Vec<(PathBuf, u64)>>,
}

impl Faults {
    fn set_budget(&self, b: Option<u64>) {
        *self.budget.lock().unwrap() = b;
    }
}

struct FaultyStorage(Arc<Faults>);

struct FaultyFile {
    inner: File,
    path: PathBuf,
    faults: Arc<Faults>,
}

impl SegmentFile for FaultyFile {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut budget = self.faults.budget.lock().unwrap();
        match *budget {
            None => SegmentFile::write_vectored(&mut self.inner, bufs),
            Some(0) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            // Like a real full disk: a short write first, ENOSPC after.
            Some(left) => {
                let mut allowed = Vec::new();
                let mut room = left as usize;
                for b in bufs {
                    let n = b.len().min(room);
                    allowed.push(IoSlice::new(&b[..n]));
                    room -= n;
                }
                let n = SegmentFile::write_vectored(&mut self.inner, &allowed)?;
                *budget = Some(left - n as u64);
                Ok(n)
            }
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_data()?;
        let len = self.inner.metadata()?.len();
        self.faults
            .synced
            .lock()
            .unwrap()
            .push((self.path.clone(), len));
        Ok(())
    }

    fn rewind_to(&mut self, len: u64) -> io::Result<()> {
        self.inner.rewind_to(len)
    }
}

impl Storage for FaultyStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        if self.0.fail_create.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let inner = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(FaultyFile {
            inner,
            path: path.to_owned(),
            faults: self.0.clone(),
        }))
    }

    fn open_append(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let mut inner = OpenOptions::new().read(true).write(true).open(path)?;
        inner.seek(SeekFrom::Start(len))?;
        Ok(Box::new(FaultyFile {
            inner,
            path: path.to_owned(),
            faults: self.0.clone(),
        }))
    }
}

fn entry(id: QueueId) -> Entry {
    crate::test_support::entry(id, 1)
}

fn body(i: u8) -> Vec<u8> {
    vec![b'a' + i % 26; 2000 + usize::from(i)]
}

fn open(dir: &Path, cfg: SpoolConfig) -> (Spool, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let (spool, _) = Spool::open_with(dir, cfg, Arc::new(FaultyStorage(faults.clone()))).unwrap();
    (spool, faults)
}

/// Segments of 8 KiB: a few messages each, so a test reaches a new head
/// soon.
fn open_small(dir: &Path) -> (SpoolConfig, Spool, Arc<Faults>) {
    // Segments grow record by record here: the faults go into creating and
    // growing them, and `head_len` reads a file's length (prepared segments
    // have tests of their own).
    let cfg = SpoolConfig {
        segment_size: 8 << 10,
        prepare_segments: crate::Preparation::Never,
        ..SpoolConfig::default()
    };
    let (spool, faults) = open(dir, cfg.clone());
    (cfg, spool, faults)
}

fn head_len(dir: &Path) -> u64 {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    std::fs::metadata(segs.last().unwrap()).unwrap().len()
}

/// Blocks the writer thread inside a completion until the returned sender
/// fires, so that the requests queued meanwhile form one batch.
fn gate(h: &SpoolHandle) -> (QueueId, mpsc::Sender<()>) {
    let (open_tx, open_rx) = mpsc::channel::<()>();
    let (in_tx, in_rx) = mpsc::channel::<()>();
    let id = h.new_id();
    h.submit(
        Submission::new(entry(id), body(0)),
        Box::new(move |r| {
            r.unwrap();
            in_tx.send(()).unwrap();
            open_rx.recv().unwrap();
        }),
    );
    in_rx.recv().unwrap();
    (id, open_tx)
}

#[test]
fn disk_full_fails_the_whole_batch_then_service_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, faults) = open(dir.path(), SpoolConfig::default());
    let h = spool.handle();
    let mut acked: Vec<(QueueId, u8)> = (1..4)
        .map(|i| {
            (
                h.submit_wait(Submission::new(entry(h.new_id()), body(i)))
                    .unwrap(),
                i,
            )
        })
        .collect();
    let (gated, release) = gate(&h);
    acked.push((gated, 0));
    let durable_len = head_len(dir.path());

    let (tx, rx) = mpsc::channel();
    let mut failed_ids = Vec::new();
    for _ in 0..5 {
        let tx = tx.clone();
        let id = h.new_id();
        failed_ids.push(id);
        h.submit(
            Submission::new(entry(id), body(9)),
            Box::new(move |r| tx.send(r).unwrap()),
        );
    }
    drop(tx);
    // Room for part of the batch only: a short write, then ENOSPC.
    faults.set_budget(Some(3000));
    release.send(()).unwrap();
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len(), 5);
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(e.is_storage_full(), "{e}");
    }
    assert_eq!(
        head_len(dir.path()),
        durable_len,
        "the failed batch is cut off again"
    );
    assert_eq!(spool.stats().write_errors, 1);
    for id in &failed_ids {
        assert!(spool.get(*id).unwrap().is_none());
    }

    // Space is back: the same segment keeps serving.
    faults.set_budget(None);
    let segments = spool.stats().segments_created;
    for i in 10..12 {
        acked.push((
            h.submit_wait(Submission::new(entry(h.new_id()), body(i)))
                .unwrap(),
            i,
        ));
    }
    assert_eq!(spool.stats().segments_created, segments);
    spool.shutdown();

    let (spool, report) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.corrupt_regions, 0);
    assert_eq!(report.live_messages, acked.len());
    for (id, i) in acked {
        assert_eq!(spool.get(id).unwrap().unwrap().body(), body(i).as_slice());
    }
}

#[test]
fn failed_fdatasync_is_an_io_error_and_seals_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, faults) = open(dir.path(), SpoolConfig::default());
    let h = spool.handle();
    let first = h
        .submit_wait(Submission::new(entry(h.new_id()), body(1)))
        .unwrap();
    faults.fail_sync.store(true, Ordering::SeqCst);
    let lost = h.new_id();
    let e = h
        .submit_wait(Submission::new(entry(lost), body(2)))
        .unwrap_err();
    assert!(matches!(e, SpoolError::Io(_)), "{e}");
    assert!(!e.is_storage_full());
    faults.fail_sync.store(false, Ordering::SeqCst);
    let before = spool.stats().segments_created;
    let second = h
        .submit_wait(Submission::new(entry(h.new_id()), body(3)))
        .unwrap();
    assert_eq!(
        spool.stats().segments_created,
        before + 1,
        "a fresh segment after a failed sync"
    );
    spool.shutdown();

    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(
        spool.get(first).unwrap().unwrap().body(),
        body(1).as_slice()
    );
    assert_eq!(
        spool.get(second).unwrap().unwrap().body(),
        body(3).as_slice()
    );
    assert!(spool.get(lost).unwrap().is_none());
}

#[test]
fn disk_full_while_starting_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, spool, faults) = open_small(dir.path());
    let h = spool.handle();
    let mut acked = Vec::new();
    for i in 0..3 {
        acked.push((
            h.submit_wait(Submission::new(entry(h.new_id()), body(i)))
                .unwrap(),
            i,
        ));
    }
    // The next message needs a new segment, which cannot be created.
    faults.fail_create.store(true, Ordering::SeqCst);
    let e = h
        .submit_wait(Submission::new(entry(h.new_id()), body(7)))
        .unwrap_err();
    assert!(e.is_storage_full());
    faults.fail_create.store(false, Ordering::SeqCst);
    for i in 3..8 {
        acked.push((
            h.submit_wait(Submission::new(entry(h.new_id()), body(i)))
                .unwrap(),
            i,
        ));
    }
    spool.shutdown();
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
    let (spool, report) = Spool::open(dir.path(), cfg).unwrap();
    assert_eq!(report.live_messages, acked.len());
    for (id, i) in acked {
        assert_eq!(spool.get(id).unwrap().unwrap().body(), body(i).as_slice());
    }
}

/// An outcome is written without an fdatasync of its own (it rides on the
/// next one). When the head segment is left before that comes, the old
/// head is synced first: its last records must not wait for a sync that
/// will only ever go to the new head.
#[test]
fn lazy_outcomes_are_synced_before_the_head_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, spool, faults) = open_small(dir.path());
    let h = spool.handle();
    let first = h
        .submit_wait(Submission::new(entry(h.new_id()), body(0)))
        .unwrap();
    let old_head = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let (syncs, len) = (
        faults.synced.lock().unwrap().len(),
        std::fs::metadata(&old_head).unwrap().len(),
    );
    h.journal_wait(vec![crate::JournalEntry {
        id: first,
        recipient: 0,
        state: crate::RecipientState::Delivered,
    }])
    .unwrap();
    let with_outcome = std::fs::metadata(&old_head).unwrap().len();
    assert!(with_outcome > len, "the outcome is written at once");
    assert_eq!(
        faults.synced.lock().unwrap().len(),
        syncs,
        "and not synced by itself"
    );
    // The next message does not fit: a new head.
    let second = h
        .submit_wait(Submission::new(entry(h.new_id()), vec![b'z'; 7000]))
        .unwrap();
    // Segments are created under a temporary name and renamed.
    let synced: Vec<(PathBuf, u64)> = faults
        .synced
        .lock()
        .unwrap()
        .iter()
        .map(|(p, l)| (p.with_extension(""), *l))
        .collect();
    assert!(
        synced
            .iter()
            .any(|(p, l)| *p == old_head && *l == with_outcome),
        "the old head was synced with its outcome in it: {synced:?}"
    );
    let new_heads = synced.iter().filter(|(p, _)| *p != old_head).count();
    assert!(
        new_heads >= 2,
        "header and message in the new head: {synced:?}"
    );
    spool.shutdown();
    let (spool, _) = Spool::open(dir.path(), cfg).unwrap();
    assert!(spool.get(first).unwrap().is_none(), "delivered: gone");
    assert!(spool.get(second).unwrap().is_some());
}
