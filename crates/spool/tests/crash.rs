//! Crash safety with real processes (this binary has its own `main`: it is
//! both the test and, re-executed with `SPOOL_CHILD` set, the child).
//!
//! - `kill_9`: a child submits messages from several threads and prints each
//!   acknowledged id the moment its completion fires (and journals some
//!   recipients as deferred or delivered, printing those too). The parent
//!   SIGKILLs it by PID at different moments, again and again on the same
//!   directory; every acknowledged message must then be present with an
//!   intact body, every acknowledged journal entry applied, and every
//!   finished message gone. (A journal entry that was issued but not yet
//!   acknowledged at the kill may or may not have been applied.)
//! - `disk_full_rlimit`: a child runs under `ulimit -f` (RLIMIT_FSIZE, with
//!   SIGXFSZ ignored so writes fail with EFBIG) and submits until the segment
//!   hits the limit: the failing submit must report "storage full", smaller
//!   submits must succeed afterwards, and a reopen without the limit must
//!   find every acknowledged message and no torn bytes.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{body, body_len, entry, reason, small_segments};
use sluice_spool::{JournalEntry, QueueId, RecipientState, Spool, SpoolConfig, Submission};

const CHILD_ENV: &str = "SPOOL_CHILD";
const DIR_ENV: &str = "SPOOL_CHILD_DIR";
const ROUND_ENV: &str = "SPOOL_CHILD_ROUND";

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        let dir = std::env::var(DIR_ENV).expect("child needs a directory");
        match mode.as_str() {
            "writer" => child_writer(
                Path::new(&dir),
                std::env::var(ROUND_ENV).unwrap().parse().unwrap(),
            ),
            "fsize" => child_fsize(Path::new(&dir)),
            other => panic!("unknown child mode {other}"),
        }
        return;
    }
    // `cargo test NAME` passes NAME on to every test binary.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 2] = [("kill_9", kill_9), ("disk_full_rlimit", disk_full_rlimit)];
    let mut passed = 0;
    for (name, test) in tests {
        if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
            println!("test {name} ...");
            test();
            println!("test {name} ... ok");
            passed += 1;
        }
    }
    println!("{passed} passed, 0 failed");
}

fn deferred(n: u64) -> RecipientState {
    RecipientState::Deferred {
        until_unix_ms: n,
        attempts: 1,
        last: reason(451, &format!("4.4.1 later {n}")),
    }
}

fn child_config() -> SpoolConfig {
    // Small segments: the run rotates, deletes and compacts between kills.
    small_segments(96 << 10)
}

/// Submits from three threads, up to 16 in flight each, until killed (or a
/// bound of messages and time is reached).
fn child_writer(dir: &Path, round: u64) {
    let (spool, _) = Spool::open(dir, child_config()).unwrap();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = move |out: &Arc<Mutex<std::io::Stdout>>, line: String| {
        let mut o = out.lock().unwrap();
        writeln!(o, "{line}").unwrap();
        o.flush().unwrap();
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let h = spool.handle();
            let out = out.clone();
            std::thread::spawn(move || {
                let (tx, rx) = mpsc::channel::<()>();
                let mut in_flight = 0;
                for n in 0..3000u64 {
                    if Instant::now() > deadline {
                        break;
                    }
                    while in_flight >= 16 {
                        rx.recv().unwrap();
                        in_flight -= 1;
                    }
                    let seed = round * 1_000_000 + t * 100_000 + n;
                    let id = h.new_id();
                    let (h2, out2, tx2) = (h.clone(), out.clone(), tx.clone());
                    in_flight += 1;
                    h.submit(
                        Submission::new(entry(id, seed), body(seed, body_len(seed))),
                        Box::new(move |r| {
                            let id = r.unwrap();
                            say(&out2, format!("ACK {id} {seed}"));
                            let journal_entry = |state| {
                                vec![JournalEntry {
                                    id,
                                    recipient: 0,
                                    state,
                                }]
                            };
                            // A fifth deferred (long-lived), the rest
                            // finished, so segments die and get compacted
                            // while the kills come.
                            if n % 5 == 0 {
                                let out3 = out2.clone();
                                h2.journal(
                                    journal_entry(deferred(seed)),
                                    Box::new(move |r| {
                                        r.unwrap();
                                        say(&out3, format!("DEF {id}"));
                                    }),
                                );
                            } else {
                                // Every recipient final: the message leaves.
                                let rcpts = entry(id, seed).envelope.recipients.len() as u32;
                                // Durable but unacknowledged, the journal may
                                // or may not survive a kill: say it is coming.
                                say(&out2, format!("FINISHING {id}"));
                                let out3 = out2.clone();
                                h2.journal(
                                    (0..rcpts)
                                        .map(|recipient| JournalEntry {
                                            id,
                                            recipient,
                                            state: RecipientState::Delivered,
                                        })
                                        .collect(),
                                    Box::new(move |r| {
                                        r.unwrap();
                                        say(&out3, format!("FIN {id}"));
                                    }),
                                );
                            }
                            let _ = tx2.send(());
                        }),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    spool.shutdown();
}

fn wait_bounded(child: &mut Child, limit: Duration) {
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("child process {} did not finish in {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Default)]
struct Expected {
    acked: HashMap<QueueId, u64>,
    deferred: HashSet<QueueId>,
    finished: HashSet<QueueId>,
    finishing: HashSet<QueueId>,
}

impl Expected {
    fn take(&mut self, line: &str) {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("ACK"), Some(id), Some(seed)) => {
                self.acked
                    .insert(id.parse().unwrap(), seed.parse().unwrap());
            }
            (Some("DEF"), Some(id), None) => {
                self.deferred.insert(id.parse().unwrap());
            }
            (Some("FIN"), Some(id), None) => {
                self.finished.insert(id.parse().unwrap());
            }
            (Some("FINISHING"), Some(id), None) => {
                self.finishing.insert(id.parse().unwrap());
            }
            _ => panic!("unexpected child output {line:?}"),
        }
    }

    fn check(&self, spool: &Spool, when: &str) {
        for (id, seed) in &self.acked {
            let got = spool.get(*id).unwrap();
            if self.finished.contains(id) {
                assert!(got.is_none(), "{when}: finished message {id} came back");
                continue;
            }
            if got.is_none() && self.finishing.contains(id) {
                continue;
            }
            let m = got.unwrap_or_else(|| panic!("{when}: acknowledged message {id} lost"));
            assert_eq!(m.entry, entry(*id, *seed), "{when}: envelope of {id}");
            assert!(
                m.body() == body(*seed, body_len(*seed)).as_slice(),
                "{when}: body of {id}"
            );
            if self.deferred.contains(id) {
                assert_eq!(
                    m.states[0],
                    deferred(*seed),
                    "{when}: journal entry of {id} lost"
                );
            }
        }
    }
}

fn kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut expected = Expected::default();
    // (acknowledgements to wait for before the kill, extra delay in ms):
    // from "during open/recovery" to "well into the run".
    let plan: [(usize, u64); 8] = [
        (0, 0),
        (1, 0),
        (20, 3),
        (100, 0),
        (300, 7),
        (0, 15),
        (600, 1),
        (50, 40),
    ];
    let started = Instant::now();
    for (round, (acks, extra_ms)) in plan.into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, "writer")
            .env(DIR_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let until = Instant::now() + Duration::from_secs(20);
        while lines
            .iter()
            .filter(|l: &&String| l.starts_with("ACK"))
            .count()
            < acks
            && Instant::now() < until
        {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
                lines.push(l);
            }
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        // SIGKILL, by PID.
        child.kill().unwrap();
        wait_bounded(&mut child, Duration::from_secs(10));
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let acked_now = lines.iter().filter(|l| l.starts_with("ACK")).count();
        assert!(
            acked_now >= acks,
            "round {round}: child acknowledged only {acked_now} of {acks}"
        );
        for l in &lines {
            expected.take(l);
        }
        // A read-only look must tolerate whatever the kill left behind.
        let (ro, _) = Spool::open_read_only(dir.path()).unwrap();
        expected.check(&ro, &format!("read-only after round {round}"));
        drop(ro);
        println!(
            "  round {round}: killed after {acked_now} acks ({} total, {} finished, {} deferred)",
            expected.acked.len(),
            expected.finished.len(),
            expected.deferred.len()
        );
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "crash test over its time bound"
        );
    }
    assert!(
        expected.acked.len() > 500,
        "too few acknowledged messages to mean anything"
    );
    assert!(!expected.finished.is_empty() && !expected.deferred.is_empty());
    let (spool, report) = Spool::open(dir.path(), child_config()).unwrap();
    expected.check(&spool, "final reopen");
    assert_eq!(
        report.live_messages,
        spool.messages().unwrap().len(),
        "index and listing agree"
    );
    let stats = spool.stats();
    println!("  final: {report:?} {stats:?}");
}

fn child_fsize(dir: &Path) {
    let cfg = small_segments(4 << 20);
    let (spool, _) = Spool::open(dir, cfg).unwrap();
    let h = spool.handle();
    let mut seed = 0u64;
    let mut submit = |len: usize| {
        seed += 1;
        let id = h.new_id();
        match h.submit_wait(Submission::new(entry(id, seed), body(seed, len))) {
            Ok(id) => println!("ACK {id} {seed} {len}"),
            Err(e) => println!("ERR full={} {e}", e.is_storage_full()),
        }
    };
    for _ in 0..100 {
        submit(8192);
    }
    for len in [4096, 1024, 256, 16] {
        submit(len);
    }
    spool.shutdown();
}

fn disk_full_rlimit() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // bash's `ulimit -f` counts 1024-byte blocks: 160 KiB per file. An
    // ignored SIGXFSZ stays ignored across exec, so writes past the limit
    // fail with EFBIG instead of killing the child.
    let mut child = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 160 && exec \"$0\"")
        .arg(&exe)
        .env(CHILD_ENV, "fsize")
        .env(DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    wait_bounded(&mut child, Duration::from_secs(60));
    assert!(child.wait().unwrap().success(), "fsize child failed");
    let lines = reader.join().unwrap();

    let first_err = lines
        .iter()
        .position(|l| l.starts_with("ERR"))
        .expect("the file size limit was never hit");
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("ERR"))
            .all(|l| l.starts_with("ERR full=true")),
        "EFBIG must be reported as storage full: {lines:?}"
    );
    assert!(
        lines[first_err..].iter().any(|l| l.starts_with("ACK")),
        "a smaller submit after the failure must succeed: {lines:?}"
    );
    let (spool, report) = Spool::open(dir.path(), small_segments(4 << 20)).unwrap();
    assert_eq!(
        report.torn_tail_bytes, 0,
        "failed batches were cut off by the writer"
    );
    let acked: Vec<(QueueId, u64, usize)> = lines
        .iter()
        .filter_map(|l| {
            let mut w = l.strip_prefix("ACK ")?.split(' ');
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect();
    assert_eq!(report.live_messages, acked.len());
    for (id, seed, len) in acked {
        let m = spool
            .get(id)
            .unwrap()
            .expect("acknowledged before or after the full disk");
        assert_eq!(m.body(), body(seed, len).as_slice());
    }
    println!(
        "  {} acknowledged, first failure after {first_err}",
        lines.len() - 1
    );
}
