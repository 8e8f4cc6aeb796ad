//! Real servers on loopback for the route and remote tests: dnsmasq as the
//! name server, an SMTP server thread built on `ServerSession`, and a small
//! scripted LMTP server on a unix socket. Each one stops when dropped, by
//! PID or by a flag its threads poll, and every wait is bounded.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_smtp::server::{Decision, Event, Extensions, ServerConfig, ServerSession};
use sluice_smtp::{BodyType, DataDecoder, EnhancedCode, Reply};

/// How long any helper waits for anything before it gives up.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How often server threads look at their stop flag.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------- transport

/// The transport's settings for tests: short connect timeout, BDAT on.
pub fn config() -> sluice_delivery::remote::RemoteConfig {
    sluice_delivery::remote::RemoteConfig {
        helo_name: "sluice.example.org".into(),
        timeouts: sluice_delivery::remote::Timeouts {
            connect: Duration::from_secs(2),
            ..sluice_delivery::remote::Timeouts::default()
        },
        idle_close: Duration::from_secs(5),
        max_messages_per_connection: 100,
        chunking: true,
    }
}

/// A Remote whose routes send each domain to its server; DNS is never asked.
pub fn routed_to(
    routes: &[(&str, SocketAddr)],
    config: sluice_delivery::remote::RemoteConfig,
) -> sluice_delivery::remote::Remote {
    let routes = routes
        .iter()
        .map(|(domain, addr)| ((*domain).to_owned(), addr.to_string()))
        .collect();
    let router = sluice_delivery::route::Router::new(
        sluice_delivery::route::RouteConfig {
            routes,
            ..sluice_delivery::route::RouteConfig::default()
        },
        sluice_dns::Resolver::new(&["127.0.0.1:9".parse().unwrap()], Duration::from_secs(5))
            .unwrap(),
    )
    .unwrap();
    sluice_delivery::remote::Remote::new(config, router)
}

// ---------------------------------------------------------------- dnsmasq

/// A dnsmasq serving only the records given, on 127.0.0.1 and a free port;
/// stopped by PID when dropped.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    _server: sluice_testkit::Dnsmasq,
}

impl Dnsmasq {
    /// `records`: dnsmasq options such as `--mx-host=a.test,mx.a.test,10`.
    /// Everything under `.test` is answered locally (`--local=/test/`), so
    /// unknown names there are NXDOMAIN and names without the type asked
    /// for are NODATA, as an authoritative server would say.
    pub fn start(records: &[String]) -> Dnsmasq {
        let mut options = vec!["--local=/test/"];
        options.extend(records.iter().map(String::as_str));
        // Some record sets (a null MX alone) give no name an address to ask.
        let server = sluice_testkit::Dnsmasq::start_serving(&options);
        Dnsmasq {
            addr: server.addr(),
            _server: server,
        }
    }
}

// ---------------------------------------------------------------- SMTP

/// A reply for a forward-path, or `None` for the usual one.
pub type RcptScript = Arc<dyn Fn(&str) -> Option<Reply> + Send + Sync>;

/// What a scripted SMTP server does.
#[derive(Clone)]
pub struct Script {
    /// `None`: the normal 220; else this reply (a 421 closes, others refuse).
    pub greeting: Option<Reply>,
    pub extensions: Extensions,
    /// A refusal for a forward-path (as written, `<a@b>`), or `None` to accept.
    pub rcpt: RcptScript,
    /// A refusal for the n-th message (from 0) at its end of data, or `None`.
    pub message: Arc<dyn Fn(usize) -> Option<Reply> + Send + Sync>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: None,
            extensions: Extensions::default(),
            rcpt: Arc::new(|_| None),
            message: Arc::new(|_| None),
        }
    }
}

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which accepted connection (from 0) it came on.
    pub connection: usize,
    pub reverse_path: String,
    /// The MAIL parameters as the server understood them.
    pub mail_params: String,
    pub recipients: Vec<String>,
    /// Each recipient's RCPT parameters, in the same order.
    pub rcpt_params: Vec<String>,
    pub body_type: BodyType,
    /// The content as unstuffed by the server.
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    accepts: AtomicUsize,
    /// Sessions that ended with the client's QUIT.
    quits: AtomicUsize,
    messages: AtomicUsize,
    received: Mutex<Vec<Received>>,
    /// What each read from a client returned, in order (SMTP server only).
    reads: Mutex<Vec<Vec<u8>>>,
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl SmtpServer {
    /// Listens on `ip:port` (0: any free port).
    pub fn start(addr: SocketAddr, script: Script) -> std::io::Result<SmtpServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, script, shared))
        };
        Ok(SmtpServer {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    pub fn accepts(&self) -> usize {
        self.shared.accepts.load(Ordering::SeqCst)
    }

    pub fn quits(&self) -> usize {
        self.shared.quits.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The bytes of each read from the clients, in order: what came in
    /// one go, as far as the socket tells.
    pub fn reads(&self) -> Vec<Vec<u8>> {
        self.shared.reads.lock().unwrap().clone()
    }

    /// Waits (bounded) until `check` holds: the server side of a close
    /// happens a moment after the client's.
    pub fn wait_for(&self, what: &str, check: impl Fn(&SmtpServer) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, script: Script, shared: Arc<Shared>) {
    let mut handlers = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let number = shared.accepts.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                let shared = shared.clone();
                handlers.push(std::thread::spawn(move || {
                    serve_smtp(stream, number, &script, &shared)
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => panic!("accept: {e}"),
        }
    }
    for handler in handlers {
        let _ = handler.join();
    }
}

fn serve_smtp(mut stream: TcpStream, connection: usize, script: &Script, shared: &Shared) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(POLL)).unwrap();
    let config = ServerConfig {
        hostname: "mx.test".into(),
        extensions: script.extensions.clone(),
        ..ServerConfig::default()
    };
    let mut session = ServerSession::new(config);
    session.greet(script.greeting.clone());
    let mut input = Vec::new();
    let mut buf = [0u8; 8192];
    let idle_limit = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::mem::take(session.output());
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
        if session.is_closed() {
            // The session closes after its 221 to QUIT, or after a 421.
            if out.starts_with(b"221 ") || out.windows(5).any(|w| w == b"\n221 ") {
                shared.quits.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        if let Some(event) = session.event().cloned() {
            let decision = decide(&mut session, event, connection, script, shared);
            session.decide(decision).expect("an event is pending");
            let used = session.receive(&input);
            input.drain(..used);
            continue;
        }
        if shared.stop.load(Ordering::SeqCst) || Instant::now() > idle_limit {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                shared.reads.lock().unwrap().push(buf[..n].to_vec());
                input.extend_from_slice(&buf[..n]);
                let used = session.receive(&input);
                input.drain(..used);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn decide(
    session: &mut ServerSession,
    event: Event,
    connection: usize,
    script: &Script,
    shared: &Shared,
) -> Decision {
    match event {
        Event::Rcpt { forward_path, .. } => match (script.rcpt)(&forward_path.to_string()) {
            Some(reply) => Decision::Reject(reply),
            None => Decision::Accept,
        },
        Event::Message => {
            let number = shared.messages.fetch_add(1, Ordering::SeqCst);
            let transaction = session.transaction().cloned().expect("an envelope");
            let body = session.take_message().expect("a finished message");
            if let Some(reply) = (script.message)(number) {
                return Decision::Reject(reply);
            }
            shared.received.lock().unwrap().push(Received {
                connection,
                reverse_path: transaction.reverse_path.to_string(),
                mail_params: transaction.params.to_string(),
                recipients: transaction
                    .recipients
                    .iter()
                    .map(|r| r.forward_path.to_string())
                    .collect(),
                rcpt_params: transaction
                    .recipients
                    .iter()
                    .map(|r| r.params.to_string())
                    .collect(),
                body_type: transaction.body_type(),
                body,
            });
            Decision::AcceptWith(Reply::new(
                250,
                Some(EnhancedCode::new(2, 0, 0)),
                format!("Ok: queued as M{number}"),
            ))
        }
        _ => Decision::Accept,
    }
}

// ---------------------------------------------------------------- LMTP

/// A scripted LMTP server (RFC 2033) on a unix socket or TCP: one reply
/// per accepted recipient after the data, decided by `data_reply`.
pub struct LmtpServer {
    /// `unix:/path` or `host:port`, as `deliver_lmtp` takes it.
    pub target: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl LmtpServer {
    /// On a unix socket. `rcpt` may refuse a recipient at RCPT;
    /// `data_reply` gives each accepted recipient's reply after the data
    /// (`None`: 250).
    pub fn start(rcpt: RcptScript, data_reply: RcptScript) -> LmtpServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lmtp");
        let listener = UnixListener::bind(&path).expect("bind the LMTP socket");
        listener.set_nonblocking(true).unwrap();
        let target = format!("unix:{}", path.display());
        LmtpServer::run(Listener::Unix(listener), target, dir, rcpt, data_reply)
    }

    /// The same on 127.0.0.1 and a free TCP port.
    pub fn start_tcp(rcpt: RcptScript, data_reply: RcptScript) -> LmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the LMTP port");
        listener.set_nonblocking(true).unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        LmtpServer::run(Listener::Tcp(listener), target, dir, rcpt, data_reply)
    }

    fn run(
        listener: Listener,
        target: String,
        dir: tempfile::TempDir,
        rcpt: RcptScript,
        data_reply: RcptScript,
    ) -> LmtpServer {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                while !shared.stop.load(Ordering::SeqCst) {
                    let accepted = match &listener {
                        Listener::Unix(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
                        Listener::Tcp(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
                    };
                    match accepted {
                        Ok(stream) => {
                            let number = shared.accepts.fetch_add(1, Ordering::SeqCst);
                            let (shared, rcpt, data_reply) =
                                (shared.clone(), rcpt.clone(), data_reply.clone());
                            handlers.push(std::thread::spawn(move || {
                                serve_lmtp(stream, number, &rcpt, &data_reply, &shared)
                            }));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(POLL)
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                for handler in handlers {
                    let _ = handler.join();
                }
            })
        };
        LmtpServer {
            target,
            shared,
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn accepts(&self) -> usize {
        self.shared.accepts.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }
}

impl Drop for LmtpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A stream either listener gives, blocking with a short read timeout.
trait Conn: Read + Write + Send {
    fn prepare(&self);
}

impl Conn for UnixStream {
    fn prepare(&self) {
        self.set_nonblocking(false).unwrap();
        self.set_read_timeout(Some(POLL)).unwrap();
    }
}

impl Conn for TcpStream {
    fn prepare(&self) {
        self.set_nonblocking(false).unwrap();
        self.set_read_timeout(Some(POLL)).unwrap();
    }
}

fn serve_lmtp(
    mut stream: Box<dyn Conn>,
    connection: usize,
    rcpt: &RcptScript,
    data_reply: &RcptScript,
    shared: &Shared,
) {
    stream.prepare();
    let mut out = b"220 lmtp.test LMTP ready\r\n".to_vec();
    let mut input = Vec::new();
    let mut buf = [0u8; 8192];
    let mut reverse_path = String::new();
    let mut accepted: Vec<String> = Vec::new();
    let mut data: Option<(DataDecoder, Vec<u8>)> = None;
    let idle_limit = Instant::now() + Duration::from_secs(60);
    loop {
        if !out.is_empty() && stream.write_all(&std::mem::take(&mut out)).is_err() {
            return;
        }
        // Everything complete in the input, in order.
        loop {
            if let Some((decoder, body)) = &mut data {
                let progress = decoder.decode(&input, body);
                input.drain(..progress.consumed);
                if !progress.done {
                    break;
                }
                let (_, body) = data.take().unwrap();
                for recipient in &accepted {
                    match data_reply(recipient) {
                        Some(reply) => reply.write_to(&mut out),
                        None => out.extend_from_slice(
                            format!("250 2.0.0 {recipient} Saved\r\n").as_bytes(),
                        ),
                    }
                }
                let recipients = accepted
                    .iter()
                    .filter(|r| data_reply(r).is_none())
                    .cloned()
                    .collect();
                shared.received.lock().unwrap().push(Received {
                    connection,
                    reverse_path: reverse_path.clone(),
                    mail_params: String::new(),
                    recipients,
                    rcpt_params: Vec::new(),
                    body_type: BodyType::SevenBit,
                    body,
                });
                accepted.clear();
                continue;
            }
            let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let line = String::from_utf8_lossy(&input[..end]).into_owned();
            input.drain(..end + 2);
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("LHLO ") {
                b"250-lmtp.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                reverse_path = line[10..].split(' ').next().unwrap_or("").to_owned();
                accepted.clear();
                b"250 2.1.0 OK\r\n"
            } else if upper.starts_with("RCPT TO:") {
                let path = line[8..].split(' ').next().unwrap_or("").to_owned();
                match rcpt(&path) {
                    Some(reply) => {
                        reply.write_to(&mut out);
                        b""
                    }
                    None => {
                        accepted.push(path);
                        b"250 2.1.5 OK\r\n"
                    }
                }
            } else if upper == "DATA" {
                if accepted.is_empty() {
                    b"503 5.5.1 No valid recipients\r\n"
                } else {
                    data = Some((DataDecoder::new(10 << 20), Vec::new()));
                    b"354 OK\r\n"
                }
            } else if upper == "RSET" {
                accepted.clear();
                b"250 2.0.0 OK\r\n"
            } else if upper == "QUIT" {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                let _ = stream.write_all(&out);
                shared.quits.fetch_add(1, Ordering::SeqCst);
                return;
            } else {
                // EHLO and HELO included: this is no SMTP server.
                b"500 5.5.1 Unknown command\r\n"
            };
            out.extend_from_slice(reply);
        }
        if !out.is_empty() {
            continue;
        }
        if shared.stop.load(Ordering::SeqCst) || Instant::now() > idle_limit {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A reply from text, for scripts: `reply(550, (5, 1, 1), "No such user")`.
pub fn reply(code: u16, e: (u8, u16, u16), text: &str) -> Reply {
    Reply::new(
        code,
        Some(EnhancedCode::new(e.0, e.1, e.2)),
        text.to_owned(),
    )
}
