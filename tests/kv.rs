//! The plugins' key-value store in Redis, end to end: two `sluice serve`
//! instances with the shipped antispam plugin greylisting, sharing one
//! private redis-server, so a retry through the other server passes; state
//! that outlives a restart; and a Redis that is down failing closed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sluice_e2e::{Client, Server, wait_for};
use sluice_testkit::RedisServer;

/// How long a log line may take to show up.
const LIMIT: Duration = Duration::from_secs(15);
/// Short, so the test can wait it out; whole seconds, as the plugin counts.
const DELAY_SECS: u64 = 2;

const CONTENT: &[u8] = b"From: Sender <sender@example.org>\r\n\
To: alice@example.test\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <kv-e2e@example.org>\r\n\
Subject: shared greylisting\r\n\
\r\n\
Greylisted once, anywhere.\r\n";

fn antispam() -> String {
    let path = format!(
        "{}/../plugins/dist/antispam.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    assert!(
        std::path::Path::new(&path).is_file(),
        "{path} is missing: run plugins/build.sh first (tests/run does)"
    );
    path
}

/// Antispam with greylisting and nothing that needs DNS, for clients that
/// are not trusted (so that it checks them), keeping its state in `redis`.
fn config(redis_url: &str) -> String {
    format!(
        "[[plugin]]\nname = \"antispam\"\npath = \"{}\"\n\
         [plugin.config]\ngreylist = true\ngreylist_delay_secs = {DELAY_SECS}\n\
         check_sender_domain = false\n\n\
         [relay]\ntrusted_networks = []\n\n\
         [kv]\nbackend = \"redis\"\nredis_url = \"{redis_url}\"\nkey_prefix = \"e2e:\"\n\
         timeout_ms = 200\n",
        antispam()
    )
}

/// One message from 127.0.0.1; the reply to its end of data.
fn attempt(server: &Server) -> String {
    let mut c = Client::connect_ehlo(server.addr());
    let reply = c.transaction("sender@example.org", &["alice@example.test"], CONTENT);
    c.command_expect("QUIT", "221 2.0.0");
    reply.raw
}

/// `KEYS <pattern>` as Redis' own protocol answers it (an inline command,
/// so this test does not trust Sluice's client to check Sluice).
fn redis_keys(redis: &RedisServer, pattern: &str) -> String {
    let mut s = TcpStream::connect(redis.addr()).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(format!("KEYS {pattern}\r\n").as_bytes())
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // The reply is small; read until it stops growing (bounded).
    let deadline = Instant::now() + Duration::from_secs(2);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) if !reply.is_empty() => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8(reply).expect("a text reply")
}

#[test]
fn greylisting_state_is_shared_between_servers_and_survives_a_restart() {
    let redis = RedisServer::start();
    let mut a = Server::start_receiving(&config(&redis.url()));
    let b = Server::start_receiving(&config(&redis.url()));
    for server in [&a, &b] {
        assert!(
            server
                .wait_for_log("key-value store: redis", LIMIT)
                .is_some_and(|l| l.contains(&format!("127.0.0.1:{}", redis.port()))),
            "{:#?}",
            server.logs()
        );
    }

    let first = Instant::now();
    let reply = attempt(&a);
    assert_eq!(
        reply,
        format!("451 4.7.1 Greylisted, please try again in {DELAY_SECS} seconds\r\n")
    );
    // The triplet is in Redis under the configured prefix.
    let keys = redis_keys(&redis, "e2e:greylist:*");
    assert!(keys.starts_with("*1\r\n"), "{keys:?}");
    assert!(
        keys.contains("e2e:greylist:127.0.0.0/24:")
            && keys.contains(":sender@example.org:alice@example.test"),
        "{keys:?}"
    );

    // B knows the first attempt: it counts from A's, not from now. (With
    // a store of its own it would start a full delay of its own, and the
    // retry below would be greylisted again.)
    let too_early = attempt(&b);
    assert!(
        too_early.starts_with("451 4.7.1 Greylisted, please try again in "),
        "{too_early}"
    );
    let wait = Duration::from_secs(DELAY_SECS) + Duration::from_millis(300);
    std::thread::sleep(wait.saturating_sub(first.elapsed()));
    let retry = attempt(&b);
    assert!(retry.starts_with("250 "), "the retry through B: {retry}");

    // The pass is kept in Redis, not in A: a restarted A accepts at once.
    a.terminate(LIMIT);
    a.restart();
    let after_restart = attempt(&a);
    assert!(after_restart.starts_with("250 "), "{after_restart}");
}

#[test]
fn a_redis_that_is_down_fails_closed_and_is_used_once_back() {
    let mut redis = RedisServer::start();
    redis.stop();
    let server = Server::start_receiving(&config(&redis.url()));
    assert!(
        server
            .wait_for_log("redis does not answer", LIMIT)
            .is_some(),
        "{:#?}",
        server.logs()
    );
    // The default on_error: fail closed, so no message skips greylisting.
    let started = Instant::now();
    assert_eq!(
        attempt(&server),
        "451 4.3.0 Filter antispam failed; try again later\r\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        wait_for(LIMIT, || server.logs().into_iter().find(|l| l
            .contains("key-value store: redis")
            && l.contains("plugin=antispam")))
        .is_some(),
        "{:#?}",
        server.logs()
    );

    redis.restart();
    assert_eq!(
        attempt(&server),
        format!("451 4.7.1 Greylisted, please try again in {DELAY_SECS} seconds\r\n")
    );
}
