//! Alias expansion: a depth-first walk of the alias graph with loop
//! detection and bounds.

use super::{Local, Target, fold};
use crate::Outcome;

/// Most aliases in one chain (an alias whose target is an alias whose
/// target ...). Sendmail and Postfix both stop around ten: real chains are
/// two or three deep, and a longer one is almost always a loop through
/// forwarding that we cannot see whole.
pub const MAX_ALIAS_DEPTH: usize = 10;

/// Most targets one local part may expand to, counting every name visited.
/// Bounds the work of a configuration with wide, shared sub-lists, which a
/// depth limit alone does not (ten levels of fan-out two is a thousand).
pub const MAX_TARGETS: usize = 1000;

/// The local part that always exists (RFC 5321 §4.5.1).
const POSTMASTER: &str = "postmaster";

/// The state of one [`Local::resolve`] call.
pub(super) struct Expansion<'a> {
    local: &'a Local,
    /// The aliases being expanded, outermost first (folded): a name found
    /// here again is a loop.
    chain: Vec<String>,
    out: Vec<Target>,
    visited: usize,
}

impl<'a> Expansion<'a> {
    pub(super) fn new(local: &'a Local) -> Expansion<'a> {
        Expansion {
            local,
            chain: Vec::new(),
            out: Vec::new(),
            visited: 0,
        }
    }

    pub(super) fn run(mut self, local_part: &str) -> Result<Vec<Target>, Outcome> {
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

    fn name(&mut self, name: &str) -> Result<(), Outcome> {
        self.visited += 1;
        if self.visited > MAX_TARGETS {
            return Err(deferred_config(format!(
                "alias expansion of {} exceeds {MAX_TARGETS} targets",
                self.root_or(name)
            )));
        }
        let key = fold(name);
        if let Some(targets) = self.local.aliases.get(&key) {
            if self.chain.contains(&key) {
                return Err(self.routing_loop(&key));
            }
            if self.chain.len() == MAX_ALIAS_DEPTH {
                return Err(Outcome::Failed {
                    reply: format!(
                        "550 5.4.6 Routing loop detected: alias chain {} -> {} is deeper than {MAX_ALIAS_DEPTH}",
                        printable(&self.chain.join(" -> ")),
                        printable(name)
                    ),
                });
            }
            if targets.is_empty() {
                return Err(deferred_config(format!(
                    "alias {} has no target",
                    printable(name)
                )));
            }
            self.chain.push(key);
            for target in targets {
                self.target(target)?;
            }
            self.chain.pop();
            return Ok(());
        }
        if let Some(user) = self.local.users.get(&key) {
            self.push(Target::Mailbox(user.clone()));
            return Ok(());
        }
        if key == POSTMASTER {
            self.push(Target::Mailbox(POSTMASTER.to_owned()));
            return Ok(());
        }
        let reply = if self.chain.is_empty() {
            format!("550 5.1.1 {}: no such user here", printable(name))
        } else {
            format!(
                "550 5.1.1 {}: alias {} names an unknown user",
                self.root_or(name),
                printable(&self.chain.join(" -> "))
            )
        };
        Err(Outcome::Failed { reply })
    }

    fn target(&mut self, target: &str) -> Result<(), Outcome> {
        if target.contains('@') {
            // Checked here rather than left to the SMTP client, where a typo
            // in the aliases would look like the remote refusing the address.
            if sluice_smtp::Mailbox::parse(target.as_bytes()).is_err() {
                return Err(deferred_config(format!(
                    "alias {} has an invalid target address {}",
                    self.chain.last().map_or("?", String::as_str),
                    printable(target)
                )));
            }
            self.push(Target::Remote(target.to_owned()));
            return Ok(());
        }
        let key = fold(target);
        // `alice: alice, ...` means alice's own Maildir, not a loop.
        if self.chain.last() == Some(&key)
            && let Some(user) = self.local.users.get(&key)
        {
            self.push(Target::Mailbox(user.clone()));
            return Ok(());
        }
        self.name(target)
    }

    fn routing_loop(&self, again: &str) -> Outcome {
        Outcome::Failed {
            reply: format!(
                "550 5.4.6 Routing loop detected: alias loop {} -> {}",
                printable(&self.chain.join(" -> ")),
                printable(again)
            ),
        }
    }

    /// The local part the expansion started from, for messages.
    fn root_or(&self, name: &str) -> String {
        printable(self.chain.first().map_or(name, String::as_str))
    }
}

fn deferred_config(what: String) -> Outcome {
    Outcome::Deferred {
        reply: format!("451 4.3.5 Local delivery misconfigured: {what}"),
    }
}

/// Names end up in reply text, which goes into logs, the journal and DSNs:
/// one line, no controls, whatever the configuration or envelope held.
pub(super) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
