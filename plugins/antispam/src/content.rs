//! Scoring of the message at end of data.

use alloc::string::String;
use alloc::vec::Vec;

use memchr::memmem;
use sluice_plugin_sdk::Ctx;
use sluice_plugin_sdk::syntax::domain_of;

use crate::config::Config;
use crate::symbols::{self, Hits};

/// How much header section is read past before the body rules give up
/// looking for the blank line that ends it.
const MAX_HEADER_SCAN: usize = 128 * 1024;
/// A subject needs this many cased letters before it can shout.
const CAPS_MIN_LETTERS: usize = 8;

/// Adds the content symbols of the message (the client is known to be
/// neither trusted nor authenticated).
pub fn score(ctx: &Ctx<'_>, config: &Config, hits: &mut Hits) {
    let mut hit = |symbol: &str| hits.add(symbol, config.score(symbol));
    if ctx.header("Date", 0).is_none() {
        hit(symbols::MISSING_DATE);
    }
    if ctx.header("Message-ID", 0).is_none() {
        hit(symbols::MISSING_MID);
    }
    match ctx.header("From", 0) {
        None => hit(symbols::MISSING_FROM),
        Some(from) => {
            // Where our domain publishes DMARC, DMARC judges the From:
            // (crate::authentication); elsewhere, this guess does.
            if from_domain(&from).is_some_and(|d| {
                ctx.is_local_domain(d) && !crate::authentication::dmarc_speaks_for(ctx, d)
            }) {
                hit(symbols::FROM_LOCAL_UNTRUSTED);
            }
        }
    }
    if ctx.header("Subject", 0).is_some_and(|s| shouts(&s)) {
        hit(symbols::SUBJ_ALL_CAPS);
    }
    apply_rules(ctx, config, hits);
}

/// The domain of the first address in a `From:` value: inside `<…>` if
/// there is an angle-addr, else the whole value.
pub fn from_domain(value: &str) -> Option<&str> {
    let addr = match value.rfind('<') {
        Some(open) => {
            let rest = &value[open + 1..];
            &rest[..rest.find('>')?]
        }
        None => value,
    };
    domain_of(addr.trim()).map(str::trim)
}

/// At least [`CAPS_MIN_LETTERS`] letters that have a case, and none of them
/// lowercase. Scripts without case (CJK, …) neither count nor shout.
pub fn shouts(subject: &str) -> bool {
    let mut cased = 0;
    for c in subject.chars() {
        if c.is_lowercase() {
            return false;
        }
        if c.is_uppercase() {
            cased += 1;
        }
    }
    cased >= CAPS_MIN_LETTERS
}

fn apply_rules(ctx: &Ctx<'_>, config: &Config, hits: &mut Hits) {
    let mut body: Option<Vec<u8>> = None;
    for rule in &config.rules {
        let found = match &rule.header {
            Some(name) => ctx.headers(name).into_iter().any(|value| {
                let value: String = value.to_ascii_lowercase();
                memmem::find(value.as_bytes(), rule.contains.as_bytes()).is_some()
            }),
            None => {
                let body = body.get_or_insert_with(|| lowercase_body(ctx, config.body_scan_limit));
                memmem::find(body, rule.contains.as_bytes()).is_some()
            }
        };
        if found {
            hits.add(&rule.symbol, rule.score);
        }
    }
}

/// The body (after the blank line), at most `limit` octets, ASCII letters
/// lowercased so that rule patterns (lowercased at load) match in any case.
fn lowercase_body(ctx: &Ctx<'_>, limit: usize) -> Vec<u8> {
    let mut raw = ctx.body(limit.saturating_add(MAX_HEADER_SCAN));
    let start = memmem::find(&raw, b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| memmem::find(&raw, b"\n\n").map(|i| i + 2))
        .unwrap_or(raw.len());
    raw.truncate(start.saturating_add(limit));
    let mut body = raw.split_off(start);
    body.make_ascii_lowercase();
    body
}

#[cfg(test)]
mod tests {
    use sluice_plugin_sdk::testing::MockHost;

    use super::*;

    const CLEAN: &[u8] = b"From: Alice <alice@remote.test>\r\nTo: bob@local.test\r\n\
        Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@remote.test>\r\n\
        Subject: Lunch on Friday?\r\n\r\nSee you at noon.\r\n";

    fn hits_for(message: &[u8], config: &Config) -> Hits {
        let host = MockHost::new()
            .with_local_domain("local.test")
            .with_message(message);
        let mut hits = Hits::new();
        score(&host.ctx(), config, &mut hits);
        hits
    }

    fn symbols(hits: &Hits) -> Vec<&str> {
        hits.iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn a_clean_message_scores_nothing() {
        assert_eq!(hits_for(CLEAN, &Config::default()), Hits::new());
    }

    #[test]
    fn missing_fields_shouting_and_forged_local_from_score() {
        let msg = b"From: \"Bank\" <security@LOCAL.test>\r\nSubject: URGENT: VERIFY YOUR ACCOUNT\r\n\r\nhi\r\n";
        let hits = hits_for(msg, &Config::default());
        assert_eq!(
            symbols(&hits),
            [
                symbols::MISSING_DATE,
                symbols::MISSING_MID,
                symbols::FROM_LOCAL_UNTRUSTED,
                symbols::SUBJ_ALL_CAPS
            ]
        );
        assert_eq!(hits.total(), 1.0 + 1.0 + 3.0 + 1.5);
        let no_from = hits_for(b"Subject: x\r\n\r\nbody", &Config::default());
        assert!(symbols(&no_from).contains(&symbols::MISSING_FROM));
    }

    #[test]
    fn score_overrides_apply() {
        let config = Config::parse(r#"{"scores": {"MISSING_DATE": 4.0}}"#).unwrap();
        let hits = hits_for(b"From: a@remote.test\r\nMessage-ID: <x@y>\r\n\r\n", &config);
        assert_eq!(
            hits.iter().collect::<Vec<_>>(),
            [(symbols::MISSING_DATE, 4.0)]
        );
    }

    #[test]
    fn subjects_shout_only_with_enough_cased_letters_and_no_lowercase() {
        assert!(shouts("FREE MONEY NOW!!!"));
        assert!(shouts("ÜBERWEISUNG JETZT"));
        assert!(!shouts("Free money now"));
        assert!(!shouts("HI THERE"), "seven letters");
        assert!(!shouts("RE: 免费优惠券活动开始了"), "uncased script");
        assert!(!shouts("FREE MONEY NOw"));
    }

    #[test]
    fn from_domains_are_found_in_common_forms() {
        assert_eq!(from_domain("alice@example.org"), Some("example.org"));
        assert_eq!(
            from_domain("Alice <alice@example.org>"),
            Some("example.org")
        );
        assert_eq!(
            from_domain("\"a@b.test\" <alice@example.org>"),
            Some("example.org")
        );
        assert_eq!(from_domain("undisclosed"), None);
        assert_eq!(from_domain("Broken <alice@example.org"), None);
    }

    #[test]
    fn rules_match_headers_and_body_in_any_case_once() {
        let config = Config::parse(
            r#"{"rules": [
                {"symbol": "LUNCH", "header": "subject", "contains": "LUNCH", "score": 2.0},
                {"symbol": "NOON", "contains": "At Noon", "score": 0.5},
                {"symbol": "NOT_IN_BODY", "contains": "alice@remote", "score": 9.0},
                {"symbol": "ABSENT", "header": "X-Mailer", "contains": "x", "score": 9.0}
            ]}"#,
        )
        .unwrap();
        let hits = hits_for(CLEAN, &config);
        assert_eq!(
            symbols(&hits),
            ["LUNCH", "NOON"],
            "header text is not body text"
        );
        assert_eq!(hits.total(), 2.5);
    }

    #[test]
    fn body_rules_read_at_most_the_scan_limit() {
        let mut msg = b"From: a@remote.test\r\n\r\n".to_vec();
        msg.extend(core::iter::repeat_n(b'.', 1000));
        msg.extend_from_slice(b"needle");
        let rule = r#""rules": [{"symbol": "NEEDLE", "contains": "needle", "score": 1}]"#;
        let near =
            Config::parse(&alloc::format!(r#"{{"body_scan_limit": 1006, {rule}}}"#)).unwrap();
        let far = Config::parse(&alloc::format!(r#"{{"body_scan_limit": 1005, {rule}}}"#)).unwrap();
        assert!(symbols(&hits_for(&msg, &near)).contains(&"NEEDLE"));
        assert!(!symbols(&hits_for(&msg, &far)).contains(&"NEEDLE"));
    }
}
