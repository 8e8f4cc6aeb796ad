//! One thread's counters, and the sum of all of them.
//!
//! Each thread that records owns a [`Shard`]: only that thread writes to
//! it, so a count is an uncontended atomic add on a cache line no other
//! core writes (no lock, no shared write on the hot path). A scrape reads
//! every shard and adds them up; a thread that ends folds its shard into
//! the registry's `retired` one first, so counters never go back.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::labels::*;

/// Upper bounds of the latency buckets, in nanoseconds: 10 µs to 60 s,
/// which covers a filter hook (microseconds) as well as a delivery
/// attempt to a slow next hop (tens of seconds).
pub(crate) const BOUNDS_NS: [u64; 21] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

const fn zeros<const N: usize>() -> [AtomicU64; N] {
    [const { AtomicU64::new(0) }; N]
}

/// A fixed-bucket histogram: one count per bucket (not cumulative; the
/// scrape accumulates) and the sum in nanoseconds.
#[derive(Debug)]
pub(crate) struct Histogram {
    pub(crate) buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    pub(crate) sum_ns: AtomicU64,
}

impl Histogram {
    pub(crate) const fn new() -> Histogram {
        Histogram {
            buckets: zeros(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn add(&self, other: &Histogram) {
        add_all(&self.buckets, &other.buckets);
        self.sum_ns.fetch_add(other.sum_ns.load(Relaxed), Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }
}

fn add_all(into: &[AtomicU64], from: &[AtomicU64]) {
    for (a, b) in into.iter().zip(from) {
        let v = b.load(Relaxed);
        if v != 0 {
            a.fetch_add(v, Relaxed);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) connections: [[AtomicU64; ConnResult::COUNT]; MAX_LISTENERS],
    pub(crate) opened: [AtomicU64; MAX_LISTENERS],
    pub(crate) closed: [AtomicU64; MAX_LISTENERS],
    pub(crate) rejected: [[AtomicU64; CODES]; STAGE_LABELS],
    pub(crate) received: [AtomicU64; MAX_LISTENERS],
    pub(crate) received_bytes: [AtomicU64; MAX_LISTENERS],
    pub(crate) deliveries: [[[AtomicU64; 2]; DeliveryResult::COUNT]; Transport::COUNT],
    pub(crate) tls_handshakes: [[AtomicU64; 2]; TlsSide::COUNT],
    pub(crate) auth: [[AtomicU64; AuthOutcome::COUNT]; AuthMechanism::COUNT],
    pub(crate) dns: [[AtomicU64; DnsResult::COUNT]; DnsKind::COUNT],
    pub(crate) spool_commits: AtomicU64,
    pub(crate) spool_committed: AtomicU64,
    /// Large messages whose bytes went through a spill file, and those bytes.
    pub(crate) spilled: AtomicU64,
    pub(crate) spilled_bytes: AtomicU64,
    pub(crate) accept: Histogram,
    pub(crate) fsync: Histogram,
    pub(crate) attempt: [Histogram; Transport::COUNT],
    pub(crate) filter: [[Histogram; STAGE_LABELS]; MAX_PLUGINS],
    /// Filter stages by where they ran (see `StageRan`).
    pub(crate) filter_stages: [AtomicU64; StageRan::COUNT],
}

impl Shard {
    pub(crate) const fn new() -> Shard {
        Shard {
            connections: [const { zeros() }; MAX_LISTENERS],
            opened: zeros(),
            closed: zeros(),
            rejected: [const { zeros() }; STAGE_LABELS],
            received: zeros(),
            received_bytes: zeros(),
            deliveries: [const { [const { zeros() }; DeliveryResult::COUNT] }; Transport::COUNT],
            tls_handshakes: [const { zeros() }; TlsSide::COUNT],
            auth: [const { zeros() }; AuthMechanism::COUNT],
            dns: [const { zeros() }; DnsKind::COUNT],
            spool_commits: AtomicU64::new(0),
            spool_committed: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            spilled_bytes: AtomicU64::new(0),
            accept: Histogram::new(),
            fsync: Histogram::new(),
            attempt: [const { Histogram::new() }; Transport::COUNT],
            filter: [const { [const { Histogram::new() }; STAGE_LABELS] }; MAX_PLUGINS],
            filter_stages: zeros(),
        }
    }

    /// Adds every count of `other` to this one.
    pub(crate) fn add(&self, other: &Shard) {
        for (a, b) in self.connections.iter().zip(&other.connections) {
            add_all(a, b);
        }
        add_all(&self.opened, &other.opened);
        add_all(&self.closed, &other.closed);
        for (a, b) in self.rejected.iter().zip(&other.rejected) {
            add_all(a, b);
        }
        add_all(&self.received, &other.received);
        add_all(&self.received_bytes, &other.received_bytes);
        for (a, b) in self.deliveries.iter().zip(&other.deliveries) {
            for (a, b) in a.iter().zip(b) {
                add_all(a, b);
            }
        }
        for (a, b) in self.tls_handshakes.iter().zip(&other.tls_handshakes) {
            add_all(a, b);
        }
        for (a, b) in self.auth.iter().zip(&other.auth) {
            add_all(a, b);
        }
        for (a, b) in self.dns.iter().zip(&other.dns) {
            add_all(a, b);
        }
        add_all(&self.filter_stages, &other.filter_stages);
        add_all(
            std::slice::from_ref(&self.spool_commits),
            std::slice::from_ref(&other.spool_commits),
        );
        add_all(
            std::slice::from_ref(&self.spilled),
            std::slice::from_ref(&other.spilled),
        );
        add_all(
            std::slice::from_ref(&self.spilled_bytes),
            std::slice::from_ref(&other.spilled_bytes),
        );
        add_all(
            std::slice::from_ref(&self.spool_committed),
            std::slice::from_ref(&other.spool_committed),
        );
        self.accept.add(&other.accept);
        self.fsync.add(&other.fsync);
        for (a, b) in self.attempt.iter().zip(&other.attempt) {
            a.add(b);
        }
        for (a, b) in self.filter.iter().zip(&other.filter) {
            for (a, b) in a.iter().zip(b) {
                a.add(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(10)); // on the bound: le="1e-05"
        h.observe(Duration::from_micros(11));
        h.observe(Duration::from_secs(3600)); // past the last bound: +Inf
        assert_eq!(h.buckets[0].load(Relaxed), 1);
        assert_eq!(h.buckets[1].load(Relaxed), 1);
        assert_eq!(h.buckets[BOUNDS_NS.len()].load(Relaxed), 1);
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_ns.load(Relaxed), 21_000 + 3_600_000_000_000);
    }

    #[test]
    fn adding_shards_adds_every_series() {
        let a = Shard::new();
        let b = Shard::new();
        b.rejected[2][150].fetch_add(3, Relaxed);
        b.deliveries[2][1][1].fetch_add(2, Relaxed);
        b.filter[7][8].observe(Duration::from_millis(1));
        a.add(&b);
        a.add(&b);
        assert_eq!(a.rejected[2][150].load(Relaxed), 6);
        assert_eq!(a.deliveries[2][1][1].load(Relaxed), 4);
        assert_eq!(a.filter[7][8].count(), 2);
        assert_eq!(a.rejected[2][149].load(Relaxed), 0);
    }
}
