//! Test plugins written in WebAssembly text, and what the tests around them
//! need: plugin files, host environments, a real dnsmasq, a real front end.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_plugin_host::{DnsConfig, DnsResolver, HostEnv, PluginHost, PluginSpec};
use sluice_smtp::server::ServerConfig;
use sluice_smtpd::{RecipientPolicy, Smtpd, SmtpdConfig};
use sluice_spool::{Spool, SpoolConfig};

/// Imports every host function, exports the ABI marker, a memory and an
/// allocator that always hands out the same argument buffer (at 4096): a
/// hook has one argument and reads it before it could need another.
/// Strings named in `strings` are laid out from offset 16, and `$$name` in
/// the body becomes `(i32.const offset) (i32.const length)`. Scratch space
/// for host answers starts at 16384.
pub fn module(strings: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut data = String::new();
    let mut body = body.to_owned();
    let mut offset = 16usize;
    // Longest names first, so `$$a` never eats the start of `$$ab`.
    let mut named: Vec<_> = strings.iter().collect();
    named.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in named {
        assert!(offset + value.len() < 4096, "test strings overflow");
        data.push_str(&format!(
            "(data (i32.const {offset}) \"{}\")\n",
            value.escape_default()
        ));
        body = body.replace(
            &format!("$${name}"),
            &format!("(i32.const {offset}) (i32.const {})", value.len()),
        );
        offset += value.len();
    }
    assert!(!body.contains("$$"), "unknown string in {body}");
    let text = format!("(module\n{IMPORTS}\n{data}\n{HELPERS}\n{body}\n)");
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test plugin: {e}\n{text}"))
}

const IMPORTS: &str = r#"
  (import "sluice" "get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "sluice" "is_local_domain" (func $is_local_domain (param i32 i32) (result i32)))
  (import "sluice" "get_header" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "sluice" "get_body" (func $get_body (param i32 i32 i32) (result i32)))
  (import "sluice" "set_reply" (func $set_reply (param i32 i32 i32)))
  (import "sluice" "add_header" (func $add_header (param i32 i32 i32 i32)))
  (import "sluice" "add_score" (func $add_score (param i32 i32 f64)))
  (import "sluice" "note_get" (func $note_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "sluice" "note_set" (func $note_set (param i32 i32 i32 i32 i32)))
  (import "sluice" "log" (func $log (param i32 i32 i32)))
  (import "sluice" "now_ms" (func $now_ms (result i64)))
  (import "sluice" "dns_lookup" (func $dns_lookup (param i32 i32 i32 i32 i32) (result i32)))
  (import "sluice" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "sluice" "kv_set" (func $kv_set (param i32 i32 i32 i32 i32)))
  (import "sluice" "kv_incr" (func $kv_incr (param i32 i32 i64 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "sluice_abi_v1"))
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 4096))
"#;

const HELPERS: &str = r#"
  (func $memeq (param $a i32) (param $b i32) (param $n i32) (result i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (if (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b)))
          (then (return (i32.const 0))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.const 1))
  (func $eq (param $p i32) (param $n i32) (param $s i32) (param $len i32) (result i32)
    (if (result i32) (i32.ne (local.get $n) (local.get $len))
      (then (i32.const 0))
      (else (call $memeq (local.get $p) (local.get $s) (local.get $n)))))
  (func $starts_with (param $p i32) (param $n i32) (param $s i32) (param $len i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (local.get $len))
      (then (i32.const 0))
      (else (call $memeq (local.get $p) (local.get $s) (local.get $len)))))
"#;

/// Rejects RCPT to `blocked` with its own reply; logs every recipient.
pub fn relay_plugin(blocked: &str, reply: &str) -> Vec<u8> {
    module(
        &[("blocked", blocked), ("reply", reply)],
        r#"
  (func (export "sluice_on_rcpt") (param $p i32) (param $n i32) (result i32)
    (call $log (i32.const 2) (local.get $p) (local.get $n))
    (if (call $eq (local.get $p) (local.get $n) $$blocked)
      (then
        (call $set_reply (i32.const 554) $$reply)
        (return (i32.const 2))))
    (i32.const 0))
"#,
    )
}

/// A RCPT hook that runs `fault` for recipients starting with `trigger`,
/// and refuses every call once an instance has been through a fault: if
/// the host reused a faulted instance, the next call would say so.
pub fn faulty_plugin(trigger: &str, fault: &str) -> Vec<u8> {
    module(
        &[
            ("trigger", trigger),
            ("reused", "5.7.0 instance reused after a fault"),
        ],
        &format!(
            r#"
  (global $faulted (mut i32) (i32.const 0))
  (func (export "sluice_on_rcpt") (param $p i32) (param $n i32) (result i32)
    (if (global.get $faulted)
      (then
        (call $set_reply (i32.const 550) $$reused)
        (return (i32.const 2))))
    (if (call $starts_with (local.get $p) (local.get $n) $$trigger)
      (then
        (global.set $faulted (i32.const 1))
        {fault}))
    (i32.const 0))
"#
        ),
    )
}

pub const TRAP: &str = "unreachable";
pub const SPIN: &str = "(loop $forever (br $forever))";
pub const GROW: &str = "(loop $more (drop (memory.grow (i32.const 16))) (br $more))";

/// Scores at RCPT (1) and end of data (2.5); at end of data adds
/// `X-Spam-Score` with the transaction's total as the host reports it, the
/// queue id, and the Subject it read back.
pub fn scoring_plugin() -> Vec<u8> {
    module(
        &[
            ("rcpt_sym", "TEST_RCPT"),
            ("data_sym", "TEST_DATA"),
            ("tx_score", "tx.score"),
            ("tx_id", "tx.id"),
            ("subject", "Subject"),
            ("h_score", "X-Spam-Score"),
            ("h_id", "X-Test-Queue-Id"),
            ("h_subject", "X-Test-Subject"),
        ],
        r#"
  (func (export "sluice_on_rcpt") (param $p i32) (param $n i32) (result i32)
    (call $add_score $$rcpt_sym (f64.const 1))
    (i32.const 0))
  (func (export "sluice_on_data") (result i32)
    (local $len i32)
    (call $add_score $$data_sym (f64.const 2.5))
    (local.set $len (call $get_property $$tx_score (i32.const 16384) (i32.const 64)))
    (call $add_header $$h_score (i32.const 16384) (local.get $len))
    (local.set $len (call $get_property $$tx_id (i32.const 16384) (i32.const 64)))
    (if (i32.ge_s (local.get $len) (i32.const 0))
      (then (call $add_header $$h_id (i32.const 16384) (local.get $len))))
    (local.set $len (call $get_header $$subject (i32.const 0) (i32.const 16384) (i32.const 256)))
    (if (i32.ge_s (local.get $len) (i32.const 0))
      (then (call $add_header $$h_subject (i32.const 16384) (local.get $len))))
    (i32.const 0))
"#,
    )
}

/// Notes across hooks: HELO leaves a connection note, MAIL a transaction
/// note (and refuses if one from an earlier transaction is still there),
/// RCPT refuses unless both are there. End of data counts messages in the
/// key-value store and refuses from the third on.
pub fn notes_plugin() -> Vec<u8> {
    module(
        &[
            ("conn_key", "helo-seen"),
            ("tx_key", "mail-seen"),
            ("one", "1"),
            ("leak", "4.3.5 transaction note leaked"),
            ("missing", "4.3.5 note missing"),
            ("kv_key", "test-messages"),
            ("limit", "4.7.1 Too many messages"),
        ],
        r#"
  (func (export "sluice_on_helo") (param $p i32) (param $n i32) (result i32)
    (call $note_set (i32.const 0) $$conn_key (local.get $p) (local.get $n))
    (i32.const 0))
  (func (export "sluice_on_mail") (param $p i32) (param $n i32) (result i32)
    (if (i32.ge_s (call $note_get (i32.const 1) $$tx_key (i32.const 16384) (i32.const 16)) (i32.const 0))
      (then
        (call $set_reply (i32.const 451) $$leak)
        (return (i32.const 3))))
    (call $note_set (i32.const 1) $$tx_key $$one)
    (i32.const 0))
  (func (export "sluice_on_rcpt") (param $p i32) (param $n i32) (result i32)
    (if (i32.lt_s (call $note_get (i32.const 0) $$conn_key (i32.const 16384) (i32.const 256)) (i32.const 0))
      (then
        (call $set_reply (i32.const 451) $$missing)
        (return (i32.const 3))))
    (if (i32.lt_s (call $note_get (i32.const 1) $$tx_key (i32.const 16384) (i32.const 16)) (i32.const 0))
      (then
        (call $set_reply (i32.const 451) $$missing)
        (return (i32.const 3))))
    (i32.const 0))
  (func (export "sluice_on_data") (result i32)
    (if (i64.gt_s (call $kv_incr $$kv_key (i64.const 1) (i32.const 0)) (i64.const 2))
      (then
        (call $set_reply (i32.const 452) $$limit)
        (return (i32.const 3))))
    (i32.const 0))
"#,
    )
}

/// Looks the HELO name up (type `qtype`) unless it starts with `fast`:
/// records → logs them and rejects 554; a failure → TEMPFAIL 451 4.4.3;
/// NXDOMAIN or no data → CONTINUE.
pub fn dns_plugin(qtype: u16) -> Vec<u8> {
    module(
        &[
            ("fast", "fast"),
            ("listed", "5.7.1 Client listed"),
            ("failed", "4.4.3 DNS lookup failed"),
        ],
        &format!(
            r#"
  (func (export "sluice_on_helo") (param $p i32) (param $n i32) (result i32)
    (local $r i32)
    (if (call $starts_with (local.get $p) (local.get $n) $$fast)
      (then (return (i32.const 0))))
    (local.set $r (call $dns_lookup (i32.const {qtype}) (local.get $p) (local.get $n) (i32.const 16384) (i32.const 512)))
    ;; Wasm code with a loop after the lookup: where an epoch deadline that
    ;; counted the time blocked in DNS would trip.
    (drop (call $starts_with (local.get $p) (local.get $n) $$fast))
    (if (i32.gt_s (local.get $r) (i32.const 0))
      (then
        (call $log (i32.const 2) (i32.const 16384) (local.get $r))
        (call $set_reply (i32.const 554) $$listed)
        (return (i32.const 2))))
    (if (i32.eq (local.get $r) (i32.const -2))
      (then
        (call $set_reply (i32.const 451) $$failed)
        (return (i32.const 3))))
    (i32.const 0))
"#
        ),
    )
}

/// Echoes properties: RCPT to `<name>@...` is refused with
/// `550 5.0.0 <value of property name>`, or accepted if it has no value.
pub fn echo_plugin() -> Vec<u8> {
    module(
        &[],
        r#"
  (data (i32.const 16378) "5.0.0 ")
  (func (export "sluice_on_rcpt") (param $p i32) (param $n i32) (result i32)
    (local $i i32)
    (local $len i32)
    (block $at
      (loop $next
        (br_if $at (i32.ge_u (local.get $i) (local.get $n)))
        (br_if $at (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 64)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.set $len (call $get_property (local.get $p) (local.get $i) (i32.const 16384) (i32.const 1024)))
    (if (i32.lt_s (local.get $len) (i32.const 0))
      (then (return (i32.const 0))))
    (call $set_reply (i32.const 550) (i32.const 16378) (i32.add (local.get $len) (i32.const 6)))
    (i32.const 2))
"#,
    )
}

/// Writes `wasm` as `<dir>/<name>.wasm` and returns a spec for it.
pub fn spec(dir: &Path, name: &str, wasm: &[u8]) -> PluginSpec {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wasm).unwrap();
    PluginSpec::new(name, path)
}

/// An environment whose DNS goes to `nameserver` (a port where nothing
/// answers unless a test says otherwise).
pub fn env_with_dns(nameserver: SocketAddr, timeout: Duration) -> HostEnv {
    let dns = DnsResolver::new(&DnsConfig {
        nameservers: vec![nameserver],
        timeout,
        cache_entries: 64,
    })
    .unwrap();
    HostEnv::new("mx.example.test", directory(), dns)
}

/// Our domain is example.test, with alice's mailbox.
pub fn directory() -> Arc<sluice_directory::Directory> {
    Arc::new(sluice_directory::Directory::new(
        sluice_directory::DirectoryConfig {
            domains: vec!["example.test".into()],
            users: vec!["alice".into()],
            ..Default::default()
        },
    ))
}

pub fn env() -> HostEnv {
    env_with_dns("127.0.0.1:9".parse().unwrap(), Duration::from_millis(500))
}

/// A name server that never answers: a bound UDP socket nobody reads.
pub fn black_hole() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// A dnsmasq on a free loopback port, stopped (by PID) on drop.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    server: sluice_testkit::Dnsmasq,
}

impl Dnsmasq {
    /// Serves `2.0.0.127.zen.test` A 127.0.0.2 and a TXT record, MX records
    /// for `zen.test`, and NXDOMAIN for every other name in `zen.test`.
    pub fn start() -> Dnsmasq {
        let server = sluice_testkit::Dnsmasq::start(
            &[
                "--local-ttl=60",
                "--address=/2.0.0.127.zen.test/127.0.0.2",
                "--txt-record=2.0.0.127.zen.test,listed for testing",
                "--mx-host=zen.test,mx1.zen.test,10",
                "--local=/zen.test/",
            ],
            "2.0.0.127.zen.test",
        );
        Dnsmasq {
            addr: server.addr(),
            server,
        }
    }

    pub fn stop(&mut self) {
        self.server.stop();
    }
}

/// A real front end (one event loop) with the plugin host as its filter.
pub struct Server {
    pub addr: SocketAddr,
    pub host: Arc<PluginHost>,
    pub spool: sluice_spool::SpoolHandle,
    smtpd: Option<Smtpd>,
    owned_spool: Option<Spool>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(host: PluginHost) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path().join("spool"), SpoolConfig::default()).unwrap();
        // Loopback is trusted, so any recipient reaches the filters.
        let policy = RecipientPolicy::new(directory(), ["127.0.0.0/8".parse().unwrap()]);
        let mut config = SmtpdConfig::new(
            ServerConfig {
                hostname: "mx.example.test".into(),
                ..ServerConfig::default()
            },
            vec!["127.0.0.1:0".parse().unwrap()],
            policy,
        );
        // One loop: a slow plugin must not stall even the loop it shares.
        config.event_loops = 1;
        let host = Arc::new(host);
        let smtpd = Smtpd::start(config, spool.handle(), host.clone()).unwrap();
        Server {
            addr: smtpd.local_addrs()[0],
            host,
            spool: spool.handle(),
            smtpd: Some(smtpd),
            owned_spool: Some(spool),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(smtpd) = self.smtpd.take() {
            smtpd.stopper().stop();
            smtpd.wait();
        }
        if let Some(spool) = self.owned_spool.take() {
            spool.shutdown();
        }
    }
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut client = Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = client.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        client
    }

    /// One whole reply; returns its last line without CRLF.
    pub fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.len() >= 4, "connection closed or short line: {line:?}");
            if line.as_bytes()[3] == b' ' {
                return line.trim_end().to_owned();
            }
        }
    }

    pub fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
    }

    pub fn command(&mut self, line: &str) -> String {
        self.send(line);
        self.reply()
    }

    /// DATA with a small message; returns the final reply.
    pub fn data(&mut self, subject: &str) -> String {
        let go = self.command("DATA");
        assert!(go.starts_with("354 "), "{go}");
        self.command(&format!(
            "From: <a@client.test>\r\nSubject: {subject}\r\n\r\nHello.\r\n."
        ))
    }
}
