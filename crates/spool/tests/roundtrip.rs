//! Submitting, reading back, reopening, and group commit.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;

use common::{body, body_len, entry, small_segments};
use sluice_spool::{BodyPart, QueueId, Spool, SpoolConfig, SpoolError, Submission};

#[test]
fn concurrent_submits_survive_reopen_identically() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments so that the run crosses several rotations.
    let (spool, report) = Spool::open(dir.path(), small_segments(64 << 10)).unwrap();
    assert_eq!(report.live_messages, 0);
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 40;
    let (tx, rx) = mpsc::channel::<(u64, Result<QueueId, SpoolError>)>();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = spool.handle();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let seed = t * 1000 + i;
                    let tx = tx.clone();
                    let id = handle.new_id();
                    handle.submit(
                        Submission::new(entry(id, seed), body(seed, body_len(seed))),
                        Box::new(move |r| tx.send((seed, r)).unwrap()),
                    );
                }
            })
        })
        .collect();
    drop(tx);
    for t in threads {
        t.join().unwrap();
    }
    let results: Vec<(u64, QueueId)> = rx.iter().map(|(seed, r)| (seed, r.unwrap())).collect();
    assert_eq!(
        results.len() as u64,
        THREADS * PER_THREAD,
        "every completion runs once"
    );
    let ids: HashSet<QueueId> = results.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), results.len(), "ids are distinct");

    // Readable at once (the index is updated before the completion runs).
    for (seed, id) in &results {
        let m = spool
            .get(*id)
            .unwrap()
            .expect("acknowledged message is readable");
        assert_eq!(m.body(), body(*seed, body_len(*seed)).as_slice());
    }
    let stats = spool.stats();
    assert_eq!(stats.messages, THREADS * PER_THREAD);
    assert!(stats.segments_created > 1, "the run should rotate segments");
    spool.shutdown();

    let (spool, report) = Spool::open(dir.path(), small_segments(64 << 10)).unwrap();
    assert_eq!(report.live_messages, results.len());
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.corrupt_regions, 0);
    for (seed, id) in &results {
        let m = spool.get(*id).unwrap().expect("message survives reopen");
        assert_eq!(m.entry, entry(*id, *seed));
        assert_eq!(m.body(), body(*seed, body_len(*seed)).as_slice());
        assert!(
            m.states
                .iter()
                .all(|s| *s == sluice_spool::RecipientState::Pending)
        );
    }
    let listed = spool.messages().unwrap();
    assert_eq!(listed.len(), results.len());
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].arrival_unix_ms <= w[1].arrival_unix_ms)
    );
    // A new id after reopen is above every recovered one.
    let fresh = spool.new_id();
    assert!(ids.iter().all(|id| *id < fresh));
}

/// The first completion blocks the writer thread while 200 more submits
/// queue up; they must then be written as one batch with one fdatasync.
#[test]
fn queued_submits_share_one_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let handle = spool.handle();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Result<QueueId, SpoolError>>();
    handle.submit(
        Submission::new(entry(handle.new_id(), 1), body(1, 100)),
        Box::new(move |r| {
            r.unwrap();
            entered_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
        }),
    );
    entered_rx.recv().unwrap();
    let base = spool.stats();
    let submitters: Vec<_> = (0..8u64)
        .map(|t| {
            let handle = handle.clone();
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let done_tx = done_tx.clone();
                    let seed = 100 + t * 25 + i;
                    handle.submit(
                        Submission::new(entry(handle.new_id(), seed), body(seed, 500)),
                        Box::new(move |r| done_tx.send(r).unwrap()),
                    );
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    drop(done_tx);
    gate_tx.send(()).unwrap();
    let results: Vec<_> = done_rx.iter().collect();
    assert_eq!(results.len(), 200);
    assert!(results.iter().all(Result::is_ok));
    let stats = spool.stats();
    assert_eq!(stats.max_batch, 200, "all queued submits form one batch");
    assert_eq!(stats.batches - base.batches, 1);
    assert_eq!(
        stats.fdatasyncs - base.fdatasyncs,
        1,
        "one fdatasync for 200 messages"
    );
    // One writev; a second only if the kernel wrote short.
    assert!(
        stats.writes - base.writes <= 2,
        "writev per message instead of per batch"
    );
}

#[test]
fn duplicate_ids_and_shutdown_are_reported_through_the_completion() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let handle = spool.handle();
    let id = handle.new_id();
    assert_eq!(
        handle
            .submit_wait(Submission::new(entry(id, 3), body(3, 10)))
            .unwrap(),
        id
    );
    assert!(matches!(
        handle.submit_wait(Submission::new(entry(id, 4), body(4, 10))),
        Err(SpoolError::DuplicateId(d)) if d == id
    ));
    assert_eq!(
        spool.get(id).unwrap().unwrap().body(),
        body(3, 10).as_slice()
    );

    // Locked against a second writer while open.
    assert!(matches!(
        Spool::open(dir.path(), SpoolConfig::default()),
        Err(SpoolError::Locked)
    ));
    spool.shutdown();
    let err = handle
        .submit_wait(Submission::new(entry(handle.new_id(), 5), body(5, 10)))
        .unwrap_err();
    assert!(matches!(err, SpoolError::ShutDown));
    assert!(!err.is_storage_full());
}

/// Submits queued right before shutdown are flushed, not dropped.
#[test]
fn shutdown_flushes_queued_submits() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let handle = spool.handle();
    let (tx, rx) = mpsc::channel();
    let mut ids = Vec::new();
    for seed in 0..50 {
        let id = handle.new_id();
        ids.push((seed, id));
        let tx = tx.clone();
        handle.submit(
            Submission::new(entry(id, seed), body(seed, 64)),
            Box::new(move |r| tx.send(r).unwrap()),
        );
    }
    spool.shutdown();
    drop(tx);
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len(), 50);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    drop(handle);
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    for (seed, id) in ids {
        assert_eq!(
            spool.get(id).unwrap().unwrap().body(),
            body(seed, 64).as_slice()
        );
    }
}

#[test]
fn parts_are_stored_as_one_body() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let handle = spool.handle();
    let id = handle.new_id();
    let (tx, rx) = mpsc::channel();
    // As the front end submits: ranges of the received message it shares
    // with its filters, around the header fields the filters added.
    let received = std::sync::Arc::new(sluice_sys::Content::from(
        b"Received: from x\r\nSubject: y\r\n\r\nz\r\n".to_vec(),
    ));
    let trace_end = b"Received: from x\r\n".len();
    handle.submit(
        Submission {
            entry: entry(id, 9),
            body: vec![
                BodyPart::Shared(received.clone(), 0..trace_end),
                BodyPart::Owned(b"X-Spam: no\r\n".to_vec()),
                BodyPart::Owned(Vec::new()),
                BodyPart::Shared(received.clone(), trace_end..received.len()),
            ],
            held: true,
        },
        Box::new(move |r| tx.send(r).unwrap()),
    );
    assert_eq!(rx.recv().unwrap().unwrap(), id);
    let stored = spool.get(id).unwrap().unwrap();
    assert_eq!(
        stored.body(),
        b"Received: from x\r\nX-Spam: no\r\nSubject: y\r\n\r\nz\r\n"
    );
    assert!(stored.held, "held from the first write");
    spool.shutdown();
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert!(
        spool.get(id).unwrap().unwrap().held,
        "held after a restart too"
    );
}

/// A large message arrives in a spill file in the spool's directory and is
/// submitted as its mapping: stored byte for byte, and once the spill is
/// gone nothing but the spool's own files is left in the directory.
#[test]
fn a_spilled_message_is_stored_from_its_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let before: HashSet<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let handle = spool.handle();
    let mut spill = handle.spill().unwrap();
    let big = body(7, 3 << 20);
    for piece in big.chunks(65_536) {
        spill.append(piece).unwrap();
    }
    let content = std::sync::Arc::new(spill.finish(b"tail\r\n").unwrap());
    assert!(content.is_mapped());
    let id = handle.new_id();
    let id = handle
        .submit_wait(Submission {
            entry: entry(id, 9),
            body: vec![BodyPart::Shared(content.clone(), 0..content.len())],
            held: false,
        })
        .unwrap();
    drop(content);
    let stored = spool.get(id).unwrap().unwrap();
    assert_eq!(stored.body().len(), big.len() + 6);
    assert!(stored.body().starts_with(&big) && stored.body().ends_with(b"tail\r\n"));
    let after: HashSet<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let new: Vec<_> = after.difference(&before).collect();
    assert!(
        new.iter().all(|n| n.to_string_lossy().starts_with("seg-")),
        "only segments appear: {new:?}"
    );
}

#[test]
fn every_durable_new_message_is_announced_once() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), small_segments(64 << 10)).unwrap();
    let handle = spool.handle();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    handle.on_arrival(std::sync::Arc::new(move |group| {
        for arrival in group {
            tx.lock().unwrap().send(arrival).unwrap();
        }
    }));
    let mut submitted = Vec::new();
    for seed in 0..40 {
        submitted.push(
            handle
                .submit_wait(Submission::new(
                    entry(handle.new_id(), seed),
                    body(seed, 4000),
                ))
                .unwrap(),
        );
    }
    // Compaction copies are not arrivals.
    spool.maintain().unwrap();
    let arrivals: Vec<sluice_spool::Arrival> = rx.try_iter().collect();
    let mut announced: Vec<QueueId> = arrivals.iter().map(|a| a.id).collect();
    assert_eq!(
        announced, submitted,
        "each once, in the order they were made durable"
    );
    // Each comes with the message as reading it back gives it (after the
    // compaction moved it, too: the handed-over mapping stays valid).
    for (seed, arrival) in arrivals.into_iter().enumerate() {
        let handed = arrival.message.expect("the writer hands the message over");
        let read = handle.get(arrival.id).unwrap().expect("queued");
        assert_eq!(handed.entry, read.entry);
        assert_eq!(handed.states, read.states);
        assert_eq!(handed.held, read.held);
        assert_eq!(handed.body(), read.body());
        assert_eq!(handed.body(), &body(seed as u64, 4000)[..]);
    }
    announced.dedup();
    assert_eq!(announced.len(), 40);
}
