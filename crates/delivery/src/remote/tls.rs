//! Which TLS a next hop gets: Postfix's security levels per destination,
//! opportunistic TLS that falls back to clear for a peer whose handshake
//! fails (remembered for a while), and what REQUIRETLS (RFC 8689), its
//! `TLS-Required: No` opt-out, and MTA-STS (RFC 8461) ask on top.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use sluice_smtp::Envelope;
use sluice_smtp::client::{CloseReason, RecipientResult, ReplyOrigin, TlsUse};
use sluice_tls::ClientTls;

use super::Remote;
use crate::Outcome;
use crate::mta_sts::Mode;
use crate::route::NextHop;

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
        self.per_domain
            .get(crate::route::normalize(domain).as_ref())
            .copied()
            .unwrap_or(self.level)
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

/// What one message asks of TLS on its way to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Demand {
    pub(super) level: Level,
    /// RFC 8689: verified TLS to a next hop that offers REQUIRETLS, or a
    /// bounce once every next hop was tried.
    pub(super) requiretls: bool,
}

impl Remote {
    /// What `envelope` (and the header of `body`) asks of TLS to `domain`.
    pub(super) fn demand(&self, domain: &str, envelope: &Envelope, body: &[u8]) -> Demand {
        let configured = self
            .tls
            .as_ref()
            .map_or(Level::None, |t| t.level_for(domain));
        let requiretls = envelope.params.requiretls;
        let level = if requiretls {
            Level::Verify
        } else if configured > Level::May && tls_optional(body) {
            // RFC 8689 §5: the sender would rather the message arrive than
            // wait for a policy to be met (ignored under REQUIRETLS).
            tracing::info!(domain, "TLS-Required: No: delivering with TLS if offered");
            Level::May
        } else {
            configured
        };
        Demand { level, requiretls }
    }

    /// RFC 8461 §5: for a domain with a policy in `enforce` mode, only the
    /// MX hosts it names, and only over verified TLS. `testing` only logs.
    /// Routes and the smarthost are our own choices, not the domain's MX:
    /// its policy does not apply to them.
    pub(super) fn apply_mta_sts(
        &self,
        domain: &str,
        hops: Vec<NextHop>,
        demand: &mut Demand,
        body: &[u8],
    ) -> Result<Vec<NextHop>, Outcome> {
        let Some(sts) = &self.mta_sts else {
            return Ok(hops);
        };
        if hops.is_empty() || !hops.iter().all(|h| h.from_mx) {
            return Ok(hops);
        }
        let Some(policy) = sts.policy(domain) else {
            return Ok(hops);
        };
        // In preference order: the policy filters, it never reorders.
        let refused: Vec<String> = hops
            .iter()
            .filter(|h| !policy.allows(&h.host))
            .map(|h| h.host.clone())
            .collect();
        match policy.mode {
            Mode::None => Ok(hops),
            Mode::Testing => {
                if !refused.is_empty() {
                    tracing::info!(
                        domain,
                        mx = %refused.join(","),
                        "MTA-STS testing: these MX hosts would be refused in enforce mode"
                    );
                }
                Ok(hops)
            }
            Mode::Enforce if !demand.requiretls && tls_optional(body) => {
                tracing::info!(
                    domain,
                    "TLS-Required: No: the MTA-STS policy is not applied"
                );
                Ok(hops)
            }
            Mode::Enforce => {
                if !refused.is_empty() {
                    tracing::info!(
                        domain,
                        mx = %refused.join(","),
                        "MTA-STS: MX hosts the policy does not name are skipped"
                    );
                }
                let allowed: Vec<NextHop> = hops
                    .into_iter()
                    .filter(|h| policy.allows(&h.host))
                    .collect();
                if allowed.is_empty() {
                    return Err(Outcome::local(
                        451,
                        (4, 7, 5),
                        format!(
                            "MTA-STS policy of {domain} names none of its MX hosts ({})",
                            refused.join(", ")
                        ),
                    ));
                }
                demand.level = demand.level.max(Level::Verify);
                Ok(allowed)
            }
        }
    }

    /// Speaks TLS to next hops as `policy` says.
    pub fn with_tls(mut self, policy: TlsPolicy) -> Remote {
        self.tls = Some(policy);
        self
    }
}

/// Whether a result comes from this host not meeting REQUIRETLS: no
/// STARTTLS, a failed or unverified handshake, or no REQUIRETLS offered.
pub(super) fn tls_shortfall(result: &RecipientResult, closed: &Option<CloseReason>) -> bool {
    let refused_here = result.origin == ReplyOrigin::Local
        && result.outcome.reply().enhanced() == Some(sluice_smtp::EnhancedCode::new(5, 7, 30));
    refused_here
        || matches!(
            closed,
            Some(CloseReason::TlsUnavailable(_) | CloseReason::TlsFailed(_))
        )
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
    fn a_domains_level_is_found_whatever_its_case_and_final_dot() {
        let dir = tempfile::tempdir().unwrap();
        let ca = sluice_testkit::tls::TestCa::new();
        ca.write_cert(&dir.path().join("ca.pem"));
        let client = ClientTls::new(Some(&dir.path().join("ca.pem"))).unwrap();
        let mut policy = TlsPolicy::new(client, Level::May);
        assert_eq!(policy.level_for("bank.example"), Level::May);
        policy.per_domain = [("bank.example".to_owned(), Level::Verify)].into();
        for asked in [
            "bank.example",
            "Bank.EXAMPLE",
            "bank.example.",
            "BANK.example.",
        ] {
            assert_eq!(policy.level_for(asked), Level::Verify, "{asked}");
        }
        assert_eq!(policy.level_for("other.example"), Level::May);
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
