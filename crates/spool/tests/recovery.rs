//! Reopening after torn writes and corruption.

mod common;

use std::path::Path;

use common::{body, entry, record_ends, segment_files};
use sluice_spool::{QueueId, Spool, SpoolConfig, Submission};

/// Writes `n` messages (seed i, body length 200 + 37 i) in order, one batch
/// each, and returns their ids in record order.
fn fill(dir: &Path, n: u64) -> Vec<(u64, QueueId)> {
    let (spool, _) = Spool::open(dir, SpoolConfig::default()).unwrap();
    let h = spool.handle();
    let ids = (0..n)
        .map(|seed| {
            let id = h
                .submit_wait(Submission::new(
                    entry(h.new_id(), seed),
                    body(seed, 200 + 37 * seed as usize),
                ))
                .unwrap();
            (seed, id)
        })
        .collect();
    spool.shutdown();
    ids
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn torn_tail_is_cut_at_every_cut_point_and_appending_continues() {
    let original = tempfile::tempdir().unwrap();
    let ids = fill(original.path(), 12);
    let seg = segment_files(original.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let ends = record_ends(&bytes);
    assert_eq!(ends.len(), 12);
    assert_eq!(*ends.last().unwrap(), bytes.len());

    // Cut points: inside the segment header's aftermath, in record headers,
    // in payloads, exactly at boundaries, one byte short of the end.
    let mut cuts: Vec<usize> = vec![40, 41, 59, 60, bytes.len() - 1];
    for w in ends.windows(2).step_by(3) {
        cuts.extend([w[0], w[0] + 3, w[0] + 19, w[0] + 20, (w[0] + w[1]) / 2]);
    }
    for cut in cuts {
        for garble in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(original.path(), dir.path());
            let target = dir.path().join(seg.file_name().unwrap());
            let mut torn = bytes.clone();
            if garble {
                // Same length, junk after the cut (pages that never made it).
                torn[cut..].iter_mut().for_each(|b| *b = 0xA5);
            } else {
                torn.truncate(cut);
            }
            std::fs::write(&target, &torn).unwrap();

            let complete = ends.iter().filter(|&&e| e <= cut).count();
            let valid_end = ends
                .iter()
                .copied()
                .filter(|&e| e <= cut)
                .max()
                .unwrap_or(40);
            let (spool, report) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
            assert_eq!(report.live_messages, complete, "cut {cut} garble {garble}");
            assert_eq!(
                report.torn_tail_bytes,
                (torn.len() - valid_end) as u64,
                "cut {cut}"
            );
            assert_eq!(report.corrupt_regions, 0);
            assert_eq!(
                std::fs::metadata(&target).unwrap().len(),
                valid_end as u64,
                "tail truncated"
            );
            for (i, (seed, id)) in ids.iter().enumerate() {
                let got = spool.get(*id).unwrap();
                if i < complete {
                    let m = got.unwrap_or_else(|| panic!("record {i} lost at cut {cut}"));
                    assert_eq!(m.body(), body(*seed, 200 + 37 * *seed as usize).as_slice());
                } else {
                    assert!(got.is_none(), "record {i} past cut {cut} resurrected");
                }
            }
            // Appending after the repair works and survives another reopen.
            let h = spool.handle();
            let new = h
                .submit_wait(Submission::new(entry(h.new_id(), 99), body(99, 777)))
                .unwrap();
            spool.shutdown();
            let (spool, report) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
            assert_eq!(report.torn_tail_bytes, 0);
            assert_eq!(report.live_messages, complete + 1);
            assert_eq!(
                spool.get(new).unwrap().unwrap().body(),
                body(99, 777).as_slice()
            );
        }
    }
}

#[test]
fn corrupt_middle_record_is_detected_and_skipped() {
    let original = tempfile::tempdir().unwrap();
    let ids = fill(original.path(), 9);
    let seg = segment_files(original.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let ends = record_ends(&bytes);
    let victim = 4;
    let start = ends[victim - 1];

    // (byte to flip, what it hits): the payload (caught by the payload CRC,
    // skipped by length) and the length field (caught by the header CRC,
    // skipped by searching for the next valid record).
    for (flip, what) in [(ends[victim] - 10, "payload"), (start + 9, "length field")] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        let mut bad = bytes.clone();
        bad[flip] ^= 0x20;
        std::fs::write(dir.path().join(seg.file_name().unwrap()), &bad).unwrap();

        for read_only in [true, false] {
            let (spool, report) = if read_only {
                Spool::open_read_only(dir.path()).unwrap()
            } else {
                Spool::open(dir.path(), SpoolConfig::default()).unwrap()
            };
            assert_eq!(report.corrupt_regions, 1, "{what}");
            assert_eq!(
                report.torn_tail_bytes, 0,
                "{what}: not mistaken for a torn tail"
            );
            assert_eq!(report.live_messages, 8, "{what}");
            for (i, (seed, id)) in ids.iter().enumerate() {
                let got = spool.get(*id).unwrap();
                if i == victim {
                    assert!(got.is_none(), "{what}: corrupt record must not be served");
                } else {
                    assert_eq!(
                        got.unwrap().body(),
                        body(*seed, 200 + 37 * *seed as usize).as_slice()
                    );
                }
            }
        }
        // The corrupt region is left in place (never truncated away).
        assert_eq!(
            std::fs::read(dir.path().join(seg.file_name().unwrap())).unwrap(),
            bad
        );
    }
}

#[test]
fn read_only_open_never_modifies_and_rejects_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 5);
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"SLRC\x01partial record");
    std::fs::write(&seg, &bytes).unwrap();

    let (ro, report) = Spool::open_read_only(dir.path()).unwrap();
    assert_eq!(report.live_messages, 5);
    assert_eq!(report.torn_tail_bytes, 19);
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "read-only open must not truncate"
    );
    let listed = ro.messages().unwrap();
    assert_eq!(
        listed.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids.iter().map(|x| x.1).collect::<Vec<_>>()
    );
    let h = ro.handle();
    assert!(matches!(
        h.submit_wait(Submission::new(entry(h.new_id(), 1), vec![])),
        Err(sluice_spool::SpoolError::ReadOnly)
    ));

    // Works next to a live writer too (no lock taken).
    let (live, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let (ro2, _) = Spool::open_read_only(dir.path()).unwrap();
    assert_eq!(ro2.messages().unwrap().len(), 5);
    drop(live);
}

/// Waits until ids issued from now on are above every id issued so far,
/// by any spool of this process. Ids are milliseconds and a counter, and a
/// spool that knows nothing of another's ids (a new one, or one whose
/// segment was set aside unread) starts from the clock; a real restart
/// comes at least a millisecond after the last id, a test must wait for it.
fn past_this_millisecond() {
    std::thread::sleep(std::time::Duration::from_millis(2));
}

#[test]
fn damaged_segment_header_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 3);
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    // The set-aside segment's ids are unread: only the clock keeps the new
    // ones above them.
    past_this_millisecond();
    let (spool, report) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(report.damaged_segments.len(), 1);
    assert!(report.damaged_segments[0].exists());
    assert!(!seg.exists());
    assert!(spool.get(ids[0].1).unwrap().is_none());
    // A fresh segment with a new name takes over; ids stay unique.
    let h = spool.handle();
    let id = h
        .submit_wait(Submission::new(entry(h.new_id(), 7), body(7, 10)))
        .unwrap();
    assert!(ids.iter().all(|(_, old)| *old < id));
    assert_ne!(segment_files(dir.path()).pop().unwrap(), seg);
}

/// A client can put any bytes in a body, including a well-formed record,
/// and nothing outside knows a segment's seed. When a crash tears the write
/// of that message, the scanner searches the torn bytes for the next valid
/// record: a record made elsewhere (another segment's, or one checksummed
/// the version 1 way, as anyone could) must not be found there and come
/// back as a queued message.
#[test]
fn a_record_hidden_in_a_torn_body_does_not_come_back() {
    // The record to hide: a real message record, from another spool.
    let elsewhere = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(elsewhere.path(), SpoolConfig::default()).unwrap();
    let h = spool.handle();
    let hidden_id = h
        .submit_wait(Submission::new(entry(h.new_id(), 7), body(7, 300)))
        .unwrap();
    spool.shutdown();
    let other = std::fs::read(segment_files(elsewhere.path()).pop().unwrap()).unwrap();
    let ends = record_ends(&other);
    let as_written = other[40..ends[0]].to_vec();
    // Ids are per spool: the spools below must not issue the hidden one's.
    past_this_millisecond();
    // The same record checksummed the version 1 way: plain CRC32C.
    let mut unseeded = as_written.clone();
    let crc = crc32c::crc32c(&unseeded[0..16]);
    unseeded[16..20].copy_from_slice(&crc.to_le_bytes());

    for (hidden, what) in [(as_written, "another segment's"), (unseeded, "unseeded")] {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        let h = spool.handle();
        let before = h
            .submit_wait(Submission::new(entry(h.new_id(), 1), body(1, 500)))
            .unwrap();
        let mut content = b"Subject: innocent\r\n\r\n".to_vec();
        content.extend_from_slice(&hidden);
        content.extend_from_slice(b"\r\nthe end of the body\r\n");
        h.submit_wait(Submission::new(entry(h.new_id(), 2), content))
            .unwrap();
        spool.shutdown();

        // The crash: the second record written up to just before its end,
        // the hidden record whole inside it.
        let seg = segment_files(dir.path()).pop().unwrap();
        let bytes = std::fs::read(&seg).unwrap();
        let ends = record_ends(&bytes);
        assert_eq!(ends.len(), 2);
        let cut = ends[1] - 5;
        std::fs::write(&seg, &bytes[..cut]).unwrap();

        let (spool, report) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        assert!(
            spool.get(hidden_id).unwrap().is_none(),
            "{what} record came back out of a message body"
        );
        assert_eq!(report.live_messages, 1, "{what}");
        assert!(spool.get(before).unwrap().is_some());
        assert_eq!(report.torn_tail_bytes, (cut - ends[0]) as u64, "{what}");
        spool.shutdown();
    }
}
