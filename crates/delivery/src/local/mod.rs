//! Local delivery: alias expansion and Maildir.
//!
//! The delivery threads share one [`Local`] (it holds only configuration, so
//! it is `Send + Sync` with no locks). For each recipient in a local domain
//! the scheduler calls [`Local::resolve`] on the local part, then
//! [`Local::deliver`] once per [`Target::Mailbox`], and relays each
//! [`Target::Remote`] like any other remote recipient.
//!
//! # Aliases
//!
//! An alias maps a local part to a comma-separated list of targets, as in
//! `/etc/aliases`: a local user name, another alias, or a full address
//! `user@domain` (forwarded, never looked up here even if the domain is ours:
//! the router decides where it goes). Names compare without regard to case.
//! Aliases are looked up before users, so an alias can shadow a user; an
//! alias that lists its own name (`alice: alice, alice@backup.test`) delivers
//! to the user of that name, the usual way to keep a copy and forward.
//! `postmaster` always exists (RFC 5321 §4.5.1): unless an alias or a user
//! says otherwise, it is delivered to the Maildir of a user named
//! `postmaster`.
//!
//! See [`maildir`] for the file format and the durability guarantee.

mod aliases;
pub mod maildir;

pub use aliases::{MAX_ALIAS_DEPTH, MAX_TARGETS};

use sluice_smtp::address::without_extension;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::Outcome;

/// What the binary reads from the configuration for local delivery.
#[derive(Debug, Clone, Default)]
pub struct LocalConfig {
    /// Holds one Maildir per user: `<maildir_root>/<user>/{tmp,new,cur}`.
    pub maildir_root: PathBuf,
    /// The local users (each one a Maildir under the root).
    pub users: Vec<String>,
    /// Local part → comma-separated targets (user names, aliases, or
    /// `user@domain` addresses).
    pub aliases: BTreeMap<String, String>,
    /// This host's name, for Maildir file names.
    pub hostname: String,
    /// Characters that start an address extension (`alice+lists` is
    /// `alice`'s); empty: no sub-addressing.
    pub recipient_delimiter: String,
}

/// Where one local recipient's copy goes after alias expansion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The Maildir of this local user (the name as configured).
    Mailbox(String),
    /// A full address to relay to (an alias that forwards).
    Remote(String),
}

/// Local delivery, shared by the delivery threads.
#[derive(Debug)]
pub struct Local {
    root: PathBuf,
    /// Folded name → the name as configured (which names the directory).
    users: HashMap<String, String>,
    /// Folded alias name → its targets, split and trimmed.
    aliases: HashMap<String, Vec<String>>,
    /// The hostname with `/` and `:` escaped, ready for file names.
    file_host: String,
    recipient_delimiter: String,
}

/// Local parts compare case-insensitively. Full Unicode folding so that a
/// SMTPUTF8 local part matches however the client cased it.
fn fold(name: &str) -> String {
    name.to_lowercase()
}

impl Local {
    pub fn new(config: LocalConfig) -> Local {
        let users = config.users.into_iter().map(|u| (fold(&u), u)).collect();
        let aliases = config
            .aliases
            .iter()
            .map(|(name, targets)| {
                let targets = targets
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
                (fold(name), targets)
            })
            .collect();
        Local {
            root: config.maildir_root,
            users,
            aliases,
            file_host: maildir::escape_hostname(&config.hostname),
            recipient_delimiter: config.recipient_delimiter,
        }
    }

    /// Expands `local_part` (unquoted, without the domain) through the
    /// aliases into the mailboxes and addresses that get a copy, each once.
    ///
    /// Errors: an unknown name is `Failed` (`550 5.1.1`); an alias loop or a
    /// chain of more than [`MAX_ALIAS_DEPTH`] aliases is `Failed` (`550
    /// 5.4.6`, RFC 3463 "Routing loop detected"); an alias whose target is
    /// neither a name nor a valid address, or that expands past
    /// [`MAX_TARGETS`], is a configuration mistake the operator can fix, so
    /// `Deferred` (`451 4.3.5`).
    ///
    /// A local part that names nothing itself but has an address extension
    /// (`alice+lists`, with `+` a configured delimiter) resolves as its
    /// mailbox part (`alice`), like the front end's RCPT check.
    pub fn resolve(&self, local_part: &str) -> Result<Vec<Target>, Outcome> {
        let name = match without_extension(local_part, &self.recipient_delimiter) {
            Some(base) if !self.knows(local_part) => base,
            _ => local_part,
        };
        aliases::Expansion::new(self).run(name)
    }

    /// Whether `name` is a user, an alias or `postmaster` as it stands.
    fn knows(&self, name: &str) -> bool {
        let name = fold(name);
        name == "postmaster" || self.users.contains_key(&name) || self.aliases.contains_key(&name)
    }

    /// Writes one copy of the message into `user`'s Maildir; see [`maildir`]
    /// for the format, the file name and when this returns.
    ///
    /// `reverse_path` is the envelope's (`""` for `<>`); `original_recipient`
    /// is the forward-path from the envelope, before alias expansion, for
    /// `Delivered-To:`; `body` is the stored message, written byte for byte.
    pub fn deliver(
        &self,
        user: &str,
        reverse_path: &str,
        original_recipient: &str,
        body: &[u8],
    ) -> Outcome {
        maildir::deliver(
            &self.root,
            &self.file_host,
            user,
            reverse_path,
            original_recipient,
            body,
        )
    }
}

#[cfg(test)]
mod tests;
