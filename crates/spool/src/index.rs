//! The in-memory index of live messages and of the segments that hold them.
//!
//! Both recovery (replaying the segments) and the writer thread (after each
//! durable batch) drive the same operations, so the state after a restart is
//! by construction the state before it.
//!
//! Segment lifetime rule: segments are deleted only from the front (oldest
//! first), and only when no live message has a record in the oldest one. That
//! way every journal or done record outlives the message records it refers to,
//! so replay can never resurrect a finished message or forget a recipient's
//! state. Compaction (see `writer`) keeps the front moving by copying the few
//! live messages of the oldest segment, with their current states, forward.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::Arc;

use memmap2::Mmap;

use crate::format::{JournalOp, SEGMENT_HEADER_LEN};
use crate::{QueueId, RecipientState};

/// Where a message record lies: all offsets are absolute within its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) seg: u64,
    /// Start of the record header.
    pub(crate) offset: u64,
    /// Header and payload.
    pub(crate) record_len: u64,
    pub(crate) envelope_start: u64,
    pub(crate) envelope_len: u64,
    pub(crate) body_start: u64,
    pub(crate) body_len: u64,
}

impl Location {
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.record_len
    }
}

#[derive(Debug)]
pub(crate) struct LiveMessage {
    pub(crate) loc: Location,
    pub(crate) arrival_unix_ms: u64,
    /// One per recipient.
    pub(crate) states: Vec<RecipientState>,
    pub(crate) held: bool,
    /// Segments holding a record (message or journal) of this message since
    /// its latest message record: each of them is pinned while it lives.
    pub(crate) segs: Vec<u64>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    /// A read-only handle for mapping.
    pub(crate) file: Arc<File>,
    /// End of the last durable record.
    pub(crate) len: u64,
    /// How far to map: the head is mapped at its full capacity so appends do
    /// not need a remap each; sealed segments exactly.
    pub(crate) map_hint: u64,
    /// Live messages with a record in this segment.
    pub(crate) refs: u32,
    /// Bytes of the message records of live messages located here.
    pub(crate) live_bytes: u64,
    pub(crate) map: Option<Arc<Mmap>>,
}

impl Segment {
    pub(crate) fn new(file: File, len: u64, map_hint: u64) -> Segment {
        Segment {
            file: Arc::new(file),
            len,
            map_hint,
            refs: 0,
            live_bytes: 0,
            map: None,
        }
    }

    /// A mapping that covers at least `end` bytes, remapping if the segment
    /// has grown past the current one.
    pub(crate) fn map_covering(&mut self, end: u64) -> std::io::Result<Arc<Mmap>> {
        if let Some(m) = &self.map
            && m.len() as u64 >= end
        {
            return Ok(m.clone());
        }
        let len = end.max(self.map_hint).max(self.len);
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        let m = Arc::new(crate::mmap::map(&self.file, len)?);
        self.map = Some(m.clone());
        Ok(m)
    }

    /// Bytes not belonging to live message records.
    pub(crate) fn dead_bytes(&self) -> u64 {
        self.len
            .saturating_sub(self.live_bytes + SEGMENT_HEADER_LEN as u64)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) messages: HashMap<QueueId, LiveMessage>,
    pub(crate) segments: BTreeMap<u64, Segment>,
}

/// What applying one journal record did (for the writer's bookkeeping).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Entries naming a recipient index the message does not have.
    pub(crate) bad_recipient: u32,
    /// Messages that became final.
    pub(crate) finished: u32,
}

impl Index {
    /// A message record: a new message, or a newer copy of a live one (from
    /// compaction), which replaces it: latest wins.
    pub(crate) fn insert(
        &mut self,
        id: QueueId,
        loc: Location,
        arrival_unix_ms: u64,
        recipients: usize,
        mut states: Vec<RecipientState>,
        held: bool,
    ) {
        self.remove(id);
        if states.is_empty() {
            states = vec![RecipientState::Pending; recipients];
        }
        if let Some(seg) = self.segments.get_mut(&loc.seg) {
            seg.refs += 1;
            seg.live_bytes += loc.record_len;
        }
        self.messages.insert(
            id,
            LiveMessage {
                loc,
                arrival_unix_ms,
                states,
                held,
                segs: vec![loc.seg],
            },
        );
    }

    /// Drops a message (done, deleted or superseded) and unpins its segments.
    pub(crate) fn remove(&mut self, id: QueueId) -> bool {
        let Some(m) = self.messages.remove(&id) else {
            return false;
        };
        for s in &m.segs {
            if let Some(seg) = self.segments.get_mut(s) {
                seg.refs = seg.refs.saturating_sub(1);
                if *s == m.loc.seg {
                    seg.live_bytes = seg.live_bytes.saturating_sub(m.loc.record_len);
                }
            }
        }
        true
    }

    /// Replays a journal record stored in segment `seg`. Entries for unknown
    /// messages (finished meanwhile, or compacted away) are ignored.
    pub(crate) fn apply_journal(&mut self, seg: u64, ops: &[JournalOp]) -> Applied {
        let mut applied = Applied::default();
        let mut touched: Vec<QueueId> = Vec::new();
        for op in ops {
            let id = match op {
                JournalOp::Recipient(e) => e.id,
                JournalOp::Held(id) | JournalOp::Released(id) => *id,
            };
            let Some(m) = self.messages.get_mut(&id) else {
                continue;
            };
            match op {
                JournalOp::Recipient(e) => match m.states.get_mut(e.recipient as usize) {
                    Some(s) => *s = e.state.clone(),
                    None => {
                        applied.bad_recipient += 1;
                        continue;
                    }
                },
                JournalOp::Held(_) => m.held = true,
                JournalOp::Released(_) => m.held = false,
            }
            if !m.segs.contains(&seg) {
                m.segs.push(seg);
                if let Some(s) = self.segments.get_mut(&seg) {
                    s.refs += 1;
                }
            }
            touched.push(id);
        }
        for id in touched {
            let done = self.messages.get(&id).is_some_and(|m| {
                !m.states.is_empty() && m.states.iter().all(RecipientState::is_final)
            });
            if done && self.remove(id) {
                applied.finished += 1;
            }
        }
        applied
    }

    pub(crate) fn live_bytes_total(&self) -> u64 {
        self.segments.values().map(|s| s.live_bytes).sum()
    }
}
