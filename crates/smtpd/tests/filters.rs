//! The filter hook points, driven over real loopback sockets: a filter that
//! answers later must hold up only its own connection.

mod common;
use common::Client;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_filter::{ClientInfo, Defer, Filter, MessageChanges, Stage, Verdict};
use sluice_smtp::server::ServerConfig;
use sluice_smtp::{Domain, EnhancedCode, Reply};
use sluice_smtpd::{RecipientPolicy, Smtpd, SmtpdConfig};
use sluice_spool::{Spool, SpoolConfig};

/// Answers HELO `slow.example` after `delay`, from another thread; refuses
/// MAIL from `spam@…`; drops its `Later` for HELO `broken.example`; records
/// every stage it sees.
struct TestFilter {
    delay: Duration,
    seen: Mutex<Vec<String>>,
}

impl Filter for TestFilter {
    fn check(&self, conn: &ClientInfo, stage: Stage<'_>, defer: Defer<'_>) -> Option<Verdict> {
        let name = match &stage {
            Stage::Connect => format!("connect {}", conn.peer.ip()),
            Stage::Hello { name, .. } => format!("hello {name}"),
            Stage::Mail { reverse_path, .. } => format!("mail {reverse_path}"),
            Stage::Rcpt { forward_path, .. } => format!("rcpt {forward_path}"),
            Stage::Message { message, .. } => format!("message {}", message.len()),
        };
        self.seen.lock().unwrap().push(name.clone());
        match stage {
            Stage::Hello {
                name: Domain::Name(n),
                ..
            } if n == "slow.example" => {
                let later = defer.later();
                let delay = self.delay;
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    later.answer(Verdict::Continue);
                });
                None
            }
            Stage::Hello {
                name: Domain::Name(n),
                ..
            } if n == "broken.example" => {
                // Takes the handle and loses it: a filter bug.
                drop(defer.later());
                None
            }
            Stage::Message { envelope, .. } => {
                let sender = envelope.reverse_path.to_string();
                let changes = MessageChanges {
                    headers: vec![
                        ("X-Spam-Score".into(), "1.5".into()),
                        ("Bad Name".into(), "dropped".into()),
                        ("X-Injected".into(), "a\r\nBcc: victim@example.test".into()),
                    ],
                    discard: sender.starts_with("<discard@"),
                    quarantine: sender.starts_with("<quarantine@"),
                };
                Some(Verdict::Modify(changes))
            }
            Stage::Mail { reverse_path, .. } if reverse_path.to_string().starts_with("<spam@") => {
                Some(Verdict::Reject(Reply::new(
                    550,
                    Some(EnhancedCode::new(5, 7, 1)),
                    "Spam refused",
                )))
            }
            _ => Some(Verdict::Continue),
        }
    }
}

struct Harness {
    addr: SocketAddr,
    smtpd: Option<Smtpd>,
    spool: Option<Spool>,
    filter: Arc<TestFilter>,
    /// What the spool announced, and whether a crash at that instant would
    /// have left the message held: the spool's on-disk state, read back.
    queued: Arc<Mutex<Vec<(String, bool)>>>,
    spool_handle: sluice_spool::SpoolHandle,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(delay: Duration) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        let policy = RecipientPolicy::new(
            Arc::new(sluice_directory::Directory::new(
                sluice_directory::DirectoryConfig {
                    domains: vec!["example.test".into()],
                    users: vec!["alice".into()],
                    ..Default::default()
                },
            )),
            ["127.0.0.0/8".parse().unwrap()],
        );
        let mut config = SmtpdConfig::new(
            ServerConfig {
                hostname: "mx.example.test".into(),
                ..ServerConfig::default()
            },
            vec!["127.0.0.1:0".parse().unwrap()],
            policy,
        );
        // One loop: the slow filter must not stall even the loop it shares.
        config.event_loops = 1;
        let filter = Arc::new(TestFilter {
            delay,
            seen: Mutex::new(Vec::new()),
        });
        let queued = Arc::new(Mutex::new(Vec::new()));
        let record = queued.clone();
        let spool_dir = dir.path().to_path_buf();
        // The moment a message is durable, a crash would leave the spool
        // as it is on disk now: replay it, as a restart would.
        spool
            .handle()
            .on_arrival(Arc::new(move |group: Vec<sluice_spool::Arrival>| {
                let (on_disk, _) = Spool::open_read_only(&spool_dir).unwrap();
                for arrival in group {
                    let held = on_disk.get(arrival.id).unwrap().expect("durable").held;
                    // What the writer hands over says what the disk says.
                    assert_eq!(arrival.message.map(|m| m.held), Some(held));
                    record.lock().unwrap().push((arrival.id.to_string(), held));
                }
            }));
        let spool_handle = spool.handle();
        let smtpd = Smtpd::start(config, spool.handle(), filter.clone()).unwrap();
        Harness {
            addr: smtpd.local_addrs()[0],
            smtpd: Some(smtpd),
            spool: Some(spool),
            filter,
            queued,
            spool_handle,
            _dir: dir,
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(smtpd) = self.smtpd.take() {
            smtpd.stopper().stop();
            smtpd.wait();
        }
        if let Some(spool) = self.spool.take() {
            spool.shutdown();
        }
    }
}

#[test]
fn a_filter_answering_later_holds_up_only_its_own_connection() {
    let h = Harness::start(Duration::from_secs(2));
    let mut slow = Client::connect(h.addr);
    slow.send(b"EHLO slow.example\r\n");

    // While the slow HELO waits for its filter, another client on the same
    // event loop runs a whole transaction.
    let started = Instant::now();
    let mut fast = Client::connect(h.addr);
    assert!(fast.command("EHLO fast.example").starts_with("250 "));
    assert!(
        fast.command("MAIL FROM:<a@fast.example>")
            .starts_with("250 ")
    );
    assert!(
        fast.command("RCPT TO:<alice@example.test>")
            .starts_with("250 ")
    );
    assert!(fast.command("DATA").starts_with("354 "));
    let queued = fast.command("Subject: fast\r\n\r\nhi\r\n.");
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the fast client waited {:?} behind the slow filter",
        started.elapsed()
    );

    // And the slow client gets its answer once the filter gives it.
    assert!(slow.reply().starts_with("250 "));
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn filters_see_every_stage_and_can_refuse() {
    let h = Harness::start(Duration::ZERO);
    let mut c = Client::connect(h.addr);
    assert!(c.command("EHLO c.example").starts_with("250 "));
    assert_eq!(
        c.command("MAIL FROM:<spam@c.example>"),
        "550 5.7.1 Spam refused\r\n"
    );
    assert!(c.command("MAIL FROM:<ok@c.example>").starts_with("250 "));
    // Filters see every recipient first; the built-in policy then refuses
    // unknown users all the same.
    assert!(
        c.command("RCPT TO:<nobody@example.test>")
            .starts_with("550 5.1.1 ")
    );
    assert!(
        c.command("RCPT TO:<alice@example.test>")
            .starts_with("250 ")
    );
    assert!(c.command("DATA").starts_with("354 "));
    let reply = c.command("x\r\n.");
    let id = reply.trim_end().rsplit(' ').next().unwrap().to_string();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    // The spool announced exactly this message, no later than the client heard.
    assert_eq!(*h.queued.lock().unwrap(), [(id, false)]);
    let seen = h.filter.seen.lock().unwrap().clone();
    assert_eq!(seen[0], "connect 127.0.0.1");
    assert_eq!(seen[1], "hello c.example");
    assert_eq!(seen[2], "mail <spam@c.example>");
    assert_eq!(seen[3], "mail <ok@c.example>");
    assert_eq!(seen[4], "rcpt <nobody@example.test>");
    assert_eq!(seen[5], "rcpt <alice@example.test>");
    assert!(seen[6].starts_with("message "), "{seen:?}");
    assert_eq!(seen.len(), 7, "{seen:?}");
}

#[test]
fn a_filter_that_loses_its_answer_fails_closed() {
    let h = Harness::start(Duration::ZERO);
    let mut c = Client::connect(h.addr);
    let reply = c.command("EHLO broken.example");
    assert!(reply.starts_with("451 4.3.0 "), "{reply}");
    // The session goes on.
    assert!(c.command("EHLO c.example").starts_with("250 "));
}

fn send(c: &mut Client, from: &str) -> String {
    assert!(
        c.command(&format!("MAIL FROM:<{from}>"))
            .starts_with("250 ")
    );
    assert!(
        c.command("RCPT TO:<alice@example.test>")
            .starts_with("250 ")
    );
    assert!(c.command("DATA").starts_with("354 "));
    let reply = c.command("Subject: s\r\n\r\nbody\r\n.");
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    reply.trim_end().rsplit(' ').next().unwrap().to_string()
}

#[test]
fn filters_add_headers_discard_and_quarantine() {
    let h = Harness::start(Duration::ZERO);
    let mut c = Client::connect(h.addr);
    assert!(c.command("EHLO c.example").starts_with("250 "));

    let kept = send(&mut c, "ok@c.example");
    let stored = h
        .spool_handle
        .get(kept.parse().unwrap())
        .unwrap()
        .expect("queued");
    let text = String::from_utf8(stored.body().to_vec()).unwrap();
    // Right after our Received: header; the invalid fields are gone.
    let after_trace = text
        .split_once(";\r\n\t")
        .unwrap()
        .1
        .split_once("\r\n")
        .unwrap()
        .1;
    assert_eq!(
        after_trace, "X-Spam-Score: 1.5\r\nSubject: s\r\n\r\nbody\r\n",
        "{text}"
    );
    assert!(!stored.held);

    let discarded = send(&mut c, "discard@c.example");
    assert!(
        h.spool_handle
            .get(discarded.parse().unwrap())
            .unwrap()
            .is_none(),
        "a discarded message was queued"
    );

    let held = send(&mut c, "quarantine@c.example");
    let stored = h
        .spool_handle
        .get(held.parse().unwrap())
        .unwrap()
        .expect("quarantined messages are queued");
    assert!(stored.held, "quarantined but not held");
    // Two messages arrived; the quarantined one was held in the very record
    // that made it durable, so no crash can leave it deliverable.
    assert_eq!(*h.queued.lock().unwrap(), [(kept, false), (held, true)]);
}
