//! Counting failed logins in the shared key-value store, per client address
//! and per login, so that several servers sharing Redis share the count:
//! past the limit, AUTH is refused for a while, whatever the password.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_kv::KvStore;

#[derive(Clone)]
pub struct Guard {
    kv: Arc<dyn KvStore>,
    /// Failures within `window` after which AUTH is refused.
    pub limit: i64,
    pub window: Duration,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Guard {
    pub fn new(kv: Arc<dyn KvStore>, limit: i64, window: Duration) -> Guard {
        Guard { kv, limit, window }
    }

    fn keys(ip: IpAddr, login: &str) -> [Vec<u8>; 2] {
        [
            format!("auth-fail:ip:{ip}").into_bytes(),
            format!("auth-fail:login:{}", login.to_ascii_lowercase()).into_bytes(),
        ]
    }

    /// Whether this address or this login is over the limit. A store that
    /// does not answer blocks nobody: logins go on, checked as usual.
    pub fn is_blocked(&self, ip: IpAddr, login: &str) -> bool {
        Guard::keys(ip, login).iter().any(|key| {
            self.kv
                .get(key)
                .ok()
                .flatten()
                .and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok())
                .is_some_and(|n| n >= self.limit)
        })
    }

    /// Counts one failure for the address and the login.
    pub fn failed(&self, ip: IpAddr, login: &str) {
        for key in Guard::keys(ip, login) {
            if let Err(e) = self.kv.incr(&key, 1, Some(self.window)) {
                tracing::warn!(error = %e, "failed logins not counted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_applies_per_address_and_per_login() {
        let kv: Arc<dyn KvStore> = Arc::new(sluice_kv::MemoryKv::new());
        let guard = Guard::new(kv.clone(), 3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(!guard.is_blocked(a, "alice"));
            guard.failed(a, "alice");
        }
        assert!(guard.is_blocked(a, "bob"), "the address");
        assert!(guard.is_blocked(b, "Alice"), "the login, in any case");
        assert!(!guard.is_blocked(b, "bob"));
        // Another server on the same store sees the same count.
        let other = Guard::new(kv, 3, Duration::from_secs(60));
        assert!(other.is_blocked(a, "carol"));
    }
}
