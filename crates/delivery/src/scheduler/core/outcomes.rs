//! From outcomes to journal entries, and finishing a message with its
//! bounce.

use std::time::Duration;

use sluice_smtp::ForwardPath;
use sluice_spool::{
    JournalEntry, MessageMark, QueueId, Reason, RecipientState, SpoolError, StoredMessage,
};

use super::Core;
use crate::Outcome;
use crate::scheduler::state::{Phase, Standing};
use crate::scheduler::{Event, Job, bounce};

impl Core {
    /// One job's outcomes (its run's slot is already released).
    pub(super) fn job_done(&mut self, job: Job, outcomes: Vec<Outcome>) {
        let now = self.now;
        let Some(msg) = self.msgs.get(&job.id) else {
            tracing::debug!(queue_id = %job.id, "outcome for a message no longer queued");
            return;
        };
        let deleting = msg.deleting;
        let (arrival, admin) = (msg.arrival_unix_ms, msg.admin_bounce);
        let mut decided = Vec::with_capacity(job.recipients.len());
        for (&r, outcome) in job.recipients.iter().zip(&outcomes) {
            let Some(rcpt) = msg.rcpts.get(r as usize) else {
                continue;
            };
            if rcpt.phase != Phase::Dispatched {
                continue;
            }
            let next = (!deleting).then(|| {
                self.policy()
                    .next_state(outcome, rcpt.standing.attempts(), arrival, now, admin)
            });
            if let Some(recipient) = job.message.entry.envelope.recipients.get(r as usize) {
                log_outcome(
                    &job,
                    &recipient.forward_path,
                    outcome,
                    next.as_ref(),
                    arrival,
                    now,
                );
            }
            decided.push((r as usize, next));
        }
        let Some(msg) = self.msgs.get_mut(&job.id) else {
            return;
        };
        for (r, next) in decided {
            let rcpt = &mut msg.rcpts[r];
            rcpt.phase = match next {
                Some(state) => Phase::Decided(Box::new(state)),
                // Being deleted: nothing more to record.
                None => Phase::Idle,
            };
        }
        if !deleting {
            self.settle(job.id, Some(&job.message));
        }
    }

    /// After recipients got `Decided` states: journal them, unless that
    /// finishes the message with failures to report, in which case the
    /// bounce is queued first (and the message then marked done).
    pub(super) fn settle(&mut self, id: QueueId, stored: Option<&StoredMessage>) {
        let Some(msg) = self.msgs.get(&id) else {
            return;
        };
        if !msg.settled() || msg.null_sender {
            self.journal_decided(id, false);
            return;
        }
        let failed: Vec<(u32, Reason)> = msg
            .rcpts
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.failure().map(|reason| (i as u32, reason.clone())))
            .collect();
        if failed.is_empty() {
            self.journal_decided(id, false);
            return;
        }
        let loaded;
        let stored = match stored {
            Some(m) => m,
            None => match self.spool.get(id) {
                Ok(Some(m)) => {
                    loaded = m;
                    &loaded
                }
                Ok(None) => {
                    self.forget(id);
                    return;
                }
                Err(e) => {
                    tracing::error!(queue_id = %id, error = %e,
                        "cannot read the message to bounce it; will try again");
                    self.retry_settle(id);
                    return;
                }
            },
        };
        let Some(submission) = bounce::build(
            &self.config.hostname,
            stored,
            &failed,
            self.now,
            self.spool.new_id(),
        ) else {
            // Nobody to tell (NOTIFY=NEVER, or no usable reverse-path).
            self.journal_decided(id, false);
            return;
        };
        // The failures wait for the bounce (journaling them could let the
        // message leave the spool before its bounce is in), but the rest can
        // be journaled now, so that a crash before the done mark does not
        // deliver them again; unless no failure is held back, as then the
        // message would leave just the same.
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        msg.finishing = true;
        let holds_failure = msg.rcpts.iter().any(
            |r| matches!(&r.phase, Phase::Decided(s) if matches!(**s, RecipientState::Failed(_))),
        );
        if holds_failure {
            self.journal_decided(id, true);
        }
        self.reschedule(id);
        self.outstanding += 1;
        let events = self.events.clone();
        self.spool.submit(
            submission,
            Box::new(move |r| {
                let _ = events.send(Event::BounceQueued(id, r));
            }),
        );
    }

    /// The decided states wait (not journaled) for another try at finishing.
    pub(super) fn retry_settle(&mut self, id: QueueId) {
        let retry = self.backoff_ms();
        if let Some(msg) = self.msgs.get_mut(&id) {
            msg.finishing = false;
            for r in &mut msg.rcpts {
                if matches!(r.phase, Phase::Decided(_)) {
                    r.due_ms = retry;
                }
            }
        }
        self.reschedule(id);
    }

    /// Sends decided states to the journal; with `all_but_failures`, only
    /// those that are not failures.
    pub(super) fn journal_decided(&mut self, id: QueueId, all_but_failures: bool) {
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        for (i, r) in msg.rcpts.iter_mut().enumerate() {
            if let Phase::Decided(state) = &r.phase
                && !(all_but_failures && matches!(**state, RecipientState::Failed(_)))
            {
                self.journal.push(JournalEntry {
                    id,
                    recipient: i as u32,
                    state: RecipientState::clone(state),
                });
                r.phase.start_journaling();
            }
        }
        self.reschedule(id);
    }

    /// Sends this round's journal entries to the spool as one request (the
    /// spool's group commit merges it with whatever else is queued).
    pub(super) fn write_journal(&mut self) {
        if self.journal.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.journal);
        let batch = self.next_batch;
        self.next_batch += 1;
        self.batches
            .insert(batch, entries.iter().map(|e| (e.id, e.recipient)).collect());
        self.outstanding += 1;
        let events = self.events.clone();
        self.spool.journal(
            entries,
            Box::new(move |r| {
                let _ = events.send(Event::Journaled(batch, r));
            }),
        );
    }

    pub(super) fn journaled(&mut self, batch: u64, result: Result<(), SpoolError>) {
        self.outstanding -= 1;
        let Some(keys) = self.batches.remove(&batch) else {
            return;
        };
        if let Err(e) = &result {
            tracing::error!(entries = keys.len(), error = %e,
                "journal write failed; those recipients will be tried again");
        }
        let retry = self.backoff_ms();
        let now = self.now;
        let mut touched: Vec<QueueId> = Vec::new();
        for (id, r) in keys {
            let Some(rcpt) = self
                .msgs
                .get_mut(&id)
                .and_then(|m| m.rcpts.get_mut(r as usize))
            else {
                continue;
            };
            let Some(state) = rcpt.phase.take_journaled() else {
                continue;
            };
            if result.is_ok() {
                rcpt.due_ms = match &*state {
                    RecipientState::Deferred { until_unix_ms, .. } => *until_unix_ms,
                    _ => now,
                };
                rcpt.standing = Standing::of(&state);
            } else {
                rcpt.due_ms = retry;
            }
            if touched.last() != Some(&id) {
                touched.push(id);
            }
        }
        for id in touched {
            let Some(msg) = self.msgs.get(&id) else {
                continue;
            };
            if msg.finished() {
                // All final: the spool has let it go too.
                self.forget(id);
            } else if msg.admin_bounce && !msg.finishing && !msg.deleting {
                // Deferred while the operator bounced it.
                self.fail_waiting(id);
                self.settle(id, None);
            } else {
                self.reschedule(id);
            }
        }
    }

    pub(super) fn bounce_queued(&mut self, id: QueueId, result: Result<QueueId, SpoolError>) {
        self.outstanding -= 1;
        match result {
            Ok(bounce_id) => {
                // The spool announces the bounce itself, like any message.
                tracing::info!(queue_id = %id, bounce = %bounce_id, "bounce queued");
                self.mark(id, MessageMark::Done);
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e,
                    "cannot queue the bounce; will try again");
                self.retry_settle(id);
            }
        }
    }
}

fn log_outcome(
    job: &Job,
    recipient: &ForwardPath,
    outcome: &Outcome,
    next: Option<&RecipientState>,
    arrival_ms: u64,
    now_ms: u64,
) {
    let delay = Duration::from_millis(now_ms.saturating_sub(arrival_ms));
    let (kind, reason) = match next {
        None => ("dropped (message deleted)", outcome.reason()),
        Some(RecipientState::Delivered) => ("delivered", outcome.reason()),
        Some(RecipientState::Failed(reason)) => ("failed", reason),
        Some(RecipientState::Deferred { .. } | RecipientState::Pending) => {
            ("deferred", outcome.reason())
        }
    };
    let recipient = match recipient {
        ForwardPath::Postmaster => "postmaster".to_owned(),
        ForwardPath::Path(p) => p.mailbox.text(),
    };
    let retry = match next {
        Some(RecipientState::Deferred {
            until_unix_ms,
            attempts,
            ..
        }) => Some(format!(
            "attempt {attempts}, retry in {:.0?}",
            Duration::from_millis(until_unix_ms.saturating_sub(now_ms))
        )),
        // Nothing to retry: no field.
        _ => None,
    };
    tracing::info!(
        queue_id = %job.id,
        recipient,
        destination = %job.destination,
        outcome = kind,
        reply = %reason,
        // The same facts as fields of their own, for log processors: which
        // host answered, and at which stage of the transaction.
        remote_mta = reason.remote_mta.as_ref().map(tracing::field::display),
        stage = reason.stage.map(|s| s.name()),
        delay = ?delay,
        retry = retry.as_deref(),
        "delivery"
    );
}
