//! The key-value store behind `kv_get`, `kv_set` and `kv_incr`: shared by
//! every plugin, instance and thread (greylisting, rate limits, reputation).
//!
//! The trait is blocking and object-safe so that a networked backend (Redis,
//! for several nodes sharing state) can sit behind it: hooks run on filter
//! threads, never on an event loop, so blocking there is allowed.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why the store could not answer. A hook whose store call fails fails as a
/// whole (by its plugin's `on_error`): a greylisting or rate-limit plugin
/// cannot decide without its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KvError {}

pub trait KvStore: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// `ttl` `None` keeps the value until it is overwritten.
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<(), KvError>;
    /// Adds `delta` to the decimal integer stored at `key` and returns the
    /// sum. A missing (or expired) key counts as 0 and gets `ttl`; an existing
    /// key keeps its expiry, so a window of a rate limit does not slide.
    fn incr(&self, key: &[u8], delta: i64, ttl: Option<Duration>) -> Result<i64, KvError>;
}

const SHARDS: usize = 16;

/// The embedded store: one process's memory, lost on restart.
pub struct MemoryKv {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry>,
    /// Writes since the last sweep of expired entries, and the size the
    /// sweep left: a sweep costs one pass over the shard, so it runs once the
    /// shard could have doubled, which keeps it O(1) per write amortized.
    writes: usize,
    swept_len: usize,
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

impl MemoryKv {
    pub fn new() -> Self {
        MemoryKv {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding the lock cannot leave a half-written entry
        // (every update is one insert), so a poisoned shard is still sound.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Live entries (for tests and metrics).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.map.values().filter(|e| e.live(now)).count()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKv").finish_non_exhaustive()
    }
}

impl Shard {
    fn wrote(&mut self, now: Instant) {
        self.writes += 1;
        if self.writes > self.swept_len.max(64) {
            self.map.retain(|_, e| e.live(now));
            self.writes = 0;
            self.swept_len = self.map.len();
        }
    }
}

impl KvStore for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let now = Instant::now();
        let shard = self.shard(key);
        Ok(shard
            .map
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone()))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        shard.map.insert(
            key.into(),
            Entry {
                value: value.to_vec(),
                expires: ttl.map(|t| now + t),
            },
        );
        shard.wrote(now);
        Ok(())
    }

    fn incr(&self, key: &[u8], delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let (current, expires) = match shard.map.get(key).filter(|e| e.live(now)) {
            Some(e) => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| KvError("value is not an integer".into()))?;
                (n, e.expires)
            }
            None => (0, ttl.map(|t| now + t)),
        };
        let sum = current
            .checked_add(delta)
            .ok_or_else(|| KvError("increment overflows".into()))?;
        shard.map.insert(
            key.into(),
            Entry {
                value: sum.to_string().into_bytes(),
                expires,
            },
        );
        shard.wrote(now);
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn incr_creates_at_zero_and_keeps_the_first_ttl() {
        let kv = MemoryKv::new();
        assert_eq!(
            kv.incr(b"k", 5, Some(Duration::from_millis(80))).unwrap(),
            5
        );
        // A later TTL must not extend the window.
        assert_eq!(kv.incr(b"k", 2, Some(Duration::from_secs(60))).unwrap(), 7);
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"7"[..]));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(kv.get(b"k").unwrap(), None);
        assert_eq!(kv.incr(b"k", 1, None).unwrap(), 1);
    }

    #[test]
    fn incr_refuses_a_non_integer() {
        let kv = MemoryKv::new();
        kv.set(b"k", b"hello", None).unwrap();
        assert!(kv.incr(b"k", 1, None).is_err());
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn concurrent_incr_loses_no_update() {
        let kv = Arc::new(MemoryKv::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        kv.incr(b"counter", 1, None).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(kv.incr(b"counter", 0, None).unwrap(), 4000);
    }

    #[test]
    fn expired_entries_are_swept() {
        let kv = MemoryKv::new();
        for i in 0..500u32 {
            kv.set(&i.to_be_bytes(), b"v", Some(Duration::from_millis(1)))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        for i in 500..2000u32 {
            kv.set(&i.to_be_bytes(), b"v", None).unwrap();
        }
        let stored: usize = kv.shards.iter().map(|s| s.lock().unwrap().map.len()).sum();
        assert!(stored < 2000, "expired entries still stored: {stored}");
        assert_eq!(kv.len(), 1500);
    }
}
