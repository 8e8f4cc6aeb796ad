//! What email authentication found (SPF, DKIM, ARC, DMARC, iprev), in the
//! words of RFC 8601's `Authentication-Results:`, for filters to decide on.
//!
//! The front end computes these once per transaction (`sluice-msgauth`
//! does the work) and hands them to every filter with the stage; a plugin
//! sees them as the `auth.*` properties.

use std::fmt;

/// A method's result, as RFC 8601 §2.7 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthResult {
    /// Nothing to check (no record, no signature).
    None,
    Pass,
    Fail,
    /// SPF `~all`: probably not authorized.
    SoftFail,
    /// SPF `?all`: no statement.
    Neutral,
    /// A transient error (DNS did not answer): try again later.
    TempError,
    /// A permanent error (a broken record or signature).
    PermError,
}

impl AuthResult {
    /// The RFC 8601 keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::None => "none",
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }

    /// The inverse of [`AuthResult::as_str`].
    pub fn parse(s: &str) -> Option<AuthResult> {
        Some(match s {
            "none" => AuthResult::None,
            "pass" => AuthResult::Pass,
            "fail" => AuthResult::Fail,
            "softfail" => AuthResult::SoftFail,
            "neutral" => AuthResult::Neutral,
            "temperror" => AuthResult::TempError,
            "permerror" => AuthResult::PermError,
            _ => return None,
        })
    }
}

impl fmt::Display for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One SPF check (RFC 7208): of the HELO name or of the MAIL FROM domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    pub result: AuthResult,
    /// The domain whose record was asked.
    pub domain: String,
}

/// One DKIM signature's check (RFC 6376).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimCheck {
    pub result: AuthResult,
    /// `d=`: the signing domain; empty when the signature did not parse.
    pub domain: String,
    /// `s=`: the selector.
    pub selector: String,
}

/// What the DMARC policy asks receivers to do with a failing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmarcPolicy {
    /// No record, or `p=none`: only report.
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }

    pub fn parse(s: &str) -> Option<DmarcPolicy> {
        Some(match s {
            "none" => DmarcPolicy::None,
            "quarantine" => DmarcPolicy::Quarantine,
            "reject" => DmarcPolicy::Reject,
            _ => return None,
        })
    }
}

impl fmt::Display for DmarcPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The DMARC check (RFC 7489) of the `From:` domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    /// `pass` when SPF or DKIM passed aligned with the `From:` domain.
    pub result: AuthResult,
    /// The policy that applies to the domain (`sp=` for a subdomain).
    pub policy: DmarcPolicy,
    /// The `From:` domain.
    pub header_from: String,
}

/// The reverse DNS check of the client's address (RFC 8601 §3 `iprev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IprevCheck {
    pub result: AuthResult,
    /// The name the address's PTR record gave, when there was one.
    pub name: Option<String>,
}

/// Everything checked for one transaction so far: the sender's checks from
/// MAIL on, the message's from the end of data. A check that was not run
/// (switched off, a trusted or logged-in client) is `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthResults {
    pub spf_helo: Option<SpfCheck>,
    pub spf_mail_from: Option<SpfCheck>,
    pub iprev: Option<IprevCheck>,
    pub dkim: Vec<DkimCheck>,
    pub arc: Option<AuthResult>,
    pub dmarc: Option<DmarcCheck>,
}

impl AuthResults {
    /// The SPF result that speaks for the sender: MAIL FROM's, or the HELO
    /// name's for the null reverse-path (RFC 7208 §2.4).
    pub fn spf(&self) -> Option<&SpfCheck> {
        self.spf_mail_from.as_ref().or(self.spf_helo.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_round_trip() {
        for r in [
            AuthResult::None,
            AuthResult::Pass,
            AuthResult::Fail,
            AuthResult::SoftFail,
            AuthResult::Neutral,
            AuthResult::TempError,
            AuthResult::PermError,
        ] {
            assert_eq!(AuthResult::parse(r.as_str()), Some(r));
        }
        for p in [
            DmarcPolicy::None,
            DmarcPolicy::Quarantine,
            DmarcPolicy::Reject,
        ] {
            assert_eq!(DmarcPolicy::parse(&p.to_string()), Some(p));
        }
        assert_eq!(AuthResult::parse("PASS"), None, "keywords are lower case");
    }

    #[test]
    fn the_sender_s_spf_is_mail_from_s_else_helo_s() {
        let helo = SpfCheck {
            result: AuthResult::Pass,
            domain: "mx.example.test".into(),
        };
        let mut r = AuthResults {
            spf_helo: Some(helo.clone()),
            ..AuthResults::default()
        };
        assert_eq!(r.spf(), Some(&helo));
        let from = SpfCheck {
            result: AuthResult::Fail,
            domain: "example.test".into(),
        };
        r.spf_mail_from = Some(from.clone());
        assert_eq!(r.spf(), Some(&from));
    }
}
