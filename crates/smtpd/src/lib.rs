//! Sluice's SMTP front end.
//!
//! A few `mio` event loops (one per core by default) accept connections and
//! run one [`ServerSession`](sluice_smtp::server::ServerSession) per client.
//! No call on an event loop blocks: filters and the spool answer through a
//! channel and a `mio::Waker`, so one slow filter, DNS answer or disk flush
//! never delays another client's replies.
//!
//! The `250` after DATA is sent only when the spool reports the message
//! durable (its group commit's fdatasync has returned).
//!
//! TLS (STARTTLS, or implicit on `smtps` listeners) is a byte pump beside
//! the socket (`transport.rs`); the handshake runs on the event loop,
//! record by record as the socket allows, like everything else.

pub mod auth;
mod conn;
mod event_loop;
mod limits;
pub mod local;
pub mod msgauth;
pub mod policy;
mod proxy;
mod socket;
mod transport;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_filter::Filter;
use sluice_smtp::server::ServerConfig;
use sluice_spool::SpoolHandle;
use sluice_tls::ServerTls;

pub use policy::RecipientPolicy;
pub use proxy::{ProxyProtocol, UntrustedPeer};

use event_loop::{EventLoop, Inbox, Inlet};
use limits::ConnectionLimits;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerMode {
    /// Relay and final delivery (port 25): STARTTLS offered when a
    /// certificate is configured, never required.
    Smtp,
    /// Message submission (RFC 6409, port 587): STARTTLS offered, and
    /// required before MAIL (and AUTH).
    Submission,
    /// Implicit TLS (RFC 8314, port 465): the handshake first, then the
    /// greeting.
    Smtps,
    /// The local submission socket `sluice sendmail` talks to: the kernel
    /// vouches for the user (`SO_PEERCRED`), so there is no TLS and no AUTH.
    Local,
}

impl ListenerMode {
    pub fn name(self) -> &'static str {
        match self {
            ListenerMode::Smtp => "smtp",
            ListenerMode::Submission => "submission",
            ListenerMode::Smtps => "smtps",
            ListenerMode::Local => "local",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One address to listen on, and what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub mode: ListenerMode,
    /// Clients come through a proxy that sends a PROXY protocol header.
    pub proxy: Option<ProxyProtocol>,
}

impl Listener {
    pub fn smtp(addr: SocketAddr) -> Listener {
        Listener {
            addr,
            mode: ListenerMode::Smtp,
            proxy: None,
        }
    }
}

/// Everything the front end needs to run.
#[derive(Debug, Clone)]
pub struct SmtpdConfig {
    /// Hostname, line and message limits, extensions. STARTTLS, REQUIRETLS
    /// and submission's TLS requirement are set per listener from `tls`.
    pub session: ServerConfig,
    pub listen: Vec<Listener>,
    /// The certificates; `None`: no TLS (and no `submission` or `smtps`
    /// listener).
    pub tls: Option<Arc<ServerTls>>,
    /// How long a client may take over its TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// SMTP AUTH on `submission` and `smtps` listeners (which then take
    /// mail only from clients that logged in); `None`: no AUTH anywhere.
    pub auth: Option<auth::AuthSetup>,
    /// The local submission socket for `sendmail`; `None`: none.
    pub local: Option<local::LocalSubmit>,
    /// SPF, DKIM, ARC and DMARC checks, and DKIM signing.
    pub msgauth: msgauth::MsgAuthSetup,
    /// 0 means one per available core.
    pub event_loops: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// RFC 5321 §4.5.3.2.7: the server timeout, 5 minutes recommended.
    pub command_timeout: Duration,
    /// RFC 5321 §4.5.3.2.6: waiting for a block of DATA, 3 minutes recommended.
    pub data_timeout: Duration,
    /// How long transactions in flight may run on after a shutdown request.
    pub shutdown_grace: Duration,
    pub policy: RecipientPolicy,
}

impl SmtpdConfig {
    pub fn new(session: ServerConfig, listen: Vec<SocketAddr>, policy: RecipientPolicy) -> Self {
        SmtpdConfig {
            session,
            listen: listen.into_iter().map(Listener::smtp).collect(),
            tls: None,
            tls_handshake_timeout: Duration::from_secs(30),
            auth: None,
            local: None,
            msgauth: msgauth::MsgAuthSetup::default(),
            event_loops: 0,
            max_connections: 10_000,
            max_connections_per_ip: 50,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            shutdown_grace: Duration::from_secs(10),
            policy,
        }
    }
}

/// State shared by all event loops.
pub(crate) struct Shared {
    /// The session configuration per [`ListenerMode`], in its order.
    sessions: [Arc<ServerConfig>; 4],
    /// The base configuration (hostname, limits).
    pub(crate) session: Arc<ServerConfig>,
    /// Per listener, in the order of `SmtpdConfig::listen` (the local
    /// submission socket last).
    pub(crate) listener_modes: Vec<ListenerMode>,
    /// Per listener, like `listener_modes`.
    pub(crate) listener_proxy: Vec<Option<ProxyProtocol>>,
    pub(crate) tls: Option<Arc<ServerTls>>,
    pub(crate) tls_handshake_timeout: Duration,
    pub(crate) auth: Option<auth::AuthSetup>,
    pub(crate) local: Option<local::LocalSubmit>,
    pub(crate) msgauth: msgauth::MsgAuthSetup,
    /// Where checks and signatures go to be done; `None` when there are
    /// none to do.
    pub(crate) msgauth_jobs: Option<crossbeam_channel::Sender<msgauth::Job>>,
    /// Where passwords go to be checked.
    pub(crate) auth_jobs: Option<crossbeam_channel::Sender<auth::AuthJob>>,
    pub(crate) policy: RecipientPolicy,
    pub(crate) spool: SpoolHandle,
    pub(crate) filter: Arc<dyn Filter>,
    pub(crate) limits: ConnectionLimits,
    pub(crate) command_timeout: Duration,
    pub(crate) data_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    /// Read and written with `SeqCst`: see [`LoopShare::connections`].
    pub(crate) shutting_down: AtomicBool,
    connection_ids: AtomicU64,
    /// One per event loop, in the order of their threads.
    pub(crate) loops: Vec<LoopShare>,
}

/// What other threads see of one event loop.
#[derive(Debug)]
pub(crate) struct LoopShare {
    pub(crate) inbox: Arc<Inbox>,
    /// Connections this loop serves, plus those handed to it and not yet
    /// taken up. The loop that accepts counts a connection here before it
    /// hands it over, and the owner uncounts it when it closes; so a loop
    /// may exit at shutdown once this is zero without dropping a hand-over
    /// in flight. That takes `SeqCst` here and on `shutting_down`: a hand-over
    /// counts first and checks for shutdown second, the exiting loop sees
    /// shutdown first and checks the count second, so at least one of them
    /// sees the other.
    pub(crate) connections: AtomicUsize,
}

impl Shared {
    pub(crate) fn next_connection_id(&self) -> u64 {
        self.connection_ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn session_config(&self, mode: ListenerMode) -> Arc<ServerConfig> {
        self.sessions[mode.index()].clone()
    }
}

/// The session configuration a listener in `mode` serves with.
fn session_for(base: &ServerConfig, mode: ListenerMode, tls: bool, auth: bool) -> ServerConfig {
    let mut session = base.clone();
    if mode == ListenerMode::Local {
        // Nothing crosses a network: TLS would protect nothing, and the
        // user is already known.
        session.extensions.starttls = false;
        session.extensions.requiretls = tls;
        return session;
    }
    session.extensions.starttls = tls && mode != ListenerMode::Smtps;
    session.extensions.requiretls = tls;
    session.tls_required = mode == ListenerMode::Submission;
    // Submission listeners are for users who log in (RFC 6409 §4.3); port
    // 25 takes mail from other MTAs, who never do.
    let submission = matches!(mode, ListenerMode::Submission | ListenerMode::Smtps);
    if auth && submission {
        session.extensions.auth = vec!["PLAIN".into(), "LOGIN".into()];
        session.auth_required = true;
    }
    session
}

/// A running front end.
#[derive(Debug)]
pub struct Smtpd {
    local_addrs: Vec<SocketAddr>,
    loops: Vec<JoinHandle<()>>,
    stopper: Stopper,
}

/// Asks a running front end to shut down; cheap to clone, usable from a
/// signal-handling thread.
#[derive(Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper")
            .field("loops", &self.shared.loops.len())
            .finish()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("hostname", &self.session.hostname)
            .finish()
    }
}

impl Stopper {
    /// Whether the front end still accepts mail (it has not been asked to
    /// stop): what a health check asks.
    pub fn is_accepting(&self) -> bool {
        !self.shared.shutting_down.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets transactions in flight finish (within the grace
    /// period), says `421` to everyone else, then lets the loops exit.
    pub fn stop(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for share in &self.shared.loops {
            share.inbox.wake();
        }
    }
}

impl Smtpd {
    /// Binds the listeners and starts the event loops. Accepted messages go
    /// to `spool`, which tells the delivery side of each one itself.
    pub fn start(
        config: SmtpdConfig,
        spool: SpoolHandle,
        filter: Arc<dyn Filter>,
    ) -> io::Result<Smtpd> {
        if config.tls.is_none()
            && let Some(l) = config.listen.iter().find(|l| l.mode != ListenerMode::Smtp)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "listener {} in mode {} needs a TLS certificate",
                    l.addr,
                    l.mode.name()
                ),
            ));
        }
        let tcp = config
            .listen
            .iter()
            .map(|l| bind(l.addr))
            .collect::<io::Result<Vec<_>>>()?;
        let local_addrs = tcp
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let mut listeners: Vec<socket::Bound> = tcp.into_iter().map(socket::Bound::Tcp).collect();
        let mut listener_modes: Vec<ListenerMode> = config.listen.iter().map(|l| l.mode).collect();
        let mut listener_proxy: Vec<Option<ProxyProtocol>> =
            config.listen.iter().map(|l| l.proxy.clone()).collect();
        let mut listener_names: Vec<String> = local_addrs.iter().map(|a| a.to_string()).collect();
        if let Some(local) = &config.local {
            listeners.push(socket::Bound::Unix(local::bind(&local.socket)?));
            listener_modes.push(ListenerMode::Local);
            listener_proxy.push(None);
            listener_names.push("local".into());
        }
        sluice_metrics::set_listeners(listener_names);
        let loops = match config.event_loops {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut inlets = Vec::with_capacity(loops);
        let mut shares = Vec::with_capacity(loops);
        for _ in 0..loops {
            let (inlet, inbox) = Inlet::new()?;
            inlets.push(inlet);
            shares.push(LoopShare {
                inbox,
                connections: AtomicUsize::new(0),
            });
        }
        let tls = config.tls.is_some();
        let modes = [
            ListenerMode::Smtp,
            ListenerMode::Submission,
            ListenerMode::Smtps,
            ListenerMode::Local,
        ];
        let shared = Arc::new(Shared {
            sessions: modes.map(|mode| {
                Arc::new(session_for(
                    &config.session,
                    mode,
                    tls,
                    config.auth.is_some(),
                ))
            }),
            session: Arc::new(config.session),
            listener_modes,
            listener_proxy,
            tls: config.tls,
            tls_handshake_timeout: config.tls_handshake_timeout,
            auth_jobs: config.auth.as_ref().map(auth::start_workers).transpose()?,
            auth: config.auth,
            local: config.local,
            msgauth_jobs: config
                .msgauth
                .is_active()
                .then(|| msgauth::start_workers(&config.msgauth))
                .transpose()?,
            msgauth: config.msgauth,
            policy: config.policy,
            spool,
            filter,
            limits: ConnectionLimits::new(config.max_connections, config.max_connections_per_ip),
            command_timeout: config.command_timeout,
            data_timeout: config.data_timeout,
            shutdown_grace: config.shutdown_grace,
            shutting_down: AtomicBool::new(false),
            connection_ids: AtomicU64::new(1),
            loops: shares,
        });
        let mut handles = Vec::with_capacity(loops);
        for (i, inlet) in inlets.into_iter().enumerate() {
            // Every loop polls every listener; whichever wakes first accepts,
            // and hands each connection to the loop with the fewest.
            let own = listeners
                .iter()
                .map(socket::Bound::try_clone)
                .collect::<io::Result<Vec<_>>>()?;
            let event_loop = EventLoop::new(shared.clone(), i, inlet, own)?;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("smtpd-{i}"))
                    .spawn(move || {
                        short_slice();
                        event_loop.run()
                    })?,
            );
        }
        Ok(Smtpd {
            local_addrs,
            loops: handles,
            stopper: Stopper { shared },
        })
    }

    /// The addresses actually bound (port 0 in the config gets a real port).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// How many connections each event loop serves now (in the order of
    /// their threads, `smtpd-0` first), counting those handed to a loop and
    /// not yet taken up.
    pub fn connections_per_loop(&self) -> Vec<usize> {
        self.stopper
            .shared
            .loops
            .iter()
            .map(|l| l.connections.load(Ordering::Relaxed))
            .collect()
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Waits until every event loop has finished (after [`Stopper::stop`]).
    pub fn wait(self) {
        for handle in self.loops {
            let _ = handle.join();
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted server must not wait for TIME_WAIT sockets of the old one.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Asks for a short time slice for the calling thread: the event loops and
/// the workers they wait on run briefly, and a client waits while they sit
/// in the queue for a core (sluice_sys::sched).
fn short_slice() {
    if let Err(e) = sluice_sys::sched::prefer_latency() {
        tracing::debug!(error = %e, "keeping the default time slice");
    }
}
