//! Anti-spam checks for Sluice, by SMTP stage:
//!
//! * **HELO**: a client claiming to be us (our hostname or one of our
//!   domains) is refused; a bare IP, a single label or bad syntax scores.
//! * **MAIL**: an untrusted client using one of our domains as sender is
//!   refused (`550 5.7.1`); a sender domain without MX, A and AAAA gets
//!   `450 4.1.8`, one with a null MX (RFC 7505) `550 5.7.27`; with
//!   `spf_reject`, an SPF `fail` gets `550 5.7.23`.
//! * **RCPT**: the client's address is looked up in the configured DNSBL
//!   zones (once per connection); a listing is refused with `554 5.7.1`.
//! * **end of data**: content scoring (missing `Date`, `Message-ID` or
//!   `From`, an all-caps subject, a `From:` in our domains from an untrusted
//!   client, the configured rules), email authentication (a DMARC failure
//!   under `p=reject` is refused with `550 5.7.1`, under `p=quarantine`
//!   scores past `spam_score`; SPF and DKIM failures score: see
//!   [`authentication`]), then greylisting, then `X-Spam-Score` and
//!   `X-Spam-Status` headers, and `550 5.7.1` at or above `reject_score`.
//!   The score includes what earlier plugins added (`tx.symbols`), so load
//!   this plugin after the others that score.
//!
//! Trusted (`conn.trusted`) and authenticated (`conn.auth`) clients skip
//! every check except the HELO one, which runs before AUTH can happen. DNS
//! failures never refuse mail: this filter is a policy, and a resolver
//! outage must not turn into bounces. Settings: [`config::Config`] and
//! docs/plugins.md.
#![no_std]

extern crate alloc;

pub mod authentication;
pub mod config;
pub mod content;
pub mod dnsbl;
pub mod greylist;
pub mod helo;
pub mod sender;
pub mod symbols;

use alloc::format;
use alloc::string::String;

use sluice_plugin_sdk::syntax::domain_of;
use sluice_plugin_sdk::{Ctx, Filter, Hooks, InitError, Scope, Verdict, export_filter};

use config::Config;
use symbols::Hits;

/// Connection note: the symbol the HELO name earned (empty: none).
const NOTE_HELO: &str = "antispam.helo";
/// Connection note: the DNSBL verdict for the client, `-` or the zone.
const NOTE_DNSBL: &str = "antispam.dnsbl";
const NOT_LISTED: &str = "-";

/// The filter: the parsed configuration; all per-connection state is in
/// notes.
#[derive(Debug)]
pub struct Antispam {
    config: Config,
}

/// Clients that relay with our blessing: checks aimed at strangers skip
/// them.
fn privileged(ctx: &Ctx<'_>) -> bool {
    ctx.conn_auth().is_some() || ctx.conn_trusted() == Some(true)
}

impl Filter for Antispam {
    fn init(config: &str) -> Result<Self, InitError> {
        Ok(Self {
            config: Config::parse(config)?,
        })
    }

    /// RCPT only checks the DNSBL zones: without any, the host need not
    /// call it.
    fn hooks(&self) -> Hooks {
        if self.config.dnsbl_zones.is_empty() {
            Hooks::ALL - Hooks::RCPT
        } else {
            Hooks::ALL
        }
    }

    fn on_helo(&mut self, ctx: &Ctx<'_>, helo: &str) -> Verdict {
        // A new HELO replaces what the previous one earned.
        ctx.set_note(Scope::Connection, NOTE_HELO, "");
        if ctx.conn_trusted() == Some(true) {
            return Verdict::Continue;
        }
        if helo::claims_to_be_us(ctx, helo) {
            return ctx.reject(
                550,
                &format!("5.7.1 <{helo}>: Helo command rejected: you are not me"),
            );
        }
        if let Some(symbol) = helo::symbol(helo::classify(helo)) {
            ctx.set_note(Scope::Connection, NOTE_HELO, symbol);
        }
        Verdict::Continue
    }

    fn on_mail(&mut self, ctx: &Ctx<'_>, reverse_path: &str) -> Verdict {
        let Some(domain) = domain_of(reverse_path) else {
            return Verdict::Continue; // <> (bounces) cannot be checked
        };
        if privileged(ctx) {
            return Verdict::Continue;
        }
        if let Some(text) = authentication::spf_refusal(ctx, &self.config, reverse_path) {
            return ctx.reject(550, &text);
        }
        if self.config.reject_local_sender && ctx.is_local_domain(domain) {
            return ctx.reject(
                550,
                &format!("5.7.1 <{reverse_path}>: Sender address rejected: not logged in"),
            );
        }
        if self.config.check_sender_domain && !domain.starts_with('[') {
            match sender::domain_status(ctx, domain) {
                sender::DomainStatus::NotFound => {
                    return ctx.tempfail(
                        450,
                        &format!(
                            "4.1.8 <{reverse_path}>: Sender address rejected: domain not found"
                        ),
                    );
                }
                sender::DomainStatus::NullMx => {
                    return ctx.reject(
                        550,
                        &format!("5.7.27 <{reverse_path}>: Sender address rejected: domain does not accept mail"),
                    );
                }
                sender::DomainStatus::Exists | sender::DomainStatus::Unknown => {}
            }
        }
        Verdict::Continue
    }

    fn on_rcpt(&mut self, ctx: &Ctx<'_>, _forward_path: &str) -> Verdict {
        if self.config.dnsbl_zones.is_empty() || privileged(ctx) {
            return Verdict::Continue;
        }
        let Some(ip) = ctx.conn_ip() else {
            ctx.warn("conn.ip missing or unparsable; DNSBL check skipped");
            return Verdict::Continue;
        };
        let listed = match ctx.note(Scope::Connection, NOTE_DNSBL) {
            Some(zone) => zone,
            None => {
                let zone = dnsbl::first_listing(ctx, ip, &self.config.dnsbl_zones)
                    .map_or(String::from(NOT_LISTED), String::from);
                ctx.set_note(Scope::Connection, NOTE_DNSBL, &zone);
                zone
            }
        };
        if listed == NOT_LISTED {
            return Verdict::Continue;
        }
        ctx.reject(
            554,
            &format!("5.7.1 Service unavailable; client [{ip}] listed by {listed}"),
        )
    }

    fn on_data(&mut self, ctx: &Ctx<'_>) -> Verdict {
        if privileged(ctx) {
            return Verdict::Continue;
        }
        let config = &self.config;
        // Other plugins' scores so far count toward the verdict and show in
        // the headers; only this plugin's own symbols are reported to the
        // host below.
        let mut hits = Hits::new();
        for (symbol, score) in ctx.tx_symbols() {
            hits.add_sum(&symbol, score);
        }
        let others = hits.len();
        if let Some(symbol) = ctx
            .note(Scope::Connection, NOTE_HELO)
            .filter(|s| !s.is_empty())
        {
            hits.add(&symbol, config.score(&symbol));
        }
        content::score(ctx, config, &mut hits);
        if let Some(text) = authentication::score(ctx, config, &mut hits) {
            return ctx.reject(550, &text);
        }

        if config.greylist {
            match ctx.conn_ip() {
                Some(ip) => {
                    let sender = ctx.mail_from().unwrap_or_default();
                    let rcpts = ctx.rcpts();
                    if let greylist::Decision::Wait { secs } =
                        greylist::check_all(ctx, config, ip, &sender, &rcpts)
                    {
                        return ctx.tempfail(
                            451,
                            &format!("4.7.1 Greylisted, please try again in {secs} seconds"),
                        );
                    }
                }
                None => ctx.warn("conn.ip missing or unparsable; greylisting skipped"),
            }
        }

        for (symbol, score) in hits.iter().skip(others) {
            ctx.add_score(symbol, score);
        }
        ctx.add_header("X-Spam-Score", &hits.score_header());
        ctx.add_header("X-Spam-Status", &hits.status_header(config.spam_score));
        if hits.total() >= config.reject_score {
            return ctx.reject(
                550,
                &format!("5.7.1 Message rejected as spam (score {:.1})", hits.total()),
            );
        }
        Verdict::Continue
    }
}

export_filter!(Antispam, hooks: [helo, mail, rcpt, data]);

#[cfg(test)]
mod tests;
