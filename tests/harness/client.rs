//! A raw-socket SMTP client for exact-byte dialogs: it sends exactly the
//! bytes a test gives it and returns the server's replies as they came.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long a test waits for any one reply.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One whole (possibly multi-line) reply.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, after the code and its separator.
    pub lines: Vec<String>,
    /// The reply exactly as received, CRLFs included.
    pub raw: String,
}

impl Reply {
    /// The first line's text.
    pub fn text(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }

    /// Whether the reply is `status`: a code and an RFC 3463 enhanced code
    /// (`"250 2.1.5"`), which every line of the reply must carry (RFC 2034
    /// §4), or a code alone (`"354"`, `"220"`) for the replies that carry
    /// none.
    pub fn has_status(&self, status: &str) -> bool {
        let (code, enhanced) = match status.split_once(' ') {
            Some((code, enhanced)) => (code, Some(enhanced)),
            None => (status, None),
        };
        let code_matches = code.parse::<u16>().is_ok_and(|c| c == self.code);
        code_matches
            && enhanced.is_none_or(|e| self.lines.iter().all(|l| l.split(' ').next() == Some(e)))
    }

    /// The queue id of a `250 2.0.0 Ok: queued as <id>` reply.
    pub fn queue_id(&self) -> Option<String> {
        if self.code != 250 {
            return None;
        }
        self.text()
            .split("queued as ")
            .nth(1)
            .map(|id| id.trim().to_string())
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.raw)
    }
}

#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects (5 s bound) and returns without reading the greeting.
    pub fn connect_raw(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client { stream, reader })
    }

    /// Like [`Client::connect_raw`], but from the local address `local_ip`
    /// (any of 127.0.0.0/8 on loopback), so that the server sees the client
    /// as that address: DNSBL test entries, trusted and untrusted networks.
    pub fn connect_raw_from(local_ip: IpAddr, addr: SocketAddr) -> io::Result<Client> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(local_ip, 0).into())?;
        socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client { stream, reader })
    }

    /// Connects from `local_ip` and checks the `220` greeting.
    pub fn connect_from(local_ip: IpAddr, addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw_from(local_ip, addr)
            .unwrap_or_else(|e| panic!("connect from {local_ip} to {addr}: {e}"));
        c.expect("220");
        c
    }

    /// Connects and checks the `220` greeting.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        c.expect("220");
        c
    }

    /// Connects, checks the greeting and says `EHLO client.example`.
    pub fn connect_ehlo(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        c.command_expect("EHLO client.example", "250");
        c
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream
            .set_read_timeout(Some(t))
            .expect("set the read timeout");
    }

    /// Writes every byte in one `write_all`.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .expect("send to the server");
    }

    /// Writes every byte, returning the error instead of panicking (for a
    /// test that expects the server to go away).
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.stream.write_all(bytes.as_ref())
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n"));
        self.read_reply()
    }

    /// Sends one command line and panics unless the reply has `status`
    /// (see [`Reply::has_status`]).
    #[track_caller]
    pub fn command_expect(&mut self, line: &str, status: &str) -> Reply {
        let r = self.command(line);
        assert!(
            r.has_status(status),
            "{line:?}: expected {status}, got {r:?}"
        );
        r
    }

    /// Reads one whole reply; panics on timeout, EOF or a malformed line.
    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    /// Reads one whole reply.
    pub fn try_read_reply(&mut self) -> io::Result<Reply> {
        read_reply_from(&mut self.reader)
    }

    /// The socket, and how many bytes were read from it but not yet as a
    /// reply: after `220` to STARTTLS that must be 0 (what the server said
    /// in clear after it would otherwise pass for words said inside TLS).
    pub fn into_parts(self) -> (TcpStream, usize) {
        let buffered = self.reader.buffer().len();
        (self.stream, buffered)
    }

    /// Reads a reply and panics unless it has `status` (see
    /// [`Reply::has_status`]).
    #[track_caller]
    pub fn expect(&mut self, status: &str) -> Reply {
        let r = self.read_reply();
        assert!(r.has_status(status), "expected {status}, got {r:?}");
        r
    }

    /// Reads a reply and panics unless it is exactly `raw` (CRLFs included).
    pub fn expect_raw(&mut self, raw: &str) -> Reply {
        let r = self.read_reply();
        assert_eq!(r.raw, raw);
        r
    }

    /// Panics unless the server closes the connection (EOF or reset)
    /// before the read timeout, with nothing more said.
    pub fn expect_closed(&mut self) {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(_) => panic!(
                "expected the connection closed, got {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Err(e) => panic!("expected the connection closed: {e}"),
        }
    }

    /// One whole transaction on this (greeted) connection; returns the
    /// reply to the end of DATA. `content` is sent as is, then `.` CRLF: it
    /// must end with CRLF and be dot-stuffed already.
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

    /// Like [`Client::transaction`], but returns the first refusal (of
    /// MAIL, RCPT, DATA or the content) as `Ok`, and a broken connection as
    /// `Err`, instead of panicking.
    pub fn try_transaction(
        &mut self,
        from: &str,
        rcpts: &[&str],
        content: &[u8],
    ) -> io::Result<Reply> {
        let steps = std::iter::once((format!("MAIL FROM:<{from}>"), 250))
            .chain(rcpts.iter().map(|r| (format!("RCPT TO:<{r}>"), 250)))
            .chain(std::iter::once(("DATA".to_string(), 354)));
        for (line, code) in steps {
            self.try_send(format!("{line}\r\n"))?;
            let r = self.try_read_reply()?;
            if r.code != code {
                return Ok(r);
            }
        }
        let mut buf = content.to_vec();
        buf.extend_from_slice(b".\r\n");
        self.try_send(buf)?;
        self.try_read_reply()
    }
}

/// Reads one whole (possibly multi-line) reply from `reader`.
pub(crate) fn read_reply_from(reader: &mut impl BufRead) -> io::Result<Reply> {
    let mut raw = String::new();
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            let what = if raw.is_empty() {
                "connection closed"
            } else {
                "connection closed mid-reply"
            };
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{what} after {raw:?}"),
            ));
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        raw.push_str(&line);
        let malformed = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed reply line {line:?}"),
            )
        };
        let body = line.strip_suffix("\r\n").ok_or_else(malformed)?;
        let code = body
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(malformed)?;
        let sep = body.as_bytes().get(3).copied();
        lines.push(body.get(4..).unwrap_or("").to_string());
        match sep {
            Some(b'-') => continue,
            Some(b' ') | None => return Ok(Reply { code, lines, raw }),
            Some(_) => return Err(malformed()),
        }
    }
}

/// Connects, says EHLO, sends one message and QUITs; returns the queue id
/// of the `250`, panicking on anything else.
pub fn send_message(addr: SocketAddr, from: &str, rcpts: &[&str], content: &[u8]) -> String {
    match try_send_message(addr, from, rcpts, content) {
        Ok(id) => id,
        Err(r) => panic!("message refused: {r:?}"),
    }
}

/// Like [`send_message`], but returns the final reply when it is not `250`.
pub fn try_send_message(
    addr: SocketAddr,
    from: &str,
    rcpts: &[&str],
    content: &[u8],
) -> Result<String, Reply> {
    let mut c = Client::connect_ehlo(addr);
    let r = c.transaction(from, rcpts, content);
    let id = r.queue_id().ok_or(r)?;
    c.command_expect("QUIT", "221 2.0.0");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::Reply;

    fn reply(raw: &str) -> Reply {
        let lines: Vec<&str> = raw.split_terminator("\r\n").collect();
        Reply {
            code: lines[0][..3].parse().unwrap(),
            lines: lines.iter().map(|l| l[4..].to_string()).collect(),
            raw: raw.to_string(),
        }
    }

    #[test]
    fn a_status_names_the_code_and_the_enhanced_code_of_every_line() {
        let ok = reply("250 2.1.5 Ok\r\n");
        assert!(ok.has_status("250 2.1.5"));
        assert!(ok.has_status("250"));
        assert!(!ok.has_status("250 2.1.0"));
        assert!(!ok.has_status("251 2.1.5"));
        let ragged = reply("550-5.7.1 Refused\r\n550 see the policy\r\n");
        assert!(ragged.has_status("550"));
        assert!(!ragged.has_status("550 5.7.1"), "RFC 2034: on every line");
        assert!(!reply("354 End data\r\n").has_status("354 2.0.0"));
    }
}
