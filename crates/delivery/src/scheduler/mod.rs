//! The delivery scheduler: which recipient is tried when, and by whom.
//!
//! One scheduler thread owns the in-memory queue: per-message recipient
//! states, a due-time ordered set of `(due, queue id)`, and the number of
//! connections (runs of jobs) in flight per destination. Everything else
//! talks to it through one channel of events (new messages from the front end, job results from the
//! delivery threads, durability notices from the spool, operator commands),
//! and it sleeps until the next event or due time: an idle queue costs no
//! CPU and there is no polling interval.
//!
//! A due message is split into jobs, one per destination (the key
//! [`Transport::destination`] gives a recipient), and each job goes to an
//! idle delivery thread only while its destination has fewer than
//! [`SchedulerConfig::max_connections_per_destination`] runs in flight;
//! otherwise the message waits in that destination's line until a run for
//! it comes back (no retry timer, no busy loop). When a slot frees, up to
//! `RUN_MAX` messages from the front of the line go to one thread as a run,
//! delivered one after the other over one connection. Messages that become
//! due in the same round for a destination the transport gathers for
//! ([`Transport::gathers`]: a next hop that takes pipelined runs) go as runs
//! too, each with a thread reserved for it and handed over at the end of the
//! round, and the transport may send a run's messages together
//! ([`Transport::deliver_run`]). A run wakes the one thread it is for, and
//! waiting threads are parked, not spinning (`pool.rs`).
//!
//! Every outcome is journaled to the spool before the in-memory state
//! follows it, so after a crash the spool tells the truth and a restart
//! repeats at most the attempts that were in flight. Bounces are queued in
//! the spool *before* the failed message is marked done, so a crash between
//! the two can duplicate a bounce but never lose one.

mod bounce;
pub mod clock;
mod core;
mod destinations;
mod pool;
mod retry;
mod state;
#[cfg(test)]
mod tests;
mod timers;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use sluice_smtp::ForwardPath;
use sluice_spool::{QueueId, Reason, RecipientState, SpoolError, SpoolHandle, StoredMessage};

use crate::Outcome;
use clock::{Clock, SystemClock};

/// How long [`Scheduler::shutdown`] waits for jobs in flight to come back
/// and for their outcomes to be journaled.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Tuning of the scheduler; `SchedulerConfig::default()` suits production.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Delivery threads. Default 32.
    pub threads: usize,
    /// Jobs in flight at once per destination key. Default 20.
    pub max_connections_per_destination: usize,
    /// The delay before attempt `n + 1` after `n` temporary failures; past
    /// the end, the last interval repeats. Default 1m, 5m, 15m, 30m, 1h, 2h, 4h.
    pub retry_schedule: Vec<Duration>,
    /// A recipient still failing temporarily this long after the message
    /// arrived fails for good (and is bounced). Default 5 days.
    pub max_queue_lifetime: Duration,
    /// Our name as the reporting MTA in bounces.
    pub hostname: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(60 * m);
        SchedulerConfig {
            threads: 32,
            max_connections_per_destination: 20,
            retry_schedule: vec![
                min(1),
                min(5),
                min(15),
                min(30),
                min(60),
                min(120),
                min(240),
            ],
            max_queue_lifetime: Duration::from_secs(5 * 24 * 3600),
            hostname: "localhost".into(),
        }
    }
}

/// Where a recipient's mail goes, as far as grouping and concurrency go:
/// recipients of one message with the same destination go in one job, and
/// jobs in flight are limited per destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// The local domains, written to Maildirs here.
    Local,
    /// The local domains, handed to an LMTP server.
    Lmtp,
    /// A next hop elsewhere: the recipient domain, or the route or
    /// smarthost every domain routed there shares.
    Remote(Arc<str>),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Local => f.write_str("local"),
            Destination::Lmtp => f.write_str("lmtp"),
            Destination::Remote(key) => f.write_str(key),
        }
    }
}

/// What the delivery threads run: local delivery and the SMTP client behind
/// one interface.
pub trait Transport: Send + Sync + 'static {
    /// The destination of a forward-path. Called on the scheduler thread for
    /// every dispatch: it must be cheap and must never block (no DNS here;
    /// resolve the next hop inside [`deliver`](Self::deliver)).
    fn destination(&self, recipient: &ForwardPath) -> Destination;

    /// Delivers one job, blocking; returns one outcome per entry of
    /// [`Job::recipients`], in order. Missing outcomes count as temporary
    /// failures, and so does a panic.
    fn deliver(&self, job: &Job) -> Vec<Outcome>;

    /// Whether jobs for `destination` that become due together should go
    /// to one delivery thread as a run, to be delivered together
    /// ([`deliver_run`](Self::deliver_run)), rather than to a thread each.
    /// Called on the scheduler thread for every job: cheap, never blocking.
    fn gathers(&self, _destination: &Destination) -> bool {
        false
    }

    /// Delivers a run of jobs for one destination together (over one
    /// connection, say), blocking: per job, in order, what
    /// [`deliver`](Self::deliver) would return. `None`: deliver them one by
    /// one instead.
    fn deliver_run(&self, _jobs: &[Job]) -> Option<Vec<Vec<Outcome>>> {
        None
    }
}

/// The recipients of one message that share a destination, for one attempt.
#[derive(Debug, Clone)]
pub struct Job {
    /// The message's queue id.
    pub id: QueueId,
    /// The destination all [`recipients`](Self::recipients) share.
    pub destination: Destination,
    /// The message; its body is borrowed from the spool's memory map.
    pub message: StoredMessage,
    /// Indexes into `message.entry.envelope.recipients`.
    pub recipients: Vec<u32>,
}

impl Job {
    /// The recipients of this job, in the order of [`recipients`](Self::recipients).
    pub fn recipients(&self) -> impl Iterator<Item = &sluice_smtp::Recipient> {
        let all = &self.message.entry.envelope.recipients;
        self.recipients.iter().map(move |&r| &all[r as usize])
    }

    /// The envelope of this job alone: the message's reverse-path and
    /// parameters, with only this job's recipients. The message's own,
    /// shared, when the job has every recipient of the message, in order
    /// (nearly always: one recipient, or one destination): nothing is
    /// copied then.
    pub fn envelope(&self) -> Arc<sluice_smtp::Envelope> {
        let envelope = &self.message.entry.envelope;
        let whole = self
            .recipients
            .iter()
            .map(|&r| r as usize)
            .eq(0..envelope.recipients.len());
        if whole {
            return Arc::clone(envelope);
        }
        Arc::new(sluice_smtp::Envelope {
            reverse_path: envelope.reverse_path.clone(),
            params: envelope.params.clone(),
            recipients: self.recipients().cloned().collect(),
        })
    }
}

/// Where one queued message stands, for `sluice queue` commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStatus {
    /// Its queue id.
    pub id: QueueId,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub arrival_unix_ms: u64,
    /// Held by the operator: not delivered until released.
    pub held: bool,
    /// Some recipient is being delivered right now (or its outcome is being
    /// journaled).
    pub in_flight: bool,
    /// The earliest next attempt of a recipient that waits, in milliseconds
    /// since the Unix epoch (in the past when it is only waiting for a free
    /// connection); `None` when none waits (held, or all in flight).
    pub next_attempt_unix_ms: Option<u64>,
    /// Per recipient, in RCPT order.
    pub recipients: Vec<RecipientStatus>,
}

/// Where one recipient of a queued message stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// The forward-path.
    pub forward_path: ForwardPath,
    /// Its state as journaled in the spool.
    pub state: RecipientState,
    /// In a job right now, or its outcome is being journaled.
    pub in_flight: bool,
    /// Why the last attempt ended as it did, if there was one since the
    /// message was loaded (or the reason the spool kept for a deferred or
    /// failed recipient).
    pub last: Option<Reason>,
}

/// Where a queued message stands, as the queue's gauges count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    /// Not yet tried, or due and waiting for a delivery thread or a free
    /// connection to its destination.
    Waiting,
    /// Being delivered now.
    Active,
    /// Failed for now; waiting for its next attempt.
    Deferred,
    /// Held by the operator.
    Held,
}

impl QueueState {
    pub const ALL: [QueueState; 4] = [
        QueueState::Waiting,
        QueueState::Active,
        QueueState::Deferred,
        QueueState::Held,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QueueState::Waiting => "waiting",
            QueueState::Active => "active",
            QueueState::Deferred => "deferred",
            QueueState::Held => "held",
        }
    }
}

/// The queue's size by state: what `/metrics` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCount {
    pub messages: u64,
    pub bytes: u64,
    /// When the oldest message in this state arrived (ms since the epoch).
    pub oldest_arrival_unix_ms: Option<u64>,
}

/// [`StateCount`]s in the order of [`QueueState::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats(pub [StateCount; 4]);

/// What reaches the scheduler thread.
pub(crate) enum Event {
    /// The spool's word on a group commit's new messages.
    Arrived(Vec<sluice_spool::Arrival>),
    /// Someone else's: read the message from the spool.
    Queued(QueueId),
    Flush(Option<QueueId>),
    Hold(QueueId),
    Release(QueueId),
    Delete(QueueId),
    Bounce(QueueId),
    Status(QueueId, Sender<Option<MessageStatus>>),
    Stats(Sender<QueueStats>),
    /// A run came back from delivery thread number `thread`, which is idle
    /// now: each job it attempted with its outcomes, in the run's order, and
    /// the jobs it left unattempted because shutdown began meanwhile.
    Done {
        thread: usize,
        done: Vec<(Job, Vec<Outcome>)>,
        unrun: Vec<Job>,
    },
    /// A journal batch is durable (or failed).
    Journaled(u64, Result<(), sluice_spool::SpoolError>),
    Marked(
        QueueId,
        sluice_spool::MessageMark,
        Result<(), sluice_spool::SpoolError>,
    ),
    /// The bounce for a message is queued in the spool (or failed to be).
    BounceQueued(QueueId, Result<QueueId, sluice_spool::SpoolError>),
    Shutdown(Instant),
    /// The clock may have moved: dispatch what is due, then answer.
    Tick(Sender<()>),
}

/// The running scheduler: its thread and the delivery pool. Dropping it is
/// [`Scheduler::shutdown`].
pub struct Scheduler {
    handle: SchedulerHandle,
    thread: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    /// Disconnects once every delivery thread has ended.
    workers_alive: Receiver<()>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("workers", &self.workers.len())
            .field("running", &self.thread.is_some())
            .finish()
    }
}

/// The way in for the front end and the operator's commands: cheap to clone,
/// never blocks (except [`status`](Self::status), which waits for the
/// answer). Commands after shutdown are ignored.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    events: Sender<Event>,
}

/// Why the scheduler did not start.
#[derive(Debug)]
pub enum StartError {
    /// `threads` is 0.
    NoThreads,
    /// `max_connections_per_destination` is 0: nothing could be delivered.
    NoConnectionsPerDestination,
    EmptyRetrySchedule,
    /// The queue could not be read from the spool.
    Spool(SpoolError),
    /// A delivery thread or the scheduler thread could not be started.
    Thread(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NoThreads => {
                f.write_str("the scheduler needs at least one delivery thread")
            }
            StartError::NoConnectionsPerDestination => {
                f.write_str("max_connections_per_destination must be at least 1")
            }
            StartError::EmptyRetrySchedule => {
                f.write_str("the retry schedule needs at least one interval")
            }
            StartError::Spool(e) => write!(f, "cannot read the queue from the spool: {e}"),
            StartError::Thread(e) => write!(f, "cannot start a delivery thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl Scheduler {
    /// Rebuilds the in-memory queue from the spool (pending recipients are
    /// due now, deferred ones at their retry time, held messages wait for
    /// release) and starts the scheduler thread and the delivery pool.
    ///
    /// Start it before the front end accepts mail: a message queued earlier
    /// is found here, and from now on the spool announces every new one
    /// ([`SpoolHandle::on_arrival`]), whoever queued it: the front end, a
    /// bounce, a forward.
    pub fn start(
        config: SchedulerConfig,
        spool: SpoolHandle,
        transport: Arc<dyn Transport>,
    ) -> Result<Scheduler, StartError> {
        Scheduler::start_with_clock(config, spool, transport, Arc::new(SystemClock))
    }

    /// [`start`](Self::start) on another clock than the system's (tests on
    /// virtual time: [`ManualClock`](clock::ManualClock)).
    pub fn start_with_clock(
        config: SchedulerConfig,
        spool: SpoolHandle,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
    ) -> Result<Scheduler, StartError> {
        if config.threads == 0 {
            return Err(StartError::NoThreads);
        }
        if config.max_connections_per_destination == 0 {
            return Err(StartError::NoConnectionsPerDestination);
        }
        if config.retry_schedule.is_empty() {
            return Err(StartError::EmptyRetrySchedule);
        }
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let arrivals = events_tx.clone();
        spool.on_arrival(Arc::new(move |group| {
            // After shutdown nobody listens; the spool still has the messages.
            let _ = arrivals.send(Event::Arrived(group));
        }));
        // One job per thread, handed only to an idle thread: a job queued
        // behind a running one could wait out a slow delivery while other
        // threads sleep, and would commit its message to an attempt early
        // (a hold or a delete could no longer stop it).
        let (pool, job_receivers) = pool::Pool::new(config.threads);
        let core = core::Core::new(
            config.clone(),
            spool,
            transport.clone(),
            events_tx.clone(),
            pool,
            clock,
        )
        .map_err(StartError::Spool)?;

        let (alive_tx, alive_rx) = crossbeam_channel::bounded::<()>(0);
        let mut workers = Vec::with_capacity(config.threads);
        for (n, jobs) in job_receivers.into_iter().enumerate() {
            let w = pool::Worker {
                n,
                transport: transport.clone(),
                jobs,
                events: events_tx.clone(),
                _alive: alive_tx.clone(),
            };
            match std::thread::Builder::new()
                .name(format!("delivery-{n}"))
                .spawn(move || w.run())
            {
                Ok(t) => workers.push(t),
                Err(e) => return Err(StartError::Thread(e.to_string())),
            }
        }
        drop(alive_tx);
        let thread = std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || core.run(events_rx))
            .map_err(|e| StartError::Thread(e.to_string()))?;
        Ok(Scheduler {
            handle: SchedulerHandle { events: events_tx },
            thread: Some(thread),
            workers,
            workers_alive: alive_rx,
        })
    }

    /// A handle for the front end and operator commands.
    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// Stops dispatching, waits up to [`DEFAULT_SHUTDOWN_GRACE`] for the jobs
    /// in flight to finish and their outcomes to be journaled, and joins the
    /// threads. Jobs not started yet are abandoned (their recipients are
    /// still pending in the spool).
    pub fn shutdown(self) {
        self.shutdown_within(DEFAULT_SHUTDOWN_GRACE);
    }

    /// [`shutdown`](Self::shutdown) with another grace period. Jobs still
    /// running after it are abandoned: their threads are detached, their
    /// outcomes are not journaled, and the next start tries those recipients
    /// again.
    pub fn shutdown_within(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + grace;
        let _ = self.handle.events.send(Event::Shutdown(deadline));
        if thread.join().is_err() {
            tracing::error!("scheduler thread panicked");
        }
        // The scheduler dropped the job senders on its way out, so idle
        // threads end at once; only one stuck in a transport call keeps the
        // channel open past the deadline.
        let all_ended = loop {
            match self.workers_alive.recv_deadline(deadline) {
                Ok(()) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break true,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => break false,
            }
        };
        if all_ended {
            for w in self.workers.drain(..) {
                if w.join().is_err() {
                    tracing::error!("delivery thread panicked");
                }
            }
        } else {
            let busy = self.workers.iter().filter(|w| !w.is_finished()).count();
            tracing::warn!(
                threads = busy,
                "delivery threads still busy at shutdown; abandoning their jobs"
            );
            self.workers.clear();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop(DEFAULT_SHUTDOWN_GRACE);
    }
}

impl SchedulerHandle {
    fn send(&self, event: Event) {
        // After shutdown nobody listens; the spool still has the message.
        let _ = self.events.send(event);
    }

    /// A new message is durable in the spool: schedule it now. The spool
    /// says so by itself; this is for a message it could not have announced
    /// (one queued while the scheduler was not listening). Announcing a
    /// message twice is harmless.
    pub fn queued(&self, id: QueueId) {
        self.send(Event::Queued(id));
    }

    /// Retry now: one message, or every queued message. Held messages stay held.
    pub fn flush(&self, id: Option<QueueId>) {
        self.send(Event::Flush(id));
    }

    /// Stops delivery of a message (jobs already running finish), durably.
    pub fn hold(&self, id: QueueId) {
        self.send(Event::Hold(id));
    }

    /// Lifts a hold; recipients whose time has come are tried at once.
    pub fn release(&self, id: QueueId) {
        self.send(Event::Release(id));
    }

    /// Removes a message from the queue without a bounce.
    pub fn delete(&self, id: QueueId) {
        self.send(Event::Delete(id));
    }

    /// Fails every recipient not yet delivered or failed
    /// (`5.0.0 message bounced by the administrator`) and bounces the
    /// message to its reverse-path. Recipients in flight fail if that
    /// attempt does not deliver them.
    pub fn bounce(&self, id: QueueId) {
        self.send(Event::Bounce(id));
    }

    /// Makes the scheduler read its clock and dispatch whatever is due now;
    /// returns once those jobs are handed to the delivery threads (not
    /// delivered). For a clock moved by hand; the system clock needs none.
    pub fn tick(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.events.send(Event::Tick(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// The queue's size by state; `None` if the scheduler does not answer
    /// within `limit` (stopped, or busy for that long).
    pub fn stats(&self, limit: Duration) -> Option<QueueStats> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.events.send(Event::Stats(tx)).ok()?;
        rx.recv_timeout(limit).ok()
    }

    /// Where a queued message stands; `None` if the scheduler does not know
    /// it (not queued, finished, or the scheduler has stopped).
    pub fn status(&self, id: QueueId) -> Option<MessageStatus> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.events.send(Event::Status(id, tx)).ok()?;
        rx.recv().ok().flatten()
    }
}
