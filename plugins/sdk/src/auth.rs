//! Email authentication results, as the host found them (the `auth.*`
//! properties of ABI.md): SPF, DKIM, ARC, DMARC and iprev.
//!
//! The host checks mail from clients that are neither trusted nor logged
//! in; for the others (and with the checks switched off) every accessor
//! returns `None` or nothing.

use alloc::string::String;
use alloc::vec::Vec;

use crate::Ctx;

/// A method's result, as RFC 8601 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthResult {
    /// Nothing to check: no record, no signature.
    None,
    /// Authenticated.
    Pass,
    /// Not authenticated: the check says the message is not what it claims.
    Fail,
    /// SPF `~all`.
    SoftFail,
    /// SPF `?all`.
    Neutral,
    /// DNS did not answer: no conclusion.
    TempError,
    /// A broken record or signature.
    PermError,
}

impl AuthResult {
    /// Reads an RFC 8601 keyword.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "pass" => Self::Pass,
            "fail" => Self::Fail,
            "softfail" => Self::SoftFail,
            "neutral" => Self::Neutral,
            "temperror" => Self::TempError,
            "permerror" => Self::PermError,
            _ => return None,
        })
    }
}

/// What a domain's DMARC record asks receivers to do with failing mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmarcPolicy {
    /// `p=none`: only report.
    None,
    /// Treat as suspicious (a spam folder).
    Quarantine,
    /// Refuse.
    Reject,
}

/// An SPF check: its result, and the domain whose record was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spf {
    /// What the check found.
    pub result: AuthResult,
    /// The domain whose record was asked.
    pub domain: String,
}

/// One DKIM signature's check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimSignature {
    /// What the check found.
    pub result: AuthResult,
    /// `d=`, the signing domain.
    pub domain: String,
    /// `s=`, the selector.
    pub selector: String,
}

/// The DMARC check of the `From:` domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dmarc {
    /// `pass` when SPF or DKIM passed aligned with the `From:` domain.
    pub result: AuthResult,
    /// The policy that applies (`sp=` for a subdomain).
    pub policy: DmarcPolicy,
    /// The `From:` domain.
    pub header_from: String,
}

impl<'a> Ctx<'a> {
    /// `auth.spf`: the sender's SPF check (MAIL FROM's; HELO's for `<>`),
    /// from the MAIL hook on.
    pub fn auth_spf(&self) -> Option<Spf> {
        spf(&self.property("auth.spf")?)
    }

    /// `auth.spf_helo`: the HELO name's SPF check.
    pub fn auth_spf_helo(&self) -> Option<Spf> {
        spf(&self.property("auth.spf_helo")?)
    }

    /// `auth.dkim`: one entry per DKIM signature (data hook). Empty: none
    /// checked, or no signature.
    pub fn auth_dkim(&self) -> Vec<DkimSignature> {
        let Some(all) = self.property("auth.dkim") else {
            return Vec::new();
        };
        all.lines()
            .filter_map(|line| {
                let mut words = line.split(' ');
                Some(DkimSignature {
                    result: AuthResult::parse(words.next()?)?,
                    domain: String::from(words.next().unwrap_or("")),
                    selector: String::from(words.next().unwrap_or("")),
                })
            })
            .collect()
    }

    /// `auth.dmarc`: the DMARC check (data hook).
    pub fn auth_dmarc(&self) -> Option<Dmarc> {
        let value = self.property("auth.dmarc")?;
        let mut words = value.split(' ');
        Some(Dmarc {
            result: AuthResult::parse(words.next()?)?,
            policy: match words.next()? {
                "none" => DmarcPolicy::None,
                "quarantine" => DmarcPolicy::Quarantine,
                "reject" => DmarcPolicy::Reject,
                _ => return None,
            },
            header_from: String::from(words.next().unwrap_or("")),
        })
    }

    /// `auth.arc`: the ARC chain's result (data hook).
    pub fn auth_arc(&self) -> Option<AuthResult> {
        AuthResult::parse(self.property("auth.arc")?.trim())
    }

    /// `auth.iprev`: whether the client's address has a PTR name that
    /// resolves back to it, and the name.
    pub fn auth_iprev(&self) -> Option<(AuthResult, Option<String>)> {
        let value = self.property("auth.iprev")?;
        let mut words = value.split(' ');
        let result = AuthResult::parse(words.next()?)?;
        Some((result, words.next().map(String::from)))
    }
}

fn spf(value: &str) -> Option<Spf> {
    let (result, domain) = value.split_once(' ').unwrap_or((value, ""));
    Some(Spf {
        result: AuthResult::parse(result)?,
        domain: String::from(domain),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MockHost;

    #[test]
    fn the_properties_read_back_as_types() {
        let host = MockHost::new()
            .with_property("auth.spf", "softfail example.test")
            .with_property("auth.dkim", "pass example.test s1\nfail other.test s2")
            .with_property("auth.dmarc", "fail reject example.test")
            .with_property("auth.arc", "none")
            .with_property("auth.iprev", "pass mail.example.test");
        let ctx = host.ctx();
        assert_eq!(
            ctx.auth_spf(),
            Some(Spf {
                result: AuthResult::SoftFail,
                domain: "example.test".into()
            })
        );
        let dkim = ctx.auth_dkim();
        assert_eq!(dkim.len(), 2);
        assert_eq!(dkim[1].result, AuthResult::Fail);
        assert_eq!(dkim[1].selector, "s2");
        assert_eq!(
            ctx.auth_dmarc(),
            Some(Dmarc {
                result: AuthResult::Fail,
                policy: DmarcPolicy::Reject,
                header_from: "example.test".into()
            })
        );
        assert_eq!(ctx.auth_arc(), Some(AuthResult::None));
        assert_eq!(
            ctx.auth_iprev(),
            Some((AuthResult::Pass, Some("mail.example.test".into())))
        );
    }

    #[test]
    fn absent_or_unknown_values_are_none() {
        let host = MockHost::new().with_property("auth.dmarc", "maybe reject x");
        let ctx = host.ctx();
        assert_eq!(ctx.auth_spf(), None);
        assert!(ctx.auth_dkim().is_empty());
        assert_eq!(ctx.auth_dmarc(), None, "an unknown keyword fails closed");
    }
}
