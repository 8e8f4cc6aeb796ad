//! Checking what a client sends: SPF and iprev at MAIL, DKIM, ARC and
//! DMARC at the end of data, with mail-auth doing the work on the server's
//! one resolver (its connections and cache shared with routing and plugins).
//!
//! Every call blocks the calling thread for its DNS lookups, bounded by the
//! checker's time limit: call it from a worker thread, never from an event
//! loop.

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::common::verify::VerifySignature;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcResult, Error,
    IprevOutput, IprevResult, MessageAuthenticator, SpfOutput, SpfResult,
};
use sluice_dns::Resolver;
use sluice_filter::authres::{
    AuthResult, AuthResults, DkimCheck, DmarcCheck, DmarcPolicy, IprevCheck, SpfCheck,
};

/// Which checks run (`[authentication]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    pub spf: bool,
    pub dkim: bool,
    pub dmarc: bool,
    pub arc: bool,
    pub iprev: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            spf: true,
            dkim: true,
            dmarc: true,
            arc: true,
            iprev: true,
        }
    }
}

impl Checks {
    /// Whether anything at all is checked.
    pub fn any(&self) -> bool {
        self.spf || self.dkim || self.dmarc || self.arc || self.iprev
    }
}

/// Runs the checks.
#[derive(Clone)]
pub struct Checker {
    dns: Resolver,
    authserv_id: String,
    checks: Checks,
    /// The longest one check (with all its lookups) may take.
    limit: Duration,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("authserv_id", &self.authserv_id)
            .field("checks", &self.checks)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// What was found about the sender at MAIL, kept for the end of data
/// (DMARC needs SPF's answer).
#[derive(Debug, Clone)]
pub struct SenderChecks {
    ip: IpAddr,
    helo: String,
    /// The reverse-path's address, `""` for `<>`.
    mail_from: String,
    spf_helo: Option<SpfOutput>,
    spf_mail_from: Option<SpfOutput>,
    iprev: Option<IprevOutput>,
}

/// What was found about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageChecks {
    pub results: AuthResults,
    /// The `Authentication-Results:` field to add, CRLF included; empty
    /// when nothing was checked.
    pub header: String,
}

impl Checker {
    /// `authserv_id` names this server in `Authentication-Results:` (its
    /// hostname); `limit` bounds each check, lookups included.
    pub fn new(
        dns: Resolver,
        authserv_id: impl Into<String>,
        checks: Checks,
        limit: Duration,
    ) -> Checker {
        Checker {
            dns,
            authserv_id: authserv_id.into(),
            checks,
            limit,
        }
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    pub fn checks(&self) -> Checks {
        self.checks
    }

    /// At MAIL: SPF for the HELO name and for the MAIL FROM domain (RFC
    /// 7208 §2.3, §2.4), and iprev unless `known` already has it (it is the
    /// connection's, not the transaction's).
    pub fn sender(
        &self,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        known: Option<&SenderChecks>,
    ) -> SenderChecks {
        let mut found = SenderChecks {
            ip,
            helo: helo.to_string(),
            mail_from: mail_from.to_string(),
            spf_helo: None,
            spf_mail_from: None,
            iprev: known.and_then(|k| k.iprev.clone()),
        };
        if self.checks.spf {
            let host = self.authserv_id.as_str();
            found.spf_helo = Some(self.spf(helo, SpfParameters::verify_ehlo(ip, helo, host)));
            if !mail_from.is_empty() {
                let domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
                found.spf_mail_from = Some(self.spf(
                    domain,
                    SpfParameters::verify_mail_from(ip, helo, host, mail_from),
                ));
            }
        }
        if self.checks.iprev && found.iprev.is_none() {
            found.iprev = Some(
                self.dns
                    .run_within(self.limit, |r| async move {
                        MessageAuthenticator(r).verify_iprev(ip).await
                    })
                    .unwrap_or_else(|| IprevOutput {
                        result: IprevResult::TempError(timed_out()),
                        ptr: None,
                    }),
            );
        }
        found
    }

    fn spf(&self, domain: &str, params: SpfParameters<'_>) -> SpfOutput {
        self.dns
            .run_within(self.limit, |r| async move {
                MessageAuthenticator(r).verify_spf(params).await
            })
            .unwrap_or_else(|| SpfOutput::new(domain.to_string()).with_result(SpfResult::TempError))
    }

    /// At the end of data: DKIM, ARC and DMARC over `message` (the content
    /// as the client sent it), with what `sender` found, and the
    /// `Authentication-Results:` field saying all of it.
    pub fn message(&self, message: &[u8], sender: &SenderChecks) -> MessageChecks {
        let mut results = sender.results();
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // Not a message mail-auth can read (no header at all): DKIM and
            // DMARC have nothing to work on.
            return MessageChecks {
                header: self.header(sender, None, None, None),
                results,
            };
        };
        let dkim: Vec<DkimOutput<'_>> = if self.checks.dkim || self.checks.dmarc {
            self.dns
                .run_within(self.limit, |r| async {
                    MessageAuthenticator(r).verify_dkim(&parsed).await
                })
                .unwrap_or_default()
                .into_iter()
                .map(|d| body_changed_is_fail(&parsed, d))
                .collect()
        } else {
            Vec::new()
        };
        if self.checks.dkim {
            results.dkim = dkim
                .iter()
                .map(|d| {
                    let (domain, selector) = d
                        .signature()
                        .map(|s| (s.domain().to_string(), s.selector().to_string()))
                        .unwrap_or_default();
                    DkimCheck {
                        result: dkim_result(d.result()),
                        domain,
                        selector,
                    }
                })
                .collect();
        }
        let arc = self.checks.arc.then(|| {
            self.dns.run_within(self.limit, |r| async {
                MessageAuthenticator(r).verify_arc(&parsed).await
            })
        });
        if let Some(arc) = &arc {
            results.arc = Some(
                arc.as_ref()
                    .map_or(AuthResult::TempError, |a| dkim_result(a.result())),
            );
        }
        let spf_for_dmarc = sender.spf_mail_from.as_ref().or(sender.spf_helo.as_ref());
        let dmarc = match (self.checks.dmarc, spf_for_dmarc) {
            (true, Some(spf)) => {
                let domain = match sender.mail_from.rsplit_once('@') {
                    Some((_, d)) => d,
                    None => sender.helo.as_str(),
                };
                self.dns.run_within(self.limit, |r| async {
                    MessageAuthenticator(r)
                        .verify_dmarc(DmarcParameters::new(&parsed, &dkim, domain, spf))
                        .await
                })
            }
            _ => None,
        };
        if let Some(d) = &dmarc {
            results.dmarc = Some(DmarcCheck {
                result: dmarc_result(&d.result()),
                policy: match d.policy() {
                    mail_auth::dmarc::Policy::Reject => DmarcPolicy::Reject,
                    mail_auth::dmarc::Policy::Quarantine => DmarcPolicy::Quarantine,
                    mail_auth::dmarc::Policy::None | mail_auth::dmarc::Policy::Unspecified => {
                        DmarcPolicy::None
                    }
                },
                header_from: d.domain().to_string(),
            });
        } else if self.checks.dmarc {
            // SPF was off, or the lookups ran out of time.
            results.dmarc = Some(DmarcCheck {
                result: AuthResult::TempError,
                policy: DmarcPolicy::None,
                header_from: parsed
                    .from()
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default(),
            });
        }
        let dkim_shown = self.checks.dkim.then_some((dkim.as_slice(), parsed.from()));
        let header = self.header(sender, dkim_shown, arc.flatten().as_ref(), dmarc.as_ref());
        MessageChecks { results, header }
    }

    /// The `Authentication-Results:` field (RFC 8601) for what ran.
    fn header(
        &self,
        sender: &SenderChecks,
        dkim: Option<(&[DkimOutput<'_>], &str)>,
        arc: Option<&mail_auth::ArcOutput<'_>>,
        dmarc: Option<&mail_auth::DmarcOutput>,
    ) -> String {
        let anything = sender.spf_helo.is_some()
            || sender.iprev.is_some()
            || dkim.is_some()
            || arc.is_some()
            || dmarc.is_some();
        if !anything {
            return String::new();
        }
        let mut ar = AuthenticationResults::new(&self.authserv_id);
        if let Some(iprev) = &sender.iprev {
            ar = ar.with_iprev_result(iprev, sender.ip);
        }
        if let Some(spf) = &sender.spf_helo {
            ar = ar.with_spf_ehlo_result(spf, sender.ip, &sender.helo);
        }
        if let Some(spf) = &sender.spf_mail_from {
            ar = ar.with_spf_mailfrom_result(spf, sender.ip, &sender.mail_from, &sender.helo);
        }
        if let Some((dkim, from)) = dkim {
            ar = ar.with_dkim_results(dkim, from);
        }
        if let Some(arc) = arc {
            ar = ar.with_arc_result(arc, sender.ip);
        }
        if let Some(dmarc) = dmarc {
            ar = ar.with_dmarc_result(dmarc);
        }
        ar.to_header()
    }
}

impl SenderChecks {
    /// What was found, in the filters' words.
    pub fn results(&self) -> AuthResults {
        let spf = |o: &SpfOutput| SpfCheck {
            result: spf_result(o.result()),
            domain: o.domain().to_string(),
        };
        AuthResults {
            spf_helo: self.spf_helo.as_ref().map(spf),
            spf_mail_from: self.spf_mail_from.as_ref().map(spf),
            iprev: self.iprev.as_ref().map(|i| IprevCheck {
                result: match &i.result {
                    IprevResult::Pass => AuthResult::Pass,
                    IprevResult::Fail(_) => AuthResult::Fail,
                    IprevResult::TempError(_) => AuthResult::TempError,
                    IprevResult::PermError(_) => AuthResult::PermError,
                    IprevResult::None => AuthResult::None,
                },
                name: i
                    .ptr
                    .as_ref()
                    .and_then(|names| names.first())
                    .map(|n| n.trim_end_matches('.').to_string()),
            }),
            ..AuthResults::default()
        }
    }
}

/// mail-auth calls a body that no longer matches its hash `neutral`; RFC
/// 6376 §6.1.3 makes it a failed verification, and RFC 8601's `neutral` is
/// for signatures that could not be processed at all. Receivers (and
/// dkimpy) say `fail`: the message was changed after signing.
fn body_changed_is_fail<'x>(
    parsed: &'x AuthenticatedMessage<'x>,
    output: DkimOutput<'x>,
) -> DkimOutput<'x> {
    let changed = Error::Dkim(DkimError::FailedBodyHashMatch);
    if *output.result() != DkimResult::Neutral(changed.clone()) {
        return output;
    }
    // The same signature, borrowed from the message rather than the output.
    let signature = output.signature().and_then(|s| {
        parsed
            .dkim_headers
            .iter()
            .map(|h| &h.header)
            .find(|h| std::ptr::eq(*h, s))
    });
    match signature {
        Some(signature) => DkimOutput::fail(changed).with_signature(signature),
        None => DkimOutput::fail(changed),
    }
}

fn timed_out() -> mail_auth::Error {
    mail_auth::Error::Dns(mail_auth::DnsError::Resolver("timed out".into()))
}

fn spf_result(r: SpfResult) -> AuthResult {
    match r {
        SpfResult::Pass => AuthResult::Pass,
        SpfResult::Fail => AuthResult::Fail,
        SpfResult::SoftFail => AuthResult::SoftFail,
        SpfResult::Neutral => AuthResult::Neutral,
        SpfResult::TempError => AuthResult::TempError,
        SpfResult::PermError => AuthResult::PermError,
        SpfResult::None => AuthResult::None,
    }
}

fn dkim_result(r: &DkimResult) -> AuthResult {
    match r {
        DkimResult::Pass => AuthResult::Pass,
        DkimResult::Neutral(_) => AuthResult::Neutral,
        DkimResult::Fail(_) => AuthResult::Fail,
        DkimResult::PermError(_) => AuthResult::PermError,
        DkimResult::TempError(_) => AuthResult::TempError,
        DkimResult::None => AuthResult::None,
    }
}

fn dmarc_result(r: &DmarcResult) -> AuthResult {
    match r {
        DmarcResult::Pass => AuthResult::Pass,
        DmarcResult::Fail(_) => AuthResult::Fail,
        DmarcResult::TempError(_) => AuthResult::TempError,
        DmarcResult::PermError(_) => AuthResult::PermError,
        DmarcResult::None => AuthResult::None,
    }
}
