//! The transport the delivery threads run: the local domains go to Maildirs
//! (or to an LMTP server), everything else to the next hop over SMTP, and an
//! alias that points elsewhere is queued again as a message of its own.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_directory::{Directory, ResolveError, Target};
use sluice_smtp::{
    Domain, Envelope, ForwardPath, Mailbox, OriginalRecipient, Path, RcptParams, Recipient,
};
use sluice_spool::{Entry, Reason, SpoolHandle, Submission};

use crate::Outcome;
use crate::local::Local;
use crate::remote::{Remote, RunItem};
use crate::scheduler::{Destination, Job, Transport};

/// Local and remote delivery behind the scheduler's [`Transport`].
#[derive(Debug)]
pub struct Dispatch {
    directory: Arc<Directory>,
    local: Local,
    remote: Arc<Remote>,
    /// `unix:/path` or `host:port`: the local domains' mail goes there.
    lmtp: Option<String>,
    /// Where forwarded copies are queued.
    spool: SpoolHandle,
    /// Our name, as the HELO of forwarded copies.
    hostname: String,
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

/// The transport's parts, as the binary wires them.
#[derive(Debug)]
pub struct DispatchConfig {
    pub directory: Arc<Directory>,
    pub local: Local,
    pub remote: Remote,
    /// `unix:/path` or `host:port` of an LMTP server for the local domains.
    pub lmtp: Option<String>,
    /// Where a forward is queued.
    pub spool: SpoolHandle,
    /// Our name.
    pub hostname: String,
}

/// One recipient's copies, after alias expansion.
struct Copies {
    mailboxes: Vec<String>,
    forwards: Vec<Mailbox>,
}

impl Dispatch {
    pub fn new(config: DispatchConfig) -> Self {
        let remote = Arc::new(config.remote);
        Dispatch {
            directory: config.directory,
            local: config.local,
            reaper: Reaper::start(remote.clone()),
            remote,
            lmtp: config.lmtp.filter(|l| !l.is_empty()),
            spool: config.spool,
            hostname: config.hostname,
        }
    }

    /// A local recipient's copies: its mailboxes and the addresses its
    /// aliases forward to.
    fn copies(&self, forward_path: &ForwardPath) -> Result<Copies, Outcome> {
        let local_part = match forward_path {
            ForwardPath::Postmaster => std::borrow::Cow::Borrowed("postmaster"),
            ForwardPath::Path(p) => p.mailbox.local_part.unquoted(),
        };
        let targets = self.directory.resolve(&local_part).map_err(resolve_error)?;
        let mut copies = Copies {
            mailboxes: Vec::new(),
            forwards: Vec::new(),
        };
        for target in targets {
            match target {
                Target::Mailbox(user) => copies.mailboxes.push(user),
                Target::Forward(mailbox) => copies.forwards.push(mailbox),
            }
        }
        Ok(copies)
    }

    fn deliver_local(&self, job: &Job) -> Vec<Outcome> {
        let entry = &job.message.entry;
        job.recipients()
            .map(|rcpt| {
                let copies = match self.copies(&rcpt.forward_path) {
                    Ok(copies) => copies,
                    Err(outcome) => return outcome,
                };
                let mut outcomes: Vec<Outcome> = copies
                    .mailboxes
                    .iter()
                    .map(|user| {
                        self.local.deliver(
                            user,
                            &entry.envelope.reverse_path,
                            &rcpt.forward_path,
                            job.message.body(),
                        )
                    })
                    .collect();
                outcomes.extend(self.forward(job, rcpt, &copies.forwards, &outcomes));
                combine(outcomes)
            })
            .collect()
    }

    /// The local domains through an LMTP server. Aliases are ours to expand
    /// (the server knows only mailboxes), so each forward-path first becomes
    /// its copies; every mailbox copy then goes in one LMTP transaction, whose
    /// per-recipient replies are folded back onto the forward-paths.
    fn deliver_lmtp(&self, job: &Job) -> Vec<Outcome> {
        let target = self.lmtp.as_deref().unwrap_or_default();
        let mut envelope = Arc::unwrap_or_clone(job.envelope());
        envelope.recipients.clear();
        // Per recipient of the job: the indices of its copies in the LMTP
        // transaction, or why it has none.
        let plans: Vec<Result<(Vec<usize>, Copies), Outcome>> = job
            .recipients()
            .map(|rcpt| {
                let copies = self.copies(&rcpt.forward_path)?;
                let domain = match &rcpt.forward_path {
                    ForwardPath::Postmaster => self.directory.primary_domain().to_owned(),
                    ForwardPath::Path(p) => p.mailbox.domain.text(),
                };
                let mut at = Vec::with_capacity(copies.mailboxes.len());
                for user in &copies.mailboxes {
                    let mailbox = Mailbox::parse(format!("{user}@{domain}").as_bytes())
                        .map_err(|_| {
                            Outcome::local(
                                451,
                                (4, 3, 5),
                                format!("Local delivery misconfigured: {user}@{domain} is no address"),
                            )
                        })?;
                    // ORCPT and NOTIFY were given for this forward-path; they
                    // still describe it when no alias rewrote it.
                    let unchanged = matches!(&rcpt.forward_path,
                        ForwardPath::Path(p) if p.mailbox.text().eq_ignore_ascii_case(&mailbox.text()));
                    let params = if unchanged {
                        rcpt.params.clone()
                    } else {
                        RcptParams::default()
                    };
                    // Two forward-paths that reach one mailbox get one copy.
                    let existing = envelope.recipients.iter().position(|r| {
                        matches!(&r.forward_path, ForwardPath::Path(p)
                            if p.mailbox.text().eq_ignore_ascii_case(&mailbox.text()))
                    });
                    at.push(existing.unwrap_or_else(|| {
                        envelope.recipients.push(Recipient {
                            forward_path: ForwardPath::Path(Path {
                                source_route: Vec::new(),
                                mailbox,
                            }),
                            params,
                        });
                        envelope.recipients.len() - 1
                    }));
                }
                Ok((at, copies))
            })
            .collect();
        let mut replies = if envelope.recipients.is_empty() {
            Vec::new()
        } else {
            self.remote
                .deliver_lmtp(target, &envelope, job.message.body())
        };
        replies.resize_with(envelope.recipients.len(), || {
            Outcome::local(
                451,
                (4, 3, 0),
                "No reply from the LMTP server for this recipient",
            )
        });
        plans
            .into_iter()
            .zip(job.recipients())
            .map(|(plan, rcpt)| match plan {
                Err(outcome) => outcome,
                Ok((at, copies)) => {
                    let mut outcomes: Vec<Outcome> =
                        at.iter().map(|&i| replies[i].clone()).collect();
                    outcomes.extend(self.forward(job, rcpt, &copies.forwards, &outcomes));
                    combine(outcomes)
                }
            })
            .collect()
    }

    /// Queues the copies for `forwards` as one new message, once every
    /// mailbox copy of this recipient is delivered or failed: a mailbox copy
    /// that waits would make the recipient retry, and the forward would be
    /// queued twice. Postfix's local(8) re-injects the same way
    /// ("forwarded as"), so the forward gets its own retries, per-destination
    /// limits and bounces, and a slow next hop never holds a local job.
    fn forward(
        &self,
        job: &Job,
        rcpt: &Recipient,
        forwards: &[Mailbox],
        mailbox_outcomes: &[Outcome],
    ) -> Option<Outcome> {
        if forwards.is_empty() {
            return None;
        }
        if mailbox_outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Deferred(_)))
        {
            return Some(Outcome::local(
                451,
                (4, 3, 0),
                "Forwarding waits for this recipient's other copies",
            ));
        }
        let entry = &job.message.entry;
        let original = match &rcpt.forward_path {
            ForwardPath::Postmaster => format!("postmaster@{}", self.directory.primary_domain()),
            ForwardPath::Path(p) => p.mailbox.text(),
        };
        // Postfix's loop defence: a message that already went through this
        // recipient once is not forwarded again.
        if delivered_to(job.message.body(), &original) {
            return Some(Outcome::local(
                550,
                (5, 4, 6),
                format!("Mail forwarding loop for {original}"),
            ));
        }
        let mut header = format!("Delivered-To: {original}\r\n").into_bytes();
        header.extend_from_slice(job.message.body());
        let id = self.spool.new_id();
        let submission = Submission::new(
            Entry {
                id,
                arrival_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                client_ip: entry.client_ip,
                helo: self.hostname.clone(),
                envelope: Envelope {
                    // The original sender: bounces of the forward go back
                    // to whoever wrote to the alias.
                    reverse_path: entry.envelope.reverse_path.clone(),
                    params: entry.envelope.params.clone(),
                    recipients: forwards
                        .iter()
                        .map(|mailbox| Recipient {
                            forward_path: ForwardPath::Path(Path {
                                source_route: Vec::new(),
                                mailbox: mailbox.clone(),
                            }),
                            params: RcptParams {
                                notify: rcpt.params.notify,
                                orcpt: Some(rcpt.params.orcpt.clone().unwrap_or(
                                    OriginalRecipient {
                                        addr_type: "rfc822".into(),
                                        address: original.clone(),
                                    },
                                )),
                            },
                        })
                        .collect(),
                }
                .into(),
            },
            header,
        );
        Some(match self.spool.submit_wait(submission) {
            Ok(forwarded) => {
                tracing::info!(queue_id = %job.id, recipient = %original,
                    forwarded_as = %forwarded, "forwarded as {forwarded}");
                Outcome::Delivered(Reason::local(sluice_smtp::Reply::new(
                    250,
                    Some(sluice_smtp::EnhancedCode::new(2, 1, 5)),
                    format!("Forwarded as {forwarded}"),
                )))
            }
            Err(e) => Outcome::local(451, (4, 3, 0), format!("Cannot queue the forward: {e}")),
        })
    }
}

/// Whether the header section holds `Delivered-To: <address>`.
fn delivered_to(message: &[u8], address: &str) -> bool {
    let end = memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    message[..end]
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            name.eq_ignore_ascii_case(b"Delivered-To")
                .then_some(&value[1..])
        })
        .any(|value| {
            String::from_utf8_lossy(value)
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .eq_ignore_ascii_case(address)
        })
}

fn resolve_error(e: ResolveError) -> Outcome {
    Outcome::of(Reason::local(e.reply()))
}

impl Transport for Dispatch {
    fn destination(&self, recipient: &ForwardPath) -> Destination {
        if self.directory.is_local(recipient) {
            return if self.lmtp.is_some() {
                Destination::Lmtp
            } else {
                Destination::Local
            };
        }
        let router = self.remote.router();
        Destination::Remote(match recipient {
            ForwardPath::Postmaster => router.destination_key(""),
            ForwardPath::Path(p) => match &p.mailbox.domain {
                Domain::Name(name) => router.destination_key(name),
                literal => router.destination_key(&literal.to_string()),
            },
        })
    }

    fn gathers(&self, destination: &Destination) -> bool {
        matches!(destination, Destination::Remote(key) if self.remote.takes_runs(key))
    }

    fn deliver_run(&self, jobs: &[Job]) -> Option<Vec<Vec<Outcome>>> {
        if !jobs
            .iter()
            .all(|job| matches!(job.destination, Destination::Remote(_)))
        {
            return None;
        }
        let started = std::time::Instant::now();
        let items: Vec<RunItem<'_>> = jobs
            .iter()
            .map(|job| RunItem {
                domain: remote_domain(job),
                envelope: job.envelope(),
                body: job.message.body(),
            })
            .collect();
        let outcomes = self.remote.deliver_run(&items)?;
        // Each message's attempt took the run's time: they went together.
        let took = started.elapsed();
        for _ in jobs {
            sluice_metrics::delivery_attempt(sluice_metrics::Transport::Smtp, took);
        }
        Some(outcomes)
    }

    fn deliver(&self, job: &Job) -> Vec<Outcome> {
        let started = std::time::Instant::now();
        let (transport, outcomes) = match &job.destination {
            Destination::Local => {
                let outcomes = self.deliver_local(job);
                for outcome in &outcomes {
                    crate::count_delivery(sluice_metrics::Transport::Local, outcome, false);
                }
                (sluice_metrics::Transport::Local, outcomes)
            }
            Destination::Lmtp => (sluice_metrics::Transport::Lmtp, self.deliver_lmtp(job)),
            Destination::Remote(_) => {
                let domain = remote_domain(job);
                (
                    sluice_metrics::Transport::Smtp,
                    self.remote
                        .deliver(&domain, &job.envelope(), job.message.body()),
                )
            }
        };
        sluice_metrics::delivery_attempt(transport, started.elapsed());
        outcomes
    }
}

/// The domain of a remote job: every recipient shares the one its
/// destination key came from.
fn remote_domain(job: &Job) -> Cow<'_, str> {
    match job.recipients().next().map(|r| &r.forward_path) {
        Some(ForwardPath::Path(p)) => p.mailbox.domain.as_text(),
        _ => Cow::Borrowed(""),
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
            Outcome::Deferred(_) => return outcome,
            Outcome::Failed(_) => failed = failed.or(Some(outcome)),
            Outcome::Delivered(_) => delivered = delivered.or(Some(outcome)),
        }
    }
    failed
        .or(delivered)
        .unwrap_or_else(|| Outcome::local(550, (5, 1, 1), "The alias expands to nobody"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_deferred_copy_retries_the_recipient() {
        let d = || Outcome::local(250, (2, 0, 0), "a");
        let t = || Outcome::local(451, (4, 0, 0), "b");
        let f = || Outcome::local(550, (5, 0, 0), "c");
        assert_eq!(combine(vec![d(), t(), f()]), t());
        assert_eq!(combine(vec![d(), f()]), f());
        assert_eq!(combine(vec![d(), d()]), d());
        assert!(matches!(combine(vec![]), Outcome::Failed(_)));
    }

    #[test]
    fn delivered_to_finds_the_address_in_the_header_only() {
        let message = b"Received: x\r\nDelivered-To: Alias@Example.test\r\nSubject: s\r\n\r\nDelivered-To: body@example.test\r\n";
        assert!(delivered_to(message, "alias@example.test"));
        assert!(!delivered_to(message, "body@example.test"));
        assert!(!delivered_to(message, "other@example.test"));
    }
}
