//! Which message a connection sends next, and when.
//!
//! Closed loop (no rate): a connection sends its next message as soon as the
//! previous one is answered, so the offered load is whatever the server
//! absorbs. Open loop (a fixed rate): message `i` is due at `start + i/rate`,
//! whatever happened before. A connection that picks up a message late (all
//! connections were busy because the server is slow) still measures from the
//! due time, so the time the message waited in the generator counts; a
//! closed-loop or "send when free" measurement would quietly leave that
//! queueing out (coordinated omission).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When message `index` is due, relative to the start of an open-loop run.
///
/// Computed from the index rather than by adding intervals, so rounding does
/// not accumulate over a long run.
pub fn due_offset(index: u64, rate_per_sec: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / rate_per_sec)
}

/// A message handed to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// 0, 1, 2, … across all connections.
    pub index: u64,
    /// Open loop: when the message should go out; latency counts from here.
    pub due: Option<Instant>,
}

/// Hands out messages to the connections until the count or the time is up.
#[derive(Debug)]
pub struct Dispenser {
    next: AtomicU64,
    total: u64,
    start: Instant,
    deadline: Option<Instant>,
    rate: Option<f64>,
    stopped: AtomicBool,
}

impl Dispenser {
    /// `total` messages (`u64::MAX` for "until the deadline"), at `rate` per
    /// second if given, none due at or after `deadline`.
    ///
    /// # Panics
    /// If `rate` is not a positive, finite number.
    pub fn new(total: u64, start: Instant, deadline: Option<Instant>, rate: Option<f64>) -> Self {
        if let Some(r) = rate {
            assert!(r.is_finite() && r > 0.0, "rate must be positive, not {r}");
        }
        Dispenser {
            next: AtomicU64::new(0),
            total,
            start,
            deadline,
            rate,
            stopped: AtomicBool::new(false),
        }
    }

    /// The next message, or `None` once all are handed out, the deadline has
    /// passed (closed loop) or the next one would be due after it (open
    /// loop), or [`Dispenser::stop`] was called.
    pub fn claim(&self, now: Instant) -> Option<Ticket> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        if self.rate.is_none() && self.deadline.is_some_and(|d| now >= d) {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        if index >= self.total {
            return None;
        }
        let due = self.rate.map(|r| self.start + due_offset(index, r));
        if let (Some(due), Some(deadline)) = (due, self.deadline)
            && due >= deadline
        {
            return None;
        }
        Some(Ticket { index, due })
    }

    /// No more messages after this (a fatal error, or the user pressed ^C).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    pub fn start(&self) -> Instant {
        self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_index_over_rate() {
        assert_eq!(due_offset(0, 100.0), Duration::ZERO);
        assert_eq!(due_offset(1, 100.0), Duration::from_millis(10));
        assert_eq!(due_offset(250, 1000.0), Duration::from_millis(250));
        assert_eq!(due_offset(3, 2.0), Duration::from_millis(1500));
    }

    #[test]
    fn due_times_do_not_drift_over_long_runs() {
        // 1/3 s cannot be represented exactly; summing intervals would drift.
        let d = due_offset(3_000_000_000, 3.0);
        assert_eq!(d, Duration::from_secs(1_000_000_000));
        let d = due_offset(10_000_001, 7_000.0);
        let exact_ns = 10_000_001u128 * 1_000_000_000 / 7_000;
        assert!((d.as_nanos() as i128 - exact_ns as i128).abs() <= 1);
    }

    #[test]
    fn closed_loop_hands_out_exactly_total_then_none() {
        let now = Instant::now();
        let d = Dispenser::new(3, now, None, None);
        let got: Vec<_> = std::iter::from_fn(|| d.claim(now)).collect();
        assert_eq!(got.iter().map(|t| t.index).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(got.iter().all(|t| t.due.is_none()));
        assert_eq!(d.claim(now), None);
    }

    #[test]
    fn closed_loop_stops_at_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(1);
        let d = Dispenser::new(u64::MAX, start, Some(deadline), None);
        assert!(d.claim(start).is_some());
        assert!(d.claim(deadline - Duration::from_nanos(1)).is_some());
        assert_eq!(d.claim(deadline), None);
    }

    #[test]
    fn open_loop_due_times_follow_the_rate_and_end_before_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(1);
        let d = Dispenser::new(u64::MAX, start, Some(deadline), Some(4.0));
        // Claiming late does not move the due time: it comes from the index.
        let late = start + Duration::from_secs(5);
        let dues: Vec<_> = std::iter::from_fn(|| d.claim(late))
            .map(|t| t.due.unwrap() - start)
            .collect();
        assert_eq!(
            dues,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec(),
            "message 4 would be due at the deadline, so it is not sent"
        );
    }

    #[test]
    fn concurrent_claims_never_share_an_index() {
        let start = Instant::now();
        let d = Dispenser::new(10_000, start, None, None);
        let mut all: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        std::iter::from_fn(|| d.claim(Instant::now()))
                            .map(|t| t.index)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn stop_ends_the_run() {
        let now = Instant::now();
        let d = Dispenser::new(10, now, None, None);
        assert!(d.claim(now).is_some());
        d.stop();
        assert_eq!(d.claim(now), None);
    }
}
