//! The load generator: N connections, each a thread with a blocking socket
//! driving the project's sans-IO
//! [`ClientSession`](sluice_smtp::client::ClientSession).
//!
//! A thread per connection is the cheapest correct design for the 20–50
//! connections a benchmark uses: each thread sleeps in `read` while the
//! server works, and a message costs one write for MAIL/RCPT/DATA (the
//! session pipelines them when the server offers PIPELINING), one write
//! for the header block and the pre-stuffed body, and a read or two.
//!
//! The accept latency of a message runs from the moment the write that
//! ends with the final "." returned to the moment its reply was read.

mod connection;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sluice_smtp::client::Message;
use sluice_smtp::{Domain, ForwardPath, Mailbox, Path, ReversePath};

use crate::latency::{Latency, LatencySummary};
use crate::message::{MessageFactory, MessageSpec};
use crate::schedule::Dispenser;
use connection::{Connection, Verdict};

/// After this many failures in a row (no connection, or a connection lost
/// mid-message) the run stops: the server is gone.
const MAX_CONSECUTIVE_ERRORS: u32 = 20;

/// What to send, how, and for how long.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub target: SocketAddr,
    pub connections: usize,
    /// Messages in all; `u64::MAX` to run until `duration` is up.
    pub messages: u64,
    /// Messages on one connection before it is closed and a new one
    /// opened; `None` keeps each connection for the whole run.
    pub per_connection: Option<u64>,
    /// Octets per message, header block included.
    pub size: usize,
    pub recipients: usize,
    /// The reverse-path, `local@domain`.
    pub from: String,
    /// Recipients are `rcpt<i>@<recipient_domain>`.
    pub recipient_domain: String,
    /// Our EHLO name.
    pub helo: String,
    /// Open loop: messages per second, all connections together.
    pub rate: Option<f64>,
    /// No message is started after this long.
    pub duration: Option<Duration>,
    /// A connect, read or write that takes longer fails the message.
    pub io_timeout: Duration,
    /// Seed of the random bodies.
    pub seed: u64,
    /// STARTTLS on every connection (the server's certificate is not
    /// verified: encryption is what is measured).
    pub tls: bool,
}

impl GeneratorConfig {
    /// The benchmark's defaults: 20 connections kept open, 4 KiB messages
    /// to one recipient each, as fast as the server takes them.
    pub fn new(target: SocketAddr, messages: u64) -> GeneratorConfig {
        GeneratorConfig {
            target,
            connections: 20,
            messages,
            per_connection: None,
            size: 4096,
            recipients: 1,
            from: "loadgen@bench.test".into(),
            recipient_domain: "remote.test".into(),
            helo: "loadgen.bench.test".into(),
            rate: None,
            duration: None,
            io_timeout: Duration::from_secs(30),
            seed: 1,
            tls: false,
        }
    }
}

/// Counters a progress display may read while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
}

/// The summary `sluice-loadgen --json` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorReport {
    pub target: String,
    pub connections: usize,
    pub messages_per_connection: Option<u64>,
    pub message_size: usize,
    pub recipients: usize,
    /// The offered rate of an open-loop run.
    pub rate: Option<f64>,
    /// Messages answered 2xx at the end of data.
    pub accepted: u64,
    /// Messages refused with a 4xx (at any step).
    pub temp_failed: u64,
    /// Messages refused with a 5xx (at any step).
    pub perm_failed: u64,
    /// Messages lost to a failed connect, a timeout or a dropped connection.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Octets of accepted messages (before dot-stuffing).
    pub bytes: u64,
    /// The run's wall-clock span, in ns since the Unix epoch.
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub elapsed_s: f64,
    /// Accepted messages per second over the run.
    pub messages_per_s: f64,
    /// Accepted megabytes (10^6 octets) per second.
    pub megabytes_per_s: f64,
    /// End of data written → its reply read.
    pub accept_latency: LatencySummary,
    /// Open loop only: the message's due time → its reply read, which
    /// includes any time it waited for a free connection.
    pub latency_from_due: Option<LatencySummary>,
}

/// A finished run: the report and the histograms behind it.
#[derive(Debug)]
pub struct RunResult {
    pub report: GeneratorReport,
    pub accept: Latency,
    pub from_due: Option<Latency>,
}

/// What the run needs everywhere, shared by the connection threads.
struct Plan<'a> {
    config: &'a GeneratorConfig,
    dispenser: Dispenser,
    factory: MessageFactory,
    envelope: Message,
    helo: Domain,
    progress: &'a Progress,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// One thread's tally, merged at the end.
#[derive(Debug)]
struct Tally {
    accept: Latency,
    from_due: Option<Latency>,
    accepted: u64,
    temp: u64,
    perm: u64,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new(open_loop: bool) -> Tally {
        Tally {
            accept: Latency::new(),
            from_due: open_loop.then(Latency::new),
            accepted: 0,
            temp: 0,
            perm: 0,
            errors: 0,
            bytes: 0,
            first_error: None,
        }
    }

    fn error(&mut self, e: &io::Error, progress: &Progress) {
        self.errors += 1;
        progress.failed.fetch_add(1, Ordering::Relaxed);
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.accept.merge(&other.accept);
        if let (Some(a), Some(b)) = (&mut self.from_due, &other.from_due) {
            a.merge(b);
        }
        self.accepted += other.accepted;
        self.temp += other.temp;
        self.perm += other.perm;
        self.errors += other.errors;
        self.bytes += other.bytes;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Runs the load and returns when every connection is done.
pub fn run(config: &GeneratorConfig, progress: &Progress) -> io::Result<RunResult> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    if config.connections == 0 || config.recipients == 0 {
        return Err(invalid(
            "connections and recipients must be at least 1".into(),
        ));
    }
    if config.per_connection == Some(0) {
        return Err(invalid("messages per connection must be at least 1".into()));
    }
    if let Some(r) = config.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(invalid(format!("rate must be positive, not {r}")));
    }
    let to: Vec<String> = (0..config.recipients)
        .map(|i| format!("rcpt{i}@{}", config.recipient_domain))
        .collect();
    let envelope = envelope(&config.from, &to, config.size).map_err(invalid)?;
    let helo = Domain::parse(&config.helo)
        .ok_or_else(|| invalid(format!("bad EHLO name {:?}", config.helo)))?;
    let factory = MessageFactory::new(MessageSpec {
        size: config.size,
        from: config.from.clone(),
        to,
        seed: config.seed,
    });

    let start = Instant::now();
    let start_wall = SystemTime::now();
    let plan = Plan {
        config,
        dispenser: Dispenser::new(
            config.messages,
            start,
            config.duration.map(|d| start + d),
            config.rate,
        ),
        factory,
        envelope,
        helo,
        progress,
        tls: if config.tls {
            Some(
                sluice_tls::ClientTls::new(None)
                    .map_err(|e| io::Error::other(e.to_string()))?
                    .config(false),
            )
        } else {
            None
        },
    };
    let tally = std::thread::scope(|s| {
        let threads: Vec<_> = (0..config.connections)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("loadgen-{i}"))
                    .spawn_scoped(s, || connection_loop(&plan))
            })
            .collect::<io::Result<_>>()?;
        let mut total = Tally::new(config.rate.is_some());
        for t in threads {
            total.merge(t.join().expect("a connection thread panicked"));
        }
        io::Result::Ok(total)
    })?;
    let elapsed = start.elapsed();
    let elapsed_s = elapsed.as_secs_f64().max(1e-9);
    let report = GeneratorReport {
        target: config.target.to_string(),
        connections: config.connections,
        messages_per_connection: config.per_connection,
        message_size: config.size,
        recipients: config.recipients,
        rate: config.rate,
        accepted: tally.accepted,
        temp_failed: tally.temp,
        perm_failed: tally.perm,
        errors: tally.errors,
        first_error: tally.first_error.clone(),
        bytes: tally.bytes,
        start_unix_ns: unix_ns(start_wall),
        end_unix_ns: unix_ns(start_wall + elapsed),
        elapsed_s,
        messages_per_s: tally.accepted as f64 / elapsed_s,
        megabytes_per_s: tally.bytes as f64 / 1e6 / elapsed_s,
        accept_latency: tally.accept.summary(),
        latency_from_due: tally.from_due.as_ref().map(Latency::summary),
    };
    Ok(RunResult {
        report,
        accept: tally.accept,
        from_due: tally.from_due,
    })
}

fn envelope(from: &str, to: &[String], size: usize) -> Result<Message, String> {
    let path = |s: &str| {
        Mailbox::parse(s.as_bytes())
            .map(|mailbox| Path {
                source_route: Vec::new(),
                mailbox,
            })
            .map_err(|e| format!("bad address {s:?}: {e}"))
    };
    let recipients = to
        .iter()
        .map(|t| path(t).map(ForwardPath::Path))
        .collect::<Result<_, _>>()?;
    // The SIZE parameter is a declaration (RFC 1870), not a promise to the
    // octet; the header block's length varies by a few digits.
    Ok(Message::new(
        ReversePath::Path(path(from)?),
        recipients,
        size as u64,
    ))
}

/// One connection thread: takes messages until there are none, opening a
/// connection when it has none (or the last one was used up).
fn connection_loop(plan: &Plan<'_>) -> Tally {
    let config = plan.config;
    let mut tally = Tally::new(config.rate.is_some());
    let mut conn: Option<Connection> = None;
    let mut on_this_connection = 0u64;
    let mut consecutive_errors = 0;
    while let Some(ticket) = plan.dispenser.claim(Instant::now()) {
        if let Some(due) = ticket.due {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match Connection::open(
                config.target,
                &plan.helo,
                config.io_timeout,
                plan.tls.clone(),
            ) {
                Ok(c) => {
                    on_this_connection = 0;
                    conn.insert(c)
                }
                Err(e) => {
                    tally.error(&e, plan.progress);
                    consecutive_errors += 1;
                    if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                        plan.dispenser.stop();
                    }
                    // Not a busy loop against a server that refuses.
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        match c.send(&plan.envelope, &plan.factory, ticket.index) {
            Ok(sent) => {
                consecutive_errors = 0;
                match sent.outcome {
                    Verdict::Accepted => {
                        tally.accepted += 1;
                        tally.bytes += sent.bytes;
                        tally.accept.record(sent.accept_latency);
                        if let (Some(h), Some(due)) = (&mut tally.from_due, ticket.due) {
                            h.record(sent.done.saturating_duration_since(due));
                        }
                        plan.progress.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Temporary | Verdict::Permanent => {
                        if sent.outcome == Verdict::Temporary {
                            tally.temp += 1;
                        } else {
                            tally.perm += 1;
                        }
                        plan.progress.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                on_this_connection += 1;
                let used_up = config
                    .per_connection
                    .is_some_and(|m| on_this_connection >= m);
                if (used_up || c.session.is_closed())
                    && let Some(c) = conn.take()
                {
                    c.quit();
                }
            }
            Err(e) => {
                tally.error(&e, plan.progress);
                consecutive_errors += 1;
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    plan.dispenser.stop();
                }
                conn = None;
            }
        }
    }
    if let Some(c) = conn {
        c.quit();
    }
    tally
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configurations_are_refused_before_connecting() {
        // Port 9 on loopback: nothing may be sent there, and nothing is.
        let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let progress = Progress::default();
        let mut c = GeneratorConfig::new(target, 10);
        c.connections = 0;
        assert!(run(&c, &progress).is_err());
        let mut c = GeneratorConfig::new(target, 10);
        c.per_connection = Some(0);
        assert!(run(&c, &progress).is_err());
        let mut c = GeneratorConfig::new(target, 10);
        c.rate = Some(0.0);
        assert!(run(&c, &progress).is_err());
        let mut c = GeneratorConfig::new(target, 10);
        c.from = "not an address".into();
        assert!(run(&c, &progress).is_err());
    }
}
