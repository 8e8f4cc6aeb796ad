//! The next hop for a recipient domain (RFC 5321 §5.1): a configured route,
//! the smarthost, or the domain's MX records.
//!
//! Routing never bounces mail for a fault of our own configuration: when a
//! configured route or smarthost cannot be resolved, the answer is to try
//! again later. Only what the domain's own DNS says (it does not exist, it
//! accepts no mail) is permanent.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use sluice_dns::{LookupError, Resolver};
use sluice_smtp::{AddressLiteral, Domain};

use crate::Outcome;

/// Why a domain (or a configured next hop) has no next hop to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// A configured route, smarthost or LMTP target does not parse: our
    /// configuration, so the mail waits for the operator.
    InvalidTarget { target: String, problem: String },
    /// A configured next hop does not resolve (no address, or DNS failed):
    /// also ours to fix, so the mail waits.
    UnresolvedTarget { target: String, problem: String },
    /// The domain or address literal cannot be a destination (NXDOMAIN, a
    /// malformed name, a general address literal).
    BadDestination { domain: String, problem: String },
    /// RFC 7505: the domain publishes a null MX, it accepts no mail.
    NullMx { domain: String },
    /// Neither the MX hosts nor the domain itself have an address.
    NoAddress { domain: String, via_mx: bool },
    /// DNS did not answer, or answered SERVFAIL: try again later.
    Dns {
        domain: String,
        /// What was being looked up: "MX records", "MX hosts", "addresses".
        lookup: &'static str,
        problem: String,
    },
}

impl RouteError {
    /// The outcome for every recipient of the domain: what the domain's
    /// own DNS says is permanent, anything of ours or temporary defers.
    pub fn outcome(&self) -> Outcome {
        match self {
            RouteError::InvalidTarget { target, problem } => Outcome::local(
                451,
                (4, 3, 5),
                format!("Invalid next hop {target:?} in the configuration: {problem}"),
            ),
            RouteError::UnresolvedTarget { target, problem } => Outcome::local(
                451,
                (4, 4, 3),
                format!("Cannot resolve the configured next hop {target}: {problem}"),
            ),
            RouteError::BadDestination { domain, problem } => Outcome::local(
                550,
                (5, 1, 2),
                format!("Bad destination system address: {domain}: {problem}"),
            ),
            RouteError::NullMx { domain } => Outcome::local(
                556,
                (5, 1, 10),
                format!("Recipient address rejected: {domain} does not accept mail (null MX)"),
            ),
            RouteError::NoAddress {
                domain,
                via_mx: true,
            } => Outcome::local(
                550,
                (5, 4, 4),
                format!("Unable to route: no MX host of {domain} has an address"),
            ),
            RouteError::NoAddress {
                domain,
                via_mx: false,
            } => Outcome::local(
                550,
                (5, 4, 4),
                format!("Unable to route: {domain} has no MX or address records"),
            ),
            RouteError::Dns {
                domain,
                lookup,
                problem,
            } => Outcome::local(
                451,
                (4, 4, 3),
                format!("DNS lookup of the {lookup} of {domain} failed: {problem}"),
            ),
        }
    }

    /// Whether the condition may pass (the mail waits) rather than being
    /// the destination's final word.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            RouteError::InvalidTarget { .. }
                | RouteError::UnresolvedTarget { .. }
                | RouteError::Dns { .. }
        )
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.outcome().reply())
    }
}

impl std::error::Error for RouteError {}

/// The SMTP port (RFC 5321 §4.5.4.2 names no other for relaying).
pub const SMTP_PORT: u16 = 25;

/// Where mail goes; built by the binary from its configuration. Which name
/// servers to ask is the [`Resolver`]'s business, shared with the rest of
/// the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteConfig {
    /// Static routes: recipient domain (lower-case) to `host:port` or
    /// `[ip]:port` (the port defaults to 25). They win over everything else.
    pub routes: BTreeMap<String, String>,
    /// `host:port` that takes all other mail (an outbound relay) instead of
    /// the domains' MX hosts.
    pub smarthost: Option<String>,
}

/// One host to try, with every address it has; hops come in the order to try
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The MX host, route target or domain, for logs and DSNs (Remote-MTA).
    pub host: String,
    pub addrs: Vec<SocketAddr>,
    /// The MX preference; 0 for routes, the smarthost and implicit MX.
    pub preference: u16,
    /// Found through the domain's MX records (or its implicit MX), so its
    /// MTA-STS policy applies; not for routes, the smarthost or literals.
    pub from_mx: bool,
}

/// Finds next hops. Cheap to share between delivery threads (`Send + Sync`);
/// DNS answers are cached in the resolver.
#[derive(Debug)]
pub struct Router {
    routes: BTreeMap<String, Target>,
    smarthost: Option<Target>,
    smtp_port: u16,
    dns: Resolver,
}

impl Router {
    /// Checks every route and the smarthost; names are looked up through
    /// `dns`.
    pub fn new(config: RouteConfig, dns: Resolver) -> Result<Router, RouteError> {
        let parse = |target: &str| {
            Target::parse(target, Some(SMTP_PORT)).map_err(|e| RouteError::InvalidTarget {
                target: target.to_owned(),
                problem: e.to_string(),
            })
        };
        let routes = config
            .routes
            .iter()
            .map(|(domain, target)| Ok((normalize(domain).into_owned(), parse(target)?)))
            .collect::<Result<_, RouteError>>()?;
        let smarthost = config.smarthost.as_deref().map(parse).transpose()?;
        Ok(Router {
            routes,
            smarthost,
            smtp_port: SMTP_PORT,
            dns,
        })
    }

    /// The port for MX hosts, implicit MX and address literals, 25 unless
    /// changed: for test set-ups, and for sites whose every next hop listens
    /// elsewhere.
    pub fn with_smtp_port(mut self, port: u16) -> Router {
        self.smtp_port = port;
        self
    }

    /// The next hops for a recipient domain, in the order to try them:
    /// a route for exactly this domain, else the smarthost, else the MX
    /// records by preference (equal ones shuffled, RFC 5321 §5.1), each
    /// resolved to its addresses; no MX means the domain's own addresses
    /// (implicit MX). An address literal (`[192.0.2.1]`) is its own next hop.
    ///
    /// Errors say why there is nothing to try ([`RouteError::outcome`] is
    /// what every recipient of the domain gets): a null MX (RFC 7505) fails
    /// with `556 5.1.10`, a domain that does not exist with `550 5.1.2`, a
    /// DNS failure or timeout defers with `451 4.4.3`.
    pub fn next_hops(&self, domain: &str) -> Result<Vec<NextHop>, RouteError> {
        let domain = normalize(domain);
        if let Some(target) = self.routes.get(domain.as_ref()).or(self.smarthost.as_ref()) {
            return self.resolve(target);
        }
        if domain.starts_with('[') {
            return self.literal(&domain);
        }
        self.mx(&domain)
    }

    /// The key for per-destination concurrency: the route or smarthost
    /// target when one applies (every domain routed there shares it), else
    /// the domain.
    pub fn destination_key(&self, domain: &str) -> Arc<str> {
        let domain = normalize(domain);
        match self.routes.get(domain.as_ref()).or(self.smarthost.as_ref()) {
            // Shared: every message routed there names it.
            Some(target) => target.text.clone(),
            None => domain.as_ref().into(),
        }
    }

    /// Resolves a `host:port`, `[ip]:port` or `[ip]` target outside the
    /// routing table (an LMTP server); `default_port` for a target without one.
    pub(crate) fn resolve_target(
        &self,
        target: &str,
        default_port: Option<u16>,
    ) -> Result<Vec<NextHop>, RouteError> {
        let target =
            Target::parse(target, default_port).map_err(|e| RouteError::InvalidTarget {
                target: target.to_owned(),
                problem: e.to_string(),
            })?;
        self.resolve(&target)
    }

    fn resolve(&self, target: &Target) -> Result<Vec<NextHop>, RouteError> {
        let ips = match &target.host {
            TargetHost::Ip(ip) => vec![*ip],
            // Our own configuration: whatever goes wrong here, an operator
            // fixes it, so the mail waits rather than bounces.
            TargetHost::Name(name) => match self.dns.addresses(&[name]).remove(0) {
                Ok(ips) if !ips.is_empty() => ips,
                Ok(_) => return Err(target_error(target, "no address records")),
                Err(e) => return Err(target_error(target, &describe(&e))),
            },
        };
        Ok(vec![NextHop {
            host: target.host_text.clone(),
            addrs: ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, target.port))
                .collect(),
            preference: 0,
            from_mx: false,
        }])
    }

    fn literal(&self, domain: &str) -> Result<Vec<NextHop>, RouteError> {
        let ip = match Domain::parse(domain) {
            Some(Domain::Literal(AddressLiteral::Ipv4(ip))) => IpAddr::V4(ip),
            Some(Domain::Literal(AddressLiteral::Ipv6(ip))) => IpAddr::V6(ip),
            _ => {
                return Err(RouteError::BadDestination {
                    domain: domain.to_owned(),
                    problem: "cannot route to this address literal".to_owned(),
                });
            }
        };
        Ok(vec![NextHop {
            host: domain.to_owned(),
            addrs: vec![SocketAddr::new(ip, self.smtp_port)],
            preference: 0,
            from_mx: false,
        }])
    }

    fn mx(&self, domain: &str) -> Result<Vec<NextHop>, RouteError> {
        let mut records = match self.dns.mx(domain) {
            Ok(records) => records,
            Err(LookupError::NoRecords { .. }) => return self.implicit_mx(domain),
            Err(e @ (LookupError::NoSuchName { .. } | LookupError::InvalidName(_))) => {
                return Err(RouteError::BadDestination {
                    domain: domain.to_owned(),
                    problem: describe(&e),
                });
            }
            Err(LookupError::Temporary(e)) => {
                return Err(RouteError::Dns {
                    domain: domain.to_owned(),
                    lookup: "MX records",
                    problem: e,
                });
            }
        };
        // RFC 7505 §3: MX "." says the domain takes no mail at all. Should it
        // stand beside real MX records (which §3 forbids), those are used.
        records.retain(|(_, host)| !host.is_empty());
        if records.is_empty() {
            return Err(RouteError::NullMx {
                domain: domain.to_owned(),
            });
        }
        records.sort_by_key(|&(preference, _)| preference);
        shuffle_equal_preferences(&mut records);
        let mut seen = std::collections::HashSet::new();
        records.retain(|(_, host)| seen.insert(host.clone()));

        let hosts: Vec<&str> = records.iter().map(|(_, host)| host.as_str()).collect();
        let mut hops = Vec::with_capacity(records.len());
        let mut temporary = None;
        for ((preference, host), result) in records.iter().zip(self.dns.addresses(&hosts)) {
            match result {
                Ok(ips) if !ips.is_empty() => hops.push(NextHop {
                    host: host.clone(),
                    addrs: ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, self.smtp_port))
                        .collect(),
                    preference: *preference,
                    from_mx: true,
                }),
                Ok(_) => {}
                Err(LookupError::Temporary(e)) => temporary = Some(format!("{host}: {e}")),
                Err(_) => {}
            }
        }
        if !hops.is_empty() {
            return Ok(hops);
        }
        Err(match temporary {
            Some(problem) => RouteError::Dns {
                domain: domain.to_owned(),
                lookup: "MX hosts",
                problem,
            },
            None => RouteError::NoAddress {
                domain: domain.to_owned(),
                via_mx: true,
            },
        })
    }

    /// RFC 5321 §5.1: without MX records the domain itself is the mail host.
    fn implicit_mx(&self, domain: &str) -> Result<Vec<NextHop>, RouteError> {
        match self.dns.addresses(&[domain]).remove(0) {
            Ok(ips) if !ips.is_empty() => Ok(vec![NextHop {
                host: domain.to_owned(),
                addrs: ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, self.smtp_port))
                    .collect(),
                preference: 0,
                from_mx: true,
            }]),
            Ok(_) | Err(LookupError::NoRecords { .. } | LookupError::NoSuchName { .. }) => {
                Err(RouteError::NoAddress {
                    domain: domain.to_owned(),
                    via_mx: false,
                })
            }
            Err(LookupError::InvalidName(problem)) => Err(RouteError::BadDestination {
                domain: domain.to_owned(),
                problem,
            }),
            Err(LookupError::Temporary(problem)) => Err(RouteError::Dns {
                domain: domain.to_owned(),
                lookup: "addresses",
                problem,
            }),
        }
    }
}

/// A configured next hop: `host`, `host:port`, `ip:port`, `[ip]` or
/// `[ip]:port` (`[IPv6:…]` as in RFC 5321 literals too).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// As configured: the destination key.
    text: Arc<str>,
    host: TargetHost,
    /// `host` as a next hop names it (`[192.0.2.1]`, or the name), written
    /// once: a smarthost resolves for every message.
    host_text: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetHost {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Ip(ip) => write!(f, "[{ip}]"),
            TargetHost::Name(name) => f.write_str(name),
        }
    }
}

impl Target {
    fn parse(text: &str, default_port: Option<u16>) -> Result<Target, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: no closing ']'"))?;
            let inside = inside
                .strip_prefix("IPv6:")
                .or_else(|| inside.strip_prefix("ipv6:"))
                .unwrap_or(inside);
            let ip: IpAddr = inside
                .parse()
                .map_err(|_| format!("{text:?}: {inside:?} is not an IP address"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("{text:?}: expected ':port' after the address"))?,
                ),
            };
            (TargetHost::Ip(ip), port)
        } else {
            let (host, port) = match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            };
            if host.contains(':') {
                return Err(format!("{text:?}: write an IPv6 address as [address]:port"));
            }
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => TargetHost::Ip(ip),
                Err(_) => match Domain::parse(host) {
                    Some(Domain::Name(_)) => TargetHost::Name(normalize(host).into_owned()),
                    _ => return Err(format!("{text:?}: {host:?} is not a host name")),
                },
            };
            (host, port)
        };
        let port = match port {
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(format!("{text:?}: {port:?} is not a port")),
            },
            None => default_port.ok_or_else(|| format!("{text:?}: no port"))?,
        };
        Ok(Target {
            text: text.into(),
            host_text: host.to_string(),
            host,
            port,
        })
    }
}

/// Domains compare case-insensitively (RFC 5321 §2.4), and `example.org.`
/// is `example.org`.
pub(crate) fn normalize(domain: &str) -> std::borrow::Cow<'_, str> {
    // Asked once per recipient: a name already in normal form (nearly all)
    // is used as it is.
    let trimmed = domain.trim_end_matches('.');
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

/// RFC 5321 §5.1: hosts of equal preference are tried in random order, which
/// spreads the load between them.
fn shuffle_equal_preferences(records: &mut [(u16, String)]) {
    // A fresh RandomState is seeded from the OS, and then per instance from
    // a counter: plenty for spreading load, and no dependency for it.
    let mut state = RandomState::new().hash_one(records.len()) | 1;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for run in records.chunk_by_mut(|a, b| a.0 == b.0) {
        for i in (1..run.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            run.swap(i, j);
        }
    }
}

fn describe(error: &LookupError) -> String {
    match error {
        LookupError::NoSuchName { .. } => "no such domain (NXDOMAIN)".to_owned(),
        LookupError::NoRecords { .. } => "no address records".to_owned(),
        LookupError::InvalidName(e) | LookupError::Temporary(e) => e.clone(),
    }
}

fn target_error(target: &Target, problem: &str) -> RouteError {
    RouteError::UnresolvedTarget {
        target: target.text.to_string(),
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("relay.example.net:2525", Some(25)).unwrap();
        assert_eq!(t.host, TargetHost::Name("relay.example.net".into()));
        assert_eq!(t.port, 2525);
        let t = Target::parse("Relay.Example.NET", Some(25)).unwrap();
        assert_eq!(
            (t.host, t.port),
            (TargetHost::Name("relay.example.net".into()), 25)
        );
        let t = Target::parse("[192.0.2.1]:587", Some(25)).unwrap();
        assert_eq!(t.host, TargetHost::Ip("192.0.2.1".parse().unwrap()));
        assert_eq!(t.port, 587);
        let t = Target::parse("[IPv6:2001:db8::1]", Some(25)).unwrap();
        assert_eq!(
            (t.host, t.port),
            (TargetHost::Ip("2001:db8::1".parse().unwrap()), 25)
        );
        let t = Target::parse("192.0.2.7:24", None).unwrap();
        assert_eq!(t.host, TargetHost::Ip("192.0.2.7".parse().unwrap()));

        for bad in [
            "2001:db8::1:25",
            "[192.0.2.1",
            "[192.0.2.1]x",
            "[example.org]:25",
            "host:0",
            "host:99999",
            "host:",
            "bad host:25",
            "",
        ] {
            assert!(Target::parse(bad, Some(25)).is_err(), "{bad:?} accepted");
        }
        assert!(Target::parse("lmtp.example.org", None).is_err());
    }

    #[test]
    fn shuffling_keeps_preference_order_and_mixes_equals() {
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut records: Vec<(u16, String)> = vec![
                (5, "a".into()),
                (10, "b".into()),
                (10, "c".into()),
                (10, "d".into()),
                (20, "e".into()),
            ];
            shuffle_equal_preferences(&mut records);
            assert_eq!(records[0].1, "a");
            assert_eq!(records[4].1, "e");
            let mut middle: Vec<&str> = records[1..4].iter().map(|r| r.1.as_str()).collect();
            seen_first.insert(middle[0].to_owned());
            middle.sort_unstable();
            assert_eq!(middle, ["b", "c", "d"]);
        }
        // Each of the three comes first about a third of the time.
        assert_eq!(seen_first.len(), 3, "{seen_first:?}");
    }
}
