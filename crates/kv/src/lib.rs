//! The key-value store state lives in when it outlives a connection and is
//! shared between threads and servers: plugins' greylisting, rate limits
//! and reputation, and the count of failed logins.
//!
//! [`KvStore`] is blocking and object-safe so that a networked backend can
//! sit behind it; callers run on worker threads, never on an event loop.
//! [`MemoryKv`] is one process's memory; [`RedisKv`] is shared by every
//! server that uses the same Redis and key prefix, and survives restarts.

mod memory;
mod redis;

pub use memory::{KvError, KvStore, MemoryKv};
pub use redis::RedisKv;
