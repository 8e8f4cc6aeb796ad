//! The server side of an SMTP session, sans-IO.
//!
//! The front end owns the socket; this state machine owns the protocol. Bytes
//! go in through [`ServerSession::receive`], replies come out through
//! [`ServerSession::output`], and every point where policy must decide (HELO,
//! MAIL, RCPT, DATA, the finished message) is raised as an [`Event`] and waits
//! for a [`Decision`]. While a decision is pending the session consumes no more
//! input, so pipelined commands (RFC 2920) are answered strictly in order even
//! when a filter or the spool answers later, from another thread.
//!
//! ```text
//!  Greeting ──greet()──▶ Command ◀──────────────────────────────┐
//!                          │ EHLO/HELO, MAIL, RCPT (each may wait for a Decision)
//!                          ├── DATA ──(Decision)──▶ Data ──CRLF.CRLF──┐
//!                          └── BDAT n ─────────────▶ Chunk(n) ──LAST──┤
//!                                                                     ▼
//!                                              Event::Message ──(Decision)──┘
//! ```

mod auth;
mod commands;
mod content;
mod ehlo;
#[cfg(test)]
mod tests;

pub use auth::{Mechanism, Password};
pub use ehlo::Extensions;

use std::fmt;
use std::sync::Arc;

use crate::address::{Domain, ForwardPath, ReversePath};
use crate::command::Verb;
use crate::data::{DataDecoder, LineEndingCheck};
use crate::envelope::{Envelope, Recipient};
use crate::line::{Line, LineReader};
use crate::params::{MailParams, RcptParams};
use crate::reply::{EnhancedCode, Reply};
use crate::stage::Stage;

/// What the session needs to know about the server it speaks for.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Our name in the greeting, the EHLO reply and error texts.
    pub hostname: String,
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4: at least 512).
    pub max_line_length: usize,
    /// Largest message content in octets; advertised as SIZE (RFC 1870).
    pub max_message_size: u64,
    /// Most recipients in one transaction (RFC 5321 §4.5.3.1.8 asks for at least 100).
    pub max_recipients: usize,
    /// Errors (unknown or malformed commands, commands out of order) a client
    /// may make before it is disconnected with `421 4.7.0`.
    pub max_errors: u32,
    pub extensions: Extensions,
    /// Mail submission (RFC 6409 on port 587): MAIL (and AUTH) only inside
    /// TLS, `530 5.7.0` before STARTTLS. Needs [`Extensions::starttls`].
    pub tls_required: bool,
    /// Mail only from clients that logged in (AUTH): `530 5.7.0
    /// Authentication required` for MAIL otherwise (RFC 6409 §4.3).
    pub auth_required: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            max_line_length: 512,
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 20,
            extensions: Extensions::default(),
            tls_required: false,
            auth_required: false,
        }
    }
}

/// How the client introduced itself; goes into the `Received:` header's `with`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// RFC 821 `HELO`.
    Helo,
    /// RFC 5321 `EHLO`.
    Ehlo,
}

/// A point where the session waits for the front end (its policy, its
/// filters, its spool). Answer with [`ServerSession::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// HELO or EHLO. Accepting resets any transaction in progress.
    Hello { greeting: Greeting, name: Domain },
    /// MAIL FROM, already checked for order, size and extensions.
    Mail {
        reverse_path: ReversePath,
        params: MailParams,
    },
    /// One RCPT TO, already checked for order and the recipient limit.
    Rcpt {
        forward_path: ForwardPath,
        params: RcptParams,
    },
    /// DATA, or the first BDAT chunk: the last chance to refuse before the
    /// content is read. Accepting may set the trace header with
    /// [`ServerSession::set_trace_header`].
    StartData,
    /// The content is complete and passed the session's own checks. Take it
    /// with [`ServerSession::take_message`]; accepting means "it is on disk".
    Message,
    /// AUTH credentials to check (inside TLS only). Accepting logs the
    /// client in (`235 2.7.0`); refuse with `535 5.7.8` for bad ones,
    /// `454 4.7.0` when they cannot be checked now.
    Auth {
        mechanism: Mechanism,
        login: String,
        password: Password,
    },
}

impl Event {
    /// The stage this event stands at.
    pub fn stage(&self) -> Stage {
        match self {
            Event::Hello { .. } => Stage::Hello,
            Event::Mail { .. } => Stage::Mail,
            Event::Rcpt { .. } => Stage::Rcpt,
            Event::StartData => Stage::Data,
            Event::Message => Stage::EndOfData,
            Event::Auth { .. } => Stage::Auth,
        }
    }
}

/// A call that the session's state does not allow: answering when no event
/// is pending, setting the trace header outside DATA, taking a message that
/// is not there. It is the caller's bug; the session is unchanged, and the
/// caller should refuse (or close) rather than go on as if it had worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiMisuse(&'static str);

impl fmt::Display for ApiMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server session misused: {}", self.0)
    }
}

impl std::error::Error for ApiMisuse {}

/// Notices that need no answer: the front end tells its filters, logs, counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The transaction ended without a message (RSET, a new HELO/EHLO, a
    /// refused message): filters drop their per-transaction state.
    TransactionReset,
    /// The client said QUIT, or the session is closing for another reason;
    /// the front end flushes the output and closes.
    Closing,
    /// A command was refused by the session itself (syntax, order, limits).
    Refused { verb: Option<Verb>, reply: Reply },
}

/// The front end's answer to an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on, with the usual positive reply.
    Accept,
    /// Go on, with this reply (e.g. `250 2.0.0 Ok: queued as <id>`).
    AcceptWith(Reply),
    /// Refuse this command (4xx or 5xx); the session goes on.
    Reject(Reply),
    /// Send this reply (normally 421) and close the connection.
    Disconnect(Reply),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    size: u64,
    last: bool,
}

/// Where the session is. The phases that carry data carry exactly the state
/// they need, so (for example) a BDAT byte count cannot exist outside a chunk.
#[derive(Debug)]
enum Phase {
    /// Connected; the front end has not yet said whether to greet.
    Connected,
    /// Reading command lines.
    Command,
    /// A decision on this event is pending; no input is consumed until it
    /// arrives. For the first BDAT, the chunk that follows the command.
    Pending(Event, Option<Chunk>),
    /// Reading DATA content up to CRLF.CRLF.
    Data(DataDecoder),
    /// `220` to STARTTLS is in the output: the front end sends it in clear,
    /// throws away whatever the client sent after the command (RFC 3207 §5:
    /// it was sent before TLS, so it cannot be trusted), runs the handshake,
    /// then calls [`ServerSession::tls_started`].
    StartingTls,
    /// A SASL exchange: the next line is the client's response.
    Auth(auth::AuthStep),
    /// Reading the octets of a BDAT chunk. `discard`: the chunk must be read
    /// (RFC 3030 §2) but the transaction is already lost.
    Chunk {
        remaining: u64,
        last: bool,
        discard: Option<Reply>,
    },
    /// The session is over; the front end closes once the output is written.
    Closed,
}

/// Which RFC 5321 §4.5.3.2 timeout applies now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Waiting for a command (5 minutes recommended).
    Command,
    /// Waiting for a block of message content (3 minutes recommended).
    Data,
    /// Waiting for our own front end's decision: no client timeout runs.
    Decision,
    /// The TLS handshake after STARTTLS (or before the greeting, for
    /// implicit TLS) is the front end's: its own timeout applies.
    TlsHandshake,
    /// Nothing more will be read.
    Closed,
}

/// One SMTP server session (one TCP connection).
#[derive(Debug)]
pub struct ServerSession<C = ServerConfig> {
    config: C,
    phase: Phase,
    lines: LineReader,
    greeting: Option<(Greeting, Domain)>,
    /// Shared: the spool's entry and the delivery client take the envelope
    /// the session collected without a copy (RCPT grows it while no one
    /// else holds it).
    transaction: Option<Arc<Envelope>>,
    /// Set once content of this transaction is being read through BDAT, so
    /// that DATA cannot be mixed in (RFC 3030 §3).
    bdat_in_progress: bool,
    /// The message content, after the trace header given at StartData.
    message: Vec<u8>,
    /// Scans BDAT content, which is not dot-stuffed, for bare CR and LF.
    bdat_check: LineEndingCheck,
    /// Message content octets without the trace header, for the size limit.
    content_size: u64,
    errors: u32,
    /// The connection is inside TLS (after STARTTLS, or implicit).
    tls: bool,
    /// Who logged in with AUTH.
    login: Option<String>,
    out: Vec<u8>,
    notices: Vec<Notice>,
}

const CODE_OK: EnhancedCode = EnhancedCode::new(2, 0, 0);
const CODE_BAD_SEQUENCE: EnhancedCode = EnhancedCode::new(5, 5, 1);

impl<C: AsRef<ServerConfig>> ServerSession<C> {
    /// A new session; nothing is sent until [`ServerSession::greet`].
    pub fn new(config: C) -> Self {
        let max_line = line_limit(config.as_ref());
        ServerSession {
            config,
            phase: Phase::Connected,
            lines: LineReader::new(max_line),
            greeting: None,
            transaction: None,
            bdat_in_progress: false,
            message: Vec::new(),
            bdat_check: LineEndingCheck::new(),
            content_size: 0,
            errors: 0,
            tls: false,
            login: None,
            out: Vec::with_capacity(256),
            notices: Vec::new(),
        }
    }

    fn config(&self) -> &ServerConfig {
        self.config.as_ref()
    }

    /// Sends the greeting: `None` for `220 <hostname> ESMTP`, or the refusal
    /// the connect policy chose (e.g. `554 5.7.1`), after which only QUIT is
    /// accepted (RFC 5321 §3.1).
    pub fn greet(&mut self, refusal: Option<Reply>) {
        if !matches!(self.phase, Phase::Connected) {
            return;
        }
        match refusal {
            None => {
                let text = format!("{} ESMTP Sluice", self.config().hostname);
                self.reply(Reply::new(220, None, text));
                self.phase = Phase::Command;
            }
            Some(reply) if reply.code() == 421 => self.close_with(reply),
            Some(reply) => {
                self.reply(reply);
                self.phase = Phase::Closed;
            }
        }
    }

    /// Feeds bytes from the client. Returns how many were consumed; the rest
    /// (an incomplete line, or everything after a command that now waits for
    /// a decision) must be offered again later.
    pub fn receive(&mut self, input: &[u8]) -> usize {
        let mut consumed = 0;
        while consumed < input.len() {
            let rest = &input[consumed..];
            let used = match &mut self.phase {
                Phase::Connected | Phase::Pending(..) | Phase::StartingTls | Phase::Closed => {
                    break;
                }
                Phase::Command => {
                    let (used, line) = self.lines.next_line(rest);
                    match line {
                        Some(Line::Complete(line)) => self.command_line(line),
                        Some(Line::TooLong) => {
                            self.error(
                                None,
                                Reply::new(500, Some(EnhancedCode::new(5, 5, 2)), "Line too long"),
                            );
                        }
                        None => {}
                    }
                    if used == 0 {
                        break;
                    }
                    used
                }
                Phase::Auth(_) => {
                    let (used, line) = self.lines.next_line(rest);
                    match line {
                        Some(Line::Complete(line)) => {
                            let Phase::Auth(step) =
                                std::mem::replace(&mut self.phase, Phase::Command)
                            else {
                                unreachable!("matched above")
                            };
                            let line = String::from_utf8_lossy(line).into_owned();
                            self.auth_response(step, &line);
                        }
                        Some(Line::TooLong) => {
                            self.phase = Phase::Command;
                            self.error(
                                Some(Verb::Auth),
                                Reply::new(
                                    500,
                                    Some(EnhancedCode::new(5, 5, 6)),
                                    "Authentication exchange line is too long",
                                ),
                            );
                        }
                        None => {}
                    }
                    if used == 0 {
                        break;
                    }
                    used
                }
                Phase::Data(decoder) => {
                    let progress = decoder.decode(rest, &mut self.message);
                    if progress.done {
                        self.finish_data();
                    }
                    if progress.consumed == 0 {
                        break;
                    }
                    progress.consumed
                }
                Phase::Chunk { .. } => self.chunk_bytes(rest),
            };
            consumed += used;
        }
        consumed
    }

    /// The event waiting for a decision, if any. It stays until decided.
    pub fn event(&self) -> Option<&Event> {
        match &self.phase {
            Phase::Pending(event, _) => Some(event),
            _ => None,
        }
    }

    /// Notices raised since the last call.
    pub fn take_notices(&mut self) -> std::vec::Drain<'_, Notice> {
        self.notices.drain(..)
    }

    /// Replies to send. The caller writes them and clears what it wrote.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// True once the session is over: write the output, then close.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Which timeout applies now.
    pub fn waiting(&self) -> Waiting {
        match self.phase {
            Phase::Connected | Phase::Pending(..) => Waiting::Decision,
            Phase::StartingTls => Waiting::TlsHandshake,
            Phase::Command | Phase::Auth(_) => Waiting::Command,
            Phase::Data(_) | Phase::Chunk { .. } => Waiting::Data,
            Phase::Closed => Waiting::Closed,
        }
    }

    /// Whether the front end must now send the output in clear, discard the
    /// client's unread input and start TLS (the client said STARTTLS).
    pub fn wants_tls(&self) -> bool {
        matches!(self.phase, Phase::StartingTls)
    }

    /// Whether the session runs inside TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Who logged in with AUTH, once someone has.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// The TLS handshake is done: after STARTTLS, the session starts over
    /// (RFC 3207 §4.2: the client's name, its transaction and what it was
    /// told are forgotten, and it must say EHLO again); for implicit TLS,
    /// call it before [`ServerSession::greet`]. STARTTLS is not offered
    /// again, and what only TLS allows (REQUIRETLS; submission's MAIL) is.
    pub fn tls_started(&mut self) {
        self.tls = true;
        if matches!(self.phase, Phase::StartingTls) {
            self.reset_transaction();
            self.greeting = None;
            self.lines = LineReader::new(line_limit(self.config()));
            self.bdat_check = LineEndingCheck::new();
            self.phase = Phase::Command;
        }
    }

    /// The HELO/EHLO name and how it was given, once known.
    pub fn greeting_name(&self) -> Option<(Greeting, &Domain)> {
        self.greeting.as_ref().map(|(g, d)| (*g, d))
    }

    /// The envelope of the transaction in progress (its accepted recipients
    /// so far).
    pub fn transaction(&self) -> Option<&Envelope> {
        self.transaction.as_deref()
    }

    /// The same envelope, shared: what the message is queued with once its
    /// content has ended.
    pub fn shared_transaction(&self) -> Option<&Arc<Envelope>> {
        self.transaction.as_ref()
    }

    /// Ends the session from the server's side (idle timeout, shutdown,
    /// too many connections): sends `reply` (normally 421) and closes.
    pub fn close_with(&mut self, reply: Reply) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.reply(reply);
        self.enter_closed();
    }

    /// Replaces the reverse-path of the pending MAIL, before the decision:
    /// a submission server may correct what a client it knows asks for
    /// (RFC 6409 §8), as the local submission socket does for a user who
    /// names someone else's address.
    pub fn set_reverse_path(&mut self, path: ReversePath) -> Result<(), ApiMisuse> {
        match &mut self.phase {
            Phase::Pending(Event::Mail { reverse_path, .. }, _) => {
                *reverse_path = path;
                Ok(())
            }
            _ => Err(ApiMisuse("the reverse-path is set while MAIL is pending")),
        }
    }

    /// Answers the pending event. Afterwards call [`ServerSession::receive`]
    /// again with the input left over. With no event pending, nothing
    /// changes and the call is an error.
    pub fn decide(&mut self, decision: Decision) -> Result<(), ApiMisuse> {
        let Phase::Pending(event, chunk) = std::mem::replace(&mut self.phase, Phase::Command)
        else {
            return Err(ApiMisuse("a decision is given with no event pending"));
        };
        match decision {
            Decision::Disconnect(reply) => self.close_with(reply),
            // RFC 5321 §3.8: a 421 is the server closing. Reading on would
            // take commands a pipelining client already counts as unanswered,
            // and sends again elsewhere: a message accepted twice.
            Decision::Reject(reply) if reply.code() == 421 => self.close_with(reply),
            Decision::Reject(reply) => self.refused(event, chunk, reply),
            Decision::Accept => self.accepted(event, chunk, None),
            Decision::AcceptWith(reply) => self.accepted(event, chunk, Some(reply)),
        }
        Ok(())
    }

    fn accepted(&mut self, event: Event, chunk: Option<Chunk>, reply: Option<Reply>) {
        let ok = |code: u16, e: EnhancedCode, text: &'static str| Reply::new(code, Some(e), text);
        match event {
            Event::Auth { login, .. } => {
                self.login = Some(login);
                self.reply(reply.unwrap_or_else(|| {
                    ok(235, EnhancedCode::new(2, 7, 0), "Authentication successful")
                }));
            }
            Event::Hello { greeting, name } => {
                self.reset_transaction();
                let reply = reply.unwrap_or_else(|| self.hello_reply(greeting, &name));
                self.greeting = Some((greeting, name));
                self.reply(reply);
            }
            Event::Mail {
                reverse_path,
                params,
            } => {
                self.transaction = Some(Arc::new(Envelope::new(reverse_path, params)));
                self.reply(reply.unwrap_or_else(|| ok(250, EnhancedCode::new(2, 1, 0), "Ok")));
            }
            Event::Rcpt {
                forward_path,
                params,
            } => {
                if let Some(tx) = &mut self.transaction {
                    Arc::make_mut(tx).recipients.push(Recipient {
                        forward_path,
                        params,
                    });
                }
                self.reply(reply.unwrap_or_else(|| ok(250, EnhancedCode::new(2, 1, 5), "Ok")));
            }
            Event::StartData => self.start_content(chunk, reply),
            Event::Message => {
                self.reply(reply.unwrap_or_else(|| ok(250, CODE_OK, "Ok: queued")));
                self.reset_transaction();
            }
        }
    }

    fn start_content(&mut self, chunk: Option<Chunk>, reply: Option<Reply>) {
        match chunk {
            None => {
                self.content_size = 0;
                self.reply(
                    reply.unwrap_or_else(|| {
                        Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
                    }),
                );
                let limit = self.limit_for_decoder();
                self.phase = Phase::Data(DataDecoder::new(limit));
            }
            Some(chunk) => {
                self.content_size = 0;
                self.bdat_in_progress = true;
                self.bdat_check = LineEndingCheck::new();
                self.start_chunk(chunk, None);
            }
        }
    }

    fn refused(&mut self, event: Event, chunk: Option<Chunk>, reply: Reply) {
        match (event, chunk) {
            // The chunk's octets follow the BDAT command and must still be read.
            (Event::StartData, Some(chunk)) => {
                self.start_chunk(chunk, Some(reply));
            }
            (Event::Message, _) => {
                self.reply(reply);
                self.reset_transaction();
            }
            _ => self.reply(reply),
        }
    }

    fn raise(&mut self, event: Event, chunk: Option<Chunk>) {
        self.phase = Phase::Pending(event, chunk);
    }

    fn bad_sequence(&mut self, verb: Verb, text: &'static str) {
        self.error(Some(verb), Reply::new(503, Some(CODE_BAD_SEQUENCE), text));
    }

    /// A refusal the client caused; too many of them end the session.
    fn error(&mut self, verb: Option<Verb>, reply: Reply) {
        self.errors += 1;
        self.notices.push(Notice::Refused {
            verb,
            reply: reply.clone(),
        });
        self.reply(reply);
        if self.errors >= self.config().max_errors {
            let text = format!(
                "{} Too many errors, closing connection",
                self.config().hostname
            );
            self.close_with(Reply::new(421, Some(EnhancedCode::new(4, 7, 0)), text));
        }
    }

    fn reset_transaction(&mut self) {
        if self.transaction.take().is_some() {
            self.notices.push(Notice::TransactionReset);
        }
        self.bdat_in_progress = false;
        self.message.clear();
        self.content_size = 0;
    }

    fn enter_closed(&mut self) {
        self.phase = Phase::Closed;
        self.notices.push(Notice::Closing);
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.out);
    }
}

/// The line reader's limit: the command line limit, or AUTH's 12,288
/// octets when AUTH is offered (other commands are then held to the
/// command limit as they are parsed).
fn line_limit(config: &ServerConfig) -> usize {
    if config.extensions.auth.is_empty() {
        config.max_line_length
    } else {
        config.max_line_length.max(auth::MAX_AUTH_LINE)
    }
}

impl AsRef<ServerConfig> for ServerConfig {
    fn as_ref(&self) -> &ServerConfig {
        self
    }
}
