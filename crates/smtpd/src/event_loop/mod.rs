//! One event loop: a `mio::Poll`, its share of the listeners, and the
//! connections it serves.
//!
//! Every loop polls every listener, and whichever wakes first accepts until
//! the backlog is empty; each connection it accepts goes to the loop that
//! serves the fewest (itself on a tie), through that loop's inbox. So a
//! burst spreads over all loops however the wake-ups fall, and long-lived
//! connections weigh as they should. (A `SO_REUSEPORT` listener per loop
//! would spread by a hash of the client's address and port instead: blind to
//! what each loop already serves, and uneven in a small burst.)
//!
//! Nothing here blocks. Sockets are non-blocking; filters and the spool
//! answer through the loop's [`Inbox`] (a channel plus a `mio::Waker`).
//! Reads take everything the socket has, so a pipelined batch of commands is
//! parsed from one read and answered with one write.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};
use sluice_smtp::server::ServerSession;

use crate::{ListenerMode, Shared};

mod decide;
mod ending;
mod inbox;
mod proxied;

use ending::shutdown_reply;

use crate::conn::{Conn, Waiting as Wait};
use crate::limits::Client;
use crate::local::LocalUser;
use crate::socket::{Bound, Listening, Peer, Socket};
use inbox::{Arrival, Item};
pub(crate) use inbox::{Completion, CompletionKind, Inbox, Inlet};
use sluice_filter::ClientInfo;
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
            if last_sweep.elapsed() >= SWEEP_INTERVAL {
                last_sweep = Instant::now();
                self.sweep_timeouts(last_sweep);
            }
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            if !self.accepting {
                return;
            }
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => match (&self.shared.listener_proxy[index], peer) {
                    (Some(_), Peer::Tcp(addr)) => self.accept_proxied(stream, addr, index),
                    _ => self.dispatch(stream, peer, index, Vec::new(), None),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log, and let the next readiness retry.
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    /// Counts a new connection against the limits (refusing it here if it
    /// is over them) and gives it to the loop that serves the fewest.
    /// `early`: what the client sent after a PROXY header, and `server` the
    /// address it connected to, as the header says.
    fn dispatch(
        &mut self,
        mut stream: Socket,
        peer: Peer,
        listener: usize,
        early: Vec<u8>,
        server: Option<SocketAddr>,
    ) {
        let mode = self.shared.listener_modes[listener];
        let (ip, client) = match peer {
            Peer::Tcp(addr) => {
                let ip = crate::policy::canonical_ip(addr.ip());
                (ip, Client::Ip(ip))
            }
            Peer::Local { uid } => (IpAddr::V4(Ipv4Addr::LOCALHOST), Client::Uid(uid)),
        };
        if let Err(reply) = self.shared.limits.try_admit(client) {
            tracing::info!(client = %client, "connection refused: {reply}");
            sluice_metrics::connection(listener, sluice_metrics::ConnResult::Limited);
            // Best effort: the client may not even read it. A client of an
            // smtps listener waits for a handshake, not for text.
            if mode != ListenerMode::Smtps {
                let _ = stream.write(&reply.to_bytes());
            }
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let arrival = Arrival {
            stream,
            peer,
            ip,
            listener,
            early,
            server,
        };
        let loops = &self.shared.loops;
        let target = self.least_loaded();
        loops[target].connections.fetch_add(1, Ordering::SeqCst);
        if target != self.index {
            if !self.shared.shutting_down.load(Ordering::SeqCst) {
                loops[target].inbox.hand_over(arrival);
                return;
            }
            // That loop may already have found itself idle and exited;
            // this one has not, and says 421 itself.
            loops[target].connections.fetch_sub(1, Ordering::SeqCst);
            loops[self.index].connections.fetch_add(1, Ordering::SeqCst);
        }
        self.adopt(arrival);
    }

    /// The loop with the fewest connections; this one unless another has
    /// strictly fewer, so that an even split costs no hand-over. The counts
    /// may move while we read them: a slightly uneven split is harmless.
    fn least_loaded(&self) -> usize {
        let count = |i: usize| self.shared.loops[i].connections.load(Ordering::Relaxed);
        let mut best = (self.index, count(self.index));
        for i in 0..self.shared.loops.len() {
            let n = count(i);
            if n < best.1 {
                best = (i, n);
            }
        }
        best.0
    }

    /// Starts serving a connection already counted against the limits and
    /// in this loop's `connections`.
    fn adopt(&mut self, arrival: Arrival) {
        let Arrival {
            mut stream,
            peer,
            ip,
            listener,
            early,
            server,
        } = arrival;
        let mode = self.shared.listener_modes[listener];
        let local = match peer {
            Peer::Local { uid } => Some(LocalUser::new(uid)),
            Peer::Tcp(_) => None,
        };
        let client = local
            .as_ref()
            .map_or(Client::Ip(ip), |u| Client::Uid(u.uid));
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(FIRST_CONN + slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "cannot register connection");
            self.shared.limits.release(client);
            self.uncount();
            self.free.push(slot);
            return;
        }
        // Filters see a local user as a trusted loopback client with a
        // login: the kernel vouched for it.
        let peer_addr = match peer {
            Peer::Tcp(addr) => addr,
            Peer::Local { .. } => SocketAddr::new(ip, 0),
        };
        let info = ClientInfo {
            id: self.shared.next_connection_id(),
            peer: peer_addr,
            local: server.or(stream.local_addr()).unwrap_or(peer_addr),
            trusted: local.is_some() || self.shared.policy.is_trusted(ip),
            tls: None,
            login: local.as_ref().map(|u| u.login.clone()),
        };
        match &local {
            Some(user) => {
                tracing::debug!(conn = info.id, uid = user.uid, login = %user.login, mode = mode.name(), "connected")
            }
            None => {
                tracing::debug!(conn = info.id, client = %peer_addr, mode = mode.name(), "connected")
            }
        }
        let session = ServerSession::new(self.shared.session_config(mode));
        sluice_metrics::connection(listener, sluice_metrics::ConnResult::Accepted);
        sluice_metrics::connection_opened(listener);
        let mut conn = Conn::new(stream, listener, info, ip, local, session);
        conn.input = early;
        self.conns[slot] = Some(conn);
        let conn = self.conns[slot].as_mut().expect("just stored");
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            conn.session.close_with(shutdown_reply(&self.shared));
        } else if mode == ListenerMode::Smtps {
            // RFC 8314: the handshake first. The filters hear of the client
            // once it is done (a port scanner costs them nothing), and the
            // greeting follows their verdict, inside TLS.
            conn.session.tls_started();
            let tls = self.shared.tls.as_ref().map(|t| t.config());
            match tls.map(rustls::ServerConnection::new) {
                Some(Ok(tls)) => {
                    conn.start_tls(tls);
                }
                Some(Err(e)) => {
                    tracing::warn!(conn = conn.info.id, error = %e, "cannot start TLS");
                    return self.close(slot);
                }
                None => return self.close(slot),
            }
        } else {
            self.call_filter(slot, Stage::Connect);
        }
        self.service(slot);
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
            if !batch_pending && let Err(e) = conn.flush() {
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
                    conn.touch();
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
