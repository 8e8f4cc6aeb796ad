//! Durable appends to the spool: the `250` after DATA waits for one of
//! these, so their rate bounds the server's accept rate.
//!
//! One submitter waits for its own fdatasync every time; sixteen submitters
//! (the front end's connections in flight) share each fdatasync through
//! group commit. The gap between the two is what batching buys. The
//! absolute numbers depend on the disk: on the project's 2-core gVisor
//! machine a lone fdatasync after a 4 KiB append takes ~0.3 ms.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_benches::corpus;
use sluice_smtp::{BodyType, Envelope, ForwardPath, MailParams, Path, Recipient, ReversePath};
use sluice_spool::{Entry, Spool, SpoolConfig, SpoolHandle, Submission};

fn path(text: &str) -> Path {
    Path::parse(text.as_bytes()).expect("a valid path")
}

fn submission(handle: &SpoolHandle, body: &[u8]) -> Submission {
    let entry = Entry {
        id: handle.new_id(),
        arrival_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        client_ip: "192.0.2.7".parse().expect("a valid address"),
        helo: "client.example.org".into(),
        envelope: Envelope {
            reverse_path: ReversePath::Path(path("<sender@example.org>")),
            params: MailParams {
                body: Some(BodyType::EightBitMime),
                size: Some(4096),
                ..MailParams::default()
            },
            recipients: vec![Recipient {
                forward_path: ForwardPath::Path(path("<rcpt@example.net>")),
                params: Default::default(),
            }],
        }
        .into(),
    };
    Submission::new(entry, body.to_vec())
}

/// `messages` submits spread over `submitters` threads, each waiting for
/// its own durability before the next, as a connection waits for its 250.
fn submit_all(handle: &SpoolHandle, body: &[u8], messages: u64, submitters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..submitters {
            let share = messages / submitters + u64::from(t < messages % submitters);
            let handle = handle.clone();
            s.spawn(move || {
                for _ in 0..share {
                    handle
                        .submit_wait(submission(&handle, body))
                        .expect("the spool accepts the message");
                }
            });
        }
    });
    start.elapsed()
}

fn spool_append(c: &mut Criterion) {
    let body = corpus::message(4 << 10);
    let mut group = c.benchmark_group("spool_append");
    // Every append is an fdatasync: few, long samples.
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for submitters in [1u64, 16] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).expect("a new spool");
        let handle = spool.handle();
        // The bench is only meaningful if what it stores can be read back.
        let id = handle
            .submit_wait(submission(&handle, &body))
            .expect("a first submit");
        let stored = handle.get(id).expect("readable").expect("queued");
        assert_eq!(stored.body(), &body[..]);

        group.bench_with_input(
            BenchmarkId::new("4KiB_fdatasync", format!("{submitters}_submitters")),
            &submitters,
            |b, &submitters| b.iter_custom(|iters| submit_all(&handle, &body, iters, submitters)),
        );
        spool.shutdown();
    }
    group.finish();
}

criterion_group!(benches, spool_append);
criterion_main!(benches);
