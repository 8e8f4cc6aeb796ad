//! One client connection: its socket, its session and its buffers.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sluice_filter::{ClientInfo, Filter, MessageChanges, valid_header_field};
use sluice_smtp::server::{Decision, Greeting, Notice, ServerConfig, ServerSession};
use sluice_smtp::trace::{TraceClient, TraceFields, received_header};
use sluice_smtp::{ForwardPath, Stage, Verb};
use sluice_spool::{BodyPart, Entry, QueueId, Submission};
use sluice_sys::{Content, Spill};

use crate::limits::Client;
use crate::local::LocalUser;
use crate::socket::Socket;
use crate::transport::Transport;

/// What a connection is waiting for, besides its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// A filter's verdict on this stage.
    Filter(Stage),
    /// The spool has the message; the reply waits for fdatasync.
    Spool,
    /// A password is being checked.
    Auth,
    /// A failed AUTH's reply waits out its delay.
    Delay,
    /// SPF, DKIM, DMARC or a signature is being worked out.
    MsgAuth,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: Socket,
    /// Plain, or TLS (after STARTTLS, or from the start on `smtps`).
    pub(crate) transport: Transport,
    /// Its listener's index in `Shared::listener_modes` (its mode is
    /// there) and in the metrics.
    pub(crate) listener: usize,
    /// When the TLS handshake began, while it runs.
    pub(crate) handshake_started: Option<Instant>,
    pub(crate) info: ClientInfo,
    /// The client's address as policy sees it (IPv4-mapped IPv6 unmapped);
    /// loopback for a local user.
    pub(crate) ip: IpAddr,
    /// Who the client is on the local submission socket.
    pub(crate) local: Option<LocalUser>,
    pub(crate) session: ServerSession<Arc<ServerConfig>>,
    /// Bytes read but not yet consumed by the session.
    pub(crate) input: Vec<u8>,
    /// How much of the session's output has been written.
    written: usize,
    /// Readiness is edge-triggered: this remembers that the socket may hold
    /// more than we have read, for when we stopped reading early.
    pub(crate) maybe_readable: bool,
    pub(crate) peer_closed: bool,
    pub(crate) waiting: Option<Waiting>,
    /// Tags the one outstanding filter or spool call, so that a late answer
    /// for a previous call (or a previous connection in this slot) is ignored.
    pub(crate) serial: u64,
    pub(crate) last_activity: Instant,
    queue_id: Option<QueueId>,
    /// Length of our `Received:` header at the start of the message, where
    /// filters' headers go after.
    trace_len: usize,
    /// Where the trace header is written, kept from message to message.
    trace_header: Vec<u8>,
    /// The finished message (our trace header, then the content), between
    /// the session and the spool; shared with the filters that read it.
    pub(crate) message: Option<Arc<Content>>,
    /// The message handed to the spool, kept until its answer: by then the
    /// spool has written it and let it go, and its buffer collects the
    /// connection's next message (one allocation a connection, not one a
    /// message, and no buffer freed on the spool's thread).
    spooled: Option<Arc<Content>>,
    /// Size of the message last handed on, for the log line.
    message_size: usize,
    /// When the client finished sending the message being decided.
    pub(crate) data_ended: Option<Instant>,
    /// Failed AUTH commands so far.
    pub(crate) auth_failures: u32,
    /// The decision a delayed reply will carry, and whether the connection
    /// closes after it (too many failures).
    pub(crate) delayed: Option<(sluice_smtp::server::Decision, bool)>,
    /// Header fields the front end adds after our `Received:`: a
    /// signature, `Authentication-Results:`, and what submission adds
    /// (`Date:`, `Message-ID:`).
    pub(crate) added_fields: Vec<u8>,
    /// What the sender's checks found at MAIL (iprev is kept for the
    /// connection's next transaction).
    pub(crate) sender_checks: Option<sluice_msgauth::SenderChecks>,
    /// What the filters are told about this transaction's authentication.
    pub(crate) auth_results: sluice_filter::AuthResults,
    /// Ranges of the content (after our trace header) left out of the
    /// stored message: `Authentication-Results:` fields forged with our name.
    pub(crate) removed: Vec<std::ops::Range<usize>>,
    /// Where the bytes of a large message arriving now went (see [`SPILL_AT`]).
    spill: Spilling,
}

/// Once the session holds this many bytes of a message, they move to a
/// spill file, and so on each time as many have gathered again (one write
/// of about this size, not one per read): a connection streaming a 20 MiB
/// message holds about this much heap (plus a read), not the message.
/// Below it (nearly all mail) the message stays on the heap and costs no
/// file.
pub(crate) const SPILL_AT: usize = 256 * 1024;

/// The spill of the message arriving now.
#[derive(Debug)]
enum Spilling {
    /// Nothing spilled: the session holds the whole message.
    No,
    /// The bytes so far, but those the session still holds, are in this
    /// unnamed file in the spool's directory.
    To(Spill),
    /// Writing the spill failed (a full disk): the message is refused when
    /// it ends, and nothing more is written meanwhile.
    Failed,
}

/// Why the content of the message that just ended is not there to decide on.
#[derive(Debug)]
pub(crate) enum ContentError {
    /// The session had no message pending (a bug, answered as one).
    Session(sluice_smtp::server::ApiMisuse),
    /// The spill file could not be written or mapped.
    Spill(io::Error),
}

impl Conn {
    pub(crate) fn new(
        stream: Socket,
        listener: usize,
        info: ClientInfo,
        ip: IpAddr,
        local: Option<LocalUser>,
        session: ServerSession<Arc<ServerConfig>>,
    ) -> Self {
        Conn {
            stream,
            transport: Transport::Plain,
            listener,
            handshake_started: None,
            info,
            ip,
            local,
            session,
            input: Vec::new(),
            written: 0,
            maybe_readable: true,
            peer_closed: false,
            waiting: None,
            serial: 0,
            last_activity: Instant::now(),
            queue_id: None,
            trace_len: 0,
            trace_header: Vec::new(),
            message: None,
            spooled: None,
            message_size: 0,
            data_ended: None,
            auth_failures: 0,
            delayed: None,
            added_fields: Vec::new(),
            sender_checks: None,
            auth_results: sluice_filter::AuthResults::default(),
            removed: Vec::new(),
            spill: Spilling::No,
        }
    }

    /// Moves what the session collected of the message arriving now to the
    /// spill file, once that is [`SPILL_AT`] or more (creating the file the
    /// first time). A page-cache write, no sync: durability is the spool's,
    /// at the end. A failure is remembered for the end of the message.
    pub(crate) fn spill_collected(&mut self, spool: &sluice_spool::SpoolHandle) {
        if self.session.collected_len() < SPILL_AT {
            return;
        }
        let (spill, conn) = (&mut self.spill, self.info.id);
        self.session.drain_collected(|bytes| {
            let written = match spill {
                Spilling::Failed => return,
                Spilling::To(file) => file.append(bytes),
                Spilling::No => spool.spill().and_then(|mut file| {
                    file.append(bytes)?;
                    *spill = Spilling::To(file);
                    Ok(())
                }),
            };
            if let Err(e) = written {
                tracing::warn!(conn, error = %e, "could not spill a large message to the spool's directory");
                *spill = Spilling::Failed;
            }
        });
    }

    /// The finished message: the session's bytes, after what was spilled.
    /// Call it while `Event::Message` is pending.
    pub(crate) fn take_content(&mut self) -> Result<Content, ContentError> {
        let rest = self.session.take_message().map_err(ContentError::Session)?;
        match std::mem::replace(&mut self.spill, Spilling::No) {
            Spilling::Failed => Err(ContentError::Spill(io::Error::other(
                "the spill file could not be written",
            ))),
            Spilling::To(spill) => {
                let content = spill.finish(&rest).map_err(ContentError::Spill)?;
                sluice_metrics::spilled(content.len() as u64);
                Ok(content)
            }
            Spilling::No => Ok(Content::Heap(rest)),
        }
    }

    /// Whether the client sends with our blessing (a trusted network, a
    /// login, a local user): its mail is signed, not checked.
    pub(crate) fn privileged(&self) -> bool {
        self.info.trusted || self.info.login.is_some()
    }

    /// Where the content starts in the message (after our trace header).
    pub(crate) fn content_start(&self) -> usize {
        self.trace_len
    }

    /// Whom this connection counts against in the limits.
    pub(crate) fn client(&self) -> Client {
        match &self.local {
            Some(user) => Client::Uid(user.uid),
            None => Client::Ip(self.ip),
        }
    }

    /// Activity at `now` (the loop's clock): the idle timers start over.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_activity = now;
    }

    pub(crate) fn output_len(&mut self) -> usize {
        self.session.output().len() - self.written
    }

    /// Nothing left to send: the session's replies are written, and no TLS
    /// record waits for the socket.
    pub(crate) fn output_empty(&mut self) -> bool {
        self.output_len() == 0 && !self.transport.pending()
    }

    /// Reads what the client sent (decrypted, under TLS) into `buf`.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.transport.read(&mut self.stream, buf)
    }

    /// Starts TLS on this connection: everything read so far is thrown away
    /// (after STARTTLS it came in clear, so it cannot be trusted: RFC 3207
    /// §5, CVE-2011-0411). Returns how many bytes that was.
    pub(crate) fn start_tls(&mut self, conn: rustls::ServerConnection) -> usize {
        let discarded = self.input.len();
        self.input.clear();
        self.transport = Transport::tls(conn);
        let now = Instant::now();
        self.handshake_started = Some(now);
        self.touch(now);
        discarded
    }

    /// After a read: whether the TLS handshake has just finished, in which
    /// case the connection's facts now say so.
    pub(crate) fn handshake_finished(&mut self) -> bool {
        if self.handshake_started.is_none() || self.transport.handshaking() {
            return false;
        }
        self.handshake_started = None;
        self.info.tls = self.transport.info();
        true
    }

    /// Whether to leave the client's bytes in the kernel for now.
    pub(crate) fn read_paused(&mut self, max_input: usize, max_output: usize) -> bool {
        (self.waiting.is_some() && self.input.len() >= max_input) || self.output_len() > max_output
    }

    /// Writes as much pending output as the socket takes; a write is
    /// activity at `now`.
    pub(crate) fn flush(&mut self, now: Instant) -> io::Result<()> {
        loop {
            let out = self.session.output();
            if self.written == out.len() {
                out.clear();
                self.written = 0;
                // Handshake messages and buffered records, even with no
                // reply of ours to send.
                return self.transport.flush(&mut self.stream);
            }
            match self.transport.write(&mut self.stream, &out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.last_activity = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The queue id of the message in progress (known from DATA on).
    pub(crate) fn queue_id(&self) -> Option<QueueId> {
        self.queue_id
    }

    /// Names the message about to be received and writes its trace header.
    /// DATA must be pending (the caller is answering `Event::StartData`).
    pub(crate) fn start_message(
        &mut self,
        id: QueueId,
        hostname: &str,
    ) -> Result<(), sluice_smtp::server::ApiMisuse> {
        self.queue_id = Some(id);
        // Whatever a transaction left unfinished goes (its file with it).
        self.spill = Spilling::No;
        self.added_fields.clear();
        self.removed.clear();
        let (greeting, helo) = self
            .session
            .greeting_name()
            .map_or((Greeting::Helo, "".into()), |(g, name)| (g, name.as_text()));
        let single = self
            .session
            .transaction()
            .and_then(|tx| match tx.recipients.as_slice() {
                [r] => Some(forward_path_address(&r.forward_path)),
                _ => None,
            });
        let tls = self
            .info
            .tls
            .as_ref()
            .map(|t| format!("{} with cipher {}", t.version, t.cipher));
        let id_text = id.text();
        let header = &mut self.trace_header;
        header.clear();
        received_header(
            &TraceFields {
                client: match &self.local {
                    Some(user) => TraceClient::Local { uid: user.uid },
                    None => TraceClient::Network {
                        helo: &helo,
                        ip: self.ip,
                    },
                },
                hostname,
                greeting,
                tls: tls.as_deref(),
                // A local user is known, but did not log in.
                authenticated: self.info.login.is_some() && self.local.is_none(),
                queue_id: id_text.as_str(),
                single_recipient: single.as_deref(),
                time: SystemTime::now(),
            },
            header,
        );
        self.trace_len = header.len();
        self.session.set_trace_header(&self.trace_header)
    }

    /// The spool's submission for the finished message: our trace header,
    /// the filters' header fields, then the content, as parts of the one
    /// shared buffer (nothing is copied or moved to make room). Invalid
    /// fields are dropped (see [`valid_header_field`]). `None` when there is
    /// no message or no transaction, which the caller must refuse.
    pub(crate) fn submission(&mut self, changes: &MessageChanges) -> Option<Submission> {
        let id = self.queue_id?;
        let envelope = Arc::clone(self.session.shared_transaction()?);
        let message = self.message.take()?;
        let mut fields = std::mem::take(&mut self.added_fields);
        for (name, value) in &changes.headers {
            if !valid_header_field(name, value) {
                tracing::warn!(
                    conn = self.info.id,
                    name,
                    "filter header dropped: invalid field"
                );
                continue;
            }
            fields.extend_from_slice(name.as_bytes());
            fields.extend_from_slice(b": ");
            fields.extend_from_slice(value.as_bytes());
            fields.extend_from_slice(b"\r\n");
        }
        let at = self.trace_len.min(message.len());
        let mut body = Vec::with_capacity(3 + self.removed.len());
        body.push(BodyPart::Shared(message.clone(), 0..at));
        if !fields.is_empty() {
            body.push(BodyPart::Owned(fields));
        }
        // The content, less the removed ranges (in order, not overlapping).
        let mut from = at;
        for r in &self.removed {
            let (start, end) = (
                (at + r.start).min(message.len()),
                (at + r.end).min(message.len()),
            );
            if start > from {
                body.push(BodyPart::Shared(message.clone(), from..start));
            }
            from = from.max(end);
        }
        body.push(BodyPart::Shared(message.clone(), from..message.len()));
        self.message_size = body.iter().map(|p| p.bytes().len()).sum();
        self.spooled = Some(message);
        Some(Submission {
            entry: Entry {
                id,
                arrival_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                client_ip: self.ip,
                helo: self
                    .session
                    .greeting_name()
                    .map(|(_, name)| name.to_string())
                    .unwrap_or_default(),
                envelope,
            },
            body,
            held: changes.quarantine,
        })
    }

    /// The spool has answered for the message handed to it: its buffer, if
    /// nothing else holds it any more, is given back to the session.
    pub(crate) fn reclaim_message_buffer(&mut self) {
        if let Some(Ok(Content::Heap(buffer))) = self.spooled.take().map(Arc::try_unwrap) {
            self.session.reuse_buffer(buffer);
        }
    }

    /// One line per transaction: what an operator greps for.
    pub(crate) fn log_transaction(&mut self, result: &str) {
        let Some(tx) = self.session.transaction() else {
            return;
        };
        let size = self.message.as_ref().map_or(self.message_size, |m| m.len());
        tracing::info!(
            queue_id = %QueueIdOrNone(self.queue_id),
            client = %sluice_smtp::IpText(self.ip),
            from = %tx.reverse_path,
            to = %ForwardPaths(&tx.recipients),
            size,
            result,
            "message"
        );
    }

    /// Answers the pending event, counting refusals and accepted messages.
    pub(crate) fn decide(
        &mut self,
        decision: Decision,
    ) -> Result<(), sluice_smtp::server::ApiMisuse> {
        let stage = self.session.event().map(|e| e.stage());
        match &decision {
            Decision::Reject(reply) | Decision::Disconnect(reply) => {
                sluice_metrics::rejected(stage, reply.code());
            }
            Decision::Accept | Decision::AcceptWith(_) if stage == Some(Stage::EndOfData) => {
                if let Some(ended) = self.data_ended.take() {
                    sluice_metrics::received(
                        self.listener,
                        self.message_size as u64,
                        ended.elapsed(),
                    );
                }
            }
            Decision::Accept | Decision::AcceptWith(_) => {}
        }
        self.session.decide(decision)
    }

    /// Passes the session's notices on to filters and the log.
    pub(crate) fn handle_notices(&mut self, filter: &dyn Filter) {
        for notice in self.session.take_notices() {
            match notice {
                Notice::TransactionReset => {
                    // The message will not be taken: its spill file goes.
                    self.spill = Spilling::No;
                    filter.reset(&self.info);
                }
                Notice::Closing => {}
                Notice::Refused { verb, reply } => {
                    tracing::debug!(conn = self.info.id, ?verb, %reply, "refused");
                    sluice_metrics::rejected(verb.and_then(verb_stage), reply.code());
                }
            }
        }
    }
}

/// The stage a refused command belongs to; `None` for those outside the
/// transaction (NOOP, RSET, VRFY, …).
fn verb_stage(verb: Verb) -> Option<Stage> {
    match verb {
        Verb::Helo | Verb::Ehlo => Some(Stage::Hello),
        Verb::Mail => Some(Stage::Mail),
        Verb::Rcpt => Some(Stage::Rcpt),
        Verb::Data | Verb::Bdat => Some(Stage::Data),
        Verb::Auth => Some(Stage::Auth),
        Verb::Rset
        | Verb::Noop
        | Verb::Quit
        | Verb::Vrfy
        | Verb::Expn
        | Verb::Help
        | Verb::StartTls => None,
    }
}

fn forward_path_address(path: &ForwardPath) -> String {
    match path {
        ForwardPath::Postmaster => "postmaster".into(),
        ForwardPath::Path(p) => p.mailbox.text(),
    }
}

/// A transaction's forward-paths, comma-separated, written straight into
/// the log line (no string per recipient).
struct ForwardPaths<'a>(&'a [sluice_smtp::Recipient]);

impl std::fmt::Display for ForwardPaths<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            std::fmt::Display::fmt(&r.forward_path, f)?;
        }
        Ok(())
    }
}

/// The queue id, or nothing before there is one.
struct QueueIdOrNone(Option<QueueId>);

impl std::fmt::Display for QueueIdOrNone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => std::fmt::Display::fmt(&id, f),
            None => Ok(()),
        }
    }
}
