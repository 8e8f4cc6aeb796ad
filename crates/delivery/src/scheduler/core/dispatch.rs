//! Turning due recipients into jobs, within the per-destination and pool
//! limits; and the lines where the rest wait for a slot.

use std::collections::VecDeque;

use sluice_smtp::client::PIPELINED_BODY_MAX;
use sluice_spool::{QueueId, StoredMessage};

use super::Core;
use crate::scheduler::pool::Run;
use crate::scheduler::state::{DestId, Phase};
use crate::scheduler::{Destination, Job};

/// Jobs in one run at most. A run's outcomes are reported together, so its
/// first message's are journaled after the last is delivered: a few
/// milliseconds each on a healthy connection. Eight saves most of the
/// wake-ups and keeps that delay short.
const RUN_MAX: usize = 8;

/// A run being gathered this round (see [`Core::send_job`]).
#[derive(Debug)]
pub(super) struct Gathered {
    destination: Destination,
    /// Reserved for it.
    thread: usize,
    run: Run,
}

/// Who asks for a dispatch: the lines it came out of may be passed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Via<'a> {
    /// A new message, a due timer, a retry: behind everyone waiting.
    New,
    /// Just taken from the pool's line.
    Ready,
    /// Just taken from this destination's line.
    Line(&'a Destination),
}

impl Core {
    /// Moves what can move, oldest waiters first: messages waiting for the
    /// pool, then the lines of destinations with free slots, then due timers.
    pub(super) fn pump(&mut self) {
        if self.stopping.is_some() {
            for gathered in std::mem::take(&mut self.gathered) {
                self.pool.idle_again(gathered.thread);
                self.take_back(gathered.run);
            }
            self.freed.clear();
            return;
        }
        while self.pool.has_idle() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            if let Some(msg) = self.msgs.get_mut(&id) {
                msg.in_ready = false;
                self.dispatch(id, None, Via::Ready);
            }
        }
        let max = self.config.max_connections_per_destination;
        let mut still_waiting = Vec::new();
        for dest in std::mem::take(&mut self.freed) {
            loop {
                if self.busy.get(&dest).copied().unwrap_or(0) >= max {
                    break;
                }
                if !self.pool.has_idle() {
                    // The destination has room but the pool has none: look
                    // again next round, or its line would wait for a job of
                    // its own that may never come.
                    if !still_waiting.contains(&dest) {
                        still_waiting.push(dest.clone());
                    }
                    break;
                }
                let Some(id) = self.lines.get_mut(&dest).and_then(VecDeque::pop_front) else {
                    break;
                };
                // The slot that freed takes a run: this message and, while
                // it found a job here, the next ones in the line, whose turn
                // would come next anyway (one thread, one connection).
                self.forming = Some((dest.clone(), Vec::new()));
                self.dispatch_from_line(id, &dest);
                while let Some((_, run)) = &self.forming
                    && (1..RUN_MAX).contains(&run.len())
                {
                    let Some(next) = self.lines.get_mut(&dest).and_then(VecDeque::pop_front) else {
                        break;
                    };
                    self.dispatch_from_line(next, &dest);
                }
                if let Some((dest, run)) = self.forming.take()
                    && !run.is_empty()
                {
                    self.hand_run(dest, run);
                }
            }
            if self.lines.get(&dest).is_some_and(VecDeque::is_empty) {
                self.lines.remove(&dest);
            }
        }
        self.freed = still_waiting;
        let mut due = Vec::new();
        let msgs = &self.msgs;
        while let Some(id) = self
            .timers
            .pop_due(self.now, |t, id| Core::timer_is_live(msgs, t, id))
        {
            due.push(id);
        }
        for &id in &due {
            if let Some(msg) = self.msgs.get_mut(&id) {
                msg.set_timer(None);
            }
        }
        for id in due {
            self.dispatch(id, None, Via::New);
        }
        let msgs = &self.msgs;
        self.timers.tidy(|t, id| Core::timer_is_live(msgs, t, id));
        self.hand_gathered();
    }

    /// The runs gathered this round go to the threads reserved for them.
    fn hand_gathered(&mut self) {
        for Gathered { thread, run, .. } in std::mem::take(&mut self.gathered) {
            if let Some(run) = self.pool.hand_to(thread, run) {
                tracing::warn!(
                    "no delivery thread free for a run; its messages wait for the next round"
                );
                self.take_back(run);
            }
        }
    }

    fn dispatch_from_line(&mut self, id: QueueId, dest: &Destination) {
        if let Some(msg) = self.msgs.get_mut(&id) {
            msg.blocked_on.remove(dest);
            self.dispatch(id, None, Via::Line(dest));
        }
    }

    /// Sends a job per destination for the message's due recipients, as far
    /// as the destinations and the pool have room; the rest wait in line.
    /// `stored`: the message, if the caller has just read it.
    pub(super) fn dispatch(
        &mut self,
        id: QueueId,
        mut stored: Option<StoredMessage>,
        via: Via<'_>,
    ) {
        if self.stopping.is_some() {
            return;
        }
        let now = self.now;
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        for r in &mut msg.rcpts {
            r.blocked = false;
        }
        if msg.frozen() {
            self.reschedule(id);
            return;
        }
        if msg
            .rcpts
            .iter()
            .any(|r| matches!(r.phase, Phase::Decided(_)))
        {
            // Finished, but queueing its bounce failed earlier: try again.
            self.settle(id, stored.as_ref());
            return;
        }
        let mut by_dest: Vec<(DestId, Vec<u32>)> = Vec::new();
        for (i, r) in msg.rcpts.iter().enumerate() {
            if !r.waits() || r.due_ms > now {
                continue;
            }
            match by_dest.iter_mut().find(|(d, _)| *d == r.dest) {
                Some((_, v)) => v.push(i as u32),
                None => by_dest.push((r.dest, vec![i as u32])),
            }
        }
        let groups: Vec<(Destination, Vec<u32>)> = by_dest
            .into_iter()
            .filter_map(|(d, rcpts)| Some((self.dests.get(d)?.clone(), rcpts)))
            .collect();
        let max = self.config.max_connections_per_destination;
        let last = groups.len().saturating_sub(1);
        for (n, (dest, rcpts)) in groups.into_iter().enumerate() {
            // Whoever is already waiting goes first: a newcomer that took a
            // slot freed this round could starve them under steady load.
            let pool_waits = !self.ready.is_empty() && !matches!(via, Via::Ready);
            if !self.pool.has_idle() || pool_waits {
                self.block(id, &rcpts, None);
                continue;
            }
            let line_waits = self.lines.get(&dest).is_some_and(|l| !l.is_empty())
                && !matches!(via, Via::Line(d) if *d == dest);
            if self.busy.get(&dest).copied().unwrap_or(0) >= max || line_waits {
                self.block(id, &rcpts, Some(&dest));
                continue;
            }
            if stored.is_none() {
                match self.spool.get(id) {
                    Ok(Some(m)) => stored = Some(m),
                    Ok(None) => {
                        tracing::debug!(queue_id = %id, "message has left the spool");
                        self.forget(id);
                        return;
                    }
                    Err(e) => {
                        tracing::error!(queue_id = %id, error = %e,
                            "cannot read the message from the spool; will try again");
                        let retry = self.backoff_ms();
                        if let Some(msg) = self.msgs.get_mut(&id) {
                            for r in msg.rcpts.iter_mut().filter(|r| r.waits()) {
                                r.due_ms = r.due_ms.max(retry);
                            }
                        }
                        break;
                    }
                }
            }
            let message = match (n == last, &stored) {
                (true, _) => stored.take(),
                (false, Some(m)) => Some(m.clone()),
                (false, None) => None,
            };
            if let Some(message) = message {
                self.send_job(Job {
                    id,
                    destination: dest,
                    message,
                    recipients: rcpts,
                });
            }
        }
        self.reschedule(id);
    }

    /// Puts a message in line for a destination (`Some`) or the pool.
    pub(super) fn block(&mut self, id: QueueId, rcpts: &[u32], on: Option<&Destination>) {
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        for &r in rcpts {
            msg.rcpts[r as usize].blocked = true;
        }
        match on {
            None if !msg.in_ready => {
                msg.in_ready = true;
                self.ready.push_back(id);
            }
            Some(dest) if !msg.blocked_on.contains(dest) => {
                msg.blocked_on.push(dest.clone());
                self.lines.entry(dest.clone()).or_default().push_back(id);
            }
            _ => {}
        }
    }

    /// Marks the job's recipients dispatched and sends it on: into the run
    /// being formed for its destination, or to a thread of its own.
    pub(super) fn send_job(&mut self, job: Job) {
        let Some(msg) = self.msgs.get_mut(&job.id) else {
            return;
        };
        for &r in &job.recipients {
            msg.rcpts[r as usize].phase = Phase::Dispatched;
        }
        self.in_flight += 1;
        if let Some((dest, run)) = &mut self.forming
            && *dest == job.destination
        {
            run.push(job);
            return;
        }
        let dest = job.destination.clone();
        // Messages that become due together for a destination that takes
        // runs go as one: a thread and a connection's round trip for
        // several. Only bodies that go with their envelope, so a large one
        // never holds up the others behind it.
        if job.message.body().len() as u64 <= PIPELINED_BODY_MAX && self.transport.gathers(&dest) {
            if let Some(gathered) = self
                .gathered
                .iter_mut()
                .find(|g| g.destination == dest && g.run.len() < RUN_MAX)
            {
                gathered.run.push(job);
                return;
            }
            // The caller found a thread idle.
            if let Some(thread) = self.pool.reserve() {
                *self.busy.entry(dest.clone()).or_default() += 1;
                self.gathered.push(Gathered {
                    destination: dest,
                    thread,
                    run: vec![job],
                });
                return;
            }
        }
        self.hand_run(dest, vec![job]);
    }

    /// Gives a run its destination's slot and a thread.
    fn hand_run(&mut self, dest: Destination, run: Run) {
        *self.busy.entry(dest).or_default() += 1;
        // Callers checked that a thread is idle; this fails only if every
        // idle thread has ended (or, rarely, another destination's job of a
        // message in the run took the last one meanwhile).
        if let Some(run) = self.pool.hand(run) {
            tracing::warn!(
                "no delivery thread free for a run; its messages wait for the next round"
            );
            self.take_back(run);
        }
    }

    /// Undoes `send_job` for the jobs of a run that will not run.
    pub(super) fn take_back(&mut self, run: Run) {
        let Some(first) = run.first() else {
            return;
        };
        let dest = first.destination.clone();
        self.release_slot(&dest, run.len());
        for job in run {
            self.undispatch(job);
        }
    }

    /// A job that was not attempted: its recipients wait again.
    pub(super) fn undispatch(&mut self, job: Job) {
        if let Some(msg) = self.msgs.get_mut(&job.id) {
            for &r in &job.recipients {
                msg.rcpts[r as usize].phase = Phase::Idle;
            }
        }
        self.reschedule(job.id);
    }

    /// A run of `jobs` jobs to `dest` is over (done, or never started).
    pub(super) fn release_slot(&mut self, dest: &Destination, jobs: usize) {
        self.in_flight -= jobs;
        if let Some(n) = self.busy.get_mut(dest) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(dest);
            }
        }
        self.freed.push(dest.clone());
    }
}
