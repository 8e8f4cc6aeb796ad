//! The delivery threads with little or nothing to do: parked, not spinning,
//! and a job wakes one thread and no other.
//!
//! These tests read per-thread counters in `/proc/self/task`, where another
//! test's scheduler would have threads of the same names; so each runs in a
//! process of its own (a new run of this test binary with only that test),
//! started by a plain test that passes if it passes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// What a thread has done so far, as the kernel counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Activity {
    /// Context switches, voluntary (it blocked) and not (it was preempted).
    switches: u64,
    /// CPU time in clock ticks, user and system: a thread that spins on a
    /// core nobody else wants may never switch, but it burns ticks.
    ticks: u64,
}

/// The threads of this process whose name `pick` takes: name by thread id,
/// and what each has done so far.
fn threads(pick: impl Fn(&str) -> bool) -> BTreeMap<u32, (String, Activity)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let entry = entry.unwrap();
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may end between the listing and the reads.
        let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let name = name.trim_end().to_owned();
        if !pick(&name) {
            continue;
        }
        let (Ok(status), Ok(stat)) = (
            std::fs::read_to_string(entry.path().join("status")),
            std::fs::read_to_string(entry.path().join("stat")),
        ) else {
            continue;
        };
        let counts: Vec<u64> = status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .map(|v| v.trim().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), 2, "no context switch counts in {status}");
        // utime and stime are fields 14 and 15; the name, in parentheses
        // before field 3, may hold spaces.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        out.insert(
            tid,
            (
                name,
                Activity {
                    switches: counts.iter().sum(),
                    ticks,
                },
            ),
        );
    }
    out
}

fn delivery(thread_name: &str) -> bool {
    thread_name.starts_with("delivery-")
}

/// The threads that did something between two looks, with what they did.
fn moved(
    before: &BTreeMap<u32, (String, Activity)>,
    after: &BTreeMap<u32, (String, Activity)>,
) -> BTreeMap<String, Activity> {
    let mut out = BTreeMap::new();
    for (tid, (name, now)) in after {
        let then = before.get(tid).map_or(
            Activity {
                switches: 0,
                ticks: 0,
            },
            |(_, a)| *a,
        );
        let diff = Activity {
            switches: now.switches - then.switches,
            ticks: now.ticks - then.ticks,
        };
        if diff.switches > 0 || diff.ticks > 0 {
            out.insert(name.clone(), diff);
        }
    }
    out
}

/// Runs one of the ignored tests below alone in a new process of this test
/// binary, and fails with its output if it fails.
fn run_alone(name: &str) {
    let module = module_path!().split_once("::").unwrap().1;
    let test = format!("{module}::{name}");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([&test, "--exact", "--ignored", "--test-threads=1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{test}, run alone:\n{text}"
    );
}

const THREADS: usize = 32;

/// A scheduler with the default number of delivery threads on an empty
/// spool, once every thread has started and had time to reach its wait.
fn idle_scheduler(dir: &std::path::Path) -> (Spool, Arc<Fake>, Scheduler) {
    let spool = open(dir);
    let fake = Arc::new(Fake::delivering(ms(0)));
    let config = SchedulerConfig {
        threads: THREADS,
        ..config(50)
    };
    let sched = start(config, &spool.handle(), &fake);
    assert!(wait_until(Duration::from_secs(10), || threads(delivery)
        .len()
        == THREADS));
    std::thread::sleep(ms(200));
    (spool, fake, sched)
}

#[test]
fn idle_threads_stay_parked() {
    run_alone("alone_idle_threads_stay_parked");
}

#[test]
#[ignore = "run alone by idle_threads_stay_parked"]
fn alone_idle_threads_stay_parked() {
    let dir = tempfile::tempdir().unwrap();
    let (_spool, _fake, sched) = idle_scheduler(dir.path());
    // The scheduler thread too: with nothing queued it has no timer either.
    let pool = || threads(|name| delivery(name) || name == "scheduler");
    let before = pool();
    assert_eq!(before.len(), THREADS + 1, "other threads of these names");
    std::thread::sleep(Duration::from_secs(1));
    let moved = moved(&before, &pool());
    // Parked threads do nothing at all; one that polls or spins moves
    // hundreds of times a second. The slack is for a stray wake-up.
    let switches: u64 = moved.values().map(|a| a.switches).sum();
    let ticks: u64 = moved.values().map(|a| a.ticks).sum();
    assert!(
        switches <= 2 && ticks <= 1,
        "idle for a second, yet: {moved:?}"
    );
    sched.shutdown();
}

#[test]
fn each_job_wakes_one_thread_the_last_one_idle() {
    run_alone("alone_each_job_wakes_one_thread_the_last_one_idle");
}

#[test]
#[ignore = "run alone by each_job_wakes_one_thread_the_last_one_idle"]
fn alone_each_job_wakes_one_thread_the_last_one_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, fake, sched) = idle_scheduler(dir.path());
    let h = spool.handle();
    let before = threads(delivery);
    // One message at a time: each job finds the thread of the one before
    // idle again, and takes it rather than waking another.
    for i in 0..20 {
        let id = submit(&h, "alice@a.test", &[&format!("u{i}@x.test")]);
        sched.handle().queued(id);
        assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&h)));
    }
    let moved = moved(&before, &threads(delivery));
    let calls = fake.calls();
    assert_eq!(calls.len(), 20);
    let ran: BTreeSet<&str> = calls.iter().map(|c| c.thread.as_str()).collect();
    assert_eq!(ran.len(), 1, "jobs went to {ran:?}");
    assert_eq!(
        moved.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        ran,
        "threads that woke: {moved:?}"
    );
    sched.shutdown();
}
