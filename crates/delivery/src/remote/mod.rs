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
//!
//! TLS ([`tls`]): each destination gets its security level (Postfix's
//! `none`, `may`, `encrypt`, `verify`); a REQUIRETLS message asks for
//! `verify` and a next hop that offers REQUIRETLS, and bounces (`5.7.30`)
//! only when no next hop can give that.

mod connection;
mod pool;
mod run;
mod stream;
mod timeouts;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

use sluice_smtp::client::{
    BdatPolicy, ClientConfig, CloseReason, Message, Outcome as ClientOutcome, RecipientResult,
    ReplyOrigin,
};
use sluice_smtp::{Domain, Envelope};

use crate::Outcome;
use crate::mta_sts::MtaSts;
use crate::outcome::{Reason, RemoteMta};
use crate::route::{NextHop, Router};
use connection::{Connection, Endpoint, Sent, TlsSetup};
use pool::{Key, Pool};
pub use run::RunItem;
pub use timeouts::Timeouts;
use tls::{BrokenPeers, Demand, Level, TlsPolicy, tls_shortfall};

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
    /// Bodies go with BDAT (RFC 3030) to next hops that offer CHUNKING: a
    /// small one together with its envelope, one round trip per message
    /// (see [`sluice_smtp::client::PIPELINED_BODY_MAX`]). Off: always DATA.
    pub chunking: bool,
}

/// The client transport; share one between all delivery threads (`Send + Sync`).
#[derive(Debug)]
pub struct Remote {
    config: RemoteConfig,
    helo_name: Domain,
    router: Router,
    pool: Pool,
    /// `None`: no TLS to next hops at all (as `security_level = "none"`).
    tls: Option<TlsPolicy>,
    broken: BrokenPeers,
    mta_sts: Option<MtaSts>,
    /// Next hop (`host:port`, or `host`) → the login there.
    credentials: std::collections::HashMap<String, sluice_smtp::client::Credentials>,
    /// Next hops (keyed as `credentials`) that get DATA although they
    /// offer CHUNKING.
    no_chunking: std::collections::HashSet<String>,
    /// The destinations (as [`Router::destination_key`] names them) whose
    /// last connection could take a run ([`Remote::takes_runs`]).
    takes_runs: std::sync::RwLock<foldhash::HashSet<std::sync::Arc<str>>>,
}

/// One place to try: a host's name for texts, and one of its addresses.
struct Attempt {
    host: String,
    endpoint: Endpoint,
}

impl Attempt {
    /// The next hop as a bounce names it; `None` for an LMTP socket, which
    /// is our own delivery agent rather than another MTA.
    fn remote_mta(&self) -> Option<RemoteMta> {
        match &self.endpoint {
            Endpoint::Tcp(addr) => Some(RemoteMta {
                name: self.host.clone(),
                addr: Some(*addr),
            }),
            Endpoint::Unix(_) => Some(RemoteMta {
                name: self.host.clone(),
                addr: None,
            }),
        }
    }
}

/// The names a configuration may give `attempt`'s next hop, most exact
/// first: `host:port` as a route or the smarthost names it, the address
/// alone with its port (`[192.0.2.1]:587` or `192.0.2.1:587`), then both
/// without the port. `None` for an LMTP socket.
fn hop_names(attempt: &Attempt) -> Option<[String; 4]> {
    let Endpoint::Tcp(addr) = attempt.endpoint else {
        return None;
    };
    let host = attempt.host.to_ascii_lowercase();
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Some([
        format!("{host}:{}", addr.port()),
        format!("{bare}:{}", addr.port()),
        host,
        bare,
    ])
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
            tls: None,
            broken: BrokenPeers::default(),
            mta_sts: None,
            credentials: std::collections::HashMap::new(),
            no_chunking: Default::default(),
            takes_runs: Default::default(),
        }
    }

    /// Sends DATA, never BDAT, to these next hops (named as for
    /// [`with_credentials`](Self::with_credentials)), for one whose CHUNKING
    /// is broken, as Postfix's `smtp_discard_ehlo_keyword_address_maps`
    /// does. No runs go to them either.
    pub fn with_no_chunking(mut self, hops: impl IntoIterator<Item = String>) -> Remote {
        self.no_chunking = hops.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        self
    }

    /// Logs in to these next hops (`host:port` as routes and the smarthost
    /// name them, or `host` for every port): AUTH after EHLO, inside TLS
    /// unless a login says it may go in clear.
    pub fn with_credentials(
        mut self,
        credentials: std::collections::HashMap<String, sluice_smtp::client::Credentials>,
    ) -> Remote {
        self.credentials = credentials
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        self
    }

    fn credentials_for(&self, attempt: &Attempt) -> Option<sluice_smtp::client::Credentials> {
        hop_names(attempt)?
            .iter()
            .find_map(|key| self.credentials.get(key))
            .cloned()
    }

    /// Whether bodies go with BDAT where `attempt`'s next hop offers it.
    fn chunking_to(&self, attempt: &Attempt) -> bool {
        self.config.chunking
            && (self.no_chunking.is_empty()
                || hop_names(attempt)
                    .is_none_or(|names| !names.iter().any(|n| self.no_chunking.contains(n))))
    }

    /// Honours the MTA-STS policies of the domains mail goes to through
    /// their MX records.
    pub fn with_mta_sts(mut self, sts: MtaSts) -> Remote {
        self.mta_sts = Some(sts);
        self
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Delivers one message to recipients that all share `domain`, blocking
    /// on the calling thread, to the domain's next hops in turn. `envelope`
    /// holds exactly the recipients to deliver to; `body` is the content
    /// (CRLF line ends, not dot-stuffed). Returns one outcome per recipient,
    /// in the order of `envelope.recipients`.
    pub fn deliver(&self, domain: &str, envelope: &Envelope, body: &[u8]) -> Vec<Outcome> {
        let mut demand = self.demand(domain, envelope, body);
        let hops = match self.router.next_hops(domain) {
            Ok(hops) => self.apply_mta_sts(domain, hops, &mut demand, body),
            Err(e) => Err(e.outcome()),
        }
        .map(attempts);
        let (outcomes, takes_runs) = self.deliver_to(hops, false, demand, envelope, body);
        if let Some(takes) = takes_runs {
            self.learn(domain, takes);
        }
        outcomes
    }

    /// The same over LMTP (RFC 2033) to a final delivery agent: `target` is
    /// `unix:/path` or `host:port` (what Dovecot's LMTP listens on).
    pub fn deliver_lmtp(&self, target: &str, envelope: &Envelope, body: &[u8]) -> Vec<Outcome> {
        let hops = match target.strip_prefix("unix:") {
            Some(path) => Ok(vec![Attempt {
                host: target.to_owned(),
                endpoint: Endpoint::Unix(PathBuf::from(path)),
            }]),
            None => self
                .router
                .resolve_target(target, None)
                .map(attempts)
                .map_err(|e| e.outcome()),
        };
        // Our own delivery agent, next door: no TLS.
        let demand = Demand {
            level: Level::None,
            requiretls: false,
        };
        self.deliver_to(hops, true, demand, envelope, body).0
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

    /// One message to its next hops in turn; with its outcomes, whether
    /// the first connection that carried it could have taken a run (`None`
    /// when none did).
    fn deliver_to(
        &self,
        hops: Result<Vec<Attempt>, Outcome>,
        lmtp: bool,
        demand: Demand,
        envelope: &Envelope,
        body: &[u8],
    ) -> (Vec<Outcome>, Option<bool>) {
        let n = envelope.recipients.len();
        if n == 0 {
            return (Vec::new(), None);
        }
        let mut progress = Progress::new(n, lmtp);
        let takes_runs = match hops {
            Ok(attempts) => self.go_on(
                &attempts,
                0,
                (0..n).collect(),
                demand,
                envelope,
                body,
                &mut progress,
            ),
            Err(outcome) => {
                progress.outcomes.fill(Some(outcome));
                None
            }
        };
        (progress.finish(), takes_runs)
    }

    /// Tries the recipients in `pending` at `attempts[from..]` in turn, as
    /// far as the address limit goes, until none is left to pass on.
    /// Returns whether the first connection that carried the message could
    /// have taken a run (see [`Remote::takes_runs`]).
    #[allow(clippy::too_many_arguments)]
    fn go_on(
        &self,
        attempts: &[Attempt],
        from: usize,
        mut pending: Vec<usize>,
        demand: Demand,
        envelope: &Envelope,
        body: &[u8],
        progress: &mut Progress,
    ) -> Option<bool> {
        let total = attempts.len().min(MAX_ADDRESSES);
        let mut learned = None;
        for (number, attempt) in attempts.iter().enumerate().take(total).skip(from) {
            if pending.is_empty() {
                break;
            }
            let last = number + 1 == total;
            let (next, takes) =
                self.attempt(attempt, demand, envelope, body, pending, last, progress);
            learned = learned.or(takes);
            pending = next;
        }
        learned
    }

    /// Sends to the recipients in `pending` at one address, records their
    /// outcomes, and returns those that should go on to the next address.
    /// With it, whether the connection could have taken a run.
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        attempt: &Attempt,
        demand: Demand,
        envelope: &Envelope,
        body: &[u8],
        pending: Vec<usize>,
        last: bool,
        progress: &mut Progress,
    ) -> (Vec<usize>, Option<bool>) {
        let lmtp = progress.lmtp;
        let mut key = self.connection_key(attempt, lmtp, demand.level);
        let mut cached = self.pool.checkout(&key);
        loop {
            let reused = cached.is_some();
            let mut connection = match cached.take() {
                Some(connection) => connection,
                None => match self.connect(attempt, &key) {
                    Ok(connection) => connection,
                    Err(outcome) => {
                        for &i in &pending {
                            progress.outcomes[i] = Some(outcome.clone());
                        }
                        return (pending, None);
                    }
                },
            };
            let message = Message {
                envelope: Envelope {
                    reverse_path: envelope.reverse_path.clone(),
                    params: envelope.params.clone(),
                    recipients: pending
                        .iter()
                        .map(|&i| envelope.recipients[i].clone())
                        .collect(),
                }
                .into(),
                body_size: body.len() as u64,
            };
            let sent = connection.send(message, body);
            // A cached connection the server had already given up on: no
            // reply of this transaction decided anything, so try once more
            // on a fresh one before blaming the host.
            if reused && sent.closed.is_some() && !any_final(&sent.results) {
                tracing::debug!(
                    to = connection.label(),
                    "cached connection failed, reconnecting"
                );
                continue;
            }
            // Opportunistic TLS that failed in the handshake: the same host
            // in clear, now and for a while (Postfix and KumoMTA do the same).
            if key.tls == Level::May
                && connection.tls_error().is_some()
                && let Endpoint::Tcp(addr) = attempt.endpoint
            {
                let hold = self
                    .tls
                    .as_ref()
                    .map_or(Duration::from_secs(3600), |t| t.broken_hold);
                self.broken.mark(addr, hold);
                tracing::info!(
                    to = connection.label(),
                    "STARTTLS failed; delivering in clear, and without TLS to this address for {hold:?}"
                );
                key.tls = Level::None;
                continue;
            }
            let next = record(
                attempt,
                &connection,
                &sent,
                demand,
                &pending,
                last,
                &mut progress.outcomes,
            );
            let tls = connection.is_tls();
            for &i in &pending {
                progress.in_tls[i] = tls;
            }
            let takes = self.could_take_runs(&connection);
            self.release(key, connection, sent.closed.is_some());
            return (next, Some(takes));
        }
    }

    /// Opens a connection for `key` (made by [`connection_key`](Self::connection_key)
    /// for `attempt`): its TLS level and whether it sends BDAT.
    fn connect(&self, attempt: &Attempt, key: &Key) -> Result<Connection, Outcome> {
        let (lmtp, level) = (key.lmtp, key.tls);
        let credentials = if lmtp {
            None
        } else {
            self.credentials_for(attempt)
        };
        // A login goes inside TLS: ask for it even where the level would not.
        let level = match &credentials {
            Some(c) if !c.in_clear => level.max(Level::May),
            _ => level,
        };
        let label = match &attempt.endpoint {
            Endpoint::Tcp(addr) if attempt.host == format!("[{}]", addr.ip()) => {
                format!("{}:{}", attempt.host, addr.port())
            }
            Endpoint::Tcp(addr) => format!("{}[{}]:{}", attempt.host, addr.ip(), addr.port()),
            Endpoint::Unix(_) => attempt.host.clone(),
        };
        let setup = match (&self.tls, &attempt.endpoint) {
            (Some(policy), Endpoint::Tcp(addr)) if level != Level::None => Some(TlsSetup {
                config: policy.client.config(level == Level::Verify),
                name: tls::server_name(&attempt.host, *addr),
                verify: level == Level::Verify,
                trust: policy.client.clone(),
            }),
            (None, Endpoint::Tcp(_)) if level > Level::May => {
                return Err(Outcome::local(
                    451,
                    (4, 7, 4),
                    format!("TLS is required to {label}, but no TLS client is configured"),
                ));
            }
            _ => None,
        };
        let config = ClientConfig {
            lmtp,
            credentials,
            bdat: if key.chunking {
                BdatPolicy::WhenOffered
            } else {
                BdatPolicy::WhenRequired
            },
            tls: if setup.is_some() {
                level.tls_use()
            } else {
                sluice_smtp::client::TlsUse::Off
            },
            ..ClientConfig::new(self.helo_name.clone())
        };
        Connection::open(
            &attempt.endpoint,
            label.clone(),
            self.config.timeouts,
            config,
            setup,
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
            Outcome::local(451, (4, 4, 1), format!("{what} {label}"))
        })
    }

    /// Which cached connection suits `attempt` at TLS `level`: opportunistic
    /// TLS to an address whose handshake failed lately goes in clear.
    fn connection_key(&self, attempt: &Attempt, lmtp: bool, level: Level) -> Key {
        let level = match attempt.endpoint {
            Endpoint::Tcp(addr) if level == Level::May && self.broken.is_broken(addr) => {
                Level::None
            }
            _ => level,
        };
        Key {
            lmtp,
            endpoint: attempt.endpoint.clone(),
            tls: level,
            chunking: self.chunking_to(attempt),
        }
    }

    /// Whether messages can follow one another on `connection` without
    /// waiting for replies ([`Connection::send_run`]).
    fn could_take_runs(&self, connection: &Connection) -> bool {
        let caps = connection.capabilities();
        connection.chunks_when_offered() && caps.pipelining && caps.chunking
    }

    /// Back to the cache if another message may follow, else closed.
    fn release(&self, key: Key, connection: Connection, closed: bool) {
        if closed || !connection.is_ready() {
            return;
        }
        if connection.messages() >= self.config.max_messages_per_connection {
            connection.quit();
        } else {
            self.pool.checkin(key, connection);
        }
    }
}

/// Turns the session's results into outcomes, and says which recipients
/// go on to the next address.
fn record(
    attempt: &Attempt,
    connection: &Connection,
    sent: &Sent,
    demand: Demand,
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
        let reason = reason(attempt, connection, result);
        if demand.requiretls
            && !matches!(result.outcome, ClientOutcome::Delivered(_))
            && tls_shortfall(result, &sent.closed)
        {
            // RFC 8689 §4.2.1: this host cannot carry it; the next may.
            // With none left, it bounces.
            if last {
                outcomes[index] = Some(Outcome::Failed(Reason {
                    reply: sluice_smtp::Reply::new(
                        550,
                        Some(sluice_smtp::EnhancedCode::new(5, 7, 30)),
                        format!(
                            "REQUIRETLS support required: no next hop took the message \
                             over verified TLS with REQUIRETLS (last: {})",
                            reason
                        ),
                    ),
                    remote_mta: reason.remote_mta.clone(),
                    stage: reason.stage,
                }));
            } else {
                outcomes[index] = Some(Outcome::Deferred(reason));
                next.push(index);
            }
            continue;
        }
        let (outcome, cut_off) = match &result.outcome {
            ClientOutcome::Delivered(_) => (Outcome::Delivered(reason), false),
            ClientOutcome::Transient(_) => (
                Outcome::Deferred(reason),
                refused || (session_ended && is_session_failure(result.origin, &sent.closed)),
            ),
            ClientOutcome::Permanent(_) => (Outcome::Failed(reason), refused),
        };
        outcomes[index] = Some(outcome);
        if cut_off && !last {
            next.push(index);
        }
    }
    next
}

/// Who said what: the next hop's reply with its name, address and stage;
/// or our own, about this host (a capability it lacks, a timeout), with the
/// host named in the text instead, since the host did not say it.
fn reason(attempt: &Attempt, connection: &Connection, result: &RecipientResult) -> Reason {
    let reply = result.outcome.reply();
    match result.origin {
        ReplyOrigin::Remote => Reason {
            reply: reply.clone(),
            remote_mta: attempt.remote_mta(),
            stage: Some(result.stage),
        },
        ReplyOrigin::Local => Reason {
            reply: sluice_smtp::Reply::new(
                reply.code(),
                reply.enhanced(),
                format!("{} ({})", reply.text(), connection.label()),
            ),
            remote_mta: None,
            stage: Some(result.stage),
        },
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

/// Where one message's recipients stand while its next hops are tried.
struct Progress {
    lmtp: bool,
    /// Per recipient: the outcome so far (the last next hop's word).
    outcomes: Vec<Option<Outcome>>,
    /// Per recipient: whether the session that decided it ran in TLS.
    in_tls: Vec<bool>,
}

impl Progress {
    fn new(recipients: usize, lmtp: bool) -> Progress {
        Progress {
            lmtp,
            outcomes: vec![None; recipients],
            in_tls: vec![false; recipients],
        }
    }

    /// The outcomes, counted in the metrics. Left with no next hop to try:
    /// whatever the last one said stands.
    fn finish(self) -> Vec<Outcome> {
        let transport = if self.lmtp {
            sluice_metrics::Transport::Lmtp
        } else {
            sluice_metrics::Transport::Smtp
        };
        self.outcomes
            .into_iter()
            .zip(self.in_tls)
            .map(|(o, tls)| {
                let outcome = o.unwrap_or_else(|| {
                    Outcome::local(451, (4, 4, 4), "No next hop could be tried")
                });
                crate::count_delivery(transport, &outcome, tls);
                outcome
            })
            .collect()
    }
}

/// Whether any recipient got a final answer (delivered, or refused for good).
fn any_final(results: &[RecipientResult]) -> bool {
    results
        .iter()
        .any(|r| !matches!(r.outcome, ClientOutcome::Transient(_)))
}

/// A transient result caused by the session ending rather than by a reply
/// about this recipient: our own (timeout, lost connection, broken reply) or
/// the server's 421.
fn is_session_failure(origin: ReplyOrigin, closed: &Option<CloseReason>) -> bool {
    origin == ReplyOrigin::Local || matches!(closed, Some(CloseReason::ServiceClosing(_)))
}
