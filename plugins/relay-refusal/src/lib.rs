//! Relay refusal: the filter that keeps Sluice from being an open relay.
//!
//! At RCPT, a recipient outside our local domains is refused with
//! `554 5.7.1 <forward-path>: Relay access denied` unless the client is in a
//! trusted network (`conn.trusted` is `1`) or has authenticated (`conn.auth`
//! has a value). The recipient is judged in the parts the server's own
//! parser found (`rcpt.local_part`, `rcpt.domain`), so every path the server
//! accepts is one this filter can judge; `%`-hacks, bang paths, quoted local
//! parts and address literals cannot smuggle a remote next hop past it (see
//! [`path`]).
//!
//! It fails closed: when the host does not say what it needs (no recipient
//! parts, a missing `conn.trusted`), the answer is `451 4.7.1`, never
//! "continue". Keep its `on_error` at the default `"tempfail"` for the same
//! reason.
//!
//! It takes no settings: `[plugin.config]` must be absent or empty.
#![no_std]

extern crate alloc;

pub mod path;

use alloc::format;
use alloc::string::String;

use sluice_plugin_sdk::{Ctx, Filter, InitError, Verdict, export_filter};

use path::{Dest, Target};

/// The filter; it has no configuration.
#[derive(Debug)]
pub struct RelayRefusal;

/// How much of the forward-path is echoed in a reply.
const ECHO_LIMIT: usize = 256;

impl Filter for RelayRefusal {
    fn init(config: &str) -> Result<Self, InitError> {
        let compact: String = config.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() || compact == "{}" {
            Ok(RelayRefusal)
        } else {
            Err(InitError::new(
                "relay-refusal has no settings; remove its [plugin.config]",
            ))
        }
    }

    fn on_rcpt(&mut self, ctx: &Ctx<'_>, forward_path: &str) -> Verdict {
        // The path is echoed only in a refusal: made printable only then.
        let cannot_check = || {
            let shown = printable(forward_path);
            ctx.tempfail(
                451,
                &format!("4.7.1 <{shown}>: Cannot check relay permission, try again later"),
            )
        };
        let Some(recipient) = ctx.recipient() else {
            ctx.warn("the host gave no rcpt.local_part: cannot judge the recipient");
            return cannot_check();
        };
        if is_ours(ctx, &path::destinations(&recipient)) {
            return Verdict::Continue;
        }
        match relay_permitted(ctx) {
            Some(true) => Verdict::Continue,
            Some(false) => {
                let shown = printable(forward_path);
                ctx.debug(&format!("relay refused for <{shown}>"));
                ctx.reject(554, &format!("5.7.1 <{shown}>: Relay access denied"))
            }
            None => cannot_check(),
        }
    }
}

/// Whether every destination the recipient names is one of our domains.
fn is_ours(ctx: &Ctx<'_>, target: &Target) -> bool {
    match target {
        Target::Postmaster => true,
        Target::Mailbox(dests) => dests.iter().all(|d| match d {
            Dest::Domain(domain) => ctx.is_local_domain(domain),
            Dest::Literal(_) | Dest::Unroutable(_) => false,
        }),
    }
}

/// `Some(true)` if the client may relay, `Some(false)` if not, `None` if the
/// host did not say. A login is enough on its own; otherwise `conn.trusted`
/// must be there and be `0` or `1`.
fn relay_permitted(ctx: &Ctx<'_>) -> Option<bool> {
    if ctx.conn_auth().is_some() {
        return Some(true);
    }
    ctx.conn_trusted()
}

/// The forward-path as it can safely appear in a reply line: control
/// characters replaced, length bounded.
fn printable(text: &str) -> String {
    text.chars()
        .take(ECHO_LIMIT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

export_filter!(RelayRefusal, hooks: [rcpt]);

#[cfg(test)]
mod tests {
    use sluice_plugin_sdk::testing::MockHost;

    use super::*;

    /// An untrusted, unauthenticated client; our domains are local.test and
    /// local2.test.
    fn stranger() -> MockHost {
        MockHost::new()
            .with_local_domain("local.test")
            .with_local_domain("local2.test")
            .with_property("conn.ip", "198.51.100.7")
            .with_property("conn.trusted", "0")
    }

    /// One RCPT hook: the forward-path as the client wrote it (for the
    /// reply), and the parts the server's parser found in it.
    fn rcpt(
        host: &MockHost,
        forward_path: &str,
        local_part: &str,
        domain: Option<&str>,
    ) -> Verdict {
        host.set_recipient(local_part, domain);
        RelayRefusal::init("{}")
            .unwrap()
            .on_rcpt(&host.ctx(), forward_path)
    }

    fn assert_relay_denied(host: &MockHost, case: (&str, &str, Option<&str>)) {
        let (forward_path, local_part, domain) = case;
        assert_eq!(
            rcpt(host, forward_path, local_part, domain),
            Verdict::Reject,
            "{forward_path}"
        );
        assert_eq!(
            host.reply(),
            Some((554, format!("5.7.1 <{forward_path}>: Relay access denied"))),
            "{forward_path}"
        );
    }

    #[test]
    fn local_recipients_pass() {
        let host = stranger();
        for (fp, local, domain) in [
            ("user@local.test", "user", Some("local.test")),
            ("User@LOCAL.test", "User", Some("LOCAL.test")),
            ("\"john doe\"@local2.test", "john doe", Some("local2.test")),
            ("@remote.test:user@local.test", "user", Some("local.test")),
            ("@[127.0.0.1]:alice@local.test", "alice", Some("local.test")),
            (
                "user%local2.test@local.test",
                "user%local2.test",
                Some("local.test"),
            ),
            (
                "local2.test!user@local.test",
                "local2.test!user",
                Some("local.test"),
            ),
            ("Postmaster", "Postmaster", None),
        ] {
            assert_eq!(rcpt(&host, fp, local, domain), Verdict::Continue, "{fp}");
        }
        assert_eq!(host.reply(), None);
    }

    #[test]
    fn remote_recipients_are_refused() {
        let host = stranger();
        assert_relay_denied(&host, ("user@remote.test", "user", Some("remote.test")));
        assert_relay_denied(
            &host,
            ("postmaster@remote.test", "postmaster", Some("remote.test")),
        );
        assert_relay_denied(
            &host,
            (
                "user@local.test.remote.test",
                "user",
                Some("local.test.remote.test"),
            ),
        );
        // A source route through an address literal: the route is ignored,
        // the final domain decides (it used to be a 451 forever).
        assert_relay_denied(
            &host,
            ("@[127.0.0.1]:user@remote.test", "user", Some("remote.test")),
        );
    }

    #[test]
    fn disguised_relay_attempts_are_refused() {
        let host = stranger();
        for case in [
            ("@local.test:x@remote.test", "x", Some("remote.test")),
            (
                "@local.test,@local2.test:x@remote.test",
                "x",
                Some("remote.test"),
            ),
            (
                "user%remote.test@local.test",
                "user%remote.test",
                Some("local.test"),
            ),
            (
                "user%remote.test%local2.test@local.test",
                "user%remote.test%local2.test",
                Some("local.test"),
            ),
            (
                "remote.test!user@local.test",
                "remote.test!user",
                Some("local.test"),
            ),
            (
                "local2.test!remote.test!user@local.test",
                "local2.test!remote.test!user",
                Some("local.test"),
            ),
            (
                "\"x@remote.test\"@local.test",
                "x@remote.test",
                Some("local.test"),
            ),
            (
                "\"x%remote.test\"@local.test",
                "x%remote.test",
                Some("local.test"),
            ),
            (
                "\"remote.test!x\"@local.test",
                "remote.test!x",
                Some("local.test"),
            ),
            (
                "\"x@[192.0.2.1]\"@local.test",
                "x@[192.0.2.1]",
                Some("local.test"),
            ),
            ("x@[192.0.2.1]", "x", Some("[192.0.2.1]")),
            ("x@[IPv6:2001:db8::1]", "x", Some("[IPv6:2001:db8::1]")),
            // Hops that name no place are not ours either: refused, not 451.
            ("user%@local.test", "user%", Some("local.test")),
            ("!user@local.test", "!user", Some("local.test")),
        ] {
            assert_relay_denied(&host, case);
        }
    }

    #[test]
    fn trusted_or_authenticated_clients_may_relay() {
        let trusted = stranger();
        trusted.set_property("conn.trusted", "1");
        assert_eq!(
            rcpt(&trusted, "user@remote.test", "user", Some("remote.test")),
            Verdict::Continue
        );
        assert_eq!(
            rcpt(
                &trusted,
                "user%remote.test@local.test",
                "user%remote.test",
                Some("local.test")
            ),
            Verdict::Continue
        );

        let authed = stranger().with_property("conn.auth", "alice");
        assert_eq!(
            rcpt(&authed, "user@remote.test", "user", Some("remote.test")),
            Verdict::Continue
        );
        // A login counts even if the host left conn.trusted out.
        authed.remove_property("conn.trusted");
        assert_eq!(
            rcpt(&authed, "user@remote.test", "user", Some("remote.test")),
            Verdict::Continue
        );
        assert_eq!(authed.reply(), None);
    }

    #[test]
    fn an_empty_login_is_not_a_login() {
        let host = stranger().with_property("conn.auth", "");
        assert_relay_denied(&host, ("user@remote.test", "user", Some("remote.test")));
    }

    #[test]
    fn what_the_host_does_not_say_fails_closed_with_a_temporary_failure() {
        // No recipient parts at all: a host too old to give them.
        let host = stranger();
        let verdict = RelayRefusal::init("{}")
            .unwrap()
            .on_rcpt(&host.ctx(), "user@remote.test");
        assert_eq!(verdict, Verdict::Tempfail);
        assert_eq!(
            host.reply(),
            Some((
                451,
                "4.7.1 <user@remote.test>: Cannot check relay permission, try again later".into()
            ))
        );

        // Remote recipient, and the host did not say whether the client is
        // trusted (missing, or an answer that is neither 0 nor 1).
        let host = stranger();
        host.remove_property("conn.trusted");
        assert_eq!(
            rcpt(&host, "user@remote.test", "user", Some("remote.test")),
            Verdict::Tempfail
        );
        host.set_property("conn.trusted", "true");
        assert_eq!(
            rcpt(&host, "user@remote.test", "user", Some("remote.test")),
            Verdict::Tempfail
        );
        // A local recipient needs no trust decision.
        assert_eq!(
            rcpt(&host, "user@local.test", "user", Some("local.test")),
            Verdict::Continue
        );
    }

    #[test]
    fn the_forward_path_is_echoed_safely() {
        let host = stranger();
        assert_eq!(
            rcpt(&host, "a\u{7}b@remote.test", "a\u{7}b", Some("remote.test")),
            Verdict::Reject
        );
        let (_, text) = host.reply().unwrap();
        assert!(text.contains("<a?b@remote.test>"), "{text}");
        let long = "x".repeat(1000);
        assert_eq!(
            rcpt(&host, &long, &long, Some("remote.test")),
            Verdict::Reject
        );
        assert!(host.reply().unwrap().1.len() < 400);
    }

    #[test]
    fn settings_are_refused() {
        assert!(RelayRefusal::init("").is_ok());
        assert!(RelayRefusal::init(" { } ").is_ok());
        let err = RelayRefusal::init(r#"{"allow":"all"}"#).unwrap_err();
        assert!(
            err.message().contains("no settings"),
            "{}",
            alloc::string::ToString::to_string(&err)
        );
    }
}
