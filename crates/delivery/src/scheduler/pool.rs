//! The delivery threads, and the scheduler's side of handing them jobs.
//!
//! Each thread has a job channel of its own (capacity 1), and the scheduler
//! keeps a stack of the threads that are idle. A [`Run`] (one job, or several
//! for one destination that were waiting in its line) goes into one idle
//! thread's channel, so it wakes that thread and no other, and no thread is
//! handed a run while it still has one. The thread delivers the run's jobs
//! one after the other (on one cached connection, for SMTP) and reports them
//! in one event: under load, one wake-up each way for several messages. The
//! thread that became idle last gets the next run: under light load a few
//! threads do all the work (their caches warm) and the rest stay parked
//! instead of taking turns.
//!
//! A thread waits with [`sluice_sys::parked`], not `Receiver::recv`: crossbeam's
//! `recv` spins and calls `sched_yield` four times before it parks, which
//! with 32 delivery threads sharing one channel on two cores was 9 % of
//! Sluice's CPU. `select` tries once, registers and parks; the scheduler's
//! send unparks it. That is a futex wake and wait per job instead of the
//! yields (docs/benchmarks.md, hot spot 1, has the numbers), and only the
//! thread that has work runs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::{Event, Job, Transport};
use crate::Outcome;

/// Jobs for one destination, delivered in order by one thread. Never empty.
pub(super) type Run = Vec<Job>;

/// The scheduler's side: the threads' job channels, and which threads are idle.
pub(super) struct Pool {
    /// Per thread, by number. Emptied at shutdown: the threads end when
    /// their sender drops.
    jobs: Vec<Sender<Run>>,
    /// The other ends, to take back at shutdown the runs no thread has
    /// started.
    pending: Vec<Receiver<Run>>,
    /// Threads with nothing to do, the one that became idle last on top.
    /// A thread found gone is not put back.
    idle: Vec<usize>,
}

impl Pool {
    /// Channels for `threads` threads, all idle; the receivers go to the
    /// threads, in order.
    pub(super) fn new(threads: usize) -> (Pool, Vec<Receiver<Run>>) {
        let (jobs, receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| crossbeam_channel::bounded(1)).unzip();
        let pool = Pool {
            jobs,
            pending: receivers.clone(),
            // Thread 0 on top, so the first jobs go to the low numbers.
            idle: (0..threads).rev().collect(),
        };
        (pool, receivers)
    }

    /// Some thread can take a job now.
    pub(super) fn has_idle(&self) -> bool {
        !self.idle.is_empty()
    }

    /// Gives the run to an idle thread; returns it if none can take it
    /// (none idle, or shut down).
    pub(super) fn hand(&mut self, mut run: Run) -> Option<Run> {
        while let Some(n) = self.idle.pop() {
            match self.jobs[n].try_send(run) {
                Ok(()) => return None,
                // An idle thread has taken its last run out of its channel,
                // so there is room: the thread has ended. It stays out.
                Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => {
                    tracing::error!(thread = n, "a delivery thread has ended");
                    run = r;
                }
            }
        }
        Some(run)
    }

    /// Takes an idle thread for a run still being gathered; it goes to that
    /// thread with [`Pool::hand_to`].
    pub(super) fn reserve(&mut self) -> Option<usize> {
        self.idle.pop()
    }

    /// Gives the run to thread `n`, taken with [`Pool::reserve`]; or, should
    /// that thread have ended, to another idle one. Returns the run if none
    /// can take it.
    pub(super) fn hand_to(&mut self, n: usize, run: Run) -> Option<Run> {
        let Some(jobs) = self.jobs.get(n) else {
            return Some(run);
        };
        match jobs.try_send(run) {
            Ok(()) => None,
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => {
                tracing::error!(thread = n, "a delivery thread has ended");
                self.hand(r)
            }
        }
    }

    /// Thread `n` has finished its job (its result is in).
    pub(super) fn idle_again(&mut self, n: usize) {
        if n < self.jobs.len() {
            debug_assert!(!self.idle.contains(&n), "thread {n} idle twice");
            self.idle.push(n);
        }
    }

    /// Stops handing out runs and lets the threads end (busy ones after
    /// their run); returns the runs that no thread had started.
    pub(super) fn close(&mut self) -> Vec<Run> {
        self.idle.clear();
        self.jobs.clear();
        std::mem::take(&mut self.pending)
            .iter()
            .filter_map(|rx| rx.try_recv().ok())
            .collect()
    }
}

/// One delivery thread.
pub(super) struct Worker {
    /// Its number: its place in [`Pool`], sent back with every result.
    pub(super) n: usize,
    pub(super) transport: Arc<dyn Transport>,
    /// Its own channel: a run in it is for this thread alone.
    pub(super) jobs: Receiver<Run>,
    pub(super) events: Sender<Event>,
    /// Dropped when the thread ends: shutdown waits for all of them.
    pub(super) _alive: Sender<()>,
}

impl Worker {
    pub(super) fn run(self) {
        // Parks at once when there is no job (see the module comment); ends
        // when the scheduler drops the sender (shutdown).
        let mut runs = sluice_sys::parked(&self.jobs);
        // Runs found in the channel between the jobs of another: the
        // scheduler never hands a busy thread a run, so this stays empty;
        // were it not to, they are delivered next, never dropped.
        let mut late: Vec<Run> = Vec::new();
        while let Some(run) = late.pop().or_else(|| runs.next()) {
            if run.len() > 1
                && let Some(outcomes) = deliver_together(&*self.transport, &run)
            {
                let done = run
                    .into_iter()
                    .zip(outcomes)
                    .map(|(job, outcomes)| {
                        let outcomes = complete(&job, outcomes);
                        (job, outcomes)
                    })
                    .collect();
                let event = Event::Done {
                    thread: self.n,
                    done,
                    unrun: Vec::new(),
                };
                if self.events.send(event).is_err() {
                    break;
                }
                continue;
            }
            let mut done = Vec::with_capacity(run.len());
            let mut unrun = Vec::new();
            for job in run {
                // Shutdown closes the job channels; the rest of the run is
                // left for after the restart rather than delivered with no
                // scheduler to journal it.
                if !done.is_empty() {
                    match self.jobs.try_recv() {
                        Err(TryRecvError::Disconnected) => {
                            unrun.push(job);
                            continue;
                        }
                        Ok(extra) => {
                            tracing::error!(
                                thread = self.n,
                                "a run handed to a busy delivery thread"
                            );
                            late.push(extra);
                        }
                        Err(TryRecvError::Empty) => {}
                    }
                }
                let outcomes = deliver(&*self.transport, &job);
                done.push((job, outcomes));
            }
            let event = Event::Done {
                thread: self.n,
                done,
                unrun,
            };
            if self.events.send(event).is_err() {
                break;
            }
        }
    }
}

/// Runs one job, always giving exactly one outcome per recipient: a
/// transport that panics or forgets a recipient must not lose the job (the
/// scheduler counts it in flight until it comes back).
fn deliver(transport: &dyn Transport, job: &Job) -> Vec<Outcome> {
    let outcomes = match catch_unwind(AssertUnwindSafe(|| transport.deliver(job))) {
        Ok(outcomes) => outcomes,
        Err(_) => {
            tracing::error!(queue_id = %job.id, destination = %job.destination,
                "delivery transport panicked");
            Vec::new()
        }
    };
    complete(job, outcomes)
}

/// Runs a run's jobs together when the transport can: one list of
/// outcomes per job (each then [`complete`]d); `None` to run them one by
/// one. A panic leaves every job without outcomes, so each is retried.
fn deliver_together(transport: &dyn Transport, run: &[Job]) -> Option<Vec<Vec<Outcome>>> {
    let mut outcomes = match catch_unwind(AssertUnwindSafe(|| transport.deliver_run(run))) {
        Ok(outcomes) => outcomes?,
        Err(_) => {
            tracing::error!(jobs = run.len(), destination = %run[0].destination,
                "delivery transport panicked on a run");
            Vec::new()
        }
    };
    outcomes.resize_with(run.len(), Vec::new);
    Some(outcomes)
}

/// Exactly one outcome per recipient of `job`: the missing ones are
/// temporary failures.
fn complete(job: &Job, mut outcomes: Vec<Outcome>) -> Vec<Outcome> {
    if outcomes.len() != job.recipients.len() {
        if !outcomes.is_empty() {
            tracing::error!(queue_id = %job.id, destination = %job.destination,
                expected = job.recipients.len(), got = outcomes.len(),
                "delivery transport returned the wrong number of outcomes");
        }
        outcomes.resize(
            job.recipients.len(),
            Outcome::local(
                451,
                (4, 3, 0),
                "local error in delivery: no outcome for this recipient",
            ),
        );
    }
    outcomes
}
