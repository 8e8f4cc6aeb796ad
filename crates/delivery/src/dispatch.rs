//! The transport the delivery threads run: the local domains go to Maildirs
//! (or to an LMTP server), everything else to the next hop over SMTP.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sluice_smtp::address::unquote_local_part as unquote;

use crate::Outcome;
use crate::local::{Local, Target};
use crate::remote::{Message, Remote};
use crate::scheduler::{Job, Transport};

/// The destination key of the local domains (when they go to Maildirs).
pub const LOCAL: &str = "local";
/// The destination key of the local domains when an LMTP server takes them.
pub const LMTP: &str = "lmtp";

/// Local and remote delivery behind the scheduler's [`Transport`].
#[derive(Debug)]
pub struct Dispatch {
    local_domains: HashSet<String>,
    /// The first configured local domain: what a bare `postmaster` is
    /// qualified with when it goes to an LMTP server, which wants a domain.
    primary_domain: String,
    local: Local,
    remote: Arc<Remote>,
    /// `unix:/path` or `host:port`: the local domains' mail goes there.
    lmtp: Option<String>,
    /// Closes cached connections nobody came back for; stops when dropped.
    reaper: Option<Reaper>,
}

/// A thread that closes idle SMTP connections every second. Checkouts only
/// close expired connections to the host they are for, so without it a
/// socket to a host we never go back to would stay open until the far end
/// drops it.
#[derive(Debug)]
struct Reaper {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Reaper {
    fn start(remote: Arc<Remote>) -> Option<Reaper> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("smtp-reaper".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Duration::from_secs(1))
                {
                    remote.close_idle();
                }
                remote.close_all();
            })
            .ok()?;
        Some(Reaper { stop, thread })
    }
}

impl Drop for Dispatch {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.take() {
            // Disconnecting the channel wakes the thread, which then closes
            // every cached connection with QUIT.
            drop(reaper.stop);
            let _ = reaper.thread.join();
        }
    }
}

impl Dispatch {
    pub fn new(
        local_domains: impl IntoIterator<Item = String>,
        local: Local,
        remote: Remote,
        lmtp: Option<String>,
    ) -> Self {
        let remote = Arc::new(remote);
        let local_domains: Vec<String> = local_domains
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        Dispatch {
            primary_domain: local_domains.first().cloned().unwrap_or_default(),
            local_domains: local_domains.into_iter().collect(),
            local,
            reaper: Reaper::start(remote.clone()),
            remote,
            lmtp: lmtp.filter(|l| !l.is_empty()),
        }
    }

    /// `postmaster` without a domain (RFC 5321 §4.1.1.3) is ours too.
    fn is_local(&self, address: &str) -> bool {
        match address.rsplit_once('@') {
            None => true,
            Some((_, domain)) => self.local_domains.contains(&domain.to_ascii_lowercase()),
        }
    }

    fn deliver_local(&self, job: &Job) -> Vec<Outcome> {
        let envelope = &job.message.envelope;
        job.forward_paths()
            .map(|address| {
                let local_part = address.rsplit_once('@').map_or(address, |(l, _)| l);
                let local_part = unquote(local_part);
                match self.local.resolve(&local_part) {
                    Err(outcome) => outcome,
                    Ok(targets) => {
                        let outcomes: Vec<Outcome> = targets
                            .iter()
                            .map(|target| match target {
                                Target::Mailbox(user) => self.local.deliver(
                                    user,
                                    &envelope.reverse_path,
                                    address,
                                    job.message.body(),
                                ),
                                Target::Remote(forward) => self.forward(job, forward),
                            })
                            .collect();
                        combine(outcomes)
                    }
                }
            })
            .collect()
    }

    /// The local domains through an LMTP server. Aliases are ours to expand
    /// (the server knows only mailboxes), so each forward-path first becomes
    /// its copies; every mailbox copy then goes in one LMTP transaction, whose
    /// per-recipient replies are folded back onto the forward-paths.
    fn deliver_lmtp(&self, job: &Job, recipients: &[(&str, &str)]) -> Vec<Outcome> {
        enum Copy {
            /// Index into the LMTP transaction's recipients.
            Lmtp(usize),
            Done(Outcome),
        }
        let mut mailboxes: Vec<(String, &str)> = Vec::new();
        let plans: Vec<Result<Vec<Copy>, Outcome>> = recipients
            .iter()
            .map(|&(address, params)| {
                let (local_part, domain) = match address.rsplit_once('@') {
                    Some((l, d)) => (l, d),
                    None => (address, self.primary_domain.as_str()),
                };
                let targets = self.local.resolve(&unquote(local_part))?;
                Ok(targets
                    .iter()
                    .map(|target| match target {
                        Target::Mailbox(user) => {
                            let mailbox = format!("{user}@{domain}");
                            // ORCPT and NOTIFY were given for this forward-path;
                            // they still describe it when no alias rewrote it.
                            let params = if mailbox.eq_ignore_ascii_case(address) {
                                params
                            } else {
                                ""
                            };
                            // Two forward-paths that reach one mailbox get one copy.
                            let at = match mailboxes
                                .iter()
                                .position(|(m, _)| m.eq_ignore_ascii_case(&mailbox))
                            {
                                Some(at) => at,
                                None => {
                                    mailboxes.push((mailbox, params));
                                    mailboxes.len() - 1
                                }
                            };
                            Copy::Lmtp(at)
                        }
                        Target::Remote(forward) => Copy::Done(self.forward(job, forward)),
                    })
                    .collect())
            })
            .collect();

        let mut replies = if mailboxes.is_empty() {
            Vec::new()
        } else {
            let target = self.lmtp.as_deref().unwrap_or_default();
            let wire: Vec<(&str, &str)> = mailboxes.iter().map(|(m, p)| (m.as_str(), *p)).collect();
            self.remote.deliver_lmtp(target, &Self::message(job, &wire))
        };
        replies.resize_with(mailboxes.len(), || Outcome::Deferred {
            reply: "451 4.3.0 No reply from the LMTP server for this recipient".into(),
        });
        plans
            .into_iter()
            .map(|plan| match plan {
                Err(outcome) => outcome,
                Ok(copies) => combine(
                    copies
                        .into_iter()
                        .map(|copy| match copy {
                            Copy::Lmtp(at) => replies[at].clone(),
                            Copy::Done(outcome) => outcome,
                        })
                        .collect(),
                ),
            })
            .collect()
    }

    /// An alias that points elsewhere: relay one copy there.
    fn forward(&self, job: &Job, to: &str) -> Outcome {
        let envelope = &job.message.envelope;
        let domain = to.rsplit_once('@').map_or("", |(_, d)| d);
        let recipients = [(to, "")];
        let message = Message {
            reverse_path: &envelope.reverse_path,
            mail_params: &envelope.mail_params,
            recipients: &recipients,
            body: job.message.body(),
            body_type: envelope.body_type,
            smtputf8: envelope.smtputf8,
        };
        self.remote
            .deliver(domain, &message)
            .into_iter()
            .next()
            .unwrap_or_else(|| Outcome::Deferred {
                reply: "451 4.3.0 No result from the next hop".into(),
            })
    }

    fn message<'a>(job: &'a Job, recipients: &'a [(&'a str, &'a str)]) -> Message<'a> {
        let envelope = &job.message.envelope;
        Message {
            reverse_path: &envelope.reverse_path,
            mail_params: &envelope.mail_params,
            recipients,
            body: job.message.body(),
            body_type: envelope.body_type,
            smtputf8: envelope.smtputf8,
        }
    }
}

impl Transport for Dispatch {
    fn destination(&self, recipient: &str) -> String {
        if self.is_local(recipient) {
            return if self.lmtp.is_some() { LMTP } else { LOCAL }.to_string();
        }
        let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
        self.remote.router().destination_key(domain)
    }

    fn deliver(&self, job: &Job) -> Vec<Outcome> {
        let envelope = &job.message.envelope;
        let recipients: Vec<(&str, &str)> = job
            .recipients
            .iter()
            .map(|&i| {
                let r = &envelope.recipients[i as usize];
                (r.address.as_str(), r.params.as_str())
            })
            .collect();
        match job.destination.as_str() {
            LOCAL => self.deliver_local(job),
            LMTP => self.deliver_lmtp(job, &recipients),
            _ => {
                // Every recipient of a remote job shares the domain the key came from.
                let domain = recipients
                    .first()
                    .and_then(|(a, _)| a.rsplit_once('@'))
                    .map_or("", |(_, d)| d);
                self.remote
                    .deliver(domain, &Self::message(job, &recipients))
            }
        }
    }
}

/// One recipient's outcome from the copies its aliases fanned out to: it is
/// delivered only when every copy is. A temporary failure of any copy retries
/// the recipient (the copies already delivered may then arrive twice, which
/// SMTP allows; losing one is not allowed); otherwise a permanent failure of
/// any copy fails it.
fn combine(outcomes: Vec<Outcome>) -> Outcome {
    let mut delivered = None;
    let mut failed = None;
    for outcome in outcomes {
        match outcome {
            Outcome::Deferred { .. } => return outcome,
            Outcome::Failed { .. } => failed = failed.or(Some(outcome)),
            Outcome::Delivered { .. } => delivered = delivered.or(Some(outcome)),
        }
    }
    failed.or(delivered).unwrap_or_else(|| Outcome::Failed {
        reply: "550 5.1.1 The alias expands to nobody".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_deferred_copy_retries_the_recipient() {
        let d = |r: &str| Outcome::Delivered { reply: r.into() };
        let t = |r: &str| Outcome::Deferred { reply: r.into() };
        let f = |r: &str| Outcome::Failed { reply: r.into() };
        assert_eq!(combine(vec![d("a"), t("b"), f("c")]), t("b"));
        assert_eq!(combine(vec![d("a"), f("c")]), f("c"));
        assert_eq!(combine(vec![d("a"), d("b")]), d("a"));
        assert!(matches!(combine(vec![]), Outcome::Failed { .. }));
    }
}
