//! Connections arriving: accepted, counted against the limits, and spread
//! over the loops.
//!
//! Every loop polls every listener, and whichever wakes first accepts until
//! the backlog is empty; each connection it accepts goes to the loop that
//! serves the fewest (itself on a tie), through that loop's inbox. So a
//! burst spreads over all loops however the wake-ups fall, and long-lived
//! connections weigh as they should. (A `SO_REUSEPORT` listener per loop
//! would spread by a hash of the client's address and port instead: blind to
//! what each loop already serves, and uneven in a small burst.)

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::sync::atomic::Ordering;

use mio::{Interest, Token};
use sluice_filter::ClientInfo;
use sluice_smtp::Stage;
use sluice_smtp::server::ServerSession;

use super::ending::shutdown_reply;
use super::inbox::Arrival;
use super::{EventLoop, FIRST_CONN};
use crate::ListenerMode;
use crate::conn::Conn;
use crate::limits::Client;
use crate::local::LocalUser;
use crate::socket::{Peer, Socket};

impl EventLoop {
    pub(super) fn accept(&mut self, index: usize) {
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
    pub(super) fn dispatch(
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
    pub(super) fn adopt(&mut self, arrival: Arrival) {
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
}
