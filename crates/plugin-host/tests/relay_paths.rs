//! The shipped relay-refusal plugin against every kind of forward-path the
//! front end's grammar accepts: a path the server took must be one the
//! filter can judge for good (local: continue; remote: `554 5.7.1`), never
//! a `451` that a sender would retry for days.

mod common;

use std::path::Path;

use proptest::prelude::*;
use sluice_plugin_host::{Hook, Outcome, PluginSpec, TestEnvelope, Tester};
use sluice_smtp::{Command, ForwardPath};

fn relay_refusal() -> Tester {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist/relay-refusal.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run plugins/build.sh first (tests/run does)",
        path.display()
    );
    Tester::new(vec![PluginSpec::new("relay-refusal", path)], common::env())
        .expect("relay-refusal loads")
}

/// A domain of the kind a client writes: ours in any case, someone else's,
/// or an address literal.
fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("example.test".to_string()),
        Just("EXAMPLE.Test".to_string()),
        Just("remote.test".to_string()),
        Just("sub.example.test".to_string()),
        "[a-z][a-z0-9-]{0,8}(\\.[a-z]{1,4}){0,2}",
        Just("[127.0.0.1]".to_string()),
        Just("[192.0.2.1]".to_string()),
        Just("[IPv6:2001:db8::1]".to_string()),
        Just("[x-tag:anything]".to_string()),
    ]
}

/// Local parts with the characters that hide next hops (`%`, `!`, `@` in
/// quotes), dots, UTF-8 and quoting.
fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9%!+=._-]{1,12}",
        "[a-zé%!]{1,4}(\\.[a-z%!]{1,4}){0,2}",
        "\"[ a-z0-9%!@.\\[\\]:\\\\\"]{0,14}\"",
        Just("user%example.test".to_string()),
        Just("remote.test!user".to_string()),
        Just("\"x@remote.test\"".to_string()),
    ]
}

/// `<[route:]local@domain>` or `<postmaster>`, as it goes on the RCPT line.
fn forward_path() -> impl Strategy<Value = String> {
    let route = proptest::collection::vec(domain(), 0..3);
    prop_oneof![
        9 => (route, local_part(), domain(), any::<bool>()).prop_map(|(route, local, domain, comma)| {
            let hops: Vec<String> = route.iter().map(|d| format!("@{d}")).collect();
            let route = match (hops.is_empty(), comma) {
                (true, _) => String::new(),
                (false, false) => format!("{}:", hops.join(",")),
                // RFC 821-era `<@hop,user@host>`, which the grammar takes.
                (false, true) => format!("{},", hops.join(",")),
            };
            format!("<{route}{local}@{domain}>")
        }),
        1 => Just("<Postmaster>".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_path_the_server_accepts_is_judged_for_good(path in forward_path()) {
        let Ok(Command::Rcpt { forward_path, .. }) = Command::parse(format!("RCPT TO:{path}").as_bytes()) else {
            // Not the server's grammar: nothing a filter ever sees.
            return Ok(());
        };
        let tester = TESTER.with(|t| t.clone());
        let canonical = forward_path.to_string();
        let report = tester
            .run(
                &TestEnvelope {
                    client_ip: "198.51.100.7".parse().unwrap(),
                    helo: "client.test".into(),
                    mail_from: "sender@client.test".into(),
                    rcpts: vec![canonical.clone()],
                    trusted: false,
                    auth: Default::default(),
                },
                b"Subject: x\r\n\r\nx\r\n",
            )
            .expect("the envelope parses");
        let rcpt = report
            .stages
            .iter()
            .find(|s| s.hook == Hook::Rcpt)
            .expect("the RCPT stage ran");
        let local = match &forward_path {
            ForwardPath::Postmaster => true,
            ForwardPath::Path(p) => p.mailbox.domain.to_string().eq_ignore_ascii_case("example.test")
                && !p.mailbox.local_part.unquoted().contains(['%', '!', '@']),
        };
        match &rcpt.outcome {
            Outcome::Continue => prop_assert!(
                !matches!(&forward_path, ForwardPath::Path(p) if !p.mailbox.domain.to_string().eq_ignore_ascii_case("example.test")),
                "{canonical}: a remote recipient passed"
            ),
            Outcome::Reject(reply) => {
                prop_assert_eq!(reply.code(), 554, "{}: {}", canonical, reply);
                prop_assert!(!local, "{}: a plain local mailbox was refused: {}", canonical, reply);
            }
            other => prop_assert!(false, "{canonical}: {other:?}"),
        }
    }
}

thread_local! {
    /// One loaded chain for every case: compiling the plugin per case would
    /// take minutes.
    static TESTER: std::rc::Rc<Tester> = std::rc::Rc::new(relay_refusal());
}
