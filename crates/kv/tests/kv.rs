//! The key-value store's behaviour, the same for every backend: each test
//! below runs against the embedded `MemoryKv` and against `RedisKv` on a
//! private redis-server; then what only Redis has (key prefixes, a server
//! that goes away and comes back).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_kv::{KvStore, MemoryKv, RedisKv};
use sluice_testkit::RedisServer;

/// Long enough that a key is surely still there when read at once, even on a
/// loaded machine; short enough to wait out.
const TTL: Duration = Duration::from_millis(400);
const PAST_TTL: Duration = Duration::from_millis(800);

fn redis_kv(server: &RedisServer, prefix: &str) -> RedisKv {
    RedisKv::new(&server.url(), prefix, RedisKv::DEFAULT_TIMEOUT).unwrap()
}

/// Each behaviour as a test per backend; a Redis test gets its own server.
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $name() {
                super::$name(&sluice_kv::MemoryKv::new());
            })*
        }
        mod redis {
            $(#[test]
            fn $name() {
                let server = sluice_testkit::RedisServer::start();
                super::$name(&super::redis_kv(&server, "sluice:"));
            })*
        }
    };
}

for_each_backend!(
    get_returns_what_set_stored,
    set_with_a_ttl_expires,
    incr_creates_with_the_ttl_and_keeps_an_existing_expiry,
    incr_refuses_a_non_integer_and_an_overflow,
    concurrent_incr_loses_no_update,
);

fn get_returns_what_set_stored(kv: &dyn KvStore) {
    assert_eq!(kv.get(b"greylist:a").unwrap(), None);
    kv.set(b"greylist:a", b"first", None).unwrap();
    assert_eq!(
        kv.get(b"greylist:a").unwrap().as_deref(),
        Some(&b"first"[..])
    );
    kv.set(b"greylist:a", b"second", None).unwrap();
    assert_eq!(
        kv.get(b"greylist:a").unwrap().as_deref(),
        Some(&b"second"[..])
    );
    // Keys and values are bytes, not text.
    let binary = [0u8, 0xff, b'\r', b'\n', b' '];
    kv.set(&binary, &binary[1..], None).unwrap();
    assert_eq!(kv.get(&binary).unwrap().as_deref(), Some(&binary[1..]));
    kv.set(b"empty", b"", None).unwrap();
    assert_eq!(kv.get(b"empty").unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(kv.get(b"greylist:b").unwrap(), None);
}

fn set_with_a_ttl_expires(kv: &dyn KvStore) {
    kv.set(b"short", b"1", Some(TTL)).unwrap();
    kv.set(b"long", b"2", Some(Duration::from_secs(60)))
        .unwrap();
    kv.set(b"forever", b"3", None).unwrap();
    // Overwriting without a TTL makes the key permanent.
    kv.set(b"made-permanent", b"4", Some(TTL)).unwrap();
    kv.set(b"made-permanent", b"5", None).unwrap();
    assert_eq!(kv.get(b"short").unwrap().as_deref(), Some(&b"1"[..]));
    std::thread::sleep(PAST_TTL);
    assert_eq!(kv.get(b"short").unwrap(), None);
    assert_eq!(kv.get(b"long").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(kv.get(b"forever").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(
        kv.get(b"made-permanent").unwrap().as_deref(),
        Some(&b"5"[..])
    );
}

fn incr_creates_with_the_ttl_and_keeps_an_existing_expiry(kv: &dyn KvStore) {
    assert_eq!(kv.incr(b"rate", 5, Some(TTL)).unwrap(), 5);
    // A later, longer TTL must not make the window slide.
    assert_eq!(
        kv.incr(b"rate", 2, Some(Duration::from_secs(60))).unwrap(),
        7
    );
    assert_eq!(kv.incr(b"rate", -10, None).unwrap(), -3);
    assert_eq!(kv.get(b"rate").unwrap().as_deref(), Some(&b"-3"[..]));
    // A key set as text counts if it is a decimal integer, and keeps its TTL.
    kv.set(b"seen", b"40", Some(TTL)).unwrap();
    assert_eq!(
        kv.incr(b"seen", 2, Some(Duration::from_secs(60))).unwrap(),
        42
    );
    // A key without expiry stays without.
    assert_eq!(kv.incr(b"total", 1, None).unwrap(), 1);
    assert_eq!(kv.incr(b"total", 1, Some(TTL)).unwrap(), 2);
    std::thread::sleep(PAST_TTL);
    assert_eq!(kv.get(b"rate").unwrap(), None);
    assert_eq!(kv.get(b"seen").unwrap(), None);
    assert_eq!(kv.get(b"total").unwrap().as_deref(), Some(&b"2"[..]));
    // An expired key counts from zero again, with the new TTL.
    assert_eq!(
        kv.incr(b"rate", 1, Some(Duration::from_secs(60))).unwrap(),
        1
    );
    std::thread::sleep(PAST_TTL);
    assert_eq!(kv.get(b"rate").unwrap().as_deref(), Some(&b"1"[..]));
}

fn incr_refuses_a_non_integer_and_an_overflow(kv: &dyn KvStore) {
    kv.set(b"text", b"hello", None).unwrap();
    assert!(kv.incr(b"text", 1, None).is_err());
    assert!(kv.incr(b"text", 1, Some(TTL)).is_err());
    assert_eq!(kv.get(b"text").unwrap().as_deref(), Some(&b"hello"[..]));
    kv.set(b"big", i64::MAX.to_string().as_bytes(), None)
        .unwrap();
    assert!(kv.incr(b"big", 1, None).is_err());
    assert_eq!(
        kv.get(b"big").unwrap().as_deref(),
        Some(i64::MAX.to_string().as_bytes())
    );
    // Exact past 2^53, where a double would round.
    assert_eq!(kv.incr(b"big", -1, None).unwrap(), i64::MAX - 1);
    // The store still works after refusing.
    assert_eq!(kv.incr(b"number", 3, None).unwrap(), 3);
}

fn concurrent_incr_loses_no_update(kv: &dyn KvStore) {
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..200 {
                    kv.incr(b"counter", 1, Some(Duration::from_secs(60)))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(kv.incr(b"counter", 0, None).unwrap(), 800);
}

#[test]
fn prefixes_keep_users_of_one_redis_apart() {
    let server = RedisServer::start();
    let a = redis_kv(&server, "sluice-a:");
    let b = redis_kv(&server, "sluice-b:");
    let raw = redis_kv(&server, "");
    a.set(b"greylist", b"from a", None).unwrap();
    assert_eq!(b.get(b"greylist").unwrap(), None);
    assert_eq!(b.incr(b"greylist", 1, None).unwrap(), 1);
    assert_eq!(a.get(b"greylist").unwrap().as_deref(), Some(&b"from a"[..]));
    // Stored under the prefix, for anyone else looking at the same Redis.
    assert_eq!(
        raw.get(b"sluice-a:greylist").unwrap().as_deref(),
        Some(&b"from a"[..])
    );
    assert_eq!(
        raw.get(b"sluice-b:greylist").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(raw.get(b"greylist").unwrap(), None);
}

/// Runs `op` and says how long it took.
fn timed<T>(op: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let result = op();
    (result, start.elapsed())
}

/// Well past one 200 ms timeout (and a retry), well short of a hang.
const FAILS_WITHIN: Duration = Duration::from_secs(2);

#[test]
fn a_stopped_redis_fails_fast_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start();
    let kv = redis_kv(&server, "sluice:");
    kv.ping().unwrap();
    kv.set(b"k", b"v", None).unwrap();
    server.stop();
    let (result, took) = timed(|| kv.get(b"k"));
    let error = result.unwrap_err();
    assert!(took < FAILS_WITHIN, "took {took:?}");
    assert!(error.0.contains(&server.port().to_string()), "{error}");
    let (result, took) = timed(|| kv.incr(b"n", 1, Some(TTL)));
    assert!(result.is_err());
    assert!(took < FAILS_WITHIN, "took {took:?}");
    assert!(kv.ping().is_err());

    server.restart();
    // Nothing was saved: the restarted server is empty, and reachable.
    assert_eq!(kv.get(b"k").unwrap(), None);
    kv.set(b"k", b"again", None).unwrap();
    assert_eq!(kv.incr(b"n", 1, Some(TTL)).unwrap(), 1);
    assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"again"[..]));
}

#[test]
fn pooled_connections_survive_a_restart_between_calls() {
    let mut server = RedisServer::start();
    let kv = Arc::new(redis_kv(&server, "sluice:"));
    // Several connections in the pool at once.
    std::thread::scope(|scope| {
        for i in 0..4u8 {
            let kv = &kv;
            scope.spawn(move || {
                for _ in 0..20 {
                    kv.set(&[i], b"v", None).unwrap();
                }
            });
        }
    });
    server.restart();
    // The first call after the restart finds its pooled connection closed
    // by the old server; it must not fail for that.
    assert_eq!(kv.get(&[0]).unwrap(), None);
    for i in 0..4u8 {
        kv.set(&[i], b"w", None).unwrap();
        assert_eq!(kv.get(&[i]).unwrap().as_deref(), Some(&b"w"[..]));
    }
}

fn signal(server: &RedisServer, signal: &str) {
    let pid = server.pid().expect("redis-server runs").to_string();
    let status = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

#[test]
fn a_hung_redis_times_out_and_its_late_replies_are_not_taken_for_new_ones() {
    let server = RedisServer::start();
    let kv = redis_kv(&server, "sluice:");
    kv.set(b"a", b"1", None).unwrap();
    kv.set(b"b", b"2", None).unwrap();
    // Stopped, not killed: connections are accepted (the kernel's backlog)
    // and commands written, but nothing answers.
    signal(&server, "-STOP");
    let outcome = std::panic::catch_unwind(|| {
        // On the pooled connection, then on a new one.
        for _ in 0..2 {
            let (result, took) = timed(|| kv.get(b"a"));
            let error = result.unwrap_err();
            assert!(error.0.contains("no reply within"), "{error}");
            assert!(took < FAILS_WITHIN, "took {took:?}");
        }
    });
    signal(&server, "-CONT");
    outcome.unwrap();
    // Redis now answers the timed-out GETs too; a reused connection would
    // read "1" for the GET of b.
    for _ in 0..3 {
        assert_eq!(kv.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(kv.incr(b"n", 1, None).map(|n| n > 0), Ok(true));
    }
    assert_eq!(kv.get(b"n").unwrap().as_deref(), Some(&b"3"[..]));
}

#[test]
fn memory_kv_is_the_default_store_and_shares_nothing() {
    // Two embedded stores are two processes' worth of state: what the Redis
    // backend exists to fix, shown here so the contrast is tested.
    let a = MemoryKv::new();
    let b = MemoryKv::new();
    a.set(b"k", b"v", None).unwrap();
    assert_eq!(b.get(b"k").unwrap(), None);
    let server = RedisServer::start();
    let (c, d) = (redis_kv(&server, "x:"), redis_kv(&server, "x:"));
    c.set(b"k", b"v", None).unwrap();
    assert_eq!(d.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}
