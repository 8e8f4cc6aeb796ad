//! What delivery left behind: Maildir files, and the operator's view of the
//! queue through `sluice queue`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::binary::sluice_bin;
use crate::process::run;
use crate::queue::header_field_end;
use crate::server::{HOSTNAME, Server};
use crate::wait_for;

/// How long one `sluice queue` command may run.
const QUEUE_COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// One delivered message file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaildirMessage {
    /// `new/<name>` or `cur/<name>`.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// A Maildir file taken apart: the two header fields local delivery adds,
/// then the stored message: our `Received:` first when the message was
/// received over SMTP (a bounce we made ourselves has none), then the
/// content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered<'a> {
    /// What `Return-Path:` holds, angle brackets included (`<>` for none).
    pub return_path: &'a str,
    pub delivered_to: &'a str,
    /// The `Received:` header field, folding and final CRLF included.
    pub received: Option<&'a str>,
    /// Everything after `Received:`: the message as the client sent it.
    pub content: &'a [u8],
}

impl MaildirMessage {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Splits the file; panics unless it starts with `Return-Path:` and
    /// `Delivered-To:`, each a CRLF-terminated line.
    pub fn delivered(&self) -> Delivered<'_> {
        let fail =
            |what: &str| -> ! { panic!("{}: {what}: {:?}", self.path.display(), self.text()) };
        let line = |from: usize, name: &str| -> (&str, usize) {
            let rest = &self.bytes[from..];
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .unwrap_or_else(|| fail("a header line without CRLF"));
            let text = std::str::from_utf8(&rest[..end])
                .unwrap_or_else(|_| fail("a non-UTF-8 header line"));
            let value = text
                .strip_prefix(name)
                .unwrap_or_else(|| fail(&format!("expected {name}")));
            (value, from + end + 2)
        };
        let (return_path, at) = line(0, "Return-Path: ");
        let (delivered_to, at) = line(at, "Delivered-To: ");
        let stored = &self.bytes[at..];
        let (received, content) = if stored.starts_with(b"Received: ") {
            let (received, content) = split_received(stored);
            (Some(received), content)
        } else {
            (None, stored)
        };
        Delivered {
            return_path,
            delivered_to,
            received,
            content,
        }
    }

    /// Like [`MaildirMessage::delivered`], and panics unless the stored
    /// message starts with our `Received:` for queue id `id`, as a message
    /// from `client.example` at 127.0.0.1 (the harness client) does.
    pub fn received_content(&self, id: &str) -> &[u8] {
        let d = self.delivered();
        let want = received_prefix(id);
        match d.received {
            Some(r) if r.starts_with(&want) => d.content,
            other => panic!(
                "{}: Received: {other:?} does not start with {want:?}",
                self.path.display()
            ),
        }
    }
}

/// How our `Received:` field starts for message `id` from the harness's
/// client (`EHLO client.example` from 127.0.0.1).
pub fn received_prefix(id: &str) -> String {
    format!(
        "Received: from client.example ([127.0.0.1])\r\n\tby {HOSTNAME} (Sluice) with ESMTP id {id}"
    )
}

/// A stored message (as relayed, or after local delivery's two fields)
/// split into its first header field, our `Received:` (folding and final
/// CRLF included), and the rest: the content as the client sent it.
pub fn split_received(stored: &[u8]) -> (&str, &[u8]) {
    let end = header_field_end(stored);
    let received = std::str::from_utf8(&stored[..end])
        .unwrap_or_else(|_| panic!("a non-UTF-8 first header field: {stored:?}"));
    (received, &stored[end..])
}

/// The messages in the Maildir `dir` (`new/` and `cur/`; `tmp/` holds only
/// deliveries in progress), sorted by file name. A missing Maildir is empty.
pub fn maildir_messages(dir: &Path) -> Vec<MaildirMessage> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read a Maildir entry").path();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.push(MaildirMessage { path, bytes });
        }
    }
    out.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    out
}

/// Waits at most `limit` until the Maildir `dir` holds at least `n`
/// messages; returns them, or panics with what is there.
pub fn wait_for_maildir(dir: &Path, n: usize, limit: Duration) -> Vec<MaildirMessage> {
    wait_for(limit, || {
        let found = maildir_messages(dir);
        (found.len() >= n).then_some(found)
    })
    .unwrap_or_else(|| {
        panic!(
            "{} did not get {n} message(s) within {limit:?}; it has {}",
            dir.display(),
            maildir_messages(dir).len()
        )
    })
}

impl Server {
    /// The Maildir root of a server whose `[local]` table leaves
    /// `maildir_root` at its default: `var/mail` in the working directory.
    pub fn maildir_root(&self) -> PathBuf {
        self.dir().join("var/mail")
    }

    /// The Maildir of local user `user`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.maildir_root().join(user)
    }

    /// Every message in every Maildir under the root.
    pub fn all_maildir_messages(&self) -> Vec<MaildirMessage> {
        let Ok(users) = std::fs::read_dir(self.maildir_root()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for user in users {
            out.extend(maildir_messages(
                &user.expect("a Maildir root entry").path(),
            ));
        }
        out
    }

    /// Runs `sluice queue <args> --spool <this server's spool>`.
    pub fn queue_command(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("queue")
            .args(args)
            .arg("--spool")
            .arg(self.spool_dir());
        run(cmd, b"", QUEUE_COMMAND_LIMIT)
    }

    /// Like [`Server::queue_command`], but panics unless it succeeds, and
    /// returns its standard output.
    pub fn queue_ok(&self, args: &[&str]) -> String {
        let out = self.queue_command(args);
        assert!(
            out.status.success(),
            "`sluice queue {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
