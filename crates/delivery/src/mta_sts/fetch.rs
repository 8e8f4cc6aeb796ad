//! One HTTPS GET of a policy (RFC 8461 §3.3): the certificate verified for
//! `mta-sts.<domain>`, no redirects, the size and the time bounded. HTTP/1.0
//! keeps the server from chunking the body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

/// The most a policy response may be, headers included.
const MAX_RESPONSE: usize = 64 * 1024;

/// GETs `/.well-known/mta-sts.txt` from `host` at one of `addrs`, within
/// `limit` in all; returns the body of a `200` response.
pub(super) fn get_policy(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    addrs: &[SocketAddr],
    limit: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no address");
    for addr in addrs {
        match get_from(config.clone(), host, *addr, deadline) {
            Ok(body) => return Ok(body),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

fn get_from(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<String, String> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timed out".to_owned())
    };
    let tcp = TcpStream::connect_timeout(&addr, left()?).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\nUser-Agent: Sluice\r\n\r\n"
    );
    tls.sock
        .set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        tls.sock
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.len() > MAX_RESPONSE {
                    return Err(format!("the response is over {MAX_RESPONSE} octets"));
                }
            }
            // The server closed TCP without close_notify: HTTP/1.0 ends at
            // the close anyway, and the length is checked below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    parse_response(&response)
}

/// The body of a `200 OK` with a `text/plain` policy; anything else is an
/// error that names it (redirects are not followed: §3.3).
pub(super) fn parse_response(response: &[u8]) -> Result<String, String> {
    let end = memchr::memmem::find(response, b"\r\n\r\n").ok_or("no end of the headers")?;
    let head = String::from_utf8_lossy(&response[..end]);
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("the server answered {status:?}"));
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type")
            && !value.to_ascii_lowercase().starts_with("text/plain")
        {
            return Err(format!("the policy is {value}, not text/plain"));
        }
        if name.eq_ignore_ascii_case("content-length")
            && value.parse::<usize>().ok() != Some(body.len())
        {
            return Err("the response is cut short".into());
        }
    }
    String::from_utf8(body.to_vec()).map_err(|_| "the policy is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_plain_200_is_a_policy() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_response(ok).unwrap(), "hello");
        let moved = b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://x/\r\n\r\n";
        assert!(parse_response(moved).unwrap_err().contains("301"));
        let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>";
        assert!(parse_response(html).unwrap_err().contains("text/html"));
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort";
        assert!(parse_response(cut).unwrap_err().contains("cut short"));
    }
}
