//! A real name server for routing tests: `dnsmasq` in the foreground on a
//! loopback port, serving only the records a test gives it.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long dnsmasq may take to answer its first query.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A running dnsmasq, stopped (SIGKILL by PID) when dropped.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    /// Starts dnsmasq on 127.0.0.1 with nothing but `records` (its own
    /// options, such as `--mx-host=...` and `--host-record=...`): no
    /// upstream servers, no /etc/hosts, no config file. Waits until it
    /// answers a query for `probe`, a name in `records` that has an A
    /// record; panics if it does not within 10 s.
    pub fn start(records: &[&str], probe: &str) -> Dnsmasq {
        // The port is free when we ask; another process could take it before
        // dnsmasq binds it, which would make dnsmasq exit and the wait below
        // fail loudly rather than talk to the wrong server.
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--keep-in-foreground",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--log-facility=-",
        ])
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dnsmasq (Debian package dnsmasq-base): {e}"));
        let mut server = Dnsmasq {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if server.answers(probe) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("dnsmasq exited at start ({status}): {cmd:?}");
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not answer for {probe} within {START_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it answers, for `[dns] nameservers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether an A query for `name` gets a reply with at least one answer.
    fn answers(&self, name: &str) -> bool {
        let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
        // RFC 1035 §4.1: header (id, flags with RD, one question), then the
        // question: the name as labels, QTYPE A, QCLASS IN.
        let mut query = vec![0x5e, 0x11, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            query.push(u8::try_from(label.len()).expect("a short label"));
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        if socket.send_to(&query, self.addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        match socket.recv(&mut buf) {
            // Same id, a response, RCODE 0, ANCOUNT > 0.
            Ok(n) if n >= 12 => {
                buf[..2] == query[..2]
                    && buf[2] & 0x80 != 0
                    && buf[3] & 0x0f == 0
                    && u16::from_be_bytes([buf[6], buf[7]]) > 0
            }
            _ => false,
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
