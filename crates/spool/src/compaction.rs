//! Deleting dead segments and compacting the oldest one.
//!
//! Segments are deleted from the front only (see `index`), so a long-lived
//! message (a recipient deferred for days) would pin every newer segment
//! behind it. Compaction copies the live messages of the oldest segment,
//! each with its current recipient states as a snapshot, to the head, makes
//! the copies durable (fdatasync), and only then deletes the old file. A
//! crash between the two leaves the message in both files; replay keeps the
//! later copy (latest wins), so a message exists twice at worst, never zero
//! times.
//!
//! Policy, checked after each batch (and run while the writer is idle):
//! - the oldest segment with no live references is deleted;
//! - the oldest segment is compacted when its live message bytes are below
//!   `compact_live_percent` of its size (mostly dead), or when the dead bytes
//!   held behind it in sealed segments exceed all live bytes plus one segment
//!   (space amplification bounded near 2×, whatever the oldest segment holds).
//!
//! Each step copies at most `compaction_step_bytes`, so submitters never wait
//! behind a whole segment's copy.

use crate::SpoolError;
use crate::index::{Index, map_of};
use crate::request::copy_item;
use crate::writer::Writer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Delete(u64),
    Compact(u64),
}

impl Writer {
    pub(crate) fn next_step(&self) -> Option<Step> {
        let index = self.shared.lock();
        let (&oldest, seg) = index.segments.first_key_value()?;
        if oldest >= self.head_seq {
            return None;
        }
        if seg.refs == 0 {
            return Some(Step::Delete(oldest));
        }
        let mostly_dead = u128::from(seg.live_bytes) * 100
            < u128::from(seg.len) * u128::from(self.cfg.compact_live_percent);
        let dead_behind: u64 = index
            .segments
            .range(oldest + 1..self.head_seq)
            .map(|(_, s)| s.dead_bytes())
            .sum();
        let bloated = dead_behind > index.live_bytes_total() + self.cfg.segment_size;
        (mostly_dead || bloated).then_some(Step::Compact(oldest))
    }

    pub(crate) fn maintain_step(&mut self) -> Result<(), SpoolError> {
        match self.next_step() {
            None => Ok(()),
            Some(Step::Delete(seq)) => self.delete_segment(seq),
            Some(Step::Compact(seq)) => self.compact_step(seq),
        }
    }

    /// Runs maintenance until nothing is left to do (bounded, in case the
    /// policy keeps finding work while segments cycle).
    pub(crate) fn maintain(&mut self) -> Result<(), SpoolError> {
        let limit = 16 + 4 * self.shared.lock().segments.len();
        for _ in 0..limit {
            if self.next_step().is_none() {
                break;
            }
            self.maintain_step()?;
        }
        Ok(())
    }

    /// Out of the index at once (readers holding its mapping keep it
    /// valid after the unlink; new readers no longer find it); the file
    /// goes on the reaper's thread, which is slow for a full segment.
    fn delete_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
        let segment = self.shared.lock().segments.remove(&seq);
        self.reaper.delete(seq, segment, self.segment_path(seq));
        Ok(())
    }

    /// Copies up to `compaction_step_bytes` of the live messages that pin
    /// segment `seq` to the head.
    fn compact_step(&mut self, seq: u64) -> Result<(), SpoolError> {
        let items = {
            let mut guard = self.shared.lock();
            let Index {
                messages, segments, ..
            } = &mut *guard;
            // Only the oldest segment is compacted, and only messages whose
            // record is in it can pin it (see `Segment::members`).
            let members = segments.get(&seq).map(|s| s.members.as_slice());
            let mut ids: Vec<_> = members
                .unwrap_or_default()
                .iter()
                .copied()
                .filter(|id| messages.get(id).is_some_and(|m| m.loc.seg == seq))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let mut items = Vec::new();
            let mut bytes = 0;
            for id in ids {
                if !items.is_empty() && bytes >= self.cfg.compaction_step_bytes {
                    break;
                }
                let Some(m) = messages.get(&id) else { continue };
                let map = map_of(segments, &m.loc)?;
                items.push(copy_item(
                    id,
                    m.arrival_unix_ms,
                    &m.recipient_states(),
                    m.held,
                    &m.loc,
                    map,
                )?);
                bytes += m.loc.record_len;
            }
            if items.is_empty() {
                // Nothing live names the segment: its reference count is
                // stale, and by the invariant it is free to go. Without this
                // the idle writer would retry the same empty step forever.
                tracing::warn!(
                    segment = seq,
                    "segment pinned by no live message; releasing it"
                );
                if let Some(seg) = segments.get_mut(&seq) {
                    seg.refs = 0;
                }
            }
            items
        };
        tracing::debug!(
            segment = seq,
            messages = items.len(),
            "compacting spool segment"
        );
        self.write_items(items)
    }
}
