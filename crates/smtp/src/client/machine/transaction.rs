//! A transaction: the envelope's replies, pipelined or one by one, the body's
//! framing, the end of data (one reply, or one per recipient under LMTP),
//! and transactions sent behind one another without waiting.

use std::collections::VecDeque;

use crate::command::{Command, EnvelopeCommand};
use crate::params::BodyType;
use crate::reply::Reply;
use crate::stage::Stage;

use super::super::{
    BdatPolicy, BodyFraming, Capabilities, ClientEvent, ClientSession, Message, Outcome,
    RecipientResult, ReplyOrigin,
};
use super::{
    Cleanup, PIPELINED_BODY_MAX, PIPELINED_RUN_MAX, Phase, Rcpt, State, Step, Transaction, class,
    local_reply,
};

impl ClientSession {
    pub(super) fn on_transaction_reply(&mut self, mut t: Box<Transaction>, reply: Reply) -> State {
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
    pub(super) fn on_lmtp_data_reply(&mut self, mut t: Box<Transaction>, reply: Reply) -> State {
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

    pub(super) fn on_envelope_reply(&mut self, mut t: Box<Transaction>, reply: Reply) -> State {
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
            write_command(&mut self.output, message, step, &self.capabilities);
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
    pub(super) fn end_early(&mut self, t: Transaction) -> State {
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
    pub(super) fn finish(&mut self, t: Transaction) {
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
    /// Whether `message` can go now, behind the transactions in flight and
    /// before their replies: the server pipelines and takes BDAT, every
    /// command and body in flight is out, and `message` is small enough to
    /// go with its envelope. One round trip then serves several messages.
    pub(in crate::client) fn can_follow(&self, message: &Message) -> bool {
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
    pub(in crate::client) fn follow(&mut self, message: Message) {
        let n = message.envelope.recipients.len();
        let awaiting: VecDeque<Step> = [Step::Rset, Step::Mail]
            .into_iter()
            .chain((0..n).map(Step::Rcpt))
            .chain([Step::Bdat])
            .collect();
        for &step in &awaiting {
            write_command(&mut self.output, &message, step, &self.capabilities);
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

    pub(in crate::client) fn start(&mut self, message: Message) -> State {
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
            write_command(&mut self.output, &message, step, &self.capabilities);
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
}

fn any_accepted(recipients: &[Rcpt]) -> bool {
    recipients.iter().any(|r| matches!(r, Rcpt::Accepted))
}

/// Appends the command for `step`; the envelope's paths are written from
/// the message, not copied into a [`Command`].
fn write_command(out: &mut Vec<u8>, message: &Message, step: Step, caps: &Capabilities) {
    match step {
        Step::Mail => {
            let params = message.mail_params(caps);
            EnvelopeCommand::Mail(&message.envelope.reverse_path, &params).write_to(out);
        }
        Step::Rcpt(i) => message.write_rcpt(i, caps, out),
        Step::Data => Command::Data.write_to(out),
        Step::Bdat => Command::Bdat {
            size: message.body_size,
            last: true,
        }
        .write_to(out),
        Step::Rset => Command::Rset.write_to(out),
    }
}
