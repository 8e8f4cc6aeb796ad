//! The filter's hooks end to end against the SDK's test double.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use sluice_plugin_sdk::testing::MockHost;
use sluice_plugin_sdk::{DnsResult, Qtype, Verdict};

use super::*;

const GOOD: &[u8] = b"From: Alice <alice@remote.test>\r\nTo: bob@local.test\r\n\
    Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@remote.test>\r\n\
    Subject: Lunch on Friday?\r\n\r\nSee you at noon.\r\n";

/// An untrusted client at 192.0.2.7 talking to mx.local.test.
fn stranger() -> MockHost {
    MockHost::new()
        .with_property("conn.ip", "192.0.2.7")
        .with_property("conn.trusted", "0")
        .with_property("server.hostname", "mx.local.test")
        .with_property("tx.mail_from", "alice@remote.test")
        .with_property("tx.rcpts", "bob@local.test")
        .with_local_domain("local.test")
        .with_dns(
            Qtype::Mx,
            "remote.test",
            DnsResult::Records(vec!["10 mx.remote.test".into()]),
        )
        .with_dns(
            Qtype::Mx,
            "local.test",
            DnsResult::Records(vec!["10 mx.local.test".into()]),
        )
        .with_now_ms(1_800_000_000_000)
}

fn filter(config: &str) -> Antispam {
    Antispam::init(config).expect("valid config")
}

fn reply(host: &MockHost) -> (u16, String) {
    host.reply().expect("a reply")
}

fn header(host: &MockHost, name: &str) -> Option<String> {
    host.added_headers()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

#[test]
fn helo_claiming_to_be_us_is_refused_unless_trusted() {
    let host = stranger();
    let mut f = filter("{}");
    assert_eq!(f.on_helo(&host.ctx(), "MX.local.test"), Verdict::Reject);
    assert_eq!(
        reply(&host),
        (
            550,
            "5.7.1 <MX.local.test>: Helo command rejected: you are not me".to_string()
        )
    );
    assert_eq!(f.on_helo(&host.ctx(), "local.test"), Verdict::Reject);
    assert_eq!(
        f.on_helo(&host.ctx(), "mail.remote.test"),
        Verdict::Continue
    );

    host.set_property("conn.trusted", "1");
    assert_eq!(f.on_helo(&host.ctx(), "mx.local.test"), Verdict::Continue);
}

#[test]
fn a_helo_symbol_is_scored_at_end_of_data_and_replaced_by_a_new_helo() {
    let host = stranger().with_message(GOOD);
    let mut f = filter("{}");
    assert_eq!(f.on_helo(&host.ctx(), "192.0.2.7"), Verdict::Continue);
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    assert_eq!(
        header(&host, "X-Spam-Status").as_deref(),
        Some("No, score=2.0 tests=HELO_BARE_IP")
    );
    assert_eq!(host.scores(), [("HELO_BARE_IP".to_string(), 2.0)]);

    let host = stranger().with_message(GOOD);
    assert_eq!(f.on_helo(&host.ctx(), "pc17"), Verdict::Continue);
    assert_eq!(
        f.on_helo(&host.ctx(), "mail.remote.test"),
        Verdict::Continue
    );
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    assert_eq!(
        header(&host, "X-Spam-Status").as_deref(),
        Some("No, score=0.0 tests=none")
    );
}

#[test]
fn a_local_sender_from_a_stranger_is_refused() {
    let host = stranger();
    let mut f = filter("{}");
    assert_eq!(f.on_mail(&host.ctx(), "ceo@Local.Test"), Verdict::Reject);
    assert_eq!(
        reply(&host),
        (
            550,
            "5.7.1 <ceo@Local.Test>: Sender address rejected: not logged in".to_string()
        )
    );

    let authed = stranger().with_property("conn.auth", "ceo");
    assert_eq!(
        f.on_mail(&authed.ctx(), "ceo@local.test"),
        Verdict::Continue
    );
    let mut lenient = filter(r#"{"reject_local_sender": false}"#);
    assert_eq!(
        lenient.on_mail(&host.ctx(), "ceo@local.test"),
        Verdict::Continue
    );
}

#[test]
fn sender_domains_must_exist_in_dns() {
    let host = stranger()
        .with_dns(
            Qtype::Mx,
            "nullmx.test",
            DnsResult::Records(vec!["0 .".into()]),
        )
        .with_dns(Qtype::Mx, "flaky.test", DnsResult::Failed);
    let mut f = filter("{}");
    assert_eq!(
        f.on_mail(&host.ctx(), "alice@remote.test"),
        Verdict::Continue
    );
    assert_eq!(f.on_mail(&host.ctx(), "x@nowhere.test"), Verdict::Tempfail);
    assert_eq!(
        reply(&host),
        (
            450,
            "4.1.8 <x@nowhere.test>: Sender address rejected: domain not found".to_string()
        )
    );
    assert_eq!(f.on_mail(&host.ctx(), "x@nullmx.test"), Verdict::Reject);
    assert_eq!(reply(&host).0, 550);
    assert!(reply(&host).1.starts_with("5.7.27 "));
    assert_eq!(
        f.on_mail(&host.ctx(), "x@flaky.test"),
        Verdict::Continue,
        "DNS trouble never refuses"
    );
    assert_eq!(
        f.on_mail(&host.ctx(), ""),
        Verdict::Continue,
        "null reverse-path"
    );
    assert_eq!(f.on_mail(&host.ctx(), "x@[192.0.2.1]"), Verdict::Continue);

    let queries = host.dns_queries().len();
    let mut off = filter(r#"{"check_sender_domain": false}"#);
    assert_eq!(
        off.on_mail(&host.ctx(), "x@nowhere.test"),
        Verdict::Continue
    );
    assert_eq!(
        host.dns_queries().len(),
        queries,
        "no lookup when switched off"
    );
}

#[test]
fn a_listed_client_is_refused_at_rcpt_with_one_lookup_per_connection() {
    let host = stranger().with_dns(
        Qtype::A,
        "7.2.0.192.bl.test",
        DnsResult::Records(vec!["127.0.0.2".into()]),
    );
    let mut f = filter(r#"{"dnsbl_zones": ["clean.test", "bl.test"]}"#);
    assert_eq!(f.on_rcpt(&host.ctx(), "bob@local.test"), Verdict::Reject);
    assert_eq!(
        reply(&host),
        (
            554,
            "5.7.1 Service unavailable; client [192.0.2.7] listed by bl.test".to_string()
        )
    );
    assert_eq!(f.on_rcpt(&host.ctx(), "carol@local.test"), Verdict::Reject);
    assert_eq!(
        host.dns_queries(),
        [
            (Qtype::A, "7.2.0.192.clean.test".to_string()),
            (Qtype::A, "7.2.0.192.bl.test".to_string())
        ],
        "the verdict is kept in a connection note"
    );
}

#[test]
fn rcpt_is_asked_for_only_when_a_dnsbl_zone_is_configured() {
    use sluice_plugin_sdk::Hooks;
    let without = filter("{}").hooks();
    assert!(!without.contains(Hooks::RCPT), "{without:?}");
    assert!(without.contains(Hooks::HELO | Hooks::MAIL | Hooks::DATA));
    assert_eq!(
        filter(r#"{"dnsbl_zones": ["bl.test"]}"#).hooks(),
        Hooks::ALL
    );
}

#[test]
fn dnsbl_skips_privileged_clients_and_handles_ipv6() {
    let mut f = filter(r#"{"dnsbl_zones": ["bl.test"]}"#);
    let trusted = stranger().with_property("conn.trusted", "1");
    assert_eq!(
        f.on_rcpt(&trusted.ctx(), "x@remote.test"),
        Verdict::Continue
    );
    assert!(trusted.dns_queries().is_empty());

    let v6 = stranger().with_property("conn.ip", "2001:db8::1");
    assert_eq!(f.on_rcpt(&v6.ctx(), "bob@local.test"), Verdict::Continue);
    let (_, name) = &v6.dns_queries()[0];
    assert!(
        name.starts_with("1.0.0.0.") && name.ends_with(".8.b.d.0.1.0.0.2.bl.test"),
        "{name}"
    );

    let no_ip = stranger();
    no_ip.remove_property("conn.ip");
    assert_eq!(f.on_rcpt(&no_ip.ctx(), "bob@local.test"), Verdict::Continue);
}

#[test]
fn end_of_data_adds_the_headers_and_rejects_at_the_threshold() {
    let spam = b"From: \"Bank\" <security@local.test>\r\nSubject: VERIFY YOUR ACCOUNT NOW\r\n\r\n\
        Click here to claim your prize\r\n";
    let config = r#"{"reject_score": 9.0,
        "rules": [{"symbol": "PRIZE", "contains": "claim your prize", "score": 2.5}]}"#;
    let host = stranger().with_message(spam);
    let mut f = filter(config);
    assert_eq!(f.on_data(&host.ctx()), Verdict::Reject);
    assert_eq!(
        reply(&host),
        (
            550,
            "5.7.1 Message rejected as spam (score 9.0)".to_string()
        )
    );
    assert_eq!(header(&host, "X-Spam-Score").as_deref(), Some("9.0"));
    assert_eq!(
        header(&host, "X-Spam-Status").as_deref(),
        Some(
            "Yes, score=9.0 tests=MISSING_DATE,MISSING_MID,FROM_LOCAL_UNTRUSTED,SUBJ_ALL_CAPS,PRIZE"
        )
    );
    let total: f64 = host.scores().iter().map(|(_, s)| s).sum();
    assert_eq!(total, 9.0, "the host's tally matches the header");

    let host = stranger().with_message(GOOD);
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    assert_eq!(header(&host, "X-Spam-Score").as_deref(), Some("0.0"));
    assert_eq!(host.reply(), None);
}

#[test]
fn greylisting_defers_a_new_triplet_until_the_delay_has_passed() {
    let host = stranger()
        .with_message(GOOD)
        .with_property("tx.rcpts", "bob@local.test\ncarol@local.test");
    let mut f = filter(r#"{"greylist": true, "greylist_delay_secs": 120}"#);
    assert_eq!(f.on_data(&host.ctx()), Verdict::Tempfail);
    assert_eq!(
        reply(&host),
        (
            451,
            "4.7.1 Greylisted, please try again in 120 seconds".to_string()
        )
    );
    assert!(
        host.added_headers().is_empty(),
        "no headers on a deferred message"
    );
    host.end_transaction();

    host.advance_ms(60_000);
    assert_eq!(f.on_data(&host.ctx()), Verdict::Tempfail);
    assert_eq!(
        reply(&host).1,
        "4.7.1 Greylisted, please try again in 60 seconds"
    );
    host.end_transaction();

    // The retry comes from a neighbour in the same /24.
    host.advance_ms(60_000);
    host.set_property("conn.ip", "192.0.2.99");
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    assert!(header(&host, "X-Spam-Status").is_some());
    let keys: Vec<String> = ["bob@local.test", "carol@local.test"]
        .iter()
        .map(|r| greylist::key("192.0.2.0/24", "alice@remote.test", r))
        .collect();
    for k in &keys {
        assert_eq!(host.kv(k).as_deref(), Some("pass"), "{k}");
    }
}

#[test]
fn privileged_clients_skip_the_end_of_data_checks() {
    let spam = b"Subject: FREE MONEY FOR EVERYONE\r\n\r\nbuy\r\n";
    let mut f = filter(r#"{"greylist": true, "reject_score": 1.0}"#);
    for host in [
        stranger()
            .with_property("conn.trusted", "1")
            .with_message(spam),
        stranger()
            .with_property("conn.auth", "alice")
            .with_message(spam),
    ] {
        assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
        assert!(host.added_headers().is_empty());
        assert!(host.scores().is_empty());
    }
}

#[test]
fn a_bad_config_fails_the_load() {
    let err = Antispam::init(r#"{"reject_score": "ten"}"#).unwrap_err();
    assert!(err.message().contains("invalid [plugin.config]"), "{err}");
}

#[test]
fn scores_of_earlier_plugins_count_and_show_but_are_not_reported_again() {
    let host = stranger()
        .with_message(GOOD)
        .with_property("tx.symbols", "SPF_FAIL 4.0\nRATE 1.5\nRATE 1.5\n");
    let mut f = filter(r#"{"reject_score": 7.0}"#);
    assert_eq!(f.on_helo(&host.ctx(), "pc17"), Verdict::Continue);
    assert_eq!(f.on_data(&host.ctx()), Verdict::Reject);
    assert_eq!(
        header(&host, "X-Spam-Status").as_deref(),
        Some("Yes, score=8.0 tests=SPF_FAIL,RATE,HELO_NOT_FQDN")
    );
    assert_eq!(
        host.scores(),
        [("HELO_NOT_FQDN".to_string(), 1.0)],
        "only its own"
    );
    assert_eq!(
        reply(&host),
        (
            550,
            "5.7.1 Message rejected as spam (score 8.0)".to_string()
        )
    );
}

#[test]
fn dmarc_reject_refuses_quarantine_scores_and_none_only_annotates() {
    let mut f = filter("{}");
    let forged = b"From: CEO <ceo@bank.test>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\
        Message-ID: <1@x.test>\r\nSubject: wire\r\n\r\nnow\r\n";
    let host = stranger()
        .with_message(forged)
        .with_property("auth.dmarc", "fail reject bank.test");
    assert_eq!(f.on_data(&host.ctx()), Verdict::Reject);
    let (code, text) = reply(&host);
    assert_eq!(code, 550);
    assert!(
        text.starts_with("5.7.1 ") && text.contains("DMARC policy of bank.test"),
        "{text}"
    );

    let host = stranger()
        .with_message(forged)
        .with_property("auth.dmarc", "fail quarantine bank.test");
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    let status = header(&host, "X-Spam-Status").unwrap();
    assert!(
        status.starts_with("Yes, score=6.0 tests=DMARC_QUARANTINE"),
        "{status}"
    );

    for policy in ["none", "reject"] {
        let host = stranger()
            .with_message(forged)
            .with_property("auth.dmarc", &alloc::format!("pass {policy} bank.test"));
        assert_eq!(f.on_data(&host.ctx()), Verdict::Continue, "{policy}");
    }
    let host = stranger()
        .with_message(forged)
        .with_property("auth.dmarc", "fail none bank.test");
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    assert_eq!(
        header(&host, "X-Spam-Score").as_deref(),
        Some("0.0"),
        "p=none only annotates"
    );

    let mut lenient = filter(r#"{"dmarc_reject": false}"#);
    let host = stranger()
        .with_message(forged)
        .with_property("auth.dmarc", "fail reject bank.test");
    assert_eq!(
        lenient.on_data(&host.ctx()),
        Verdict::Reject,
        "DMARC_REJECT reaches reject_score"
    );
    assert!(reply(&host).1.contains("as spam (score 10.0)"));
}

#[test]
fn spf_scores_and_refuses_only_when_asked() {
    let mut f = filter("{}");
    let host = stranger()
        .with_message(GOOD)
        .with_property("auth.spf", "fail remote.test");
    assert_eq!(
        f.on_mail(&host.ctx(), "alice@remote.test"),
        Verdict::Continue
    );
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    assert_eq!(header(&host, "X-Spam-Score").as_deref(), Some("3.0"));
    let host = stranger()
        .with_message(GOOD)
        .with_property("auth.spf", "softfail remote.test")
        .with_property("auth.dkim", "fail remote.test s1");
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    assert_eq!(header(&host, "X-Spam-Score").as_deref(), Some("2.0"));

    let mut strict = filter(r#"{"spf_reject": true}"#);
    let host = stranger().with_property("auth.spf", "fail remote.test");
    assert_eq!(
        strict.on_mail(&host.ctx(), "alice@remote.test"),
        Verdict::Reject
    );
    let (code, text) = reply(&host);
    assert_eq!((code, &text[..7]), (550, "5.7.23 "), "{text}");
    let host = stranger().with_property("auth.spf", "softfail remote.test");
    assert_eq!(
        strict.on_mail(&host.ctx(), "alice@remote.test"),
        Verdict::Continue
    );
}

#[test]
fn a_local_from_is_judged_by_dmarc_where_the_domain_publishes_it() {
    let mut f = filter("{}");
    let ours = b"From: <ceo@local.test>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\
        Message-ID: <1@x.test>\r\nSubject: hi\r\n\r\nhi\r\n";
    let host = stranger().with_message(ours);
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    assert_eq!(
        header(&host, "X-Spam-Score").as_deref(),
        Some("3.0"),
        "no DMARC: the guess"
    );
    let host = stranger()
        .with_message(ours)
        .with_property("auth.dmarc", "pass reject local.test");
    assert_eq!(f.on_data(&host.ctx()), Verdict::Continue);
    assert_eq!(
        header(&host, "X-Spam-Score").as_deref(),
        Some("0.0"),
        "DMARC vouched for it"
    );
    let host = stranger()
        .with_message(ours)
        .with_property("auth.dmarc", "fail reject local.test");
    assert_eq!(f.on_data(&host.ctx()), Verdict::Reject);
}
