//! A private redis-server on loopback, for the key-value store's tests.
//!
//! Shaped like [`crate::Dnsmasq`]: one foreground `redis-server` per test on
//! 127.0.0.1 and a free port, with no persistence and its working directory
//! in a temporary directory, ready once it answers `PING`, and killed by PID
//! (SIGKILL, then reaped) when dropped. [`RedisServer::stop`] and
//! [`RedisServer::restart`] let a test take Redis away under a running
//! client and bring it back on the same port. The binary comes from the
//! Debian package `redis-server`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one redis-server may take to answer its first `PING`.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long one probe waits for `+PONG`.
const PROBE_WAIT: Duration = Duration::from_millis(200);
/// The least time between two probes.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Starts tried before giving up: each may lose its port to another process
/// between our picking it and redis-server binding it.
const START_ATTEMPTS: usize = 5;

const INSTALL: &str = "install the Debian package redis-server (tests/prereqs.sh does)";

/// A running redis-server on 127.0.0.1, killed and reaped by PID when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Its working directory (`--dir`) and log; removed after it is stopped.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts an empty Redis on a free port; panics if none answers `PING`
    /// within 10 s.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let binary = redis_binary();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn_ready(&binary, port, dir.path()) {
                Ok(child) => {
                    return RedisServer {
                        child: Some(child),
                        port,
                        dir,
                    };
                }
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server would not start in {START_ATTEMPTS} attempts: {last_error}");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`, for a client or a `[kv] redis_url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The PID of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills and reaps it now (its data is gone: nothing is saved), for tests
    /// of a Redis that goes away; dropping does the same.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL to this child's PID only; wait reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port (stopping it first if it
    /// runs), so that clients holding the old address find it back. Panics
    /// if the port cannot be had again within the start limit.
    pub fn restart(&mut self) {
        self.stop();
        let binary = redis_binary();
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match spawn_ready(&binary, self.port, self.dir.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(error) if Instant::now() > deadline => {
                    panic!(
                        "redis-server would not start again on {}: {error}",
                        self.addr()
                    )
                }
                Err(_) => std::thread::sleep(RETRY_PAUSE * 5),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One start on `port`; `Err` if redis-server exited (most likely the port
/// was taken meanwhile), a panic if it runs but never answers.
fn spawn_ready(binary: &Path, port: u16, dir: &Path) -> Result<Child, String> {
    let log_path = dir.join("redis.log");
    let log = std::fs::File::create(&log_path).expect("redis-server's log file");
    let mut child = Command::new(binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            // No RDB snapshots and no append-only file: tests want an empty,
            // forgetful server, and nothing written outside the temporary dir.
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("redis-server's log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): {INSTALL}", binary.display()));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let asked = Instant::now();
        if answers_ping(addr) {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "redis-server exited with {status}: {}",
                log.trim_end()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server on {addr} gave no PONG within {START_LIMIT:?}");
        }
        // A refused connection returns at once: no busy loop.
        if asked.elapsed() < RETRY_PAUSE {
            std::thread::sleep(RETRY_PAUSE);
        }
    }
}

/// Whether `addr` answers an inline `PING` with `+PONG` within [`PROBE_WAIT`].
fn answers_ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, PROBE_WAIT) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE_WAIT));
    let _ = stream.set_write_timeout(Some(PROBE_WAIT));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port()
}

/// /usr/bin first, then PATH (/usr/sbin for builds that put it there).
fn redis_binary() -> PathBuf {
    let usual = Path::new("/usr/bin/redis-server");
    if usual.is_file() {
        return usual.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("redis-server is not in /usr/bin nor on PATH: {INSTALL}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_until_stopped_and_comes_back_on_the_same_port() {
        let mut server = RedisServer::start();
        let addr = server.addr();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{}/0", addr.port()));
        assert!(answers_ping(addr));
        let pid = server.pid().expect("running");
        server.stop();
        // Killed and reaped: no process, not even a zombie, keeps the PID.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert!(!answers_ping(addr));
        assert_eq!(server.pid(), None);
        server.restart();
        assert_eq!(server.addr(), addr);
        assert!(answers_ping(addr));
        let pid = server.pid().expect("running again");
        drop(server);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert!(!answers_ping(addr));
    }
}
