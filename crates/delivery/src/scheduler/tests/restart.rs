//! Stopping and starting again on the same spool.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sluice_spool::{JournalEntry, MessageMark, RecipientState};

use super::*;

/// 30 messages of two recipients each, in the spool before any scheduler.
fn fill(h: &SpoolHandle) -> Vec<QueueId> {
    (0..30)
        .map(|i| {
            submit(
                h,
                "alice@a.test",
                &[&format!("u{i}@x.test"), &format!("u{i}@y.test")],
            )
        })
        .collect()
}

#[test]
fn a_stopped_scheduler_leaves_the_rest_to_the_next_one_and_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    fill(&h);
    let config = SchedulerConfig {
        threads: 2,
        ..config(50)
    };
    let first = Arc::new(Fake::delivering(ms(20)));
    let sched = start(config.clone(), &h, &first);
    assert!(wait_until(Duration::from_secs(10), || first.calls().len() >= 10));
    // Graceful: the jobs in flight finish and are journaled.
    drop(sched);
    let done_before = first.calls().len();
    assert!(done_before < 60, "stopped mid-queue");

    let second = Arc::new(Fake::delivering(ms(0)));
    let sched = start(config, &h, &second);
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    let mut all = first.attempts();
    for (k, n) in second.attempts() {
        *all.entry(k).or_default() += n;
    }
    assert_eq!(all.len(), 60);
    assert!(
        all.values().all(|&n| n == 1),
        "delivered twice: {:?}",
        all.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert_eq!(second.calls().len(), 60 - done_before);
    sched.shutdown();
}

#[test]
fn after_a_crash_only_what_was_in_flight_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    fill(&h);
    let config = SchedulerConfig {
        threads: 2,
        ..config(50)
    };
    let first = Arc::new(Fake::delivering(ms(25)));
    let sched = start(config.clone(), &h, &first);
    assert!(wait_until(Duration::from_secs(10), || first.calls().len() >= 10));
    // As good as a kill: nothing in flight is waited for or journaled, and
    // the spool is closed under it.
    sched.shutdown_within(Duration::ZERO);
    spool.shutdown();

    let spool = open(dir.path());
    let h = spool.handle();
    let mut open_before: HashSet<(QueueId, String)> = HashSet::new();
    for m in h.messages().unwrap() {
        for r in m.recipients {
            if !r.state.is_final() {
                open_before.insert((m.id, address(&r.forward_path)));
            }
        }
    }
    assert!(!open_before.is_empty() && open_before.len() < 60);
    let second = Arc::new(Fake::delivering(ms(0)));
    let sched = start(config.clone(), &h, &second);
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    sched.shutdown();

    let again = second.attempts();
    for key in again.keys() {
        assert!(
            open_before.contains(key),
            "{key:?} was delivered and journaled, yet sent again"
        );
    }
    assert!(again.values().all(|&n| n == 1));
    let first = first.attempts();
    let twice = again.keys().filter(|k| first.contains_key(*k)).count();
    // At most what was in flight repeats, one recipient each: a job per
    // thread, and results whose journal batch was not yet durable.
    assert!(twice <= 2 * config.threads, "{twice} sent twice");
    let mut union: HashSet<_> = first.into_keys().collect();
    union.extend(again.into_keys());
    assert_eq!(union.len(), 60, "every recipient delivered");
}

#[test]
fn the_queue_is_rebuilt_from_the_journaled_states() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let pending = submit(&h, "alice@a.test", &["p@x.test", "done@x.test"]);
    let later = submit(&h, "alice@a.test", &["later@x.test"]);
    let soon = submit(&h, "alice@a.test", &["soon@x.test"]);
    let held = submit(&h, "alice@a.test", &["held@x.test"]);
    let deferred_until = |ms_from_now: u64| RecipientState::Deferred {
        until_unix_ms: now_ms() + ms_from_now,
        attempts: 2,
        last: Outcome::local(451, (4, 4, 1), "busy").reason().clone(),
    };
    h.journal_wait(vec![
        JournalEntry {
            id: pending,
            recipient: 1,
            state: RecipientState::Delivered,
        },
        JournalEntry {
            id: later,
            recipient: 0,
            state: deferred_until(3_600_000),
        },
        JournalEntry {
            id: soon,
            recipient: 0,
            state: deferred_until(300),
        },
    ])
    .unwrap();
    h.mark_wait(held, MessageMark::Held).unwrap();

    let fake = Arc::new(Fake::delivering(ms(0)));
    let t0 = std::time::Instant::now();
    let sched = start(config(50), &h, &fake);
    assert!(wait_until(Duration::from_secs(5), || {
        h.get(pending).unwrap().is_none() && h.get(soon).unwrap().is_none()
    }));
    std::thread::sleep(ms(100));
    let soon_call = &fake.calls_to("soon@x.test")[0];
    assert!(soon_call.at - t0 >= ms(250), "deferred one tried early");
    assert_eq!(fake.calls_to("p@x.test").len(), 1);
    assert!(fake.calls_to("done@x.test").is_empty(), "delivered before");
    assert!(fake.calls_to("later@x.test").is_empty(), "not due");
    assert!(fake.calls_to("held@x.test").is_empty(), "held");
    let status = sched.handle().status(later).unwrap();
    assert_eq!(
        status.recipients[0]
            .last
            .as_ref()
            .map(|r| r.reply.to_string())
            .as_deref(),
        Some("451 4.4.1 busy")
    );
    assert!(sched.handle().status(held).unwrap().held);
    sched.shutdown();
}
