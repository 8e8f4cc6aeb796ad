//! A map keyed by queue id whose memory follows the number of messages, not
//! the next power of two above it.
//!
//! A million queued messages live in two such maps (the spool's index and
//! the scheduler's queue). A `HashMap<QueueId, V>` keeps the values in its
//! bucket array, which doubles once it is 7/8 full: at 1,000,000 entries it
//! has 2,097,152 buckets, so every value is paid for about twice. Here the
//! hash table holds only a 4-byte slot number per bucket (the id is read
//! from the slot when comparing), and the values sit in fixed-size chunks
//! allocated as needed: the slack is one chunk, whatever the size. Freed
//! slots are reused before new chunks are made, and all chunks but one are
//! given back when the map empties.
//!
//! Queue ids are made here (time and a counter), not chosen by clients, so
//! they are hashed with a multiply rather than SipHash.

use hashbrown::HashTable;

use crate::QueueId;

/// Values per chunk: a chunk of 100-byte values is 400 KiB, small next to
/// a big queue and allocated once for thousands of messages.
const CHUNK: usize = 4096;

/// The end of the free list.
const NONE: u32 = u32::MAX;

/// Where an entry sits in a [`QueueMap`] (see [`QueueMap::iter_slots`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSlot(u32);

#[derive(Debug)]
enum Entry<V> {
    /// Unused; the next free slot (or [`NONE`]).
    Free(u32),
    Used(QueueId, V),
}

/// A map from [`QueueId`] to `V`; see the module documentation.
#[derive(Debug)]
pub struct QueueMap<V> {
    /// Slot numbers, hashed by the id in the slot.
    table: HashTable<u32>,
    chunks: Vec<Vec<Entry<V>>>,
    /// The first free slot below the end of the last chunk, or [`NONE`].
    free: u32,
}

impl<V> Default for QueueMap<V> {
    fn default() -> Self {
        QueueMap {
            table: HashTable::new(),
            chunks: Vec::new(),
            free: NONE,
        }
    }
}

/// One 128-bit multiply folded onto itself: every bit of the id
/// (`unix_ms << 16 | counter`) reaches both the bucket index (low bits) and
/// the control byte (high bits).
fn hash(id: QueueId) -> u64 {
    let wide = u128::from(id.0) * 0x9E37_79B9_7F4A_7C15;
    (wide as u64) ^ ((wide >> 64) as u64)
}

fn slot<V>(chunks: &[Vec<Entry<V>>], n: u32) -> &Entry<V> {
    let n = n as usize;
    &chunks[n / CHUNK][n % CHUNK]
}

fn id_at<V>(chunks: &[Vec<Entry<V>>], n: u32) -> Option<QueueId> {
    match slot(chunks, n) {
        Entry::Used(id, _) => Some(*id),
        Entry::Free(_) => None,
    }
}

impl<V> QueueMap<V> {
    /// An empty map; nothing is allocated until the first insert.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// How many values it holds room for without allocating.
    pub fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    fn find(&self, id: QueueId) -> Option<u32> {
        let chunks = &self.chunks;
        self.table
            .find(hash(id), |&n| id_at(chunks, n) == Some(id))
            .copied()
    }

    /// Whether `id` has an entry.
    pub fn contains_key(&self, id: &QueueId) -> bool {
        self.find(*id).is_some()
    }

    /// The value for `id`.
    pub fn get(&self, id: &QueueId) -> Option<&V> {
        match slot(&self.chunks, self.find(*id)?) {
            Entry::Used(_, v) => Some(v),
            Entry::Free(_) => None,
        }
    }

    /// The value for `id`, to change in place.
    pub fn get_mut(&mut self, id: &QueueId) -> Option<&mut V> {
        let n = self.find(*id)?;
        match self.slot_mut(n) {
            Entry::Used(_, v) => Some(v),
            Entry::Free(_) => None,
        }
    }

    /// Inserts or replaces; returns the value it replaced.
    pub fn insert(&mut self, id: QueueId, value: V) -> Option<V> {
        if let Some(n) = self.find(id) {
            return match std::mem::replace(self.slot_mut(n), Entry::Used(id, value)) {
                Entry::Used(_, old) => Some(old),
                Entry::Free(_) => None,
            };
        }
        let n = self.take_free_slot();
        *self.slot_mut(n) = Entry::Used(id, value);
        let chunks = &self.chunks;
        self.table
            .insert_unique(hash(id), n, |&m| id_at(chunks, m).map_or(0, hash));
        None
    }

    /// Takes the entry for `id` out; its slot is reused by the next insert.
    pub fn remove(&mut self, id: &QueueId) -> Option<V> {
        let chunks = &self.chunks;
        let entry = self
            .table
            .find_entry(hash(*id), |&n| id_at(chunks, n) == Some(*id))
            .ok()?;
        let (n, _) = entry.remove();
        let next_free = self.free;
        let old = std::mem::replace(self.slot_mut(n), Entry::Free(next_free));
        self.free = n;
        if self.table.is_empty() && self.chunks.len() > 1 {
            // A big queue has drained; the free list would keep every chunk.
            // One stays, so that a small queue that empties and fills again
            // all day does not allocate a chunk each time.
            self.chunks.truncate(1);
            self.chunks[0].clear();
            self.free = NONE;
            self.table.shrink_to_fit(|_| 0);
        }
        match old {
            Entry::Used(_, v) => Some(v),
            Entry::Free(_) => None,
        }
    }

    /// Each entry with its slot number, for [`QueueMap::get_at`]: a caller
    /// that visits entries again in another order (by arrival) goes
    /// straight to the slot instead of through the hash table.
    pub fn iter_slots(&self) -> impl Iterator<Item = (QueueSlot, QueueId, &V)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().enumerate().filter_map(move |(i, s)| match s {
                // Below 2^32 by `take_free_slot`.
                Entry::Used(id, v) => Some((QueueSlot((c * CHUNK + i) as u32), *id, v)),
                Entry::Free(_) => None,
            })
        })
    }

    /// The value in `slot` if it is still `id`'s.
    pub fn get_at(&self, slot: QueueSlot, id: QueueId) -> Option<&V> {
        let n = slot.0 as usize;
        match self.chunks.get(n / CHUNK)?.get(n % CHUNK)? {
            Entry::Used(at, v) if *at == id => Some(v),
            _ => None,
        }
    }

    /// In no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (QueueId, &V)> {
        self.iter_slots().map(|(_, id, v)| (id, v))
    }

    /// The ids, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = QueueId> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// The values, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Gives back what the hash table holds beyond its entries (the chunks
    /// are given back by themselves when the map empties).
    pub fn shrink_to_fit(&mut self) {
        let chunks = &self.chunks;
        self.table
            .shrink_to_fit(|&n| id_at(chunks, n).map_or(0, hash));
    }

    fn slot_mut(&mut self, n: u32) -> &mut Entry<V> {
        let n = n as usize;
        &mut self.chunks[n / CHUNK][n % CHUNK]
    }

    fn take_free_slot(&mut self) -> u32 {
        if self.free != NONE {
            let n = self.free;
            if let Entry::Free(next) = slot(&self.chunks, n) {
                self.free = *next;
            }
            return n;
        }
        let last_full = self.chunks.last().is_none_or(|c| c.len() == CHUNK);
        if last_full {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let base = (self.chunks.len() - 1) * CHUNK;
        let chunk = self.chunks.last_mut().expect("a chunk was just made");
        chunk.push(Entry::Free(NONE));
        // More than 4 billion queued messages would need more than 400 GB of
        // memory first.
        u32::try_from(base + chunk.len() - 1).expect("fewer than 2^32 queued messages")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn slots_are_reused_and_an_empty_map_gives_its_chunks_back() {
        let mut map = QueueMap::new();
        for n in 0..10_000u64 {
            assert_eq!(map.insert(QueueId(n), n), None);
        }
        assert_eq!(map.capacity(), 3 * CHUNK);
        for n in 0..5_000u64 {
            assert_eq!(map.remove(&QueueId(n)), Some(n));
        }
        for n in 10_000..15_000u64 {
            map.insert(QueueId(n), n);
        }
        assert_eq!(map.capacity(), 3 * CHUNK, "freed slots were not reused");
        assert_eq!(map.insert(QueueId(12_000), 7), Some(12_000));
        assert_eq!(map.get(&QueueId(12_000)), Some(&7));
        for n in 5_000..15_000u64 {
            assert!(map.remove(&QueueId(n)).is_some());
        }
        assert!(map.is_empty());
        assert_eq!(map.capacity(), CHUNK, "one chunk stays, the rest go");
        assert_eq!(map.get(&QueueId(5)), None);
    }

    #[test]
    fn a_slot_answers_only_for_the_id_it_was_listed_with() {
        let mut map = QueueMap::new();
        map.insert(QueueId(1), "one");
        map.insert(QueueId(2), "two");
        let slots: Vec<(QueueSlot, QueueId)> = map.iter_slots().map(|(s, id, _)| (s, id)).collect();
        assert_eq!(map.get_at(slots[0].0, slots[0].1), Some(&"one"));
        map.remove(&QueueId(1));
        map.insert(QueueId(3), "three");
        // Slot reused by another message: not the one listed.
        assert_eq!(map.get_at(slots[0].0, QueueId(1)), None);
        assert_eq!(map.get_at(slots[0].0, QueueId(3)), Some(&"three"));
        assert_eq!(map.get_at(slots[1].0, QueueId(2)), Some(&"two"));
    }

    proptest! {
        /// Any sequence of inserts and removes leaves the same contents as
        /// a BTreeMap given the same sequence.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), 0u64..64, any::<u16>()), 0..400)) {
            let mut map = QueueMap::new();
            let mut model = BTreeMap::new();
            for (insert, key, value) in ops {
                let id = QueueId(key << 16);
                if insert {
                    prop_assert_eq!(map.insert(id, value), model.insert(id, value));
                } else {
                    prop_assert_eq!(map.remove(&id), model.remove(&id));
                }
                prop_assert_eq!(map.len(), model.len());
            }
            let mut seen: Vec<(QueueId, u16)> = map.iter().map(|(id, v)| (id, *v)).collect();
            seen.sort();
            let expected: Vec<(QueueId, u16)> = model.into_iter().collect();
            prop_assert_eq!(seen, expected);
        }
    }
}
