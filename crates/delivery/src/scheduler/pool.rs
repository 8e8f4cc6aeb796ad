//! The delivery threads: take a job, run the transport, send the outcomes
//! back to the scheduler.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::{Event, Job, Transport};
use crate::Outcome;

pub(super) struct Worker {
    pub(super) transport: Arc<dyn Transport>,
    pub(super) jobs: Receiver<Job>,
    pub(super) events: Sender<Event>,
    /// Dropped when the thread ends: shutdown waits for all of them.
    pub(super) _alive: Sender<()>,
}

impl Worker {
    pub(super) fn run(self) {
        // Ends when the scheduler drops the job sender (shutdown).
        for job in self.jobs.iter() {
            let outcomes = deliver(&*self.transport, &job);
            if self
                .events
                .send(Event::Done(Box::new(job), outcomes))
                .is_err()
            {
                break;
            }
        }
    }
}

/// Runs one job, always giving exactly one outcome per recipient: a
/// transport that panics or forgets a recipient must not lose the job (the
/// scheduler counts it in flight until it comes back).
fn deliver(transport: &dyn Transport, job: &Job) -> Vec<Outcome> {
    let mut outcomes = match catch_unwind(AssertUnwindSafe(|| transport.deliver(job))) {
        Ok(outcomes) => outcomes,
        Err(_) => {
            tracing::error!(queue_id = %job.id, destination = %job.destination,
                "delivery transport panicked");
            Vec::new()
        }
    };
    if outcomes.len() != job.recipients.len() {
        if !outcomes.is_empty() {
            tracing::error!(queue_id = %job.id, destination = %job.destination,
                expected = job.recipients.len(), got = outcomes.len(),
                "delivery transport returned the wrong number of outcomes");
        }
        outcomes.resize(
            job.recipients.len(),
            Outcome::Deferred {
                reply: "451 4.3.0 local error in delivery: no outcome for this recipient".into(),
            },
        );
    }
    outcomes
}
