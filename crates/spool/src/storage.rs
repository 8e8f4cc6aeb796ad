//! The writer's view of a segment file, behind a private trait so that tests
//! can inject disk-full and I/O errors into the real writer code path.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::Path;

/// An open segment, positioned at its end.
pub(crate) trait SegmentFile: Send {
    /// One `writev` at the current position.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// `ftruncate` to `len` and continue writing there.
    fn rewind_to(&mut self, len: u64) -> io::Result<()>;
}

/// Creates and opens segment files.
pub(crate) trait Storage: Send + Sync {
    /// Creates (or empties) the file at `path`, positioned at 0.
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens an existing segment whose valid data ends at `len`.
    fn open_append(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>>;
}

#[derive(Debug)]
pub(crate) struct RealStorage;

impl SegmentFile for File {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Write::write_vectored(self, bufs)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn rewind_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len)).map(drop)
    }
}

impl Storage for RealStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(f))
    }

    fn open_append(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let mut f = OpenOptions::new().read(true).write(true).open(path)?;
        f.seek(SeekFrom::Start(len))?;
        Ok(Box::new(f))
    }
}

/// Writes every byte of `bufs`, however the kernel splits the `writev`s.
/// Returns the number of `writev` calls made.
pub(crate) fn write_all_vectored(
    file: &mut dyn SegmentFile,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<u64> {
    // The kernel accepts at most IOV_MAX (1024 on Linux) slices per call.
    const IOV_MAX: usize = 1024;
    let mut calls = 0;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = bufs.len().min(IOV_MAX);
        calls += 1;
        match file.write_vectored(&bufs[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => IoSlice::advance_slices(&mut bufs, k),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(calls)
}
