//! Local delivery into Maildirs.
//!
//! Which local part is which mailbox, and where aliases point, is the
//! [`Directory`](sluice_directory::Directory)'s answer, shared with the
//! front end's RCPT check; this module writes the copies. The delivery
//! threads share one [`Local`] (it holds only configuration, so it is
//! `Send + Sync` with no locks).
//!
//! See [`maildir`] for the file format and the durability guarantee.

pub mod maildir;

use std::path::PathBuf;

use sluice_smtp::{ForwardPath, ReversePath};

use crate::Outcome;

/// What the binary reads from the configuration for local delivery.
#[derive(Debug, Clone, Default)]
pub struct LocalConfig {
    /// Holds one Maildir per user: `<maildir_root>/<user>/{tmp,new,cur}`.
    pub maildir_root: PathBuf,
    /// This host's name, for Maildir file names.
    pub hostname: String,
}

/// Local delivery, shared by the delivery threads.
#[derive(Debug)]
pub struct Local {
    root: PathBuf,
    /// The hostname with `/` and `:` escaped, ready for file names.
    file_host: String,
}

impl Local {
    pub fn new(config: LocalConfig) -> Local {
        Local {
            root: config.maildir_root,
            file_host: maildir::escape_hostname(&config.hostname),
        }
    }

    /// Writes one copy of the message into `user`'s Maildir; see [`maildir`]
    /// for the format, the file name and when this returns.
    ///
    /// `original_recipient` is the forward-path from the envelope, before
    /// alias expansion, for `Delivered-To:`; `body` is the stored message,
    /// written byte for byte.
    pub fn deliver(
        &self,
        user: &str,
        reverse_path: &ReversePath,
        original_recipient: &ForwardPath,
        body: &[u8],
    ) -> Outcome {
        let reverse_path = match reverse_path {
            ReversePath::Null => String::new(),
            ReversePath::Path(p) => p.mailbox.text(),
        };
        let original = match original_recipient {
            ForwardPath::Postmaster => "postmaster".to_owned(),
            ForwardPath::Path(p) => p.mailbox.text(),
        };
        maildir::deliver(
            &self.root,
            &self.file_host,
            user,
            &reverse_path,
            &original,
            body,
        )
    }
}

#[cfg(test)]
mod tests;
