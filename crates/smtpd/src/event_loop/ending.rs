//! How connections end: idle and TLS-handshake timeouts, and shutdown
//! (finish what is in flight within the grace period, `421` to the rest).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_smtp::server::Waiting;
use sluice_smtp::{EnhancedCode, Reply};

use super::EventLoop;
use crate::Shared;

impl EventLoop {
    pub(super) fn sweep_timeouts(&mut self, now: Instant) {
        self.sweep_proxy_headers(now);
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            if let Some(started) = conn.handshake_started
                && now.duration_since(started) >= self.shared.tls_handshake_timeout
            {
                // No reply can reach a client that is not done with its
                // handshake: it just goes.
                tracing::info!(conn = conn.info.id, client = %conn.ip, "TLS handshake timeout");
                sluice_metrics::tls_handshake(sluice_metrics::TlsSide::Server, false);
                self.close(slot);
                continue;
            }
            let limit = match conn.session.waiting() {
                Waiting::Command | Waiting::TlsHandshake => self.shared.command_timeout,
                Waiting::Data => self.shared.data_timeout,
                Waiting::Decision | Waiting::Closed => {
                    // A closed session whose client does not read the last
                    // reply must not hold its slot forever either.
                    if conn.output_empty()
                        || now.duration_since(conn.last_activity) < self.shared.command_timeout
                    {
                        continue;
                    }
                    self.close(slot);
                    continue;
                }
            };
            if now.duration_since(conn.last_activity) >= limit {
                tracing::info!(conn = conn.info.id, client = %conn.ip, "timeout");
                let text = format!("{} Error: timeout exceeded", self.shared.session.hostname);
                conn.session
                    .close_with(Reply::new(421, Some(EnhancedCode::new(4, 4, 2)), text));
                self.service(slot);
            }
        }
    }

    /// Returns true when the loop may exit.
    pub(super) fn begin_or_continue_shutdown(&mut self) -> bool {
        let now = Instant::now();
        let deadline = *self
            .shutdown_deadline
            .get_or_insert(now + self.shared.shutdown_grace);
        if self.accepting {
            self.accepting = false;
            // Closing (not just deregistering) the listeners makes new clients
            // get a refused connection, so they try the next MX at once
            // instead of waiting for a greeting that never comes.
            for mut listener in self.listeners.drain(..) {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            // Not yet clients: nothing to finish for them.
            self.pending.clear();
        }
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            // Connections between transactions go now; those in the middle
            // of one may finish it until the grace period ends.
            let idle = conn.waiting.is_none()
                && conn.session.waiting() == Waiting::Command
                && conn.session.transaction().is_none();
            if (idle || now >= deadline) && !conn.session.is_closed() {
                conn.session.close_with(shutdown_reply(&self.shared));
                self.service(slot);
            } else if now >= deadline + Duration::from_secs(1) {
                self.close(slot);
            }
        }
        // Not just our own connections: also any handed to us and still in
        // the inbox (see `LoopShare::connections`).
        self.shared.loops[self.index]
            .connections
            .load(Ordering::SeqCst)
            == 0
    }
}

pub(super) fn shutdown_reply(shared: &Shared) -> Reply {
    let text = format!(
        "{} Service shutting down, try again later",
        shared.session.hostname
    );
    Reply::new(421, Some(EnhancedCode::new(4, 3, 2)), text)
}
