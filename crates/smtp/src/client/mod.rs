//! The client side of an SMTP session, sans-IO: what the delivery side
//! speaks to a next hop.
//!
//! Like rustls or quinn-proto, the session does no I/O and reads no clock.
//! The caller owns the socket and the timers:
//!
//! - bytes from the server go in with [`ClientSession::receive`];
//! - bytes for the server come out of [`ClientSession::output`] (then
//!   [`ClientSession::consume_output`] with what was written);
//! - what happened comes out of [`ClientSession::poll_event`]: ready for a
//!   message, time to send the body, the per-recipient results, closed;
//! - [`ClientSession::timeout_class`] says which RFC 5321 §4.5.3.2 timeout
//!   applies to the wait in progress; when it runs out the caller says
//!   [`ClientSession::timed_out`], and a dead socket is
//!   [`ClientSession::connection_lost`].
//!
//! ```text
//!  Greeting ─220─▶ EHLO ─250─▶ Ready ◀─────────────────────────────────────┐
//!                   │ 5xx        ▲  │ send_message                          │
//!                   ▼            │  ▼                                       │
//!                  HELO ─250─────┘  MAIL, RCPT… (+DATA if pipelining) ─────┤ none accepted:
//!                                   │ 354 to DATA, or BDAT                  │ RSET
//!                                   ▼                                       │
//!                                  Body ─body_sent─▶ end-of-data reply ─────┘
//! ```
//!
//! Every message given to [`ClientSession::send_message`] ends in exactly one
//! [`ClientEvent::MessageDone`] with one [`RecipientResult`] per recipient,
//! whatever the server sends, whenever the connection dies: a caller never
//! has to guess what happened to a recipient.
//!
//! To a server that offers PIPELINING and CHUNKING, messages with small
//! bodies can follow one another without waiting: while one is in flight
//! the next goes out behind it (`RSET`, `MAIL`, `RCPT`s, `BDAT <n> LAST`,
//! the body), and the replies of all of them decide each in turn. A run of
//! messages then costs one round trip instead of one each.
//!
//! With [`ClientConfig::lmtp`] the same machine speaks LMTP (RFC 2033) to a
//! final delivery agent such as Dovecot: `LHLO` for EHLO, and the end of data
//! answered once per accepted recipient, so each recipient's mailbox decides
//! its own result.

mod body;
mod capabilities;
mod events;
mod machine;
mod message;

pub use body::{DotStuffed, dot_stuffed};
pub use capabilities::{Capabilities, Extension};
pub use events::{
    BodyError, BodyFraming, ClientEvent, CloseReason, SendError, SendErrorKind, TimeoutClass,
};
pub use message::{Message, Outcome, RecipientResult, ReplyOrigin};

use std::collections::VecDeque;

use crate::address::Domain;
use crate::command::Command;
use crate::data::DotStuffer;
use crate::reply::Reply;

pub use machine::{PIPELINED_BODY_MAX, PIPELINED_RUN_MAX};
use machine::{Phase, State, local_reply, timeout_class_of};

/// How this client introduces itself and frames bodies.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name in EHLO/HELO: this host's FQDN, or an address literal when it
    /// has none (RFC 5321 §4.1.1.1).
    pub hostname: Domain,
    pub bdat: BdatPolicy,
    /// Speak LMTP (RFC 2033) rather than SMTP: `LHLO` in place of EHLO, with
    /// no HELO fallback, and after the end of data one reply per accepted
    /// recipient, in RCPT order, each deciding that recipient alone.
    pub lmtp: bool,
    /// Whether to ask for TLS with STARTTLS (RFC 3207).
    pub tls: TlsUse,
    /// Log in (AUTH PLAIN or LOGIN, RFC 4954) after EHLO, when the server
    /// offers it. Sent only inside TLS unless `in_clear` says otherwise.
    pub credentials: Option<Credentials>,
}

/// A login at the next hop (a provider's relay).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub login: String,
    pub password: String,
    /// Send them on a connection without TLS too. Off by default: the
    /// password would cross the network as it is.
    pub in_clear: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("in_clear", &self.in_clear)
            .finish_non_exhaustive()
    }
}

/// Whether the session asks for TLS. Which certificate the caller accepts
/// is the caller's business: the session only speaks the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsUse {
    /// Never say STARTTLS (LMTP on a local socket; `security_level = none`).
    #[default]
    Off,
    /// STARTTLS when the server offers it; in clear when it does not or
    /// refuses it.
    IfOffered,
    /// STARTTLS, or no mail at all: a server that does not offer it, or
    /// refuses it, gets QUIT and every recipient a temporary failure.
    Required,
}

impl ClientConfig {
    pub fn new(hostname: Domain) -> Self {
        ClientConfig {
            hostname,
            bdat: BdatPolicy::default(),
            lmtp: false,
            tls: TlsUse::Off,
            credentials: None,
        }
    }

    /// An LMTP client (see [`ClientConfig::lmtp`]).
    pub fn lmtp(hostname: Domain) -> Self {
        ClientConfig {
            lmtp: true,
            ..ClientConfig::new(hostname)
        }
    }
}

/// When to send the body with BDAT (RFC 3030) rather than DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BdatPolicy {
    /// Only for `BODY=BINARYMIME`, which cannot go any other way. DATA is the
    /// path every server has exercised for decades, and with
    /// [`dot_stuffed`] it costs no copy either.
    #[default]
    WhenRequired,
    /// Whenever the server offers CHUNKING: one `BDAT <size> LAST` and the
    /// body as it is, with no scan for dots. Needs an exact
    /// [`Message::body_size`].
    WhenOffered,
}

/// One SMTP client session (one connection to one server).
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    /// `output[..output_sent]` is already written by the caller.
    output_sent: usize,
    events: VecDeque<ClientEvent>,
    greeting: Option<Reply>,
    remote_name: Option<String>,
    capabilities: Capabilities,
    /// A message given before the session was ready for it (during the
    /// greeting, EHLO, or the clean-up after the previous message).
    queued: Option<Message>,
    /// Transactions sent behind the current one, before its replies came;
    /// each becomes current when the one before it is finished.
    pipelined: VecDeque<Box<machine::Transaction>>,
    /// [`ClientSession::quit`] was called while busy: QUIT once idle.
    quit_requested: bool,
    /// The connection is inside TLS.
    tls: bool,
    /// AUTH succeeded on this connection.
    authenticated: bool,
}

impl ClientSession {
    /// A session on a freshly opened connection: the server speaks first,
    /// so there is nothing to send until its greeting arrives.
    pub fn new(config: ClientConfig) -> Self {
        ClientSession {
            config,
            state: State::Greeting,
            input: Vec::new(),
            output: Vec::new(),
            output_sent: 0,
            events: VecDeque::new(),
            greeting: None,
            remote_name: None,
            capabilities: Capabilities::default(),
            queued: None,
            pipelined: VecDeque::new(),
            quit_requested: false,
            tls: false,
            authenticated: false,
        }
    }

    /// The caller finished the TLS handshake that [`ClientEvent::StartTls`]
    /// asked for: the session says EHLO again, as RFC 3207 §4.2 requires,
    /// and forgets what the server offered in clear.
    pub fn tls_established(&mut self) {
        if matches!(self.state, State::Handshake) {
            self.tls = true;
            self.capabilities = Capabilities::default();
            self.write_hello();
            self.state = State::Ehlo;
        }
    }

    /// The TLS handshake after [`ClientEvent::StartTls`] failed (`why`, for
    /// the reply every recipient left gets: `451 4.7.5 TLS handshake
    /// failed: why`). The connection is unusable; no QUIT is sent.
    pub fn tls_failed(&mut self, why: &str) {
        let reply = Reply::new(
            451,
            Some(crate::reply::EnhancedCode::new(4, 7, 5)),
            format!("TLS handshake failed: {why}"),
        );
        self.abort_with(CloseReason::TlsFailed(why.to_owned()), reply);
    }

    /// Whether the session runs inside TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Bytes received from the server, in any pieces.
    pub fn receive(&mut self, bytes: &[u8]) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.input.extend_from_slice(bytes);
        self.process_input();
    }

    /// Bytes to send to the server.
    pub fn output(&self) -> &[u8] {
        &self.output[self.output_sent..]
    }

    /// `n` bytes of [`ClientSession::output`] were written.
    pub fn consume_output(&mut self, n: usize) {
        self.output_sent = (self.output_sent + n).min(self.output.len());
        if self.output_sent == self.output.len() {
            self.output.clear();
            self.output_sent = 0;
        }
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Starts a message now if the session is idle, or as soon as it is
    /// (after the greeting and EHLO, or after the previous message's clean-up).
    ///
    /// While a transaction is in flight the message is sent at once behind
    /// it, without waiting for its replies, when the server offers
    /// PIPELINING and CHUNKING, [`BdatPolicy::WhenOffered`] is set, every
    /// command and body in flight is out, the body is at most
    /// [`PIPELINED_BODY_MAX`] and the bodies in flight stay within
    /// [`PIPELINED_RUN_MAX`]: `RSET`, `MAIL`, `RCPT`s and `BDAT <n> LAST`,
    /// then [`ClientEvent::SendBody`]. Several messages then cost one round
    /// trip. Otherwise a busy session refuses with [`SendErrorKind::Busy`]:
    /// try again after the next event. [`ClientEvent::MessageDone`]s come
    /// in the order the messages were given.
    pub fn send_message(&mut self, message: Message) -> Result<(), SendError> {
        let refuse = |kind, message| {
            Err(SendError {
                kind,
                message: Box::new(message),
            })
        };
        if message.envelope.recipients.is_empty() {
            return refuse(SendErrorKind::NoRecipients, message);
        }
        if self.quit_requested || matches!(self.state, State::Quitting(_) | State::Closed) {
            return refuse(SendErrorKind::Closed, message);
        }
        if self.can_follow(&message) {
            self.follow(message);
            return Ok(());
        }
        if self.queued.is_some() || matches!(self.state, State::Transaction(_)) {
            return refuse(SendErrorKind::Busy, message);
        }
        if matches!(self.state, State::Ready) {
            self.state = self.start(message);
        } else {
            self.queued = Some(message);
        }
        Ok(())
    }

    /// The convenient way to answer [`ClientEvent::SendBody`]: the body is
    /// framed into [`ClientSession::output`] (one copy), and the session
    /// goes on to wait for the final reply.
    pub fn send_body(&mut self, body: &[u8]) -> Result<(), BodyError> {
        let Some(t) = self.body_transaction() else {
            return Err(BodyError::NotExpected);
        };
        match t.framing {
            BodyFraming::Raw { size } if size != body.len() as u64 => {
                let error = BodyError::SizeMismatch {
                    declared: size,
                    actual: body.len() as u64,
                };
                let detail = format!("BDAT body of {} octets, {size} declared", body.len());
                // No QUIT: the server would read it as body octets.
                let state = std::mem::replace(&mut self.state, State::Closed);
                self.state = self.close(
                    state,
                    CloseReason::CallerError(detail.clone()),
                    local_reply(451, (4, 3, 0), detail),
                    ReplyOrigin::Local,
                );
                return Err(error);
            }
            BodyFraming::Raw { .. } => self.output.extend_from_slice(body),
            BodyFraming::DotStuffed => {
                let mut stuffer = DotStuffer::new();
                stuffer.encode(body, &mut self.output);
                stuffer.finish(&mut self.output);
            }
        }
        self.body_sent()
    }

    /// The caller has written the whole body as [`ClientEvent::SendBody`]
    /// asked; the session now waits for the final reply.
    pub fn body_sent(&mut self) -> Result<(), BodyError> {
        let Some(t) = self.body_transaction() else {
            return Err(BodyError::NotExpected);
        };
        match &mut t.phase {
            Phase::Body { awaiting } if awaiting.is_empty() => t.phase = Phase::EndOfData,
            // Sent with its envelope: the envelope's replies come first.
            Phase::Body { awaiting } => {
                t.phase = Phase::Envelope {
                    awaiting: std::mem::take(awaiting),
                    unsent: VecDeque::new(),
                    mail_refused: false,
                }
            }
            _ => return Err(BodyError::NotExpected),
        }
        // Replies that arrived during the body were held back until now.
        self.process_input();
        Ok(())
    }

    /// The transaction whose body the caller is writing: the last one that
    /// followed, or else the current one.
    fn body_transaction(&mut self) -> Option<&mut machine::Transaction> {
        let t = match self.pipelined.back_mut() {
            Some(t) => t,
            None => match &mut self.state {
                State::Transaction(t) => t,
                _ => return None,
            },
        };
        t.in_body().then_some(&mut **t)
    }

    /// Ends the session politely: QUIT now if idle, otherwise once the
    /// current (or queued) message is finished.
    pub fn quit(&mut self) {
        match self.state {
            State::Ready => {
                self.write(&Command::Quit);
                self.state = State::Quitting(CloseReason::Quit);
            }
            State::Quitting(_) | State::Closed => {}
            _ => self.quit_requested = true,
        }
    }

    /// The caller's timer for [`ClientSession::timeout_class`] ran out. The
    /// session closes without QUIT (the server is not listening) and any
    /// recipient without a result gets a transient failure.
    pub fn timed_out(&mut self) {
        let class = self.timeout_class();
        let text = match class {
            Some(class) => format!("Timed out waiting for {class}"),
            None => "Connection timed out".to_owned(),
        };
        self.abort(CloseReason::TimedOut(class), text);
    }

    /// The connection is gone (EOF, reset, write error). Pass any last bytes
    /// read to [`ClientSession::receive`] first: they may hold the reply
    /// that finished a message.
    pub fn connection_lost(&mut self) {
        self.abort(
            CloseReason::ConnectionLost,
            "Connection lost to the remote server".to_owned(),
        );
    }

    /// Which RFC 5321 §4.5.3.2 timeout applies now; `None` when the session
    /// waits for nothing from the server (idle, or closed).
    pub fn timeout_class(&self) -> Option<TimeoutClass> {
        timeout_class_of(&self.state)
    }

    /// What the server offered in its EHLO reply (nothing after HELO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// How this session sends bodies, as it was configured.
    pub fn bdat_policy(&self) -> BdatPolicy {
        self.config.bdat
    }

    /// The server's 220 greeting, once received.
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// The name the server gave itself in its EHLO/HELO reply (or, before
    /// that, its greeting): for the `Received:` trail of a log line or a
    /// DSN's Remote-MTA.
    pub fn remote_name(&self) -> Option<&str> {
        self.remote_name.as_deref()
    }

    /// Whether the session is idle, so [`ClientSession::send_message`] starts at once.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    fn write(&mut self, command: &Command) {
        command.write_to(&mut self.output);
    }

    /// EHLO, or LHLO for LMTP. LHLO takes the same argument as EHLO (RFC
    /// 2033 §4.1) but is no SMTP [`Command`], so it is written here.
    pub(super) fn write_hello(&mut self) {
        if self.config.lmtp {
            let line = format!("LHLO {}\r\n", self.config.hostname);
            self.output.extend_from_slice(line.as_bytes());
        } else {
            self.write(&Command::Ehlo(self.config.hostname.clone()));
        }
    }
}
