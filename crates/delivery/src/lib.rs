//! Sluice's delivery side: from the spool to mailboxes and next hops.
//!
//! - [`local`]: Maildir delivery for the local domains.
//! - [`dispatch`]: the transport the delivery threads run: local, LMTP or
//!   remote by destination, and aliases that point elsewhere queued again.
//! - [`dsn`]: RFC 3464 delivery status notifications (bounces).
//! - [`route`]: the next hop for a domain: configured routes, the smarthost,
//!   or MX records through DNS.
//! - [`remote`]: the SMTP and LMTP client transport over sockets, with
//!   connection reuse and TLS.
//! - [`mta_sts`]: MTA-STS policies (RFC 8461), fetched and cached.
//! - [`scheduler`]: due times, retries, per-destination concurrency, and the
//!   pool of delivery threads.

pub mod dispatch;
pub mod dsn;
pub mod local;
pub mod mta_sts;
pub mod outcome;
pub mod remote;
pub mod route;
pub mod scheduler;

pub use outcome::Outcome;

/// Counts one recipient's outcome in `sluice_deliveries_total`.
pub(crate) fn count_delivery(transport: sluice_metrics::Transport, outcome: &Outcome, tls: bool) {
    let result = match outcome {
        Outcome::Delivered(_) => sluice_metrics::DeliveryResult::Delivered,
        Outcome::Deferred(_) => sluice_metrics::DeliveryResult::Deferred,
        Outcome::Failed(_) => sluice_metrics::DeliveryResult::Failed,
    };
    sluice_metrics::delivery(transport, result, tls);
}
