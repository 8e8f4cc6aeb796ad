//! The bytes between a connection's socket and its session: as they are, or
//! through TLS. The session (sans-IO) never knows which; only this pump
//! changes, as in rustls' own mio examples.
//!
//! Everything here is non-blocking: `WouldBlock` means "come back when the
//! socket is ready", exactly as for a plain socket.

use std::io::{self, Read, Write};

use crate::socket::Socket;
use rustls::ServerConnection;
use sluice_filter::TlsInfo;

/// How much plaintext rustls holds for a client that does not read, before
/// the session's own output backpressure takes over.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) enum Transport {
    Plain,
    Tls(Box<ServerConnection>),
}

impl Transport {
    pub(crate) fn tls(mut conn: ServerConnection) -> Transport {
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Transport::Tls(Box::new(conn))
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Whether a TLS handshake is still running.
    pub(crate) fn handshaking(&self) -> bool {
        matches!(self, Transport::Tls(tls) if tls.is_handshaking())
    }

    /// The session's facts once the handshake is over.
    pub(crate) fn info(&self) -> Option<TlsInfo> {
        let Transport::Tls(tls) = self else {
            return None;
        };
        if tls.is_handshaking() {
            return None;
        }
        Some(TlsInfo {
            version: tls
                .protocol_version()
                .map(sluice_tls::version_name)
                .unwrap_or_default(),
            cipher: tls
                .negotiated_cipher_suite()
                .map(sluice_tls::cipher_name)
                .unwrap_or_default(),
            sni: tls.server_name().map(str::to_owned),
        })
    }

    /// Reads plaintext into `buf`, as `Read::read` would: `Ok(0)` is the end
    /// of the stream (TCP EOF, or TLS close_notify), `WouldBlock` means
    /// nothing more now. A TLS protocol error sends its alert and is
    /// `InvalidData`.
    pub(crate) fn read(&mut self, stream: &mut Socket, buf: &mut [u8]) -> io::Result<usize> {
        let tls = match self {
            Transport::Plain => return stream.read(buf),
            Transport::Tls(tls) => tls,
        };
        loop {
            // What is already decrypted first: rustls refuses more records
            // while its plaintext buffer is full.
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The TCP stream ended without close_notify: an end all the
                // same (SMTP has its own end of data; a cut message is
                // never accepted).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.read_tls(stream)? == 0 {
                return Ok(0);
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the client why (the alert), best effort.
                let _ = tls.write_tls(stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages, alerts, session tickets.
            flush_tls(tls, stream)?;
        }
    }

    /// Writes as much of `data` (plaintext) as the socket takes now;
    /// returns how much was taken. With TLS, what is taken may still sit in
    /// rustls' buffer: [`Transport::pending`] says so.
    pub(crate) fn write(&mut self, stream: &mut Socket, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain => stream.write(data),
            Transport::Tls(tls) => {
                let taken = tls.writer().write(data)?;
                flush_tls(tls, stream)?;
                if taken == 0 && !data.is_empty() {
                    // rustls' buffer is full and the socket takes nothing.
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(taken)
            }
        }
    }

    /// Writes TLS records still waiting (handshake messages, data rustls
    /// buffered); `WouldBlock` is not an error here.
    pub(crate) fn flush(&mut self, stream: &mut Socket) -> io::Result<()> {
        match self {
            Transport::Plain => Ok(()),
            Transport::Tls(tls) => flush_tls(tls, stream),
        }
    }

    /// Whether records are waiting for the socket.
    pub(crate) fn pending(&self) -> bool {
        matches!(self, Transport::Tls(tls) if tls.wants_write())
    }

    /// Says goodbye inside TLS (close_notify), best effort; nothing to a
    /// client that never finished its handshake.
    pub(crate) fn close(&mut self, stream: &mut Socket) {
        if let Transport::Tls(tls) = self
            && !tls.is_handshaking()
        {
            tls.send_close_notify();
            let _ = flush_tls(tls, stream);
        }
    }
}

fn flush_tls(tls: &mut ServerConnection, stream: &mut Socket) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
