//! One client connection: a blocking socket driving a sans-IO
//! [`ClientSession`].

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use sluice_smtp::client::{
    BodyFraming, ClientConfig, ClientEvent, ClientSession, CloseReason, Message, Outcome,
    RecipientResult, ReplyOrigin, SendErrorKind, TimeoutClass, dot_stuffed,
};
use sluice_smtp::{EnhancedCode, Reply, Stage};

use super::Timeouts;
use super::stream::Stream;

/// Slices per `writev`: Linux's `IOV_MAX`.
const IOV_MAX: usize = 1024;

/// How long a polite close waits for the reply to QUIT, at most (a shorter
/// command timeout wins). RFC 5321 suggests 5 minutes, but nothing depends
/// on that reply any more, and the caller is a delivery thread with other
/// mail to send.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// How to run the handshake when the session asks for it.
#[derive(Debug, Clone)]
pub(super) struct TlsSetup {
    pub config: Arc<rustls::ClientConfig>,
    /// SNI, and the name a verified certificate must have: the MX host.
    pub name: ServerName<'static>,
    /// The certificate was verified in the handshake (else it was only
    /// looked at afterwards, for the log).
    pub verify: bool,
    /// For telling, after an unverified handshake, whether it would have
    /// passed.
    pub trust: sluice_tls::ClientTls,
}

/// What the handshake came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsDone {
    pub version: String,
    pub cipher: String,
    /// The certificate chains to a trusted root and names the host.
    pub trusted: bool,
}

/// What one message on a connection came to.
#[derive(Debug)]
pub(super) struct Sent {
    /// One per recipient of the envelope, in its order.
    pub results: Vec<RecipientResult>,
    /// Set when the session ended during the message.
    pub closed: Option<CloseReason>,
}

/// What a run of messages on a connection came to.
#[derive(Debug)]
pub(super) struct RunSent {
    /// Per message, in the run's order: one result per recipient.
    pub results: Vec<Vec<RecipientResult>>,
    /// Set when the session ended during the run.
    pub closed: Option<CloseReason>,
}

/// The results of a message a closed session would not take.
fn unusable(message: &Message) -> Vec<RecipientResult> {
    let reply = Reply::new(
        451,
        Some(EnhancedCode::new(4, 4, 2)),
        "Connection no longer usable",
    );
    (0..message.envelope.recipients.len())
        .map(|index| RecipientResult {
            index,
            outcome: Outcome::Transient(reply.clone()),
            stage: Stage::Connect,
            origin: ReplyOrigin::Local,
        })
        .collect()
}

/// An established connection and its session.
#[derive(Debug)]
pub(super) struct Connection {
    stream: Stream,
    session: ClientSession,
    /// `host[ip]:port` or `unix:/path`, for reply texts and logs.
    label: String,
    messages: usize,
    timeouts: Timeouts,
    /// What the socket's receive timeout is set to now.
    read_timeout: Option<Duration>,
    /// How many times the receive timeout was set, to check that it is set
    /// only when it changes.
    #[cfg(test)]
    read_timeout_sets: usize,
    buf: Vec<u8>,
    tls: Option<TlsSetup>,
    /// Why the handshake failed, if it did.
    tls_error: Option<String>,
}

impl Connection {
    /// Connects; the session then waits for the greeting, which the first
    /// message's dialog reads.
    pub(super) fn open(
        endpoint: &Endpoint,
        label: String,
        timeouts: Timeouts,
        config: ClientConfig,
        tls: Option<TlsSetup>,
    ) -> io::Result<Connection> {
        let stream = match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect_timeout(addr, timeouts.connect)?;
                // Commands and the body go out in whole writes already;
                // Nagle would only hold back the last piece of each.
                stream.set_nodelay(true)?;
                Stream::Tcp(stream)
            }
            Endpoint::Unix(path) => Stream::Unix(sluice_sys::unix_socket::connect(path)?),
        };
        // Every write must make progress within the data-block timeout
        // (RFC 5321 §4.5.3.2.5), commands included. Set once: it never
        // changes for the life of the connection.
        stream.set_write_timeout(Some(timeouts.data_block))?;
        Ok(Connection {
            stream,
            session: ClientSession::new(config),
            label,
            messages: 0,
            timeouts,
            read_timeout: None,
            #[cfg(test)]
            read_timeout_sets: 0,
            buf: vec![0; 16 * 1024],
            tls,
            tls_error: None,
        })
    }

    /// Whether the session runs inside TLS now.
    pub(super) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Why the STARTTLS handshake failed, when it did.
    pub(super) fn tls_error(&self) -> Option<&str> {
        self.tls_error.as_deref()
    }

    /// The handshake the session asked for; the session hears how it went.
    fn start_tls(&mut self) {
        let Some(setup) = self.tls.clone() else {
            self.session.tls_failed("no TLS configuration");
            return;
        };
        // The handshake waits as long as a command does.
        if self.read_timeout != Some(self.timeouts.command) {
            let _ = self.stream.set_read_timeout(Some(self.timeouts.command));
            self.read_timeout = Some(self.timeouts.command);
        }
        match self.stream.upgrade(setup.config, setup.name.clone()) {
            Ok(()) => {
                let conn = self.stream.tls().expect("just upgraded");
                let trusted = setup.verify || setup.trust.is_trusted(conn, &setup.name).is_ok();
                let done = TlsDone {
                    version: conn
                        .protocol_version()
                        .map(sluice_tls::version_name)
                        .unwrap_or_default(),
                    cipher: conn
                        .negotiated_cipher_suite()
                        .map(sluice_tls::cipher_name)
                        .unwrap_or_default(),
                    trusted,
                };
                tracing::info!(
                    to = %self.label,
                    version = %done.version,
                    cipher = %done.cipher,
                    "{} TLS connection established",
                    match (setup.verify, done.trusted) {
                        (true, _) => "Verified",
                        (false, true) => "Trusted",
                        (false, false) => "Untrusted",
                    }
                );
                sluice_metrics::tls_handshake(sluice_metrics::TlsSide::Client, true);
                self.session.tls_established();
            }
            Err(why) => {
                tracing::info!(to = %self.label, error = %why, "TLS handshake failed");
                sluice_metrics::tls_handshake(sluice_metrics::TlsSide::Client, false);
                self.session.tls_failed(&why);
                self.tls_error = Some(why);
            }
        }
    }

    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// Messages given to this connection so far.
    pub(super) fn messages(&self) -> usize {
        self.messages
    }

    /// What the server offered in its EHLO reply.
    pub(super) fn capabilities(&self) -> &sluice_smtp::client::Capabilities {
        self.session.capabilities()
    }

    /// Whether this connection sends BDAT where the server offers CHUNKING.
    pub(super) fn chunks_when_offered(&self) -> bool {
        self.session.bdat_policy() == sluice_smtp::client::BdatPolicy::WhenOffered
    }

    /// Whether another message can go on this connection now.
    pub(super) fn is_ready(&self) -> bool {
        self.session.is_ready()
    }

    /// Sends one message and waits for its results, blocking. The body is
    /// written straight from `body` (no copy: vectored writes of the
    /// dot-stuffed slices, or the octets as they are for BDAT).
    pub(super) fn send(&mut self, message: Message, body: &[u8]) -> Sent {
        let RunSent {
            mut results,
            closed,
        } = self.send_run(vec![message], &[body]);
        Sent {
            results: results.pop().unwrap_or_default(),
            closed,
        }
    }

    /// Sends several messages, `bodies[i]` the body of `messages[i]`, and
    /// waits for all their results, blocking. Where the server allows it
    /// ([`ClientSession::send_message`]: PIPELINING and CHUNKING, small
    /// bodies) each message goes out behind the one before without waiting
    /// for its replies, all of them in one `writev`, and their replies come
    /// back in one or two reads: one round trip for the run. Otherwise they
    /// go one after the other, as [`Connection::send`] would send them.
    pub(super) fn send_run(&mut self, messages: Vec<Message>, bodies: &[&[u8]]) -> RunSent {
        let n = messages.len();
        let mut waiting: VecDeque<(usize, Message)> = messages.into_iter().enumerate().collect();
        // Given to the session and not finished, in order: the session
        // finishes messages in the order it was given them.
        let mut given: VecDeque<usize> = VecDeque::new();
        let mut results: Vec<Option<Vec<RecipientResult>>> = vec![None; n];
        let mut closed = None;
        // Bodies to write, each behind the commands before it: where in the
        // session's output its commands end, its framing, its message.
        let mut plan: Vec<(usize, BodyFraming, usize)> = Vec::new();
        loop {
            while let Some(event) = self.session.poll_event() {
                match event {
                    ClientEvent::Ready => {}
                    ClientEvent::SendBody(framing) => {
                        // Always the body of the message given last: a
                        // message follows another only once that one's
                        // body is out.
                        if let Some(&i) = given.back() {
                            plan.push((self.session.output().len(), framing, i));
                        }
                        // Only NotExpected can come back, and SendBody was
                        // just asked for. The session writes nothing of its
                        // own until the body is written, so the plan's
                        // places in its output stay true.
                        let _ = self.session.body_sent();
                    }
                    ClientEvent::MessageDone(done) => {
                        if let Some(i) = given.pop_front() {
                            results[i] = Some(done);
                        }
                    }
                    ClientEvent::StartTls => self.start_tls(),
                    ClientEvent::Closed(reason) => closed = Some(reason),
                }
            }
            if closed.is_some() {
                // A QUIT, say, or bodies a protocol error cut short; the
                // connection may already be gone.
                let _ = self.write_planned(&mut plan, bodies);
                break;
            }
            if let Some((i, message)) = waiting.pop_front() {
                match self.session.send_message(message) {
                    Ok(()) => {
                        self.messages += 1;
                        given.push_back(i);
                    }
                    Err(refused) if refused.kind == SendErrorKind::Busy => {
                        waiting.push_front((i, *refused.message));
                    }
                    // Callers hand over ready sessions, and a session that
                    // closed since said so in an event: this is a connection
                    // gone without a word, and nothing more goes on it.
                    Err(refused) => {
                        results[i] = Some(unusable(&refused.message));
                        if refused.kind == SendErrorKind::Closed {
                            closed = Some(CloseReason::ConnectionLost);
                        }
                    }
                }
                if given.back() == Some(&i) || closed.is_some() {
                    // Its SendBody (or its result) is among the events now,
                    // or the run is over.
                    continue;
                }
            }
            if waiting.is_empty() && given.is_empty() && self.session.is_ready() {
                break;
            }
            // The commands and bodies, or what an event left to say (EHLO
            // after the handshake): said before waiting for an answer.
            if !self.session.output().is_empty() || !plan.is_empty() {
                if self.write_planned(&mut plan, bodies).is_err() {
                    self.session.connection_lost();
                }
                continue;
            }
            self.read();
        }
        // Those the session never took get the connection's end; it gives
        // every message it took a MessageDone before it closes.
        for (i, message) in waiting {
            results[i] = Some(unusable(&message));
        }
        RunSent {
            results: results.into_iter().map(Option::unwrap_or_default).collect(),
            closed,
        }
    }

    /// Whether an idle connection is still open and quiet. A server that
    /// closed it, or said anything unasked (a 421 on its idle timeout), makes
    /// it useless for the next message.
    pub(super) fn is_alive(&mut self) -> bool {
        self.session.is_ready() && self.stream.is_quiet()
    }

    /// QUIT, a short wait for its reply, and close.
    pub(super) fn quit(mut self) {
        self.session.quit();
        let deadline = Instant::now() + QUIT_WAIT.min(self.timeouts.command);
        while self.flush().is_ok() && !self.session.is_closed() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.session.receive(&self.buf[..n]),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while !self.session.output().is_empty() {
            let n = self.stream.write(self.session.output())?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.session.consume_output(n);
        }
        Ok(())
    }

    /// Everything the session has to say, with the planned bodies in their
    /// places, in as few `writev` calls as the slices allow; the plan is
    /// then empty.
    fn write_planned(
        &mut self,
        plan: &mut Vec<(usize, BodyFraming, usize)>,
        bodies: &[&[u8]],
    ) -> io::Result<()> {
        let Connection {
            stream, session, ..
        } = self;
        let output = session.output();
        let total = output.len();
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(2 * plan.len() + 1);
        let mut at = 0;
        for &(mark, framing, i) in plan.iter() {
            pieces.push(&output[at..mark]);
            let body = bodies.get(i).copied().unwrap_or_default();
            match framing {
                BodyFraming::Raw { .. } => pieces.push(body),
                BodyFraming::DotStuffed => pieces.extend(dot_stuffed(body)),
            }
            at = mark;
        }
        pieces.push(&output[at..]);
        pieces.retain(|p| !p.is_empty());
        plan.clear();
        let written = if stream.is_tls() {
            // Records of up to 16 KiB rather than one per slice: encryption
            // copies the body anyway, so gather it first.
            let mut record = Vec::with_capacity(16 * 1024);
            let mut result = Ok(());
            for piece in pieces {
                if record.len() + piece.len() > 16 * 1024 && !record.is_empty() {
                    result = stream.write_all(&record);
                    if result.is_err() {
                        break;
                    }
                    record.clear();
                }
                record.extend_from_slice(piece);
            }
            if result.is_ok() && !record.is_empty() {
                result = stream.write_all(&record);
            }
            result
        } else {
            let mut batch: Vec<IoSlice<'_>> = Vec::new();
            let mut result = Ok(());
            for chunk in pieces.chunks(IOV_MAX) {
                batch.clear();
                batch.extend(chunk.iter().map(|p| IoSlice::new(p)));
                result = write_all_vectored(stream, &mut batch);
                if result.is_err() {
                    break;
                }
            }
            result
        };
        session.consume_output(total);
        written
    }

    /// Waits for the server, for as long as the timeout of what is awaited
    /// allows, and hands the session what arrives.
    fn read(&mut self) {
        let timeout = self
            .timeouts
            .of(self.session.timeout_class().unwrap_or(TimeoutClass::Mail));
        // Each setsockopt is a system call, and the classes' waits differ
        // (DATA's 2 minutes, the end of data's 10, the commands' 5), which
        // cost two per message when the socket followed them. So the socket
        // keeps the shortest wait of all, set once; a reply slower than that
        // (a slow peer, rare) is waited for again, for the rest of its
        // class's time.
        let started = Instant::now();
        let mut wait = self.timeouts.shortest_wait().min(timeout);
        loop {
            if self.read_timeout != Some(wait) {
                if self.stream.set_read_timeout(Some(wait)).is_err() {
                    self.session.connection_lost();
                    return;
                }
                self.read_timeout = Some(wait);
                #[cfg(test)]
                {
                    self.read_timeout_sets += 1;
                }
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) => self.session.connection_lost(),
                Ok(n) => self.session.receive(&self.buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let left = timeout.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        self.session.timed_out();
                    } else {
                        wait = left;
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => self.session.connection_lost(),
            }
            return;
        }
    }
}

fn write_all_vectored(stream: &mut Stream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    use sluice_smtp::Domain;

    use super::*;
    use sluice_smtp::{ForwardPath, Path, ReversePath};

    /// A next hop without PIPELINING, so that every reply is read on its
    /// own and the reads per message do not depend on timing. Serves one
    /// connection, each read bounded, and returns when the client leaves.
    fn one_connection_server() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut input = BufReader::new(stream);
            out.write_all(b"220 hop.test ESMTP\r\n").unwrap();
            let mut line = String::new();
            let mut in_data = false;
            loop {
                line.clear();
                if input.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let reply: &[u8] = if in_data {
                    if line != ".\r\n" {
                        continue;
                    }
                    in_data = false;
                    b"250 2.0.0 queued\r\n"
                } else {
                    match &line.get(..4).unwrap_or("").to_ascii_uppercase()[..] {
                        "EHLO" => b"250-hop.test\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = out.write_all(b"221 bye\r\n");
                            return;
                        }
                        _ => b"250 ok\r\n",
                    }
                };
                out.write_all(reply).unwrap();
            }
        });
        (addr, thread)
    }

    /// Sends two messages on one connection; returns how many times the
    /// receive timeout was set.
    fn timeout_sets_for_two_messages(timeouts: Timeouts) -> usize {
        let (addr, server) = one_connection_server();
        let config = ClientConfig::new(Domain::Name("client.test".into()));
        let mut connection = Connection::open(
            &Endpoint::Tcp(addr),
            addr.to_string(),
            timeouts,
            config,
            None,
        )
        .unwrap();
        let body = b"Subject: x\r\n\r\nhello\r\n";
        let path = |s: &str| Path::parse(s.as_bytes()).unwrap();
        let message = Message::new(
            ReversePath::Path(path("<alice@example.org>")),
            vec![ForwardPath::Path(path("<bob@example.net>"))],
            body.len() as u64,
        );
        for _ in 0..2 {
            let sent = connection.send(message.clone(), body);
            assert!(sent.closed.is_none(), "{sent:?}");
            assert!(
                matches!(sent.results[0].outcome, Outcome::Delivered(_)),
                "{sent:?}"
            );
        }
        let sets = connection.read_timeout_sets;
        connection.quit();
        server.join().unwrap();
        sets
    }

    #[test]
    fn the_receive_timeout_is_set_once_per_connection() {
        // The classes' waits differ (5, 2, 10 minutes), but the socket
        // keeps the shortest, set once; replies in time never change it.
        assert_eq!(timeout_sets_for_two_messages(Timeouts::default()), 1);
        // One value for everything: set once for the connection.
        let same = Duration::from_secs(30);
        let flat = Timeouts {
            connect: same,
            greeting: same,
            command: same,
            data_init: same,
            data_block: same,
            data_end: same,
        };
        assert_eq!(timeout_sets_for_two_messages(flat), 1);
    }
}
