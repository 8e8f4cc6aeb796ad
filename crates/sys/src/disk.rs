//! What the spool needs of its file system: how much room is left, whether
//! it writes in place, and a range written back without a flush.
//!
//! # Why the `unsafe` here is sound
//!
//! `sync_file_range` (which nix does not wrap) takes a file descriptor and
//! three integers, and touches no memory of ours. The descriptor is
//! borrowed from a `File` for the length of the call, so it is open and
//! ours; offsets the file does not have are the kernel's to refuse
//! (`EINVAL`), not undefined behaviour.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Writes `len` bytes of `file` from `offset` to the disk and waits until
/// they are written, with no cache flush and no metadata (Linux's
/// `sync_file_range` with `WAIT_BEFORE | WRITE | WAIT_AFTER`): not
/// durable, but paced. Bulk writes made a range at a time this way go to
/// the disk at the disk's speed, between other writers' requests, instead
/// of in one burst at the `fsync` that must follow them for durability.
pub fn write_back(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: see the module comment: a borrowed, open descriptor and
    // integers.
    let r = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes an unprivileged writer may still use on the file system holding
/// `path` (`statvfs`'s available blocks, not the root-reserved free ones).
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// Whether the file system holding `path` writes a file's existing blocks
/// in place (ext2/3/4, XFS), so that blocks written ahead spare later
/// writes their allocation. Copy-on-write and log-structured file systems
/// (btrfs, ZFS, F2FS) put every write somewhere new, and tmpfs is memory:
/// no.
pub fn overwrites_in_place(path: &Path) -> io::Result<bool> {
    use nix::sys::statfs::{EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, statfs};
    // ext2, ext3 and ext4 share one magic number.
    let kind = statfs(path).map_err(io::Error::from)?.filesystem_type();
    Ok(kind == EXT4_SUPER_MAGIC || kind == XFS_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_has_room_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let room = available_bytes(dir.path()).unwrap();
        // In bytes, not blocks: any file system a test runs on has more
        // than a few megabytes free.
        assert!(room > 4 << 20, "{room}");
        let e = available_bytes(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_range_is_written_back_and_bad_input_is_an_error() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("f")).unwrap();
        file.write_all(&[7u8; 64 << 10]).unwrap();
        write_back(&file, 0, 64 << 10).unwrap();
        file.sync_all().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("f")).unwrap(),
            vec![7u8; 64 << 10]
        );
        let e = write_back(&file, u64::MAX, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // The kernel's own refusal: a range whose end overflows.
        let e = write_back(&file, i64::MAX as u64 - 1, 10).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn the_file_system_kind_agrees_with_the_mount_table() {
        // /proc is procfs, never written in place; the mount table names
        // the type of the file system under the working directory.
        assert!(!overwrites_in_place(Path::new("/proc")).unwrap());
        let cwd = std::env::current_dir().unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        // The longest mount point above it; of several at one point, the
        // last mounted (it hides the others).
        let kind = mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
                cwd.starts_with(at).then(|| (at.len(), kind.to_owned()))
            })
            .reduce(|best, m| if m.0 >= best.0 { m } else { best })
            .map(|(_, kind)| kind)
            .unwrap();
        let expected = matches!(kind.as_str(), "ext2" | "ext3" | "ext4" | "xfs");
        assert_eq!(overwrites_in_place(&cwd).unwrap(), expected, "{kind}");
    }
}
