//! Test support shared by the workspace: a real name server for tests, and
//! a real Redis ([`RedisServer`], in its own module) for the key-value store.
//!
//! Routing, DNSBL and plugin `dns_lookup` tests need answers from a real DNS
//! server over real UDP, including NXDOMAIN, NODATA and timeouts, which a mock
//! resolver would only imitate. [`Dnsmasq`] runs `dnsmasq` in the foreground on
//! 127.0.0.1 and a free port, serving only the records a test gives it, waits
//! (bounded) until it answers a DNS query, and stops it by its PID — SIGKILL,
//! then reaped — when dropped, so that no test leaves a server behind even
//! when it panics. The binary comes from the Debian package `dnsmasq-base`.

mod redis_server;
pub mod tls;

pub use redis_server::RedisServer;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one dnsmasq may take to answer its first query.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long the readiness probe waits for each reply before asking again.
const PROBE_WAIT: Duration = Duration::from_millis(100);
/// The least time between two probes.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Starts tried before giving up: each may lose its port to another process
/// between our picking it and dnsmasq binding it.
const START_ATTEMPTS: usize = 5;

/// A running dnsmasq on 127.0.0.1, killed and reaped by PID when dropped.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    stopped: bool,
    /// dnsmasq's stderr, kept for as long as it may write there.
    log: tempfile::NamedTempFile,
}

/// What a started dnsmasq must answer before tests may use it.
#[derive(Clone, Copy)]
enum Ready<'a> {
    /// An A query for this name gets at least one answer record.
    Answers(&'a str),
    /// Any reply at all, even REFUSED or NXDOMAIN.
    Replies,
}

impl Dnsmasq {
    /// Starts dnsmasq with nothing but `options` (dnsmasq's own, such as
    /// `--mx-host=a.test,mx.a.test,10` or `--host-record=mx.a.test,127.0.0.2`):
    /// no upstream servers, no /etc/hosts, no config file. Waits until an A
    /// query for `probe`, a name the options give an address, is answered;
    /// panics if that takes more than 10 s.
    pub fn start(options: &[&str], probe: &str) -> Dnsmasq {
        Dnsmasq::start_until(options, Ready::Answers(probe))
    }

    /// As [`Dnsmasq::start`], for options that give no name an address:
    /// ready once dnsmasq replies to a query at all.
    pub fn start_serving(options: &[&str]) -> Dnsmasq {
        Dnsmasq::start_until(options, Ready::Replies)
    }

    /// Where it answers, for a resolver's nameservers.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Kills and reaps it now, for tests of what happens when the name server
    /// goes away; dropping does the same.
    pub fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            // Child::kill sends SIGKILL to this child's PID only; wait reaps it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn start_until(options: &[&str], ready: Ready<'_>) -> Dnsmasq {
        let binary = dnsmasq_binary();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match Dnsmasq::try_start(&binary, options, ready) {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("dnsmasq would not start in {START_ATTEMPTS} attempts: {last_error}");
    }

    /// One start on a fresh port; `Err` if dnsmasq exited (most likely the
    /// port was taken meanwhile), a panic if it runs but never answers.
    fn try_start(binary: &Path, options: &[&str], ready: Ready<'_>) -> Result<Dnsmasq, String> {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("a temporary file for dnsmasq's log");
        let child = Command::new(binary)
            .args([
                "--no-daemon",
                "--keep-in-foreground",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                // No PID file: several instances run at once.
                "--pid-file",
                "--log-facility=-",
            ])
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("dnsmasq's log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}): {INSTALL}", binary.display()));
        let mut server = Dnsmasq {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stopped: false,
            log,
        };
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket for the probe");
        socket
            .set_read_timeout(Some(PROBE_WAIT))
            .expect("a read timeout");
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let asked = Instant::now();
            if probe(&socket, server.addr, ready) {
                return Ok(server);
            }
            // An error instead of a timeout (nothing listening yet) must not
            // turn this into a busy loop.
            if asked.elapsed() < RETRY_PAUSE {
                std::thread::sleep(RETRY_PAUSE);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                server.stopped = true;
                let log = std::fs::read_to_string(server.log.path()).unwrap_or_default();
                return Err(format!("dnsmasq exited with {status}: {}", log.trim_end()));
            }
            if Instant::now() > deadline {
                let what = match ready {
                    Ready::Answers(name) => format!("an answer for {name}"),
                    Ready::Replies => "a reply".to_owned(),
                };
                // Drop kills it on the way out of the panic.
                panic!(
                    "dnsmasq on {} gave no {what} within {START_LIMIT:?}",
                    server.addr
                );
            }
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

const INSTALL: &str = "install the Debian package dnsmasq-base";

/// /usr/sbin first: it is not on every user's PATH.
fn dnsmasq_binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/dnsmasq");
    if sbin.is_file() {
        return sbin.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("dnsmasq"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("dnsmasq is not in /usr/sbin nor on PATH: {INSTALL}"))
}

/// Sends one A query to `server` and says whether the reply shows it ready;
/// waits at most [`PROBE_WAIT`] for it.
fn probe(socket: &UdpSocket, server: SocketAddr, ready: Ready<'_>) -> bool {
    let name = match ready {
        Ready::Answers(name) => name,
        // Served or not, any name gets a reply from a running dnsmasq.
        Ready::Replies => "ready.invalid",
    };
    let query = a_query(name);
    if socket.send_to(&query, server).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    // Replies to earlier probes (timed out, then answered) are skipped by id.
    for _ in 0..4 {
        let Ok(n) = socket.recv(&mut buf) else {
            return false;
        };
        let reply = &buf[..n];
        if reply.len() < 12 || reply[..2] != query[..2] || reply[2] & 0x80 == 0 {
            continue;
        }
        return match ready {
            // RCODE 0 and ANCOUNT > 0.
            Ready::Answers(_) => {
                reply[3] & 0x0f == 0 && u16::from_be_bytes([reply[6], reply[7]]) > 0
            }
            Ready::Replies => true,
        };
    }
    false
}

/// An A/IN query for `name` with recursion desired (RFC 1035 §4.1), under a
/// new id each time so that late replies to older probes are told apart.
fn a_query(name: &str) -> Vec<u8> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT_ID: AtomicU16 = AtomicU16::new(0x5e11);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let mut query = vec![id[0], id[1], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        query.push(u8::try_from(label.len()).expect("a DNS label of at most 63 bytes"));
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(server: SocketAddr, name: &str) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(PROBE_WAIT)).unwrap();
        probe(&socket, server, Ready::Answers(name))
    }

    #[test]
    fn serves_the_records_given_and_is_gone_after_drop() {
        let server = Dnsmasq::start(&["--host-record=a.test,127.0.0.5"], "a.test");
        let addr = server.addr();
        assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
        assert_eq!(server.port(), addr.port());
        assert!(answers(addr, "a.test"));
        // A name it was not given has no answer records.
        assert!(!answers(addr, "b.test"));
        let pid = server.child.id();
        drop(server);
        // Killed and reaped: no process, not even a zombie, keeps the PID.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert!(!answers(addr, "a.test"));
    }

    #[test]
    fn stop_ends_it_early_and_drop_after_stop_is_harmless() {
        let mut server = Dnsmasq::start_serving(&["--mx-host=m.test,.,0"]);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(PROBE_WAIT)).unwrap();
        assert!(probe(&socket, server.addr(), Ready::Replies));
        server.stop();
        assert!(!probe(&socket, server.addr(), Ready::Replies));
        drop(server);
    }

    #[test]
    fn queries_are_well_formed_with_fresh_ids() {
        let first = a_query("mx1.example.test.");
        let second = a_query("mx1.example.test");
        assert_ne!(first[..2], second[..2]);
        assert_eq!(first[2..], second[2..]);
        assert_eq!(
            &first[12..],
            b"\x03mx1\x07example\x04test\x00\x00\x01\x00\x01".as_slice()
        );
    }
}
