//! The SMTP and LMTP client transport: sockets around the sans-IO
//! [`ClientSession`](sluice_smtp::client::ClientSession).
//!
//! Everything here blocks the calling thread, which is a delivery thread:
//! connect with a timeout, then each wait bounded by the timeout of what is
//! awaited ([`Timeouts`]: RFC 5321 §4.5.3.2's minimums unless configured). The body goes from the caller's slice (the
//! spool's memory map) to the socket with vectored writes and no copy.
//!
//! For each message the next hops are tried in order (RFC 5321 §5.1): a
//! host that cannot be reached, or that refuses the session (a 4xx or 421
//! greeting, a refused EHLO) sends the message on to the next one; a 5xx
//! greeting counts as permanent only from the last. Once a session takes
//! the transaction, its replies are the outcome, recipient by recipient; only
//! recipients cut off by the session ending (a lost connection, a timeout, a
//! 421) go on to the next host.
//!
//! Established connections are cached by address and reused for the next
//! message (no new TCP and EHLO round trips), up to a number of messages
//! each and until idle for too long.

mod connection;
mod message;
mod pool;
mod timeouts;

use std::path::PathBuf;
use std::time::Duration;

use sluice_smtp::Domain;
use sluice_smtp::client::{ClientConfig, CloseReason, Outcome as ClientOutcome, ReplyOrigin};

use crate::Outcome;
use crate::route::{NextHop, Router};
use connection::{Connection, Endpoint, Sent};
use message::Prepared;
use pool::{Key, Pool};
pub use timeouts::Timeouts;

/// At most this many addresses are tried for one message, like Postfix's
/// `smtp_mx_address_limit`: a domain with dozens of unreachable addresses
/// must not hold a delivery thread for dozens of connect timeouts.
const MAX_ADDRESSES: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Our name in EHLO and LHLO: this host's FQDN (RFC 5321 §4.1.1.1), or
    /// an address literal.
    pub helo_name: String,
    /// The waits for the connection, replies and writes.
    pub timeouts: Timeouts,
    /// Cached connections idle this long are closed (e.g. 5 s; servers drop
    /// idle clients themselves after a while).
    pub idle_close: Duration,
    /// Messages per connection before it is closed and a new one opened
    /// (e.g. 100), so one connection cannot grow old forever.
    pub max_messages_per_connection: usize,
}

/// One message to send, as the spool holds it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The reverse-path without angle brackets; "" for the null path `<>`.
    pub reverse_path: &'a str,
    /// The MAIL parameters as the spool stores them (RET, ENVID, AUTH are
    /// passed on; SIZE, BODY and SMTPUTF8 are worked out afresh).
    pub mail_params: &'a str,
    /// Forward-paths (without angle brackets) and their RCPT parameters.
    pub recipients: &'a [(&'a str, &'a str)],
    /// The content with CRLF line ends, not dot-stuffed.
    pub body: &'a [u8],
    /// 0 7bit, 1 8BITMIME, 2 BINARYMIME.
    pub body_type: u8,
    pub smtputf8: bool,
}

/// The client transport; share one between all delivery threads (`Send + Sync`).
#[derive(Debug)]
pub struct Remote {
    config: RemoteConfig,
    helo_name: Domain,
    router: Router,
    pool: Pool,
}

/// One place to try: a host's name for texts, and one of its addresses.
struct Attempt {
    host: String,
    endpoint: Endpoint,
}

impl Remote {
    /// The HELO name is taken as given when it is neither a domain nor an
    /// address literal (the binary checks its configuration).
    pub fn new(config: RemoteConfig, router: Router) -> Remote {
        let helo_name = Domain::parse(&config.helo_name)
            .unwrap_or_else(|| Domain::Name(config.helo_name.clone()));
        Remote {
            pool: Pool::new(config.idle_close),
            config,
            helo_name,
            router,
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Delivers one message to recipients that all share `domain`, blocking
    /// on the calling thread, to the domain's next hops in turn. Returns one
    /// outcome per recipient, in the order of `message.recipients`.
    pub fn deliver(&self, domain: &str, message: &Message<'_>) -> Vec<Outcome> {
        let hops = self.router.next_hops(domain).map(attempts);
        self.deliver_to(hops, false, message)
    }

    /// The same over LMTP (RFC 2033) to a final delivery agent: `target` is
    /// `unix:/path` or `host:port` (what Dovecot's LMTP listens on).
    pub fn deliver_lmtp(&self, target: &str, message: &Message<'_>) -> Vec<Outcome> {
        let hops = match target.strip_prefix("unix:") {
            Some(path) => Ok(vec![Attempt {
                host: target.to_owned(),
                endpoint: Endpoint::Unix(PathBuf::from(path)),
            }]),
            None => self.router.resolve_target(target, None).map(attempts),
        };
        self.deliver_to(hops, true, message)
    }

    /// Closes cached connections that have been idle for longer than
    /// [`RemoteConfig::idle_close`]; returns how many. Checkouts do this
    /// too, for their own address; call this now and then for the rest.
    pub fn close_idle(&self) -> usize {
        self.pool.close_idle()
    }

    /// Closes every cached connection with QUIT (at shutdown).
    pub fn close_all(&self) -> usize {
        self.pool.close_all()
    }

    /// How many connections wait in the cache.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    fn deliver_to(
        &self,
        hops: Result<Vec<Attempt>, Outcome>,
        lmtp: bool,
        message: &Message<'_>,
    ) -> Vec<Outcome> {
        let n = message.recipients.len();
        let prepared = match Prepared::new(message) {
            Ok(prepared) => prepared,
            Err(outcome) => return vec![outcome; n],
        };
        let mut outcomes: Vec<Option<Outcome>> = prepared
            .recipients
            .iter()
            .map(|r| r.as_ref().err().cloned())
            .collect();
        let mut pending: Vec<usize> = (0..n).filter(|&i| outcomes[i].is_none()).collect();
        if pending.is_empty() {
            return outcomes.into_iter().flatten().collect();
        }
        let attempts = match hops {
            Ok(attempts) => attempts,
            Err(outcome) => {
                for &i in &pending {
                    outcomes[i] = Some(outcome.clone());
                }
                return outcomes.into_iter().flatten().collect();
            }
        };
        let total = attempts.len().min(MAX_ADDRESSES);
        for (number, attempt) in attempts.into_iter().take(MAX_ADDRESSES).enumerate() {
            let last = number + 1 == total;
            pending = self.attempt(
                &attempt,
                lmtp,
                &prepared,
                message.body,
                pending,
                last,
                &mut outcomes,
            );
            if pending.is_empty() {
                break;
            }
        }
        // Left with no next hop to try: whatever the last one said stands.
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Outcome::Deferred {
                    reply: "451 4.4.4 No next hop could be tried".to_owned(),
                })
            })
            .collect()
    }

    /// Sends to the recipients in `pending` at one address, records their
    /// outcomes, and returns those that should go on to the next address.
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        attempt: &Attempt,
        lmtp: bool,
        prepared: &Prepared,
        body: &[u8],
        pending: Vec<usize>,
        last: bool,
        outcomes: &mut [Option<Outcome>],
    ) -> Vec<usize> {
        let key = Key {
            lmtp,
            endpoint: attempt.endpoint.clone(),
        };
        let mut cached = self.pool.checkout(&key);
        loop {
            let reused = cached.is_some();
            let mut connection = match cached.take() {
                Some(connection) => connection,
                None => match self.connect(attempt, lmtp) {
                    Ok(connection) => connection,
                    Err(outcome) => {
                        for &i in &pending {
                            outcomes[i] = Some(outcome.clone());
                        }
                        return pending;
                    }
                },
            };
            let sent = connection.send(prepared.envelope(&pending), body);
            // A cached connection the server had already given up on: no
            // reply of this transaction decided anything, so try once more
            // on a fresh one before blaming the host.
            if reused && sent.closed.is_some() && !any_final(&sent) {
                tracing::debug!(
                    to = connection.label(),
                    "cached connection failed, reconnecting"
                );
                continue;
            }
            let next = self.record(&connection, &sent, &pending, last, outcomes);
            self.release(key, connection, &sent);
            return next;
        }
    }

    fn connect(&self, attempt: &Attempt, lmtp: bool) -> Result<Connection, Outcome> {
        let label = match &attempt.endpoint {
            Endpoint::Tcp(addr) if attempt.host == format!("[{}]", addr.ip()) => {
                format!("{}:{}", attempt.host, addr.port())
            }
            Endpoint::Tcp(addr) => format!("{}[{}]:{}", attempt.host, addr.ip(), addr.port()),
            Endpoint::Unix(_) => attempt.host.clone(),
        };
        let config = ClientConfig {
            lmtp,
            ..ClientConfig::new(self.helo_name.clone())
        };
        Connection::open(
            &attempt.endpoint,
            label.clone(),
            self.config.timeouts,
            config,
        )
        .map_err(|e| {
            tracing::debug!(to = %label, error = %e, "connection failed");
            let what = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "Connection refused by".to_owned(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    "Connection timed out to".to_owned()
                }
                _ => format!("Cannot connect ({e}) to"),
            };
            Outcome::Deferred {
                reply: format!("451 4.4.1 {what} {label}"),
            }
        })
    }

    /// Turns the session's results into outcomes, and says which recipients
    /// go on to the next address.
    fn record(
        &self,
        connection: &Connection,
        sent: &Sent,
        pending: &[usize],
        last: bool,
        outcomes: &mut [Option<Outcome>],
    ) -> Vec<usize> {
        // The host refused the session itself, before any transaction: its
        // verdict says nothing about the recipients, so the next host gets
        // them, even after a 5xx, unless there is none.
        let refused = matches!(
            sent.closed,
            Some(CloseReason::GreetingRefused(_) | CloseReason::HelloRefused(_))
        );
        let session_ended = sent.closed.is_some();
        let mut next = Vec::new();
        for result in &sent.results {
            let Some(&index) = pending.get(result.index) else {
                continue;
            };
            let reply = result.outcome.reply();
            let text = match result.origin {
                ReplyOrigin::Remote => {
                    crate::outcome::remote_reply(connection.label(), &reply.to_string())
                }
                ReplyOrigin::Local => format!("{reply} ({})", connection.label()),
            };
            let (outcome, cut_off) = match &result.outcome {
                ClientOutcome::Delivered(_) => (Outcome::Delivered { reply: text }, false),
                ClientOutcome::Transient(_) => (
                    Outcome::Deferred { reply: text },
                    refused || (session_ended && is_session_failure(result.origin, &sent.closed)),
                ),
                ClientOutcome::Permanent(_) => (Outcome::Failed { reply: text }, refused),
            };
            outcomes[index] = Some(outcome);
            if cut_off && !last {
                next.push(index);
            }
        }
        next
    }

    /// Back to the cache if another message may follow, else closed.
    fn release(&self, key: Key, connection: Connection, sent: &Sent) {
        if sent.closed.is_some() || !connection.is_ready() {
            return;
        }
        if connection.messages() >= self.config.max_messages_per_connection {
            connection.quit();
        } else {
            self.pool.checkin(key, connection);
        }
    }
}

/// The next hops flattened into addresses, in order.
fn attempts(hops: Vec<NextHop>) -> Vec<Attempt> {
    hops.into_iter()
        .flat_map(|hop| {
            hop.addrs.into_iter().map(move |addr| Attempt {
                host: hop.host.clone(),
                endpoint: Endpoint::Tcp(addr),
            })
        })
        .collect()
}

/// Whether any recipient got a final answer (delivered, or refused for good).
fn any_final(sent: &Sent) -> bool {
    sent.results
        .iter()
        .any(|r| !matches!(r.outcome, ClientOutcome::Transient(_)))
}

/// A transient result caused by the session ending rather than by a reply
/// about this recipient: our own (timeout, lost connection, broken reply) or
/// the server's 421.
fn is_session_failure(origin: ReplyOrigin, closed: &Option<CloseReason>) -> bool {
    origin == ReplyOrigin::Local || matches!(closed, Some(CloseReason::ServiceClosing(_)))
}
