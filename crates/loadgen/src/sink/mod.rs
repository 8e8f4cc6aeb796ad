//! The sink: an SMTP server that takes every message, counts it, reads the
//! generator's timestamp for the end-to-end latency, and throws it away.
//!
//! One thread per connection over blocking sockets: an MTA relays to a
//! smarthost over a few dozen connections at most (Sluice's and Postfix's
//! default is 20), and a thread that sleeps in `read` costs nothing. The
//! protocol is the project's own sans-IO [`ServerSession`], so the sink
//! speaks exactly the SMTP that Sluice's front end does (PIPELINING,
//! CHUNKING, 8BITMIME, SMTPUTF8).

pub mod policy;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sluice_smtp::server::{Decision, Event, Extensions, ServerConfig, ServerSession};

use crate::latency::{Latency, LatencySummary};
use crate::message::sent_timestamp;
use crate::stream::Stream;
pub use policy::{ReplyPolicy, Verdict};

/// How the sink behaves.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub listen: SocketAddr,
    /// The name in the greeting and EHLO reply.
    pub hostname: String,
    pub policy: ReplyPolicy,
    /// Waits this long before answering each end of data (a slow next hop).
    pub delay: Duration,
    /// Signals [`SinkHandle::wait_done`] once this many messages are accepted.
    pub stop_after: Option<u64>,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Offer STARTTLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl SinkConfig {
    pub fn new(listen: SocketAddr) -> SinkConfig {
        SinkConfig {
            listen,
            hostname: "sink.loadgen.test".into(),
            policy: ReplyPolicy::accept_all(),
            delay: Duration::ZERO,
            stop_after: None,
            idle_timeout: Duration::from_secs(300),
            tls: None,
        }
    }
}

/// The running totals.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    /// Ends of data seen, whatever the answer.
    messages: AtomicU64,
    accepted: AtomicU64,
    temp_rejected: AtomicU64,
    perm_rejected: AtomicU64,
    /// Recipients of accepted messages.
    recipients: AtomicU64,
    /// Octets of accepted messages.
    bytes: AtomicU64,
    /// Accepted messages without a readable `X-Loadgen-Sent` header.
    missing_timestamp: AtomicU64,
    /// When the first and the last accepted message arrived (Unix ns).
    first_accept_ns: AtomicU64,
    last_accept_ns: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub connections: u64,
    pub messages: u64,
    pub accepted: u64,
    pub temp_rejected: u64,
    pub perm_rejected: u64,
    pub recipients: u64,
    pub bytes: u64,
}

/// The sink's final word, as `sluice-sink --json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    pub listen: String,
    pub connections: u64,
    pub messages: u64,
    pub accepted: u64,
    pub temp_rejected: u64,
    pub perm_rejected: u64,
    pub recipients: u64,
    pub bytes: u64,
    pub missing_timestamp: u64,
    /// When the first and the last accepted message arrived, in ns since the
    /// Unix epoch (0 when none did).
    pub first_accept_unix_ns: u64,
    pub last_accept_unix_ns: u64,
    /// Accepted messages per second between the first and the last.
    pub messages_per_s: f64,
    pub stop_after: Option<u64>,
    /// Whether `stop_after` messages were accepted.
    pub reached: bool,
    /// From the generator's `X-Loadgen-Sent` to the end of data here.
    pub end_to_end_latency: LatencySummary,
}

#[derive(Debug)]
struct Shared {
    config: SinkConfig,
    server: Arc<ServerConfig>,
    counters: Counters,
    end_to_end: Mutex<Latency>,
    done: Mutex<bool>,
    done_signal: Condvar,
    stopping: AtomicBool,
}

/// A bound sink, not yet accepting.
#[derive(Debug)]
pub struct Sink {
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// A running sink.
#[derive(Debug)]
pub struct SinkHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    pub fn bind(config: SinkConfig) -> io::Result<Sink> {
        let listener = TcpListener::bind(config.listen)?;
        let addr = listener.local_addr()?;
        let server = ServerConfig {
            hostname: config.hostname.clone(),
            max_line_length: 1000,
            max_message_size: 1 << 30,
            max_recipients: 10_000,
            max_errors: 100,
            extensions: Extensions {
                starttls: config.tls.is_some(),
                ..Extensions::default()
            },
            tls_required: false,
            auth_required: false,
        };
        Ok(Sink {
            listener,
            addr,
            shared: Arc::new(Shared {
                config,
                server: Arc::new(server),
                counters: Counters::default(),
                end_to_end: Mutex::new(Latency::new()),
                done: Mutex::new(false),
                done_signal: Condvar::new(),
                stopping: AtomicBool::new(false),
            }),
        })
    }

    /// Where it listens (the kernel's choice when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts accepting connections on a thread of its own.
    pub fn start(self) -> io::Result<SinkHandle> {
        let shared = Arc::clone(&self.shared);
        let listener = self.listener;
        let acceptor = std::thread::Builder::new()
            .name("sink-accept".into())
            .spawn(move || accept_loop(&listener, &shared))?;
        Ok(SinkHandle {
            addr: self.addr,
            shared: self.shared,
            acceptor: Some(acceptor),
        })
    }
}

impl SinkHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn snapshot(&self) -> Snapshot {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            connections: get(&c.connections),
            messages: get(&c.messages),
            accepted: get(&c.accepted),
            temp_rejected: get(&c.temp_rejected),
            perm_rejected: get(&c.perm_rejected),
            recipients: get(&c.recipients),
            bytes: get(&c.bytes),
        }
    }

    /// Waits until `stop_after` messages are accepted, at most `timeout`.
    /// True if they were.
    pub fn wait_done(&self, timeout: Duration) -> bool {
        let guard = self
            .shared
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .shared
            .done_signal
            .wait_timeout_while(guard, timeout, |done| !*done)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }

    /// The end-to-end latencies recorded so far.
    pub fn end_to_end(&self) -> Latency {
        self.shared
            .end_to_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn report(&self) -> SinkReport {
        let c = &self.shared.counters;
        let s = self.snapshot();
        let first = c.first_accept_ns.load(Ordering::Relaxed);
        let last = c.last_accept_ns.load(Ordering::Relaxed);
        let span_s = last.saturating_sub(first) as f64 / 1e9;
        let stop_after = self.shared.config.stop_after;
        SinkReport {
            listen: self.addr.to_string(),
            connections: s.connections,
            messages: s.messages,
            accepted: s.accepted,
            temp_rejected: s.temp_rejected,
            perm_rejected: s.perm_rejected,
            recipients: s.recipients,
            bytes: s.bytes,
            missing_timestamp: c.missing_timestamp.load(Ordering::Relaxed),
            first_accept_unix_ns: first,
            last_accept_unix_ns: last,
            // The first message opens the window, so it does not count.
            messages_per_s: if span_s > 0.0 {
                s.accepted.saturating_sub(1) as f64 / span_s
            } else {
                0.0
            },
            stop_after,
            reached: stop_after.is_some_and(|n| s.accepted >= n),
            end_to_end_latency: self.end_to_end().summary(),
        }
    }

    /// Stops accepting connections. Connections already open are served
    /// until their clients close them.
    pub fn shutdown(mut self) {
        self.stop_accepting();
    }

    fn stop_accepting(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        // `accept` has no timeout: one connection of our own wakes it.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.stop_accepting();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            // Out of file descriptors and the like: go on with the others.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("sink-conn".into())
            .spawn(move || {
                let _ = serve(stream, &shared);
            });
        if spawned.is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One SMTP session, until the client quits or goes away.
fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(shared.config.idle_timeout))?;
    let mut stream = Stream::Plain(stream);
    let mut session = ServerSession::new(Arc::clone(&shared.server));
    session.greet(None);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0, 0);
    loop {
        // Everything buffered is processed, and answered with one write:
        // a pipelined group gets its replies in one segment.
        loop {
            let used = session.receive(&buf[start..end]);
            start += used;
            if let Some(event) = session.event().cloned() {
                let decision = decide(&mut session, event, shared);
                // The event was just raised: it is pending.
                let _ = session.decide(decision);
                continue;
            }
            if used == 0 {
                break;
            }
        }
        let out = session.output();
        if !out.is_empty() {
            stream.write_all(out)?;
            stream.flush()?;
            out.clear();
        }
        if session.is_closed() {
            if let Some(tcp) = stream.tcp() {
                let _ = tcp.shutdown(Shutdown::Write);
            }
            return Ok(());
        }
        if session.wants_tls() {
            let Some(config) = shared.config.tls.clone() else {
                return Err(io::Error::other("STARTTLS without a certificate"));
            };
            // Whatever came after STARTTLS in clear is not read (RFC 3207).
            (start, end) = (0, 0);
            stream.start_server(config)?;
            session.tls_started();
            continue;
        }
        if start == end {
            (start, end) = (0, 0);
        } else if start > 0 {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        if end == buf.len() {
            // An unfinished command line longer than the buffer: the line
            // limit should have refused it long before.
            return Err(io::Error::other("input buffer full"));
        }
        let n = stream.read(&mut buf[end..])?;
        if n == 0 {
            return Ok(());
        }
        end += n;
    }
}

fn decide(
    session: &mut ServerSession<Arc<ServerConfig>>,
    event: Event,
    shared: &Shared,
) -> Decision {
    if event != Event::Message {
        return Decision::Accept;
    }
    let Some(recipients) = session.transaction().map(|tx| tx.recipients.len()) else {
        return Decision::Accept;
    };
    let Ok(message) = session.take_message() else {
        return Decision::Accept;
    };
    let now = SystemTime::now();
    let c = &shared.counters;
    let k = c.messages.fetch_add(1, Ordering::Relaxed);
    if !shared.config.delay.is_zero() {
        std::thread::sleep(shared.config.delay);
    }
    let verdict = shared.config.policy.verdict(k);
    if let Some(reply) = verdict.refusal() {
        let counter = match verdict {
            Verdict::Temporary => &c.temp_rejected,
            _ => &c.perm_rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        return Decision::Reject(reply);
    }
    let now_ns = unix_ns(now);
    match sent_timestamp(&message) {
        Some(sent) => {
            let latency =
                Duration::from_nanos(u64::try_from(now_ns.saturating_sub(sent)).unwrap_or(0));
            shared
                .end_to_end
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(latency);
        }
        None => {
            c.missing_timestamp.fetch_add(1, Ordering::Relaxed);
        }
    }
    c.recipients.fetch_add(recipients as u64, Ordering::Relaxed);
    c.bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
    let now_ns = u64::try_from(now_ns).unwrap_or(u64::MAX);
    let _ = c
        .first_accept_ns
        .compare_exchange(0, now_ns, Ordering::Relaxed, Ordering::Relaxed);
    c.last_accept_ns.fetch_max(now_ns, Ordering::Relaxed);
    let accepted = c.accepted.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.config.stop_after == Some(accepted) {
        *shared.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        shared.done_signal.notify_all();
    }
    Decision::Accept
}

fn unix_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
