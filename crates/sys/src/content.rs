//! A received message's bytes: in memory when small, in an unnamed file
//! mapped read-only when large, so a 20 MiB message streaming in costs the
//! front end a bounded amount of heap, not the message's size twice over.
//!
//! A [`Spill`] is an unnamed file (`O_TMPFILE`, or a name unlinked at once
//! where the filesystem lacks it) in the directory the caller names (the
//! spool's, so the bytes land on the disk that will keep them and nothing is
//! left behind by a crash). Content is appended as it arrives; [`Spill::finish`]
//! maps it and hands back [`Content`], which every reader of the message
//! (filters, DKIM, the spool writer) sees as `&[u8]`.
//!
//! # Why the `unsafe` here is sound
//!
//! `memmap2::Mmap::map` is `unsafe` because the mapped bytes change, or
//! fault with SIGBUS, if the file is written or truncated behind the mapping.
//! A spill file has no name from the moment it exists (or from the next
//! system call, in the fallback, before a byte is written): no other process
//! can open it by path. This process writes it only through the `Spill`,
//! which [`Spill::finish`] consumes before it maps, and the `File` is closed
//! right after, so nothing can write it once it is mapped. The mapping keeps
//! the unnamed file alive until the last [`Content`] is dropped.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Deref;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};

/// A message's bytes, wherever they are kept. Reads as `&[u8]`.
#[derive(Debug)]
pub enum Content {
    /// Small messages: on the heap.
    Heap(Vec<u8>),
    /// Large messages: an unnamed file, mapped read-only.
    Mapped(Mmap),
}

impl Content {
    /// Whether the bytes are in a file rather than on the heap.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Content::Mapped(_))
    }
}

impl Deref for Content {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Content::Heap(v) => v,
            Content::Mapped(m) => m,
        }
    }
}

impl AsRef<[u8]> for Content {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Self {
        Content::Heap(bytes)
    }
}

/// An unnamed file a message's bytes are appended to as they arrive.
#[derive(Debug)]
pub struct Spill {
    file: File,
    len: u64,
}

impl Spill {
    /// A new, empty, unnamed file in `dir` (mode 0600).
    pub fn create_in(dir: &Path) -> io::Result<Spill> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
        {
            Ok(file) => file,
            // Filesystems without O_TMPFILE say so in more than one way.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                named_then_unlinked(dir)?
            }
            Err(e) => return Err(e),
        };
        Ok(Spill { file, len: 0 })
    }

    /// Appends `bytes` (page cache only: durability is the spool's job, once
    /// the message is complete and accepted).
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the last `tail` and maps the whole file read-only.
    pub fn finish(mut self, tail: &[u8]) -> io::Result<Content> {
        self.append(tail)?;
        if self.len == 0 {
            // A zero-length mapping is an error; nothing to map anyway.
            return Ok(Content::Heap(Vec::new()));
        }
        let len = usize::try_from(self.len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "spill too large to map"))?;
        // SAFETY: see the module documentation: the file has no name, the
        // `Spill` (its only writer) is consumed here, and the `File` is
        // dropped when this returns, before anyone reads the mapping.
        let map = unsafe { MmapOptions::new().len(len).map(&self.file)? };
        Ok(Content::Mapped(map))
    }
}

fn named_then_unlinked(dir: &Path) -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".spill-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_bytes_read_back_in_order_and_leave_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::create_in(dir.path()).unwrap();
        spill.append(b"Received: x\r\n").unwrap();
        spill.append(&[b'a'; 100_000]).unwrap();
        assert_eq!(spill.len(), 100_013);
        let content = spill.finish(b"\r\nend\r\n").unwrap();
        assert!(content.is_mapped());
        assert_eq!(content.len(), 100_020);
        assert!(content.starts_with(b"Received: x\r\naaa"));
        assert!(content.ends_with(b"a\r\nend\r\n"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(names.is_empty(), "a spill leaves no file behind: {names:?}");
    }

    #[test]
    fn the_fallback_also_leaves_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = named_then_unlinked(dir.path()).unwrap();
        file.write_all(b"x").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_empty_spill_is_empty_content() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create_in(dir.path()).unwrap();
        assert!(spill.is_empty());
        let content = spill.finish(b"").unwrap();
        assert!(!content.is_mapped());
        assert!(content.is_empty());
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Spill::create_in(&dir.path().join("gone")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
