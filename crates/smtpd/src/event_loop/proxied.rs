//! Connections on a PROXY protocol listener before their header arrives.
//!
//! They are not clients yet: no greeting, no filter, no slot in the
//! connection limits (those count the real client, whom only the header
//! names). The loop that accepted one keeps it here until the header is
//! complete, then it goes through [`EventLoop::dispatch`] like any other
//! connection, with the header's addresses and whatever SMTP bytes came in
//! the same read. A header that is malformed, too long or later than the
//! listener's timeout closes the connection without a word: the peer is a
//! proxy that got something wrong, not an SMTP client.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::{Interest, Token};
use sluice_metrics::ConnResult;
use sluice_smtp::{EnhancedCode, Reply};

use super::{EventLoop, FIRST_PENDING};
use crate::proxy::{self, MAX_HEADER, Parsed, UntrustedPeer};
use crate::socket::{Peer, Socket};

#[derive(Debug)]
pub(super) struct Pending {
    stream: Socket,
    /// The proxy's own address.
    proxy: SocketAddr,
    listener: usize,
    buf: Vec<u8>,
    since: Instant,
}

impl EventLoop {
    /// A connection accepted on a PROXY listener: a trusted proxy's waits
    /// for its header; anyone else's is refused or served directly, as the
    /// listener says.
    pub(super) fn accept_proxied(&mut self, mut stream: Socket, from: SocketAddr, listener: usize) {
        let Some(setup) = &self.shared.listener_proxy[listener] else {
            return self.dispatch(stream, Peer::Tcp(from), listener, Vec::new(), None);
        };
        if !setup.trusts(from.ip()) {
            match setup.untrusted {
                UntrustedPeer::Direct => {
                    return self.dispatch(stream, Peer::Tcp(from), listener, Vec::new(), None);
                }
                UntrustedPeer::Refuse => {
                    tracing::info!(client = %from, "connection refused: not a trusted proxy");
                    sluice_metrics::connection(listener, ConnResult::ProxyRefused);
                    let reply = Reply::new(
                        554,
                        Some(EnhancedCode::new(5, 7, 1)),
                        format!(
                            "{} This port takes connections through a trusted proxy only",
                            self.shared.session.hostname
                        ),
                    );
                    let _ = stream.write(&reply.to_bytes());
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        let slot = match self.pending.iter().position(Option::is_none) {
            Some(slot) => slot,
            None if self.pending.len() < super::FIRST_CONN - FIRST_PENDING => {
                self.pending.push(None);
                self.pending.len() - 1
            }
            None => {
                tracing::warn!(proxy = %from, "too many connections waiting for a PROXY header");
                return;
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(FIRST_PENDING + slot),
            Interest::READABLE,
        ) {
            tracing::warn!(error = %e, "cannot register connection");
            return;
        }
        self.pending[slot] = Some(Pending {
            stream,
            proxy: from,
            listener,
            buf: Vec::new(),
            since: Instant::now(),
        });
        // The header often comes with the connection: read it now rather
        // than wait for an edge that may already have passed.
        self.read_proxy_header(slot);
    }

    pub(super) fn read_proxy_header(&mut self, slot: usize) {
        let Some(pending) = self.pending.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let failed = loop {
            match pending.stream.read(&mut self.read_buf) {
                Ok(0) => break Some("closed before its PROXY header".to_owned()),
                Ok(n) => pending.buf.extend_from_slice(&self.read_buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(format!("read failed: {e}")),
            }
            // A header and a whole mailful of pipelined SMTP may come in one
            // read; past the cap without a header, there will be none.
            if pending.buf.len() >= MAX_HEADER {
                break None;
            }
        };
        // `Parsed` owns what it found: `pending` can go.
        match proxy::parse(&pending.buf) {
            Parsed::Incomplete => {
                if let Some(why) = failed {
                    self.fail_proxy(slot, &why);
                }
            }
            Parsed::Invalid(why) => self.fail_proxy(slot, &why),
            Parsed::Header {
                consumed,
                client,
                server,
            } => {
                let Some(mut pending) = self.pending[slot].take() else {
                    return;
                };
                let _ = self.poll.registry().deregister(&mut pending.stream);
                let early = pending.buf.split_off(consumed);
                // LOCAL or UNKNOWN: the proxy speaks for itself.
                let peer = Peer::Tcp(client.unwrap_or(pending.proxy));
                tracing::debug!(proxy = %pending.proxy, client = ?client, "PROXY header");
                self.dispatch(pending.stream, peer, pending.listener, early, server);
            }
        }
    }

    fn fail_proxy(&mut self, slot: usize, why: &str) {
        if let Some(mut pending) = self.pending.get_mut(slot).and_then(Option::take) {
            tracing::info!(proxy = %pending.proxy, "connection closed: {why}");
            sluice_metrics::connection(pending.listener, ConnResult::ProxyFailed);
            let _ = self.poll.registry().deregister(&mut pending.stream);
            let _ = pending.stream.shutdown(Shutdown::Both);
        }
    }

    pub(super) fn sweep_proxy_headers(&mut self, now: Instant) {
        for slot in 0..self.pending.len() {
            let late = self.pending[slot].as_ref().is_some_and(|p| {
                let timeout = self.shared.listener_proxy[p.listener]
                    .as_ref()
                    .map(|setup| setup.timeout);
                timeout.is_some_and(|t| now.duration_since(p.since) >= t)
            });
            if late {
                self.fail_proxy(slot, "no PROXY header in time");
            }
        }
    }
}
