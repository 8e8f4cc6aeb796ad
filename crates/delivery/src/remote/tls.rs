//! Which TLS a next hop gets: Postfix's security levels per destination,
//! opportunistic TLS that falls back to clear for a peer whose handshake
//! fails (remembered for a while), and what REQUIRETLS (RFC 8689), its
//! `TLS-Required: No` opt-out, and MTA-STS (RFC 8461) ask on top.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use sluice_smtp::client::TlsUse;
use sluice_tls::ClientTls;

/// Postfix's `smtp_tls_security_level`, for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// No STARTTLS.
    None,
    /// STARTTLS when offered, the certificate not verified; in clear when it
    /// is not offered, or when the handshake fails.
    #[default]
    May,
    /// TLS or nothing; the certificate not verified.
    Encrypt,
    /// TLS or nothing, with a certificate valid for the MX host name.
    Verify,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Verify => "verify",
        }
    }

    pub(super) fn tls_use(self) -> TlsUse {
        match self {
            Level::None => TlsUse::Off,
            Level::May => TlsUse::IfOffered,
            Level::Encrypt | Level::Verify => TlsUse::Required,
        }
    }
}

/// How delivery speaks TLS to next hops.
#[derive(Debug)]
pub struct TlsPolicy {
    pub client: ClientTls,
    /// For destinations without a level of their own.
    pub level: Level,
    /// Destination domain (lower case, no final dot) → its level.
    pub per_domain: HashMap<String, Level>,
    /// How long a peer whose STARTTLS handshake failed gets mail in clear
    /// at `may` before TLS is tried again.
    pub broken_hold: Duration,
}

impl TlsPolicy {
    pub fn new(client: ClientTls, level: Level) -> TlsPolicy {
        TlsPolicy {
            client,
            level,
            per_domain: HashMap::new(),
            broken_hold: Duration::from_secs(4 * 3600),
        }
    }

    /// The configured level for mail to `domain`.
    pub fn level_for(&self, domain: &str) -> Level {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.per_domain.get(&domain).copied().unwrap_or(self.level)
    }
}

/// The name a next hop's certificate must have, and the SNI to send: the MX
/// host, or the address of an address literal.
pub(super) fn server_name(host: &str, addr: SocketAddr) -> ServerName<'static> {
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.strip_prefix("IPv6:").or(Some(h)))
        .and_then(|h| h.parse::<std::net::IpAddr>().ok());
    if let Some(ip) = literal {
        return ServerName::IpAddress(ip.into());
    }
    ServerName::try_from(host.trim_end_matches('.').to_owned())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()))
}

/// Peers whose handshake failed at `may`, until when they get mail in clear.
#[derive(Debug, Default)]
pub(super) struct BrokenPeers {
    until: Mutex<HashMap<SocketAddr, Instant>>,
}

impl BrokenPeers {
    pub(super) fn mark(&self, addr: SocketAddr, hold: Duration) {
        self.lock().insert(addr, Instant::now() + hold);
    }

    pub(super) fn is_broken(&self, addr: SocketAddr) -> bool {
        let mut until = self.lock();
        match until.get(&addr) {
            Some(&t) if t > Instant::now() => true,
            Some(_) => {
                until.remove(&addr);
                false
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Instant>> {
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// RFC 8689 §5: a `TLS-Required: No` field in the header asks that TLS
/// policies (MTA-STS, required levels) not stop the message.
pub(super) fn tls_optional(message: &[u8]) -> bool {
    let end = memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    message[..end]
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = line.split_at(colon);
            name.eq_ignore_ascii_case(b"TLS-Required")
                .then(|| String::from_utf8_lossy(&value[1..]).trim().to_owned())
        })
        .any(|value| value.eq_ignore_ascii_case("no"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_required_no_is_read_from_the_header_only() {
        assert!(tls_optional(
            b"Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n"
        ));
        assert!(tls_optional(b"tls-required:   no  \r\n\r\n"));
        assert!(!tls_optional(b"TLS-Required: Yes\r\n\r\n"));
        assert!(!tls_optional(b"Subject: x\r\n\r\nTLS-Required: No\r\n"));
    }

    #[test]
    fn the_name_is_the_host_or_the_literal_address() {
        let addr: SocketAddr = "192.0.2.1:25".parse().unwrap();
        assert_eq!(
            server_name("mx.example.net.", addr),
            ServerName::try_from("mx.example.net").unwrap()
        );
        assert_eq!(
            server_name("[192.0.2.9]", addr),
            ServerName::IpAddress("192.0.2.9".parse::<std::net::IpAddr>().unwrap().into())
        );
    }

    #[test]
    fn broken_peers_are_forgotten_after_the_hold() {
        let broken = BrokenPeers::default();
        let a: SocketAddr = "192.0.2.1:25".parse().unwrap();
        assert!(!broken.is_broken(a));
        broken.mark(a, Duration::from_secs(60));
        assert!(broken.is_broken(a));
        broken.mark(a, Duration::ZERO);
        assert!(!broken.is_broken(a));
    }
}
