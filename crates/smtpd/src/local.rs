//! Local submission: the Unix socket `sluice sendmail` talks to.
//!
//! Postfix's `postdrop` writes into a setgid-protected maildrop directory;
//! here the local program speaks SMTP to the server over a Unix socket
//! instead, and the kernel says which user it runs as (`SO_PEERCRED`). So
//! the same session, filters and spool take local mail as network mail,
//! and the `250` means what it always means.
//!
//! A local user is trusted to relay (cron and scripts send anywhere), but
//! not to claim someone else's address: unless the operator trusts the user
//! (root, a list manager) to set any sender, a reverse-path that is not the
//! user's own is replaced by `login@origin`. The mail still goes (a web
//! application with a stale `-f` keeps working); it just cannot pose as
//! someone else. Refusing instead would lose the mail of every script that
//! sets `-f` out of habit.

use std::path::PathBuf;
use std::time::SystemTime;

use sluice_smtp::{Path, ReversePath};

use crate::auth::SenderPolicy;

/// Where the socket is and who may set any sender.
#[derive(Debug, Clone)]
pub struct LocalSubmit {
    /// The socket's path; made writable by everyone (who is who comes from
    /// the kernel, not from the file's mode).
    pub socket: PathBuf,
    /// User ids that may use any reverse-path (`sendmail -f`), the null one
    /// included. Everyone else sends as `login@origin`.
    pub trusted_uids: Vec<u32>,
    /// The domain of local users' own addresses (Postfix's `myorigin`).
    pub origin: String,
}

/// A local client's identity, as the kernel gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalUser {
    pub uid: u32,
    /// From the user database; `uid<N>` for an id it does not know.
    pub login: String,
}

impl LocalUser {
    pub(crate) fn new(uid: u32) -> LocalUser {
        LocalUser {
            uid,
            login: sluice_sys::user::login_of(uid).unwrap_or_else(|| format!("uid{uid}")),
        }
    }
}

impl LocalSubmit {
    /// The reverse-path `user` gets instead of `given`, when `given` is not
    /// theirs to use; `None` keeps it. `senders` (with AUTH configured)
    /// lists more addresses a login owns.
    pub(crate) fn correct_reverse_path(
        &self,
        user: &LocalUser,
        given: &ReversePath,
        senders: Option<&SenderPolicy>,
    ) -> Option<ReversePath> {
        if self.trusted_uids.contains(&user.uid) {
            return None;
        }
        let own = match given {
            // Only the mail system itself sends bounces.
            ReversePath::Null => false,
            ReversePath::Path(path) => {
                let address = path.mailbox.text();
                address.eq_ignore_ascii_case(&self.address_of(user))
                    || senders.is_some_and(|s| s.allows(&user.login, &address))
            }
        };
        if own {
            return None;
        }
        Some(
            Path::parse(format!("<{}>", self.address_of(user)).as_bytes())
                .map(ReversePath::Path)
                // A login that makes no address (odd characters): the null
                // reverse-path claims no one either, and bounces go nowhere.
                .unwrap_or(ReversePath::Null),
        )
    }

    /// `login@origin`.
    pub(crate) fn address_of(&self, user: &LocalUser) -> String {
        format!("{}@{}", user.login, self.origin)
    }
}

/// Header fields a locally submitted message lacks and gets, as
/// Postfix's cleanup adds them: `From:` (the envelope sender), `Date:` and
/// `Message-ID:`.
pub(crate) fn missing_fields(
    message: &[u8],
    reverse_path: &ReversePath,
    hostname: &str,
    queue_id: &str,
    now: SystemTime,
) -> Vec<u8> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message);
    let has = |name: &str| {
        parsed.as_ref().is_some_and(|m| {
            m.headers()
                .iter()
                .any(|h| h.name().eq_ignore_ascii_case(name))
        })
    };
    let mut added = Vec::new();
    if !has("From")
        && let ReversePath::Path(path) = reverse_path
    {
        added.extend_from_slice(format!("From: <{}>\r\n", path.mailbox).as_bytes());
    }
    if !has("Date") {
        added.extend_from_slice(
            format!("Date: {}\r\n", sluice_smtp::date::rfc5322_date(now)).as_bytes(),
        );
    }
    if !has("Message-ID") {
        added.extend_from_slice(format!("Message-ID: <{queue_id}@{hostname}>\r\n").as_bytes());
    }
    added
}

/// Binds the socket at `path`, replacing a stale one (a server that died
/// leaves its socket behind), and lets every local user connect.
pub(crate) fn bind(path: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                ),
            ));
        }
        if sluice_sys::unix_socket::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{}: another server answers on it", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = sluice_sys::unix_socket::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit() -> LocalSubmit {
        LocalSubmit {
            socket: PathBuf::from("/nonexistent"),
            trusted_uids: vec![0],
            origin: "host.example.test".into(),
        }
    }

    fn path(s: &str) -> ReversePath {
        ReversePath::Path(Path::parse(s.as_bytes()).unwrap())
    }

    #[test]
    fn a_local_user_sends_as_itself_and_a_trusted_one_as_anyone() {
        let s = submit();
        let nobody = LocalUser {
            uid: 65534,
            login: "nobody".into(),
        };
        let root = LocalUser {
            uid: 0,
            login: "root".into(),
        };
        let own = path("<nobody@host.example.test>");
        assert_eq!(
            s.correct_reverse_path(&nobody, &path("<Nobody@HOST.example.test>"), None),
            None
        );
        assert_eq!(
            s.correct_reverse_path(&nobody, &path("<ceo@example.test>"), None),
            Some(own.clone()),
            "someone else's address is replaced by the user's own"
        );
        assert_eq!(
            s.correct_reverse_path(&nobody, &ReversePath::Null, None),
            Some(own.clone()),
            "bounces come from the mail system only"
        );
        assert_eq!(
            s.correct_reverse_path(&root, &path("<ceo@example.test>"), None),
            None
        );
        assert_eq!(
            s.correct_reverse_path(&root, &ReversePath::Null, None),
            None
        );
        let senders = SenderPolicy {
            explicit: [("nobody".to_string(), vec!["alerts@example.test".into()])].into(),
            local_domains: vec![],
        };
        assert_eq!(
            s.correct_reverse_path(&nobody, &path("<alerts@example.test>"), Some(&senders)),
            None,
            "an address [auth.senders] gives the login counts too"
        );
    }

    #[test]
    fn missing_fields_are_added_and_present_ones_left_alone() {
        let now = std::time::UNIX_EPOCH;
        let sender = path("<cron@host.test>");
        let bare = b"Subject: backup\r\n\r\ndone\r\n";
        assert_eq!(
            String::from_utf8(missing_fields(bare, &sender, "mx.test", "Q1", now)).unwrap(),
            "From: <cron@host.test>\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <Q1@mx.test>\r\n"
        );
        let full = b"from: x@y\r\nDATE: Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-Id: <a@b>\r\n\r\nhi\r\n";
        assert!(missing_fields(full, &sender, "mx.test", "Q1", now).is_empty());
        let no_header = b"\r\njust a body\r\n";
        assert!(
            String::from_utf8(missing_fields(
                no_header,
                &ReversePath::Null,
                "mx.test",
                "Q1",
                now
            ))
            .unwrap()
            .starts_with("Date: "),
            "no From: can be made from a null reverse-path"
        );
    }
}
