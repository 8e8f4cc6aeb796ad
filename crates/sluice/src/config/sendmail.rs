//! `[sendmail]`: the local submission socket `sluice sendmail` talks to.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sendmail {
    /// Whether the server opens the socket at all.
    pub enabled: bool,
    /// Where the socket is; empty: `submit.sock` in the spool directory.
    pub socket: PathBuf,
    /// Users who may send with any reverse-path (`sendmail -f`), the null
    /// one included. The user the server runs as always may.
    pub trusted_users: Vec<String>,
    /// The domain of local users' addresses (`user@origin`), and of bare
    /// recipient names; empty: the hostname.
    pub origin: String,
}

impl Default for Sendmail {
    fn default() -> Self {
        Sendmail {
            enabled: true,
            socket: PathBuf::new(),
            trusted_users: vec!["root".into()],
            origin: String::new(),
        }
    }
}

impl Sendmail {
    /// The socket's path, given where the spool is.
    pub fn socket_path(&self, spool_dir: &Path) -> PathBuf {
        if self.socket.as_os_str().is_empty() {
            spool_dir.join("submit.sock")
        } else {
            self.socket.clone()
        }
    }

    /// The trusted users' ids: those the user database knows, and the
    /// server's own. A name it does not know is a problem `validate` reports.
    pub fn trusted_uids(&self) -> Vec<u32> {
        let mut uids: Vec<u32> = self
            .trusted_users
            .iter()
            .filter_map(|name| sluice_sys::user::uid_of(name))
            .collect();
        uids.push(sluice_sys::user::current_uid());
        uids.sort_unstable();
        uids.dedup();
        uids
    }

    /// What `validate` reports.
    pub fn problems(&self) -> Vec<String> {
        self.trusted_users
            .iter()
            .filter(|name| sluice_sys::user::uid_of(name).is_none())
            .map(|name| format!("sendmail.trusted_users: no user {name:?} on this system"))
            .collect()
    }
}
