//! The message handed to the client, the per-recipient results it gives
//! back, and the checks and parameters that depend on what the server offers.

use std::sync::Arc;

use crate::address::{ForwardPath, ReversePath};
use crate::command::EnvelopeCommand;
use crate::envelope::{Envelope, Recipient};
use crate::params::{BodyType, MailParams, RcptParams};
use crate::reply::{EnhancedCode, Reply};
use crate::stage::Stage;

use super::Capabilities;

/// One message to send: its envelope (RFC 5321 §2.3.1), the same type the
/// server collected and the spool stored, and the size of its body.
///
/// SIZE, BODY and SMTPUTF8 go out as the session derives them from the
/// envelope, the body size and the server's EHLO reply, so they cannot
/// disagree with the body or with what the server offers; RET, ENVID and
/// AUTH are passed on from the envelope's MAIL parameters when the server
/// offers their extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The recipients to send to, in order; [`RecipientResult::index`]
    /// refers to `envelope.recipients`. Shared with the queued message it
    /// came from: an attempt does not copy it.
    pub envelope: Arc<Envelope>,
    /// The body in octets, as it will be sent (CRLF line ends, before
    /// dot-stuffing). With BDAT this is the exact chunk size, so it must match.
    pub body_size: u64,
}

impl Message {
    /// A message with a 7bit body and no optional parameters.
    pub fn new(reverse_path: ReversePath, recipients: Vec<ForwardPath>, body_size: u64) -> Message {
        Message {
            envelope: Arc::new(Envelope {
                reverse_path,
                params: MailParams::default(),
                recipients: recipients.into_iter().map(Recipient::new).collect(),
            }),
            body_size,
        }
    }

    /// The envelope, to change before the message is sent: copied first
    /// if another message shares it, so that one stays as it was.
    pub fn envelope_mut(&mut self) -> &mut Envelope {
        Arc::make_mut(&mut self.envelope)
    }

    fn body_type(&self) -> BodyType {
        self.envelope.body_type()
    }

    /// Why this message cannot be sent to a server with `caps` at all, as the
    /// permanent reply every recipient gets; `None` when it can.
    ///
    /// Refusing here rather than letting the server refuse saves a round
    /// trip, and gives a bounce a reason that names the actual cause.
    pub(crate) fn refusal(&self, caps: &Capabilities) -> Option<Reply> {
        if let Some(limit) = caps.size_limit()
            && self.body_size > limit
        {
            return Some(Reply::new(
                552,
                Some(EnhancedCode::new(5, 3, 4)),
                format!(
                    "Message size {} exceeds the remote server's fixed limit of {limit} octets",
                    self.body_size
                ),
            ));
        }
        match self.body_type() {
            BodyType::SevenBit => {}
            BodyType::EightBitMime if caps.eight_bit_mime => {}
            BodyType::EightBitMime => {
                return Some(Reply::new(
                    554,
                    Some(EnhancedCode::new(5, 6, 3)),
                    "Conversion required but not supported: 8-bit message and the remote server does not offer 8BITMIME",
                ));
            }
            BodyType::BinaryMime if caps.can_send_binary() => {}
            BodyType::BinaryMime => {
                return Some(Reply::new(
                    554,
                    Some(EnhancedCode::new(5, 6, 3)),
                    "Conversion required but not supported: binary message and the remote server does not offer CHUNKING and BINARYMIME",
                ));
            }
        }
        // RFC 8689 §4.2.1: a REQUIRETLS message goes only to a server that
        // promises to keep the promise. (That the connection is TLS, and
        // verified, is the transport's to check: the session cannot know.)
        if self.envelope.params.requiretls && !caps.requiretls {
            return Some(Reply::new(
                550,
                Some(EnhancedCode::new(5, 7, 30)),
                "REQUIRETLS support required: the remote server does not offer REQUIRETLS",
            ));
        }
        if self.envelope.needs_smtputf8() && !caps.smtputf8 {
            return Some(Reply::new(
                553,
                Some(EnhancedCode::new(5, 6, 7)),
                "Message needs SMTPUTF8 and the remote server does not offer it",
            ));
        }
        None
    }

    /// MAIL FROM's parameters that this server understands. Parameters of
    /// an extension the server did not advertise are left out: sending them
    /// would earn a `555` for the whole message.
    pub(crate) fn mail_params(&self, caps: &Capabilities) -> MailParams {
        let given = &self.envelope.params;
        MailParams {
            size: caps.size.map(|_| self.body_size),
            body: match self.body_type() {
                BodyType::SevenBit => None,
                other => Some(other),
            },
            smtputf8: self.envelope.needs_smtputf8(),
            ret: given.ret.filter(|_| caps.dsn),
            envid: given.envid.clone().filter(|_| caps.dsn),
            auth: given.auth.clone().filter(|_| !caps.auth.is_empty()),
            // `refusal` already stopped such a message at a server without it.
            requiretls: given.requiretls && caps.requiretls,
        }
    }

    /// Appends RCPT TO for recipient `index`; the DSN parameters only when
    /// offered.
    pub(crate) fn write_rcpt(&self, index: usize, caps: &Capabilities, out: &mut Vec<u8>) {
        let Recipient {
            forward_path,
            params,
        } = &self.envelope.recipients[index];
        let none = RcptParams::default();
        let params = if caps.dsn { params } else { &none };
        EnvelopeCommand::Rcpt(forward_path, params).write_to(out);
    }
}

/// What happened to one recipient of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// Position in the message's `envelope.recipients`.
    pub index: usize,
    pub outcome: Outcome,
    /// Where the session was when the reply came (or, for a reply made up
    /// here, what it was waiting for): RCPT for a refused recipient, end of
    /// data for the final word, the greeting for a refusing server...
    pub stage: Stage,
    /// Whether [`Outcome::reply`] came from the server or was made up here
    /// (a refusal before sending, a timeout, a lost connection, a broken
    /// reply). A DSN quotes a remote reply as its Diagnostic-Code; a local
    /// one is this MTA's own reason.
    pub origin: ReplyOrigin,
}

/// The final word on a recipient, with the reply that decided it (for logs
/// and bounces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took responsibility (2xx to the end of data).
    Delivered(Reply),
    /// Try again later (4xx, or trouble on the connection).
    Transient(Reply),
    /// Do not try again: bounce (5xx, or a local refusal).
    Permanent(Reply),
}

/// Where a result's reply came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOrigin {
    Remote,
    Local,
}

impl Outcome {
    /// The reply that decided the outcome.
    pub fn reply(&self) -> &Reply {
        match self {
            Outcome::Delivered(r) | Outcome::Transient(r) | Outcome::Permanent(r) => r,
        }
    }

    /// A failure by the reply's class: 5xx permanent, anything else
    /// transient (a failure with a 2xx/3xx code only comes from a protocol
    /// error, which is never the message's fault).
    pub(crate) fn failure(reply: Reply) -> Outcome {
        if reply.code() / 100 == 5 {
            Outcome::Permanent(reply)
        } else {
            Outcome::Transient(reply)
        }
    }
}
