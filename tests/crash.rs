//! Crash safety: `kill -9` at an arbitrary moment loses no message that got
//! its `250`. The kill lands at a different point of the load in each test.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_e2e::{Client, Server, queue_by_id, send_message, wait_for};

const CONNECTIONS: usize = 20;
const TOTAL: usize = 2_000;
/// Port 9 (discard) on loopback: nothing listens there, so every attempt is
/// deferred with "connection refused", and a retry is an hour away.
const CONFIG: &str =
    "[delivery]\nroutes = { \"remote.test\" = \"127.0.0.1:9\" }\nretry_schedule_secs = [3600]\n";

fn content(conn: usize, seq: usize) -> String {
    format!(
        "From: crash{conn}@example.org\r\nSubject: crash {conn}/{seq}\r\n\r\n\
         connection {conn} message {seq}\r\n{}\r\n",
        "x".repeat(seq % 97)
    )
}

/// One connection's share of the load; returns (queue id, seq) for every
/// message whose `250` arrived, stopping at the first error (the kill).
fn sender(addr: SocketAddr, conn: usize, acks: Arc<AtomicUsize>) -> Vec<(String, usize)> {
    let mut acked = Vec::new();
    let Ok(mut c) = Client::connect_raw(addr) else {
        return acked;
    };
    let greeted = c.try_read_reply().is_ok_and(|r| r.code == 220);
    if !greeted {
        return acked;
    }
    c.send("EHLO crash.example\r\n");
    if !c.try_read_reply().is_ok_and(|r| r.code == 250) {
        return acked;
    }
    for seq in 0..TOTAL / CONNECTIONS {
        // The whole transaction in one write (PIPELINING); the replies are
        // read one by one, and only the last carries the queue id.
        let wire = format!(
            "MAIL FROM:<crash{conn}@example.org>\r\nRCPT TO:<bob@remote.test>\r\nDATA\r\n{}.\r\n",
            content(conn, seq)
        );
        if c.try_send(wire.as_bytes()).is_err() {
            break;
        }
        let mut last = None;
        for _ in 0..4 {
            match c.try_read_reply() {
                Ok(r) => last = Some(r),
                Err(_) => {
                    last = None;
                    break;
                }
            }
        }
        let Some(reply) = last else { break };
        let id = reply.queue_id().unwrap_or_else(|| {
            panic!("connection {conn} message {seq} refused before the kill: {reply:?}")
        });
        acked.push((id, seq));
        acks.fetch_add(1, Ordering::Relaxed);
    }
    acked
}

fn crash_after(kill_at: usize) {
    // The messages go to a next hop that refuses connections, so they stay
    // in the queue (deferred), where the test can compare every one of them
    // with what was sent, envelope included. (Delivery after a crash is
    // tested in tests/delivery_queue.rs.)
    let mut server = Server::start(CONFIG);
    let addr = server.addr();
    let acks = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|conn| {
            let acks = Arc::clone(&acks);
            std::thread::spawn(move || sender(addr, conn, acks))
        })
        .collect();
    wait_for(Duration::from_secs(60), || {
        (acks.load(Ordering::Relaxed) >= kill_at).then_some(())
    })
    .unwrap_or_else(|| panic!("fewer than {kill_at} acknowledgements within 60 s"));
    server.kill9();

    let mut acked = Vec::new();
    for (conn, t) in threads.into_iter().enumerate() {
        for (id, seq) in t.join().expect("a sender thread failed") {
            acked.push((id, conn, seq));
        }
    }
    assert!(acked.len() >= kill_at);
    assert!(
        acked.len() < TOTAL,
        "the kill came after the whole load: it tested nothing"
    );
    let distinct: HashSet<&str> = acked.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(distinct.len(), acked.len(), "queue ids were reused");

    server.restart();
    let queue = queue_by_id(server.spool_dir());
    let mut lost = Vec::new();
    for (id, conn, seq) in &acked {
        match queue.get(id) {
            None => lost.push(format!("{id} (connection {conn} message {seq})")),
            Some(m) => {
                assert_eq!(m.reverse_path, format!("crash{conn}@example.org"), "{id}");
                assert_eq!(m.recipients, ["bob@remote.test"], "{id}");
                assert_eq!(
                    String::from_utf8_lossy(m.content()),
                    content(*conn, *seq),
                    "{id}: body of connection {conn} message {seq}"
                );
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost after kill -9 at ~{kill_at} acks: {}",
        lost.len(),
        acked.len(),
        lost.iter().take(20).cloned().collect::<Vec<_>>().join(", ")
    );

    // The recovered server takes mail again, and keeps what it had.
    let id = send_message(
        server.addr(),
        "after@example.org",
        &["bob@remote.test"],
        b"Subject: after\r\n\r\nalive\r\n",
    );
    let queue = queue_by_id(server.spool_dir());
    assert_eq!(queue[&id].content(), b"Subject: after\r\n\r\nalive\r\n");
    assert!(acked.iter().all(|(id, ..)| queue.contains_key(id)));
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("QUIT", "221 2.0.0");
}

#[test]
fn kill_9_after_200_acknowledgements_loses_nothing_acknowledged() {
    crash_after(200);
}

#[test]
fn kill_9_after_700_acknowledgements_loses_nothing_acknowledged() {
    crash_after(700);
}

#[test]
fn kill_9_after_1300_acknowledgements_loses_nothing_acknowledged() {
    crash_after(1300);
}
