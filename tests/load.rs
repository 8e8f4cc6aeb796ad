//! Many clients at once, and one client that misbehaves under load.

use std::collections::HashSet;
use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_e2e::{Client, Server, queue_by_id};

const CLIENTS: usize = 100;
const PER_CLIENT: usize = 10;

fn content(client: usize, seq: usize) -> String {
    format!(
        "From: c{client}@example.org\r\nSubject: load {client}/{seq}\r\n\r\n\
         client {client} message {seq}\r\n.a line that was dot-stuffed\r\nend {client}-{seq}\r\n"
    )
}

#[test]
fn a_hundred_concurrent_clients_each_get_every_message_queued_once() {
    let server = Server::start_receiving("[limits]\nmax_connections_per_ip = 200\n");
    let addr = server.addr();
    let barrier = Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut c = Client::connect_ehlo(addr);
                // All sessions open before any transaction starts.
                barrier.wait();
                let mut ids = Vec::with_capacity(PER_CLIENT);
                for seq in 0..PER_CLIENT {
                    let wire = content(client, seq).replace("\r\n.a line", "\r\n..a line");
                    let r = c.transaction(
                        &format!("c{client}@example.org"),
                        &["alice@example.test"],
                        wire.as_bytes(),
                    );
                    let id = r
                        .queue_id()
                        .unwrap_or_else(|| panic!("client {client} message {seq}: {r:?}"));
                    ids.push((id, client, seq));
                }
                c.command_expect("QUIT", "221 2.0.0");
                ids
            })
        })
        .collect();
    let mut acked = Vec::with_capacity(CLIENTS * PER_CLIENT);
    for t in threads {
        acked.extend(t.join().expect("a client thread failed"));
    }

    let distinct: HashSet<&str> = acked.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(
        distinct.len(),
        CLIENTS * PER_CLIENT,
        "queue ids were reused"
    );

    let queue = queue_by_id(server.spool_dir());
    assert_eq!(
        queue.len(),
        CLIENTS * PER_CLIENT,
        "the queue holds other messages than those acknowledged"
    );
    for (id, client, seq) in &acked {
        let m = queue
            .get(id)
            .unwrap_or_else(|| panic!("{id} (client {client} message {seq}) not queued"));
        assert_eq!(m.reverse_path, format!("c{client}@example.org"));
        assert_eq!(m.recipients, ["alice@example.test"]);
        assert_eq!(
            String::from_utf8_lossy(m.content()),
            content(*client, *seq),
            "{id}: body of client {client} message {seq}"
        );
    }
}

#[test]
fn a_client_that_never_reads_does_not_stall_the_others() {
    // One event loop: the stuck client shares it with everybody else.
    let server = Server::start_receiving("[server]\nevent_loops = 1\n");
    let addr = server.addr();

    let stuck = Client::connect_ehlo(addr);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let blocked = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, written, blocked) = (
            Arc::clone(&stop),
            Arc::clone(&written),
            Arc::clone(&blocked),
        );
        let mut stream = stuck.stream().try_clone().expect("clone the stuck socket");
        stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .expect("write timeout");
        std::thread::spawn(move || {
            // Pipelined NOOPs whose replies nobody reads: once the server's
            // output to us backs up, it must stop reading from us, not
            // block its loop (bounded at 64 MiB either way).
            let chunk = b"NOOP\r\n".repeat(10_000);
            while !stop.load(Ordering::Relaxed) && written.load(Ordering::Relaxed) < 64 << 20 {
                match stream.write(&chunk) {
                    Ok(n) => {
                        written.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        blocked.store(true, Ordering::Relaxed);
                    }
                    Err(e) => panic!("the stuck client's connection failed: {e}"),
                }
            }
        })
    };
    // Let the stuck client fill its buffers (bounded).
    sluice_e2e::wait_for(Duration::from_secs(10), || {
        (blocked.load(Ordering::Relaxed) || written.load(Ordering::Relaxed) >= 64 << 20)
            .then_some(())
    })
    .expect("the stuck client neither blocked nor finished writing within 10 s");

    // 64 MiB of NOOPs would need ~150 MiB of replies: a server that keeps
    // reading while its output backs up buffers without bound.
    assert!(
        blocked.load(Ordering::Relaxed),
        "the server read 64 MiB of pipelined commands whose replies nobody read: no backpressure"
    );
    for i in 0..10 {
        let start = Instant::now();
        let mut c = Client::connect_ehlo(addr);
        c.set_read_timeout(Duration::from_secs(5));
        let body = format!("Subject: unstuck {i}\r\n\r\nmessage {i}\r\n");
        let r = c.transaction(
            "other@example.org",
            &["alice@example.test"],
            body.as_bytes(),
        );
        let id = r
            .queue_id()
            .unwrap_or_else(|| panic!("transaction {i}: {r:?}"));
        c.command_expect("QUIT", "221 2.0.0");
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "transaction {i} took {took:?} while a client was stuck"
        );
        assert_eq!(
            queue_by_id(server.spool_dir())[&id].content(),
            body.as_bytes()
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the stuck client's writer");
    drop(stuck);
}

/// Each thread of `pid` by name, with its time slice (`se.slice`, in
/// nanoseconds; `None` on a kernel that does not report one).
fn thread_slices(pid: u32) -> Vec<(String, Option<u64>)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads") {
        let dir = task.expect("a thread").path();
        let (Ok(name), Ok(sched)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("sched")),
        ) else {
            continue; // a thread that ended meanwhile
        };
        let slice = sched
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok());
        threads.push((name.trim().to_string(), slice));
    }
    threads
}

#[test]
fn the_threads_a_client_waits_on_ask_for_a_short_time_slice() {
    // Inbound checks on, so their workers run too.
    let server = Server::start_receiving("[authentication]\ntimeout_secs = 1\n");
    // A thread names itself, then asks for its slice, as it starts; the
    // listener can answer before the last of them has. Look until each has
    // both (or, for a bug, until the limit, and then fail below).
    // The kernel's shortest slice, 0.1 ms, in nanoseconds.
    const SHORT: Option<u64> = Some(100_000);
    let short = ["smtpd-0", "smtpd-msgauth-", "spool-writer"];
    let slices_of = |threads: &[(String, Option<u64>)], prefix: &str| -> Vec<Option<u64>> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, slice)| *slice)
            .collect()
    };
    let threads = sluice_e2e::wait_for(Duration::from_secs(5), || {
        let threads = thread_slices(server.pid());
        short
            .iter()
            .all(|p| {
                let slices = slices_of(&threads, p);
                !slices.is_empty() && slices.iter().all(|s| *s == SHORT)
            })
            .then_some(threads)
    })
    .unwrap_or_else(|| thread_slices(server.pid()));
    let slice_of = |prefix: &str| slices_of(&threads, prefix);
    let Some(default) = slice_of("delivery-").first().copied().flatten() else {
        eprintln!("this kernel reports no time slices ({threads:?}): nothing to check");
        return;
    };
    assert_ne!(
        Some(default),
        SHORT,
        "the default slice is the short one here: nothing to tell apart"
    );
    for prefix in short {
        let slices = slice_of(prefix);
        assert!(!slices.is_empty(), "no thread named {prefix}*: {threads:?}");
        assert!(
            slices.iter().all(|s| *s == SHORT),
            "{prefix}* should run with the 0.1 ms slice: {threads:?}"
        );
    }
    // Background work keeps the default and yields to them.
    for prefix in ["delivery-", "scheduler", "log-writer"] {
        assert!(
            slice_of(prefix).iter().all(|s| *s == Some(default)),
            "{prefix}* should keep the default slice: {threads:?}"
        );
    }
}
