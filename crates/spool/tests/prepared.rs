//! Prepared segments: the next segment's file zero-filled ahead, taken at
//! rotation, and zeros that recovery reads as room, not damage.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{body, entry, record_ends, segment_files};
use sluice_spool::{Preparation, QueueId, Spool, SpoolConfig, SpoolHandle, Submission};

const SEGMENT: u64 = 256 << 10;
const PREPARED: &str = "seg-prepared";

/// Small segments, prepared whatever the file system under the test.
fn prepared_segments() -> SpoolConfig {
    SpoolConfig {
        prepare_segments: Preparation::Always,
        ..common::small_segments(SEGMENT)
    }
}

fn submit(h: &SpoolHandle, seed: u64) -> (u64, QueueId) {
    let id = h
        .submit_wait(Submission::new(entry(h.new_id(), seed), body(seed, 4000)))
        .unwrap();
    (seed, id)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where the head segment's records end.
fn head_used(dir: &Path) -> u64 {
    let head = std::fs::read(segment_files(dir).pop().unwrap()).unwrap();
    record_ends(&head).last().map_or(40, |&e| e as u64)
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn the_next_segment_is_prepared_ahead_taken_at_rotation_and_its_zeros_are_room() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), prepared_segments()).unwrap();
    let h = spool.handle();
    let mut sent = Vec::new();
    let mut seed = 0;
    let mut send = |sent: &mut Vec<_>| {
        sent.push(submit(&h, seed));
        seed += 1;
    };

    // A new spool's first segment grows record by record. A few messages
    // ask for nothing: a quiet server writes no zeros.
    for _ in 0..5 {
        send(&mut sent);
    }
    assert_eq!(spool.stats().segments_prepared, 0);
    assert!(!dir.path().join(PREPARED).exists());

    // With traffic (a quarter segment here, 1 MiB with real sizes), the
    // reaper writes the next file: zeros, a whole segment long.
    while spool.stats().bytes < SEGMENT / 4 {
        send(&mut sent);
    }
    wait_for("the prepared segment", || {
        spool.stats().segments_prepared == 1
    });
    let prepared = std::fs::read(dir.path().join(PREPARED)).unwrap();
    assert_eq!(prepared.len() as u64, SEGMENT);
    assert!(prepared.iter().all(|&b| b == 0));
    assert_eq!(spool.stats().segments_created, 1);

    // The next batch moves to it, however little the first segment holds:
    // the new head has the prepared length from the start, records over
    // its zeros.
    send(&mut sent);
    assert_eq!(spool.stats().segments_created, 2);
    assert_eq!(spool.stats().segments_from_prepared, 1);
    assert!(!dir.path().join(PREPARED).exists(), "taken, not copied");
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 2);
    assert!(len(&segs[0]) < SEGMENT / 2, "the first was cut short");
    assert_eq!(len(&segs[1]), SEGMENT);
    let head = std::fs::read(&segs[1]).unwrap();
    let ends = record_ends(&head);
    assert_eq!(ends.len(), 1);
    assert!(head[ends[0]..].iter().all(|&b| b == 0));

    // A prepared head asks for the next after its first quarter too (its
    // first MiB with real sizes), so that the zeros are ready long before
    // it fills, and is left when full: an older segment with its unused
    // zeros at the end (the record that did not fit).
    while head_used(dir.path()) < SEGMENT / 5 {
        send(&mut sent);
    }
    assert_eq!(
        spool.stats().segments_prepared,
        1,
        "not before its first quarter"
    );
    while head_used(dir.path()) < SEGMENT * 3 / 10 {
        send(&mut sent);
    }
    wait_for("the second prepared segment", || {
        spool.stats().segments_prepared == 2
    });
    assert_eq!(
        spool.stats().segments_created,
        2,
        "the prepared head is kept until it is full"
    );
    while spool.stats().segments_created < 3 {
        send(&mut sent);
    }
    assert_eq!(spool.stats().segments_from_prepared, 2);
    spool.shutdown();

    // Reopen: zeros are neither a torn tail nor damage; everything is there.
    let (spool, report) = Spool::open(dir.path(), prepared_segments()).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.corrupt_regions, 0);
    assert_eq!(report.live_messages, sent.len());
    for (seed, id) in &sent {
        let m = spool.get(*id).unwrap().expect("a message lost");
        assert_eq!(m.body(), body(*seed, 4000).as_slice());
    }
    let segs = segment_files(dir.path());
    assert_eq!(len(&segs[1]), SEGMENT, "an older segment keeps its length");
    assert_eq!(len(&segs[2]), SEGMENT, "the head keeps its room to grow");
    let used = head_used(dir.path());

    // Appending goes on where the records end, and survives a reopen.
    let h = spool.handle();
    let late = submit(&h, 1000);
    spool.shutdown();
    let (spool, report) = Spool::open(dir.path(), prepared_segments()).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.corrupt_regions, 0);
    assert_eq!(report.live_messages, sent.len() + 1);
    assert_eq!(
        spool.get(late.1).unwrap().unwrap().body(),
        body(1000, 4000).as_slice()
    );
    assert_eq!(
        len(&segs[2]),
        SEGMENT,
        "written into the room, not after it"
    );
    assert!(head_used(dir.path()) > used);
    spool.shutdown();
}

#[test]
fn a_torn_record_in_a_prepared_head_is_cut_with_the_zeros_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // A prepared file waiting before the spool's first segment exists: the
    // first rotation takes it.
    std::fs::write(dir.path().join(PREPARED), vec![0u8; SEGMENT as usize]).unwrap();
    let (spool, _) = Spool::open(dir.path(), prepared_segments()).unwrap();
    assert_eq!(spool.stats().segments_from_prepared, 1);
    let h = spool.handle();
    let sent: Vec<_> = (0..5).map(|seed| submit(&h, seed)).collect();
    spool.shutdown();

    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    assert_eq!(bytes.len() as u64, SEGMENT);
    let ends = record_ends(&bytes);
    assert_eq!(ends.len(), 5);
    // The last record's first half made it to disk, the rest did not.
    let (start, end) = (ends[3], ends[4]);
    bytes[(start + end) / 2..end]
        .iter_mut()
        .for_each(|b| *b = 0);
    std::fs::write(&seg, &bytes).unwrap();

    let (spool, report) = Spool::open(dir.path(), prepared_segments()).unwrap();
    assert_eq!(report.live_messages, 4);
    assert_eq!(report.torn_tail_bytes, SEGMENT - start as u64);
    assert_eq!(report.corrupt_regions, 0);
    assert_eq!(len(&seg), start as u64, "cut after the last whole record");
    assert!(spool.get(sent[4].1).unwrap().is_none());
    assert!(spool.get(sent[3].1).unwrap().is_some());
    spool.shutdown();
}

#[test]
fn a_preparation_cut_short_by_a_crash_is_removed_and_a_finished_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seg-prepared.tmp"), vec![0u8; 1000]).unwrap();
    let (spool, _) = Spool::open(dir.path(), prepared_segments()).unwrap();
    assert!(!dir.path().join("seg-prepared.tmp").exists());
    assert_eq!(spool.stats().segments_from_prepared, 0);
    spool.shutdown();

    // A finished one stays through an open that does not need it.
    std::fs::write(dir.path().join(PREPARED), vec![0u8; SEGMENT as usize]).unwrap();
    let (spool, _) = Spool::open(dir.path(), prepared_segments()).unwrap();
    assert_eq!(spool.stats().segments_from_prepared, 0);
    spool.shutdown();
    assert_eq!(len(&dir.path().join(PREPARED)), SEGMENT);
}

#[test]
fn never_means_no_zeros_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        prepare_segments: Preparation::Never,
        ..common::small_segments(SEGMENT)
    };
    let (spool, _) = Spool::open(dir.path(), config).unwrap();
    let h = spool.handle();
    let mut seed = 0;
    while spool.stats().segments_created < 4 {
        submit(&h, seed);
        seed += 1;
    }
    let stats = spool.stats();
    spool.shutdown();
    assert_eq!(stats.segments_prepared, 0);
    assert_eq!(stats.segments_from_prepared, 0);
    assert!(!dir.path().join(PREPARED).exists());
    for seg in segment_files(dir.path()) {
        assert!(
            len(&seg) < SEGMENT,
            "{} was not grown record by record",
            seg.display()
        );
    }
}
