//! The MTA-STS texts (RFC 8461): the TXT record that announces a policy,
//! the policy itself, and which MX hosts it allows.

use std::time::Duration;

/// RFC 8461 §3.2: `max_age` is at most a year.
const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to matching MX hosts, over TLS with a valid certificate.
    Enforce,
    /// Deliver as usual; report (here: log) what enforcing would refuse.
    Testing,
    /// The domain withdraws its policy.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// MX host patterns: names, or `*.` and a domain for one label more.
    pub mx: Vec<String>,
    pub max_age: Duration,
}

impl Policy {
    /// Parses `https://mta-sts.<domain>/.well-known/mta-sts.txt` (§3.2):
    /// `key: value` lines, CRLF or LF.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(format!("not a key: value line: {line:?}"));
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_owned()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode {other:?}")),
                    })
                }
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                "max_age" => {
                    let secs = value
                        .parse::<u64>()
                        .map_err(|_| format!("max_age {value:?} is not a number"))?;
                    max_age = Some(Duration::from_secs(secs.min(MAX_AGE_LIMIT)));
                }
                // §3.2: other keys are ignored, for extensions.
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("version is not STSv1".into());
        }
        let mode = mode.ok_or("no mode")?;
        let max_age = max_age.ok_or("no max_age")?;
        if mode != Mode::None && mx.is_empty() {
            return Err("no mx patterns".into());
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// Whether MX host `host` is one the policy allows (§4.1).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => *pattern == host,
            })
    }
}

/// The `id` of a `_mta-sts` TXT record (§3.1), given its strings joined;
/// `None` when it is not an STSv1 record or has no valid id.
pub fn record_id(txt: &str) -> Option<String> {
    let mut fields = txt.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next()? != "v=STSv1" {
        return None;
    }
    fields
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| k.trim() == "id")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|id| (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n\
                           mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

    #[test]
    fn the_rfc_example_parses_and_matches() {
        let p = Policy::parse(EXAMPLE).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, Duration::from_secs(604_800));
        assert!(p.allows("mail.example.com"));
        assert!(p.allows("MAIL.Example.COM."));
        assert!(p.allows("mx1.example.net"));
        assert!(
            !p.allows("example.net"),
            "a wildcard is one label, not zero"
        );
        assert!(!p.allows("a.b.example.net"), "nor two");
        assert!(!p.allows("mail.example.org"));
    }

    #[test]
    fn broken_policies_are_refused() {
        for (text, why) in [
            ("mode: enforce\nmx: a\nmax_age: 1\n", "version"),
            ("version: STSv1\nmx: a\nmax_age: 1\n", "no mode"),
            (
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                "unknown mode",
            ),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
            ("version: STSv1\nmode: enforce\nmx: a\n", "no max_age"),
            (
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: soon\n",
                "not a number",
            ),
            ("<html>", "not a key: value line"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let long = Policy::parse("version: STSv1\nmode: none\nmax_age: 99999999999\n").unwrap();
        assert_eq!(long.max_age, Duration::from_secs(MAX_AGE_LIMIT));
    }

    #[test]
    fn txt_records_give_their_id() {
        assert_eq!(
            record_id("v=STSv1; id=20160831085700Z;").as_deref(),
            Some("20160831085700Z")
        );
        assert_eq!(record_id("v=STSv1;id=abc").as_deref(), Some("abc"));
        assert_eq!(record_id("v=spf1 -all"), None);
        assert_eq!(record_id("v=STSv1; id=not-alnum"), None);
        assert_eq!(record_id("v=STSv1;"), None);
    }
}
