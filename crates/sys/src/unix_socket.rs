//! Unix-domain sockets whose path is longer than `sun_path` can hold.
//!
//! A socket address holds at most 107 octets of path (108 with the NUL), so
//! `bind` and `connect` fail with "path must be shorter than SUN_LEN" for a
//! socket in a deep directory: a per-instance spool such as
//! `/var/lib/containers/storage/volumes/<64 hex digits>/_data/spool` is
//! already too long. Postfix avoids the limit by `chdir`ing into its queue
//! directory and using relative names; a multi-threaded server cannot change
//! its working directory safely. Instead, when the path is too long, the
//! directory is opened and the socket is named through
//! `/proc/self/fd/<fd>/<name>`, a short path that the kernel resolves to the
//! same directory (Linux; systemd does the same). The directory descriptor
//! is closed once the call returns: the socket file lives on in the
//! directory, and a client finds it by the same means.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest path a socket address holds, without the terminating NUL.
pub const MAX_PATH: usize = 107;

/// Whether `path` can be used as a socket address as it stands.
pub fn fits(path: &Path) -> bool {
    path.as_os_str().len() <= MAX_PATH
}

/// Whether sockets at any path length can be reached on this system (the
/// `/proc/self/fd` route is available). `check-config` asks this before it
/// passes a configuration whose socket paths are too long.
pub fn long_paths_supported() -> bool {
    Path::new("/proc/self/fd").is_dir()
}

/// A short name for `path`, and the open directory that keeps it valid.
fn short_name(path: &Path) -> io::Result<(PathBuf, Option<File>)> {
    if fits(path) {
        return Ok((path.to_path_buf(), None));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file name in a directory", path.display()),
        ));
    };
    if !long_paths_supported() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the socket path {} is longer than {MAX_PATH} octets and /proc is not mounted",
                path.display()
            ),
        ));
    }
    // Opening a directory read-only gives a descriptor to resolve names
    // against, which is all `/proc/self/fd/<fd>/` needs.
    let dir = File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })?;
    let mut short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    short.push(name);
    if !fits(&short) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the socket name {name:?} alone is too long"),
        ));
    }
    Ok((short, Some(dir)))
}

/// `UnixListener::bind`, for a path of any length.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let (short, _dir) = short_name(path)?;
    UnixListener::bind(short)
}

/// `UnixStream::connect`, for a path of any length.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let (short, _dir) = short_name(path)?;
    UnixStream::connect(short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A directory whose path alone is longer than a socket address holds.
    fn deep_dir() -> (tempfile::TempDir, PathBuf) {
        let top = tempfile::tempdir().expect("temp dir");
        let mut dir = top.path().to_path_buf();
        while dir.as_os_str().len() <= MAX_PATH + 20 {
            dir.push("a-rather-long-directory-name");
        }
        std::fs::create_dir_all(&dir).expect("create the deep directory");
        (top, dir)
    }

    #[test]
    fn a_socket_in_a_deep_directory_binds_and_accepts() {
        let (_top, dir) = deep_dir();
        let path = dir.join("control.sock");
        // What std alone does with it: the failure this module exists for.
        assert!(UnixListener::bind(&path).is_err());

        let listener = bind(&path).expect("bind through /proc/self/fd");
        assert!(path.exists(), "the socket file is in the deep directory");
        let mut client = connect(&path).expect("connect through /proc/self/fd");
        let (mut served, _) = listener.accept().expect("accept");
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        served.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn short_paths_are_used_as_they_are() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sock");
        assert!(fits(&path));
        let (short, held) = short_name(&path).unwrap();
        assert_eq!(short, path);
        assert!(held.is_none());
        let _listener = bind(&path).expect("bind");
        assert!(connect(&path).is_ok());
    }

    #[test]
    fn connecting_to_a_missing_socket_is_an_error_not_a_panic() {
        let (_top, dir) = deep_dir();
        let err = connect(&dir.join("nobody.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}

/// The user id of the process at the other end of a connected Unix socket
/// (`SO_PEERCRED`): who is submitting, as the kernel says, not as they say.
pub fn peer_uid(socket: &impl std::os::fd::AsFd) -> io::Result<u32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(socket, PeerCredentials)
        .map(|c| c.uid())
        .map_err(io::Error::from)
}

#[cfg(test)]
mod peer_tests {
    use super::*;

    #[test]
    fn the_peer_is_this_process_s_user() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let me = std::fs::metadata("/proc/self").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(peer_uid(&a).unwrap(), me.uid());
    }
}
