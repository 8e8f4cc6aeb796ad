//! The transitions: how each reply, and each of the caller's calls that
//! cannot be answered at once, moves the session on.

use std::collections::VecDeque;

use crate::command::Command;
use crate::params::BodyType;
use crate::reply::{EnhancedCode, Reply};

use super::{
    BdatPolicy, BodyFraming, Capabilities, ClientEvent, ClientSession, CloseReason, Message,
    Outcome, RecipientResult, ReplyOrigin, TimeoutClass, TlsUse, capabilities,
};
use crate::stage::Stage;

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

    /// After EHLO (or HELO) in clear: STARTTLS when the policy wants TLS and
    /// the server offers it; the end of the session when TLS is required and
    /// not offered. `None`: go on in clear, or already inside TLS.
    fn maybe_starttls(&mut self) -> Option<State> {
        if self.tls || self.config.tls == TlsUse::Off {
            return None;
        }
        if self.capabilities.starttls {
            self.write(&Command::StartTls);
            return Some(State::StartTls);
        }
        if self.config.tls == TlsUse::Required {
            let reply = local_reply(
                451,
                (4, 7, 4),
                "TLS is required, but the server does not offer STARTTLS",
            );
            let state = State::Ready;
            return Some(self.fail(
                state,
                CloseReason::TlsUnavailable(None),
                reply,
                ReplyOrigin::Local,
            ));
        }
        None
    }

    fn hello_done(&mut self, reply: &Reply) -> State {
        if let Some(name) = capabilities::announced_name(reply) {
            self.remote_name = Some(name);
        }
        if let Some(next) = self.maybe_auth() {
            return next;
        }
        self.idle()
    }

    /// After EHLO: log in when we have credentials and the server offers a
    /// mechanism we speak. Never the password in clear unless allowed.
    fn maybe_auth(&mut self) -> Option<State> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let creds = self.config.credentials.clone()?;
        if self.authenticated {
            return None;
        }
        let offered = |m: &str| self.capabilities.auth.iter().any(|a| a == m);
        let (plain, login) = (offered("PLAIN"), offered("LOGIN"));
        // Told to log in, and no TLS to do it in: whether or not AUTH is
        // offered in clear, the message waits (a relay that wants a login
        // would refuse it for good otherwise).
        if !self.tls && !creds.in_clear {
            let reply = local_reply(
                451,
                (4, 7, 0),
                "Credentials are not sent in clear: the server offers no TLS",
            );
            return Some(self.fail(
                State::Ready,
                CloseReason::AuthFailed(None),
                reply,
                ReplyOrigin::Local,
            ));
        }
        if !plain && !login {
            // Nothing to log in with: the server decides what we may send.
            return None;
        }
        if plain {
            let response = b64.encode(format!("\0{}\0{}", creds.login, creds.password));
            self.output
                .extend_from_slice(format!("AUTH PLAIN {response}\r\n").as_bytes());
            Some(State::Auth(None))
        } else {
            self.output.extend_from_slice(b"AUTH LOGIN\r\n");
            Some(State::Auth(Some(LoginStep::User)))
        }
    }

    fn on_auth_reply(&mut self, step: Option<LoginStep>, reply: Reply) -> State {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let creds = self
            .config
            .credentials
            .clone()
            .unwrap_or(super::Credentials {
                login: String::new(),
                password: String::new(),
                in_clear: false,
            });
        match (step, reply.code()) {
            (_, 235) => {
                self.authenticated = true;
                self.idle()
            }
            (Some(LoginStep::User), 334) => {
                self.output
                    .extend_from_slice(format!("{}\r\n", b64.encode(&creds.login)).as_bytes());
                State::Auth(Some(LoginStep::Password))
            }
            (Some(LoginStep::Password), 334) => {
                self.output
                    .extend_from_slice(format!("{}\r\n", b64.encode(&creds.password)).as_bytes());
                State::Auth(None)
            }
            // A refused login is our configuration's fault, not the
            // message's: every recipient waits for it to be fixed.
            (_, code) if code / 100 == 4 || code / 100 == 5 => {
                let local = local_reply(
                    451,
                    (4, 7, 0),
                    format!(
                        "Login to the next hop refused: {}",
                        reply.to_string().trim_end()
                    ),
                );
                self.fail(
                    State::Auth(step),
                    CloseReason::AuthFailed(Some(reply)),
                    local,
                    ReplyOrigin::Local,
                )
            }
            _ => self.unexpected(State::Auth(step), &reply),
        }
    }

    fn on_transaction_reply(&mut self, mut t: Box<Transaction>, reply: Reply) -> State {
        match t.phase {
            Phase::Envelope { .. } => self.on_envelope_reply(t, reply),
            Phase::EndOfData if self.config.lmtp => self.on_lmtp_data_reply(t, reply),
            Phase::EndOfData => {
                let outcome = match class(&reply) {
                    2 => Outcome::Delivered(reply),
                    4 | 5 => Outcome::failure(reply),
                    _ => return self.unexpected(State::Transaction(t), &reply),
                };
                for rcpt in &mut t.recipients {
                    if matches!(rcpt, Rcpt::Accepted) {
                        *rcpt = Rcpt::Done(outcome.clone(), ReplyOrigin::Remote, Stage::EndOfData);
                    }
                }
                self.finish(*t);
                self.idle()
            }
            // Input is not read during the body (see process_input).
            Phase::Body { .. } => self.unexpected(State::Transaction(t), &reply),
        }
    }

    /// RFC 2033 §4.2: after the end of data, one reply for each recipient
    /// whose RCPT succeeded, in the order of those RCPTs. Replies decide
    /// recipients strictly in turn, so the next one always belongs to the
    /// first recipient still waiting.
    fn on_lmtp_data_reply(&mut self, mut t: Box<Transaction>, reply: Reply) -> State {
        let outcome = match class(&reply) {
            2 => Outcome::Delivered(reply),
            4 | 5 => Outcome::failure(reply),
            _ => return self.unexpected(State::Transaction(t), &reply),
        };
        let Some(next) = t
            .recipients
            .iter_mut()
            .find(|rcpt| matches!(rcpt, Rcpt::Accepted))
        else {
            return self.unexpected(State::Transaction(t), outcome.reply());
        };
        *next = Rcpt::Done(outcome, ReplyOrigin::Remote, Stage::EndOfData);
        if any_accepted(&t.recipients) {
            return State::Transaction(t);
        }
        self.finish(*t);
        self.idle()
    }

    fn on_envelope_reply(&mut self, mut t: Box<Transaction>, reply: Reply) -> State {
        let class = class(&reply);
        let Transaction {
            message,
            framing,
            recipients,
            phase,
        } = &mut *t;
        let Phase::Envelope {
            awaiting,
            unsent,
            mail_refused,
        } = phase
        else {
            return self.unexpected(State::Transaction(t), &reply);
        };
        let Some(step) = awaiting.pop_front() else {
            return self.unexpected(State::Transaction(t), &reply);
        };
        match (step, class) {
            (Step::Rset, 2) => {}
            (Step::Mail, 2) => {}
            (Step::Mail, 4 | 5) => {
                // No transaction was opened: every recipient shares the
                // refusal, and a lock-step client sends no RCPT at all.
                *mail_refused = true;
                unsent.clear();
                for rcpt in recipients.iter_mut() {
                    if matches!(rcpt, Rcpt::Pending) {
                        *rcpt = Rcpt::Done(
                            Outcome::failure(reply.clone()),
                            ReplyOrigin::Remote,
                            Stage::Mail,
                        );
                    }
                }
            }
            // After a refused MAIL, a pipelining server answers each RCPT
            // (normally 503); the MAIL reply already decided.
            (Step::Rcpt(_), 2 | 4 | 5) if *mail_refused => {}
            (Step::Rcpt(i), 2) => recipients[i] = Rcpt::Accepted,
            (Step::Rcpt(i), 4 | 5) => {
                recipients[i] =
                    Rcpt::Done(Outcome::failure(reply), ReplyOrigin::Remote, Stage::Rcpt);
            }
            (Step::Data, _) if reply.code() == 354 => {
                if any_accepted(recipients) {
                    *phase = Phase::Body {
                        awaiting: VecDeque::new(),
                    };
                    self.events
                        .push_back(ClientEvent::SendBody(BodyFraming::DotStuffed));
                    return State::Transaction(t);
                }
                // RFC 2033 §4.2: DATA MUST fail when no RCPT succeeded, and
                // the lone dot would get no reply at all (one per accepted
                // recipient, here none), so the server cannot be followed.
                if self.config.lmtp {
                    let detail = format!("{reply} to DATA with no recipient accepted");
                    return self.protocol_error(State::Transaction(t), detail);
                }
                self.output.extend_from_slice(b".\r\n");
                self.finish(*t);
                return State::Cleanup(Cleanup::Dot);
            }
            (Step::Data, 4 | 5) => {
                let outcome = Outcome::failure(reply);
                for rcpt in recipients.iter_mut() {
                    if matches!(rcpt, Rcpt::Accepted) {
                        *rcpt = Rcpt::Done(outcome.clone(), ReplyOrigin::Remote, Stage::Data);
                    }
                }
                return self.end_early(*t);
            }
            // The end of data of a body sent with its envelope (which LMTP
            // never does). A server with no recipient to deliver to refuses
            // it (RFC 3030 §4.2: 554, or 503 after a refused MAIL); RSET
            // then leaves no doubt about where the transaction stands.
            (Step::Bdat, 2 | 4 | 5) => {
                let delivered = class == 2;
                let outcome = if delivered {
                    Outcome::Delivered(reply)
                } else {
                    Outcome::failure(reply)
                };
                for rcpt in recipients.iter_mut() {
                    if matches!(rcpt, Rcpt::Accepted) {
                        *rcpt = Rcpt::Done(outcome.clone(), ReplyOrigin::Remote, Stage::EndOfData);
                    }
                }
                if !delivered {
                    return self.end_early(*t);
                }
                self.finish(*t);
                return self.idle();
            }
            _ => return self.unexpected(State::Transaction(t), &reply),
        }

        if !awaiting.is_empty() {
            return State::Transaction(t);
        }
        if let Some(step) = unsent.pop_front() {
            awaiting.push_back(step);
            let command = command(message, step, &self.capabilities);
            self.write(&command);
            return State::Transaction(t);
        }
        // Every envelope reply is in, and no DATA is outstanding (DATA's
        // reply is handled above).
        if !any_accepted(recipients) {
            return self.end_early(*t);
        }
        match *framing {
            BodyFraming::DotStuffed => {
                awaiting.push_back(Step::Data);
                self.write(&Command::Data);
            }
            BodyFraming::Raw { size } => {
                self.write(&Command::Bdat { size, last: true });
                *phase = Phase::Body {
                    awaiting: VecDeque::new(),
                };
                self.events
                    .push_back(ClientEvent::SendBody(BodyFraming::Raw { size }));
            }
        }
        State::Transaction(t)
    }

    /// The transaction ended before its end of data: results out, and RSET
    /// so the server forgets whatever it kept of it.
    fn end_early(&mut self, t: Transaction) -> State {
        self.finish(t);
        // A transaction that followed is already out, its own RSET first.
        if let Some(next) = self.pipelined.pop_front() {
            return State::Transaction(next);
        }
        self.write(&Command::Rset);
        State::Cleanup(Cleanup::Rset)
    }

    /// Emits the message's results. A recipient still without one cannot
    /// happen by the transitions above; should it anyway, it is reported as
    /// a transient failure rather than dropped.
    fn finish(&mut self, t: Transaction) {
        let results = t
            .recipients
            .into_iter()
            .enumerate()
            .map(|(index, rcpt)| {
                let (outcome, origin, stage) = match rcpt {
                    Rcpt::Done(outcome, origin, stage) => (outcome, origin, stage),
                    Rcpt::Pending | Rcpt::Accepted => (
                        Outcome::Transient(local_reply(
                            451,
                            (4, 5, 0),
                            "Transaction ended without a reply for this recipient",
                        )),
                        ReplyOrigin::Local,
                        Stage::EndOfData,
                    ),
                };
                RecipientResult {
                    index,
                    outcome,
                    stage,
                    origin,
                }
            })
            .collect();
        self.events.push_back(ClientEvent::MessageDone(results));
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

    /// Whether `message` can go now, behind the transactions in flight and
    /// before their replies: the server pipelines and takes BDAT, every
    /// command and body in flight is out, and `message` is small enough to
    /// go with its envelope. One round trip then serves several messages.
    pub(super) fn can_follow(&self, message: &Message) -> bool {
        let State::Transaction(current) = &self.state else {
            return false;
        };
        let caps = &self.capabilities;
        if self.config.lmtp
            || self.config.bdat != BdatPolicy::WhenOffered
            || !caps.pipelining
            || !caps.chunking
            || self.queued.is_some()
            || self.quit_requested
            || message.body_size > PIPELINED_BODY_MAX
            || message.envelope.recipients.is_empty()
            // Refused before MAIL: its result would come out of turn.
            || message.refusal(caps).is_some()
        {
            return false;
        }
        let last = self.pipelined.back().unwrap_or(current);
        let all_out = match &last.phase {
            Phase::Envelope {
                awaiting, unsent, ..
            } => unsent.is_empty() && awaiting.back() == Some(&Step::Bdat),
            Phase::EndOfData => matches!(last.framing, BodyFraming::Raw { .. }),
            Phase::Body { .. } => false,
        };
        let in_flight: u64 = std::iter::once(current)
            .chain(&self.pipelined)
            .map(|t| t.message.body_size)
            .sum();
        all_out && in_flight + message.body_size <= PIPELINED_RUN_MAX
    }

    /// Sends `message` behind the transactions in flight (see
    /// [`ClientSession::can_follow`]). RSET first: whatever became of the
    /// transaction before it (a refused BDAT leaves one open on some
    /// servers), this one starts from a clean state, and RSET is always
    /// allowed in a pipelined group (RFC 2920 §3.1).
    pub(super) fn follow(&mut self, message: Message) {
        let n = message.envelope.recipients.len();
        let awaiting: VecDeque<Step> = [Step::Rset, Step::Mail]
            .into_iter()
            .chain((0..n).map(Step::Rcpt))
            .chain([Step::Bdat])
            .collect();
        for &step in &awaiting {
            self.write(&command(&message, step, &self.capabilities));
        }
        let framing = BodyFraming::Raw {
            size: message.body_size,
        };
        self.events.push_back(ClientEvent::SendBody(framing));
        self.pipelined.push_back(Box::new(Transaction {
            message,
            framing,
            recipients: (0..n).map(|_| Rcpt::Pending).collect(),
            phase: Phase::Body { awaiting },
        }));
    }

    pub(super) fn start(&mut self, message: Message) -> State {
        let caps = &self.capabilities;
        if let Some(refusal) = message.refusal(caps) {
            // What MAIL would have been refused for, decided before it.
            let results = (0..message.envelope.recipients.len())
                .map(|index| RecipientResult {
                    index,
                    outcome: Outcome::Permanent(refusal.clone()),
                    stage: Stage::Mail,
                    origin: ReplyOrigin::Local,
                })
                .collect();
            self.events.push_back(ClientEvent::MessageDone(results));
            return self.idle();
        }
        let bdat = message.envelope.body_type() == BodyType::BinaryMime
            || (self.config.bdat == BdatPolicy::WhenOffered && caps.chunking);
        let framing = if bdat {
            BodyFraming::Raw {
                size: message.body_size,
            }
        } else {
            BodyFraming::DotStuffed
        };
        let n = message.envelope.recipients.len();
        let mut steps: VecDeque<Step> = std::iter::once(Step::Mail)
            .chain((0..n).map(Step::Rcpt))
            .collect();
        // RFC 2920 §3.1: DATA may end a pipelined group. BDAT carries the
        // body with it, so it joins the group only for a small body (see
        // PIPELINED_BODY_MAX); a larger one waits for a recipient to be
        // accepted, so that it is never sent for nobody. LMTP's end of data
        // has a reply per accepted recipient, known only after the RCPTs'.
        let body_too = match framing {
            BodyFraming::DotStuffed => false,
            BodyFraming::Raw { size } => size <= PIPELINED_BODY_MAX && !self.config.lmtp,
        };
        let (awaiting, unsent) = if caps.pipelining {
            match framing {
                BodyFraming::DotStuffed => steps.push_back(Step::Data),
                BodyFraming::Raw { .. } if body_too => steps.push_back(Step::Bdat),
                BodyFraming::Raw { .. } => {}
            }
            (steps, VecDeque::new())
        } else {
            let first = steps.pop_front().into_iter().collect();
            (first, steps)
        };
        for &step in &awaiting {
            self.write(&command(&message, step, &self.capabilities));
        }
        let phase = if awaiting.back() == Some(&Step::Bdat) {
            self.events.push_back(ClientEvent::SendBody(framing));
            Phase::Body { awaiting }
        } else {
            Phase::Envelope {
                awaiting,
                unsent,
                mail_refused: false,
            }
        };
        State::Transaction(Box::new(Transaction {
            message,
            framing,
            recipients: (0..n).map(|_| Rcpt::Pending).collect(),
            phase,
        }))
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

fn any_accepted(recipients: &[Rcpt]) -> bool {
    recipients.iter().any(|r| matches!(r, Rcpt::Accepted))
}

fn command(message: &Message, step: Step, caps: &Capabilities) -> Command {
    match step {
        Step::Mail => message.mail_command(caps),
        Step::Rcpt(i) => message.rcpt_command(i, caps),
        Step::Data => Command::Data,
        Step::Bdat => Command::Bdat {
            size: message.body_size,
            last: true,
        },
        Step::Rset => Command::Rset,
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
