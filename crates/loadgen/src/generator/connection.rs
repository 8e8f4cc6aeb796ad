//! One connection of the generator: a blocking socket driving the
//! project's sans-IO [`ClientSession`], and the outcome of each message.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::ServerName;

use sluice_smtp::Domain;
use sluice_smtp::client::{
    BodyFraming, ClientConfig, ClientEvent, ClientSession, Message, Outcome, RecipientResult,
    TlsUse,
};

use crate::message::MessageFactory;
use crate::stream::Stream;

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Accepted,
    Temporary,
    Permanent,
}

/// The server's answer to one message.
pub(super) struct Sent {
    pub(super) outcome: Verdict,
    pub(super) accept_latency: Duration,
    pub(super) done: Instant,
    pub(super) bytes: u64,
}

/// Every recipient delivered: accepted. Otherwise a 4xx anywhere makes it
/// worth retrying, and only all-5xx is permanent.
fn verdict(results: &[RecipientResult]) -> Verdict {
    if results
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Delivered(_)))
    {
        Verdict::Accepted
    } else if results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Transient(_)))
    {
        Verdict::Temporary
    } else {
        Verdict::Permanent
    }
}

pub(super) struct Connection {
    stream: Stream,
    /// STARTTLS with this configuration (certificates not verified: the
    /// benchmark measures the cost of encryption, not of trust).
    tls: Option<Arc<rustls::ClientConfig>>,
    peer: SocketAddr,
    pub(super) session: ClientSession,
    read_buf: Box<[u8]>,
    /// The body write, reused from message to message.
    wire: Vec<u8>,
}

impl Connection {
    /// Connects and waits for the greeting and the EHLO reply.
    pub(super) fn open(
        addr: SocketAddr,
        helo: &Domain,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let config = ClientConfig {
            tls: if tls.is_some() {
                TlsUse::Required
            } else {
                TlsUse::Off
            },
            ..ClientConfig::new(helo.clone())
        };
        let mut c = Connection {
            stream: Stream::Plain(stream),
            tls,
            peer: addr,
            session: ClientSession::new(config),
            read_buf: vec![0; 16 * 1024].into_boxed_slice(),
            wire: Vec::with_capacity(64 * 1024),
        };
        loop {
            match c.next_event()? {
                ClientEvent::Ready => return Ok(c),
                ClientEvent::Closed(reason) => {
                    return Err(io::Error::other(format!("session closed: {reason:?}")));
                }
                _ => {}
            }
        }
    }

    /// Sends message `seq` with `envelope` and waits for its outcome.
    pub(super) fn send(
        &mut self,
        envelope: &Message,
        factory: &MessageFactory,
        seq: u64,
    ) -> io::Result<Sent> {
        self.session
            .send_message(envelope.clone())
            .map_err(|e| io::Error::other(e.to_string()))?;
        // MAIL, RCPT… and DATA go out in one write (with PIPELINING).
        loop {
            match self.next_event()? {
                ClientEvent::SendBody(BodyFraming::DotStuffed) => break,
                ClientEvent::SendBody(BodyFraming::Raw { .. }) => {
                    return Err(io::Error::other("the session asked for BDAT"));
                }
                ClientEvent::StartTls => {
                    return Err(io::Error::other("STARTTLS in the middle of a message"));
                }
                ClientEvent::MessageDone(results) => {
                    return Ok(Sent {
                        outcome: verdict(&results),
                        accept_latency: Duration::ZERO,
                        done: Instant::now(),
                        bytes: 0,
                    });
                }
                ClientEvent::Closed(reason) => {
                    return Err(io::Error::other(format!("session closed: {reason:?}")));
                }
                // The previous message's; this one is already under way.
                ClientEvent::Ready => {}
            }
        }
        self.wire.clear();
        let pending = self.session.output().len();
        self.wire.extend_from_slice(self.session.output());
        self.session.consume_output(pending);
        let sent = SystemTime::now();
        factory.write_wire(seq, sent, &mut self.wire);
        let bytes = (self.wire.len() - pending) as u64;
        self.stream.write_all(&self.wire)?;
        let end_of_data = Instant::now();
        self.session
            .body_sent()
            .map_err(|e| io::Error::other(e.to_string()))?;
        loop {
            match self.next_event()? {
                ClientEvent::MessageDone(results) => {
                    let done = Instant::now();
                    return Ok(Sent {
                        outcome: verdict(&results),
                        accept_latency: done - end_of_data,
                        done,
                        bytes,
                    });
                }
                ClientEvent::Closed(reason) => {
                    return Err(io::Error::other(format!("session closed: {reason:?}")));
                }
                _ => {}
            }
        }
    }

    fn start_tls(&mut self) -> io::Result<()> {
        let config = self
            .tls
            .clone()
            .ok_or_else(|| io::Error::other("STARTTLS without a TLS configuration"))?;
        let name = ServerName::IpAddress(self.peer.ip().into());
        match self.stream.start_client(config, name) {
            Ok(()) => {
                self.session.tls_established();
                Ok(())
            }
            Err(e) => {
                self.session.tls_failed(&e.to_string());
                Err(e)
            }
        }
    }

    /// Says QUIT and waits (at most the I/O timeout) for the answer.
    pub(super) fn quit(mut self) {
        self.session.quit();
        while let Ok(event) = self.next_event() {
            if matches!(event, ClientEvent::Closed(_)) {
                break;
            }
        }
    }

    /// Writes what the session has to say, then reads until it has
    /// something to tell.
    fn next_event(&mut self) -> io::Result<ClientEvent> {
        loop {
            let out = self.session.output();
            if !out.is_empty() {
                let n = out.len();
                self.stream.write_all(out)?;
                self.session.consume_output(n);
            }
            if let Some(event) = self.session.poll_event() {
                if event == ClientEvent::StartTls {
                    self.start_tls()?;
                    continue;
                }
                return Ok(event);
            }
            if self.session.is_closed() {
                return Err(io::Error::other("session closed"));
            }
            match self.stream.read(&mut self.read_buf) {
                Ok(0) => self.session.connection_lost(),
                Ok(n) => self.session.receive(&self.read_buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_smtp::client::ReplyOrigin;
    use sluice_smtp::{EnhancedCode, Reply};

    fn result(outcome: Outcome) -> RecipientResult {
        RecipientResult {
            index: 0,
            outcome,
            origin: ReplyOrigin::Remote,
            stage: sluice_smtp::Stage::EndOfData,
        }
    }

    #[test]
    fn a_message_is_accepted_only_if_every_recipient_is() {
        let ok = || result(Outcome::Delivered(Reply::new(250, None, "Ok")));
        let temp = || {
            result(Outcome::Transient(Reply::new(
                451,
                Some(EnhancedCode::new(4, 3, 0)),
                "later",
            )))
        };
        let perm = || result(Outcome::Permanent(Reply::new(550, None, "no")));
        assert_eq!(verdict(&[ok(), ok()]), Verdict::Accepted);
        assert_eq!(verdict(&[ok(), temp()]), Verdict::Temporary);
        assert_eq!(verdict(&[perm(), temp()]), Verdict::Temporary);
        assert_eq!(verdict(&[perm(), ok()]), Verdict::Permanent);
    }
}
