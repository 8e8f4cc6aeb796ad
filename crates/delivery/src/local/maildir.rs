//! Writing one message into a Maildir.
//!
//! # The file
//!
//! ```text
//! Return-Path: <reverse-path>        ("<>" for the null reverse-path, RFC 5321 §4.4)
//! Delivered-To: <original recipient> (the envelope's forward-path, before aliases)
//! <the stored message, byte for byte: our Received: header first>
//! ```
//!
//! Line endings stay CRLF, as received, rather than being rewritten to the
//! LF that Maildir files traditionally hold:
//!
//! - The bytes in the mailbox are the bytes that were signed and accepted:
//!   DKIM and S/MIME signatures still verify, and nothing about the content
//!   depends on a conversion we could get wrong (a bare CR or LF cannot
//!   occur, the SMTP front end refuses them).
//! - The body goes from the spool's memory map to the file with one
//!   `writev` and no copy; converting would mean a second pass and a buffer
//!   the size of the message.
//! - Dovecot, the usual reader of these Maildirs, handles CRLF files (it
//!   reads either, and serves IMAP with CRLF anyway); so do Courier and
//!   mutt.
//!
//! # The name and the steps (the Maildir convention)
//!
//! `<seconds>.M<microseconds>P<pid>Q<n>.<hostname>,S=<size>,W=<size>`, with
//! `n` counting this process's deliveries and `/`, `:` and `,` in the
//! hostname written `\057`, `\072` and `\054` (`:` starts the flags of a
//! name in `cur/`, `,` the size fields).
//! `S=` and `W=` are the Maildir++ size fields that Dovecot and Courier read
//! instead of stat'ing or scanning the file: `S=` is the file's size, `W=`
//! its size with CRLF line endings (RFC822.SIZE in IMAP), the same number
//! here since the file keeps CRLF. The file is created in
//! `tmp/` (mode 0600; missing directories are created 0700), written with
//! one `writev` loop, `fdatasync`'ed, hard-linked into `new/`, and `new/`
//! is `fsync`'ed; only then is the `tmp/` name removed and delivery
//! reported. So a recipient the journal marks delivered is on disk, and a
//! crash at any step leaves at worst a stray file in `tmp/` (which Maildir
//! readers clean up) and a duplicate after the retry, never a loss. Where a
//! file system cannot hard-link, the file is renamed into `new/` instead.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, IoSlice, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Outcome;

/// Deliveries made by this process: the `Q` part of the name. Process-wide
/// (not per [`Local`](super::Local)) because that is what keeps names from
/// two instances in one process apart.
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// The hostname as it may appear in a Maildir file name.
pub fn escape_hostname(hostname: &str) -> String {
    let mut out = String::with_capacity(hostname.len());
    for c in hostname.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            // Starts the Maildir++ fields (`,S=`) that follow the hostname.
            ',' => out.push_str("\\054"),
            c => out.push(c),
        }
    }
    out
}

/// A user name that names one directory directly under the Maildir root.
/// `..`, `.` and anything with `/` would put the Maildir elsewhere.
fn is_safe_user(user: &str) -> bool {
    !user.is_empty() && user != "." && user != ".." && !user.contains(['/', '\0'])
}

/// The result for an I/O error at any step; every one is temporary, since
/// the operator can free space or fix permissions and the retry succeeds.
pub fn io_error_outcome(err: &io::Error) -> Outcome {
    match err.kind() {
        ErrorKind::QuotaExceeded => Outcome::local(452, (4, 2, 2), "Mailbox full"),
        ErrorKind::StorageFull => Outcome::local(452, (4, 3, 1), "Mail system full"),
        _ => Outcome::local(
            451,
            (4, 3, 0),
            format!("Local delivery failed: {}", printable(&err.to_string())),
        ),
    }
}

pub(super) fn deliver(
    root: &Path,
    file_host: &str,
    user: &str,
    reverse_path: &str,
    original_recipient: &str,
    body: &[u8],
) -> Outcome {
    if !is_safe_user(user) {
        return Outcome::local(
            550,
            (5, 1, 1),
            format!("{}: no such mailbox", printable(user)),
        );
    }
    // Addresses passed the SMTP grammar, which refuses CR and LF; a header
    // is still no place to trust that.
    let header = format!(
        "Return-Path: <{}>\r\nDelivered-To: {}\r\n",
        printable(reverse_path),
        printable(original_recipient)
    );
    match write_message(&root.join(user), file_host, header.as_bytes(), body) {
        Ok(name) => Outcome::local(
            250,
            (2, 0, 0),
            format!("Delivered to Maildir of {user} as {name}"),
        ),
        Err(err) => io_error_outcome(&err),
    }
}

/// Text from the envelope or an error goes into headers, replies and logs:
/// one line, no controls.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn unique_name(file_host: &str, size: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{}.{},S={size},W={size}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        file_host
    )
}

/// Creates the Maildir's three directories, as needed, and makes their
/// names durable: a `new/` that vanishes in a crash would take the messages
/// linked into it along.
fn create_maildir(maildir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true).mode(0o700);
    for sub in ["tmp", "new", "cur"] {
        builder.create(maildir.join(sub))?;
    }
    sync_dir(maildir)?;
    if let Some(parent) = maildir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_in_tmp(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// `write_all` over several buffers: `Write::write_all_vectored` is not
/// stable yet.
fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How the file got into `new/`.
enum Published {
    /// Hard-linked: the `tmp/` name is still there, to remove.
    Linked,
    Renamed,
}

fn publish(tmp: &Path, new: &Path) -> io::Result<Published> {
    match fs::hard_link(tmp, new) {
        Ok(()) => Ok(Published::Linked),
        // Some file systems (FAT, some FUSE and network ones) have no hard
        // links. rename() is as atomic; what is lost is only link()'s refusal
        // to replace an existing name, which unique names make moot.
        Err(e) if e.kind() == ErrorKind::Unsupported || e.raw_os_error() == Some(EPERM) => {
            fs::rename(tmp, new).map(|()| Published::Renamed)
        }
        Err(e) => Err(e),
    }
}

/// `EPERM`: what Linux's link() returns on file systems without hard links.
const EPERM: i32 = 1;

/// Returns the file name in `new/`.
fn write_message(
    maildir: &Path,
    file_host: &str,
    header: &[u8],
    body: &[u8],
) -> io::Result<String> {
    let name = unique_name(file_host, header.len() + body.len());
    let tmp = maildir.join("tmp").join(&name);
    let new_dir = maildir.join("new");
    let new = new_dir.join(&name);

    // Try first and create on NotFound: the Maildir exists on every delivery
    // but the first, and a stat per delivery would be wasted syscalls.
    let mut file = match create_in_tmp(&tmp) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            create_maildir(maildir)?;
            create_in_tmp(&tmp)?
        }
        other => other?,
    };

    let mut published = None;
    let result = (|| {
        write_all_vectored(&mut file, &mut [IoSlice::new(header), IoSlice::new(body)])?;
        // fdatasync: a new file's size is part of what it flushes.
        file.sync_data()?;
        published = Some(match publish(&tmp, &new) {
            // A Maildir whose tmp/ exists but new/ does not.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                create_maildir(maildir)?;
                publish(&tmp, &new)?
            }
            other => other?,
        });
        sync_dir(&new_dir)
    })();

    match (result, published) {
        (Ok(()), Some(Published::Linked)) => {
            // After the fsync of new/, not before: until then the tmp/ name
            // may be the only one a crash would leave.
            if let Err(e) = fs::remove_file(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "could not remove delivered file from tmp/");
            }
            Ok(name)
        }
        (Ok(()), _) => Ok(name),
        (Err(e), published) => {
            // The retry writes a fresh copy, so this one must not surface
            // in new/ as a duplicate, nor linger in tmp/.
            if published.is_some() {
                let _ = fs::remove_file(&new);
            }
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}
