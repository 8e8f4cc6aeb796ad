//! A next hop for delivery tests: a small but real SMTP server on a loopback
//! socket that records each transaction (envelope and content) and answers
//! as the test scripts it: 451 the first time, 550 always, slowly, only
//! once a gate opens, or not at all after the content (a stall).
//!
//! It speaks just enough ESMTP for a sending MTA (EHLO with PIPELINING and
//! 8BITMIME, MAIL, RCPT, DATA, RSET, NOOP, QUIT), replies to every command as
//! it reads it (which pipelining clients accept), and dot-unstuffs the
//! content, so what it records is the message as the sender meant it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a connection may sit idle before the sink drops it.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// How long a connection waits at the greeting for a closed gate to open.
const GATE_LIMIT: Duration = Duration::from_secs(60);

/// One transaction that reached the end of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Which accepted connection (0, 1, ...) it came on.
    pub connection: usize,
    pub helo: String,
    /// The reverse-path, without angle brackets (empty for `<>`).
    pub reverse_path: String,
    /// The MAIL parameters after the path (`BODY=8BITMIME SIZE=123`).
    pub mail_params: String,
    /// The forward-paths the sink accepted, without angle brackets, in order.
    pub recipients: Vec<String>,
    /// The content, dot-unstuffed, CRLFs kept, without the final `.` line.
    pub data: Vec<u8>,
    /// The sink's reply to the end of the content, without CRLF; empty when
    /// it stalled there and sent none.
    pub reply: String,
}

impl Transaction {
    pub fn accepted(&self) -> bool {
        self.reply.starts_with('2')
    }
}

type RcptScript = dyn Fn(&str, usize) -> String + Send + Sync;
type DataScript = dyn Fn(&Transaction, usize) -> String + Send + Sync;

/// How to run a [`Sink`]; [`Sink::start`] accepts everything.
pub struct SinkBuilder {
    addr: SocketAddr,
    rcpt: Arc<RcptScript>,
    data: Arc<DataScript>,
    delay: Duration,
    gate_open: bool,
    stalls: usize,
    broken_starttls: bool,
}

impl std::fmt::Debug for SinkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkBuilder")
            .field("addr", &self.addr)
            .field("delay", &self.delay)
            .field("gate_open", &self.gate_open)
            .field("stalls", &self.stalls)
            .finish_non_exhaustive()
    }
}

impl SinkBuilder {
    /// Where to listen (default: 127.0.0.1 on a kernel-chosen port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The reply line to `RCPT TO:<address>`, given the address and how many
    /// times the sink has seen that address at RCPT before (0 the first
    /// time). A reply starting with `2` accepts the recipient.
    pub fn rcpt_reply(
        mut self,
        script: impl Fn(&str, usize) -> String + Send + Sync + 'static,
    ) -> Self {
        self.rcpt = Arc::new(script);
        self
    }

    /// The reply line to the end of the content, given the transaction (its
    /// `reply` still empty) and how many transactions reached this point
    /// before it on this sink (0 for the first).
    pub fn data_reply(
        mut self,
        script: impl Fn(&Transaction, usize) -> String + Send + Sync + 'static,
    ) -> Self {
        self.data = Arc::new(script);
        self
    }

    /// Waits this long before replying to the end of each content: a slow
    /// next hop.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Starts with the gate closed: connections are accepted but get no
    /// greeting until [`Sink::open_gate`] (at most a minute).
    pub fn gate_closed(mut self) -> Self {
        self.gate_open = false;
        self
    }

    /// The first `times` transactions to reach the end of their content get
    /// no reply to it: the sink records them (with an empty reply), then
    /// reads and ignores whatever comes until the client closes the
    /// connection (at most 30 s idle). A next hop that hangs after the
    /// final dot; later transactions are answered as usual.
    pub fn stall_at_end_of_data(mut self, times: usize) -> Self {
        self.stalls = times;
        self
    }

    /// Offers STARTTLS, says 220 to it, then sends garbage instead of a
    /// handshake and closes: a next hop whose TLS is broken. STARTTLS is
    /// offered on every connection; mail sent without it is taken.
    pub fn broken_starttls(mut self) -> Self {
        self.broken_starttls = true;
        self
    }

    /// Binds and starts accepting; panics if the address cannot be bound
    /// (naming it, as binding port 25 needs privileges).
    pub fn start(self) -> Sink {
        let listener = TcpListener::bind(self.addr)
            .unwrap_or_else(|e| panic!("the test SMTP sink cannot listen on {}: {e}", self.addr));
        let addr = listener.local_addr().expect("the sink's address");
        let shared = Arc::new(Shared {
            rcpt: self.rcpt,
            data: self.data,
            delay: self.delay,
            stalls_left: AtomicUsize::new(self.stalls),
            stop: AtomicBool::new(false),
            gate: Mutex::new(self.gate_open),
            gate_opened: Condvar::new(),
            connections: AtomicUsize::new(0),
            log: Mutex::new(Log::default()),
            grew: Condvar::new(),
            streams: Mutex::new(Vec::new()),
            broken_starttls: self.broken_starttls,
        });
        let accepting = Arc::clone(&shared);
        let accept_thread = std::thread::Builder::new()
            .name(format!("sink {addr}"))
            .spawn(move || accept_loop(&listener, &accepting))
            .expect("start the sink's accept thread");
        Sink {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }
}

/// A running sink; dropping it stops accepting and closes its connections.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("addr", &self.addr).finish()
    }
}

struct Shared {
    rcpt: Arc<RcptScript>,
    data: Arc<DataScript>,
    delay: Duration,
    stalls_left: AtomicUsize,
    stop: AtomicBool,
    gate: Mutex<bool>,
    gate_opened: Condvar,
    connections: AtomicUsize,
    log: Mutex<Log>,
    grew: Condvar,
    streams: Mutex<Vec<TcpStream>>,
    broken_starttls: bool,
}

#[derive(Default)]
struct Log {
    transactions: Vec<Transaction>,
    rcpt_seen: HashMap<String, usize>,
}

impl Sink {
    /// A sink on 127.0.0.1 that accepts every recipient and message.
    pub fn start() -> Sink {
        Sink::builder().start()
    }

    pub fn builder() -> SinkBuilder {
        SinkBuilder {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            rcpt: Arc::new(|_, _| "250 2.1.5 Ok".to_string()),
            data: Arc::new(|_, _| "250 2.0.0 Ok: accepted".to_string()),
            delay: Duration::ZERO,
            gate_open: true,
            stalls: 0,
            broken_starttls: false,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lets the connections waiting at the greeting go on.
    pub fn open_gate(&self) {
        *self.shared.gate.lock().expect("gate lock") = true;
        self.shared.gate_opened.notify_all();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Every transaction that reached the end of its content, accepted or
    /// not, in the order the sink replied to them.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.shared
            .log
            .lock()
            .expect("sink lock")
            .transactions
            .clone()
    }

    /// The transactions the sink accepted.
    pub fn accepted(&self) -> Vec<Transaction> {
        self.transactions()
            .into_iter()
            .filter(Transaction::accepted)
            .collect()
    }

    /// How many times `address` was given at RCPT (accepted or not).
    pub fn rcpt_attempts(&self, address: &str) -> usize {
        let log = self.shared.log.lock().expect("sink lock");
        log.rcpt_seen
            .get(&address.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Waits at most `limit` until at least `n` transactions were accepted;
    /// returns the accepted ones then, or `None` on timeout.
    pub fn wait_accepted(&self, n: usize, limit: Duration) -> Option<Vec<Transaction>> {
        let deadline = Instant::now() + limit;
        let mut log = self.shared.log.lock().expect("sink lock");
        loop {
            let accepted: Vec<Transaction> = log
                .transactions
                .iter()
                .filter(|t| t.accepted())
                .cloned()
                .collect();
            if accepted.len() >= n {
                return Some(accepted);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            log = self
                .shared
                .grew
                .wait_timeout(log, deadline - now)
                .expect("sink lock")
                .0;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.open_gate();
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        for s in self.shared.streams.lock().expect("streams lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let connection = shared.connections.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            shared.streams.lock().expect("streams lock").push(clone);
        }
        let shared = Arc::clone(shared);
        let _ = std::thread::Builder::new()
            .name(format!("sink conn {connection}"))
            .spawn(move || {
                // A connection that breaks is the client's business; the
                // test judges by what was recorded.
                let _ = serve(stream, connection, &shared);
            });
    }
}

fn serve(stream: TcpStream, connection: usize, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_LIMIT))?;
    stream.set_write_timeout(Some(IDLE_LIMIT))?;
    // One write per reply: without this, Nagle holds each reply to a
    // pipelined command until the previous one is acknowledged, and the
    // peer's delayed ACK makes every transaction 40 ms slower.
    stream.set_nodelay(true)?;
    {
        let gate = shared.gate.lock().expect("gate lock");
        let (gate, _) = shared
            .gate_opened
            .wait_timeout_while(gate, GATE_LIMIT, |open| !*open)
            .expect("gate lock");
        if !*gate {
            return Ok(());
        }
    }
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    out.write_all(b"220 sink.test ESMTP test sink\r\n")?;
    let mut helo = String::new();
    let mut mail: Option<(String, String)> = None;
    let mut recipients = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line);
        let command = command.trim_end_matches(['\r', '\n']);
        let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" | "HELO" => {
                helo = command[4..].trim().to_string();
                mail = None;
                recipients.clear();
                if verb == "EHLO" && shared.broken_starttls {
                    "250-sink.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n\
                     250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600"
                        .to_string()
                } else if verb == "EHLO" {
                    "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
                     250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600"
                        .to_string()
                } else {
                    "250 sink.test".to_string()
                }
            }
            "STARTTLS" if shared.broken_starttls => {
                out.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
                // Whatever the client's ClientHello says, this is no answer.
                let mut hello = [0u8; 512];
                let _ = input.read(&mut hello);
                out.write_all(b"this is not TLS\r\n")?;
                return Ok(());
            }
            "MAIL" => match path_after(command, "MAIL FROM:") {
                Some((path, params)) => {
                    mail = Some((path, params));
                    recipients.clear();
                    "250 2.1.0 Ok".to_string()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>".to_string(),
            },
            "RCPT" => match (&mail, path_after(command, "RCPT TO:")) {
                (None, _) => "503 5.5.1 MAIL first".to_string(),
                (Some(_), None) => "501 5.5.4 Syntax: RCPT TO:<address>".to_string(),
                (Some(_), Some((path, _))) => {
                    let seen = {
                        let mut log = shared.log.lock().expect("sink lock");
                        let n = log.rcpt_seen.entry(path.to_ascii_lowercase()).or_insert(0);
                        *n += 1;
                        *n - 1
                    };
                    let reply = (shared.rcpt)(&path, seen);
                    if reply.starts_with('2') {
                        recipients.push(path);
                    }
                    reply
                }
            },
            "DATA" => match &mail {
                Some(_) if !recipients.is_empty() => {
                    out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                    let Some(data) = read_content(&mut input)? else {
                        return Ok(());
                    };
                    let (reverse_path, mail_params) = mail.take().unwrap_or_default();
                    let mut t = Transaction {
                        connection,
                        helo: helo.clone(),
                        reverse_path,
                        mail_params,
                        recipients: std::mem::take(&mut recipients),
                        data,
                        reply: String::new(),
                    };
                    std::thread::sleep(shared.delay);
                    let stall = shared
                        .stalls_left
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_ok();
                    if stall {
                        shared.log.lock().expect("sink lock").transactions.push(t);
                        shared.grew.notify_all();
                        return drain(&mut input);
                    }
                    let mut log = shared.log.lock().expect("sink lock");
                    t.reply = (shared.data)(&t, log.transactions.len());
                    let reply = t.reply.clone();
                    log.transactions.push(t);
                    // Recorded before the reply leaves, so that a test that
                    // sees the sender's success also sees the transaction.
                    out.write_all(format!("{reply}\r\n").as_bytes())?;
                    drop(log);
                    shared.grew.notify_all();
                    continue;
                }
                Some(_) => "554 5.5.1 No valid recipients".to_string(),
                None => "503 5.5.1 MAIL first".to_string(),
            },
            "RSET" => {
                mail = None;
                recipients.clear();
                "250 2.0.0 Ok".to_string()
            }
            "NOOP" => "250 2.0.0 Ok".to_string(),
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => "500 5.5.2 Command not recognized".to_string(),
        };
        out.write_all(format!("{reply}\r\n").as_bytes())?;
    }
}

/// Reads and drops input until the peer closes the connection (or the idle
/// limit passes, or the sink is dropped).
fn drain(input: &mut impl Read) -> io::Result<()> {
    let mut buf = [0; 1024];
    while input.read(&mut buf)? > 0 {}
    Ok(())
}

/// `<path> params` after a case-insensitive `prefix`: the path without its
/// brackets, and the parameters.
fn path_after(command: &str, prefix: &str) -> Option<(String, String)> {
    let head = command.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = command[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let (path, params) = rest.split_once('>')?;
    Some((path.to_string(), params.trim().to_string()))
}

/// The content up to the `.` line, dot-unstuffed; `None` if the connection
/// ended first.
fn read_content(input: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if line == b".\r\n" {
            return Ok(Some(data));
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(unstuffed);
    }
}
