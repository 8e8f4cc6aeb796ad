//! Scheduler tests: a real spool in a temporary directory, and a scripted
//! in-process transport that records every attempt.

mod control;
mod delivery;
mod idle;
mod restart;
mod runs;
mod virtual_time;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sluice_smtp::{Envelope, ForwardPath, MailParams, Path, Recipient, ReversePath};
use sluice_spool::{Entry, QueueId, Spool, SpoolConfig, SpoolHandle, Submission};

use super::{Destination, Job, Scheduler, SchedulerConfig, StartError, Transport};
use crate::Outcome;

/// Decides one recipient's outcome from its forward-path and how many
/// attempts it had before this one.
type Rule = dyn Fn(&str, u32) -> Outcome + Send + Sync;

/// One attempt at one recipient, as the transport saw it.
#[derive(Debug, Clone)]
struct Call {
    id: QueueId,
    recipient: String,
    /// Numbers the jobs: recipients with the same number went in one job.
    job: usize,
    outcome: Outcome,
    at: Instant,
    reverse_path: String,
    body: Vec<u8>,
    /// The name of the delivery thread that ran the job.
    thread: String,
}

#[derive(Default)]
struct Record {
    calls: Vec<Call>,
    attempts: HashMap<(QueueId, String), u32>,
    jobs: usize,
    active: HashMap<Destination, usize>,
    max_active: HashMap<Destination, usize>,
    active_total: usize,
    max_active_total: usize,
}

/// The transport: destination = the domain; each job sleeps `delay`, then
/// answers per recipient as `rule` says.
struct Fake {
    delay: Duration,
    rule: Box<Rule>,
    record: Arc<Mutex<Record>>,
}

impl Fake {
    fn new(delay: Duration, rule: impl Fn(&str, u32) -> Outcome + Send + Sync + 'static) -> Fake {
        Fake {
            delay,
            rule: Box::new(rule),
            record: Arc::default(),
        }
    }

    /// Always delivers.
    fn delivering(delay: Duration) -> Fake {
        Fake::new(delay, |_, _| delivered())
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn calls(&self) -> Vec<Call> {
        self.record().calls.clone()
    }

    fn calls_to(&self, recipient: &str) -> Vec<Call> {
        self.record()
            .calls
            .iter()
            .filter(|c| c.recipient == recipient)
            .cloned()
            .collect()
    }

    /// Attempts per (message, recipient).
    fn attempts(&self) -> HashMap<(QueueId, String), u32> {
        self.record().attempts.clone()
    }
}

/// A forward-path as the tests name recipients: `local@domain`, or
/// `postmaster`.
fn address(forward_path: &ForwardPath) -> String {
    match forward_path {
        ForwardPath::Postmaster => "postmaster".into(),
        ForwardPath::Path(p) => p.mailbox.text(),
    }
}

/// The tests' routing: postmaster is local, everyone else goes to their
/// domain.
fn domain_destination(recipient: &ForwardPath) -> Destination {
    match recipient {
        ForwardPath::Postmaster => Destination::Local,
        ForwardPath::Path(p) => {
            Destination::Remote(p.mailbox.domain.to_string().to_ascii_lowercase().into())
        }
    }
}

impl Transport for Fake {
    fn destination(&self, recipient: &ForwardPath) -> Destination {
        domain_destination(recipient)
    }

    fn deliver(&self, job: &Job) -> Vec<Outcome> {
        let job_no = {
            let mut r = self.record();
            r.jobs += 1;
            let n = r.active.entry(job.destination.clone()).or_default();
            *n += 1;
            let n = *n;
            let max = r.max_active.entry(job.destination.clone()).or_default();
            *max = (*max).max(n);
            r.active_total += 1;
            r.max_active_total = r.max_active_total.max(r.active_total);
            r.jobs
        };
        std::thread::sleep(self.delay);
        let mut r = self.record();
        let mut outcomes = Vec::new();
        for rcpt in job.recipients() {
            let rcpt = address(&rcpt.forward_path);
            let key = (job.id, rcpt.clone());
            let before = r.attempts.get(&key).copied().unwrap_or(0);
            let outcome = (self.rule)(&rcpt, before);
            r.attempts.insert(key, before + 1);
            r.calls.push(Call {
                id: job.id,
                recipient: rcpt,
                job: job_no,
                outcome: outcome.clone(),
                at: Instant::now(),
                reverse_path: match &job.message.entry.envelope.reverse_path {
                    ReversePath::Null => String::new(),
                    ReversePath::Path(p) => p.mailbox.text(),
                },
                body: job.message.body().to_vec(),
                thread: std::thread::current().name().unwrap_or("").to_owned(),
            });
            outcomes.push(outcome);
        }
        *r.active.get_mut(&job.destination).unwrap() -= 1;
        r.active_total -= 1;
        outcomes
    }
}

fn delivered() -> Outcome {
    Outcome::local(250, (2, 0, 0), "Ok")
}

fn deferred() -> Outcome {
    Outcome::local(451, (4, 4, 1), "try again later")
}

fn failed() -> Outcome {
    Outcome::local(550, (5, 1, 1), "no such user")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Small and fast: 4 threads, retries every `retry_ms`.
fn config(retry_ms: u64) -> SchedulerConfig {
    SchedulerConfig {
        threads: 4,
        max_connections_per_destination: 20,
        retry_schedule: vec![ms(retry_ms)],
        max_queue_lifetime: Duration::from_secs(86_400),
        hostname: "mx.sluice.test".into(),
    }
}

fn open(dir: &std::path::Path) -> Spool {
    Spool::open(dir, SpoolConfig::default()).unwrap().0
}

fn path(mailbox: &str) -> Path {
    Path::parse(format!("<{mailbox}>").as_bytes()).unwrap()
}

/// `from` `""` is the null reverse-path; `to` `postmaster` has no domain.
fn entry(h: &SpoolHandle, from: &str, to: &[&str]) -> Entry {
    Entry {
        id: h.new_id(),
        arrival_unix_ms: now_ms(),
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        helo: "client.test".into(),
        envelope: Envelope {
            reverse_path: if from.is_empty() {
                ReversePath::Null
            } else {
                ReversePath::Path(path(from))
            },
            params: MailParams::default(),
            recipients: to
                .iter()
                .map(|a| {
                    Recipient::new(if a.eq_ignore_ascii_case("postmaster") {
                        ForwardPath::Postmaster
                    } else {
                        ForwardPath::Path(path(a))
                    })
                })
                .collect(),
        }
        .into(),
    }
}

/// Queues a message in the spool (a running scheduler hears of it from the
/// spool).
fn submit(h: &SpoolHandle, from: &str, to: &[&str]) -> QueueId {
    let entry = entry(h, from, to);
    let body = format!(
        "From: <{from}>\r\nSubject: test {}\r\n\r\nHello.\r\n",
        entry.id
    );
    h.submit_wait(Submission::new(entry, body.into_bytes()))
        .unwrap()
}

/// Queues a message held from the start, as a quarantine does.
fn submit_held(h: &SpoolHandle, from: &str, to: &[&str]) -> QueueId {
    let mut submission =
        Submission::new(entry(h, from, to), b"Subject: held\r\n\r\nx\r\n".to_vec());
    submission.held = true;
    h.submit_wait(submission).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Polls `cond` until it holds or `limit` passes; says which.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(ms(5));
    }
}

fn spool_is_empty(h: &SpoolHandle) -> bool {
    h.messages().unwrap().is_empty()
}

fn start(config: SchedulerConfig, h: &SpoolHandle, fake: &Arc<Fake>) -> Scheduler {
    Scheduler::start(config, h.clone(), fake.clone()).unwrap()
}
