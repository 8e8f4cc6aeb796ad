//! The built-in symbols, their default scores, and the tally of one message.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// HELO is an IP address without the brackets of an address literal.
pub const HELO_BARE_IP: &str = "HELO_BARE_IP";
/// HELO is a single label (`localhost`, `PC-17`), not a fully-qualified name.
pub const HELO_NOT_FQDN: &str = "HELO_NOT_FQDN";
/// HELO is neither a domain nor an address literal.
pub const HELO_BAD_SYNTAX: &str = "HELO_BAD_SYNTAX";
/// No `Date:` header field (RFC 5322 requires one).
pub const MISSING_DATE: &str = "MISSING_DATE";
/// No `Message-ID:` header field.
pub const MISSING_MID: &str = "MISSING_MID";
/// No `From:` header field (RFC 5322 requires one).
pub const MISSING_FROM: &str = "MISSING_FROM";
/// The subject shouts: at least eight letters, none lowercase.
pub const SUBJ_ALL_CAPS: &str = "SUBJ_ALL_CAPS";
/// `From:` names one of our domains, but the client is neither trusted nor
/// authenticated.
pub const FROM_LOCAL_UNTRUSTED: &str = "FROM_LOCAL_UNTRUSTED";

/// SPF says the client may not send for the MAIL FROM domain (`-all`).
pub const SPF_FAIL: &str = "SPF_FAIL";
/// SPF says the client probably may not (`~all`).
pub const SPF_SOFTFAIL: &str = "SPF_SOFTFAIL";
/// A DKIM signature did not verify.
pub const DKIM_FAIL: &str = "DKIM_FAIL";
/// DMARC failed and the `From:` domain asks for quarantine: enough for
/// `X-Spam-Status: Yes` (the spam folder) on its own.
pub const DMARC_QUARANTINE: &str = "DMARC_QUARANTINE";
/// DMARC failed, the domain asks for rejection, and `dmarc_reject` is off.
pub const DMARC_REJECT: &str = "DMARC_REJECT";

/// Every built-in symbol with its default score (overridable through the
/// `scores` setting).
pub const BUILT_IN: &[(&str, f64)] = &[
    (HELO_BARE_IP, 2.0),
    (HELO_NOT_FQDN, 1.0),
    (HELO_BAD_SYNTAX, 2.5),
    (MISSING_DATE, 1.0),
    (MISSING_MID, 1.0),
    (MISSING_FROM, 1.5),
    (SUBJ_ALL_CAPS, 1.5),
    (FROM_LOCAL_UNTRUSTED, 3.0),
    (SPF_FAIL, 3.0),
    (SPF_SOFTFAIL, 1.0),
    (DKIM_FAIL, 1.0),
    (DMARC_QUARANTINE, 6.0),
    (DMARC_REJECT, 10.0),
];

/// An `X-Spam-Status` value stays well under the 998-octet line limit of
/// RFC 5322 even with many rules; the remaining symbols are left out.
const MAX_STATUS_LEN: usize = 900;

/// The symbols that fired for one message, with their scores.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hits(Vec<(String, f64)>);

impl Hits {
    /// No symbols.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `symbol` once; a second hit of the same symbol is ignored.
    pub fn add(&mut self, symbol: &str, score: f64) {
        if !self.0.iter().any(|(s, _)| s == symbol) {
            self.0.push((String::from(symbol), score));
        }
    }

    /// Adds `score` to `symbol`, creating it if new: for other plugins'
    /// scores, where one symbol may come once per recipient.
    pub fn add_sum(&mut self, symbol: &str, score: f64) {
        match self.0.iter_mut().find(|(s, _)| s == symbol) {
            Some((_, total)) => *total += score,
            None => self.0.push((String::from(symbol), score)),
        }
    }

    /// How many symbols there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no symbol fired.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The symbols and scores, in the order they fired.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(s, v)| (s.as_str(), *v))
    }

    /// The sum of the scores.
    pub fn total(&self) -> f64 {
        // Not `sum()`: an empty f64 sum is -0.0, which would print as "-0.0".
        self.0.iter().fold(0.0, |acc, (_, v)| acc + v)
    }

    /// `X-Spam-Score`: the total with one decimal.
    pub fn score_header(&self) -> String {
        format!("{:.1}", self.total())
    }

    /// `X-Spam-Status`: `Yes|No, score=<n> tests=<symbols>` (`tests=none`
    /// when nothing fired), like SpamAssassin's.
    pub fn status_header(&self, spam_score: f64) -> String {
        let total = self.total();
        let mut out = format!(
            "{}, score={:.1} tests=",
            if total >= spam_score { "Yes" } else { "No" },
            total
        );
        if self.0.is_empty() {
            out.push_str("none");
        }
        for (i, (symbol, _)) in self.0.iter().enumerate() {
            if out.len() + symbol.len() + 1 > MAX_STATUS_LEN {
                break;
            }
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{symbol}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_show_the_total_and_the_symbols() {
        let mut hits = Hits::new();
        assert_eq!(hits.score_header(), "0.0");
        assert_eq!(hits.status_header(5.0), "No, score=0.0 tests=none");
        hits.add(MISSING_DATE, 1.0);
        hits.add(SUBJ_ALL_CAPS, 1.5);
        hits.add(MISSING_DATE, 1.0);
        assert_eq!(hits.total(), 2.5);
        assert_eq!(hits.score_header(), "2.5");
        assert_eq!(
            hits.status_header(5.0),
            "No, score=2.5 tests=MISSING_DATE,SUBJ_ALL_CAPS"
        );
        hits.add("LOTTERY", 2.5);
        assert_eq!(
            hits.status_header(5.0),
            "Yes, score=5.0 tests=MISSING_DATE,SUBJ_ALL_CAPS,LOTTERY",
            "the threshold itself is spam"
        );
        hits.add_sum("LOTTERY", 1.0);
        hits.add_sum("OTHER", 1.0);
        hits.add_sum("OTHER", 0.5);
        assert_eq!(hits.len(), 4, "LOTTERY summed, OTHER once");
        assert_eq!(hits.total(), 7.5);
        hits.add("WHITELISTED", -10.0);
        assert_eq!(hits.score_header(), "-2.5");
    }

    #[test]
    fn a_long_status_stays_on_one_legal_line() {
        let mut hits = Hits::new();
        for i in 0..200 {
            hits.add(&format!("RULE_NUMBER_{i}"), 0.1);
        }
        let status = hits.status_header(5.0);
        assert!(status.len() <= MAX_STATUS_LEN, "{}", status.len());
        assert!(
            status.ends_with(|c: char| c.is_ascii_digit()),
            "ends on a whole symbol"
        );
        assert!(status.starts_with("Yes, score=20.0 tests=RULE_NUMBER_0,RULE_NUMBER_1,"));
    }
}
