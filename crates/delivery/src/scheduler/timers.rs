//! When each queued message is next due: a binary heap with lazy removal.
//!
//! A message's due time changes often (dispatched, deferred, flushed); each
//! change would be a removal and an insertion in a `BTreeSet`, whose nodes
//! are about half full when keys arrive in rising order, as retry times do
//! (about 35 bytes per message). The heap is a plain array of 16-byte
//! entries. A changed or cancelled time is not searched for: its entry stays
//! and is recognised as stale when it comes to the top, because the message
//! no longer names it (`Msg::timer`). When stale entries outnumber live
//! ones, the heap is rebuilt without them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use sluice_spool::QueueId;

/// Below this many entries a rebuild is not worth it.
const REBUILD_FLOOR: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(u64, QueueId)>>,
    /// Entries in `heap` that no message names any more (an estimate that
    /// only triggers rebuilds; correctness never depends on it).
    stale: usize,
}

impl Timers {
    pub(super) fn insert(&mut self, due: u64, id: QueueId) {
        self.heap.push(Reverse((due, id)));
    }

    /// The entry `(due, id)` no longer counts.
    pub(super) fn cancel(&mut self) {
        self.stale += 1;
    }

    /// The earliest entry, stale or not: waking up for a stale one costs a
    /// look at the heap, nothing more.
    pub(super) fn first(&self) -> Option<(u64, QueueId)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// Takes the earliest entry due at `now` or before; `live` says whether
    /// a message still names it (stale ones are dropped and not returned).
    pub(super) fn pop_due(
        &mut self,
        now: u64,
        mut live: impl FnMut(u64, QueueId) -> bool,
    ) -> Option<QueueId> {
        while let Some(&Reverse((due, id))) = self.heap.peek()
            && due <= now
        {
            self.heap.pop();
            if live(due, id) {
                return Some(id);
            }
            self.stale = self.stale.saturating_sub(1);
        }
        None
    }

    /// Drops the stale entries once they outnumber the live ones.
    pub(super) fn tidy(&mut self, live: impl Fn(u64, QueueId) -> bool) {
        if self.heap.len() < REBUILD_FLOOR || self.stale * 2 < self.heap.len() {
            return;
        }
        self.heap.retain(|Reverse((due, id))| live(*due, *id));
        self.stale = 0;
    }

    /// Every entry is stale (the queue is empty): memory goes back too.
    pub(super) fn clear(&mut self) {
        self.heap = BinaryHeap::new();
        self.stale = 0;
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn stale_entries_are_skipped_and_tidied_away() {
        let mut timers = Timers::default();
        let mut named: HashMap<QueueId, u64> = HashMap::new();
        for n in 0..2000u64 {
            timers.insert(1000 + n, QueueId(n));
            named.insert(QueueId(n), 1000 + n);
        }
        // Every even message is rescheduled later: its first entry is stale.
        for n in (0..2000u64).step_by(2) {
            timers.cancel();
            timers.insert(5000 + n, QueueId(n));
            named.insert(QueueId(n), 5000 + n);
        }
        let live = |named: &HashMap<QueueId, u64>, due, id| named.get(&id) == Some(&due);
        let mut due = Vec::new();
        while let Some(id) = timers.pop_due(1999, |d, id| live(&named, d, id)) {
            due.push(id.0);
        }
        assert_eq!(due, (1..1000).step_by(2).collect::<Vec<_>>());
        for id in &due {
            named.remove(&QueueId(*id));
        }
        // 1000 even entries left, 500 of them stale (cancelled), plus
        // rescheduled ones: the stale count is half: a rebuild drops them.
        for n in (0..2000u64).step_by(2).take(600) {
            timers.cancel();
            named.remove(&QueueId(n));
        }
        let before = timers.len();
        timers.tidy(|d, id| live(&named, d, id));
        assert!(timers.len() < before, "{} entries still", timers.len());
        assert_eq!(timers.len(), named.len());
        assert_eq!(
            timers.first().map(|(d, _)| d),
            named.values().min().copied()
        );
    }
}
