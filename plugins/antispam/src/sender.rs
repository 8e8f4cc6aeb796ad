//! Checks of the reverse-path's domain at MAIL.

use alloc::format;

use sluice_plugin_sdk::{Ctx, DnsResult, Qtype};

/// What DNS says about a sender domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainStatus {
    /// It has an MX, or an A or AAAA record to fall back to (RFC 5321 §5.1).
    Exists,
    /// It has none of them: replies to this sender cannot be delivered.
    NotFound,
    /// It publishes a null MX (RFC 7505): it says it accepts no mail.
    NullMx,
    /// DNS did not answer; nothing can be concluded.
    Unknown,
}

/// Looks the domain up the way a delivering MTA would: MX first, then A and
/// AAAA. Only definite answers (NXDOMAIN, NODATA) make a domain unknown; a
/// failed lookup never does, so a DNS outage cannot bounce good mail.
pub fn domain_status(ctx: &Ctx<'_>, domain: &str) -> DomainStatus {
    match ctx.dns_lookup(Qtype::Mx, domain) {
        DnsResult::Failed => {
            ctx.debug(&format!("MX lookup for sender domain {domain} failed"));
            DomainStatus::Unknown
        }
        DnsResult::NxDomain => DomainStatus::NotFound,
        answer @ DnsResult::Records(_) => {
            let mx = answer.mx_records();
            if mx.len() == 1 && mx[0].exchange.is_empty() {
                DomainStatus::NullMx
            } else {
                DomainStatus::Exists
            }
        }
        DnsResult::NoData => {
            let mut failed = false;
            for qtype in [Qtype::A, Qtype::Aaaa] {
                match ctx.dns_lookup(qtype, domain) {
                    DnsResult::Records(_) => return DomainStatus::Exists,
                    DnsResult::Failed => failed = true,
                    DnsResult::NoData | DnsResult::NxDomain => {}
                }
            }
            if failed {
                DomainStatus::Unknown
            } else {
                DomainStatus::NotFound
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_plugin_sdk::testing::MockHost;

    use super::*;

    fn records(r: &[&str]) -> DnsResult {
        DnsResult::Records(r.iter().map(|s| (*s).into()).collect())
    }

    #[test]
    fn mx_then_address_records_decide() {
        let host = MockHost::new()
            .with_dns(Qtype::Mx, "mx.test", records(&["10 mail.mx.test."]))
            .with_dns(Qtype::Mx, "a-only.test", DnsResult::NoData)
            .with_dns(Qtype::A, "a-only.test", records(&["192.0.2.1"]))
            .with_dns(Qtype::Mx, "v6-only.test", DnsResult::NoData)
            .with_dns(Qtype::A, "v6-only.test", DnsResult::NoData)
            .with_dns(Qtype::Aaaa, "v6-only.test", records(&["2001:db8::1"]))
            .with_dns(Qtype::Mx, "empty.test", DnsResult::NoData)
            .with_dns(Qtype::A, "empty.test", DnsResult::NoData)
            .with_dns(Qtype::Aaaa, "empty.test", DnsResult::NoData)
            .with_dns(Qtype::Mx, "nullmx.test", records(&["0 ."]))
            .with_dns(Qtype::Mx, "broken.test", DnsResult::Failed)
            .with_dns(Qtype::Mx, "half.test", DnsResult::NoData)
            .with_dns(Qtype::A, "half.test", DnsResult::Failed)
            .with_dns(Qtype::Aaaa, "half.test", DnsResult::NoData);
        let ctx = host.ctx();
        assert_eq!(domain_status(&ctx, "mx.test"), DomainStatus::Exists);
        assert_eq!(domain_status(&ctx, "a-only.test"), DomainStatus::Exists);
        assert_eq!(domain_status(&ctx, "v6-only.test"), DomainStatus::Exists);
        assert_eq!(domain_status(&ctx, "empty.test"), DomainStatus::NotFound);
        assert_eq!(domain_status(&ctx, "nxdomain.test"), DomainStatus::NotFound);
        assert_eq!(domain_status(&ctx, "nullmx.test"), DomainStatus::NullMx);
        assert_eq!(domain_status(&ctx, "broken.test"), DomainStatus::Unknown);
        assert_eq!(domain_status(&ctx, "half.test"), DomainStatus::Unknown);
    }
}
