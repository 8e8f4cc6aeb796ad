//! Retries and the queue lifetime on a clock moved by hand: exact due
//! times, no sleeping, and the same result on a loaded machine.

use std::sync::Arc;
use std::time::Duration;

use sluice_spool::{QueueId, RecipientState};

use super::*;
use crate::scheduler::clock::ManualClock;
use crate::scheduler::{MessageStatus, SchedulerHandle};

/// 2027-01-15T08:00:00Z: any fixed instant will do.
const T0: u64 = 1_800_000_000_000;
const MINUTE: u64 = 60_000;

fn start_at(
    config: SchedulerConfig,
    h: &SpoolHandle,
    fake: &Arc<Fake>,
    clock: &ManualClock,
) -> Scheduler {
    Scheduler::start_with_clock(config, h.clone(), fake.clone(), Arc::new(clock.clone())).unwrap()
}

/// Queues a message that arrived at `arrival_unix_ms`.
fn submit_at(h: &SpoolHandle, to: &[&str], arrival_unix_ms: u64) -> QueueId {
    let mut entry = entry(h, "alice@a.test", to);
    entry.arrival_unix_ms = arrival_unix_ms;
    h.submit_wait(Submission::new(
        entry,
        b"Subject: virtual time\r\n\r\nx\r\n".to_vec(),
    ))
    .unwrap()
}

fn status(handle: &SchedulerHandle, id: QueueId) -> MessageStatus {
    handle.status(id).expect("the message is queued")
}

/// Waits (in real time, for the delivery thread) until the first
/// recipient's last attempt is journaled as attempt number `attempts`, and
/// returns the state.
fn after_attempt(handle: &SchedulerHandle, id: QueueId, attempts: u32) -> RecipientState {
    let mut last = None;
    let done = wait_until(Duration::from_secs(10), || {
        let s = status(handle, id);
        let rcpt = &s.recipients[0];
        last = Some(rcpt.state.clone());
        !rcpt.in_flight
            && matches!(rcpt.state, RecipientState::Deferred { attempts: a, .. } if a == attempts)
    });
    assert!(done, "attempt {attempts} never finished: {last:?}");
    last.unwrap()
}

fn due(state: &RecipientState) -> u64 {
    match state {
        RecipientState::Deferred { until_unix_ms, .. } => *until_unix_ms,
        other => panic!("not deferred: {other:?}"),
    }
}

/// Moves the clock to `at` and lets the scheduler look; says how many
/// attempts the transport has seen by then.
fn move_to(clock: &ManualClock, handle: &SchedulerHandle, at: u64, fake: &Fake) -> usize {
    clock.set(at);
    handle.tick();
    fake.calls().len()
}

#[test]
fn retries_come_exactly_when_the_schedule_says() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let clock = ManualClock::new(T0);
    let fake = Arc::new(Fake::new(ms(0), |_, _| deferred()));
    let config = SchedulerConfig {
        retry_schedule: vec![ms(MINUTE), ms(5 * MINUTE)],
        ..config(0)
    };
    let sched = start_at(config, &h, &fake, &clock);
    let handle = sched.handle();
    let id = submit_at(&h, &["bob@x.test"], T0);

    // Tried at once; the first interval follows.
    let first = after_attempt(&handle, id, 1);
    assert_eq!(due(&first), T0 + MINUTE);
    // A millisecond early: nothing, and nothing in flight.
    assert_eq!(move_to(&clock, &handle, T0 + MINUTE - 1, &fake), 1);
    let waiting = status(&handle, id);
    assert!(!waiting.recipients[0].in_flight);
    assert_eq!(waiting.next_attempt_unix_ms, Some(T0 + MINUTE));
    // On the millisecond: the second attempt, then the second interval.
    move_to(&clock, &handle, T0 + MINUTE, &fake);
    let second = after_attempt(&handle, id, 2);
    assert_eq!(due(&second), T0 + MINUTE + 5 * MINUTE);
    // Past the end of the schedule its last interval repeats, counted from
    // when the attempt ended (late here by 7 ms).
    let late = T0 + 6 * MINUTE + 7;
    move_to(&clock, &handle, late, &fake);
    let third = after_attempt(&handle, id, 3);
    assert_eq!(due(&third), late + 5 * MINUTE);
    assert_eq!(fake.calls_to("bob@x.test").len(), 3);
    sched.shutdown();
}

#[test]
fn the_queue_lifetime_ends_retries_at_the_exact_millisecond() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let clock = ManualClock::new(T0);
    let fake = Arc::new(Fake::new(ms(0), |rcpt, _| {
        if rcpt == "bob@x.test" {
            deferred()
        } else {
            delivered()
        }
    }));
    let config = SchedulerConfig {
        retry_schedule: vec![ms(20 * MINUTE)],
        max_queue_lifetime: ms(60 * MINUTE),
        ..config(0)
    };
    let sched = start_at(config, &h, &fake, &clock);
    let handle = sched.handle();
    // Arrived ten minutes before the scheduler's now: the lifetime counts
    // from the arrival, not from the first attempt.
    let arrival = T0 - 10 * MINUTE;
    let id = submit_at(&h, &["bob@x.test"], arrival);

    let mut state = after_attempt(&handle, id, 1);
    for attempt in 2..=3 {
        assert_eq!(due(&state), T0 + (attempt as u64 - 1) * 20 * MINUTE);
        move_to(&clock, &handle, due(&state), &fake);
        state = after_attempt(&handle, id, attempt);
    }
    // Due at T0 + 60 min, which is past the lifetime (arrival + 60 min =
    // T0 + 50 min): that attempt is the last, and fails for good.
    assert_eq!(due(&state), T0 + 60 * MINUTE);
    move_to(&clock, &handle, T0 + 60 * MINUTE, &fake);
    assert!(wait_until(Duration::from_secs(10), || {
        !fake.calls_to("alice@a.test").is_empty() && spool_is_empty(&h)
    }));
    assert_eq!(fake.calls_to("bob@x.test").len(), 4);
    let bounce = String::from_utf8_lossy(&fake.calls_to("alice@a.test")[0].body).into_owned();
    assert!(
        bounce
            .contains("4.4.7 message expired after 1 hour; last error: 451 4.4.1 try again later"),
        "{bounce}"
    );
    sched.shutdown();
}

/// An attempt that ends one millisecond before `arrival + lifetime` is
/// deferred again; one that ends at that instant fails.
#[test]
fn an_attempt_just_inside_the_lifetime_is_deferred_again() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let clock = ManualClock::new(T0);
    let fake = Arc::new(Fake::new(ms(0), |_, _| deferred()));
    let config = SchedulerConfig {
        retry_schedule: vec![ms(MINUTE)],
        max_queue_lifetime: ms(10 * MINUTE),
        ..config(0)
    };
    let sched = start_at(config, &h, &fake, &clock);
    let handle = sched.handle();
    let id = submit_at(&h, &["bob@x.test"], T0);
    after_attempt(&handle, id, 1);
    clock.set(T0 + 10 * MINUTE - 1);
    handle.flush(Some(id));
    handle.tick();
    let state = after_attempt(&handle, id, 2);
    assert_eq!(due(&state), T0 + 11 * MINUTE - 1);
    // At the limit itself it fails.
    clock.set(T0 + 10 * MINUTE);
    handle.flush(Some(id));
    handle.tick();
    assert!(wait_until(Duration::from_secs(10), || {
        h.messages().unwrap().iter().all(|m| m.id != id)
    }));
    assert_eq!(fake.calls_to("bob@x.test").len(), 3);
    sched.shutdown();
}
