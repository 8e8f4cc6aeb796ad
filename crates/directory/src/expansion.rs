//! Alias expansion: a depth-first walk of the alias graph with loop
//! detection and bounds.

use super::{AliasTarget, Directory, POSTMASTER, ResolveError, Target, fold};

/// Most aliases in one chain (an alias whose target is an alias whose
/// target ...). Sendmail and Postfix both stop around ten: real chains are
/// two or three deep, and a longer one is almost always a loop through
/// forwarding that we cannot see whole.
pub const MAX_ALIAS_DEPTH: usize = 10;

/// Most targets one local part may expand to, counting every name visited.
/// Bounds the work of a configuration with wide, shared sub-lists, which a
/// depth limit alone does not (ten levels of fan-out two is a thousand).
pub const MAX_TARGETS: usize = 1000;

/// The state of one [`Directory::resolve`] call.
pub(super) struct Expansion<'a> {
    directory: &'a Directory,
    /// The aliases being expanded, outermost first (folded): a name found
    /// here again is a loop.
    chain: Vec<String>,
    out: Vec<Target>,
    visited: usize,
}

impl<'a> Expansion<'a> {
    pub(super) fn new(directory: &'a Directory) -> Expansion<'a> {
        Expansion {
            directory,
            chain: Vec::new(),
            out: Vec::new(),
            visited: 0,
        }
    }

    pub(super) fn run(mut self, local_part: &str) -> Result<Vec<Target>, ResolveError> {
        self.name(local_part)?;
        Ok(self.out)
    }

    fn push(&mut self, target: Target) {
        // Diamonds (two aliases sharing a member) are legitimate; the member
        // still gets one copy.
        if !self.out.contains(&target) {
            self.out.push(target);
        }
    }

    fn name(&mut self, name: &str) -> Result<(), ResolveError> {
        self.visited += 1;
        if self.visited > MAX_TARGETS {
            return Err(ResolveError::Misconfigured(format!(
                "alias expansion of {} exceeds {MAX_TARGETS} targets",
                self.root_or(name)
            )));
        }
        let key = fold(name).into_owned();
        let directory = self.directory;
        if let Some(targets) = directory.aliases.get(&key) {
            if self.chain.contains(&key) {
                return Err(ResolveError::Loop {
                    chain: self.chain.join(" -> "),
                    again: key,
                });
            }
            if self.chain.len() == MAX_ALIAS_DEPTH {
                return Err(ResolveError::TooDeep {
                    chain: self.chain.join(" -> "),
                    name: name.to_owned(),
                });
            }
            if targets.is_empty() {
                return Err(ResolveError::Misconfigured(format!(
                    "alias {name} has no target"
                )));
            }
            self.chain.push(key);
            for target in targets {
                self.target(target)?;
            }
            self.chain.pop();
            return Ok(());
        }
        if let Some(user) = directory.users.get(&key) {
            self.push(Target::Mailbox(user.clone()));
            return Ok(());
        }
        if key == POSTMASTER {
            self.push(Target::Mailbox(POSTMASTER.to_owned()));
            return Ok(());
        }
        Err(if self.chain.is_empty() {
            ResolveError::UnknownUser {
                name: name.to_owned(),
            }
        } else {
            ResolveError::AliasToUnknown {
                name: self.root_or(name),
                chain: self.chain.join(" -> "),
            }
        })
    }

    fn target(&mut self, target: &AliasTarget) -> Result<(), ResolveError> {
        match target {
            AliasTarget::Address(mailbox) => {
                self.push(Target::Forward(mailbox.clone()));
                Ok(())
            }
            AliasTarget::Invalid(text) => Err(ResolveError::Misconfigured(format!(
                "alias {} has an invalid target address {text}",
                self.chain.last().map_or("?", String::as_str)
            ))),
            AliasTarget::Name(key) => {
                // `alice: alice, ...` means alice's own mailbox, not a loop.
                if self.chain.last() == Some(key)
                    && let Some(user) = self.directory.users.get(key)
                {
                    self.push(Target::Mailbox(user.clone()));
                    return Ok(());
                }
                self.name(key)
            }
        }
    }

    /// The local part the expansion started from, for messages.
    fn root_or(&self, name: &str) -> String {
        self.chain.first().map_or(name, String::as_str).to_owned()
    }
}
