//! One client connection: its socket, its session and its buffers.

use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;
use sluice_smtp::server::{Notice, ServerConfig, ServerSession, Transaction};
use sluice_smtp::{BodyType, ForwardPath, ReversePath};
use sluice_spool::{Envelope, QueueId, Recipient};

use crate::event_loop::FilterStage;
use crate::filter::{Connection, Filter};
use crate::trace::{TraceFields, received_header};

/// What a connection is waiting for, besides its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    Filter(FilterStage),
    /// The spool has the message; the reply waits for fdatasync.
    Spool,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) info: Connection,
    /// The client's address as policy sees it (IPv4-mapped IPv6 unmapped).
    pub(crate) ip: IpAddr,
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
    /// Size of the message last handed to the spool, for the log line.
    message_size: usize,
    /// The finished message, between the session and the spool.
    pub(crate) message: Option<(Transaction, Vec<u8>)>,
}

impl Conn {
    pub(crate) fn new(
        stream: TcpStream,
        info: Connection,
        ip: IpAddr,
        session: ServerSession<Arc<ServerConfig>>,
    ) -> Self {
        Conn {
            stream,
            info,
            ip,
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
            message_size: 0,
            message: None,
        }
    }

    pub(crate) fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    pub(crate) fn output_len(&mut self) -> usize {
        self.session.output().len() - self.written
    }

    pub(crate) fn output_empty(&mut self) -> bool {
        self.output_len() == 0
    }

    /// Whether to leave the client's bytes in the kernel for now.
    pub(crate) fn read_paused(&mut self, max_input: usize, max_output: usize) -> bool {
        (self.waiting.is_some() && self.input.len() >= max_input) || self.output_len() > max_output
    }

    /// Writes as much pending output as the socket takes.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        loop {
            let out = self.session.output();
            if self.written == out.len() {
                out.clear();
                self.written = 0;
                return Ok(());
            }
            match self.stream.write(&out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.last_activity = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Names the message about to be received and writes its trace header.
    pub(crate) fn start_message(&mut self, id: QueueId, hostname: &str) {
        self.queue_id = Some(id);
        let helo = self
            .session
            .greeting_name()
            .map(|(g, name)| (g, name.to_string()))
            .unwrap_or((sluice_smtp::server::Greeting::Helo, String::new()));
        let single = self
            .session
            .transaction()
            .and_then(|tx| match tx.recipients.as_slice() {
                [(path, _)] => Some(forward_path_address(path)),
                _ => None,
            });
        let mut header = Vec::with_capacity(256);
        received_header(
            &TraceFields {
                helo: &helo.1,
                client_ip: self.ip,
                hostname,
                greeting: helo.0,
                queue_id: &id.to_string(),
                single_recipient: single.as_deref(),
                time: SystemTime::now(),
            },
            &mut header,
        );
        self.trace_len = header.len();
        self.session.set_trace_header(&header);
    }

    /// Inserts filters' header fields after our trace header. Invalid ones
    /// are dropped (see [`MessageChanges::headers`](crate::MessageChanges)).
    pub(crate) fn add_headers(&mut self, headers: &[(String, String)]) {
        let Some((_, body)) = self.message.as_mut() else {
            return;
        };
        let mut fields = Vec::new();
        for (name, value) in headers {
            let name_ok =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !name_ok || value.contains(['\r', '\n']) {
                tracing::warn!(
                    conn = self.info.id,
                    name,
                    "filter header dropped: invalid field"
                );
                continue;
            }
            fields.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let at = self.trace_len.min(body.len());
        body.splice(at..at, fields);
    }

    /// The spool's view of the finished message.
    pub(crate) fn envelope(&mut self) -> Option<(Envelope, Vec<u8>)> {
        let id = self.queue_id?;
        let (tx, body) = self.message.take()?;
        let envelope = Envelope {
            id,
            reverse_path: match &tx.reverse_path {
                ReversePath::Null => String::new(),
                ReversePath::Path(p) => p.mailbox.to_string(),
            },
            mail_params: tx.params.to_string(),
            recipients: tx
                .recipients
                .iter()
                .map(|(path, params)| Recipient {
                    address: forward_path_address(path),
                    params: params.to_string(),
                })
                .collect(),
            arrival_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            client_ip: self.ip,
            helo: self
                .session
                .greeting_name()
                .map(|(_, name)| name.to_string())
                .unwrap_or_default(),
            body_type: match tx.body_type() {
                BodyType::SevenBit => 0,
                BodyType::EightBitMime => 1,
                BodyType::BinaryMime => 2,
            },
            smtputf8: tx.params.smtputf8,
        };
        // Keep what the log line needs.
        self.message_size = body.len();
        self.message = Some((tx, Vec::new()));
        Some((envelope, body))
    }

    /// One line per transaction: what an operator greps for.
    pub(crate) fn log_transaction(&mut self, result: &str) {
        let Some((tx, body)) = &self.message else {
            return;
        };
        let id = self.queue_id.map(|id| id.to_string()).unwrap_or_default();
        let recipients: Vec<String> = tx.recipients.iter().map(|(p, _)| p.to_string()).collect();
        let size = if body.is_empty() {
            self.message_size
        } else {
            body.len()
        };
        tracing::info!(
            queue_id = %id,
            client = %self.ip,
            from = %tx.reverse_path,
            to = %recipients.join(","),
            size,
            result,
            "message"
        );
    }

    /// Passes the session's notices on to filters and the log.
    pub(crate) fn handle_notices(&mut self, filter: &dyn Filter) {
        for notice in self.session.take_notices() {
            match notice {
                Notice::TransactionReset => filter.reset(&self.info),
                Notice::Closing => {}
                Notice::Refused { verb, reply } => {
                    tracing::debug!(conn = self.info.id, ?verb, %reply, "refused");
                }
            }
        }
    }
}

fn forward_path_address(path: &ForwardPath) -> String {
    match path {
        ForwardPath::Postmaster => "postmaster".into(),
        ForwardPath::Path(p) => p.mailbox.to_string(),
    }
}
