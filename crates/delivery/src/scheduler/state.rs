//! The scheduler's view of one queued message.

use sluice_smtp::{ForwardPath, ReversePath};
use sluice_spool::{MessageSummary, Reason, RecipientState, StoredMessage};
use smallvec::SmallVec;

use crate::scheduler::{Destination, QueueState};

/// Where a recipient stands between the spool and the delivery threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for its due time (or for a free connection, when `blocked`).
    Idle,
    /// In a job.
    Dispatched,
    /// Its next state is known but not yet sent to the journal: the message
    /// is finished and its bounce must be queued first. (Boxed, as the
    /// other phases, by far the most common, need no room for a state.)
    Decided(Box<RecipientState>),
    /// Its next state is on the way to the journal.
    Journaling(Box<RecipientState>),
}

impl Phase {
    /// Decided → Journaling, keeping the state.
    pub(super) fn start_journaling(&mut self) {
        if let Phase::Decided(state) = std::mem::replace(self, Phase::Idle) {
            *self = Phase::Journaling(state);
        }
    }

    /// The state on its way to the journal, leaving the phase Idle; `None`
    /// (and no change) in any other phase.
    pub(super) fn take_journaled(&mut self) -> Option<Box<RecipientState>> {
        match self {
            Phase::Journaling(_) => match std::mem::replace(self, Phase::Idle) {
                Phase::Journaling(state) => Some(state),
                _ => None,
            },
            _ => None,
        }
    }

    /// Decided or journaling a failure.
    pub(super) fn failure(&self) -> Option<&Reason> {
        match self {
            Phase::Decided(s) | Phase::Journaling(s) => match &**s {
                RecipientState::Failed(reason) => Some(reason),
                _ => None,
            },
            Phase::Idle | Phase::Dispatched => None,
        }
    }
}

/// A recipient's state as journaled, with only what scheduling needs: the
/// spool keeps the rest (a deferred recipient's last reply, the forward-path)
/// and `status` reads it there. A million queued recipients cost a million
/// of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Standing {
    Pending,
    Delivered,
    Deferred {
        attempts: u32,
    },
    /// Kept, as its bounce may be built after this recipient was journaled
    /// (another recipient of the message was still in flight).
    Failed(Box<Reason>),
}

impl Standing {
    pub(super) fn of(state: &RecipientState) -> Standing {
        match state {
            RecipientState::Pending => Standing::Pending,
            RecipientState::Delivered => Standing::Delivered,
            RecipientState::Deferred { attempts, .. } => Standing::Deferred {
                attempts: *attempts,
            },
            RecipientState::Failed(reason) => Standing::Failed(Box::new(reason.clone())),
        }
    }

    pub(super) fn is_final(&self) -> bool {
        matches!(self, Standing::Delivered | Standing::Failed(_))
    }

    /// Temporary failures so far.
    pub(super) fn attempts(&self) -> u32 {
        match self {
            Standing::Deferred { attempts } => *attempts,
            _ => 0,
        }
    }
}

/// A destination's number in the scheduler's table of destinations
/// (`Destinations`): a recipient carries this, not its forward-path.
pub(super) type DestId = u32;

#[derive(Debug)]
pub(super) struct Rcpt {
    /// Not before this (ms since the Unix epoch), when `phase` is Idle or
    /// Decided.
    pub(super) due_ms: u64,
    /// Where its job goes; found once, when the message is loaded.
    pub(super) dest: DestId,
    /// As journaled: the in-memory state follows the spool, never leads it.
    pub(super) standing: Standing,
    pub(super) phase: Phase,
    /// Due, but its destination (or the pool) is full: it waits in a line
    /// rather than on the timer.
    pub(super) blocked: bool,
}

impl Rcpt {
    fn new(dest: DestId, state: &RecipientState, now_ms: u64) -> Rcpt {
        let due_ms = match state {
            RecipientState::Deferred { until_unix_ms, .. } => *until_unix_ms,
            RecipientState::Failed(_) | RecipientState::Pending | RecipientState::Delivered => {
                now_ms
            }
        };
        Rcpt {
            due_ms,
            dest,
            standing: Standing::of(state),
            phase: Phase::Idle,
            blocked: false,
        }
    }

    /// Can be put in a job once due.
    pub(super) fn waits(&self) -> bool {
        self.phase == Phase::Idle && !self.standing.is_final()
    }

    /// Final, or about to be journaled as final.
    pub(super) fn settled_final(&self) -> bool {
        match &self.phase {
            Phase::Idle => self.standing.is_final(),
            Phase::Dispatched => false,
            Phase::Decided(s) | Phase::Journaling(s) => s.is_final(),
        }
    }

    /// Why a recipient that is (or is about to be) failed failed.
    pub(super) fn failure(&self) -> Option<&Reason> {
        match (&self.phase, &self.standing) {
            (Phase::Decided(_) | Phase::Journaling(_), _) => self.phase.failure(),
            (Phase::Idle | Phase::Dispatched, Standing::Failed(reason)) => Some(reason),
            (Phase::Idle | Phase::Dispatched, _) => None,
        }
    }
}

/// No timer: a due time of `u64::MAX` ms would never come anyway.
const NO_TIMER: u64 = u64::MAX;

/// The destinations whose line holds a message: almost always none, so
/// eight bytes rather than a `Vec`'s twenty-four, for each queued message.
/// (The extra allocation clippy warns of is only made for a blocked
/// message; the other million pay eight bytes.)
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub(super) struct BlockedOn(Option<Box<Vec<Destination>>>);

impl BlockedOn {
    pub(super) fn contains(&self, dest: &Destination) -> bool {
        self.0.as_ref().is_some_and(|v| v.contains(dest))
    }

    pub(super) fn push(&mut self, dest: Destination) {
        self.0.get_or_insert_default().push(dest);
    }

    pub(super) fn remove(&mut self, dest: &Destination) {
        if let Some(v) = &mut self.0 {
            v.retain(|d| d != dest);
            if v.is_empty() {
                self.0 = None;
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct Msg {
    pub(super) arrival_unix_ms: u64,
    /// Its key in the timer set, or [`NO_TIMER`].
    timer: u64,
    /// Its size in octets, for the queue's gauges (a spool record is
    /// smaller than 4 GiB).
    pub(super) size: u32,
    /// `<>`: never bounced.
    pub(super) null_sender: bool,
    /// Inline for the usual single recipient.
    pub(super) rcpts: SmallVec<[Rcpt; 1]>,
    pub(super) held: bool,
    /// Destinations whose line holds this message.
    pub(super) blocked_on: BlockedOn,
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
        rcpts: SmallVec<[Rcpt; 1]>,
    ) -> Msg {
        Msg {
            arrival_unix_ms,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            null_sender,
            rcpts,
            held,
            timer: NO_TIMER,
            blocked_on: BlockedOn::default(),
            in_ready: false,
            admin_bounce: false,
            finishing: false,
            deleting: false,
        }
    }

    /// `dest`: the destination's number for a forward-path.
    pub(super) fn from_summary(
        m: &MessageSummary,
        now_ms: u64,
        dest: &mut dyn FnMut(&ForwardPath) -> DestId,
    ) -> Msg {
        let rcpts = m
            .recipients
            .iter()
            .map(|r| Rcpt::new(dest(&r.forward_path), &r.state, now_ms))
            .collect();
        Msg::new(
            m.arrival_unix_ms,
            m.size,
            m.reverse_path == ReversePath::Null,
            m.held,
            rcpts,
        )
    }

    /// `dest`: the destination's number for a forward-path.
    pub(super) fn from_stored(
        m: &StoredMessage,
        now_ms: u64,
        dest: &mut dyn FnMut(&ForwardPath) -> DestId,
    ) -> Msg {
        let rcpts = m
            .entry
            .envelope
            .recipients
            .iter()
            .zip(&m.states)
            .map(|(r, s)| Rcpt::new(dest(&r.forward_path), s, now_ms))
            .collect();
        Msg::new(
            m.entry.arrival_unix_ms,
            m.body().len() as u64,
            m.entry.envelope.reverse_path == ReversePath::Null,
            m.held,
            rcpts,
        )
    }

    /// Its key in the timer set, if it has one.
    pub(super) fn timer(&self) -> Option<u64> {
        (self.timer != NO_TIMER).then_some(self.timer)
    }

    pub(super) fn set_timer(&mut self, due: Option<u64>) {
        self.timer = due.unwrap_or(NO_TIMER);
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
            .all(|r| r.phase == Phase::Idle && r.standing.is_final())
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
            .any(|r| matches!(r.standing, Standing::Deferred { .. }))
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
