//! SMTP AUTH on the loop: the credentials go to the password workers, their
//! answer comes back through the inbox, and a failure's reply waits on a
//! timer of the loop, so that no thread sleeps.

use sluice_smtp::server::{Decision, Event};

use super::{EventLoop, conn_mut};
use crate::conn::Waiting as Wait;

impl EventLoop {
    /// Hands the pending AUTH's credentials to the password workers.
    pub(super) fn check_auth(&mut self, slot: usize) {
        self.next_serial += 1;
        let conn = conn_mut(&mut self.conns, slot);
        conn.serial = self.next_serial;
        let Some(Event::Auth {
            login, password, ..
        }) = conn.session.event().cloned()
        else {
            return;
        };
        let Some(jobs) = &self.shared.auth_jobs else {
            let _ = conn
                .session
                .decide(Decision::Reject(crate::auth::unavailable()));
            return;
        };
        conn.waiting = Some(Wait::Auth);
        let job = crate::auth::AuthJob {
            inbox: self.inbox.clone(),
            slot,
            serial: conn.serial,
            login,
            password,
            client: conn.ip,
        };
        // The workers outlive the loops; a send cannot fail while they run.
        let _ = jobs.send(job);
    }

    /// The password workers' answer. A failure's reply waits out the
    /// delay on a timer; the last one allowed also closes the connection.
    pub(super) fn auth_answered(&mut self, slot: usize, outcome: crate::auth::AuthOutcome) {
        use crate::auth::AuthOutcome;
        let Some(auth) = self.shared.auth.clone() else {
            return;
        };
        let conn = conn_mut(&mut self.conns, slot);
        let login = match conn.session.event() {
            Some(Event::Auth { login, .. }) => login.clone(),
            _ => String::new(),
        };
        let mechanism = match conn.session.event() {
            Some(Event::Auth { mechanism, .. }) => mechanism.name(),
            _ => "",
        };
        let counted = match &outcome {
            AuthOutcome::Ok(_) => sluice_metrics::AuthOutcome::Success,
            AuthOutcome::Unavailable(_) => sluice_metrics::AuthOutcome::Error,
            AuthOutcome::Bad => sluice_metrics::AuthOutcome::Failure,
            AuthOutcome::Blocked => sluice_metrics::AuthOutcome::Locked,
        };
        let counted_mechanism = if mechanism == "LOGIN" {
            sluice_metrics::AuthMechanism::Login
        } else {
            sluice_metrics::AuthMechanism::Plain
        };
        sluice_metrics::auth_attempt(counted_mechanism, counted);
        match outcome {
            AuthOutcome::Ok(verified) => {
                tracing::info!(conn = conn.info.id, client = %conn.ip, login = %verified.user, mechanism, "auth ok");
                conn.info.login = Some(verified.user);
                let _ = conn.decide(Decision::Accept);
            }
            AuthOutcome::Unavailable(why) => {
                tracing::warn!(conn = conn.info.id, client = %conn.ip, login = %login, error = %why, "auth unavailable");
                let _ = conn.decide(Decision::Reject(crate::auth::unavailable()));
            }
            AuthOutcome::Bad | AuthOutcome::Blocked => {
                conn.auth_failures += 1;
                let blocked = matches!(outcome, AuthOutcome::Blocked);
                // One line per failure, in a fixed form for fail2ban
                // (deploy/fail2ban/filter.d/sluice-auth.conf).
                tracing::warn!(
                    "auth failed client={} login={:?} mechanism={mechanism} failures={}{}",
                    conn.ip,
                    login,
                    conn.auth_failures,
                    if blocked { " blocked" } else { "" }
                );
                let reply = if blocked {
                    crate::auth::blocked()
                } else {
                    crate::auth::bad_credentials()
                };
                // max_failures are forgiven; the next one ends it.
                let close = conn.auth_failures > auth.max_failures;
                conn.delayed = Some((Decision::Reject(reply), close));
                conn.waiting = Some(Wait::Delay);
                let serial = conn.serial;
                self.timers
                    .push((std::time::Instant::now() + auth.failure_delay, slot, serial));
            }
        }
    }

    /// Replies whose delay is over.
    pub(super) fn fire_timers(&mut self, now: std::time::Instant) {
        let mut due = Vec::new();
        self.timers.retain(|&(at, slot, serial)| {
            let over = at <= now;
            if over {
                due.push((slot, serial));
            }
            !over
        });
        for (slot, serial) in due {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if conn.serial != serial || conn.waiting != Some(Wait::Delay) {
                continue;
            }
            conn.waiting = None;
            if let Some((decision, close)) = conn.delayed.take() {
                let _ = conn.decide(decision);
                if close {
                    let reply = crate::auth::too_many(&self.shared.session.hostname);
                    conn.session.close_with(reply);
                }
            }
            self.service(slot);
        }
    }
}
