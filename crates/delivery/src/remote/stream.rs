//! The socket under a client connection: TCP, a Unix socket (LMTP), or TCP
//! inside TLS after STARTTLS. Blocking, with the timeouts the connection
//! sets.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

#[derive(Debug)]
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Between a failed upgrade and the end of the connection.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection is gone")
}

impl Stream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Tls(s) => Some(&s.sock),
            Stream::Unix(_) | Stream::Gone => None,
        }
    }

    pub(super) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(timeout),
            other => other.tcp().ok_or_else(gone)?.set_read_timeout(timeout),
        }
    }

    pub(super) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(timeout),
            other => other.tcp().ok_or_else(gone)?.set_write_timeout(timeout),
        }
    }

    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    pub(super) fn tls(&self) -> Option<&ClientConnection> {
        match self {
            Stream::Tls(s) => Some(&s.conn),
            _ => None,
        }
    }

    /// Runs the TLS handshake on the TCP stream (blocking, within its
    /// timeouts). On error the stream is gone.
    pub(super) fn upgrade(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<(), String> {
        let Stream::Tcp(tcp) = std::mem::replace(self, Stream::Gone) else {
            return Err("STARTTLS on a connection that is not plain TCP".into());
        };
        let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            match tls.conn.complete_io(&mut tls.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // rustls' reason (a bad certificate, an alert) rather
                    // than the io wrapper's.
                    let why = e
                        .get_ref()
                        .map_or_else(|| e.to_string(), ToString::to_string);
                    let _ = tls.sock.shutdown(std::net::Shutdown::Both);
                    return Err(why);
                }
            }
        }
        *self = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Whether an idle connection is open and quiet, without waiting: a
    /// server that closed it or said anything unasked (a 421 at its idle
    /// timeout) makes it useless. Inside TLS, records are read and looked
    /// at: a TLS 1.3 server sends session tickets after the handshake,
    /// which is data on the socket but nothing said.
    pub(super) fn is_quiet(&mut self) -> bool {
        let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let peek = match self {
            Stream::Tcp(s) => socket2::SockRef::from(&*s).recv_with_flags(&mut byte, flags),
            Stream::Unix(s) => socket2::SockRef::from(&*s).recv_with_flags(&mut byte, flags),
            Stream::Gone => return false,
            Stream::Tls(tls) => return tls_is_quiet(tls),
        };
        matches!(peek, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Reads whatever TLS records wait, without blocking; quiet when they hold
/// no data and no close.
fn tls_is_quiet(tls: &mut StreamOwned<ClientConnection, TcpStream>) -> bool {
    loop {
        match tls.conn.read_tls(&mut DontWait(&tls.sock)) {
            Ok(0) => return false,
            Ok(_) => {
                let Ok(state) = tls.conn.process_new_packets() else {
                    return false;
                };
                if state.peer_has_closed() || state.plaintext_bytes_to_read() > 0 {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// A non-blocking read of the blocking socket, for rustls' `read_tls`.
struct DontWait<'a>(&'a TcpStream);

impl Read for DontWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sluice_sys::socket::recv_dontwait(self.0, buf)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => match s.read(buf) {
                // A server that closes TCP without close_notify after QUIT
                // or on error: an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
            Stream::Gone => Err(gone()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => {
                let n = s.write(buf)?;
                s.flush()?;
                Ok(n)
            }
            Stream::Gone => Err(gone()),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
            // One record per slice would be wasteful: the caller batches
            // bodies for TLS itself (see `Connection::write_body`).
            Stream::Tls(_) | Stream::Gone => {
                let first = bufs.iter().find(|b| !b.is_empty());
                first.map_or(Ok(0), |b| self.write(b))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::mpsc;

    use rustls::ServerConnection;
    use sluice_testkit::tls::{LeafSpec, TestCa};
    use sluice_tls::{CertPair, ClientTls, MinVersion, ServerTls, ServerTlsConfig};

    use super::*;

    /// What the test's TLS server does after the handshake, on cue.
    enum Then {
        KeyUpdate,
        Say(&'static [u8]),
        CloseNotify,
    }

    /// A TLS server on loopback that completes one handshake and then does
    /// each step it is sent; and a client stream upgraded to TLS with it.
    fn pair() -> (
        Stream,
        mpsc::Sender<Then>,
        std::thread::JoinHandle<()>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        ca.write_cert(&dir.path().join("ca.pem"));
        let (cert, key) =
            ca.leaf(&LeafSpec::new(&["mx.example.test"], 1))
                .write(dir.path(), "mx", &ca);
        let server_tls = ServerTls::load(ServerTlsConfig {
            pairs: vec![CertPair { cert, key }],
            min_version: MinVersion::Tls13,
        })
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (steps, next) = mpsc::channel::<Then>();
        let config = server_tls.config();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut tls = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            // Session tickets and all: everything the handshake sends.
            while tls.conn.wants_write() {
                tls.conn.write_tls(&mut tls.sock).unwrap();
            }
            for step in next {
                match step {
                    Then::KeyUpdate => tls.conn.refresh_traffic_keys().unwrap(),
                    Then::Say(text) => tls.conn.writer().write_all(text).unwrap(),
                    Then::CloseNotify => tls.conn.send_close_notify(),
                }
                while tls.conn.wants_write() {
                    tls.conn.write_tls(&mut tls.sock).unwrap();
                }
            }
        });
        let client = ClientTls::new(Some(&dir.path().join("ca.pem"))).unwrap();
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = Stream::Tcp(tcp);
        stream
            .upgrade(
                client.config(true),
                ServerName::try_from("mx.example.test").unwrap(),
            )
            .unwrap();
        (stream, steps, server, dir)
    }

    /// Waits until the server's last record has reached the client's socket.
    fn settle() {
        std::thread::sleep(Duration::from_millis(100));
    }

    /// A raw peek sees TLS records that say nothing (tickets, a key
    /// update): a cached connection must still count as quiet.
    #[test]
    fn records_without_data_leave_an_idle_tls_connection_quiet() {
        let (mut stream, steps, server, _dir) = pair();
        settle();
        assert!(stream.is_quiet(), "after the handshake's tickets");
        steps.send(Then::KeyUpdate).unwrap();
        settle();
        assert!(stream.is_quiet(), "after a key update");
        steps
            .send(Then::Say(b"421 4.4.2 idle too long\r\n"))
            .unwrap();
        settle();
        assert!(!stream.is_quiet(), "the server said something unasked");
        drop(steps);
        server.join().unwrap();
    }

    #[test]
    fn close_notify_makes_a_tls_connection_dead() {
        let (mut stream, steps, server, _dir) = pair();
        steps.send(Then::CloseNotify).unwrap();
        settle();
        assert!(!stream.is_quiet());
        drop(steps);
        server.join().unwrap();
    }
}
