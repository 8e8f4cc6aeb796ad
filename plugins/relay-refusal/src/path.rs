//! Where a recipient really sends mail.
//!
//! The server's parser has already read the forward-path: the host gives
//! the local part (unquoted) and the domain ([`Ctx::recipient`]), so there
//! is no second path grammar here to disagree with the first. What the
//! server's grammar does not interpret is the local part, and several old
//! addressing forms hide a next hop inside a local part at one of our
//! domains. This module finds every destination a recipient names, and the
//! filter then requires all of them to be ours:
//!
//! * the domain after the last `@` (a domain name, or an address literal,
//!   which is never ours). An RFC 821 source route (`@hop1,@hop2:user@final`)
//!   is not looked at: the mail goes to `final`, as RFC 5321 §3.3 and
//!   Appendix C say a server should route it.
//! * the `%`-hack, `user%remote@ours` (RFC 1123 §5.2.16): `ours` would pass
//!   it on to `remote`.
//! * UUCP bang paths, `remote!user@ours`.
//! * any of these inside a quoted local part, `"user@remote"@ours` (the
//!   local part arrives unquoted).
//!
//! A hop in the local part that is neither a domain nor an address literal
//! (`user%@ours`, `!user@ours`) names no place we could check, so it counts
//! as not ours: refused for a client that may not relay, never a temporary
//! failure that a sender would retry for days.
//!
//! [`Ctx::recipient`]: sluice_plugin_sdk::Ctx::recipient

use alloc::string::String;
use alloc::vec::Vec;

use sluice_plugin_sdk::syntax::{is_address_literal, is_domain};
use sluice_plugin_sdk::{Recipient, RecipientDomain};

/// One destination named by a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A domain name, to be checked against our local domains.
    Domain(String),
    /// An address literal (`[192.0.2.1]`, `[IPv6:…]`): never local.
    Literal(String),
    /// A hop in the local part that is neither: never local either.
    Unroutable(String),
}

/// What a recipient asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `<Postmaster>` without a domain: ours by definition (RFC 5321 §4.5.1).
    Postmaster,
    /// A mailbox: the final domain first, then every next hop hidden in the
    /// local part.
    Mailbox(Vec<Dest>),
}

/// Every destination `rcpt` names.
pub fn destinations(rcpt: &Recipient) -> Target {
    let first = match &rcpt.domain {
        RecipientDomain::None => return Target::Postmaster,
        RecipientDomain::Name(name) => Dest::Domain(name.clone()),
        RecipientDomain::Literal(literal) => Dest::Literal(literal.clone()),
    };
    let mut dests = Vec::new();
    dests.push(first);
    hidden_hops(&rcpt.local_part, &mut dests);
    Target::Mailbox(dests)
}

/// Collects the next hops a local part names through `@`, `%` (the host is
/// on the right) or `!` (the host is on the left), however they are nested.
/// Which of the characters binds first is not standardised, but the set of
/// host tokens found is the same either way, and the filter needs every one
/// of them to be ours.
fn hidden_hops(local: &str, out: &mut Vec<Dest>) {
    let mut rest = local;
    loop {
        if let Some(i) = rest.rfind(['@', '%']) {
            out.push(dest(&rest[i + 1..]));
            rest = &rest[..i];
        } else if let Some(i) = rest.find('!') {
            out.push(dest(&rest[..i]));
            rest = &rest[i + 1..];
        } else {
            return;
        }
    }
}

fn dest(text: &str) -> Dest {
    if text.starts_with('[') && is_address_literal(text) {
        Dest::Literal(String::from(text))
    } else if is_domain(text) {
        Dest::Domain(String::from(text))
    } else {
        Dest::Unroutable(String::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(d: &str) -> Dest {
        Dest::Domain(d.into())
    }

    fn at(local_part: &str, domain: &str) -> Recipient {
        Recipient {
            local_part: local_part.into(),
            domain: if domain.starts_with('[') {
                RecipientDomain::Literal(domain.into())
            } else {
                RecipientDomain::Name(domain.into())
            },
        }
    }

    fn mailbox(dests: &[Dest]) -> Target {
        Target::Mailbox(dests.to_vec())
    }

    #[test]
    fn a_plain_mailbox_names_its_domain() {
        assert_eq!(
            destinations(&at("user", "local.test")),
            mailbox(&[domain("local.test")])
        );
        assert_eq!(
            destinations(&at("用户", "例子.测试")),
            mailbox(&[domain("例子.测试")])
        );
        assert_eq!(
            destinations(&at("john doe", "local.test")),
            mailbox(&[domain("local.test")])
        );
    }

    #[test]
    fn the_percent_hack_exposes_its_hop() {
        assert_eq!(
            destinations(&at("user%remote.test", "local.test")),
            mailbox(&[domain("local.test"), domain("remote.test")])
        );
        assert_eq!(
            destinations(&at("u%a.test%b.test", "local.test")),
            mailbox(&[domain("local.test"), domain("b.test"), domain("a.test")])
        );
        assert_eq!(
            destinations(&at("user%", "local.test")),
            mailbox(&[domain("local.test"), Dest::Unroutable("".into())])
        );
    }

    #[test]
    fn a_bang_path_exposes_its_hops() {
        assert_eq!(
            destinations(&at("remote.test!user", "local.test")),
            mailbox(&[domain("local.test"), domain("remote.test")])
        );
        assert_eq!(
            destinations(&at("a.test!b.test!user", "local.test")),
            mailbox(&[domain("local.test"), domain("a.test"), domain("b.test")])
        );
        assert_eq!(
            destinations(&at("!user", "local.test")),
            mailbox(&[domain("local.test"), Dest::Unroutable("".into())])
        );
    }

    #[test]
    fn an_unquoted_local_part_hides_nothing() {
        // What `"x@remote.test"@local.test` arrives as.
        assert_eq!(
            destinations(&at("x@remote.test", "local.test")),
            mailbox(&[domain("local.test"), domain("remote.test")])
        );
        assert_eq!(
            destinations(&at("x@[192.0.2.1]", "local.test")),
            mailbox(&[domain("local.test"), Dest::Literal("[192.0.2.1]".into())])
        );
        assert_eq!(
            destinations(&at("x@[192.0.2.1", "local.test")),
            mailbox(&[domain("local.test"), Dest::Unroutable("[192.0.2.1".into())])
        );
    }

    #[test]
    fn literals_and_postmaster() {
        assert_eq!(
            destinations(&at("x", "[IPv6:2001:db8::1]")),
            mailbox(&[Dest::Literal("[IPv6:2001:db8::1]".into())])
        );
        let postmaster = Recipient {
            local_part: "Postmaster".into(),
            domain: RecipientDomain::None,
        };
        assert_eq!(destinations(&postmaster), Target::Postmaster);
    }
}
