//! Crash safety: `kill -9` at an arbitrary moment loses no message that got
//! its `250`. The kill lands at a different point of the load in each test.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
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

/// The spool's segment size, and the length of a prepared segment file.
const SEGMENT: u64 = 64 << 20;

/// The newest segment file's length.
fn head_len(spool_dir: &Path) -> Option<u64> {
    let mut segs: Vec<_> = std::fs::read_dir(spool_dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            (name.starts_with("seg-") && name.ends_with(".log")).then_some(name)
        })
        .collect();
    segs.sort();
    std::fs::metadata(spool_dir.join(segs.pop()?))
        .ok()
        .map(|m| m.len())
}

/// Messages of about 4 KiB, one at a time, until the head segment is a
/// prepared one (a whole segment long from its start; see
/// `crates/spool/src/prepared.rs`): a new spool asks for it after its first
/// mebibyte and moves there when it is ready. Returns each message's queue
/// id and content.
fn fill_into_a_prepared_segment(server: &Server) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    let found = wait_for(Duration::from_secs(60), || {
        let content = format!(
            "From: warm@example.org\r\nSubject: warm {n}\r\n\r\n{}\r\n",
            "w".repeat(4000),
            n = sent.len()
        );
        let id = send_message(
            server.addr(),
            "warm@example.org",
            &["bob@remote.test"],
            content.as_bytes(),
        );
        sent.push((id, content));
        (head_len(server.spool_dir()) == Some(SEGMENT)).then_some(())
    });
    found.unwrap_or_else(|| panic!("no prepared segment after {} messages", sent.len()));
    assert!(
        sent.len() > 200,
        "moved before the first mebibyte: {}",
        sent.len()
    );
    sent
}

fn crash_after(kill_at: usize, in_prepared_segment: bool) {
    // The messages go to a next hop that refuses connections, so they stay
    // in the queue (deferred), where the test can compare every one of them
    // with what was sent, envelope included. (Delivery after a crash is
    // tested in tests/delivery_queue.rs.)
    let config = if in_prepared_segment {
        format!("{CONFIG}[spool]\nprepare_segments = \"always\"\n")
    } else {
        CONFIG.to_owned()
    };
    let mut server = Server::start(&config);
    let warm = if in_prepared_segment {
        fill_into_a_prepared_segment(&server)
    } else {
        Vec::new()
    };
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
    for (id, content) in &warm {
        let m = queue
            .get(id)
            .unwrap_or_else(|| panic!("{id}, sent before the load, lost"));
        assert_eq!(String::from_utf8_lossy(m.content()), *content, "{id}");
    }
    if in_prepared_segment {
        assert_eq!(
            head_len(server.spool_dir()),
            Some(SEGMENT),
            "recovery read the prepared segment's zeros as a torn tail"
        );
    }

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
    crash_after(200, false);
}

#[test]
fn kill_9_after_700_acknowledgements_loses_nothing_acknowledged() {
    crash_after(700, false);
}

#[test]
fn kill_9_after_1300_acknowledgements_loses_nothing_acknowledged() {
    crash_after(1300, false);
}

#[test]
fn kill_9_in_a_prepared_segment_loses_nothing_acknowledged() {
    crash_after(700, true);
}
