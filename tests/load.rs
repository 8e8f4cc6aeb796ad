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
