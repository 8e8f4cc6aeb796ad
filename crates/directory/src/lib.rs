//! The local directory: the one answer to "is this mailbox ours, and where
//! does its mail go", for the front end's RCPT check, local delivery, and
//! the plugins' `is_local_domain`.
//!
//! Postfix spreads this over `mydestination`, `local_recipient_maps`,
//! `alias_maps` and `recipient_delimiter`; chasquid hands the same alias
//! resolver to its SMTP server and its queue. Here it is one value, built
//! once from the configuration and shared, so that the RCPT check can never
//! accept a mailbox that delivery then calls unknown (or the reverse).
//!
//! # The rules
//!
//! - **Domains** compare without regard to case, and a trailing dot (a
//!   fully qualified `example.test.`) names the same domain. An address
//!   literal is never local.
//! - **Local parts** compare with full Unicode case folding, so an
//!   SMTPUTF8 local part matches however the client cased it.
//! - **`postmaster`** always exists (RFC 5321 §4.5.1): unless an alias or a
//!   user says otherwise it is the mailbox of a user named `postmaster`.
//!   `<Postmaster>` without a domain is ours too.
//! - **Aliases** map a local part to a comma-separated list of targets, as
//!   in `/etc/aliases`: a user, another alias, or a full address `user@domain`
//!   (forwarded through the queue as a message of its own). Aliases are
//!   looked up before users, so an alias can shadow a user; an alias that
//!   lists its own name (`alice: alice, alice@backup.test`) delivers to the
//!   user of that name, the usual way to keep a copy and forward.
//! - **Sub-addressing** (RFC 5233), as Postfix's `recipient_delimiter`: a
//!   local part that names nothing itself but has an extension (`alice+lists`
//!   with `+` a delimiter) is its mailbox part's (`alice`). An exact name
//!   always wins, so a user or alias that contains the delimiter keeps working.

mod expansion;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use sluice_smtp::address::without_extension;
use sluice_smtp::{Domain, EnhancedCode, ForwardPath, Mailbox, Reply};

pub use expansion::{MAX_ALIAS_DEPTH, MAX_TARGETS};

/// The local part that always exists (RFC 5321 §4.5.1).
pub const POSTMASTER: &str = "postmaster";

/// What the configuration says is local.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// The local domains.
    pub domains: Vec<String>,
    /// The mailboxes, by user name (each one a Maildir, or an LMTP mailbox).
    pub users: Vec<String>,
    /// Local part → comma-separated targets (user names, aliases, or
    /// `user@domain` addresses).
    pub aliases: BTreeMap<String, String>,
    /// Characters that start an address extension; empty: no sub-addressing.
    pub recipient_delimiter: String,
}

/// One target of an alias, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AliasTarget {
    /// A user or another alias (folded).
    Name(String),
    /// A full address: forwarded.
    Address(Mailbox),
    /// Neither: a configuration mistake, reported when the alias is used.
    Invalid(String),
}

/// Where one local recipient's copy goes after alias expansion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The mailbox of this local user (the name as configured, which names
    /// its Maildir).
    Mailbox(String),
    /// An address elsewhere (or at one of our domains, which the router
    /// decides): the message is queued again for it.
    Forward(Mailbox),
}

/// Why a local part has no mailbox to deliver to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// Not a user, an alias or `postmaster`.
    UnknownUser { name: String },
    /// An alias chain ends at a name that is nothing.
    AliasToUnknown { name: String, chain: String },
    /// An alias chain comes back to itself (RFC 3463 X.4.6).
    Loop { chain: String, again: String },
    /// An alias chain deeper than [`MAX_ALIAS_DEPTH`].
    TooDeep { chain: String, name: String },
    /// The aliases are broken in a way the operator can fix (an invalid
    /// target, an empty alias, an expansion past [`MAX_TARGETS`]): the mail
    /// should wait for the fix rather than bounce.
    Misconfigured(String),
}

impl ResolveError {
    /// The reply that explains it: `550 5.1.1` for nobody, `550 5.4.6` for
    /// a routing loop, `451 4.3.5` for a configuration to fix.
    pub fn reply(&self) -> Reply {
        let (code, (class, subject, detail), text) = match self {
            ResolveError::UnknownUser { name } => (
                550,
                (5, 1, 1),
                format!("{}: no such user here", printable(name)),
            ),
            ResolveError::AliasToUnknown { name, chain } => (
                550,
                (5, 1, 1),
                format!(
                    "{}: alias {} names an unknown user",
                    printable(name),
                    printable(chain)
                ),
            ),
            ResolveError::Loop { chain, again } => (
                550,
                (5, 4, 6),
                format!(
                    "Routing loop detected: alias loop {} -> {}",
                    printable(chain),
                    printable(again)
                ),
            ),
            ResolveError::TooDeep { chain, name } => (
                550,
                (5, 4, 6),
                format!(
                    "Routing loop detected: alias chain {} -> {} is deeper than {MAX_ALIAS_DEPTH}",
                    printable(chain),
                    printable(name)
                ),
            ),
            ResolveError::Misconfigured(what) => (
                451,
                (4, 3, 5),
                format!("Local delivery misconfigured: {}", printable(what)),
            ),
        };
        Reply::new(code, Some(EnhancedCode::new(class, subject, detail)), text)
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reply().fmt(f)
    }
}

impl std::error::Error for ResolveError {}

/// Who is local. Cheap to share (`Send + Sync`, no locks: it is only read).
#[derive(Debug, Clone)]
pub struct Directory {
    /// Normalised: lower case, no trailing dot.
    domains: foldhash::HashSet<String>,
    /// The first configured domain, normalised: what `<Postmaster>` is
    /// qualified with where a domain is needed (LMTP).
    primary_domain: String,
    /// Folded name → the name as configured.
    users: foldhash::HashMap<String, String>,
    /// Folded alias name → its targets.
    aliases: foldhash::HashMap<String, Vec<AliasTarget>>,
    recipient_delimiter: String,
}

/// `Example.TEST.` → `example.test`; borrowed when the name is already in
/// lower case (nearly every name a lookup is asked for).
fn normalize_domain(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Local parts compare case-insensitively, with full Unicode folding;
/// ASCII already in lower case is its own fold, borrowed.
fn fold(name: &str) -> Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.to_lowercase())
    }
}

impl Directory {
    pub fn new(config: DirectoryConfig) -> Directory {
        let domains: Vec<String> = config
            .domains
            .iter()
            .map(|d| normalize_domain(d).into_owned())
            .collect();
        let aliases = config
            .aliases
            .iter()
            .map(|(name, targets)| {
                let targets = targets
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| {
                        if t.contains('@') {
                            // Checked here rather than left to the SMTP
                            // client, where a typo would look like the
                            // remote refusing the address.
                            match Mailbox::parse(t.as_bytes()) {
                                Ok(mailbox) => AliasTarget::Address(mailbox),
                                Err(_) => AliasTarget::Invalid(t.to_owned()),
                            }
                        } else {
                            AliasTarget::Name(fold(t).into_owned())
                        }
                    })
                    .collect();
                (fold(name).into_owned(), targets)
            })
            .collect();
        Directory {
            primary_domain: domains.first().cloned().unwrap_or_default(),
            domains: domains.into_iter().collect(),
            users: config
                .users
                .into_iter()
                .map(|u| (fold(&u).into_owned(), u))
                .collect(),
            aliases,
            recipient_delimiter: config.recipient_delimiter,
        }
    }

    /// Whether `domain` is one of ours; an address literal never is (we do
    /// not keep the list of our own addresses; such mail is relayed).
    pub fn is_local_domain(&self, domain: &Domain) -> bool {
        match domain {
            Domain::Name(name) => self.is_local_domain_name(name),
            Domain::Literal(_) => false,
        }
    }

    /// [`is_local_domain`](Self::is_local_domain) for a name given as text
    /// (a plugin's question).
    pub fn is_local_domain_name(&self, name: &str) -> bool {
        self.domains.contains(normalize_domain(name).as_ref())
    }

    /// Whether a forward-path goes to one of our domains (routing ignores a
    /// source route, RFC 5321 Appendix C). `<Postmaster>` always does.
    pub fn is_local(&self, forward_path: &ForwardPath) -> bool {
        match forward_path {
            ForwardPath::Postmaster => true,
            ForwardPath::Path(p) => self.is_local_domain(&p.mailbox.domain),
        }
    }

    /// The first configured local domain, normalised.
    pub fn primary_domain(&self) -> &str {
        &self.primary_domain
    }

    /// Whether `name` (unquoted) is a user, an alias or `postmaster` as it
    /// stands, without the extension rule.
    fn knows(&self, name: &str) -> bool {
        let name = fold(name);
        let name = name.as_ref();
        name == POSTMASTER || self.users.contains_key(name) || self.aliases.contains_key(name)
    }

    /// The name a local part is looked up as: itself when it is known, else
    /// its mailbox part when it has an extension.
    fn lookup_name<'a>(&self, local_part: &'a str) -> &'a str {
        match without_extension(local_part, &self.recipient_delimiter) {
            Some(base) if !self.knows(local_part) => base,
            _ => local_part,
        }
    }

    /// Whether a local part (unquoted) names a mailbox or alias here: what
    /// the RCPT check asks.
    pub fn mailbox_exists(&self, local_part: &str) -> bool {
        self.knows(self.lookup_name(local_part))
    }

    /// Expands `local_part` (unquoted, without the domain) through the
    /// aliases into the mailboxes and addresses that get a copy, each once.
    pub fn resolve(&self, local_part: &str) -> Result<Vec<Target>, ResolveError> {
        expansion::Expansion::new(self).run(self.lookup_name(local_part))
    }
}

/// Names end up in reply text, which goes into logs, the journal and DSNs:
/// one line, no controls, whatever the configuration or envelope held.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
