use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

/// A DNS record type that [`Ctx::dns_lookup`](crate::Ctx::dns_lookup) can ask
/// for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qtype {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
    /// Mail exchangers (`preference host`).
    Mx,
    /// Text records.
    Txt,
    /// Reverse-DNS names.
    Ptr,
}

impl Qtype {
    /// The ABI value: the record type's number in DNS.
    pub const fn code(self) -> i32 {
        match self {
            Self::A => 1,
            Self::Aaaa => 28,
            Self::Mx => 15,
            Self::Txt => 16,
            Self::Ptr => 12,
        }
    }
}

/// The outcome of a lookup.
///
/// The distinction matters to mail policy: [`NxDomain`](Self::NxDomain) says
/// the name does not exist (a permanent fact, e.g. for a sender domain),
/// [`Failed`](Self::Failed) says nothing (a timeout or a server failure: a
/// careful filter does not reject on it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsResult {
    /// The answers as text, one per record (MX as `preference host`).
    Records(Vec<String>),
    /// The name exists but has no record of this type (NODATA).
    NoData,
    /// The name does not exist.
    NxDomain,
    /// No answer: timeout, SERVFAIL, or a refused query.
    Failed,
}

/// One MX record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is preferred.
    pub preference: u16,
    /// The exchange's host name, without a trailing dot.
    pub exchange: String,
}

impl DnsResult {
    /// The records' text, empty unless [`Records`](Self::Records).
    pub fn records(&self) -> &[String] {
        match self {
            Self::Records(r) => r,
            _ => &[],
        }
    }

    /// Whether there is at least one record.
    pub fn has_records(&self) -> bool {
        !self.records().is_empty()
    }

    /// Whether the lookup failed to give any answer (so no conclusion may be
    /// drawn from it).
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed)
    }

    /// The A records as addresses; lines that do not parse are skipped.
    pub fn ipv4_addrs(&self) -> Vec<Ipv4Addr> {
        self.records()
            .iter()
            .filter_map(|r| r.trim().parse().ok())
            .collect()
    }

    /// The AAAA records as addresses; lines that do not parse are skipped.
    pub fn ipv6_addrs(&self) -> Vec<Ipv6Addr> {
        self.records()
            .iter()
            .filter_map(|r| r.trim().parse().ok())
            .collect()
    }

    /// The MX records, most preferred first; lines that do not parse are
    /// skipped.
    pub fn mx_records(&self) -> Vec<MxRecord> {
        let mut mx: Vec<MxRecord> = self
            .records()
            .iter()
            .filter_map(|r| {
                let (pref, host) = r.trim().split_once(char::is_whitespace)?;
                Some(MxRecord {
                    preference: pref.parse().ok()?,
                    exchange: host.trim().trim_end_matches('.').to_string(),
                })
            })
            .collect();
        mx.sort_by_key(|m| m.preference);
        mx
    }
}

/// A positive answer's text: one record per line. An answer with no
/// non-empty line is NODATA, whatever length the host reported.
pub(crate) fn parse_answer(text: &str) -> DnsResult {
    let records: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if records.is_empty() {
        DnsResult::NoData
    } else {
        DnsResult::Records(records)
    }
}

/// A negative return code; anything but -3 counts as a failure, so that an
/// unknown code can never read as "does not exist".
pub(crate) fn from_code(code: i32) -> DnsResult {
    match code {
        -3 => DnsResult::NxDomain,
        _ => DnsResult::Failed,
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::testing::MockHost;

    #[test]
    fn qtype_codes_are_the_dns_numbers() {
        let codes: Vec<i32> = [Qtype::A, Qtype::Aaaa, Qtype::Mx, Qtype::Txt, Qtype::Ptr]
            .iter()
            .map(|q| q.code())
            .collect();
        assert_eq!(codes, [1, 28, 15, 16, 12]);
    }

    #[test]
    fn every_abi_outcome_maps_to_its_variant() {
        let host = MockHost::new()
            .with_dns(
                Qtype::Mx,
                "mx.test",
                DnsResult::Records(vec!["20 b.test.".into(), "10 a.test".into()]),
            )
            .with_dns(Qtype::A, "nodata.test", DnsResult::NoData)
            .with_dns(Qtype::A, "broken.test", DnsResult::Failed)
            .with_dns(
                Qtype::A,
                "a.test",
                DnsResult::Records(vec!["192.0.2.1".into(), "junk".into()]),
            );
        let ctx = host.ctx();
        let mx = ctx.dns_lookup(Qtype::Mx, "mx.test");
        assert_eq!(
            mx.mx_records(),
            [
                MxRecord {
                    preference: 10,
                    exchange: "a.test".into()
                },
                MxRecord {
                    preference: 20,
                    exchange: "b.test".into()
                },
            ]
        );
        assert_eq!(ctx.dns_lookup(Qtype::A, "nodata.test"), DnsResult::NoData);
        assert_eq!(
            ctx.dns_lookup(Qtype::A, "missing.test"),
            DnsResult::NxDomain
        );
        assert!(ctx.dns_lookup(Qtype::A, "broken.test").is_failed());
        assert_eq!(
            ctx.dns_lookup(Qtype::A, "a.test").ipv4_addrs(),
            [Ipv4Addr::new(192, 0, 2, 1)]
        );
        assert_eq!(
            host.dns_queries(),
            [
                (Qtype::Mx, "mx.test".into()),
                (Qtype::A, "nodata.test".into()),
                (Qtype::A, "missing.test".into()),
                (Qtype::A, "broken.test".into()),
                (Qtype::A, "a.test".into()),
            ]
        );
    }

    #[test]
    fn unknown_negative_codes_are_failures_and_blank_answers_are_nodata() {
        assert_eq!(from_code(-3), DnsResult::NxDomain);
        assert_eq!(from_code(-2), DnsResult::Failed);
        assert_eq!(from_code(-1), DnsResult::Failed);
        assert_eq!(from_code(-99), DnsResult::Failed);
        assert_eq!(parse_answer("\n \n"), DnsResult::NoData);
    }
}
