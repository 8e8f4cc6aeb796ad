//! Journal replay, finished messages leaving, segment deletion, compaction.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{body, reason, segment_files, small_segments};
use sluice_spool::{
    JournalEntry, MessageMark, QueueId, RecipientState, Spool, SpoolConfig, SpoolError,
    SpoolHandle, Submission,
};

fn entry(id: QueueId, recipient: u32, state: RecipientState) -> JournalEntry {
    JournalEntry {
        id,
        recipient,
        state,
    }
}

fn deferred(attempts: u32) -> RecipientState {
    RecipientState::Deferred {
        until_unix_ms: 1_800_000_000_000 + u64::from(attempts),
        attempts,
        last: reason(451, &format!("4.4.1 try {attempts}")),
    }
}

/// Submits a message with exactly `rcpts` recipients.
fn submit(h: &SpoolHandle, seed: u64, rcpts: usize, len: usize) -> QueueId {
    let mut queued = common::entry(h.new_id(), seed);
    let recipients = &mut std::sync::Arc::make_mut(&mut queued.envelope).recipients;
    recipients.resize(rcpts, recipients[0].clone());
    h.submit_wait(Submission::new(queued, body(seed, len)))
        .unwrap()
}

#[test]
fn recipient_states_survive_reopen_and_final_messages_leave() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let h = spool.handle();
    let mixed = submit(&h, 1, 3, 100);
    let all_final = submit(&h, 2, 2, 100);
    let marked = submit(&h, 3, 1, 100);
    let held = submit(&h, 4, 1, 100);
    let failed = RecipientState::Failed(reason(550, "5.1.1 no such user"));

    h.journal_wait(vec![
        entry(mixed, 0, RecipientState::Delivered),
        entry(mixed, 1, deferred(1)),
        entry(mixed, 2, failed.clone()),
        entry(all_final, 0, RecipientState::Delivered),
    ])
    .unwrap();
    // Later entries override earlier ones on replay.
    h.journal_wait(vec![entry(mixed, 1, deferred(2))]).unwrap();
    assert!(
        spool.get(all_final).unwrap().is_some(),
        "one recipient still pending"
    );
    h.journal_wait(vec![entry(all_final, 1, failed.clone())])
        .unwrap();
    assert!(
        spool.get(all_final).unwrap().is_none(),
        "all recipients final: gone at once"
    );
    h.mark_wait(marked, MessageMark::Done).unwrap();
    assert!(spool.get(marked).unwrap().is_none());
    h.mark_wait(held, MessageMark::Held).unwrap();

    // Errors: an index past the recipients fails the whole call; a finished
    // message takes late entries silently.
    assert!(matches!(
        h.journal_wait(vec![
            entry(mixed, 0, RecipientState::Pending),
            entry(mixed, 3, RecipientState::Delivered)
        ]),
        Err(SpoolError::NoSuchRecipient { recipient: 3, .. })
    ));
    h.journal_wait(vec![entry(all_final, 0, RecipientState::Pending)])
        .unwrap();
    h.mark_wait(marked, MessageMark::Held).unwrap();
    spool.shutdown();

    let (spool, report) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(report.live_messages, 2);
    let m = spool.get(mixed).unwrap().unwrap();
    assert_eq!(
        m.states,
        vec![RecipientState::Delivered, deferred(2), failed]
    );
    assert!(!m.held);
    assert!(
        spool.get(all_final).unwrap().is_none(),
        "finished message stays gone"
    );
    assert!(spool.get(marked).unwrap().is_none());
    assert!(spool.get(held).unwrap().unwrap().held);
    let listed = spool.messages().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].recipients[1].state, deferred(2));

    let h = spool.handle();
    h.mark_wait(held, MessageMark::Released).unwrap();
    h.mark_wait(mixed, MessageMark::Deleted).unwrap();
    spool.shutdown();
    let (spool, report) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(report.live_messages, 1);
    assert!(!spool.get(held).unwrap().unwrap().held);
    assert!(spool.get(mixed).unwrap().is_none());
}

#[test]
fn segment_of_finished_messages_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), small_segments(16 << 10)).unwrap();
    let h = spool.handle();
    let first: Vec<QueueId> = (0..3).map(|s| submit(&h, s, 1, 4000)).collect();
    // Fill past the first segment.
    let later: Vec<QueueId> = (10..20).map(|s| submit(&h, s, 1, 4000)).collect();
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 3);
    let oldest = segs[0].clone();
    for id in &first {
        h.journal_wait(vec![entry(*id, 0, RecipientState::Delivered)])
            .unwrap();
    }
    spool.maintain().unwrap();
    assert!(
        !oldest.exists(),
        "segment with only finished messages is deleted"
    );
    assert!(spool.stats().segments_deleted >= 1);
    spool.shutdown();

    let (spool, report) = Spool::open(dir.path(), small_segments(16 << 10)).unwrap();
    assert_eq!(report.live_messages, later.len());
    for id in later {
        assert!(spool.get(id).unwrap().is_some());
    }
}

#[test]
fn dead_segments_go_unasked_while_submissions_go_on() {
    // The writer takes a dead segment out of the index when idle; its file
    // goes on the reaper's thread (a full segment's unlink is slow), with
    // no maintenance request waiting for it.
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), small_segments(16 << 10)).unwrap();
    let h = spool.handle();
    let first: Vec<QueueId> = (0..3).map(|s| submit(&h, s, 1, 4000)).collect();
    let _later: Vec<QueueId> = (10..20).map(|s| submit(&h, s, 1, 4000)).collect();
    let oldest = segment_files(dir.path())[0].clone();
    h.journal_wait(
        first
            .iter()
            .map(|id| entry(*id, 0, RecipientState::Delivered))
            .collect(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut more = 30;
    while (oldest.exists() || spool.stats().segments_deleted == 0)
        && std::time::Instant::now() < deadline
    {
        // Submissions are answered meanwhile.
        submit(&h, more, 1, 100);
        more += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!oldest.exists(), "the dead segment's file is gone");
    assert!(spool.stats().segments_deleted >= 1);
    // Renamed away first, then shrunk and removed in the background.
    let dead = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".dead"))
    };
    while dead(dir.path()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!dead(dir.path()), "no dead file left behind");
    spool.shutdown();

    // One left by a crash mid-deletion is removed at open, never read,
    // even when what it holds would look like a valid segment.
    let leftover = dir.path().join("seg-000000000001.log.dead");
    std::fs::copy(segment_files(dir.path())[0].clone(), &leftover).unwrap();
    let (spool, report) = Spool::open(dir.path(), small_segments(16 << 10)).unwrap();
    assert!(!leftover.exists());
    let live = report.live_messages;
    spool.shutdown();
    let (_, report) = Spool::open(dir.path(), small_segments(16 << 10)).unwrap();
    assert_eq!(report.live_messages, live);
}

#[test]
fn finished_messages_leave_at_reopen_too() {
    // Same as above, but the deletion happens during the next open.
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(16 << 10);
    let (spool, _) = Spool::open(dir.path(), cfg.clone()).unwrap();
    let h = spool.handle();
    let first: Vec<QueueId> = (0..3).map(|s| submit(&h, s, 2, 4000)).collect();
    let _later: Vec<QueueId> = (10..20).map(|s| submit(&h, s, 1, 4000)).collect();
    let oldest = segment_files(dir.path())[0].clone();
    // The writer deletes the segment as soon as it is idle; a crash could
    // come first. Simulate that by putting the sealed file back afterwards.
    let saved = std::fs::read(&oldest).unwrap();
    h.journal_wait(
        first
            .iter()
            .map(|id| entry(*id, 0, RecipientState::Delivered))
            .collect(),
    )
    .unwrap();
    h.journal_wait(
        first
            .iter()
            .map(|id| entry(*id, 1, RecipientState::Delivered))
            .collect(),
    )
    .unwrap();
    spool.shutdown();
    std::fs::write(&oldest, saved).unwrap();
    let (spool, report) = Spool::open(dir.path(), cfg).unwrap();
    assert!(!oldest.exists());
    assert!(report.deleted_segments >= 1);
    for id in first {
        assert!(spool.get(id).unwrap().is_none());
    }
}

#[test]
fn compaction_moves_a_long_lived_message_and_frees_the_old_segment() {
    let dir = tempfile::tempdir().unwrap();
    // The layout below is counted message by message: no early move to a
    // prepared segment.
    let cfg = SpoolConfig {
        segment_size: 64 << 10,
        prepare_segments: sluice_spool::Preparation::Never,
        ..SpoolConfig::default()
    };
    let (spool, _) = Spool::open(dir.path(), cfg.clone()).unwrap();
    let h = spool.handle();
    let long_lived = submit(&h, 1000, 2, 3000);
    // 14 of 4100 octets fill the first 64 KiB segment so far that no newer
    // message fits beside them, whatever a few bytes of envelope encoding.
    let short: Vec<QueueId> = (0..14).map(|s| submit(&h, s, 1, 4100)).collect();
    let old_seg = segment_files(dir.path())[0].clone();
    // Something newer keeps the old segment from being the head.
    let newer: Vec<QueueId> = (100..120).map(|s| submit(&h, s, 1, 4000)).collect();
    assert!(segment_files(dir.path()).len() >= 2);

    h.journal_wait(vec![
        entry(long_lived, 0, RecipientState::Delivered),
        entry(long_lived, 1, deferred(3)),
    ])
    .unwrap();
    // A reader holding the body across the compaction keeps a valid view.
    let before = spool.get(long_lived).unwrap().unwrap();
    // A copy of the old segment, to simulate a crash between the durable
    // copy and the delete.
    let saved = std::fs::read(&old_seg).unwrap();
    // In one batch, so that idle maintenance sees the segment only with its
    // one long-lived message left.
    h.journal_wait(
        short
            .iter()
            .map(|id| entry(*id, 0, RecipientState::Delivered))
            .collect(),
    )
    .unwrap();
    spool.maintain().unwrap();
    assert!(
        !old_seg.exists(),
        "mostly dead old segment is compacted away"
    );
    assert_eq!(spool.stats().messages_compacted, 1);
    assert_eq!(before.body(), body(1000, 3000).as_slice());
    let after = spool.get(long_lived).unwrap().unwrap();
    assert_eq!(after.body(), body(1000, 3000).as_slice());
    assert_eq!(after.states, vec![RecipientState::Delivered, deferred(3)]);
    // Journal entries after the copy still apply.
    h.journal_wait(vec![entry(long_lived, 1, deferred(4))])
        .unwrap();
    spool.shutdown();

    let (spool, report) = Spool::open(dir.path(), cfg.clone()).unwrap();
    assert!(!old_seg.exists());
    assert_eq!(report.live_messages, 1 + newer.len());
    let m = spool.get(long_lived).unwrap().unwrap();
    assert_eq!(m.entry.envelope.recipients.len(), 2);
    assert_eq!(m.body(), body(1000, 3000).as_slice());
    assert_eq!(m.states, vec![RecipientState::Delivered, deferred(4)]);
    spool.shutdown();

    // Crash between copy and delete: the old segment is back, the message
    // exists twice on disk, and the later copy wins.
    std::fs::write(&old_seg, &saved).unwrap();
    let (spool, report) = Spool::open(dir.path(), cfg).unwrap();
    assert_eq!(
        report.live_messages,
        1 + newer.len(),
        "no duplicates, no resurrections"
    );
    assert!(
        !old_seg.exists(),
        "the restored old segment is deleted again at open"
    );
    let m = spool.get(long_lived).unwrap().unwrap();
    assert_eq!(m.states, vec![RecipientState::Delivered, deferred(4)]);
    for id in &short {
        assert!(spool.get(*id).unwrap().is_none());
    }
}

/// Delivery outcomes do not wait for an fdatasync of their own: they are
/// written at once and made durable by the next batch that syncs (a
/// submission's), or by the writer within its lazy bound when nothing else
/// comes. Either way they survive a reopen.
#[test]
fn outcomes_ride_on_the_next_fdatasync_and_are_synced_soon_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let h = spool.handle();
    let a = submit(&h, 1, 2, 100);
    let b = submit(&h, 2, 1, 100);
    let before = h.stats().fdatasyncs;
    h.journal_wait(vec![entry(a, 0, RecipientState::Delivered)])
        .unwrap();
    h.mark_wait(b, MessageMark::Done).unwrap();
    assert_eq!(
        h.stats().fdatasyncs,
        before,
        "an outcome and a finished message are written, not synced"
    );
    // A submission's fdatasync makes them durable with it.
    let c = submit(&h, 3, 1, 100);
    assert_eq!(h.stats().fdatasyncs, before + 1);
    // Alone, an outcome is synced within the writer's bound.
    h.journal_wait(vec![entry(c, 0, deferred(1))]).unwrap();
    let synced = before + 2;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while h.stats().fdatasyncs < synced {
        assert!(
            std::time::Instant::now() < deadline,
            "the lazy outcome was never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // An operator's command is synced before it is answered.
    h.mark_wait(c, MessageMark::Held).unwrap();
    assert_eq!(h.stats().fdatasyncs, synced + 1);
    drop(h);
    drop(spool);
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let kept = spool.get(a).unwrap().expect("a has a pending recipient");
    assert_eq!(kept.entry.envelope.recipients.len(), 2);
    assert!(
        spool.get(b).unwrap().is_none(),
        "b's end survived the reopen"
    );
    let c_states = spool.messages().unwrap();
    assert!(c_states.iter().any(|m| m.id == c && m.held));
}

const SEGMENT: u64 = 4 << 20;
const BIG: usize = 60_000;

/// Segments of [`SEGMENT`] that grow record by record, so that where each
/// message lies does not depend on a prepared file's timing.
fn growing_segments() -> SpoolConfig {
    SpoolConfig {
        prepare_segments: sluice_spool::Preparation::Never,
        ..small_segments(SEGMENT)
    }
}

/// Messages of [`BIG`] bytes until a second segment begins; `ids` holds
/// their ids, each submitted with its index as the seed.
fn fill_first_segment(h: &SpoolHandle, dir: &Path, ids: &mut Vec<QueueId>) {
    while segment_files(dir).len() < 2 {
        ids.push(submit(h, ids.len() as u64, 1, BIG));
    }
}

/// Every message delivered, and maintenance run: the first segment dies.
/// Then time for its file to shrink and go, were nothing holding it.
fn finish_all(spool: &Spool, ids: &[QueueId]) {
    let h = spool.handle();
    for id in ids {
        h.journal_wait(vec![entry(*id, 0, RecipientState::Delivered)])
            .unwrap();
    }
    spool.maintain().unwrap();
    assert!(spool.stats().segments_deleted >= 1);
    std::thread::sleep(Duration::from_millis(200));
}

/// Renamed-away segment files still there.
fn dead_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".dead")
        })
        .count()
}

fn wait_for_no_dead_files(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while dead_files(dir) > 0 {
        assert!(
            Instant::now() < deadline,
            "the dead segment stayed after its reader let go"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_message_held_by_a_reader_stays_readable_after_its_segment_is_deleted() {
    // Segments of 4 MiB: a dead one shrinks a MiB at a time before it is
    // unlinked, and a message near its end lies in the part cut first.
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), growing_segments()).unwrap();
    let mut ids = Vec::new();
    fill_first_segment(&spool.handle(), dir.path(), &mut ids);
    // The last message of the first segment (the one that did not fit
    // began the second), read as a delivery would read it.
    let held = ids.len() - 2;
    let reading = spool.get(ids[held]).unwrap().expect("queued");
    assert!(
        reading.body() == body(held as u64, BIG).as_slice(),
        "the body as written"
    );
    finish_all(&spool, &ids);
    // With the file cut below the body behind its mapping, this read was
    // a SIGBUS: the process killed.
    assert!(
        reading.body() == body(held as u64, BIG).as_slice(),
        "the body still readable, unchanged"
    );
    assert_eq!(dead_files(dir.path()), 1, "renamed away, waiting");
    drop(reading);
    wait_for_no_dead_files(dir.path());
    spool.shutdown();
}

#[test]
fn a_reader_of_a_mapping_replaced_by_a_larger_one_is_waited_for_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    {
        let (spool, _) = Spool::open(dir.path(), growing_segments()).unwrap();
        let h = spool.handle();
        while spool.stats().bytes < SEGMENT * 13 / 16 {
            ids.push(submit(&h, ids.len() as u64, 1, BIG));
        }
        spool.shutdown();
    }
    // Reopened, the head is mapped as far as recovery read it (it grows
    // record by record: not prepared); a reader takes the last message
    // from that mapping.
    let (spool, _) = Spool::open(dir.path(), growing_segments()).unwrap();
    let held = ids.len() - 1;
    let reading = spool.get(ids[held]).unwrap().expect("queued");
    // Messages written after it are read through a larger mapping, which
    // replaces the first one in the index.
    fill_first_segment(&spool.handle(), dir.path(), &mut ids);
    assert!(spool.get(ids[ids.len() - 2]).unwrap().is_some());
    finish_all(&spool, &ids);
    assert!(
        reading.body() == body(held as u64, BIG).as_slice(),
        "the body still readable through the replaced mapping"
    );
    drop(reading);
    wait_for_no_dead_files(dir.path());
    spool.shutdown();
}

#[test]
fn a_dead_segment_another_process_maps_is_not_cut_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), growing_segments()).unwrap();
    let mut ids = Vec::new();
    fill_first_segment(&spool.handle(), dir.path(), &mut ids);
    // `sluice queue list` opens the spool read-only beside the server: a
    // reader with a mapping of its own (and a descriptor of its own, which
    // is what `flock` tells apart, as between two processes).
    let (reader, _) = Spool::open_read_only(dir.path()).unwrap();
    let held = ids.len() - 2;
    let reading = reader.get(ids[held]).unwrap().expect("queued");
    finish_all(&spool, &ids);
    assert!(
        reading.body() == body(held as u64, BIG).as_slice(),
        "the reader's mapping intact"
    );
    assert_eq!(
        dead_files(dir.path()),
        1,
        "renamed away, waiting for the reader"
    );
    drop(reading);
    drop(reader);
    wait_for_no_dead_files(dir.path());
    // A reader that opens now does not see the dead file at all.
    let (reader, report) = Spool::open_read_only(dir.path()).unwrap();
    assert_eq!(report.live_messages, 0);
    assert!(reader.get(ids[held]).unwrap().is_none());
    spool.shutdown();
}
