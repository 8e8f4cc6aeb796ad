//! The scheduler thread: owns the in-memory queue, turns due messages into
//! jobs, and turns outcomes into journal entries and bounces.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender};
use sluice_smtp::ForwardPath;
use sluice_spool::{JournalEntry, MessageMark, QueueId, QueueMap, SpoolError, SpoolHandle};

mod commands;
mod dispatch;
mod outcomes;

use super::clock::Clock;
use super::destinations::Destinations;
use super::pool::{Pool, Run};
use super::retry::Policy;
use super::state::{DestId, Msg};
use super::timers::Timers;
use super::{Destination, Event, SchedulerConfig, Transport};
use dispatch::Gathered;

/// Events handled before the scheduler looks at its timers and writes the
/// journal batch: large enough to batch a burst, small enough that due
/// messages are not starved by one.
const EVENTS_PER_ROUND: usize = 1024;

/// How many messages the queue must have held (the map's capacity) before
/// draining it gives memory back.
const SHRINK_AFTER: usize = 10_000;

pub(super) struct Core {
    config: SchedulerConfig,
    spool: SpoolHandle,
    transport: Arc<dyn Transport>,
    /// For the completions of spool requests.
    events: Sender<Event>,
    /// The delivery threads' channels and which of them are idle: a job is
    /// dispatched only when one is.
    pool: Pool,
    /// Jobs handed to the pool whose results have not come back.
    in_flight: usize,
    msgs: QueueMap<Msg>,
    /// The destinations of the queued recipients.
    dests: Destinations,
    /// `(due ms, id)`: the earliest first. Only the entry `Msg::timer`
    /// names counts; others of the same message are stale (see `timers`).
    timers: Timers,
    /// Runs (connections) in flight per destination.
    busy: foldhash::HashMap<Destination, usize>,
    /// The run being put together from one destination's line, while its
    /// messages are dispatched (`pump`): their jobs join it instead of each
    /// taking a thread and a slot.
    forming: Option<(Destination, Run)>,
    /// Runs gathered this round for destinations that take them
    /// ([`Transport::gathers`]): each holds a slot and a reserved thread,
    /// and goes to it at the end of the round (`pump`).
    gathered: Vec<Gathered>,
    /// Per destination, messages with due recipients waiting for a slot.
    /// Entries go stale (the message was delivered meanwhile, or is gone)
    /// and are skipped when they come up.
    lines: foldhash::HashMap<Destination, VecDeque<QueueId>>,
    /// Messages with due recipients waiting for the pool to have room.
    ready: VecDeque<QueueId>,
    /// Destinations whose line may be able to move.
    freed: Vec<Destination>,
    /// Entries to write at the end of this round, as one batch.
    journal: Vec<JournalEntry>,
    /// Per batch in flight, which recipients it settles.
    batches: HashMap<u64, Vec<(QueueId, u32)>>,
    next_batch: u64,
    /// Spool requests not yet answered.
    outstanding: usize,
    /// Set by shutdown: no more dispatching; exit once quiet or at this time.
    stopping: Option<Instant>,
    /// Where `now` comes from.
    clock: Arc<dyn Clock>,
    /// Now, in ms since the Unix epoch, as of the event being handled.
    now: u64,
}

/// The next event, waiting until `deadline` at most. Parks at once when
/// there is none, as the delivery threads do (`pool.rs`): `recv` would spin
/// and `sched_yield` first. `wait` selects on `events` alone.
fn next_event(
    wait: &mut Select<'_>,
    events: &Receiver<Event>,
    deadline: Option<Instant>,
) -> Result<Event, RecvTimeoutError> {
    let ready = match deadline {
        Some(deadline) => wait
            .select_deadline(deadline)
            .map_err(|_| RecvTimeoutError::Timeout)?,
        None => wait.select(),
    };
    ready
        .recv(events)
        .map_err(|_| RecvTimeoutError::Disconnected)
}

impl Core {
    pub(super) fn new(
        config: SchedulerConfig,
        spool: SpoolHandle,
        transport: Arc<dyn Transport>,
        events: Sender<Event>,
        pool: Pool,
        clock: Arc<dyn Clock>,
    ) -> Result<Core, SpoolError> {
        let now = clock.now_unix_ms();
        let mut core = Core {
            config,
            spool,
            transport,
            events,
            pool,
            in_flight: 0,
            msgs: QueueMap::new(),
            dests: Destinations::default(),
            timers: Timers::default(),
            busy: Default::default(),
            forming: None,
            gathered: Vec::new(),
            lines: Default::default(),
            ready: VecDeque::new(),
            freed: Vec::new(),
            journal: Vec::new(),
            batches: HashMap::new(),
            next_batch: 0,
            outstanding: 0,
            stopping: None,
            clock,
            now,
        };
        let messages = core.spool.messages()?;
        let (mut held, mut deferred) = (0usize, 0usize);
        for m in &messages {
            let msg = core.load(|dest| Msg::from_summary(m, now, dest));
            held += usize::from(msg.held);
            deferred += usize::from(msg.rcpts.iter().any(|r| r.due_ms > now));
            core.msgs.insert(m.id, msg);
            core.reschedule(m.id);
        }
        let count = messages.len();
        drop(messages);
        // The summaries were several times the size of what is kept; a big
        // queue would otherwise keep their memory in the allocator.
        if count >= SHRINK_AFTER {
            sluice_sys::release_free_memory();
        }
        tracing::info!(
            messages = count,
            held,
            deferred,
            "scheduler loaded the queue from the spool"
        );
        Ok(core)
    }

    fn policy(&self) -> Policy<'_> {
        Policy {
            retry_schedule: &self.config.retry_schedule,
            max_queue_lifetime: self.config.max_queue_lifetime,
        }
    }

    /// When to try again after the spool failed us: the first retry interval.
    fn backoff_ms(&self) -> u64 {
        self.now
            .saturating_add(super::retry::millis(self.policy().retry_delay(0)))
    }

    pub(super) fn run(mut self, events: Receiver<Event>) {
        let mut wait = Select::new_biased();
        wait.recv(&events);
        loop {
            self.now = self.clock.now_unix_ms();
            let wake = match self.stopping {
                Some(deadline) => {
                    if self.in_flight == 0 && self.outstanding == 0 {
                        break;
                    }
                    Some(deadline)
                }
                None => self.timers.first().map(|(due, _)| {
                    Instant::now() + Duration::from_millis(due.saturating_sub(self.now))
                }),
            };
            let first = next_event(&mut wait, &events, wake);
            match first {
                Ok(event) => {
                    self.now = self.clock.now_unix_ms();
                    self.handle(event);
                    for event in events.try_iter().take(EVENTS_PER_ROUND) {
                        self.handle(event);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.stopping.is_some_and(|d| Instant::now() >= d) {
                        tracing::warn!(
                            jobs = self.in_flight,
                            spool_requests = self.outstanding,
                            "shutdown grace period over; abandoning what is still in flight"
                        );
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.now = self.clock.now_unix_ms();
            self.pump();
            self.write_journal();
        }
        tracing::info!("scheduler stopped");
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrived(group) => {
                for arrival in group {
                    self.queued(arrival.id, arrival.message);
                }
            }
            Event::Queued(id) => self.queued(id, None),
            Event::Flush(id) => self.flush(id),
            Event::Hold(id) => self.hold(id),
            Event::Release(id) => self.mark(id, MessageMark::Released),
            Event::Delete(id) => self.delete(id),
            Event::Bounce(id) => self.admin_bounce(id),
            Event::Status(id, reply) => {
                let _ = reply.send(self.status(id));
            }
            Event::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Event::Done {
                thread,
                done,
                unrun,
            } => {
                self.pool.idle_again(thread);
                let first = done.first().map(|(job, _)| job).or(unrun.first());
                if let Some(first) = first {
                    let dest = first.destination.clone();
                    self.release_slot(&dest, done.len() + unrun.len());
                }
                for (job, outcomes) in done {
                    self.job_done(job, outcomes);
                }
                for job in unrun {
                    self.undispatch(job);
                }
            }
            Event::Journaled(batch, result) => self.journaled(batch, result),
            Event::Marked(id, mark, result) => self.marked(id, mark, result),
            Event::BounceQueued(id, result) => self.bounce_queued(id, result),
            Event::Shutdown(deadline) => self.begin_shutdown(deadline),
            Event::Tick(done) => {
                // Whatever the clock made due goes to the pool before the
                // answer, so that the caller can count on it.
                self.pump();
                let _ = done.send(());
            }
        }
    }

    /// Builds a message's in-memory form, giving `build` the way to number
    /// each recipient's destination.
    fn load(&mut self, build: impl FnOnce(&mut dyn FnMut(&ForwardPath) -> DestId) -> Msg) -> Msg {
        let transport = &self.transport;
        let dests = &mut self.dests;
        build(&mut |forward_path| dests.intern(transport.destination(forward_path)))
    }

    // ---- the timer set ----

    /// Whether the timer entry `(due, id)` is the one its message names.
    fn timer_is_live(msgs: &QueueMap<Msg>, due: u64, id: QueueId) -> bool {
        msgs.get(&id).and_then(Msg::timer) == Some(due)
    }

    /// Puts the message's timer entry where its recipients say.
    fn reschedule(&mut self, id: QueueId) {
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        let next = msg.next_due();
        if msg.timer() == next {
            return;
        }
        if msg.timer().is_some() {
            self.timers.cancel();
        }
        msg.set_timer(next);
        if let Some(due) = next {
            self.timers.insert(due, id);
        }
    }

    /// Drops a message the spool no longer has. Its entries in the lines go
    /// stale; results of its jobs still in flight are ignored.
    fn forget(&mut self, id: QueueId) {
        // Before the removal: the map gives its chunks back when it empties.
        let was_big = self.msgs.capacity() >= SHRINK_AFTER;
        let Some(msg) = self.msgs.remove(&id) else {
            return;
        };
        if msg.timer().is_some() {
            self.timers.cancel();
        }
        for r in &msg.rcpts {
            self.dests.release(r.dest);
        }
        if self.msgs.is_empty() && was_big {
            self.shrink();
        }
    }

    /// A big queue has drained: the maps keep their capacity and the
    /// allocator the memory freed, gigabytes after a million messages.
    /// Both go back now. Not after every small queue: trimming walks the
    /// heap.
    fn shrink(&mut self) {
        self.msgs.shrink_to_fit();
        self.dests.shrink_to_fit();
        self.timers.clear();
        self.lines.retain(|_, line| !line.is_empty());
        self.lines.shrink_to_fit();
        for line in self.lines.values_mut() {
            line.shrink_to_fit();
        }
        self.ready.shrink_to_fit();
        self.busy.shrink_to_fit();
        self.batches.shrink_to_fit();
        self.journal.shrink_to_fit();
        let released = sluice_sys::release_free_memory();
        tracing::info!(released, "queue empty: memory given back");
    }

    // ---- shutdown ----

    fn begin_shutdown(&mut self, deadline: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(deadline);
        // Jobs no thread has taken yet are abandoned: their recipients are
        // still pending or deferred in the spool. Idle threads end; busy
        // ones end after their job.
        for run in self.pool.close() {
            self.take_back(run);
        }
        tracing::info!(jobs = self.in_flight, "scheduler stopping");
    }
}
