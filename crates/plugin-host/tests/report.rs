//! `test_run`: chain semantics seen through the report (order, stage ends,
//! scores, headers, verdicts), and its text form.

mod common;

use common::*;
use sluice_plugin_host::{
    Hook, MessageChanges, Outcome, RawVerdict, TestEnvelope, TestResult, TestRunError, test_run,
};

fn envelope(rcpts: &[&str]) -> TestEnvelope {
    TestEnvelope {
        client_ip: "192.0.2.7".parse().unwrap(),
        helo: "client.test".into(),
        mail_from: "sender@client.test".into(),
        rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
        trusted: false,
        auth: Default::default(),
    }
}

const MESSAGE: &[u8] = b"From: <sender@client.test>\nSubject: test\n subject\n\nHello.\n";

/// Returns `verdict` from the MAIL hook.
fn mail_verdict(verdict: i32) -> Vec<u8> {
    module(
        &[],
        &format!(
            r#"(func (export "sluice_on_mail") (param i32 i32) (result i32) (i32.const {verdict}))"#
        ),
    )
}

#[test]
fn scores_add_up_and_headers_come_from_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![
        spec(
            dir.path(),
            "relay",
            &relay_plugin("blocked@x.test", "5.7.1 Relay access denied"),
        ),
        spec(dir.path(), "antispam", &scoring_plugin()),
    ];
    let report = test_run(
        specs,
        env(),
        envelope(&["blocked@x.test", "a@x.test", "<b@x.test>"]),
        MESSAGE,
    )
    .unwrap();

    let rcpts: Vec<_> = report
        .stages
        .iter()
        .filter(|s| s.hook == Hook::Rcpt)
        .collect();
    // The refusal ends the stage: the scoring plugin never saw that recipient.
    assert_eq!(rcpts[0].runs.len(), 1, "{report}");
    assert_eq!(rcpts[0].arg, "blocked@x.test");
    assert_eq!(rcpts[2].arg, "b@x.test");
    assert_eq!(rcpts[1].runs.len(), 2);
    assert_eq!(rcpts[1].runs[0].logs[0].text, "a@x.test");

    let TestResult::Accepted(changes) = &report.result else {
        panic!("{report}");
    };
    let headers: Vec<(&str, &str)> = changes
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    // 1 per accepted recipient + 2.5 at end of data.
    assert_eq!(
        headers,
        [
            ("X-Spam-Score", "4.5"),
            ("X-Test-Queue-Id", sluice_plugin_host::TEST_QUEUE_ID),
            ("X-Test-Subject", "test subject"),
        ]
    );
    assert!(!changes.discard && !changes.quarantine);
    let total: f64 = report.scores.iter().map(|(_, s)| s).sum();
    assert_eq!(total, 4.5);

    let text = report.to_string();
    for line in [
        "rcpt blocked@x.test",
        "  relay: REJECT (set_reply 554 5.7.1 Relay access denied)",
        "  => 554 5.7.1 Relay access denied",
        "    score TEST_DATA 2.5",
        "    add_header X-Spam-Score: 4.5",
        "score 4.5 (TEST_RCPT=1, TEST_RCPT=1, TEST_DATA=2.5)",
        "result: accepted",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }
}

#[test]
fn accept_skips_the_rest_of_the_stage_only() {
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![
        spec(dir.path(), "whitelist", &mail_verdict(1)),
        spec(dir.path(), "blacklist", &mail_verdict(2)),
    ];
    let report = test_run(specs, env(), envelope(&["a@x.test"]), MESSAGE).unwrap();
    let mail = report.stages.iter().find(|s| s.hook == Hook::Mail).unwrap();
    assert_eq!(mail.runs.len(), 1);
    assert_eq!(mail.runs[0].result, Ok(Some(RawVerdict::Accept)));
    assert_eq!(mail.outcome, Outcome::Accept);
    assert_eq!(
        report.result,
        TestResult::Accepted(MessageChanges::default())
    );
}

#[test]
fn discard_and_quarantine_before_data_mark_the_message() {
    let dir = tempfile::tempdir().unwrap();
    for (verdict, discard, quarantine) in [(5, true, false), (6, false, true)] {
        let specs = vec![spec(dir.path(), "marker", &mail_verdict(verdict))];
        let report = test_run(specs, env(), envelope(&["a@x.test"]), MESSAGE).unwrap();
        let TestResult::Accepted(changes) = &report.result else {
            panic!("{report}");
        };
        assert_eq!((changes.discard, changes.quarantine), (discard, quarantine));
    }
}

#[test]
fn refusals_map_to_replies_and_bad_verdicts_fail() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (2, "refused at mail: 550 5.7.1 Rejected by policy"),
        (3, "refused at mail: 451 4.7.1 Try again later"),
        (
            4,
            "disconnected at mail: 421 4.7.0 mx.example.test Closing connection",
        ),
        (
            9,
            "refused at mail: 451 4.3.0 Filter odd failed; try again later",
        ),
    ];
    for (verdict, expected) in cases {
        let specs = vec![spec(dir.path(), "odd", &mail_verdict(verdict))];
        let report = test_run(specs, env(), envelope(&["a@x.test"]), MESSAGE).unwrap();
        let text = report.to_string();
        assert!(
            text.lines().any(|l| l == format!("result: {expected}")),
            "{verdict}:\n{text}"
        );
        if verdict == 9 {
            assert!(
                text.contains("FAILED: returned 9, which is not a verdict"),
                "{text}"
            );
        }
    }
}

#[test]
fn a_header_with_a_line_break_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = module(
        &[
            ("name", "X-Evil"),
            ("value", "a\r\nBcc: victim@example.test"),
            ("ok", "X-Fine"),
        ],
        r#"
  (func (export "sluice_on_data") (result i32)
    (call $add_header $$name $$value)
    (call $add_header $$ok $$name)
    (i32.const 0))
"#,
    );
    let report = test_run(
        vec![spec(dir.path(), "evil", &wasm)],
        env(),
        envelope(&["a@x.test"]),
        MESSAGE,
    )
    .unwrap();
    let TestResult::Accepted(changes) = &report.result else {
        panic!("{report}");
    };
    assert_eq!(
        changes.headers,
        [("X-Fine".to_string(), "X-Evil".to_string())]
    );
    let data = report.stages.iter().find(|s| s.hook == Hook::Data).unwrap();
    assert!(data.runs[0].logs[0].text.contains("CR or LF"), "{report}");
}

#[test]
fn a_bad_envelope_is_an_error() {
    let err = test_run(vec![], env(), envelope(&["not an address"]), MESSAGE).unwrap_err();
    assert!(
        matches!(&err, TestRunError::ForwardPath { given, .. } if given == "not an address"),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("invalid forward-path"), "{err}");
}
