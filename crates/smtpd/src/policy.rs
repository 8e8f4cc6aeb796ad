//! The built-in recipient policy: which mailboxes exist here, and who may relay.
//!
//! This is the decision Postfix makes with `local_recipient_maps` and
//! `reject_unauth_destination`. It runs on the event loop because it is pure
//! memory lookups; anything slower belongs in a filter.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use sluice_smtp::address::without_extension;
use sluice_smtp::{Domain, EnhancedCode, ForwardPath, Reply};

/// The domains and mailboxes this server owns, and the networks it trusts.
#[derive(Debug, Clone, Default)]
pub struct RecipientPolicy {
    /// Lower-cased local domain names.
    local_domains: HashSet<String>,
    /// Lower-cased user names with a mailbox.
    users: HashSet<String>,
    /// Lower-cased alias → target (a user, another alias, or a remote address).
    aliases: HashMap<String, String>,
    trusted_networks: Vec<IpNet>,
    /// Characters that start an address extension (`alice+lists`); empty:
    /// no sub-addressing. See [`RecipientPolicy::with_recipient_delimiter`].
    recipient_delimiter: String,
}

/// What the policy says about one RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict {
    /// A mailbox (or alias) in a local domain.
    Local,
    /// Another domain, and the client may relay.
    Relay,
    Refuse(Reply),
}

impl RecipientPolicy {
    pub fn new<D, U, A, N>(domains: D, users: U, aliases: A, trusted_networks: N) -> Self
    where
        D: IntoIterator<Item = String>,
        U: IntoIterator<Item = String>,
        A: IntoIterator<Item = (String, String)>,
        N: IntoIterator<Item = IpNet>,
    {
        RecipientPolicy {
            local_domains: domains
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            users: users.into_iter().map(|u| u.to_lowercase()).collect(),
            aliases: aliases
                .into_iter()
                .map(|(k, v)| (k.to_lowercase(), v))
                .collect(),
            trusted_networks: trusted_networks.into_iter().collect(),
            recipient_delimiter: String::new(),
        }
    }

    /// Sub-addressing (RFC 5233), as Postfix's `recipient_delimiter`: a
    /// local part that names no mailbox itself, like `alice+lists`, is
    /// `alice`'s when `+` is one of `delimiters`. An exact name always wins,
    /// so a user or alias that contains the delimiter keeps working.
    pub fn with_recipient_delimiter(mut self, delimiters: &str) -> Self {
        self.recipient_delimiter = delimiters.to_owned();
        self
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_networks.iter().any(|net| net.contains(&ip))
    }

    pub fn is_local_domain(&self, domain: &Domain) -> bool {
        match domain {
            Domain::Name(name) => self.local_domains.contains(&name.to_ascii_lowercase()),
            // Mail to `user@[ip]` is relayed like any other domain; claiming it
            // would need the list of our own addresses, which we do not keep.
            Domain::Literal(_) => false,
        }
    }

    /// Whether a local part names a mailbox here. `postmaster` always does
    /// (RFC 5321 §4.5.1), whatever the user list says.
    pub fn mailbox_exists(&self, local_part: &str) -> bool {
        let local_part = local_part.to_lowercase();
        let exists = |name: &str| {
            name == "postmaster" || self.users.contains(name) || self.aliases.contains_key(name)
        };
        exists(&local_part)
            || without_extension(&local_part, &self.recipient_delimiter).is_some_and(exists)
    }

    /// Decides one recipient for a client at `client_ip`.
    ///
    /// Routing ignores any source route (RFC 5321 Appendix C): only the
    /// mailbox's own domain counts, so `<@local.test:user@elsewhere>` is a
    /// relay attempt, not local mail.
    pub fn check_rcpt(&self, forward_path: &ForwardPath, client_ip: IpAddr) -> RcptVerdict {
        let mailbox = match forward_path {
            ForwardPath::Postmaster => return RcptVerdict::Local,
            ForwardPath::Path(path) => &path.mailbox,
        };
        if self.is_local_domain(&mailbox.domain) {
            if self.mailbox_exists(&mailbox.local_part.unquoted()) {
                RcptVerdict::Local
            } else {
                RcptVerdict::Refuse(Reply::new(
                    550,
                    Some(EnhancedCode::new(5, 1, 1)),
                    format!("<{mailbox}>: Recipient address rejected: no such user here"),
                ))
            }
        } else if self.is_trusted(client_ip) {
            RcptVerdict::Relay
        } else {
            RcptVerdict::Refuse(Reply::new(
                554,
                Some(EnhancedCode::new(5, 7, 1)),
                format!("<{mailbox}>: Relay access denied"),
            ))
        }
    }
}

/// `::ffff:127.0.0.1` is 127.0.0.1 for every policy decision: a dual-stack
/// listener must not turn trusted IPv4 clients into strangers, nor the reverse.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_smtp::Command;

    fn policy() -> RecipientPolicy {
        RecipientPolicy::new(
            ["Example.test".to_string()],
            ["alice".to_string()],
            [("root".to_string(), "postmaster".to_string())],
            ["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        )
    }

    fn rcpt(line: &str) -> ForwardPath {
        match Command::parse(line.as_bytes()).unwrap() {
            Command::Rcpt { forward_path, .. } => forward_path,
            other => panic!("not RCPT: {other:?}"),
        }
    }

    const STRANGER: &str = "192.0.2.1";
    const LOCALHOST: &str = "127.0.0.1";

    fn check(line: &str, ip: &str) -> RcptVerdict {
        policy().check_rcpt(&rcpt(line), ip.parse().unwrap())
    }

    fn code(v: RcptVerdict) -> Option<String> {
        match v {
            RcptVerdict::Refuse(r) => Some(format!("{} {}", r.code(), r.enhanced().unwrap())),
            _ => None,
        }
    }

    #[test]
    fn local_users_aliases_and_postmaster_exist_in_any_case() {
        assert_eq!(
            check("RCPT TO:<alice@example.test>", STRANGER),
            RcptVerdict::Local
        );
        assert_eq!(
            check("RCPT TO:<ALICE@EXAMPLE.TEST>", STRANGER),
            RcptVerdict::Local
        );
        assert_eq!(
            check("RCPT TO:<root@example.test>", STRANGER),
            RcptVerdict::Local
        );
        assert_eq!(
            check("RCPT TO:<PostMaster@example.test>", STRANGER),
            RcptVerdict::Local
        );
        assert_eq!(check("RCPT TO:<postmaster>", STRANGER), RcptVerdict::Local);
        assert_eq!(
            check("RCPT TO:<\"alice\"@example.test>", STRANGER),
            RcptVerdict::Local
        );
    }

    #[test]
    fn an_address_extension_reaches_the_mailbox_only_with_a_delimiter() {
        let ip = STRANGER.parse().unwrap();
        let plus = policy().with_recipient_delimiter("+-");
        for line in [
            "RCPT TO:<alice+lists@example.test>",
            "RCPT TO:<Alice-x+y@example.test>",
            "RCPT TO:<root+cron@example.test>",
            "RCPT TO:<postmaster+abuse@example.test>",
        ] {
            assert_eq!(
                plus.check_rcpt(&rcpt(line), ip),
                RcptVerdict::Local,
                "{line}"
            );
            // Off by default, as Postfix's recipient_delimiter.
            assert_eq!(
                code(policy().check_rcpt(&rcpt(line), ip)).as_deref(),
                Some("550 5.1.1"),
                "{line}"
            );
        }
        for line in [
            "RCPT TO:<bob+lists@example.test>",
            "RCPT TO:<+alice@example.test>",
            "RCPT TO:<alice.lists@example.test>",
        ] {
            assert_eq!(
                code(plus.check_rcpt(&rcpt(line), ip)).as_deref(),
                Some("550 5.1.1"),
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_local_users_get_550_5_1_1() {
        assert_eq!(
            code(check("RCPT TO:<bob@example.test>", LOCALHOST)).as_deref(),
            Some("550 5.1.1")
        );
        // A %-hack is not a way around the user list.
        assert_eq!(
            code(check("RCPT TO:<alice%x.test@example.test>", LOCALHOST)).as_deref(),
            Some("550 5.1.1")
        );
    }

    #[test]
    fn strangers_cannot_relay_and_trusted_clients_can() {
        assert_eq!(
            code(check("RCPT TO:<x@remote.test>", STRANGER)).as_deref(),
            Some("554 5.7.1")
        );
        assert_eq!(
            check("RCPT TO:<x@remote.test>", LOCALHOST),
            RcptVerdict::Relay
        );
        assert_eq!(check("RCPT TO:<x@remote.test>", "::1"), RcptVerdict::Relay);
        assert_eq!(
            check("RCPT TO:<x@remote.test>", "::ffff:127.0.0.2"),
            RcptVerdict::Relay
        );
        assert_eq!(
            code(check("RCPT TO:<x@[192.0.2.9]>", STRANGER)).as_deref(),
            Some("554 5.7.1")
        );
    }

    #[test]
    fn a_source_route_through_a_local_domain_is_still_relaying() {
        assert_eq!(
            code(check("RCPT TO:<@example.test:x@remote.test>", STRANGER)).as_deref(),
            Some("554 5.7.1")
        );
        assert_eq!(
            check("RCPT TO:<@remote.test:alice@example.test>", STRANGER),
            RcptVerdict::Local
        );
    }
}
