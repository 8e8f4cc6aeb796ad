//! TLS for the end-to-end tests: certificates from a test CA written where
//! the server's `[tls]` points, and a rustls client that speaks SMTP over
//! STARTTLS or implicit TLS, byte for byte like [`Client`].

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use sluice_testkit::tls::{LeafSpec, TestCa};

use crate::client::{READ_TIMEOUT, read_reply_from};
use crate::{Client, HOSTNAME, Reply};

/// A test CA and the server's certificate files, in a directory of their own.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    /// The CA certificate, for clients.
    pub ca_file: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The serial of the certificate the files hold now (upper-case hex).
    pub serial: String,
}

impl std::fmt::Debug for TestCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCerts")
            .field("cert", &self.cert)
            .field("serial", &self.serial)
            .finish()
    }
}

impl TestCerts {
    /// An ECDSA certificate for the test server's hostname (and for
    /// 127.0.0.1, for clients that check the name they connected to).
    pub fn new() -> TestCerts {
        let dir = tempfile::Builder::new()
            .prefix("sluice-tls-")
            .tempdir()
            .expect("a temp dir");
        let ca = TestCa::new();
        let ca_file = dir.path().join("ca.pem");
        ca.write_cert(&ca_file);
        let leaf = ca.leaf(&LeafSpec::new(&[HOSTNAME, "127.0.0.1"], 1));
        let (cert, key) = leaf.write(dir.path(), "mx", &ca);
        TestCerts {
            dir,
            ca,
            ca_file,
            cert,
            key,
            serial: leaf.serial,
        }
    }

    /// `[tls]` for the server's config, checking for renewals every second.
    pub fn config(&self) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nreload_check_secs = 1\nhandshake_timeout_secs = 2\n",
            self.cert.display(),
            self.key.display()
        )
    }

    /// Replaces the certificate files, as a renewal does; returns the new
    /// serial.
    pub fn renew(&mut self, spec: &LeafSpec<'_>) -> String {
        let leaf = self.ca.leaf(spec);
        // Written beside, then renamed over: what certbot's symlink swap
        // amounts to for a reader.
        let (cert, key) = leaf.write(self.dir.path(), "renewed", &self.ca);
        std::fs::rename(&key, &self.key).expect("replace the key");
        std::fs::rename(&cert, &self.cert).expect("replace the certificate");
        self.serial = leaf.serial.clone();
        leaf.serial
    }

    /// A client configuration that trusts the test CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in sluice_tls::certs::read_certificates(&self.ca_file).expect("the CA") {
            roots.add(cert).expect("a CA certificate");
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(sluice_tls::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl Default for TestCerts {
    fn default() -> Self {
        TestCerts::new()
    }
}

/// An SMTP client inside TLS.
pub struct TlsClient {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// The handshake on `stream`, for `name`, then nothing read yet.
    pub fn handshake(
        stream: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<TlsClient> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient {
            reader: BufReader::new(tls),
        })
    }

    /// Implicit TLS (an `smtps` listener): connect, handshake, read the
    /// greeting.
    pub fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut c = TlsClient::handshake(stream, config, HOSTNAME).expect("the handshake");
        c.expect("220");
        c
    }

    /// STARTTLS on a plain connection that has said EHLO: the `220`, then
    /// the handshake. Panics if the server said more in clear after its 220.
    pub fn starttls(mut plain: Client, config: Arc<rustls::ClientConfig>) -> TlsClient {
        plain.command_expect("STARTTLS", "220 2.0.0");
        let (stream, buffered) = plain.into_parts();
        assert_eq!(buffered, 0, "the server said more in clear after its 220");
        TlsClient::handshake(stream, config, HOSTNAME).expect("the handshake")
    }

    pub fn connection(&self) -> &ClientConnection {
        &self.reader.get_ref().conn
    }

    /// The serial of the certificate the server presented.
    pub fn peer_serial(&self) -> String {
        let chain = self
            .connection()
            .peer_certificates()
            .expect("a certificate");
        sluice_tls::certs::inspect(Path::new("peer"), chain)
            .expect("it parses")
            .serial
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.reader
            .get_ref()
            .sock
            .set_read_timeout(Some(t))
            .expect("set the read timeout");
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let tls = self.reader.get_mut();
        tls.write_all(bytes.as_ref()).expect("send inside TLS");
        tls.flush().expect("flush");
    }

    pub fn try_read_reply(&mut self) -> io::Result<Reply> {
        read_reply_from(&mut self.reader)
    }

    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    #[track_caller]
    pub fn expect(&mut self, status: &str) -> Reply {
        let r = self.read_reply();
        assert!(r.has_status(status), "expected {status}, got {r:?}");
        r
    }

    #[track_caller]
    pub fn command_expect(&mut self, line: &str, status: &str) -> Reply {
        self.send(format!("{line}\r\n"));
        let r = self.read_reply();
        assert!(
            r.has_status(status),
            "{line:?}: expected {status}, got {r:?}"
        );
        r
    }

    /// MAIL, RCPTs, DATA and the content (CRLF-terminated, dot-stuffed);
    /// returns the reply to the end of data.
    pub fn transaction(&mut self, from: &str, rcpts: &[&str], content: &[u8]) -> Reply {
        self.command_expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
        for r in rcpts {
            self.command_expect(&format!("RCPT TO:<{r}>"), "250 2.1.5");
        }
        self.command_expect("DATA", "354");
        let mut buf = content.to_vec();
        buf.extend_from_slice(b".\r\n");
        self.send(buf);
        self.read_reply()
    }
}

/// An HTTPS server on loopback that serves MTA-STS policies by `Host`:
/// `/.well-known/mta-sts.txt` of `mta-sts.<domain>` is `policies[domain]`.
/// Stops when dropped.
pub struct PolicyServer {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for PolicyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl PolicyServer {
    /// Serves with a certificate from `certs`' CA for every
    /// `mta-sts.<domain>` of `policies`.
    pub fn start(certs: &TestCerts, policies: &[(&str, &str)]) -> PolicyServer {
        use std::io::Read;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        let names: Vec<String> = policies
            .iter()
            .map(|(d, _)| format!("mta-sts.{d}"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (cert, key) =
            certs
                .ca
                .leaf(&LeafSpec::new(&names, 77))
                .write(certs.dir.path(), "mta-sts", &certs.ca);
        let tls = sluice_tls::ServerTls::load(sluice_tls::ServerTlsConfig {
            pairs: vec![sluice_tls::CertPair { cert, key }],
            min_version: sluice_tls::MinVersion::Tls12,
        })
        .expect("the policy server's certificate");
        let config = tls.config();
        let policies: std::collections::HashMap<String, String> = policies
            .iter()
            .map(|(d, p)| (format!("mta-sts.{d}"), p.to_string()))
            .collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (stopping, counting) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = stream else { continue };
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = StreamOwned::new(conn, tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counting.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&request).into_owned();
                let host = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Host: "))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                let response = match policies.get(&host) {
                    Some(policy) if text.starts_with("GET /.well-known/mta-sts.txt ") => format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{policy}",
                        policy.len()
                    ),
                    _ => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
                };
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        PolicyServer {
            addr,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
