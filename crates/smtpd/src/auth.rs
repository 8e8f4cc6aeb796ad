//! SMTP AUTH on `submission` and `smtps` listeners, and what submission
//! asks of an authenticated client's mail (RFC 6409).
//!
//! Passwords are checked on worker threads of their own (a hash takes tens
//! of milliseconds by design; Dovecot is a round trip), which answer
//! through the event loop's inbox, as filters do. A failure's reply waits a
//! while on a timer of the event loop (no thread sleeps), and a connection
//! that fails too often is closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use sluice_auth::{AuthError, Authenticator, Guard, Verified};
use sluice_smtp::{EnhancedCode, Reply, ReversePath};

use crate::event_loop::{Completion, CompletionKind, Inbox};

/// What the front end needs for AUTH.
#[derive(Debug, Clone)]
pub struct AuthSetup {
    pub authenticator: Arc<dyn Authenticator>,
    /// Failed logins counted per address and login; `None`: not counted.
    pub guard: Option<Guard>,
    /// Failed AUTH commands one connection may make; the next failure
    /// also closes it with `421 4.7.0`.
    pub max_failures: u32,
    /// How long the reply to a failed AUTH waits.
    pub failure_delay: Duration,
    /// Threads that check passwords.
    pub threads: usize,
    pub senders: SenderPolicy,
}

/// Which addresses a login may send as, in MAIL FROM and in `From:`
/// (RFC 6409 §6.1).
#[derive(Debug, Clone, Default)]
pub struct SenderPolicy {
    /// Login (lower case) → its addresses (lower case). A login listed here
    /// may use these and no other.
    pub explicit: HashMap<String, Vec<String>>,
    /// For logins not listed: `login@<each of these>`.
    pub local_domains: Vec<String>,
}

impl SenderPolicy {
    /// Whether `login` may send as `address` (`local@domain`).
    pub fn allows(&self, login: &str, address: &str) -> bool {
        let (login, address) = (login.to_ascii_lowercase(), address.to_ascii_lowercase());
        match self.explicit.get(&login) {
            Some(list) => list.contains(&address),
            None if login.contains('@') => address == login,
            None => self
                .local_domains
                .iter()
                .any(|d| address == format!("{login}@{}", d.to_ascii_lowercase())),
        }
    }

    /// The refusal for MAIL FROM `reverse_path` from `login`, if any. The
    /// null reverse-path is allowed: it claims no one.
    pub fn check_mail(&self, login: &str, reverse_path: &ReversePath) -> Option<Reply> {
        let ReversePath::Path(path) = reverse_path else {
            return None;
        };
        let address = path.mailbox.text();
        (!self.allows(login, &address)).then(|| not_yours(login, &address))
    }
}

fn not_yours(login: &str, address: &str) -> Reply {
    Reply::new(
        553,
        Some(EnhancedCode::new(5, 7, 1)),
        format!("<{address}>: Sender address rejected: not owned by user {login}"),
    )
}

/// A password to check, and where the answer goes.
pub(crate) struct AuthJob {
    pub inbox: Arc<Inbox>,
    pub slot: usize,
    pub serial: u64,
    pub login: String,
    pub password: sluice_smtp::server::Password,
    pub client: IpAddr,
}

/// What the worker found.
#[derive(Debug)]
pub(crate) enum AuthOutcome {
    Ok(Verified),
    Bad,
    /// Too many failures from this address or for this login lately.
    Blocked,
    Unavailable(String),
}

/// Starts the workers; returns where jobs go.
pub(crate) fn start_workers(setup: &AuthSetup) -> std::io::Result<Sender<AuthJob>> {
    let (jobs, queue) = crossbeam_channel::unbounded::<AuthJob>();
    for i in 0..setup.threads.max(1) {
        let (queue, setup) = (queue.clone(), setup.clone());
        std::thread::Builder::new()
            .name(format!("smtpd-auth-{i}"))
            .spawn(move || work(&queue, &setup))?;
    }
    Ok(jobs)
}

fn work(queue: &Receiver<AuthJob>, setup: &AuthSetup) {
    for job in sluice_sys::parked(queue) {
        let outcome = check(setup, &job);
        job.inbox.push(Completion {
            slot: job.slot,
            serial: job.serial,
            kind: CompletionKind::Auth(outcome),
        });
    }
}

fn check(setup: &AuthSetup, job: &AuthJob) -> AuthOutcome {
    if let Some(guard) = &setup.guard
        && guard.is_blocked(job.client, &job.login)
    {
        return AuthOutcome::Blocked;
    }
    match setup
        .authenticator
        .authenticate(&job.login, job.password.expose(), job.client)
    {
        Ok(verified) => AuthOutcome::Ok(verified),
        Err(AuthError::BadCredentials) => {
            if let Some(guard) = &setup.guard {
                guard.failed(job.client, &job.login);
            }
            AuthOutcome::Bad
        }
        Err(AuthError::Unavailable(why)) => AuthOutcome::Unavailable(why),
    }
}

/// The replies AUTH ends with.
pub(crate) fn bad_credentials() -> Reply {
    Reply::new(
        535,
        Some(EnhancedCode::new(5, 7, 8)),
        "Authentication credentials invalid",
    )
}

pub(crate) fn unavailable() -> Reply {
    Reply::new(
        454,
        Some(EnhancedCode::new(4, 7, 0)),
        "Temporary authentication failure",
    )
}

pub(crate) fn blocked() -> Reply {
    Reply::new(
        454,
        Some(EnhancedCode::new(4, 7, 0)),
        "Too many failed logins; try again later",
    )
}

pub(crate) fn too_many(hostname: &str) -> Reply {
    Reply::new(
        421,
        Some(EnhancedCode::new(4, 7, 0)),
        format!("{hostname} Too many authentication failures; closing connection"),
    )
}

/// What submission does to an authenticated client's message (RFC 6409
/// §8): the header fields to add in front (`Date:`, `Message-ID:` when
/// missing), or why it is refused (no `From:` that parses, or a `From:`
/// address the login does not own).
pub(crate) fn fix_message(
    message: &[u8],
    login: &str,
    senders: &SenderPolicy,
    hostname: &str,
    queue_id: &str,
    now: SystemTime,
) -> Result<Vec<u8>, Reply> {
    let parsed = mail_parser::MessageParser::new()
        .parse_headers(message)
        .ok_or_else(no_from)?;
    let from: Vec<String> = parsed
        .from()
        .map(|a| {
            a.iter()
                .filter_map(|addr| addr.address().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if from.is_empty() {
        return Err(no_from());
    }
    if let Some(other) = from.iter().find(|a| !senders.allows(login, a)) {
        return Err(not_yours(login, other));
    }
    let mut added = Vec::new();
    if parsed.date().is_none() {
        added.extend_from_slice(
            format!("Date: {}\r\n", sluice_smtp::date::rfc5322_date(now)).as_bytes(),
        );
    }
    if parsed.message_id().is_none() {
        added.extend_from_slice(format!("Message-ID: <{queue_id}@{hostname}>\r\n").as_bytes());
    }
    Ok(added)
}

fn no_from() -> Reply {
    Reply::new(
        550,
        Some(EnhancedCode::new(5, 6, 0)),
        "Message refused: it needs a From: header field with an address",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_smtp::Path;

    fn policy() -> SenderPolicy {
        SenderPolicy {
            explicit: [(
                "alice".to_string(),
                vec!["alice@example.test".into(), "sales@example.test".into()],
            )]
            .into(),
            local_domains: vec!["example.test".into(), "Other.test".into()],
        }
    }

    #[test]
    fn a_login_sends_as_its_own_addresses_only() {
        let p = policy();
        assert!(p.allows("alice", "Sales@Example.test"));
        assert!(
            !p.allows("alice", "alice@other.test"),
            "listed: only the list"
        );
        assert!(!p.allows("alice", "bob@example.test"));
        assert!(
            p.allows("bob", "bob@other.test"),
            "unlisted: login@ each local domain"
        );
        assert!(!p.allows("bob", "bob@remote.test"));
        assert!(p.allows("carol@remote.test", "carol@remote.test"));
        let bob = ReversePath::Path(Path::parse(b"<bob@example.test>").unwrap());
        assert!(p.check_mail("alice", &bob).is_some());
        assert!(p.check_mail("bob", &bob).is_none());
        assert!(p.check_mail("alice", &ReversePath::Null).is_none());
    }

    #[test]
    fn submission_adds_what_is_missing_and_refuses_a_stranger_from() {
        let p = policy();
        let now = std::time::UNIX_EPOCH;
        let complete = b"From: Alice <alice@example.test>\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nhi\r\n";
        assert_eq!(
            fix_message(complete, "alice", &p, "mx.test", "Q1", now),
            Ok(Vec::new())
        );
        let bare = b"From: sales@example.test\r\nSubject: s\r\n\r\nhi\r\n";
        assert_eq!(
            String::from_utf8(fix_message(bare, "alice", &p, "mx.test", "Q1", now).unwrap())
                .unwrap(),
            "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <Q1@mx.test>\r\n"
        );
        let forged = b"From: Bob <bob@example.test>\r\n\r\nhi\r\n";
        let refused = fix_message(forged, "alice", &p, "mx.test", "Q1", now).unwrap_err();
        assert_eq!(refused.code(), 553);
        let nameless = b"Subject: who?\r\n\r\nhi\r\n";
        assert_eq!(
            fix_message(nameless, "alice", &p, "mx.test", "Q1", now)
                .unwrap_err()
                .code(),
            550
        );
    }
}
