//! Operator commands: hold, release, flush, delete, bounce.

use std::sync::Arc;
use std::time::Duration;

use sluice_spool::RecipientState;

use super::*;

#[test]
fn a_held_message_waits_for_its_release() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::delivering(ms(0)));
    let sched = start(config(50), &h, &fake);
    let handle = sched.handle();
    // Held in the record that made it durable (a quarantine): the spool's
    // announcement finds it held, and nothing is tried.
    let id = submit_held(&h, "alice@a.test", &["bob@x.test"]);
    assert!(wait_until(Duration::from_secs(5), || handle
        .status(id)
        .is_some_and(|s| s.held)));
    std::thread::sleep(ms(200));
    assert!(fake.calls().is_empty(), "held, yet tried");
    let status = handle.status(id).unwrap();
    assert!(status.held);
    assert_eq!(status.next_attempt_unix_ms, None);

    handle.release(id);
    assert!(wait_until(Duration::from_secs(5), || spool_is_empty(&h)));
    assert_eq!(fake.calls().len(), 1);
    sched.shutdown();
}

#[test]
fn flush_makes_a_deferred_message_due_now() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::new(ms(0), |_, attempt| {
        if attempt == 0 {
            deferred()
        } else {
            delivered()
        }
    }));
    // An hour between attempts: only a flush brings the second one.
    let sched = start(config(3_600_000), &h, &fake);
    let handle = sched.handle();
    let one = submit(&h, "alice@a.test", &["bob@x.test"]);
    let other = submit(&h, "alice@a.test", &["carol@y.test"]);
    handle.queued(one);
    handle.queued(other);
    let deferred_in_spool = |id| {
        h.get(id)
            .unwrap()
            .is_some_and(|m| matches!(m.states[0], RecipientState::Deferred { .. }))
    };
    assert!(wait_until(Duration::from_secs(5), || deferred_in_spool(
        one
    )
        && deferred_in_spool(other)));

    handle.flush(Some(one));
    assert!(wait_until(Duration::from_secs(5), || h
        .get(one)
        .unwrap()
        .is_none()));
    std::thread::sleep(ms(100));
    assert_eq!(
        fake.calls_to("carol@y.test").len(),
        1,
        "only the flushed one"
    );

    handle.flush(None);
    assert!(wait_until(Duration::from_secs(5), || spool_is_empty(&h)));
    assert_eq!(fake.calls().len(), 4);
    sched.shutdown();
}

#[test]
fn delete_removes_without_a_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::new(ms(0), |_, _| deferred()));
    let sched = start(config(3_600_000), &h, &fake);
    let handle = sched.handle();
    let id = submit(&h, "alice@a.test", &["bob@x.test"]);
    handle.queued(id);
    assert!(wait_until(Duration::from_secs(5), || fake.calls().len()
        == 1
        && handle.status(id).is_some_and(|s| !s.in_flight)));

    handle.delete(id);
    assert!(wait_until(Duration::from_secs(5), || spool_is_empty(&h)));
    assert_eq!(handle.status(id), None);
    handle.flush(None);
    std::thread::sleep(ms(150));
    assert_eq!(fake.calls().len(), 1, "nothing sent: no bounce, no retry");
    assert!(spool_is_empty(&h));
    sched.shutdown();
}

#[test]
fn an_administrator_bounce_fails_what_is_left_and_tells_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::delivering(ms(0)));
    let sched = start(config(50), &h, &fake);
    let handle = sched.handle();
    let id = submit_held(&h, "alice@a.test", &["bob@x.test", "carol@y.test"]);
    assert!(wait_until(Duration::from_secs(5), || handle
        .status(id)
        .is_some()));
    handle.bounce(id);

    assert!(wait_until(Duration::from_secs(5), || {
        !fake.calls_to("alice@a.test").is_empty() && spool_is_empty(&h)
    }));
    let text = String::from_utf8_lossy(&fake.calls_to("alice@a.test")[0].body).into_owned();
    assert!(
        text.contains("5.0.0 message bounced by the administrator"),
        "{text}"
    );
    assert!(text.contains("bob@x.test") && text.contains("carol@y.test"));
    assert_eq!(fake.calls().len(), 1, "only the bounce was delivered");
    sched.shutdown();
}

#[test]
fn a_configuration_that_could_deliver_nothing_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake: Arc<dyn Transport> = Arc::new(Fake::delivering(ms(0)));
    let start = |config| Scheduler::start(config, h.clone(), fake.clone()).map(|_| ());
    let zero_threads = SchedulerConfig {
        threads: 0,
        ..config(50)
    };
    assert!(matches!(start(zero_threads), Err(StartError::NoThreads)));
    let zero_per_destination = SchedulerConfig {
        max_connections_per_destination: 0,
        ..config(50)
    };
    assert!(matches!(
        start(zero_per_destination),
        Err(StartError::NoConnectionsPerDestination)
    ));
    let no_retries = SchedulerConfig {
        retry_schedule: Vec::new(),
        ..config(50)
    };
    let refused = start(no_retries).unwrap_err();
    assert!(matches!(refused, StartError::EmptyRetrySchedule));
    assert_eq!(
        refused.to_string(),
        "the retry schedule needs at least one interval"
    );
    // And a sound one does.
    assert!(start(config(50)).is_ok());
}
