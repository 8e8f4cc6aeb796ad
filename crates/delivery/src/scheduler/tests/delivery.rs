//! Outcomes: delivery, retries, failures, bounces, expiry, concurrency.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use sluice_spool::RecipientState;

use super::*;

/// A job with every recipient of its message, in order, lends the
/// message's own envelope; any other job gets a copy with its recipients
/// alone, in the job's order.
#[test]
fn a_job_lends_the_whole_envelope_and_copies_a_part_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let id = submit(
        &h,
        "a@src.test",
        &["x@one.test", "y@two.test", "z@one.test"],
    );
    let message = h.get(id).unwrap().expect("queued");
    let job = |recipients: Vec<u32>| Job {
        id,
        destination: Destination::Remote("one.test".into()),
        message: message.clone(),
        recipients,
    };
    let addresses = |envelope: &Envelope| -> Vec<String> {
        envelope
            .recipients
            .iter()
            .map(|r| address(&r.forward_path))
            .collect()
    };

    let whole = job(vec![0, 1, 2]);
    let lent = whole.envelope();
    assert!(
        Arc::ptr_eq(&lent, &whole.message.entry.envelope),
        "shared, not copied"
    );
    assert_eq!(lent, message.entry.envelope);

    for (recipients, expected) in [
        (vec![0, 2], vec!["x@one.test", "z@one.test"]),
        (vec![1], vec!["y@two.test"]),
        (
            vec![2, 1, 0],
            vec!["z@one.test", "y@two.test", "x@one.test"],
        ),
    ] {
        let part = job(recipients);
        let copy = part.envelope();
        assert!(
            !Arc::ptr_eq(&copy, &part.message.entry.envelope),
            "{copy:?}"
        );
        assert_eq!(addresses(&copy), expected);
        assert_eq!(copy.reverse_path, message.entry.envelope.reverse_path);
        assert_eq!(copy.params, message.entry.envelope.params);
    }
}

#[test]
fn queued_messages_are_delivered_at_once_grouped_by_destination() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::new(ms(0), |rcpt, _| {
        if rcpt.starts_with("later") {
            deferred()
        } else {
            delivered()
        }
    }));
    // A long retry interval: the deferred recipient stays deferred.
    let sched = start(config(3_600_000), &h, &fake);
    let handle = sched.handle();

    let t0 = now_ms();
    let all = submit(&h, "alice@a.test", &["b1@x.test", "c@y.test", "b2@X.test"]);
    let mixed = submit(&h, "alice@a.test", &["d@x.test", "later@z.test"]);
    handle.queued(all);
    handle.queued(mixed);

    assert!(
        wait_until(Duration::from_secs(10), || {
            h.get(all).unwrap().is_none()
                && h.get(mixed)
                    .unwrap()
                    .is_some_and(|m| m.states.iter().all(|s| *s != RecipientState::Pending))
        }),
        "not delivered: {:?}",
        h.messages().unwrap()
    );
    let calls = fake.calls();
    let job_of = |r: &str| calls.iter().find(|c| c.recipient == r).unwrap().job;
    assert_eq!(
        job_of("b1@x.test"),
        job_of("b2@X.test"),
        "same destination, one job"
    );
    assert_ne!(job_of("b1@x.test"), job_of("c@y.test"));
    assert!(fake.attempts().values().all(|&n| n == 1), "{calls:?}");
    assert_eq!(calls.len(), 5);

    // The journal holds the outcome of each recipient of the message that stays.
    let m = h.get(mixed).unwrap().unwrap();
    assert_eq!(m.states[0], RecipientState::Delivered);
    let RecipientState::Deferred {
        until_unix_ms,
        attempts,
        last,
    } = &m.states[1]
    else {
        panic!("expected deferred: {:?}", m.states);
    };
    assert_eq!(
        (*attempts, last.reply.to_string().as_str()),
        (1, "451 4.4.1 try again later")
    );
    assert!(
        *until_unix_ms >= t0 + 3_600_000 && *until_unix_ms <= now_ms() + 3_600_000,
        "retry time is one interval after the attempt"
    );
    let status = handle.status(mixed).unwrap();
    assert!(!status.held && !status.in_flight);
    assert_eq!(status.next_attempt_unix_ms, Some(*until_unix_ms));
    assert_eq!(
        status.recipients[1]
            .last
            .as_ref()
            .map(|r| r.reply.to_string())
            .as_deref(),
        Some("451 4.4.1 try again later")
    );
    assert_eq!(status.recipients[0].state, RecipientState::Delivered);
    assert_eq!(
        handle.status(all),
        None,
        "finished messages leave the scheduler"
    );
    sched.shutdown();
}

#[test]
fn a_temporary_failure_is_retried_after_the_interval() {
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
    let sched = start(config(50), &h, &fake);
    let id = submit(&h, "alice@a.test", &["bob@x.test"]);
    sched.handle().queued(id);

    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    let calls = fake.calls_to("bob@x.test");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(matches!(calls[0].outcome, Outcome::Deferred { .. }));
    // 49: the due time is kept in whole milliseconds of the wall clock.
    assert!(
        calls[1].at - calls[0].at >= ms(49),
        "retried after {:?}, before the 50 ms interval",
        calls[1].at - calls[0].at
    );
    std::thread::sleep(ms(150));
    assert_eq!(
        fake.calls().len(),
        2,
        "a delivered recipient is not tried again"
    );
    sched.shutdown();
}

#[test]
fn a_panicking_transport_defers_the_job_and_the_thread_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let armed = std::sync::atomic::AtomicBool::new(true);
    let fake = Arc::new(Fake::new(ms(0), move |rcpt, _| {
        if rcpt == "boom@x.test" && armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("transport bug");
        }
        delivered()
    }));
    // One thread: if the panic took it down, nothing more would be delivered.
    let config = SchedulerConfig {
        threads: 1,
        ..config(50)
    };
    let sched = start(config, &h, &fake);
    let id = submit(&h, "alice@a.test", &["boom@x.test"]);
    sched.handle().queued(id);
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    let calls = fake.calls_to("boom@x.test");
    assert_eq!(calls.len(), 1, "the panicking attempt records nothing");
    assert!(matches!(calls[0].outcome, Outcome::Delivered { .. }));
    sched.shutdown();
}

#[test]
fn a_permanent_failure_bounces_to_the_reverse_path() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::new(ms(0), |rcpt, _| {
        if rcpt == "bob@x.test" {
            failed()
        } else {
            delivered()
        }
    }));
    let sched = start(config(50), &h, &fake);
    let id = submit(&h, "alice@a.test", &["bob@x.test", "carol@y.test"]);
    sched.handle().queued(id);

    assert!(wait_until(Duration::from_secs(10), || {
        !fake.calls_to("alice@a.test").is_empty() && spool_is_empty(&h)
    }));
    let bounce = &fake.calls_to("alice@a.test")[0];
    assert_ne!(bounce.id, id, "the bounce is a message of its own");
    assert_eq!(bounce.reverse_path, "", "bounces come from <>");
    let text = String::from_utf8_lossy(&bounce.body);
    assert!(text.contains("550 5.1.1 no such user"), "{text}");
    assert!(text.contains("bob@x.test"), "{text}");
    assert!(
        !text.contains("Final-Recipient: rfc822; carol@y.test"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Subject: test {id}")),
        "returns the original"
    );
    assert!(h.get(id).unwrap().is_none(), "the original is done");
    assert_eq!(fake.calls_to("bob@x.test").len(), 1);
    assert_eq!(fake.calls_to("carol@y.test").len(), 1);
    assert_eq!(fake.calls().len(), 3);
    sched.shutdown();
}

#[test]
fn a_failure_from_the_null_reverse_path_is_not_bounced() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::new(ms(0), |_, _| failed()));
    let sched = start(config(50), &h, &fake);
    let id = submit(&h, "", &["bob@x.test"]);
    sched.handle().queued(id);

    assert!(wait_until(Duration::from_secs(10), || fake.calls().len()
        == 1
        && spool_is_empty(&h)));
    std::thread::sleep(ms(200));
    assert_eq!(fake.calls().len(), 1, "{:?}", fake.calls());
    assert!(spool_is_empty(&h), "no bounce queued");
    sched.shutdown();
}

#[test]
fn a_recipient_deferred_past_the_queue_lifetime_fails_and_bounces() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::new(ms(0), |rcpt, _| {
        if rcpt == "bob@x.test" {
            deferred()
        } else {
            delivered()
        }
    }));
    let config = SchedulerConfig {
        max_queue_lifetime: ms(300),
        ..config(50)
    };
    let sched = start(config, &h, &fake);
    let id = submit(&h, "alice@a.test", &["bob@x.test"]);
    let arrival = h.get(id).unwrap().unwrap().entry.arrival_unix_ms;
    sched.handle().queued(id);

    assert!(wait_until(Duration::from_secs(10), || {
        !fake.calls_to("alice@a.test").is_empty() && spool_is_empty(&h)
    }));
    let tries = fake.calls_to("bob@x.test");
    assert!(tries.len() >= 2, "retried until it expired: {tries:?}");
    let bounce = String::from_utf8_lossy(&fake.calls_to("alice@a.test")[0].body).into_owned();
    assert!(
        bounce
            .contains("4.4.7 message expired after 300 ms; last error: 451 4.4.1 try again later"),
        "{bounce}"
    );
    assert!(now_ms() >= arrival + 300);
    std::thread::sleep(ms(150));
    assert_eq!(
        fake.calls_to("bob@x.test").len(),
        tries.len(),
        "no attempts after expiry"
    );
    sched.shutdown();
}

#[test]
fn jobs_in_flight_per_destination_stay_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::delivering(ms(30)));
    let config = SchedulerConfig {
        threads: 8,
        max_connections_per_destination: 2,
        ..config(50)
    };
    let sched = start(config, &h, &fake);
    let handle = sched.handle();
    for i in 0..12 {
        handle.queued(submit(&h, "alice@a.test", &[&format!("u{i}@x.test")]));
        handle.queued(submit(&h, "alice@a.test", &[&format!("u{i}@y.test")]));
    }
    assert!(wait_until(Duration::from_secs(20), || spool_is_empty(&h)));
    let r = fake.record();
    assert_eq!(r.calls.len(), 24);
    assert_eq!(
        r.max_active.get(&Destination::Remote("x.test".into())),
        Some(&2),
        "limit reached, never passed"
    );
    assert_eq!(
        r.max_active.get(&Destination::Remote("y.test".into())),
        Some(&2)
    );
    assert!(
        r.max_active_total >= 3,
        "a full destination does not hold up another: at most {} at once",
        r.max_active_total
    );
    drop(r);
    sched.shutdown();
}

#[test]
fn messages_waiting_for_a_destination_go_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::delivering(ms(10)));
    let config = SchedulerConfig {
        max_connections_per_destination: 1,
        ..config(50)
    };
    let sched = start(config, &h, &fake);
    let handle = sched.handle();
    let ids: Vec<QueueId> = (0..8)
        .map(|i| {
            let id = submit(&h, "alice@a.test", &[&format!("u{i}@x.test")]);
            handle.queued(id);
            id
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    let order: Vec<QueueId> = fake.calls().iter().map(|c| c.id).collect();
    assert_eq!(order, ids);
    assert_eq!(
        fake.record()
            .max_active
            .get(&Destination::Remote("x.test".into())),
        Some(&1)
    );
    sched.shutdown();
}

#[test]
fn a_thousand_messages_through_a_slow_transport_are_all_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let fake = Arc::new(Fake::delivering(ms(2)));
    let config = SchedulerConfig {
        threads: 8,
        max_connections_per_destination: 3,
        ..config(50)
    };
    let sched = start(config, &h, &fake);
    // As from the front end: the spool announces each message once it is
    // durable.
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..1000 {
        let entry = entry(&h, "alice@a.test", &[&format!("u{i}@d{}.test", i % 5)]);
        let tx = tx.clone();
        h.submit(
            Submission::new(entry, b"Subject: load\r\n\r\nx\r\n".to_vec()),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    }
    for _ in 0..1000 {
        rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(90), || spool_is_empty(&h)),
        "{} messages left",
        h.messages().unwrap().len()
    );
    let attempts = fake.attempts();
    assert_eq!(attempts.len(), 1000);
    assert!(attempts.values().all(|&n| n == 1));
    assert!(fake.record().max_active.values().all(|&n| n <= 3));
    sched.shutdown();
}

/// Delivers every job after `delay`, but holds those for a gated recipient
/// until the test opens its gate; records (recipient, thread) as each ends.
struct Gated {
    delay: Duration,
    gates: Mutex<HashMap<String, crossbeam_channel::Receiver<()>>>,
    done: Mutex<Vec<(String, String)>>,
}

impl Gated {
    /// Gates for `recipients`, and the senders that open them, in order.
    fn new(
        delay: Duration,
        recipients: &[&str],
    ) -> (Arc<Gated>, Vec<crossbeam_channel::Sender<()>>) {
        let mut gates = HashMap::new();
        let mut openers = Vec::new();
        for r in recipients {
            let (open, gate) = crossbeam_channel::bounded::<()>(0);
            gates.insert(r.to_string(), gate);
            openers.push(open);
        }
        let gated = Gated {
            delay,
            gates: Mutex::new(gates),
            done: Mutex::new(Vec::new()),
        };
        (Arc::new(gated), openers)
    }

    fn delivered(&self, recipient: &str) -> bool {
        self.done
            .lock()
            .unwrap()
            .iter()
            .any(|(r, _)| r == recipient)
    }
}

impl Transport for Gated {
    fn destination(&self, recipient: &ForwardPath) -> Destination {
        domain_destination(recipient)
    }

    fn deliver(&self, job: &Job) -> Vec<Outcome> {
        std::thread::sleep(self.delay);
        let rcpts: Vec<String> = job.recipients().map(|r| address(&r.forward_path)).collect();
        for r in &rcpts {
            let gate = self.gates.lock().unwrap().remove(r);
            if let Some(gate) = gate {
                let _ = gate.recv_timeout(Duration::from_secs(20));
            }
        }
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let mut done = self.done.lock().unwrap();
        done.extend(rcpts.iter().map(|r| (r.clone(), thread.clone())));
        vec![delivered(); rcpts.len()]
    }
}

/// Queues u0..u5 at x.test, u0 first and held at its gate until the rest are
/// queued (so they wait in the line together, however slow the disk).
fn queue_six(
    h: &SpoolHandle,
    handle: &crate::scheduler::SchedulerHandle,
    open_u0: &crossbeam_channel::Sender<()>,
) -> Vec<QueueId> {
    let ids: Vec<QueueId> = (0..6)
        .map(|i| {
            let id = submit(h, "alice@a.test", &[&format!("u{i}@x.test")]);
            handle.queued(id);
            id
        })
        .collect();
    // The scheduler has every arrival once a status asked after them is answered.
    let _ = handle.status(ids[5]);
    open_u0.send(()).unwrap();
    ids
}

/// When a destination's slot frees, the messages waiting in its line go to
/// one thread as a run: delivered in order, one after the other, with their
/// outcomes reported together when the run ends (one wake-up each way for
/// the lot). So while the run's third message is held up, the first two,
/// already delivered, are still in flight, not journaled away.
#[test]
fn a_freed_slot_takes_the_waiting_line_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let (transport, open) = Gated::new(ms(30), &["u0@x.test", "u3@x.test"]);
    let config = SchedulerConfig {
        threads: 4,
        max_connections_per_destination: 1,
        ..config(50)
    };
    let sched = Scheduler::start(config, h.clone(), transport.clone()).unwrap();
    let handle = sched.handle();
    // The first takes the one slot; the rest queue behind it in the line.
    let ids = queue_six(&h, &handle, &open[0]);
    let delivered_u2 = || {
        transport
            .done
            .lock()
            .unwrap()
            .iter()
            .any(|(r, _)| r == "u2@x.test")
    };
    assert!(wait_until(Duration::from_secs(10), delivered_u2));
    for &id in &ids[1..3] {
        let status = handle
            .status(id)
            .expect("still queued: its run is not over");
        assert!(status.in_flight, "{status:?}");
    }
    open[1].send(()).unwrap();
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    let done = transport.done.lock().unwrap().clone();
    let order: Vec<&str> = done.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        order,
        [
            "u0@x.test",
            "u1@x.test",
            "u2@x.test",
            "u3@x.test",
            "u4@x.test",
            "u5@x.test"
        ]
    );
    assert!(
        done[1..].iter().all(|(_, t)| *t == done[1].1),
        "the line went to one thread: {done:?}"
    );
    sched.shutdown();
}

/// Shutdown in the middle of a run: the job being delivered finishes and is
/// journaled, the rest of the run is left unattempted (not delivered with no
/// scheduler to journal it), and the next start delivers those, once each.
#[test]
fn a_run_stops_at_shutdown_and_the_rest_waits_for_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let (transport, open) = Gated::new(ms(30), &["u0@x.test", "u2@x.test"]);
    let config = SchedulerConfig {
        threads: 2,
        max_connections_per_destination: 1,
        ..config(50)
    };
    let sched = Scheduler::start(config.clone(), h.clone(), transport.clone()).unwrap();
    let handle = sched.handle();
    // u0 alone, then the run u1..u5, held at u2.
    let ids = queue_six(&h, &handle, &open[0]);
    assert!(wait_until(Duration::from_secs(10), || transport.delivered("u1@x.test")));
    // Shutdown begins; a status asked after it is answered after it.
    let grace = Instant::now() + Duration::from_secs(20);
    handle
        .events
        .send(crate::scheduler::Event::Shutdown(grace))
        .unwrap();
    let _ = handle.status(ids[0]);
    open[1].send(()).unwrap();
    sched.shutdown_within(Duration::from_secs(20));
    let first: Vec<String> = transport
        .done
        .lock()
        .unwrap()
        .iter()
        .map(|(r, _)| r.clone())
        .collect();
    assert_eq!(first, ["u0@x.test", "u1@x.test", "u2@x.test"]);
    let left: HashSet<QueueId> = h.messages().unwrap().iter().map(|m| m.id).collect();
    assert_eq!(
        left,
        ids[3..].iter().copied().collect(),
        "the unattempted stay queued"
    );

    let again = Arc::new(Fake::delivering(ms(1)));
    let sched = start(config, &h, &again);
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    let mut second: Vec<String> = again.calls().into_iter().map(|c| c.recipient).collect();
    second.sort();
    assert_eq!(second, ["u3@x.test", "u4@x.test", "u5@x.test"]);
    sched.shutdown();
}
