//! The one place that maps segment files into memory.
//!
//! `memmap2::Mmap::map` is `unsafe` because the mapped bytes can change or
//! vanish (SIGBUS) if the file is modified or truncated behind the mapping.
//! Why that cannot happen to the bytes this crate reads:
//!
//! - Records are only ever appended (over the zeros of a prepared file,
//!   below every byte a reader is pointed at). The only truncation is the writer's
//!   rewind after a failed batch, and it never goes below the end of the last
//!   durable record; readers only ever slice bytes of durable records (the
//!   index holds nothing else), which lie below every rewind point.
//! - Recovery cuts a torn tail off the head after scanning it through a
//!   mapping, and keeps that mapping for reads: its bytes past the cut are
//!   never touched, since the index points only below it.
//! - A deleted segment stays mapped (unlinking does not touch the pages), so
//!   a [`StoredMessage`](crate::StoredMessage) outliving compaction stays
//!   valid. The reaper shrinks a dead file before unlinking it (to free its
//!   blocks gently), and waits until no reader holds any mapping the
//!   segment ever had: the index keeps a weak reference to each mapping a
//!   larger one replaced (see `reaper`).
//! - Other processes: `spool.lock` keeps a second writer out. A read-only
//!   opener copies the newest segment's records (it is the only segment a
//!   live writer may still rewind) into private memory instead of mapping
//!   it ([`snapshot`]); older segments are sealed, and a dead one is cut
//!   only under an exclusive `flock`, which waits for the shared one a
//!   read-only opener holds on each file it maps (taken while the file
//!   still has its name). Editing segment files by hand while the spool
//!   runs is outside the contract.
//!
//! Mapping beyond the current end of file is allowed by POSIX (those pages
//! fault only if touched); the head segment is mapped at its full capacity so
//! appends become visible without a remap per message.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

pub(crate) fn map(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: see the module documentation: bytes below `len` that this crate
    // reads are never modified or truncated while mapped.
    unsafe { MmapOptions::new().len(len).map(file) }
}

/// A private, read-only copy of the first `len` bytes of `file` in anonymous
/// memory. A read-only opener uses it for the newest segment, the only one
/// a live writer may still truncate (rewinding a failed batch, typically
/// while the disk is full, which is when operators look at the queue): a
/// shared mapping of pages cut off behind it would raise SIGBUS.
///
/// The copy goes a chunk at a time, and stops early once `holds_all(copied,
/// last_chunk_start)` says the bytes copied hold everything worth reading
/// (a prepared head is mostly zeros past its records); the rest of the
/// mapping stays untouched zero pages, which cost no memory.
pub(crate) fn snapshot(
    file: &File,
    len: usize,
    mut holds_all: impl FnMut(&[u8], usize) -> bool,
) -> io::Result<Mmap> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 1 << 20;
    let mut copy = MmapOptions::new().len(len.max(1)).map_anon()?;
    let mut done = 0;
    while done < len {
        let chunk = done;
        let end = len.min(done + CHUNK);
        while done < end {
            match file.read_at(&mut copy[done..end], done as u64)? {
                // Truncated meanwhile: the rest stays zero and scans as a torn tail.
                0 => return copy.make_read_only(),
                n => done += n,
            }
        }
        if holds_all(&copy[..done], chunk) {
            break;
        }
    }
    copy.make_read_only()
}
