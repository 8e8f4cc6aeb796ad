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

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Weak};

use memmap2::Mmap;
use smallvec::SmallVec;

use crate::format::{JournalOp, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::{QueueId, QueueMap, Reason, RecipientState, SpoolError};

/// Where a message record lies: 32 bytes, as a million of them live in
/// memory. The envelope starts right after the record header and the
/// envelope's length; the body ends where the record ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) seg: u64,
    /// Start of the record header, within the segment.
    pub(crate) offset: u64,
    /// Header and payload.
    pub(crate) record_len: u64,
    pub(crate) envelope_len: u32,
    /// Where the body starts, from the start of the record.
    body_offset: u32,
}

impl Location {
    /// A record at `offset` of segment `seg`, `record_len` bytes long, with
    /// an envelope of `envelope_len` bytes and its body from `body_offset`
    /// (counted from the record's start) to its end. Both fit in 32 bits:
    /// a record's payload length is a 32-bit field.
    pub(crate) fn new(
        seg: u64,
        offset: u64,
        record_len: u64,
        envelope_len: u32,
        body_offset: u32,
    ) -> Location {
        Location {
            seg,
            offset,
            record_len,
            envelope_len,
            body_offset,
        }
    }

    pub(crate) fn end(&self) -> u64 {
        self.offset + self.record_len
    }

    /// After the record header and the envelope's 4-byte length.
    pub(crate) fn envelope_start(&self) -> u64 {
        self.offset + RECORD_HEADER_LEN as u64 + 4
    }

    pub(crate) fn envelope_end(&self) -> u64 {
        self.envelope_start() + u64::from(self.envelope_len)
    }

    pub(crate) fn body_start(&self) -> u64 {
        self.offset + u64::from(self.body_offset)
    }

    pub(crate) fn body_len(&self) -> u64 {
        self.record_len - u64::from(self.body_offset)
    }
}

/// A recipient's state as the index keeps it: [`RecipientState`] with its
/// reason shared. When a next hop is down, thousands of recipients carry the
/// same reply; they carry one copy of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    Pending,
    Delivered,
    Failed(Arc<Reason>),
    Deferred {
        until_unix_ms: u64,
        attempts: u32,
        last: Arc<Reason>,
    },
}

impl Progress {
    pub(crate) fn is_final(&self) -> bool {
        matches!(self, Progress::Delivered | Progress::Failed(_))
    }

    pub(crate) fn to_state(&self) -> RecipientState {
        match self {
            Progress::Pending => RecipientState::Pending,
            Progress::Delivered => RecipientState::Delivered,
            Progress::Failed(reason) => RecipientState::Failed(Reason::clone(reason)),
            Progress::Deferred {
                until_unix_ms,
                attempts,
                last,
            } => RecipientState::Deferred {
                until_unix_ms: *until_unix_ms,
                attempts: *attempts,
                last: Reason::clone(last),
            },
        }
    }
}

/// The last reason kept, for the next state to share if it says the same.
#[derive(Debug, Default)]
pub(crate) struct Reasons {
    last: Option<Arc<Reason>>,
}

impl Reasons {
    fn share(&mut self, reason: &Reason) -> Arc<Reason> {
        match &self.last {
            Some(last) if **last == *reason => last.clone(),
            _ => {
                let shared = Arc::new(reason.clone());
                self.last = Some(shared.clone());
                shared
            }
        }
    }

    pub(crate) fn progress(&mut self, state: &RecipientState) -> Progress {
        match state {
            RecipientState::Pending => Progress::Pending,
            RecipientState::Delivered => Progress::Delivered,
            RecipientState::Failed(reason) => Progress::Failed(self.share(reason)),
            RecipientState::Deferred {
                until_unix_ms,
                attempts,
                last,
            } => Progress::Deferred {
                until_unix_ms: *until_unix_ms,
                attempts: *attempts,
                last: self.share(last),
            },
        }
    }
}

/// One per recipient; inline for the usual single recipient.
pub(crate) type States = SmallVec<[Progress; 1]>;

#[derive(Debug)]
pub(crate) struct LiveMessage {
    pub(crate) loc: Location,
    pub(crate) arrival_unix_ms: u64,
    /// One per recipient.
    pub(crate) states: States,
    pub(crate) held: bool,
    /// Segments holding a record (message or journal) of this message since
    /// its latest message record: each of them is pinned while it lives.
    pub(crate) segs: SmallVec<[u64; 2]>,
}

impl LiveMessage {
    pub(crate) fn recipient_states(&self) -> Vec<RecipientState> {
        self.states.iter().map(Progress::to_state).collect()
    }
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
    /// The messages whose message record was written here, live or not
    /// (a look-up tells): compacting the oldest segment visits these rather
    /// than the whole queue, as only they can pin it (every other record of
    /// a message lies in its record's segment or a later one).
    pub(crate) members: Vec<QueueId>,
    pub(crate) map: Option<Arc<Mmap>>,
    /// Mappings replaced by a larger one, which readers may still hold:
    /// the file is not cut behind them when the segment dies (`reaper`).
    replaced_maps: Vec<Weak<Mmap>>,
}

impl Segment {
    pub(crate) fn new(file: File, len: u64, map_hint: u64) -> Segment {
        Segment {
            file: Arc::new(file),
            len,
            map_hint,
            refs: 0,
            live_bytes: 0,
            members: Vec::new(),
            map: None,
            replaced_maps: Vec::new(),
        }
    }

    /// Every mapping of the segment that readers may still hold, once the
    /// segment itself is gone (it holds the current one until then).
    pub(crate) fn into_mappings(self) -> Vec<Weak<Mmap>> {
        let mut all = self.replaced_maps;
        all.retain(|m| m.strong_count() > 0);
        all.extend(self.map.as_ref().map(Arc::downgrade));
        all
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
        if let Some(old) = self.map.replace(m.clone()) {
            self.replaced_maps.retain(|m| m.strong_count() > 0);
            self.replaced_maps.push(Arc::downgrade(&old));
        }
        Ok(m)
    }

    /// Bytes not belonging to live message records.
    pub(crate) fn dead_bytes(&self) -> u64 {
        self.len
            .saturating_sub(self.live_bytes + SEGMENT_HEADER_LEN as u64)
    }
}

/// A mapping of `loc`'s segment that covers its record.
pub(crate) fn map_of(
    segments: &mut BTreeMap<u64, Segment>,
    loc: &Location,
) -> Result<Arc<Mmap>, SpoolError> {
    let seg = segments
        .get_mut(&loc.seg)
        .ok_or(SpoolError::Corrupt("live message in a deleted segment"))?;
    Ok(seg.map_covering(loc.end())?)
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) messages: QueueMap<LiveMessage>,
    pub(crate) segments: BTreeMap<u64, Segment>,
    pub(crate) reasons: Reasons,
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
        states: &[RecipientState],
        held: bool,
    ) {
        self.remove(id);
        let states: States = if states.is_empty() {
            smallvec::smallvec![Progress::Pending; recipients]
        } else {
            states.iter().map(|s| self.reasons.progress(s)).collect()
        };
        if let Some(seg) = self.segments.get_mut(&loc.seg) {
            seg.refs += 1;
            seg.live_bytes += loc.record_len;
            seg.members.push(id);
        }
        self.messages.insert(
            id,
            LiveMessage {
                loc,
                arrival_unix_ms,
                states,
                held,
                segs: smallvec::smallvec![loc.seg],
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
                    Some(s) => *s = self.reasons.progress(&e.state),
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
            let done = self
                .messages
                .get(&id)
                .is_some_and(|m| !m.states.is_empty() && m.states.iter().all(Progress::is_final));
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

#[cfg(test)]
mod tests {
    use sluice_smtp::{EnhancedCode, Reply};

    use super::*;

    fn deferred(text: &'static str) -> RecipientState {
        RecipientState::Deferred {
            until_unix_ms: 5,
            attempts: 1,
            last: Reason::local(Reply::new(451, Some(EnhancedCode::new(4, 4, 1)), text)),
        }
    }

    fn reason(p: &Progress) -> &Arc<Reason> {
        match p {
            Progress::Deferred { last, .. } | Progress::Failed(last) => last,
            other => panic!("no reason in {other:?}"),
        }
    }

    #[test]
    fn equal_reasons_in_a_row_are_kept_once_and_read_back_whole() {
        let mut reasons = Reasons::default();
        let a = reasons.progress(&deferred("Connection refused"));
        let b = reasons.progress(&deferred("Connection refused"));
        let c = reasons.progress(&deferred("Try again"));
        assert!(Arc::ptr_eq(reason(&a), reason(&b)), "the same reply twice");
        assert!(!Arc::ptr_eq(reason(&b), reason(&c)));
        assert_eq!(b.to_state(), deferred("Connection refused"));
        assert_eq!(c.to_state(), deferred("Try again"));
    }
}
