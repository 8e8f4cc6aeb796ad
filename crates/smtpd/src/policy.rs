//! The built-in recipient policy: which mailboxes exist here, and who may relay.
//!
//! This is the decision Postfix makes with `local_recipient_maps` and
//! `reject_unauth_destination`. It runs on the event loop because it is pure
//! memory lookups; anything slower belongs in a filter.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use sluice_directory::Directory;
use sluice_smtp::{EnhancedCode, ForwardPath, Reply};

/// Which mailboxes are ours (the [`Directory`] delivery uses too), and the
/// networks that may relay.
#[derive(Debug, Clone)]
pub struct RecipientPolicy {
    directory: Arc<Directory>,
    trusted_networks: Vec<IpNet>,
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
    pub fn new(
        directory: Arc<Directory>,
        trusted_networks: impl IntoIterator<Item = IpNet>,
    ) -> Self {
        RecipientPolicy {
            directory,
            trusted_networks: trusted_networks.into_iter().collect(),
        }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_networks.iter().any(|net| net.contains(&ip))
    }

    /// Decides one recipient for a client at `client_ip`; `authenticated`:
    /// it logged in (SMTP AUTH, or a local submission), which lets it relay
    /// as a trusted network does.
    ///
    /// Routing ignores any source route (RFC 5321 Appendix C): only the
    /// mailbox's own domain counts, so `<@local.test:user@elsewhere>` is a
    /// relay attempt, not local mail.
    pub fn check_rcpt(
        &self,
        forward_path: &ForwardPath,
        client_ip: IpAddr,
        authenticated: bool,
    ) -> RcptVerdict {
        let mailbox = match forward_path {
            ForwardPath::Postmaster => return RcptVerdict::Local,
            ForwardPath::Path(path) => &path.mailbox,
        };
        if self.directory.is_local_domain(&mailbox.domain) {
            if self
                .directory
                .mailbox_exists(&mailbox.local_part.unquoted())
            {
                RcptVerdict::Local
            } else {
                RcptVerdict::Refuse(Reply::new(
                    550,
                    Some(EnhancedCode::new(5, 1, 1)),
                    format!("<{mailbox}>: Recipient address rejected: no such user here"),
                ))
            }
        } else if authenticated || self.is_trusted(client_ip) {
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
    use sluice_directory::DirectoryConfig;
    use sluice_smtp::Command;

    fn policy_with(delimiters: &str) -> RecipientPolicy {
        RecipientPolicy::new(
            Arc::new(Directory::new(DirectoryConfig {
                domains: vec!["Example.test".into()],
                users: vec!["alice".into()],
                aliases: [("root".to_string(), "postmaster".to_string())].into(),
                recipient_delimiter: delimiters.into(),
            })),
            ["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        )
    }

    fn policy() -> RecipientPolicy {
        policy_with("")
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
        policy().check_rcpt(&rcpt(line), ip.parse().unwrap(), false)
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
        let plus = policy_with("+-");
        for line in [
            "RCPT TO:<alice+lists@example.test>",
            "RCPT TO:<Alice-x+y@example.test>",
            "RCPT TO:<root+cron@example.test>",
            "RCPT TO:<postmaster+abuse@example.test>",
        ] {
            assert_eq!(
                plus.check_rcpt(&rcpt(line), ip, false),
                RcptVerdict::Local,
                "{line}"
            );
            // Off by default, as Postfix's recipient_delimiter.
            assert_eq!(
                code(policy().check_rcpt(&rcpt(line), ip, false)).as_deref(),
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
                code(plus.check_rcpt(&rcpt(line), ip, false)).as_deref(),
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

#[cfg(test)]
mod relay_tests {
    use super::*;
    use sluice_directory::DirectoryConfig;
    use sluice_smtp::{ForwardPath, Path};

    #[test]
    fn a_client_that_logged_in_may_relay_from_anywhere() {
        let policy = RecipientPolicy::new(
            Arc::new(Directory::new(DirectoryConfig {
                domains: vec!["example.test".into()],
                users: vec!["alice".into()],
                aliases: Default::default(),
                recipient_delimiter: String::new(),
            })),
            ["127.0.0.0/8".parse().unwrap()],
        );
        let remote = ForwardPath::Path(Path::parse(b"<bob@remote.test>").unwrap());
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(matches!(
            policy.check_rcpt(&remote, stranger, false),
            RcptVerdict::Refuse(_)
        ));
        assert!(matches!(
            policy.check_rcpt(&remote, stranger, true),
            RcptVerdict::Relay
        ));
    }
}
