//! A read-only opener (`sluice queue list` beside a running server) copies
//! the live head segment instead of mapping it; of a prepared head, which
//! is 64 MiB long from the start, it copies the records, not the zeros.
//! In a test binary of its own: it reads the process's anonymous memory.
//! Zeros inside a record (a body of them) must not end the copy.

mod common;

use std::time::{Duration, Instant};

use common::{body, entry};
use sluice_spool::{Preparation, Spool, SpoolConfig, Submission};

/// The process's anonymous resident memory (`RssAnon`), in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status");
    kib * 1024
}

#[test]
fn a_read_only_opener_copies_a_prepared_heads_records_not_its_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        prepare_segments: Preparation::Always,
        ..SpoolConfig::default()
    };
    let segment = cfg.segment_size;
    let (spool, _) = Spool::open(dir.path(), cfg).unwrap();
    let h = spool.handle();
    let mut ids = Vec::new();
    let mut seed = 0;
    // Past the first MiB the head asks for the next segment's zeros; the
    // next message after they are ready begins the prepared head.
    while spool.stats().bytes < 1 << 20 {
        ids.push(
            h.submit_wait(Submission::new(entry(h.new_id(), seed), body(seed, 4000)))
                .unwrap(),
        );
        seed += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while spool.stats().segments_prepared == 0 {
        assert!(Instant::now() < deadline, "no prepared segment");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..3 {
        ids.push(
            h.submit_wait(Submission::new(entry(h.new_id(), seed), body(seed, 4000)))
                .unwrap(),
        );
        seed += 1;
    }
    assert_eq!(spool.stats().segments_from_prepared, 1);
    let head = common::segment_files(dir.path()).pop().unwrap();
    assert_eq!(std::fs::metadata(&head).unwrap().len(), segment);

    // Beside the live writer, as `sluice queue list` runs.
    let before = rss_anon();
    let (reader, report) = Spool::open_read_only(dir.path()).unwrap();
    let grew = rss_anon().saturating_sub(before);
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.live_messages, ids.len());
    let listed: Vec<_> = reader.messages().unwrap().iter().map(|m| m.id).collect();
    assert_eq!(listed, ids, "every message, the prepared head's too");
    let newest = reader.get(*ids.last().unwrap()).unwrap().unwrap();
    assert_eq!(newest.body(), body(seed - 1, 4000).as_slice());
    // Three 4 KiB records and a chunk of zeros, against a 64 MiB copy.
    assert!(
        grew < segment / 4,
        "the read-only open took {grew} bytes of memory for a {segment}-byte head"
    );
    drop(reader);

    // A body of zeros longer than the chunks the copy goes by: zeros inside
    // a record do not end the copy.
    let zeros = vec![0u8; 3 << 20];
    let big = h
        .submit_wait(Submission::new(entry(h.new_id(), seed), zeros.clone()))
        .unwrap();
    let after = h
        .submit_wait(Submission::new(
            entry(h.new_id(), seed + 1),
            body(seed + 1, 4000),
        ))
        .unwrap();
    let (reader, report) = Spool::open_read_only(dir.path()).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.live_messages, ids.len() + 2);
    assert_eq!(reader.get(big).unwrap().unwrap().body(), zeros.as_slice());
    assert_eq!(
        reader.get(after).unwrap().unwrap().body(),
        body(seed + 1, 4000).as_slice(),
        "the record after the zeros"
    );
    drop(reader);
    spool.shutdown();
}
