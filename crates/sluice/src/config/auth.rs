//! `[auth]`: SMTP AUTH on submission and smtps listeners.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Where logins are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthBackend {
    /// `users_file`: `name:hash` lines, Dovecot passwd-file style.
    File,
    /// Dovecot's auth service, over `dovecot_socket`.
    Dovecot,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Absent: no AUTH anywhere.
    pub backend: Option<AuthBackend>,
    pub users_file: PathBuf,
    pub dovecot_socket: PathBuf,
    /// Failed AUTH commands one connection may make; the next failure
    /// closes it (421 4.7.0).
    pub max_failures: u32,
    /// How long the reply to a failed AUTH waits.
    pub failure_delay_ms: u64,
    /// Failures from one address, or for one login, within `lockout_secs`
    /// after which AUTH is refused (454 4.7.0) until the window passes.
    /// Counted in the `[kv]` store, so servers sharing Redis share it.
    pub lockout_failures: i64,
    pub lockout_secs: u64,
    /// Threads that check passwords.
    pub threads: usize,
    /// Login → the addresses it may send as. A login not listed may send
    /// as `login@<each local domain>`.
    pub senders: BTreeMap<String, Vec<String>>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            backend: None,
            users_file: PathBuf::new(),
            dovecot_socket: PathBuf::from("/run/dovecot/auth-client"),
            max_failures: 3,
            failure_delay_ms: 1000,
            lockout_failures: 10,
            lockout_secs: 600,
            threads: 2,
            senders: BTreeMap::new(),
        }
    }
}

impl Auth {
    /// What `validate` reports.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.backend == Some(AuthBackend::File) && self.users_file.as_os_str().is_empty() {
            problems.push("auth.backend = \"file\" needs auth.users_file".into());
        }
        if self.max_failures == 0 {
            problems.push("auth.max_failures must be at least 1".into());
        }
        if self.lockout_failures < 1 || self.lockout_secs == 0 {
            problems.push("auth.lockout_failures and auth.lockout_secs must be at least 1".into());
        }
        for (login, addresses) in &self.senders {
            for a in addresses.iter().filter(|a| !a.contains('@')) {
                problems.push(format!("auth.senders.{login}: {a:?} is not an address"));
            }
        }
        problems
    }
}
