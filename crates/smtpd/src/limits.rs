//! Connection limits, overall and per client (address, or local user).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use sluice_smtp::{EnhancedCode, Reply};

/// Whom a connection's count goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    Ip(IpAddr),
    /// A local user on the submission socket: a runaway cron job counts
    /// against itself, not against everyone connecting from 127.0.0.1.
    Uid(u32),
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Ip(ip) => ip.fmt(f),
            Client::Uid(uid) => write!(f, "user id {uid}"),
        }
    }
}

/// Counts open connections. Taken only on accept and close, so a mutex is
/// cheaper than anything cleverer.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<Client, usize>,
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        ConnectionLimits {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Counts a new connection from `ip`, or says why it may not stay.
    pub(crate) fn try_admit(&self, ip: Client) -> Result<(), Reply> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return Err(Reply::new(
                421,
                Some(EnhancedCode::new(4, 7, 0)),
                "Too many connections, try again later",
            ));
        }
        let mine = counts.per_ip.entry(ip).or_insert(0);
        if *mine >= self.max_per_ip {
            return Err(Reply::new(
                421,
                Some(EnhancedCode::new(4, 7, 0)),
                format!("Too many connections from {ip}, try again later"),
            ));
        }
        *mine += 1;
        counts.total += 1;
        Ok(())
    }

    pub(crate) fn release(&self, ip: Client) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_per_ip_and_overall_and_free_on_release() {
        let limits = ConnectionLimits::new(3, 2);
        let a = Client::Ip("192.0.2.1".parse().unwrap());
        let b = Client::Ip("192.0.2.2".parse().unwrap());
        assert!(limits.try_admit(a).is_ok());
        assert!(limits.try_admit(a).is_ok());
        let refused = limits.try_admit(a).unwrap_err();
        assert_eq!(
            (refused.code(), refused.enhanced()),
            (421, Some(EnhancedCode::new(4, 7, 0)))
        );
        assert!(limits.try_admit(b).is_ok());
        assert!(
            limits.try_admit(b).is_err(),
            "the overall limit of 3 is reached"
        );
        limits.release(a);
        assert!(
            limits.try_admit(b).is_ok(),
            "a released slot is usable again"
        );
    }

    #[test]
    fn local_users_count_apart_from_loopback_clients() {
        let limits = ConnectionLimits::new(10, 1);
        let loopback = Client::Ip("127.0.0.1".parse().unwrap());
        assert!(limits.try_admit(loopback).is_ok());
        assert!(limits.try_admit(Client::Uid(1000)).is_ok());
        assert!(limits.try_admit(Client::Uid(1001)).is_ok());
        let refused = limits.try_admit(Client::Uid(1000)).unwrap_err();
        assert!(refused.to_string().contains("user id 1000"), "{refused}");
    }
}
