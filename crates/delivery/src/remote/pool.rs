//! Idle connections kept for the next message to the same address.
//!
//! A delivery thread checks a connection out, sends on it, and checks it
//! back in; nothing is shared while a message is in flight. Connections idle
//! for longer than the limit are closed (QUIT) when a checkout or
//! [`Pool::close_idle`] comes across them, always outside the lock, since a
//! QUIT waits for the network.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::connection::{Connection, Endpoint};

/// What a cached connection is good for: the same address, spoken to in the
/// same protocol, with the same demands on TLS (a connection in clear must
/// not carry mail that wants TLS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub lmtp: bool,
    pub endpoint: Endpoint,
    pub tls: super::tls::Level,
    /// BDAT where offered (two names of one address can differ here).
    pub chunking: bool,
}

/// A connection idle for less than this is handed out without first asking
/// the socket whether the server has closed it (a `recv` with `MSG_PEEK`, a
/// system call per message under load). Servers drop idle connections after
/// tens of seconds, not within a second of their last reply; and should one
/// have, the send fails before any reply decides anything and the caller
/// retries on a fresh connection (`Remote::attempt`), so skipping the check
/// costs at most a round trip, never a deferral.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Idle {
    connection: Connection,
    since: Instant,
}

#[derive(Debug)]
pub(super) struct Pool {
    /// Per key, oldest first (check-ins push at the end).
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    idle_close: Duration,
}

impl Pool {
    pub(super) fn new(idle_close: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            idle_close,
        }
    }

    /// The most recently used live connection for `key`, if any.
    pub(super) fn checkout(&self, key: &Key) -> Option<Connection> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut found = None;
        {
            let mut idle = self.lock();
            if let Some(list) = idle.get_mut(key) {
                let stale =
                    list.partition_point(|i| now.duration_since(i.since) >= self.idle_close);
                expired.extend(list.drain(..stale).map(|i| i.connection));
                found = list.pop();
                if list.is_empty() {
                    idle.remove(key);
                }
            }
        }
        for connection in expired {
            connection.quit();
        }
        let Idle {
            mut connection,
            since,
        } = found?;
        let fresh = now.duration_since(since) < RECHECK_AFTER;
        if connection.is_ready() && (fresh || connection.is_alive()) {
            Some(connection)
        } else {
            tracing::debug!(
                to = connection.label(),
                "cached connection closed by the server"
            );
            None
        }
    }

    pub(super) fn checkin(&self, key: Key, connection: Connection) {
        let idle = Idle {
            connection,
            since: Instant::now(),
        };
        self.lock().entry(key).or_default().push(idle);
    }

    /// Closes the connections idle for longer than the limit; returns how many.
    pub(super) fn close_idle(&self) -> usize {
        let now = Instant::now();
        self.close_where(|since| now.duration_since(since) >= self.idle_close)
    }

    /// Closes every idle connection (at shutdown); returns how many.
    pub(super) fn close_all(&self) -> usize {
        self.close_where(|_| true)
    }

    pub(super) fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn close_where(&self, expired: impl Fn(Instant) -> bool) -> usize {
        let mut closing = Vec::new();
        self.lock().retain(|_, list| {
            let stale = list.partition_point(|i| expired(i.since));
            closing.extend(list.drain(..stale).map(|i| i.connection));
            !list.is_empty()
        });
        let n = closing.len();
        for connection in closing {
            connection.quit();
        }
        n
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Idle>>> {
        // The map stays consistent whatever panicked while holding it: every
        // change is a single push, pop or drain.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
