//! The front end's announcements and the operator's commands.

use sluice_spool::{MessageMark, QueueId, RecipientState, SpoolError, StoredMessage};

use super::Core;
use super::dispatch::Via;
use crate::scheduler::retry::admin_bounce_reason;
use crate::scheduler::state::{Msg, Phase};
use crate::scheduler::{Event, MessageStatus, QueueStats, RecipientStatus};

impl Core {
    /// A new message: `stored` as the spool writer handed it over, or read
    /// back from the spool when there is none.
    pub(super) fn queued(&mut self, id: QueueId, stored: Option<StoredMessage>) {
        if self.stopping.is_some() || self.msgs.contains_key(&id) {
            return;
        }
        let stored = match stored.map_or_else(|| self.spool.get(id), |s| Ok(Some(s))) {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                tracing::debug!(queue_id = %id, "queued message is not in the spool");
                return;
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e,
                    "cannot read a queued message; it waits for the next start");
                return;
            }
        };
        // A quarantined message arrives held: the hold is in the record
        // that made it durable.
        let now = self.now;
        let msg = self.load(|dest| Msg::from_stored(&stored, now, dest));
        self.msgs.insert(id, msg);
        self.dispatch(id, Some(stored), Via::New);
    }

    pub(super) fn flush(&mut self, id: Option<QueueId>) {
        let ids: Vec<QueueId> = match id {
            Some(id) => vec![id],
            None => self.msgs.keys().collect(),
        };
        for id in ids {
            if let Some(msg) = self.msgs.get_mut(&id) {
                for r in &mut msg.rcpts {
                    if r.waits() || matches!(r.phase, Phase::Decided(_)) {
                        r.due_ms = r.due_ms.min(self.now);
                    }
                }
                self.reschedule(id);
            }
        }
    }

    pub(super) fn mark(&mut self, id: QueueId, mark: MessageMark) {
        self.outstanding += 1;
        let events = self.events.clone();
        self.spool.mark(
            id,
            mark,
            Box::new(move |r| {
                let _ = events.send(Event::Marked(id, mark, r));
            }),
        );
    }

    pub(super) fn hold(&mut self, id: QueueId) {
        // Takes effect at once (nothing new is dispatched); the mark makes
        // it survive a restart.
        if let Some(msg) = self.msgs.get_mut(&id) {
            msg.held = true;
        }
        self.reschedule(id);
        self.mark(id, MessageMark::Held);
    }

    pub(super) fn delete(&mut self, id: QueueId) {
        if let Some(msg) = self.msgs.get_mut(&id) {
            msg.deleting = true;
        }
        self.reschedule(id);
        self.mark(id, MessageMark::Deleted);
    }

    pub(super) fn admin_bounce(&mut self, id: QueueId) {
        let Some(msg) = self.msgs.get_mut(&id) else {
            tracing::info!(queue_id = %id, "bounce: message not queued");
            return;
        };
        if msg.finishing || msg.deleting {
            return;
        }
        msg.admin_bounce = true;
        self.fail_waiting(id);
        self.settle(id, None);
    }

    /// Fails, for the operator's bounce, the recipients not in flight.
    pub(super) fn fail_waiting(&mut self, id: QueueId) {
        // The forward-paths are in the spool only; this is an operator's
        // command, rare enough to read them for the log.
        let stored = self.spool.get(id).ok().flatten();
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        let reason = admin_bounce_reason();
        for (i, r) in msg.rcpts.iter_mut().enumerate() {
            if r.waits() {
                let recipient = stored
                    .as_ref()
                    .and_then(|m| m.entry.envelope.recipients.get(i))
                    .map(|r| r.forward_path.to_string());
                tracing::info!(queue_id = %id, recipient, outcome = "failed",
                    reply = %reason, "bounced by the administrator");
                r.phase = Phase::Decided(Box::new(RecipientState::Failed(reason.clone())));
            }
        }
    }

    pub(super) fn marked(
        &mut self,
        id: QueueId,
        mark: MessageMark,
        result: Result<(), SpoolError>,
    ) {
        self.outstanding -= 1;
        if let Err(e) = &result {
            tracing::error!(queue_id = %id, mark = ?mark, error = %e, "spool mark failed");
        }
        match (mark, result.is_ok()) {
            (MessageMark::Held, ok) => {
                if ok {
                    tracing::info!(queue_id = %id, "held");
                }
            }
            (MessageMark::Released, true) => {
                if let Some(msg) = self.msgs.get_mut(&id) {
                    msg.held = false;
                    tracing::info!(queue_id = %id, "released");
                }
                self.reschedule(id);
            }
            (MessageMark::Released, false) => {}
            (MessageMark::Deleted, true) => {
                tracing::info!(queue_id = %id, "deleted by the administrator");
                self.forget(id);
            }
            (MessageMark::Deleted, false) => {
                if let Some(msg) = self.msgs.get_mut(&id) {
                    msg.deleting = false;
                }
                self.reschedule(id);
            }
            (MessageMark::Done, true) => self.forget(id),
            // The bounce is queued but the message stays: its undecided
            // work is redone, and the bounce may come twice. Duplicates are
            // allowed; losses are not.
            (MessageMark::Done, false) => {
                let retry = self.backoff_ms();
                if let Some(msg) = self.msgs.get_mut(&id) {
                    msg.finishing = false;
                    for r in &mut msg.rcpts {
                        if matches!(r.phase, Phase::Decided(_)) {
                            r.phase = Phase::Idle;
                            r.due_ms = retry;
                        }
                    }
                }
                self.reschedule(id);
            }
        }
    }

    /// One pass over the queue: at a scrape every 15 s or so, cheaper than
    /// keeping the counts up to date at every step of every message.
    pub(super) fn stats(&self) -> QueueStats {
        let mut stats = QueueStats::default();
        for msg in self.msgs.values() {
            let count = &mut stats.0[msg.queue_state() as usize];
            count.messages += 1;
            count.bytes += u64::from(msg.size);
            count.oldest_arrival_unix_ms = Some(
                count
                    .oldest_arrival_unix_ms
                    .map_or(msg.arrival_unix_ms, |t| t.min(msg.arrival_unix_ms)),
            );
        }
        stats
    }

    /// Where a message stands: the recipients' forward-paths, states and
    /// last replies as the spool has them, what is in flight from here.
    pub(super) fn status(&self, id: QueueId) -> Option<MessageStatus> {
        let msg = self.msgs.get(&id)?;
        let stored = match self.spool.get(id) {
            Ok(stored) => stored?,
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read a queued message");
                return None;
            }
        };
        let next_attempt_unix_ms = if msg.frozen() {
            None
        } else {
            msg.rcpts
                .iter()
                .filter(|r| r.waits())
                .map(|r| r.due_ms)
                .min()
        };
        Some(MessageStatus {
            id,
            arrival_unix_ms: msg.arrival_unix_ms,
            held: msg.held,
            in_flight: msg.in_flight(),
            next_attempt_unix_ms,
            recipients: msg
                .rcpts
                .iter()
                .zip(std::sync::Arc::unwrap_or_clone(stored.entry.envelope).recipients)
                .zip(stored.states)
                .map(|((r, recipient), stored)| {
                    // A state decided but not yet durable is already in the
                    // log: show it, so that the two agree.
                    let state = match &r.phase {
                        Phase::Decided(state) | Phase::Journaling(state) => (**state).clone(),
                        Phase::Idle | Phase::Dispatched => stored,
                    };
                    RecipientStatus {
                        forward_path: recipient.forward_path,
                        last: state.reason().cloned(),
                        state,
                        in_flight: r.phase != Phase::Idle,
                    }
                })
                .collect(),
        })
    }
}
