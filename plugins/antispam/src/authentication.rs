//! What the host's email authentication found (SPF, DKIM, DMARC), turned
//! into refusals and scores.
//!
//! DMARC is the judge of the `From:` address: a domain that publishes
//! `p=reject` has said that mail failing it is forged, so it is refused
//! (as Gmail and Microsoft do); `p=quarantine` asks for the spam folder,
//! so it scores past `spam_score` instead of being held in the queue,
//! which would need an operator to look at every one. SPF alone scores:
//! it breaks on every forwarder, and DMARC already weighs it where it
//! matters.

use alloc::format;
use alloc::string::String;

use sluice_plugin_sdk::{AuthResult, Ctx, DmarcPolicy};

use crate::config::Config;
use crate::symbols::{self, Hits};

/// At MAIL, with `spf_reject`: the refusal text for an SPF `fail`.
pub fn spf_refusal(ctx: &Ctx<'_>, config: &Config, reverse_path: &str) -> Option<String> {
    let spf = ctx.auth_spf()?;
    (config.spf_reject && spf.result == AuthResult::Fail).then(|| {
        format!(
            "5.7.23 <{reverse_path}>: Sender address rejected: SPF of {} does not allow this client",
            spf.domain
        )
    })
}

/// At end of data: the scores, and the refusal text when DMARC asks for
/// rejection and `dmarc_reject` is on.
pub fn score(ctx: &Ctx<'_>, config: &Config, hits: &mut Hits) -> Option<String> {
    let mut hit = |symbol: &str| hits.add(symbol, config.score(symbol));
    match ctx.auth_spf().map(|s| s.result) {
        Some(AuthResult::Fail) => hit(symbols::SPF_FAIL),
        Some(AuthResult::SoftFail) => hit(symbols::SPF_SOFTFAIL),
        _ => {}
    }
    if ctx.auth_dkim().iter().any(|d| d.result == AuthResult::Fail) {
        hit(symbols::DKIM_FAIL);
    }
    let dmarc = ctx.auth_dmarc().filter(|d| d.result == AuthResult::Fail)?;
    match dmarc.policy {
        DmarcPolicy::Reject if config.dmarc_reject => Some(format!(
            "5.7.1 Message rejected: the DMARC policy of {} says it is not from there",
            dmarc.header_from
        )),
        DmarcPolicy::Reject => {
            hit(symbols::DMARC_REJECT);
            None
        }
        DmarcPolicy::Quarantine => {
            hit(symbols::DMARC_QUARANTINE);
            None
        }
        // p=none: the domain only wants reports; the header says it.
        DmarcPolicy::None => None,
    }
}

/// Whether DMARC has spoken for `domain` (it publishes a policy and the
/// check ran): then a `From:` in one of our domains is DMARC's to judge.
pub fn dmarc_speaks_for(ctx: &Ctx<'_>, domain: &str) -> bool {
    ctx.auth_dmarc().is_some_and(|d| {
        d.header_from.eq_ignore_ascii_case(domain)
            && matches!(d.result, AuthResult::Pass | AuthResult::Fail)
    })
}
