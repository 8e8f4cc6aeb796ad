//! What the caller hears from the session, and what it may be told back.

use std::fmt;
use std::time::Duration;

use crate::reply::Reply;

#[cfg(doc)]
use super::{ClientSession, DotStuffer, dot_stuffed};
use super::{Message, RecipientResult};

/// How the caller must put the body on the wire after
/// [`ClientEvent::SendBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// After DATA's 354: the body dot-stuffed, with bare CR and LF made CRLF,
    /// and ended by `CRLF "." CRLF` — what [`dot_stuffed`] yields, or
    /// [`DotStuffer::encode`] then [`DotStuffer::finish`] write.
    DotStuffed,
    /// After `BDAT <size> LAST` (already in [`ClientSession::output`]):
    /// exactly `size` octets of the body, unchanged.
    Raw { size: u64 },
}

/// What the caller learns from the session; see [`ClientSession::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The session is idle: give it a message ([`ClientSession::send_message`])
    /// or end it ([`ClientSession::quit`]). Events queue up, so by the time
    /// the caller sees this the session may have closed since (a 421, say):
    /// `send_message` then hands the envelope back.
    Ready,
    /// Time to send the body of the current message.
    ///
    /// Write everything in [`ClientSession::output`] first, then the body
    /// framed as told, then call [`ClientSession::body_sent`]. The session
    /// never holds the body: the caller sends it from wherever it lives (for
    /// the spool, a memory map) with as few copies as its transport allows:
    ///
    /// - [`BodyFraming::Raw`]: the mapped region as it is — no copy;
    /// - [`BodyFraming::DotStuffed`]: the slices of [`dot_stuffed`] with
    ///   vectored writes — no copy; or [`DotStuffer`] into a reused buffer
    ///   for a body that arrives in pieces — one copy.
    ///
    /// A caller that prefers simplicity to copies hands the body to
    /// [`ClientSession::send_body`] instead, which frames it into the output.
    SendBody(BodyFraming),
    /// The server said 220 to STARTTLS: run the TLS handshake on the
    /// connection now (nothing is in [`ClientSession::output`]), then call
    /// [`ClientSession::tls_established`]. A handshake that fails ends the
    /// connection: say [`ClientSession::connection_lost`]. Whatever the
    /// server had sent after its 220 was already refused as an injection
    /// (the session closed with a protocol error instead of this event).
    StartTls,
    /// The current message is finished: one result per recipient, in
    /// recipient order.
    MessageDone(Vec<RecipientResult>),
    /// The session is over. Write what [`ClientSession::output`] still holds
    /// if the connection allows, then close it. No more events follow.
    Closed(CloseReason),
}

/// Why the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// QUIT was answered: the normal end.
    Quit,
    /// The greeting was not 220 (RFC 5321 §3.1). On a 4xx the caller may
    /// try the next MX.
    GreetingRefused(Reply),
    /// EHLO and then HELO were refused, EHLO with a 4xx, or LHLO (LMTP has no fallback).
    HelloRefused(Reply),
    /// The server sent 421: it is closing the connection (RFC 5321 §3.8).
    ServiceClosing(Reply),
    /// A malformed reply, a reply where none was expected, or one that makes
    /// no sense for the command it answers. The connection is out of step
    /// and cannot be used further.
    ProtocolError(String),
    /// The caller's timer ran out while the session waited in this class.
    TimedOut(Option<TimeoutClass>),
    /// The caller reported the connection gone.
    ConnectionLost,
    /// The caller broke the contract (a body of another size than declared
    /// for BDAT).
    CallerError(String),
    /// [`TlsUse::Required`](super::TlsUse::Required), and the server does
    /// not offer STARTTLS (`None`) or refused it (its reply).
    TlsUnavailable(Option<Reply>),
    /// The caller's TLS handshake failed (the reason as the caller gave it).
    TlsFailed(String),
    /// The server refused our login (its reply), or we would not send the
    /// password in clear (`None`).
    AuthFailed(Option<Reply>),
}

/// What the session is waiting for, to pick the timeout (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutClass {
    /// The 220 greeting.
    Greeting,
    /// The reply to EHLO or HELO.
    Hello,
    /// The reply to STARTTLS, and the handshake after it.
    StartTls,
    /// The replies to AUTH.
    Auth,
    Mail,
    Rcpt,
    /// The 354 to DATA.
    DataInit,
    /// The caller is writing the body: each write must make progress.
    DataBlock,
    /// The reply to the end of data (final "." or `BDAT LAST`).
    DataTermination,
    Rset,
    Quit,
}

impl TimeoutClass {
    /// The RFC 5321 §4.5.3.2 minimum. The RFC sets none for the greeting's
    /// neighbours HELO/EHLO, RSET and QUIT; they get the command timeout of
    /// 5 minutes, as MAIL and RCPT do.
    pub fn rfc5321_minimum(self) -> Duration {
        let minutes = match self {
            TimeoutClass::Greeting
            | TimeoutClass::Hello
            | TimeoutClass::StartTls
            | TimeoutClass::Auth
            | TimeoutClass::Mail
            | TimeoutClass::Rcpt
            | TimeoutClass::Rset
            | TimeoutClass::Quit => 5,
            TimeoutClass::DataInit => 2,
            TimeoutClass::DataBlock => 3,
            TimeoutClass::DataTermination => 10,
        };
        Duration::from_secs(minutes * 60)
    }
}

impl fmt::Display for TimeoutClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutClass::Greeting => "the greeting",
            TimeoutClass::Hello => "the reply to EHLO/HELO",
            TimeoutClass::StartTls => "the reply to STARTTLS and the TLS handshake",
            TimeoutClass::Auth => "the reply to AUTH",
            TimeoutClass::Mail => "the reply to MAIL",
            TimeoutClass::Rcpt => "the reply to RCPT",
            TimeoutClass::DataInit => "the reply to DATA",
            TimeoutClass::DataBlock => "sending the message body",
            TimeoutClass::DataTermination => "the reply to the end of data",
            TimeoutClass::Rset => "the reply to RSET",
            TimeoutClass::Quit => "the reply to QUIT",
        })
    }
}

/// Why [`ClientSession::send_message`] did not take a message; the envelope
/// comes back so the caller can send it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub kind: SendErrorKind,
    pub message: Box<Message>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendErrorKind {
    /// A message is already queued or in progress: wait for its
    /// [`ClientEvent::MessageDone`].
    Busy,
    /// The session is closed or quitting.
    Closed,
    /// An envelope needs at least one recipient.
    NoRecipients,
}

/// Misuse of [`ClientSession::send_body`] / [`ClientSession::body_sent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// No [`ClientEvent::SendBody`] is outstanding.
    NotExpected,
    /// A BDAT body of another length than [`Message::body_size`]: nothing
    /// was written and the session is closed, since the server expects the
    /// declared number of octets.
    SizeMismatch { declared: u64, actual: u64 },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            SendErrorKind::Busy => "a message is already in progress on this session",
            SendErrorKind::Closed => "the session is closed or quitting",
            SendErrorKind::NoRecipients => "the envelope has no recipients",
        })
    }
}

impl std::error::Error for SendError {}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotExpected => f.write_str("the session is not waiting for a body"),
            BodyError::SizeMismatch { declared, actual } => write!(
                f,
                "body of {actual} octets, but {declared} were declared for BDAT"
            ),
        }
    }
}

impl std::error::Error for BodyError {}
