//! From one attempt's outcome to the recipient's next state: the retry
//! schedule and the queue lifetime.

use std::time::Duration;

use sluice_smtp::{EnhancedCode, Reply};
use sluice_spool::{Reason, RecipientState};

use crate::Outcome;

/// Why recipients bounced by `sluice queue bounce` failed.
pub(super) fn admin_bounce_reason() -> Reason {
    Reason::local(Reply::new(
        550,
        Some(EnhancedCode::new(5, 0, 0)),
        "message bounced by the administrator",
    ))
}

/// What the scheduler needs to know to judge one outcome.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy<'a> {
    pub(super) retry_schedule: &'a [Duration],
    pub(super) max_queue_lifetime: Duration,
}

impl Policy<'_> {
    /// The delay after `attempts` temporary failures so far (0 = the first
    /// failure): the schedule's entry, or its last one past the end.
    pub(super) fn retry_delay(&self, attempts: u32) -> Duration {
        let last = self.retry_schedule.len().saturating_sub(1);
        self.retry_schedule
            .get((attempts as usize).min(last))
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }

    /// The state that follows `outcome` for a recipient that has failed
    /// temporarily `attempts` times so far, of a message that arrived at
    /// `arrival_ms`. `admin_bounce`: the
    /// operator has bounced the message, so a temporary failure is final.
    pub(super) fn next_state(
        &self,
        outcome: &Outcome,
        attempts: u32,
        arrival_ms: u64,
        now_ms: u64,
        admin_bounce: bool,
    ) -> RecipientState {
        match outcome {
            Outcome::Delivered(_) => RecipientState::Delivered,
            Outcome::Failed(reason) => RecipientState::Failed(reason.clone()),
            Outcome::Deferred(_) if admin_bounce => RecipientState::Failed(admin_bounce_reason()),
            Outcome::Deferred(reason) => {
                let expires = arrival_ms.saturating_add(millis(self.max_queue_lifetime));
                if now_ms >= expires {
                    return RecipientState::Failed(expired(self.max_queue_lifetime, reason));
                }
                RecipientState::Deferred {
                    until_unix_ms: now_ms.saturating_add(millis(self.retry_delay(attempts))),
                    attempts: attempts.saturating_add(1),
                    last: reason.clone(),
                }
            }
        }
    }
}

/// RFC 3463 X.4.7 "delivery time expired". The class stays 4 (as Postfix
/// does): every attempt failed temporarily, and the reply a bounce quotes
/// should say so; the last reply explains what kept failing, and the host
/// that gave it stays named.
fn expired(lifetime: Duration, last: &Reason) -> Reason {
    Reason {
        reply: Reply::new(
            451,
            Some(EnhancedCode::new(4, 4, 7)),
            format!(
                "message expired after {}; last error: {}",
                human(lifetime),
                last.reply
            ),
        ),
        remote_mta: last.remote_mta.clone(),
        stage: last.stage,
    }
}

/// `5 days`, `1 day`, `6 hours`, `90 seconds`, `200 ms`: the largest unit
/// that divides the duration evenly, so the text never rounds.
pub(super) fn human(d: Duration) -> String {
    let units = [
        (86_400_000, "day"),
        (3_600_000, "hour"),
        (60_000, "minute"),
        (1000, "second"),
    ];
    let ms = d.as_millis();
    for (unit, name) in units {
        if ms >= unit && ms.is_multiple_of(unit) {
            let n = ms / unit;
            return format!("{n} {name}{}", if n == 1 { "" } else { "s" });
        }
    }
    format!("{ms} ms")
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn policy(schedule: &[Duration]) -> Policy<'_> {
        Policy {
            retry_schedule: schedule,
            max_queue_lifetime: Duration::from_secs(5 * 86_400),
        }
    }

    fn deferred() -> Outcome {
        Outcome::local(451, (4, 4, 1), "refused")
    }

    fn text(state: &RecipientState) -> String {
        state
            .reason()
            .map(|r| r.reply.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn deferral_walks_the_schedule_then_repeats_its_last_interval() {
        let schedule = [MIN, 5 * MIN, 15 * MIN];
        let p = policy(&schedule);
        let arrival = 1_000_000;
        let mut state = RecipientState::Pending;
        let mut now = arrival;
        let mut delays = Vec::new();
        for _ in 0..5 {
            let so_far = match state {
                RecipientState::Deferred { attempts, .. } => attempts,
                _ => 0,
            };
            state = p.next_state(&deferred(), so_far, arrival, now, false);
            let RecipientState::Deferred {
                until_unix_ms,
                attempts,
                ref last,
            } = state
            else {
                panic!("expected deferred, got {state:?}");
            };
            assert_eq!(last.reply.to_string(), "451 4.4.1 refused");
            assert_eq!(attempts as usize, delays.len() + 1);
            delays.push(until_unix_ms - now);
            now = until_unix_ms;
        }
        assert_eq!(
            delays,
            [1, 5, 15, 15, 15].map(|m| m * 60_000),
            "delay after each failure"
        );
    }

    #[test]
    fn final_outcomes_map_directly() {
        let p = policy(&[MIN]);
        let prev = 3;
        assert_eq!(
            p.next_state(&Outcome::local(250, (2, 0, 0), "ok"), prev, 0, 10, false),
            RecipientState::Delivered
        );
        assert_eq!(
            p.next_state(
                &Outcome::local(550, (5, 1, 1), "no such user"),
                prev,
                0,
                10,
                false
            ),
            RecipientState::Failed(
                Outcome::local(550, (5, 1, 1), "no such user")
                    .reason()
                    .clone()
            )
        );
    }

    #[test]
    fn deferral_past_the_lifetime_fails_with_the_last_error() {
        let schedule = [MIN];
        let p = policy(&schedule);
        let arrival = 1_000_000;
        let lifetime = 5 * 86_400_000;
        let before = p.next_state(&deferred(), 0, arrival, arrival + lifetime - 1, false);
        assert!(
            matches!(before, RecipientState::Deferred { .. }),
            "{before:?}"
        );
        let after = p.next_state(&deferred(), 0, arrival, arrival + lifetime, false);
        assert!(matches!(after, RecipientState::Failed(_)), "{after:?}");
        assert_eq!(
            text(&after),
            "451 4.4.7 message expired after 5 days; last error: 451 4.4.1 refused"
        );
    }

    #[test]
    fn an_administrator_bounce_turns_deferral_into_failure_but_not_delivery() {
        let p = policy(&[MIN]);
        let s = p.next_state(&deferred(), 0, 0, 1, true);
        assert_eq!(s, RecipientState::Failed(admin_bounce_reason()));
        assert_eq!(text(&s), "550 5.0.0 message bounced by the administrator");
        let d = Outcome::local(250, (2, 0, 0), "ok");
        assert_eq!(p.next_state(&d, 0, 0, 1, true), RecipientState::Delivered);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_secs(5 * 86_400)), "5 days");
        assert_eq!(human(Duration::from_secs(86_400)), "1 day");
        assert_eq!(human(Duration::from_secs(36 * 3600)), "36 hours");
        assert_eq!(human(Duration::from_secs(90)), "90 seconds");
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
    }
}
