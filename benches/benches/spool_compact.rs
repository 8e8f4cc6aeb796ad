//! Compaction's cost follows what changed, not the size of the queue.
//!
//! The oldest segments hold 500 small messages, one in ten of which stays
//! queued; behind them wait 10,000 or 100,000 other queued messages. The
//! measured step: journal the 450 deliveries, after which the oldest segment
//! (64 KiB, about 360 of the 500) is mostly dead, and run maintenance to
//! completion, which copies its live messages forward and deletes it. Both queue sizes should
//! cost the same: compaction visits the messages recorded in the oldest
//! segment, not the whole index (it used to filter all of it, every step,
//! under the index lock the writer needs for every `250`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice_smtp::{Envelope, ForwardPath, MailParams, Path, Recipient, ReversePath};
use sluice_spool::{
    Entry, JournalEntry, QueueId, RecipientState, Spool, SpoolConfig, SpoolHandle, Submission,
};
use tempfile::TempDir;

const KEPT: usize = 50;
const DELIVERED: usize = 450;

fn submission(handle: &SpoolHandle) -> Submission {
    let path = |s: &str| Path::parse(s.as_bytes()).expect("a valid path");
    let entry = Entry {
        id: handle.new_id(),
        arrival_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        client_ip: "192.0.2.7".parse().expect("a valid address"),
        helo: "client.example.org".into(),
        envelope: Envelope {
            reverse_path: ReversePath::Path(path("<sender@example.org>")),
            params: MailParams::default(),
            recipients: vec![Recipient::new(ForwardPath::Path(path(
                "<rcpt@example.net>",
            )))],
        }
        .into(),
    };
    Submission::new(entry, b"Subject: compaction\r\n\r\nbody\r\n".to_vec())
}

/// Submits `n` messages without waiting for each; returns their ids once
/// all are durable.
fn submit_many(handle: &SpoolHandle, n: usize) -> Vec<QueueId> {
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 0..n {
        let tx = tx.clone();
        handle.submit(
            submission(handle),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    }
    (0..n)
        .map(|_| {
            rx.recv()
                .expect("a completion")
                .expect("the spool accepts the message")
        })
        .collect()
}

struct Scene {
    _dir: TempDir,
    spool: Spool,
    delivered: Vec<QueueId>,
}

/// The oldest segment: the kept and soon-delivered messages interleaved;
/// then `queued` more messages in later segments.
fn scene(queued: usize) -> Scene {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = SpoolConfig {
        // Small segments: the first holds only messages of the 500.
        segment_size: 64 << 10,
        ..SpoolConfig::default()
    };
    let (spool, _) = Spool::open(dir.path(), config).expect("a new spool");
    let handle = spool.handle();
    let delivered = submit_many(&handle, KEPT + DELIVERED)
        .into_iter()
        .enumerate()
        .filter(|(n, _)| n % 10 != 0)
        .map(|(_, id)| id)
        .collect();
    submit_many(&handle, queued);
    Scene {
        _dir: dir,
        spool,
        delivered,
    }
}

fn compact(scene: Scene) -> Scene {
    let handle = scene.spool.handle();
    let entries = scene
        .delivered
        .iter()
        .map(|&id| JournalEntry {
            id,
            recipient: 0,
            state: RecipientState::Delivered,
        })
        .collect();
    handle
        .journal_wait(entries)
        .expect("the journal is written");
    scene.spool.maintain().expect("maintenance runs");
    scene
}

fn spool_compact(c: &mut Criterion) {
    // The step is a few fdatasyncs; the setup, a spool of up to 100,000
    // messages: few samples.
    let mut group = c.benchmark_group("spool_compact");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for queued in [10_000usize, 100_000] {
        // The bench only means something if the step compacts: kept
        // messages leave the first segment, which is deleted.
        let done = compact(scene(queued));
        let stats = done.spool.stats();
        assert!(
            stats.messages_compacted >= (KEPT / 2) as u64 && stats.segments_deleted >= 1,
            "nothing was compacted: {stats:?}"
        );
        assert_eq!(done.spool.messages().expect("listed").len(), KEPT + queued);
        group.bench_with_input(
            BenchmarkId::new(
                "oldest_segment_mostly_delivered",
                format!("{queued}_queued"),
            ),
            &queued,
            |b, &queued| b.iter_batched(|| scene(queued), compact, BatchSize::PerIteration),
        );
    }
    group.finish();
}

criterion_group!(benches, spool_compact);
criterion_main!(benches);
