//! The scheduler's view of one queued message.

use sluice_smtp::{ForwardPath, ReversePath};
use sluice_spool::{MessageSummary, Reason, RecipientState, StoredMessage};

use crate::scheduler::{Destination, QueueState};

/// Where a recipient stands between the spool and the delivery threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for its due time (or for a free connection, when `blocked`).
    Idle,
    /// In a job.
    Dispatched,
    /// Its next state is known but not yet sent to the journal: the message
    /// is finished and its bounce must be queued first.
    Decided(RecipientState),
    /// Its next state is on the way to the journal.
    Journaling(RecipientState),
}

#[derive(Debug)]
pub(super) struct Rcpt {
    pub(super) forward_path: ForwardPath,
    /// As journaled: the in-memory state follows the spool, never leads it.
    pub(super) state: RecipientState,
    pub(super) phase: Phase,
    /// Not before this (ms since the Unix epoch), when `phase` is Idle or
    /// Decided.
    pub(super) due_ms: u64,
    /// Due, but its destination (or the pool) is full: it waits in a line
    /// rather than on the timer.
    pub(super) blocked: bool,
    pub(super) last: Option<Reason>,
}

impl Rcpt {
    fn new(forward_path: ForwardPath, state: RecipientState, now_ms: u64) -> Rcpt {
        let due_ms = match &state {
            RecipientState::Deferred { until_unix_ms, .. } => *until_unix_ms,
            RecipientState::Failed(_) | RecipientState::Pending | RecipientState::Delivered => {
                now_ms
            }
        };
        Rcpt {
            forward_path,
            last: state.reason().cloned(),
            state,
            phase: Phase::Idle,
            due_ms,
            blocked: false,
        }
    }

    /// Can be put in a job once due.
    pub(super) fn waits(&self) -> bool {
        self.phase == Phase::Idle && !self.state.is_final()
    }

    /// Final, or about to be journaled as final.
    pub(super) fn settled_final(&self) -> bool {
        match &self.phase {
            Phase::Idle => self.state.is_final(),
            Phase::Dispatched => false,
            Phase::Decided(s) | Phase::Journaling(s) => s.is_final(),
        }
    }

    /// Why a recipient that is (or is about to be) failed failed.
    pub(super) fn failure(&self) -> Option<&Reason> {
        let state = match &self.phase {
            Phase::Decided(s) | Phase::Journaling(s) => s,
            Phase::Idle | Phase::Dispatched => &self.state,
        };
        match state {
            RecipientState::Failed(reason) => Some(reason),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Msg {
    pub(super) arrival_unix_ms: u64,
    /// Its size in octets, for the queue's gauges.
    pub(super) size: u64,
    /// `<>`: never bounced.
    pub(super) null_sender: bool,
    pub(super) rcpts: Vec<Rcpt>,
    pub(super) held: bool,
    /// Its key in the timer set, if it has one.
    pub(super) timer: Option<u64>,
    /// Destinations whose line holds this message.
    pub(super) blocked_on: Vec<Destination>,
    /// In the line for a free delivery thread.
    pub(super) in_ready: bool,
    /// The operator bounced it: what is not delivered now fails.
    pub(super) admin_bounce: bool,
    /// Its bounce, then its done mark, are on the way to the spool.
    pub(super) finishing: bool,
    /// A delete mark is on the way to the spool.
    pub(super) deleting: bool,
}

impl Msg {
    fn new(
        arrival_unix_ms: u64,
        size: u64,
        null_sender: bool,
        held: bool,
        rcpts: Vec<Rcpt>,
    ) -> Msg {
        Msg {
            arrival_unix_ms,
            size,
            null_sender,
            rcpts,
            held,
            timer: None,
            blocked_on: Vec::new(),
            in_ready: false,
            admin_bounce: false,
            finishing: false,
            deleting: false,
        }
    }

    pub(super) fn from_summary(m: &MessageSummary, now_ms: u64) -> Msg {
        let rcpts = m
            .recipients
            .iter()
            .map(|r| Rcpt::new(r.forward_path.clone(), r.state.clone(), now_ms))
            .collect();
        Msg::new(
            m.arrival_unix_ms,
            m.size,
            m.reverse_path == ReversePath::Null,
            m.held,
            rcpts,
        )
    }

    pub(super) fn from_stored(m: &StoredMessage, now_ms: u64) -> Msg {
        let rcpts = m
            .entry
            .envelope
            .recipients
            .iter()
            .zip(&m.states)
            .map(|(r, s)| Rcpt::new(r.forward_path.clone(), s.clone(), now_ms))
            .collect();
        Msg::new(
            m.entry.arrival_unix_ms,
            m.body().len() as u64,
            m.entry.envelope.reverse_path == ReversePath::Null,
            m.held,
            rcpts,
        )
    }

    /// Nothing may be dispatched for it now, whatever the time.
    pub(super) fn frozen(&self) -> bool {
        self.held || self.finishing || self.deleting
    }

    /// When the timer should next look at it: the earliest due recipient
    /// that is neither in flight nor waiting in a line, or a finish to retry.
    pub(super) fn next_due(&self) -> Option<u64> {
        if self.frozen() {
            return None;
        }
        self.rcpts
            .iter()
            .filter(|r| (r.waits() && !r.blocked) || matches!(r.phase, Phase::Decided(_)))
            .map(|r| r.due_ms)
            .min()
    }

    /// Every recipient is final or about to be journaled as final.
    pub(super) fn settled(&self) -> bool {
        self.rcpts.iter().all(Rcpt::settled_final)
    }

    /// Every recipient is final in the spool: the spool has let it go.
    pub(super) fn finished(&self) -> bool {
        self.rcpts
            .iter()
            .all(|r| r.phase == Phase::Idle && r.state.is_final())
    }

    /// Where it stands, for the queue's gauges.
    pub(super) fn queue_state(&self) -> QueueState {
        if self.held {
            QueueState::Held
        } else if self.in_flight() {
            QueueState::Active
        } else if self
            .rcpts
            .iter()
            .any(|r| matches!(r.state, RecipientState::Deferred { .. }))
        {
            QueueState::Deferred
        } else {
            QueueState::Waiting
        }
    }

    pub(super) fn in_flight(&self) -> bool {
        self.rcpts
            .iter()
            .any(|r| matches!(r.phase, Phase::Dispatched | Phase::Journaling(_)))
    }
}
