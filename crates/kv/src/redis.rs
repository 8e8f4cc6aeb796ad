//! The key-value store in Redis: several servers share greylisting and
//! rate-limit state, and it outlives their restarts.
//!
//! Same meaning as [`crate::MemoryKv`]: `set` with a TTL is `SET … PX`;
//! `incr` is one MULTI/EXEC transaction of `SET key 0 NX PX ttl` and
//! `INCRBY`, so a missing key is created at 0 with the TTL while an existing
//! key keeps its expiry, and no other client can come between the two. (No
//! Lua: a script's numbers are doubles, which would round counts past 2^53;
//! and this works on any Redis since 2.6.12.)
//!
//! Every call is bounded: connecting and each read or write of a command
//! wait at most the configured timeout, so a hook never hangs on a dead
//! Redis; the failure comes back as [`KvError`] and the plugin's `on_error`
//! decides (fail closed by default). Hooks run on several filter threads, so
//! idle connections wait in a small pool; a connection that failed is
//! dropped, never reused, and the next call connects afresh.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::{Client, Connection, ConnectionLike, RedisError, RedisResult};

use crate::memory::{KvError, KvStore};

/// Idle connections kept for reuse; more than the filter threads a server
/// usually runs. Connections beyond it are closed after their command.
const MAX_IDLE: usize = 32;

/// The Redis backend of [`KvStore`].
pub struct RedisKv {
    client: Client,
    prefix: Vec<u8>,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// `host:port` or the socket path, for errors and logs: never the URL,
    /// which may carry a password.
    server: String,
}

impl RedisKv {
    pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";
    pub const DEFAULT_PREFIX: &str = "sluice:";
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

    /// A store on the Redis at `url` (`redis://[user:password@]host[:port][/db]`
    /// or `redis+unix:///path?db=N`), with every key under `key_prefix`, and
    /// `timeout` for connecting and for each read or write of a command.
    /// Does not connect: only a URL Redis cannot use is an error here.
    pub fn new(url: &str, key_prefix: &str, timeout: Duration) -> Result<RedisKv, KvError> {
        if timeout.is_zero() {
            // The socket API reads a zero timeout as "wait forever".
            return Err(KvError("the Redis timeout must be more than 0".into()));
        }
        let client = Client::open(url).map_err(|e| KvError(format!("redis URL: {e}")))?;
        let server = client.get_connection_info().addr().to_string();
        Ok(RedisKv {
            client,
            prefix: key_prefix.as_bytes().to_vec(),
            timeout,
            idle: Mutex::new(Vec::new()),
            server,
        })
    }

    /// Asks the server for `PONG`: for a start-up check that Redis is there.
    pub fn ping(&self) -> Result<(), KvError> {
        let pong: String = self.run(|conn| redis::cmd("PING").query(conn))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(self.failed(format!("PING answered {pong:?}")))
        }
    }

    /// Where it connects (`host:port` or a socket path; no credentials).
    pub fn server(&self) -> &str {
        &self.server
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The list is only pushed to and popped from: never half-updated.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&self) -> Result<Connection, KvError> {
        let conn = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| {
                // A timeout shows as EAGAIN from a socket read; say what it means.
                let why = if e.is_timeout() {
                    format!("no reply within {:?}", self.timeout)
                } else {
                    e.to_string()
                };
                self.failed(format!("cannot connect: {why}"))
            })?;
        // The library clears its setup timeouts once connected; without
        // ours, a Redis that stops answering would block the hook forever.
        conn.set_read_timeout(Some(self.timeout))
            .and_then(|()| conn.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.failed(format!("cannot set timeouts: {e}")))?;
        Ok(conn)
    }

    /// Runs `op` on an idle connection or a new one. A pooled connection the
    /// server has closed meanwhile (Redis restarted, or its idle `timeout`)
    /// fails before anything ran, so `op` gets one more try on a fresh
    /// connection; a timeout is never retried, since the command may have run.
    fn run<T>(&self, op: impl Fn(&mut Connection) -> RedisResult<T>) -> Result<T, KvError> {
        let pooled = self.idle().pop();
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        match op(&mut conn) {
            Err(e) if reused && e.is_connection_dropped() => {
                // The others most likely went with the same server.
                self.idle().clear();
                let mut conn = self.connect()?;
                let result = op(&mut conn);
                self.finish(conn, result)
            }
            result => self.finish(conn, result),
        }
    }

    /// Puts the connection back if it can still be trusted, and turns the
    /// library's error into ours.
    fn finish<T>(&self, conn: Connection, result: RedisResult<T>) -> Result<T, KvError> {
        // After a timeout or any I/O or protocol failure the stream may hold
        // a late reply that the next command would take for its own, so only
        // a connection that got a whole reply (a value or an error reply from
        // the server) is reused.
        let whole_reply = match &result {
            Ok(_) => true,
            Err(e) => e.code().is_some() && !e.is_io_error(),
        };
        if whole_reply && conn.is_open() {
            let mut idle = self.idle();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result.map_err(|e| self.command_failed(&e))
    }

    fn command_failed(&self, e: &RedisError) -> KvError {
        if e.is_timeout() {
            self.failed(format!("no reply within {:?}", self.timeout))
        } else {
            self.failed(e.to_string())
        }
    }

    fn failed(&self, what: String) -> KvError {
        KvError(format!("redis {}: {what}", self.server))
    }
}

/// Whole milliseconds, rounded up: a TTL shorter than 1 ms still expires
/// (Redis refuses `PX 0`), and rounding never keeps a key for less than asked.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

impl KvStore for RedisKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let key = self.key(key);
        self.run(|conn| redis::cmd("GET").arg(&key).query(conn))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let key = self.key(key);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(millis(ttl));
        }
        self.run(|conn| cmd.query(conn))
    }

    fn incr(&self, key: &[u8], delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        let key = self.key(key);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(ttl) = ttl {
            // Creates the key at 0 with its TTL only if it is missing (or
            // expired); an existing key, and its expiry, are left alone.
            pipe.cmd("SET")
                .arg(&key)
                .arg(0)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .ignore();
        }
        // Refuses a value that is not a decimal integer, and an overflow,
        // leaving the value as it was: as MemoryKv does.
        pipe.cmd("INCRBY").arg(&key).arg(delta);
        let (sum,): (i64,) = self.run(|conn| pipe.query(conn))?;
        Ok(sum)
    }
}

impl fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKv")
            .field("server", &self.server)
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_secs(3)), 3000);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn bad_urls_and_a_zero_timeout_are_refused_without_connecting() {
        let timeout = RedisKv::DEFAULT_TIMEOUT;
        for url in [
            "",
            "127.0.0.1:6379",
            "http://127.0.0.1/",
            "redis://127.0.0.1:notaport/0",
        ] {
            let error = RedisKv::new(url, "p:", timeout).unwrap_err();
            assert!(error.0.starts_with("redis URL"), "{url}: {error}");
        }
        assert!(RedisKv::new(RedisKv::DEFAULT_URL, "p:", Duration::ZERO).is_err());
        // Nothing listens on port 1: only using it would fail.
        let kv = RedisKv::new("redis://user:secret@127.0.0.1:1/2", "p:", timeout).unwrap();
        assert_eq!(kv.server(), "127.0.0.1:1");
        let error = kv.get(b"k").unwrap_err();
        assert!(
            error.0.starts_with("redis 127.0.0.1:1: cannot connect"),
            "{error}"
        );
        assert!(!format!("{error} {kv:?}").contains("secret"));
    }
}
