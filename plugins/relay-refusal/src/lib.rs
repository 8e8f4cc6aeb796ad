//! Relay refusal: the filter that keeps Sluice from being an open relay.
//!
//! At RCPT, a recipient outside our local domains is refused with
//! `554 5.7.1 <forward-path>: Relay access denied` unless the client is in a
//! trusted network (`conn.trusted` is `1`) or has authenticated (`conn.auth`
//! has a value). The forward-path is read as the client wrote it, so that
//! source routes, `%`-hacks, bang paths, quoted local parts and address
//! literals cannot smuggle a remote next hop past the check (see [`path`]).
//!
//! It fails closed: when it cannot tell (an argument it cannot parse, a
//! missing `conn.trusted`), the answer is `451 4.7.1`, never "continue". Keep
//! its `on_error` at the default `"tempfail"` for the same reason.
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

/// How much of an unparsable argument is echoed in the reply.
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
        let target = match path::parse(forward_path) {
            Ok(target) => target,
            Err(e) => {
                let shown = printable(forward_path);
                ctx.debug(&format!("cannot check relay for <{shown}>: {}", e.reason()));
                return ctx.tempfail(
                    451,
                    &format!(
                        "4.7.1 <{shown}>: Cannot check relay permission ({}), try again later",
                        e.reason()
                    ),
                );
            }
        };
        if is_ours(ctx, &target) {
            return Verdict::Continue;
        }
        match relay_permitted(ctx) {
            Some(true) => Verdict::Continue,
            Some(false) => {
                ctx.debug(&format!("relay refused for <{forward_path}>"));
                ctx.reject(554, &format!("5.7.1 <{forward_path}>: Relay access denied"))
            }
            None => ctx.tempfail(
                451,
                &format!("4.7.1 <{forward_path}>: Cannot check relay permission, try again later"),
            ),
        }
    }
}

/// Whether every destination the forward-path names is one of our domains.
fn is_ours(ctx: &Ctx<'_>, target: &Target) -> bool {
    match target {
        Target::Postmaster => true,
        Target::Mailbox(dests) => dests.iter().all(|d| match d {
            Dest::Domain(domain) => ctx.is_local_domain(domain),
            Dest::Literal(_) => false,
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

/// The argument as it can safely appear in a reply line: control characters
/// replaced, length bounded.
fn printable(text: &str) -> String {
    text.chars()
        .take(ECHO_LIMIT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

export_filter!(RelayRefusal, hooks: [rcpt]);

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

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

    fn rcpt(host: &MockHost, forward_path: &str) -> Verdict {
        RelayRefusal::init("{}")
            .unwrap()
            .on_rcpt(&host.ctx(), forward_path)
    }

    fn assert_relay_denied(host: &MockHost, forward_path: &str) {
        assert_eq!(rcpt(host, forward_path), Verdict::Reject, "{forward_path}");
        assert_eq!(
            host.reply(),
            Some((554, format!("5.7.1 <{forward_path}>: Relay access denied"))),
            "{forward_path}"
        );
    }

    fn assert_tempfail(host: &MockHost, forward_path: &str) {
        assert_eq!(
            rcpt(host, forward_path),
            Verdict::Tempfail,
            "{forward_path}"
        );
        let (code, text) = host.reply().expect("a reply");
        assert_eq!(code, 451, "{forward_path}");
        assert!(text.starts_with("4.7.1 "), "{text}");
    }

    #[test]
    fn local_recipients_pass() {
        let host = stranger();
        for fp in [
            "user@local.test",
            "User@LOCAL.test",
            "\"john doe\"@local2.test",
            "@remote.test:user@local.test",
            "user%local2.test@local.test",
            "local2.test!user@local.test",
            "Postmaster",
        ] {
            assert_eq!(rcpt(&host, fp), Verdict::Continue, "{fp}");
        }
        assert_eq!(host.reply(), None);
    }

    #[test]
    fn remote_recipients_are_refused() {
        let host = stranger();
        assert_relay_denied(&host, "user@remote.test");
        assert_relay_denied(&host, "postmaster@remote.test");
        assert_relay_denied(&host, "user@local.test.remote.test");
    }

    #[test]
    fn disguised_relay_attempts_are_refused() {
        let host = stranger();
        for fp in [
            "@local.test:x@remote.test",
            "@local.test,@local2.test:x@remote.test",
            "user%remote.test@local.test",
            "user%remote.test%local2.test@local.test",
            "remote.test!user@local.test",
            "local2.test!remote.test!user@local.test",
            "\"x@remote.test\"@local.test",
            "\"x%remote.test\"@local.test",
            "\"remote.test!x\"@local.test",
            "\"x@[192.0.2.1]\"@local.test",
            "x@[192.0.2.1]",
            "x@[IPv6:2001:db8::1]",
        ] {
            assert_relay_denied(&host, fp);
        }
    }

    #[test]
    fn trusted_or_authenticated_clients_may_relay() {
        let trusted = stranger();
        trusted.set_property("conn.trusted", "1");
        assert_eq!(rcpt(&trusted, "user@remote.test"), Verdict::Continue);
        assert_eq!(
            rcpt(&trusted, "user%remote.test@local.test"),
            Verdict::Continue
        );

        let authed = stranger().with_property("conn.auth", "alice");
        assert_eq!(rcpt(&authed, "user@remote.test"), Verdict::Continue);
        // A login counts even if the host left conn.trusted out.
        authed.remove_property("conn.trusted");
        assert_eq!(rcpt(&authed, "user@remote.test"), Verdict::Continue);
        assert_eq!(authed.reply(), None);
    }

    #[test]
    fn an_empty_login_is_not_a_login() {
        let host = stranger().with_property("conn.auth", "");
        assert_relay_denied(&host, "user@remote.test");
    }

    #[test]
    fn doubt_fails_closed_with_a_temporary_failure() {
        let host = stranger();
        for fp in [
            "",
            "user",
            "user@",
            "<user@remote.test>",
            "user%@local.test",
            "!user@local.test",
            "\"unterminated@local.test",
            "x@[192.0.2.1",
            "x@remote.test@local.test",
        ] {
            assert_tempfail(&host, fp);
        }

        // Remote recipient, and the host did not say whether the client is
        // trusted (missing, or an answer that is neither 0 nor 1).
        let host = stranger();
        host.remove_property("conn.trusted");
        assert_tempfail(&host, "user@remote.test");
        host.set_property("conn.trusted", "true");
        assert_tempfail(&host, "user@remote.test");
        // A local recipient needs no trust decision.
        assert_eq!(rcpt(&host, "user@local.test"), Verdict::Continue);
    }

    #[test]
    fn an_unparsable_argument_is_echoed_safely() {
        let host = stranger();
        assert_eq!(rcpt(&host, "a\u{7}b"), Verdict::Tempfail);
        let (_, text) = host.reply().unwrap();
        assert!(text.contains("<a?b>"), "{text}");
        let long = "x".repeat(1000);
        assert_eq!(rcpt(&host, &long), Verdict::Tempfail);
        assert!(host.reply().unwrap().1.len() < 400);
    }

    #[test]
    fn settings_are_refused() {
        assert!(RelayRefusal::init("").is_ok());
        assert!(RelayRefusal::init(" { } ").is_ok());
        let err = RelayRefusal::init(r#"{"allow":"all"}"#).unwrap_err();
        assert!(err.message().contains("no settings"), "{}", err.to_string());
    }
}
