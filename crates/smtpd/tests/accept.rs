//! How the event loops share a burst of connections, over real loopback
//! sockets: every loop polls the one listener, so without care the loop that
//! wakes first takes the whole burst and the other cores sit idle.

mod common;
use common::Client;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use sluice_smtp::server::ServerConfig;
use sluice_smtpd::Smtpd;
use sluice_spool::Spool;

const BURST: usize = 20;
const LOOPS: usize = 2;

fn start(dir: &std::path::Path) -> (Smtpd, Spool) {
    common::start_smtpd(dir, LOOPS, ServerConfig::default().max_message_size)
}

/// Opens `BURST` connections as close to the same moment as threads allow.
fn burst(addr: SocketAddr) -> Vec<Client> {
    let barrier = Arc::new(Barrier::new(BURST));
    let threads: Vec<_> = (0..BURST)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                Client::open(addr)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn a_burst_of_connections_is_spread_over_the_event_loops_and_each_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (smtpd, spool) = start(dir.path());
    let mut clients = burst(smtpd.local_addrs()[0]);
    for c in &mut clients {
        let greeting = c.reply();
        assert_eq!(greeting, "220 mx.example.test ESMTP Sluice\r\n");
    }

    let per_loop = smtpd.connections_per_loop();
    assert_eq!(per_loop.len(), LOOPS);
    assert_eq!(per_loop.iter().sum::<usize>(), BURST, "{per_loop:?}");
    // An even split, give or take two accepts racing on both loops. (Left
    // to whichever loop wakes first, it came out 17 to 3.)
    assert!(
        per_loop.iter().all(|&n| n <= BURST / LOOPS + 2),
        "the loops share a burst of {BURST} unevenly: {per_loop:?}"
    );

    // Whichever loop accepted a connection, the loop that serves it gets the
    // spool's answer: every client's message is acknowledged.
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(c.command("EHLO c.example").starts_with("250 "));
        assert!(c.command("MAIL FROM:<s@c.example>").starts_with("250 "));
        assert!(
            c.command("RCPT TO:<alice@example.test>")
                .starts_with("250 ")
        );
        assert!(c.command("DATA").starts_with("354 "));
        let queued = c.command(&format!("Subject: {i}\r\n\r\nburst\r\n."));
        assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    }

    // Half leave; the counts follow, so the next burst goes where there is room.
    for mut c in clients.drain(..BURST / 2) {
        assert!(c.command("QUIT").starts_with("221 "));
        let rest = c.read_to_close();
        assert!(rest.is_empty(), "{rest:?}");
    }
    let settled = (0..500).find_map(|_| {
        let n: usize = smtpd.connections_per_loop().iter().sum();
        if n == BURST / 2 {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(10));
        None
    });
    assert!(
        settled.is_some(),
        "closed connections still counted: {:?}",
        smtpd.connections_per_loop()
    );

    // Shutdown says 421 to everyone still connected and the loops exit:
    // no loop waits for a connection it was never given.
    smtpd.stopper().stop();
    for c in &mut clients {
        assert!(c.reply().starts_with("421 4.3.2 "));
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        smtpd.wait();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the event loops did not exit within 10 s of shutdown");
    spool.shutdown();
}
