//! One event loop: a `mio::Poll`, its share of the listeners, and the
//! connections it serves. How connections arrive and are spread over the
//! loops is in `arrival`; a session's decisions in `decide`.
//!
//! Nothing here blocks. Sockets are non-blocking; filters and the spool
//! answer through the loop's [`Inbox`] (a channel plus a `mio::Waker`).
//! Reads take everything the socket has, so a pipelined batch of commands is
//! parsed from one read and answered with one write.

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};

use crate::{ListenerMode, Shared};

mod arrival;
mod auth;
mod decide;
mod ending;
mod inbox;
mod msgauth;
mod proxied;

use crate::conn::{Conn, Waiting as Wait};
use crate::socket::{Bound, Listening};
use inbox::Item;
pub(crate) use inbox::{Completion, CompletionKind, Inbox, Inlet};
use sluice_smtp::Stage;

const WAKER: Token = Token(0);
const FIRST_LISTENER: usize = 1;
/// Connections on a PROXY listener waiting for their header.
const FIRST_PENDING: usize = 1 << 15;
const FIRST_CONN: usize = 1 << 16;

/// Read into this much at a time; shared by all connections of the loop, so
/// an idle connection costs no buffer at all.
const READ_CHUNK: usize = 64 * 1024;
/// Stop reading from a client whose input we cannot process yet (waiting for
/// a decision) once this much is buffered: TCP flow control then slows it.
const MAX_BUFFERED_INPUT: usize = 1 << 20;
/// Stop processing a client's commands while this much of our output is
/// unsent: a client that does not read its replies gets no more of them.
const MAX_BUFFERED_OUTPUT: usize = 256 * 1024;
/// How often idle connections are checked against their timeouts.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) struct EventLoop {
    poll: Poll,
    listeners: Vec<Listening>,
    accepting: bool,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// This loop's place in `shared.loops`.
    index: usize,
    rx: Receiver<Item>,
    inbox: Arc<Inbox>,
    read_buf: Vec<u8>,
    shared: Arc<Shared>,
    next_serial: u64,
    shutdown_deadline: Option<Instant>,
    /// Delayed replies: when, and the connection (slot, serial) they are for.
    timers: Vec<(Instant, usize, u64)>,
    /// Connections on PROXY listeners before their header, by slot.
    pending: Vec<Option<proxied::Pending>>,
    /// The time, read once a turn of the loop (after the wait for
    /// events): what connections' idle timers count from. Their limits are
    /// seconds, a turn is at most milliseconds, and a clock read per read
    /// and per write was a measurable share of a loop's time.
    now: Instant,
}

impl EventLoop {
    pub(crate) fn new(
        shared: Arc<Shared>,
        index: usize,
        inlet: Inlet,
        listeners: Vec<Bound>,
    ) -> io::Result<Self> {
        let Inlet { poll, rx } = inlet;
        let inbox = shared.loops[index].inbox.clone();
        let mut mio_listeners = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            let mut listener = listener.into_listening()?;
            poll.registry().register(
                &mut listener,
                Token(FIRST_LISTENER + i),
                Interest::READABLE,
            )?;
            mio_listeners.push(listener);
        }
        let event_loop = EventLoop {
            poll,
            listeners: mio_listeners,
            accepting: true,
            conns: Vec::new(),
            free: Vec::new(),
            index,
            rx,
            inbox,
            read_buf: vec![0; READ_CHUNK],
            shared,
            next_serial: 0,
            shutdown_deadline: None,
            timers: Vec::new(),
            pending: Vec::new(),
            now: Instant::now(),
        };
        Ok(event_loop)
    }

    /// Runs until shutdown has closed every connection.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            // The next delayed reply, if it comes before the next sweep.
            let wait = self
                .timers
                .iter()
                .map(|&(at, _, _)| at.saturating_duration_since(Instant::now()))
                .min()
                .map_or(SWEEP_INTERVAL, |d| d.min(SWEEP_INTERVAL));
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "event loop poll failed");
                return;
            }
            self.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => self.drain_inbox(),
                    Token(t) if t < FIRST_PENDING => self.accept(t - FIRST_LISTENER),
                    Token(t) if t < FIRST_CONN => self.read_proxy_header(t - FIRST_PENDING),
                    Token(t) => {
                        let slot = t - FIRST_CONN;
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        if let (true, Some(conn)) =
                            (readable, self.conns.get_mut(slot).and_then(Option::as_mut))
                        {
                            conn.maybe_readable = true;
                        }
                        self.service(slot);
                    }
                }
            }
            // Completions can arrive without their own wake-up (armed was
            // already set); draining here as well costs one try_recv.
            self.drain_inbox();
            if !self.timers.is_empty() {
                self.fire_timers(Instant::now());
            }
            if self.shared.shutting_down.load(Ordering::SeqCst) && self.begin_or_continue_shutdown()
            {
                return;
            }
            if self.now.saturating_duration_since(last_sweep) >= SWEEP_INTERVAL {
                last_sweep = self.now;
                self.sweep_timeouts(last_sweep);
            }
        }
    }

    /// After STARTTLS's `220` is out: TLS from here on. What the client sent
    /// after STARTTLS in clear is thrown away, never read as commands.
    fn start_tls(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let tls = self.shared.tls.as_ref().map(|t| t.config());
        match tls.map(rustls::ServerConnection::new) {
            Some(Ok(tls)) => {
                let discarded = conn.start_tls(tls);
                if discarded > 0 {
                    // RFC 3207 §5, CVE-2011-0411: pipelined plaintext after
                    // STARTTLS would otherwise run as if sent inside TLS.
                    tracing::warn!(
                        conn = conn.info.id,
                        client = %conn.ip,
                        bytes = discarded,
                        "STARTTLS injection: plaintext after STARTTLS discarded"
                    );
                }
            }
            Some(Err(e)) => {
                tracing::warn!(conn = conn.info.id, error = %e, "cannot start TLS");
                self.close(slot);
            }
            None => self.close(slot),
        }
    }

    /// The handshake is done: the session starts over inside TLS (after
    /// STARTTLS), or the filters hear of the client (implicit TLS).
    fn tls_established(&mut self, slot: usize) {
        let conn = conn_mut(&mut self.conns, slot);
        sluice_metrics::tls_handshake(sluice_metrics::TlsSide::Server, true);
        if let Some(tls) = &conn.info.tls {
            tracing::info!(
                conn = conn.info.id,
                client = %conn.ip,
                version = %tls.version,
                cipher = %tls.cipher,
                sni = tls.sni.as_deref().unwrap_or(""),
                "TLS established"
            );
        }
        if self.shared.listener_modes[conn.listener] == ListenerMode::Smtps {
            self.call_filter(slot, Stage::Connect);
        } else {
            conn.session.tls_started();
        }
    }

    fn drain_inbox(&mut self) {
        self.inbox.armed.store(false, Ordering::Release);
        while let Ok(item) = self.rx.try_recv() {
            match item {
                Item::Completion(completion) => self.complete(completion),
                Item::Arrival(arrival) => self.adopt(arrival),
            }
        }
    }

    fn uncount(&self) {
        self.shared.loops[self.index]
            .connections
            .fetch_sub(1, Ordering::SeqCst);
    }

    fn complete(&mut self, completion: Completion) {
        let Some(conn) = self.conns.get_mut(completion.slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.serial != completion.serial {
            // The connection that asked is gone and its slot reused.
            return;
        }
        match (conn.waiting.take(), completion.kind) {
            (Some(Wait::Filter(stage)), CompletionKind::Filter(verdict)) => {
                self.filter_answered(completion.slot, stage, verdict);
            }
            (Some(Wait::Spool), CompletionKind::Spool(result)) => {
                self.spool_answered(completion.slot, result);
            }
            (Some(Wait::Auth), CompletionKind::Auth(outcome)) => {
                self.auth_answered(completion.slot, outcome);
            }
            (Some(Wait::MsgAuth), CompletionKind::MsgAuth(found)) => {
                self.msgauth_answered(completion.slot, *found);
            }
            (waiting, _) => {
                // Not what this connection waits for (a late answer after a
                // timeout or a filter answering twice): ignore it.
                conn.waiting = waiting;
            }
        }
        self.service(completion.slot);
    }

    /// Reads, runs the session, writes, and closes, as far as each can go now.
    fn service(&mut self, slot: usize) {
        loop {
            // Leftover input first: it arrived before anything new.
            self.run_session(slot, &[]);
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            // A pipelined batch (RFC 2920) is answered in one write: while
            // a command waits for its decision and more of the batch is
            // already here, the replies so far wait for the rest. The
            // client reads them all before it sends more anyway.
            let batch_pending = conn.waiting.is_some() && !conn.input.is_empty();
            if !batch_pending && let Err(e) = conn.flush(self.now) {
                tracing::debug!(conn = conn.info.id, error = %e, "write failed");
                return self.close(slot);
            }
            if conn.session.wants_tls() && conn.output_empty() && !conn.transport.is_tls() {
                self.start_tls(slot);
                continue;
            }
            if conn.session.is_closed() && conn.output_empty() {
                return self.close(slot);
            }
            if conn.peer_closed {
                // Nothing more will come. A message already handed to the
                // spool is still seen through (its completion comes back here).
                if conn.waiting.is_none() {
                    self.close(slot);
                }
                return;
            }
            if !conn.maybe_readable || conn.read_paused(MAX_BUFFERED_INPUT, MAX_BUFFERED_OUTPUT) {
                return;
            }
            let read = conn.read(&mut self.read_buf);
            let finished = conn.handshake_finished();
            match read {
                Ok(0) => {
                    conn.maybe_readable = false;
                    conn.peer_closed = true;
                }
                Ok(n) => {
                    conn.touch(self.now);
                    // A short read emptied the socket: with edge-triggered
                    // readiness, anything that arrives later brings a new
                    // event, so the read that would only say "would block"
                    // is saved (a system call per batch). Not under TLS,
                    // where `n` counts plaintext, not what the socket held.
                    if n < self.read_buf.len() && !conn.transport.is_tls() {
                        conn.maybe_readable = false;
                    }
                    if conn.input.is_empty() && !finished {
                        // Nothing older waits: the session parses the bytes
                        // where they were read, and only what it cannot
                        // take yet is copied to the connection (a message
                        // body is copied once, by the DATA decoder).
                        let buf = std::mem::take(&mut self.read_buf);
                        let taken = self.run_session(slot, &buf[..n]);
                        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
                            conn.input.extend_from_slice(&buf[taken..n]);
                        }
                        self.read_buf = buf;
                        continue;
                    }
                    conn.input.extend_from_slice(&self.read_buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.maybe_readable = false;
                    if finished {
                        self.tls_established(slot);
                        continue;
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::info!(conn = conn.info.id, client = %conn.ip, error = %e, "TLS failed");
                    if conn.info.tls.is_none() {
                        sluice_metrics::tls_handshake(sluice_metrics::TlsSide::Server, false);
                    }
                    return self.close(slot);
                }
                Err(e) => {
                    tracing::debug!(conn = conn.info.id, error = %e, "read failed");
                    return self.close(slot);
                }
            }
            if finished {
                self.tls_established(slot);
            }
        }
    }

    /// Feeds input to the session and answers its events: what the
    /// connection has buffered, or else `fresh`, bytes just read that nothing
    /// buffered precedes. Returns how many of `fresh` the session took; the
    /// caller keeps the rest (a partial line, a batch behind a decision).
    fn run_session(&mut self, slot: usize, fresh: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                // Closed: whatever else it sent goes with it.
                return fresh.len();
            };
            if conn.waiting.is_some() || conn.output_len() > MAX_BUFFERED_OUTPUT {
                break;
            }
            if conn.input.is_empty() {
                taken += conn.session.receive(&fresh[taken..]);
            } else {
                let used = conn.session.receive(&conn.input);
                if used > 0 {
                    conn.input.drain(..used);
                }
            }
            conn.spill_collected(&self.shared.spool);
            if conn.session.event().is_none() {
                break;
            }
            self.on_event(slot);
        }
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            conn.handle_notices(&*self.shared.filter);
        }
        taken
    }

    fn close(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        conn.transport.close(&mut conn.stream);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(Shutdown::Both);
        self.shared.filter.close(&conn.info);
        self.shared.limits.release(conn.client());
        sluice_metrics::connection_closed(conn.listener);
        tracing::debug!(conn = conn.info.id, "disconnected");
        self.free.push(slot);
        self.uncount();
    }
}

fn conn_mut(conns: &mut [Option<Conn>], slot: usize) -> &mut Conn {
    conns[slot]
        .as_mut()
        .expect("connection exists while it has work")
}
