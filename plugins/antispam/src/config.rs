//! `[plugin.config]` of the antispam plugin.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;
use sluice_plugin_sdk::InitError;

use crate::symbols;

/// The settings, with the defaults of docs/plugins.md.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// DNS blocklist zones queried for the client's address (e.g.
    /// `zen.spamhaus.org`); empty: no DNSBL checks.
    pub dnsbl_zones: Vec<String>,
    /// At or above this score the message is refused at end of data.
    pub reject_score: f64,
    /// At or above this score `X-Spam-Status` says `Yes`.
    pub spam_score: f64,
    /// Greylist at end of data (RFC 6647).
    pub greylist: bool,
    /// How long a new (client /24, sender, recipient) triplet must wait.
    pub greylist_delay_secs: u32,
    /// How long a first attempt is remembered while the client has not
    /// retried.
    pub greylist_retry_window_secs: u32,
    /// How long a triplet that passed stays accepted without a new wait.
    pub greylist_pass_ttl_secs: u32,
    /// At MAIL: a sender domain with no MX, A or AAAA record gets
    /// `450 4.1.8`.
    pub check_sender_domain: bool,
    /// At MAIL: an untrusted, unauthenticated client using one of our
    /// domains as sender gets `550 5.7.1`.
    pub reject_local_sender: bool,
    /// At end of data: a DMARC failure of a domain whose policy is
    /// `p=reject` gets `550 5.7.1` (as the domain asks). Off: the
    /// `DMARC_REJECT` symbol scores instead.
    pub dmarc_reject: bool,
    /// At MAIL: an SPF `fail` of the sender's domain gets `550 5.7.23`.
    /// Off (the default): the `SPF_FAIL` symbol scores, since SPF breaks
    /// on forwarding and DMARC is the better judge.
    pub spf_reject: bool,
    /// How many octets of the message body the rules read.
    pub body_scan_limit: usize,
    /// Scores replacing the built-in ones, by symbol.
    pub scores: BTreeMap<String, f64>,
    /// Content rules.
    pub rules: Vec<Rule>,
}

/// One content rule: a case-insensitive substring in a header or the body.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The name shown in `X-Spam-Status` (letters, digits, `_`).
    pub symbol: String,
    /// The header field to search; the body when absent.
    #[serde(default)]
    pub header: Option<String>,
    /// The text to look for (ASCII letters match in any case).
    pub contains: String,
    /// Added once if the text is found.
    pub score: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dnsbl_zones: Vec::new(),
            reject_score: 10.0,
            spam_score: 5.0,
            greylist: false,
            greylist_delay_secs: 300,
            greylist_retry_window_secs: 2 * 86_400,
            greylist_pass_ttl_secs: 36 * 86_400,
            check_sender_domain: true,
            reject_local_sender: true,
            dmarc_reject: true,
            spf_reject: false,
            body_scan_limit: 256 * 1024,
            scores: BTreeMap::new(),
            rules: Vec::new(),
        }
    }
}

fn valid_symbol(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Config {
    /// Parses and checks the JSON config: every problem an operator could
    /// make is reported at load time rather than discovered per message.
    pub fn parse(json: &str) -> Result<Self, InitError> {
        let mut config: Config = sluice_plugin_sdk::config::from_json(json)?;
        config.validate()?;
        for zone in &mut config.dnsbl_zones {
            *zone = String::from(zone.trim_matches('.')).to_ascii_lowercase();
        }
        for rule in &mut config.rules {
            rule.contains.make_ascii_lowercase();
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), InitError> {
        let err = |m: String| Err(InitError::new(m));
        for (name, v) in [
            ("reject_score", self.reject_score),
            ("spam_score", self.spam_score),
        ] {
            if !v.is_finite() {
                return err(format!("{name} must be a finite number"));
            }
        }
        for zone in &self.dnsbl_zones {
            let z = zone.trim_matches('.');
            if z.is_empty() || !z.contains('.') || z.contains(|c: char| c.is_whitespace()) {
                return err(format!("dnsbl_zones: {zone:?} is not a DNS zone"));
            }
        }
        for (symbol, score) in &self.scores {
            if !symbols::BUILT_IN.iter().any(|(s, _)| s == symbol) {
                return err(format!(
                    "scores: {symbol:?} is not a built-in symbol (rules carry their own score)"
                ));
            }
            if !score.is_finite() {
                return err(format!("scores: {symbol} must be a finite number"));
            }
        }
        for rule in &self.rules {
            if !valid_symbol(&rule.symbol) {
                return err(format!(
                    "rules: symbol {:?} must be letters, digits and _",
                    rule.symbol
                ));
            }
            if rule.contains.is_empty() {
                return err(format!("rules: {} has an empty `contains`", rule.symbol));
            }
            if !rule.score.is_finite() {
                return err(format!("rules: {} must have a finite score", rule.symbol));
            }
            if rule.header.as_deref().is_some_and(|h| {
                h.is_empty() || !h.bytes().all(|b| (33..=126).contains(&b) && b != b':')
            }) {
                return err(format!(
                    "rules: {} names an invalid header field",
                    rule.symbol
                ));
            }
        }
        Ok(())
    }

    /// The score of a built-in symbol, after `scores` overrides.
    pub fn score(&self, symbol: &str) -> f64 {
        self.scores.get(symbol).copied().unwrap_or_else(|| {
            symbols::BUILT_IN
                .iter()
                .find(|(s, _)| *s == symbol)
                .map_or(0.0, |(_, v)| *v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_gives_the_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.dnsbl_zones.is_empty());
        assert_eq!(c.reject_score, 10.0);
        assert!(!c.greylist);
        assert_eq!(c.greylist_delay_secs, 300);
        assert_eq!(Config::parse("{}").unwrap(), c);
    }

    #[test]
    fn settings_are_read_and_normalised() {
        let c = Config::parse(
            r#"{"dnsbl_zones": ["Zen.Example.", "bl.test"], "reject_score": 7.5, "greylist": true,
                "greylist_delay_secs": 60, "scores": {"MISSING_DATE": 0.5},
                "rules": [{"symbol": "WIN", "contains": "You Have WON", "score": 2},
                          {"symbol": "PILLS", "header": "Subject", "contains": "pills", "score": 3.5}]}"#,
        )
        .unwrap();
        assert_eq!(c.dnsbl_zones, ["zen.example", "bl.test"]);
        assert_eq!(c.reject_score, 7.5);
        assert!(c.greylist);
        assert_eq!(c.greylist_delay_secs, 60);
        assert_eq!(c.score("MISSING_DATE"), 0.5);
        assert_eq!(c.score("MISSING_MID"), 1.0, "not overridden: built-in");
        assert_eq!(c.rules[0].contains, "you have won");
        assert_eq!(c.rules[1].header.as_deref(), Some("Subject"));
    }

    #[test]
    fn mistakes_are_reported_at_load_time() {
        for (json, needle) in [
            (r#"{"dnsbl_zone": []}"#, "unknown field"),
            (r#"{"reject_score": "high"}"#, "invalid type"),
            (r#"{"dnsbl_zones": ["nodots"]}"#, "not a DNS zone"),
            (r#"{"scores": {"MISSING_DAT": 1}}"#, "not a built-in symbol"),
            (
                r#"{"rules": [{"symbol": "A B", "contains": "x", "score": 1}]}"#,
                "letters, digits",
            ),
            (
                r#"{"rules": [{"symbol": "A", "contains": "", "score": 1}]}"#,
                "empty",
            ),
            (
                r#"{"rules": [{"symbol": "A", "header": "Sub ject", "contains": "x", "score": 1}]}"#,
                "invalid header",
            ),
            (
                r#"{"rules": [{"symbol": "A", "contains": "x"}]}"#,
                "missing field",
            ),
            ("[1]", "invalid type"),
        ] {
            let e = Config::parse(json).expect_err(json);
            assert!(e.message().contains(needle), "{json}: {e}");
        }
    }
}
