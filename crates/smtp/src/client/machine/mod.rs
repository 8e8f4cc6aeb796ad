//! The transitions: how each reply, and each of the caller's calls that
//! cannot be answered at once, moves the session on. The session's opening
//! (EHLO, STARTTLS, AUTH) is in `hello`, a message's transaction in
//! `transaction`; here are the states, the dispatch of each reply, and how a
//! session ends.

mod hello;
mod transaction;

use std::collections::VecDeque;

use crate::command::Command;
use crate::reply::{EnhancedCode, Reply};
use crate::stage::Stage;

use super::{
    BodyFraming, Capabilities, ClientEvent, ClientSession, CloseReason, Message, Outcome,
    RecipientResult, ReplyOrigin, TimeoutClass, TlsUse, capabilities,
};

/// How much a server may send while the caller is writing the body (when
/// nothing is expected from it) before the session gives up on it.
const MAX_INPUT_DURING_BODY: usize = 64 * 1024;

/// The largest body sent with its envelope, before the server has accepted
/// a recipient (`BDAT <size> LAST` pipelined behind MAIL and RCPT, as Exim
/// does): one round trip per message instead of two. Should every
/// recipient be refused, at most this much went out for nothing, which a
/// round trip of most paths costs more than; and the whole of it fits in a
/// socket's send buffer, so writing it never waits on a server that waits
/// for us to read its replies.
pub const PIPELINED_BODY_MAX: u64 = 64 * 1024;

/// The body octets in flight at most when transactions follow one another
/// without waiting for replies (see [`ClientSession::send_message`]). Like
/// one body with its envelope, everything in flight fits in the socket
/// buffers on both sides, so a server that answers before it reads on never
/// leaves both ends waiting for each other.
pub const PIPELINED_RUN_MAX: u64 = 256 * 1024;

/// Where the session is. A message in progress lives only inside
/// [`State::Transaction`] (or, sent behind it, in the session's line of
/// followers, which becomes the state in turn), so a result cannot be given
/// twice or lost.
#[derive(Debug)]
pub(super) enum State {
    Greeting,
    Ehlo,
    Helo,
    /// STARTTLS sent; its reply decides.
    StartTls,
    /// 220 to STARTTLS: the caller runs the handshake, then
    /// [`ClientSession::tls_established`]. Nothing is read meanwhile.
    Handshake,
    /// AUTH sent; the server's next reply decides (LOGIN: `Some(step)`
    /// while its two challenges come).
    Auth(Option<LoginStep>),
    Ready,
    Transaction(Box<Transaction>),
    /// The message's results are out; one more reply brings the server back
    /// to a clean state.
    Cleanup(Cleanup),
    /// QUIT sent; the reason is what [`ClientEvent::Closed`] will report.
    Quitting(CloseReason),
    Closed,
}

/// Which of LOGIN's challenges the next reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoginStep {
    User,
    Password,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cleanup {
    /// RSET, after a transaction that ended before its end of data.
    Rset,
    /// A lone "." after a 354 when no recipient was accepted (RFC 2920 §3.1:
    /// the client "should send a single dot").
    Dot,
}

#[derive(Debug)]
pub(super) struct Transaction {
    message: Message,
    pub(super) framing: BodyFraming,
    recipients: Vec<Rcpt>,
    pub(super) phase: Phase,
}

impl Transaction {
    /// The caller is writing this transaction's body.
    pub(super) fn in_body(&self) -> bool {
        matches!(self.phase, Phase::Body { .. })
    }
}

#[derive(Debug)]
pub(super) enum Rcpt {
    Pending,
    Accepted,
    Done(Outcome, ReplyOrigin, Stage),
}

#[derive(Debug)]
pub(super) enum Phase {
    /// MAIL and RCPT (and DATA when pipelining) are out or about to be.
    /// Replies come back in the order of `awaiting` (RFC 2920 §3.1); `unsent`
    /// holds the RCPTs not yet sent to a server without PIPELINING.
    Envelope {
        awaiting: VecDeque<Step>,
        unsent: VecDeque<Step>,
        mail_refused: bool,
    },
    /// [`ClientEvent::SendBody`] is out; the caller is writing the body.
    /// `awaiting`: the replies still due for the envelope and the body's
    /// `BDAT … LAST` when they all went out together (empty when the body
    /// follows the envelope's replies); they are read once the body is out.
    Body { awaiting: VecDeque<Step> },
    /// The body is out; the final reply decides.
    EndOfData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Mail,
    Rcpt(usize),
    Data,
    /// `BDAT <size> LAST` sent with the envelope: its reply is the end of
    /// data's.
    Bdat,
    /// The RSET in front of a transaction that followed another without
    /// waiting for its replies.
    Rset,
}

/// The class of a reply code: its first digit.
fn class(reply: &Reply) -> u16 {
    reply.code() / 100
}

impl ClientSession {
    pub(super) fn process_input(&mut self) {
        let mut consumed = 0;
        loop {
            match &self.state {
                State::Closed => {
                    consumed = self.input.len();
                    break;
                }
                // The server has nothing to say while the body goes out; if
                // it says something anyway, it is read once the body is out,
                // in step with what was sent.
                State::Transaction(t) if matches!(t.phase, Phase::Body { .. }) => break,
                _ if self.pipelined.back().is_some_and(|t| t.in_body()) => break,
                // What follows the 220 to STARTTLS belongs to TLS.
                State::Handshake => break,
                _ => {}
            }
            let state = std::mem::replace(&mut self.state, State::Closed);
            match Reply::parse(&self.input[consumed..]) {
                Ok(Some((reply, n))) => {
                    consumed += n;
                    self.state = self.on_reply(state, reply);
                    // RFC 3207 §5 (CVE-2011-0411 on the client side): bytes
                    // that came in clear after the 220 would be read as if
                    // the server had said them inside TLS.
                    if matches!(self.state, State::Handshake) && consumed < self.input.len() {
                        consumed = self.input.len();
                        let state = std::mem::replace(&mut self.state, State::Closed);
                        self.state = self.protocol_error(
                            state,
                            "the server sent more after its 220 to STARTTLS (a STARTTLS injection)"
                                .to_owned(),
                        );
                        break;
                    }
                    if matches!(self.state, State::Handshake) {
                        self.events.push_back(ClientEvent::StartTls);
                    }
                }
                Ok(None) => {
                    self.state = state;
                    break;
                }
                Err(e) => {
                    consumed = self.input.len();
                    self.state = self.protocol_error(state, format!("malformed reply: {e}"));
                    break;
                }
            }
        }
        self.input.drain(..consumed);
        // Outside the body, Reply::parse bounds what an unfinished reply can
        // hold; during it, nothing is parsed, so the bound is here.
        if self.input.len() > MAX_INPUT_DURING_BODY {
            self.input.clear();
            let state = std::mem::replace(&mut self.state, State::Closed);
            self.state =
                self.protocol_error(state, "the server kept sending during the body".to_owned());
        }
    }

    fn on_reply(&mut self, state: State, reply: Reply) -> State {
        let class = class(&reply);
        // RFC 5321 §3.8: 421 may come at any time, in place of any reply,
        // and the server closes right after it.
        if reply.code() == 421 && !matches!(state, State::Greeting | State::Quitting(_)) {
            let reason = match state {
                State::Ehlo | State::Helo => CloseReason::HelloRefused(reply.clone()),
                _ => CloseReason::ServiceClosing(reply.clone()),
            };
            return self.close(state, reason, reply, ReplyOrigin::Remote);
        }
        match state {
            State::Greeting => match class {
                2 => {
                    self.remote_name = capabilities::announced_name(&reply);
                    self.greeting = Some(reply);
                    self.write_hello();
                    State::Ehlo
                }
                4 | 5 => {
                    let reason = CloseReason::GreetingRefused(reply.clone());
                    if reply.code() == 421 {
                        self.close(state, reason, reply, ReplyOrigin::Remote)
                    } else {
                        // RFC 5321 §3.1: after a 554 greeting the client
                        // should still say QUIT.
                        self.fail(state, reason, reply, ReplyOrigin::Remote)
                    }
                }
                _ => self.unexpected(state, &reply),
            },
            State::Ehlo => match class {
                2 => {
                    self.capabilities = Capabilities::from_ehlo_reply(&reply);
                    if let Some(next) = self.maybe_starttls() {
                        return next;
                    }
                    self.hello_done(&reply)
                }
                // RFC 5321 §4.1.4, §3.2: a server that does not know EHLO
                // answers 500/502 (or 504, 550); fall back to HELO. LMTP has
                // no older greeting to fall back to (RFC 2033 §4.1).
                5 if !self.config.lmtp => {
                    self.write(&Command::Helo(self.config.hostname.clone()));
                    State::Helo
                }
                4 | 5 => {
                    let reason = CloseReason::HelloRefused(reply.clone());
                    self.fail(state, reason, reply, ReplyOrigin::Remote)
                }
                _ => self.unexpected(state, &reply),
            },
            State::Helo => match class {
                2 => {
                    self.capabilities = Capabilities::default();
                    if let Some(next) = self.maybe_starttls() {
                        return next;
                    }
                    self.hello_done(&reply)
                }
                4 | 5 => {
                    let reason = CloseReason::HelloRefused(reply.clone());
                    self.fail(state, reason, reply, ReplyOrigin::Remote)
                }
                _ => self.unexpected(state, &reply),
            },
            State::StartTls => match class {
                2 => State::Handshake,
                4 | 5 if self.config.tls == TlsUse::Required => {
                    let local = local_reply(
                        451,
                        (4, 7, 4),
                        format!("TLS is required, but the server refused STARTTLS: {reply}"),
                    );
                    self.fail(
                        state,
                        CloseReason::TlsUnavailable(Some(reply)),
                        local,
                        ReplyOrigin::Local,
                    )
                }
                // Opportunistic: go on in clear, with what EHLO offered.
                4 | 5 => self.idle(),
                _ => self.unexpected(state, &reply),
            },
            State::Handshake => self.unexpected(state, &reply),
            State::Auth(step) => self.on_auth_reply(step, reply),
            State::Ready => self.unexpected(state, &reply),
            State::Transaction(t) => self.on_transaction_reply(t, reply),
            State::Cleanup(cleanup) => match (cleanup, class) {
                (Cleanup::Rset, 2) | (Cleanup::Dot, 2 | 4 | 5) => self.idle(),
                _ => self.unexpected(state, &reply),
            },
            State::Quitting(reason) => {
                // Whatever it says (221, normally), the session is over.
                self.events.push_back(ClientEvent::Closed(reason));
                State::Closed
            }
            State::Closed => State::Closed,
        }
    }

    /// Nothing is outstanding: the next queued message, QUIT, or Ready.
    fn idle(&mut self) -> State {
        if let Some(next) = self.pipelined.pop_front() {
            return State::Transaction(next);
        }
        if let Some(message) = self.queued.take() {
            return self.start(message);
        }
        if self.quit_requested {
            self.write(&Command::Quit);
            return State::Quitting(CloseReason::Quit);
        }
        self.events.push_back(ClientEvent::Ready);
        State::Ready
    }

    /// A reply that does not fit where the session is.
    fn unexpected(&mut self, state: State, reply: &Reply) -> State {
        let detail = match timeout_class_of(&state) {
            Some(class) => format!("unexpected reply while waiting for {class}: {reply}"),
            None => format!("unexpected reply while idle: {reply}"),
        };
        self.protocol_error(state, detail)
    }

    fn protocol_error(&mut self, state: State, detail: String) -> State {
        if let State::Quitting(reason) = state {
            self.events.push_back(ClientEvent::Closed(reason));
            return State::Closed;
        }
        let reply = local_reply(451, (4, 5, 0), format!("Protocol error: {detail}"));
        self.close(
            state,
            CloseReason::ProtocolError(detail),
            reply,
            ReplyOrigin::Local,
        )
    }

    pub(super) fn abort(&mut self, reason: CloseReason, text: String) {
        self.abort_with(reason, local_reply(451, (4, 4, 2), text));
    }

    pub(super) fn abort_with(&mut self, reason: CloseReason, reply: Reply) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match state {
            State::Closed => State::Closed,
            State::Quitting(reason) => {
                self.events.push_back(ClientEvent::Closed(reason));
                State::Closed
            }
            state => self.close(state, reason, reply, ReplyOrigin::Local),
        };
    }

    /// Ends the session with a QUIT (the server is still in step and
    /// listening): every recipient without a result gets `reply`.
    fn fail(
        &mut self,
        state: State,
        reason: CloseReason,
        reply: Reply,
        origin: ReplyOrigin,
    ) -> State {
        self.fail_recipients(state, reply, origin);
        self.write(&Command::Quit);
        State::Quitting(reason)
    }

    /// Ends the session at once, without QUIT (the server is gone, closing,
    /// or out of step).
    pub(super) fn close(
        &mut self,
        state: State,
        reason: CloseReason,
        reply: Reply,
        origin: ReplyOrigin,
    ) -> State {
        self.fail_recipients(state, reply, origin);
        self.events.push_back(ClientEvent::Closed(reason));
        State::Closed
    }

    fn fail_recipients(&mut self, state: State, reply: Reply, origin: ReplyOrigin) {
        let stage = stage_of(&state);
        if let State::Transaction(mut t) = state {
            for rcpt in &mut t.recipients {
                if matches!(rcpt, Rcpt::Pending | Rcpt::Accepted) {
                    *rcpt = Rcpt::Done(Outcome::failure(reply.clone()), origin, stage);
                }
            }
            self.finish(*t);
        }
        // Those that followed, in order: their replies would have come next.
        while let Some(mut t) = self.pipelined.pop_front() {
            for rcpt in &mut t.recipients {
                if matches!(rcpt, Rcpt::Pending | Rcpt::Accepted) {
                    *rcpt = Rcpt::Done(Outcome::failure(reply.clone()), origin, Stage::Connect);
                }
            }
            self.finish(*t);
        }
        if let Some(message) = self.queued.take() {
            let results = (0..message.envelope.recipients.len())
                .map(|index| RecipientResult {
                    index,
                    outcome: Outcome::failure(reply.clone()),
                    stage,
                    origin,
                })
                .collect();
            self.events.push_back(ClientEvent::MessageDone(results));
        }
    }
}

/// What the session was waiting for in `state`, as a stage: where a failure
/// of the session itself (a timeout, a lost connection, a 421) happened.
fn stage_of(state: &State) -> Stage {
    match state {
        State::Greeting => Stage::Greeting,
        State::Ehlo | State::Helo | State::StartTls | State::Handshake => Stage::Hello,
        State::Auth(_) => Stage::Auth,
        State::Transaction(t) => match &t.phase {
            Phase::Envelope { awaiting, .. } => match awaiting.front() {
                Some(Step::Mail) => Stage::Mail,
                Some(Step::Rcpt(_)) => Stage::Rcpt,
                Some(Step::Data) | None => Stage::Data,
                Some(Step::Bdat) => Stage::EndOfData,
                Some(Step::Rset) => Stage::Connect,
            },
            Phase::Body { .. } => Stage::Data,
            Phase::EndOfData => Stage::EndOfData,
        },
        // Between messages: a queued message waits for the server to be
        // ready for it, as at the greeting.
        State::Ready | State::Cleanup(_) | State::Quitting(_) | State::Closed => Stage::Connect,
    }
}

pub(super) fn local_reply(
    code: u16,
    (class, subject, detail): (u8, u16, u16),
    text: impl Into<String>,
) -> Reply {
    Reply::new(
        code,
        Some(EnhancedCode::new(class, subject, detail)),
        text.into(),
    )
}

pub(super) fn timeout_class_of(state: &State) -> Option<TimeoutClass> {
    match state {
        State::Greeting => Some(TimeoutClass::Greeting),
        State::Ehlo | State::Helo => Some(TimeoutClass::Hello),
        State::StartTls | State::Handshake => Some(TimeoutClass::StartTls),
        State::Auth(_) => Some(TimeoutClass::Auth),
        State::Ready | State::Closed => None,
        State::Transaction(t) => match &t.phase {
            Phase::Envelope { awaiting, .. } => awaiting.front().map(|step| match step {
                Step::Mail => TimeoutClass::Mail,
                Step::Rcpt(_) => TimeoutClass::Rcpt,
                Step::Data => TimeoutClass::DataInit,
                Step::Bdat => TimeoutClass::DataTermination,
                Step::Rset => TimeoutClass::Rset,
            }),
            Phase::Body { .. } => Some(TimeoutClass::DataBlock),
            Phase::EndOfData => Some(TimeoutClass::DataTermination),
        },
        State::Cleanup(Cleanup::Rset) => Some(TimeoutClass::Rset),
        State::Cleanup(Cleanup::Dot) => Some(TimeoutClass::DataTermination),
        State::Quitting(_) => Some(TimeoutClass::Quit),
    }
}
