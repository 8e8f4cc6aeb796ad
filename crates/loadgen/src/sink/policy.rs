//! How the sink answers the end of data: accept, or refuse a configured
//! share of messages with a 4xx or a 5xx, to see how an MTA's retries and
//! bounces behave under load.
//!
//! The choice is deterministic and evenly spread: message `k` (the sink's
//! k-th end of data) falls at point `frac(k·φ)` of the unit interval
//! (φ the golden ratio, a Weyl sequence), refused with a 4xx when that
//! point is below the 4xx share and with a 5xx in the next stretch. Any run
//! of messages gets close to the exact shares, with no random runs of
//! refusals and no random number generator on the hot path; and the same
//! run refuses the same messages again.

use std::fmt;

use sluice_smtp::{EnhancedCode, Reply};

/// 2^64 / φ, the step of the Weyl sequence in 64-bit fixed point.
const GOLDEN_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// What to answer to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// 4xx: the MTA should try again later.
    Temporary,
    /// 5xx: the MTA should bounce.
    Permanent,
}

/// The shares of messages to refuse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplyPolicy {
    temporary: f64,
    permanent: f64,
}

/// A share outside 0–1, or shares adding up to more than 1.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError(String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

impl Default for ReplyPolicy {
    fn default() -> Self {
        ReplyPolicy::accept_all()
    }
}

impl ReplyPolicy {
    pub fn accept_all() -> ReplyPolicy {
        ReplyPolicy {
            temporary: 0.0,
            permanent: 0.0,
        }
    }

    /// Refuses `temporary` of all messages with a 4xx and `permanent` with
    /// a 5xx (each a fraction 0–1, together at most 1).
    pub fn new(temporary: f64, permanent: f64) -> Result<ReplyPolicy, PolicyError> {
        for (name, share) in [("4xx", temporary), ("5xx", permanent)] {
            if !(0.0..=1.0).contains(&share) {
                return Err(PolicyError(format!(
                    "the {name} share must be between 0 and 1, not {share}"
                )));
            }
        }
        if temporary + permanent > 1.0 + 1e-9 {
            return Err(PolicyError(format!(
                "the 4xx and 5xx shares add up to {}, more than 1",
                temporary + permanent
            )));
        }
        Ok(ReplyPolicy {
            temporary,
            permanent,
        })
    }

    /// The answer to the sink's `k`-th message (counting from 0).
    pub fn verdict(&self, k: u64) -> Verdict {
        if self.temporary == 0.0 && self.permanent == 0.0 {
            return Verdict::Accept;
        }
        let point = k.wrapping_add(1).wrapping_mul(GOLDEN_STEP) as f64 / 2f64.powi(64);
        if point < self.temporary {
            Verdict::Temporary
        } else if point < self.temporary + self.permanent {
            Verdict::Permanent
        } else {
            Verdict::Accept
        }
    }
}

impl Verdict {
    /// The refusal to send, `None` to accept.
    pub fn refusal(self) -> Option<Reply> {
        match self {
            Verdict::Accept => None,
            Verdict::Temporary => Some(Reply::new(
                451,
                Some(EnhancedCode::new(4, 3, 0)),
                "Temporary failure chosen by the sink's reply policy",
            )),
            Verdict::Permanent => Some(Reply::new(
                554,
                Some(EnhancedCode::new(5, 3, 0)),
                "Permanent failure chosen by the sink's reply policy",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(policy: ReplyPolicy, range: std::ops::Range<u64>) -> [u64; 3] {
        let mut t = [0; 3];
        for k in range {
            t[match policy.verdict(k) {
                Verdict::Accept => 0,
                Verdict::Temporary => 1,
                Verdict::Permanent => 2,
            }] += 1;
        }
        t
    }

    #[test]
    fn accept_all_never_refuses() {
        assert_eq!(tally(ReplyPolicy::accept_all(), 0..10_000), [10_000, 0, 0]);
    }

    #[test]
    fn shares_are_met_closely_over_any_window() {
        let p = ReplyPolicy::new(0.10, 0.05).unwrap();
        let [ok, temp, perm] = tally(p, 0..10_000);
        assert!(temp.abs_diff(1_000) <= 5, "4xx {temp}");
        assert!(perm.abs_diff(500) <= 5, "5xx {perm}");
        assert_eq!(ok + temp + perm, 10_000);
        // Not only from the start: a window in the middle too.
        let [_, temp, perm] = tally(p, 123_457..124_457);
        assert!(temp.abs_diff(100) <= 3, "4xx {temp}");
        assert!(perm.abs_diff(50) <= 3, "5xx {perm}");
    }

    #[test]
    fn refusals_are_spread_not_bunched() {
        let p = ReplyPolicy::new(0.10, 0.0).unwrap();
        // With a 10 % share there are never more than a few refusals in a row.
        let mut run = 0;
        let mut longest = 0;
        for k in 0..100_000 {
            if p.verdict(k) == Verdict::Temporary {
                run += 1;
                longest = longest.max(run);
            } else {
                run = 0;
            }
        }
        assert!(longest <= 1, "longest run of refusals {longest}");
    }

    #[test]
    fn full_shares_refuse_everything() {
        assert_eq!(
            tally(ReplyPolicy::new(1.0, 0.0).unwrap(), 0..1000),
            [0, 1000, 0]
        );
        assert_eq!(
            tally(ReplyPolicy::new(0.0, 1.0).unwrap(), 0..1000),
            [0, 0, 1000]
        );
    }

    #[test]
    fn the_same_message_gets_the_same_answer() {
        let p = ReplyPolicy::new(0.3, 0.3).unwrap();
        let a: Vec<_> = (0..500).map(|k| p.verdict(k)).collect();
        let b: Vec<_> = (0..500).map(|k| p.verdict(k)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_shares_are_refused() {
        assert!(ReplyPolicy::new(-0.1, 0.0).is_err());
        assert!(ReplyPolicy::new(0.0, 1.5).is_err());
        assert!(ReplyPolicy::new(0.6, 0.5).is_err());
        assert!(ReplyPolicy::new(f64::NAN, 0.0).is_err());
        assert!(ReplyPolicy::new(0.5, 0.5).is_ok());
    }

    #[test]
    fn refusals_are_4xx_and_5xx() {
        assert_eq!(Verdict::Accept.refusal(), None);
        assert_eq!(Verdict::Temporary.refusal().unwrap().code(), 451);
        assert_eq!(Verdict::Permanent.refusal().unwrap().code(), 554);
    }
}
