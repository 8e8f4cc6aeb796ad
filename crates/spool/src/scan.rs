//! Reading the whole queue: [`SpoolHandle::scan`] and the summaries it
//! gives, for `sluice queue list` and `summary` and for the scheduler's start.

use crate::index::{Index, map_of};
use crate::queue_map::QueueSlot;
use crate::spool::decode_at;
use crate::{QueueId, RecipientState, SpoolError, SpoolHandle};

/// Messages per lock of the index in [`SpoolHandle::scan`].
pub const SCAN_BATCH: usize = 4096;

/// The order of [`SpoolHandle::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanOrder {
    /// By arrival, then queue id.
    OldestFirst,
    /// As the index holds them: no sorting.
    Any,
}

/// One queued message as `sluice queue list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    /// Its queue id.
    pub id: QueueId,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub arrival_unix_ms: u64,
    /// Body size in bytes.
    pub size: u64,
    /// The reverse-path (null for bounces).
    pub reverse_path: sluice_smtp::ReversePath,
    /// Held by the operator.
    pub held: bool,
    /// Forward-paths with their delivery state, in RCPT order.
    pub recipients: Vec<RecipientStatus>,
}

/// A forward-path and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// The forward-path.
    pub forward_path: sluice_smtp::ForwardPath,
    /// Its delivery state.
    pub state: RecipientState,
}

impl SpoolHandle {
    /// Every queued message, oldest first.
    pub fn messages(&self) -> Result<Vec<MessageSummary>, SpoolError> {
        let mut out = Vec::new();
        self.scan(ScanOrder::OldestFirst, |m| {
            out.push(m);
            true
        })?;
        Ok(out)
    }

    /// Shows `visit` every queued message, in `order`, until it returns
    /// `false`. The index is locked only to list the ids and then for each
    /// batch of [`SCAN_BATCH`] messages, so a scan of a million messages
    /// does not stop the writer (and the `250`s waiting on it) for its
    /// whole length: a message that leaves meanwhile is skipped, one that
    /// arrives meanwhile may or may not be seen.
    pub fn scan(
        &self,
        order: ScanOrder,
        mut visit: impl FnMut(MessageSummary) -> bool,
    ) -> Result<(), SpoolError> {
        let mut ids: Vec<(u64, QueueId, QueueSlot)> = {
            let index = self.shared.lock();
            index
                .messages
                .iter_slots()
                .map(|(slot, id, m)| (m.arrival_unix_ms, id, slot))
                .collect()
        };
        if order == ScanOrder::OldestFirst {
            ids.sort_unstable_by_key(|&(arrival, id, _)| (arrival, id));
        }
        let mut batch = Vec::with_capacity(SCAN_BATCH);
        for chunk in ids.chunks(SCAN_BATCH) {
            {
                let mut index = self.shared.lock();
                let Index {
                    messages, segments, ..
                } = &mut *index;
                for &(_, id, slot) in chunk {
                    let Some(m) = messages.get_at(slot, id) else {
                        continue;
                    };
                    batch.push((
                        id,
                        m.loc,
                        m.arrival_unix_ms,
                        m.held,
                        m.recipient_states(),
                        map_of(segments, &m.loc)?,
                    ));
                }
            }
            for (id, loc, arrival_unix_ms, held, states, map) in batch.drain(..) {
                let entry = decode_at(&map, loc.envelope_start(), loc.envelope_len.into())?;
                // Just decoded, so held nowhere else: taken, not copied.
                let envelope = std::sync::Arc::unwrap_or_clone(entry.envelope);
                let summary = MessageSummary {
                    id,
                    arrival_unix_ms,
                    size: loc.body_len(),
                    reverse_path: envelope.reverse_path,
                    held,
                    recipients: envelope
                        .recipients
                        .into_iter()
                        .zip(states)
                        .map(|(r, state)| RecipientStatus {
                            forward_path: r.forward_path,
                            state,
                        })
                        .collect(),
                };
                if !visit(summary) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Spool, SpoolConfig, Submission};

    /// A message that arrived at `arrival_unix_ms`.
    fn submission(id: QueueId, arrival_unix_ms: u64) -> Submission {
        let entry = crate::test_support::entry(id, arrival_unix_ms);
        Submission::new(entry, b"Subject: s\r\n\r\nbody\r\n".to_vec())
    }

    #[test]
    fn a_scan_sees_every_message_across_batches_oldest_first_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        let handle = spool.handle();
        let n = SCAN_BATCH + 904;
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..n {
            let tx = tx.clone();
            // Arrival times out of id order: the scan sorts by arrival.
            let arrival = 1_000_000 + ((i * 7919) % n) as u64;
            handle.submit(
                submission(handle.new_id(), arrival),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
        }
        for _ in 0..n {
            rx.recv().unwrap().unwrap();
        }
        let mut arrivals = Vec::new();
        handle
            .scan(ScanOrder::OldestFirst, |m| {
                assert_eq!(m.recipients.len(), 1);
                assert_eq!(m.recipients[0].state, RecipientState::Pending);
                arrivals.push(m.arrival_unix_ms);
                true
            })
            .unwrap();
        assert_eq!(arrivals.len(), n);
        assert!(
            arrivals.windows(2).all(|w| w[0] <= w[1]),
            "not oldest first"
        );
        let mut any = 0;
        handle.scan(ScanOrder::Any, |_| true).unwrap();
        handle
            .scan(ScanOrder::Any, |_| {
                any += 1;
                any < 10
            })
            .unwrap();
        assert_eq!(any, 10, "the scan went on after `false`");
        spool.shutdown();
    }
}
