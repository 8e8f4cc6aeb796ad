//! Runs: several messages for one next hop on one connection, each sent
//! behind the one before without waiting for its replies.
//!
//! The scheduler gathers the messages that become due together for a
//! destination into one run when the destination's last connection could
//! take it ([`Remote::takes_runs`]: PIPELINING and CHUNKING offered, BDAT
//! on). On the wire that is one `writev` of every transaction (`RSET`,
//! `MAIL`, `RCPT`s, `BDAT <n> LAST` and the body each) and the replies of
//! all of them in a read or two: one round trip and one wake-up of the
//! delivery thread for the run, where each message alone costs its own.
//!
//! Only a run the one-message path would send the same way goes together:
//! every message to the same first address at the same TLS demand, no
//! REQUIRETLS, every body small enough to go with its envelope. Anything
//! else, or a run the connection cuts short, is left to the one-message
//! path ([`Remote::deliver`]), which the outcomes cannot tell apart. A first
//! address that cannot be reached costs the run one connection attempt (one
//! connect timeout, not one per message); each message then goes on to its
//! next addresses alone.

use std::borrow::Cow;
use std::sync::Arc;

use sluice_smtp::Envelope;
use sluice_smtp::client::{Message, PIPELINED_BODY_MAX};

use super::connection::Sent;
use super::tls::Demand;
use super::{Attempt, Progress, Remote, any_final, attempts, is_session_failure, record};
use crate::Outcome;

/// One message of a run: recipients that share `domain`, as
/// [`Remote::deliver`] takes them.
#[derive(Debug)]
pub struct RunItem<'a> {
    pub domain: Cow<'a, str>,
    /// The queued message's own when the job has all of its recipients
    /// ([`Job::envelope`](crate::scheduler::Job::envelope)).
    pub envelope: Arc<Envelope>,
    /// The content (CRLF line ends, not dot-stuffed).
    pub body: &'a [u8],
}

impl Remote {
    /// Whether messages for `destination` (a [`Router::destination_key`](crate::route::Router::destination_key))
    /// are worth gathering into runs: the last connection there could have
    /// taken one. Cheap and never blocks: the scheduler asks for every
    /// message it dispatches.
    pub fn takes_runs(&self, destination: &str) -> bool {
        self.takes_runs
            .read()
            .is_ok_and(|set| set.contains(destination))
    }

    /// Records what the connection that carried mail for `domain` could take.
    pub(super) fn learn(&self, domain: &str, takes: bool) {
        let key = self.router.destination_key(domain);
        if self.takes_runs(&key) == takes {
            return;
        }
        if let Ok(mut set) = self.takes_runs.write() {
            if takes {
                set.insert(key);
            } else {
                set.remove(&key);
            }
        }
    }

    /// Delivers a run over one connection (see the module comment): one
    /// list of outcomes per item, in order, each what [`Remote::deliver`]
    /// would have given it. `None` when the run cannot go together; then
    /// deliver the items one by one.
    pub fn deliver_run(&self, items: &[RunItem<'_>]) -> Option<Vec<Vec<Outcome>>> {
        if items.len() < 2 || !self.config.chunking {
            return None;
        }
        let mut plans = Vec::with_capacity(items.len());
        for item in items {
            if item.body.len() as u64 > PIPELINED_BODY_MAX || item.envelope.recipients.is_empty() {
                return None;
            }
            let mut demand = self.demand(&item.domain, &item.envelope, item.body);
            let hops = self.router.next_hops(&item.domain).ok()?;
            let hops = self
                .apply_mta_sts(&item.domain, hops, &mut demand, item.body)
                .ok()?;
            plans.push((demand, attempts(hops)));
        }
        let (demand, first_hops) = &plans[0];
        let attempt: &Attempt = first_hops.first()?;
        let together = plans.iter().all(|(d, hops)| {
            d == demand && hops.first().map(|a| &a.endpoint) == Some(&attempt.endpoint)
        });
        let key = self.connection_key(attempt, false, demand.level);
        if !together || demand.requiretls || !key.chunking {
            return None;
        }
        // The session takes its messages; they share the queued envelopes.
        let messages = || -> Vec<Message> {
            items
                .iter()
                .map(|item| Message {
                    envelope: Arc::clone(&item.envelope),
                    body_size: item.body.len() as u64,
                })
                .collect()
        };
        let bodies: Vec<&[u8]> = items.iter().map(|item| item.body).collect();
        let mut cached = self.pool.checkout(&key);
        let (connection, run) = loop {
            let reused = cached.is_some();
            let mut connection = match cached.take() {
                Some(connection) => connection,
                None => match self.connect(attempt, &key) {
                    Ok(connection) => connection,
                    // One connect timeout for the run, not one per message.
                    Err(outcome) => return Some(self.unreachable(items, &plans, &outcome)),
                },
            };
            let run = connection.send_run(messages(), &bodies);
            // A cached connection the server had already given up on.
            if reused && run.closed.is_some() && !run.results.iter().any(|r| any_final(r)) {
                tracing::debug!(
                    to = connection.label(),
                    "cached connection failed, reconnecting"
                );
                continue;
            }
            // STARTTLS failed: the one-message path goes on in clear and
            // remembers the host.
            if connection.tls_error().is_some() {
                return None;
            }
            break (connection, run);
        };
        self.learn(&items[0].domain, self.could_take_runs(&connection));
        let mut out = Vec::with_capacity(items.len());
        for ((item, (demand, hops)), results) in items.iter().zip(&plans).zip(run.results) {
            let sent = Sent {
                results,
                closed: run.closed.clone(),
            };
            // Cut off with the connection before any word on it: the
            // one-message path, on a fresh connection.
            if sent.closed.is_some()
                && sent
                    .results
                    .iter()
                    .all(|r| is_session_failure(r.origin, &sent.closed))
            {
                out.push(self.deliver(&item.domain, &item.envelope, item.body));
                continue;
            }
            let n = item.envelope.recipients.len();
            let mut progress = Progress::new(n, false);
            let pending: Vec<usize> = (0..n).collect();
            let last = hops.len().min(super::MAX_ADDRESSES) == 1;
            let next = record(
                attempt,
                &connection,
                &sent,
                *demand,
                &pending,
                last,
                &mut progress.outcomes,
            );
            progress.in_tls.fill(connection.is_tls());
            self.go_on(
                hops,
                1,
                next,
                *demand,
                &item.envelope,
                item.body,
                &mut progress,
            );
            out.push(progress.finish());
        }
        self.release(key, connection, run.closed.is_some());
        Some(out)
    }

    /// The run's first address could not be reached (`outcome` says why):
    /// each message goes on to its next addresses, as the one-message path
    /// would after the same failure, and keeps `outcome` if it has none.
    fn unreachable(
        &self,
        items: &[RunItem<'_>],
        plans: &[(Demand, Vec<Attempt>)],
        outcome: &Outcome,
    ) -> Vec<Vec<Outcome>> {
        items
            .iter()
            .zip(plans)
            .map(|(item, (demand, hops))| {
                let n = item.envelope.recipients.len();
                let mut progress = Progress::new(n, false);
                progress.outcomes.fill(Some(outcome.clone()));
                let pending = (0..n).collect();
                self.go_on(
                    hops,
                    1,
                    pending,
                    *demand,
                    &item.envelope,
                    item.body,
                    &mut progress,
                );
                progress.finish()
            })
            .collect()
    }
}
