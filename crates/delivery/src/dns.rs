//! MX and address lookups, through hickory's resolver (its cache included).
//!
//! hickory is async only, and delivery threads are plain blocking threads, so
//! [`Dns`] owns a small tokio runtime and each lookup is a `block_on` on the
//! calling thread. The runtime is multi-threaded with one worker: the
//! resolver's background tasks (its UDP and TCP exchanges with the name
//! servers) then run on that worker whatever the callers do, and
//! `Runtime::block_on` may be called from any number of delivery threads at
//! once, which a current-thread runtime would serialize behind one driver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{ResolverBuilder, TokioResolver};

/// Why a lookup found nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// The name exists but has no record of the type asked for (NODATA).
    NoRecords,
    /// Not a domain name at all: asking again cannot help.
    InvalidName(String),
    /// SERVFAIL, REFUSED, a timeout, a network error: ask again later.
    Temporary(String),
}

pub(crate) struct Dns {
    // Dropped after the resolver, whose tasks live on it.
    resolver: TokioResolver,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("options", self.resolver.options())
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// A resolver that asks `nameservers` (UDP, then TCP for truncated
    /// answers), or the system's (`/etc/resolv.conf`) when there are none.
    pub(crate) fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Dns, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-dns")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the DNS runtime: {e}"))?;
        let provider = TokioRuntimeProvider::default();
        let mut builder: ResolverBuilder<TokioRuntimeProvider> = if nameservers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
        } else {
            let servers = nameservers.iter().map(name_server).collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options = builder.options_mut();
        options.timeout = timeout;
        // Mail routing is DNS only (RFC 5321 §5.1); a hosts file entry must
        // not quietly redirect a domain's mail.
        options.use_hosts_file = ResolveHosts::Never;
        // A before AAAA: a host without an IPv6 route would otherwise cost a
        // failed connection before every delivery.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = {
            let _context = runtime.enter();
            builder
                .build()
                .map_err(|e| format!("cannot build the DNS resolver: {e}"))?
        };
        Ok(Dns { resolver, runtime })
    }

    /// The MX records of `domain` as (preference, exchange); the exchange is
    /// lower-case without the final dot, and "" for the root (a null MX).
    pub(crate) fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, LookupError> {
        let name = fqdn(domain)?;
        let lookup = self
            .runtime
            .block_on(self.resolver.mx_lookup(name))
            .map_err(classify)?;
        let records: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::MX(mx) => Some((mx.preference, host_name(&mx.exchange))),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            // Only a CNAME came back, say.
            return Err(LookupError::NoRecords);
        }
        Ok(records)
    }

    /// The addresses of each host, looked up concurrently, in the order given.
    pub(crate) fn addresses(&self, hosts: &[&str]) -> Vec<Result<Vec<IpAddr>, LookupError>> {
        let lookups: Vec<_> = hosts
            .iter()
            .map(|host| {
                let resolver = self.resolver.clone();
                let name = fqdn(host);
                self.runtime.spawn(async move {
                    let lookup = resolver.lookup_ip(name?).await.map_err(classify)?;
                    Ok(lookup.iter().collect::<Vec<IpAddr>>())
                })
            })
            .collect();
        self.runtime.block_on(async move {
            let mut results = Vec::with_capacity(lookups.len());
            for lookup in lookups {
                results.push(match lookup.await {
                    Ok(result) => result,
                    Err(e) => Err(LookupError::Temporary(format!("lookup task failed: {e}"))),
                });
            }
            results
        })
    }
}

fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut connection| {
            connection.port = addr.port();
            connection
        })
        .collect();
    NameServerConfig::new(addr.ip(), true, connections)
}

/// The name as an absolute one, so no search domain from resolv.conf is ever
/// tried (a mail domain is always fully qualified, RFC 5321 §2.3.5).
fn fqdn(name: &str) -> Result<Name, LookupError> {
    let mut name = Name::from_utf8(name)
        .map_err(|e| LookupError::InvalidName(format!("invalid domain name {name:?}: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

fn host_name(name: &Name) -> String {
    let mut host = name.to_lowercase().to_ascii();
    if host.ends_with('.') {
        host.pop();
    }
    host
}

fn classify(error: NetError) -> LookupError {
    if error.is_nx_domain() {
        LookupError::NoSuchName
    } else if error.is_no_records_found() {
        LookupError::NoRecords
    } else {
        LookupError::Temporary(error.to_string())
    }
}
