//! Gathering: messages that become due together for a destination that
//! takes runs go to one thread as one run, delivered together.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_smtp::client::PIPELINED_BODY_MAX;

use super::*;

/// The fake transport, gathering for `x.test` only, recording the runs
/// handed to `deliver_run` (their lengths) and delivering each job of a run
/// as the fake would. `together`: false answers `None`, so the jobs go one
/// by one.
struct Gathering {
    fake: Fake,
    together: bool,
    runs: Mutex<Vec<usize>>,
}

impl Transport for Gathering {
    fn destination(&self, recipient: &ForwardPath) -> Destination {
        self.fake.destination(recipient)
    }

    fn deliver(&self, job: &Job) -> Vec<Outcome> {
        self.fake.deliver(job)
    }

    fn gathers(&self, destination: &Destination) -> bool {
        *destination == Destination::Remote("x.test".into())
    }

    fn deliver_run(&self, jobs: &[Job]) -> Option<Vec<Vec<Outcome>>> {
        self.runs.lock().unwrap().push(jobs.len());
        self.together
            .then(|| jobs.iter().map(|job| self.fake.deliver(job)).collect())
    }
}

fn gathering(together: bool) -> Arc<Gathering> {
    Arc::new(Gathering {
        fake: Fake::delivering(ms(0)),
        together,
        runs: Mutex::new(Vec::new()),
    })
}

/// Starts a scheduler on a spool that already holds `n` messages to
/// `u<i>@<domain>`: they all become due in its first round.
fn due_together(h: &SpoolHandle, transport: &Arc<Gathering>, domain: &str, n: usize) -> Scheduler {
    for i in 0..n {
        submit(h, "alice@a.test", &[&format!("u{i}@{domain}")]);
    }
    Scheduler::start(config(50), h.clone(), transport.clone()).unwrap()
}

#[test]
fn messages_due_together_go_as_runs_of_at_most_eight() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let transport = gathering(true);
    let sched = due_together(&h, &transport, "x.test", 11);
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    let mut runs = transport.runs.lock().unwrap().clone();
    runs.sort();
    assert_eq!(
        runs,
        [3, 8],
        "eleven messages in two runs, not eleven threads"
    );
    let calls = transport.fake.calls();
    assert_eq!(calls.len(), 11, "each delivered once");
    let threads: std::collections::HashSet<&str> =
        calls.iter().map(|c| c.thread.as_str()).collect();
    assert_eq!(threads.len(), 2, "one thread per run: {threads:?}");
    sched.shutdown();
}

#[test]
fn a_destination_that_takes_no_runs_gets_a_thread_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let transport = gathering(true);
    let sched = due_together(&h, &transport, "y.test", 6);
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    assert!(transport.runs.lock().unwrap().is_empty());
    assert_eq!(transport.fake.calls().len(), 6);
    sched.shutdown();
}

#[test]
fn a_run_the_transport_will_not_take_together_goes_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let transport = gathering(false);
    let sched = due_together(&h, &transport, "x.test", 5);
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    assert_eq!(*transport.runs.lock().unwrap(), [5]);
    let calls = transport.fake.calls();
    assert_eq!(calls.len(), 5, "each delivered once, by `deliver`");
    assert!(calls.iter().all(|c| c.thread == calls[0].thread));
    sched.shutdown();
}

#[test]
fn a_large_message_is_not_gathered() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let h = spool.handle();
    let transport = gathering(true);
    for i in 0..3 {
        let entry = entry(&h, "alice@a.test", &[&format!("u{i}@x.test")]);
        let body = vec![b'x'; PIPELINED_BODY_MAX as usize + 1];
        h.submit_wait(Submission::new(entry, body)).unwrap();
    }
    let sched = Scheduler::start(config(50), h.clone(), transport.clone()).unwrap();
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    assert!(transport.runs.lock().unwrap().is_empty());
    assert_eq!(transport.fake.calls().len(), 3);
    sched.shutdown();
}
