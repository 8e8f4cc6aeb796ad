//! The next segment, written full of zeros before it is needed.
//!
//! Appending to a file that grows makes every `fdatasync` do more than
//! write the records: ext4 allocates their blocks and writes the inode (new
//! size, new extents) before the cache flush, and with its journal on (the
//! default) commits the journal too. Into a file whose blocks already
//! exist, written, and whose size does not change, an `fdatasync` writes the
//! data and flushes, nothing else: 0.7–0.8 against 0.25 ms a sync on a
//! journaled ext4 here, 0.22 against 0.13 on this machine's journal-less
//! disk (docs/benchmarks.md, "Prepared segments"). PostgreSQL zero-fills
//! its WAL segments for the same reason.
//!
//! So the reaper's thread writes the next segment's file ahead:
//! [`PREPARING`] filled with zeros [`STEP`] bytes at a time, each step
//! written back before the next (left to the kernel, 64 MiB would reach the
//! disk in one burst at the fsync, holding every group commit behind it for
//! tens of milliseconds), one `fsync` at the end, then renamed to
//! [`PREPARED`]. The writer asks for it after the first mebibyte of each
//! head; a head that grows record by record (a new spool's first segment,
//! or one made when none was ready) is left for the prepared file at
//! once. At rotation the writer renames [`PREPARED`] to
//! the new segment's temporary name and writes the header over its first
//! bytes; if none is ready, it creates a file as before. Nothing waits for
//! a preparation.
//!
//! Zeros are not records: the scanner stops at a tail of zeros, recovery
//! keeps it as the head's room to grow (see `format::unused_from`), and
//! a leftover [`PREPARING`] is removed at open. A disk with little room left
//! gets no prepared segment: its last space is for mail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A prepared segment, ready to be taken.
pub(crate) const PREPARED: &str = "seg-prepared";
/// A preparation in progress; removed at open if a crash interrupted it.
pub(crate) const PREPARING: &str = "seg-prepared.tmp";

/// Zeros written, and written back, per step. Each step costs a write,
/// a writeback and its I/O, and a sleep, about 100 µs of CPU in all on a
/// virtual machine's disk; 256 KiB steps cost 40 ms a segment where 64 KiB
/// ones cost 110 (docs/benchmarks.md, "Prepared segments").
const STEP: usize = 256 << 10;
/// The pause between steps, in which group commits go on: the disk is
/// busy with zeros about a fifth of the time.
const PAUSE: Duration = Duration::from_millis(1);
/// No preparation unless this many segments' worth of room would be left
/// after it.
const ROOM_LEFT: u64 = 4;

/// Writes a prepared segment of `size` bytes in `dir`, unless one is
/// there already, the disk is nearly full, or `closing` is set before it
/// is done. Returns whether it wrote one.
pub(crate) fn prepare(dir: &Path, size: u64, closing: &AtomicBool) -> io::Result<bool> {
    let prepared = dir.join(PREPARED);
    if prepared.exists() {
        return Ok(false);
    }
    let room = sluice_sys::disk::available_bytes(dir)?;
    if room < size.saturating_mul(ROOM_LEFT + 1) {
        tracing::debug!(
            room,
            "little room left on the spool's disk: no prepared segment"
        );
        return Ok(false);
    }
    let preparing = dir.join(PREPARING);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&preparing)?;
        if !zero_fill(&mut file, size, closing)? {
            return Ok(false);
        }
        fs::rename(&preparing, &prepared).map(|()| true)
    })();
    match written {
        Ok(true) => Ok(true),
        done => {
            let _ = fs::remove_file(&preparing);
            done
        }
    }
}

/// Returns `false` if `closing` stopped it.
fn zero_fill(file: &mut File, size: u64, closing: &AtomicBool) -> io::Result<bool> {
    let zeros = vec![0u8; STEP];
    let mut done = 0;
    while done < size {
        if closing.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let n = (size - done).min(STEP as u64);
        file.write_all(&zeros[..n as usize])?;
        // Written back now, at the disk's pace, between group commits; an
        // fsync per step would add a cache flush (and on a journaled ext4 a
        // journal commit) per step, and no wait at all would queue the
        // whole file in front of them (docs/benchmarks.md measures both).
        sluice_sys::disk::write_back(file, done, n)?;
        done += n;
        std::thread::sleep(PAUSE);
    }
    // The blocks, the size and the extents all durable, in one flush: what
    // makes the later fdatasyncs data-only.
    file.sync_all()?;
    Ok(true)
}

/// Moves the prepared segment, if there is one, to `to`; returns whether
/// there was.
pub(crate) fn take(dir: &Path, to: &Path) -> io::Result<bool> {
    match fs::rename(dir.join(PREPARED), to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_segment_is_zeros_of_the_size_asked_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let size = 3 * STEP as u64 + 5;
        let open = AtomicBool::new(false);
        assert!(prepare(dir.path(), size, &open).unwrap());
        assert!(!dir.path().join(PREPARING).exists());
        let bytes = fs::read(dir.path().join(PREPARED)).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert!(bytes.iter().all(|&b| b == 0));
        assert!(
            !prepare(dir.path(), size, &open).unwrap(),
            "one is there already"
        );

        let to = dir.path().join("seg-000000000007.log.tmp");
        assert!(take(dir.path(), &to).unwrap());
        assert_eq!(fs::metadata(&to).unwrap().len(), size);
        assert!(!take(dir.path(), &to).unwrap(), "taken already");
    }

    #[test]
    fn no_prepared_segment_when_it_would_leave_too_little_room() {
        let dir = tempfile::tempdir().unwrap();
        let room = sluice_sys::disk::available_bytes(dir.path()).unwrap();
        let open = AtomicBool::new(false);
        assert!(!prepare(dir.path(), room / ROOM_LEFT, &open).unwrap());
        assert!(!dir.path().join(PREPARED).exists());
        assert!(!dir.path().join(PREPARING).exists());
    }

    #[test]
    fn a_closing_spool_stops_a_preparation_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let closing = AtomicBool::new(true);
        assert!(!prepare(dir.path(), 4 * STEP as u64, &closing).unwrap());
        assert!(!dir.path().join(PREPARED).exists());
        assert!(!dir.path().join(PREPARING).exists());
    }
}
