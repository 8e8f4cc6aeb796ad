//! Sluice's one DNS resolver, shared by next-hop routing (delivery) and the
//! plugins' `dns_lookup` (plugin host).
//!
//! hickory is async only, while delivery threads and filter threads are
//! plain blocking threads, so [`Resolver`] owns a small tokio runtime and
//! each lookup is a `block_on` on the calling thread. The runtime is
//! multi-threaded with one worker: the resolver's background tasks (its UDP
//! and TCP exchanges with the name servers) then run on that worker whatever
//! the callers do, and `Runtime::block_on` may be called from any number of
//! threads at once, which a current-thread runtime would serialize behind one
//! driver. A server builds one [`Resolver`] and clones it into each part, so
//! it runs one DNS runtime and one cache of answers.
//!
//! Two choices hold for every lookup:
//!
//! - The hosts file is never read. Mail routing is DNS only (RFC 5321 §5.1):
//!   an `/etc/hosts` entry must not quietly redirect a domain's mail, and a
//!   DNSBL or SPF answer must come from the zone that publishes it.
//! - Addresses are A before AAAA. Both are asked at once, but a host without
//!   an IPv6 route would otherwise cost a failed connection before every
//!   delivery.

mod records;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::ResolverBuilder;
pub use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

pub use records::{
    Answer, DEFAULT_NEGATIVE_TTL, LookupError, MAX_NEGATIVE_TTL, Record, RecordType, host_name,
};
use records::{classify, query_name};

/// A blocking DNS resolver with a cache. Clones share the runtime, the
/// connections and the cache; it is `Send + Sync`, for any number of
/// threads at once (never from inside an async runtime: each call blocks).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    // Declared first so it is dropped before the runtime its tasks live on.
    resolver: TokioResolver,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("options", self.inner.resolver.options())
            .finish_non_exhaustive()
    }
}

/// Why a [`Resolver`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverError {
    /// Its runtime (one thread) could not start.
    Runtime(String),
    /// No name servers were given, and `/etc/resolv.conf` could not be read.
    SystemConfig(String),
    Build(String),
}

impl fmt::Display for ResolverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolverError::Runtime(e) => write!(f, "cannot start the DNS runtime: {e}"),
            ResolverError::SystemConfig(e) => {
                write!(f, "cannot read the system resolver configuration: {e}")
            }
            ResolverError::Build(e) => write!(f, "cannot build the DNS resolver: {e}"),
        }
    }
}

impl std::error::Error for ResolverError {}

impl Resolver {
    /// A resolver that asks `nameservers` (UDP, then TCP for truncated
    /// answers), or the system's (`/etc/resolv.conf`) when there are none,
    /// waiting `timeout` for each answer from a name server.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Resolver, ResolverError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-dns")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| ResolverError::Runtime(e.to_string()))?;
        let provider = TokioRuntimeProvider::default();
        let mut builder: ResolverBuilder<TokioRuntimeProvider> = if nameservers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| ResolverError::SystemConfig(e.to_string()))?
        } else {
            let servers = nameservers.iter().map(name_server).collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options = builder.options_mut();
        options.timeout = timeout;
        // The two choices in the crate documentation.
        options.use_hosts_file = ResolveHosts::Never;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = {
            // The resolver starts its connection tasks on this runtime.
            let _context = runtime.enter();
            builder
                .build()
                .map_err(|e| ResolverError::Build(e.to_string()))?
        };
        Ok(Resolver {
            inner: Arc::new(Inner { resolver, runtime }),
        })
    }

    /// Runs `work` with this resolver on its runtime, for at most `limit`:
    /// for libraries that speak hickory themselves (mail-auth's SPF, DKIM
    /// and DMARC), so that they share this resolver's connections and cache.
    /// `None` when the time ran out. Blocks the calling thread.
    pub fn run_within<F, T>(
        &self,
        limit: Duration,
        work: impl FnOnce(TokioResolver) -> F,
    ) -> Option<T>
    where
        F: std::future::Future<Output = T>,
    {
        let Inner { resolver, runtime } = &*self.inner;
        let future = work(resolver.clone());
        runtime.block_on(async { tokio::time::timeout(limit, future).await.ok() })
    }

    /// The records of `record_type` for `name` (for PTR, `name` may be an IP
    /// address), with what is left of their TTL. Blocks for as long as the
    /// resolver's own timeouts and retries take.
    pub fn lookup(&self, record_type: RecordType, name: &str) -> Result<Answer, LookupError> {
        self.lookup_bounded(record_type, name, None)
    }

    /// As [`Resolver::lookup`], but gives up after `limit` in all, retries
    /// and other name servers included, with [`LookupError::Temporary`]:
    /// for callers that hold up a client while they wait.
    pub fn lookup_within(
        &self,
        record_type: RecordType,
        name: &str,
        limit: Duration,
    ) -> Result<Answer, LookupError> {
        self.lookup_bounded(record_type, name, Some(limit))
    }

    fn lookup_bounded(
        &self,
        record_type: RecordType,
        name: &str,
        limit: Option<Duration>,
    ) -> Result<Answer, LookupError> {
        let result = self.lookup_uncounted(record_type, name, limit);
        let kind = match record_type {
            RecordType::A => sluice_metrics::DnsKind::A,
            RecordType::Aaaa => sluice_metrics::DnsKind::Aaaa,
            RecordType::Mx => sluice_metrics::DnsKind::Mx,
            RecordType::Txt => sluice_metrics::DnsKind::Txt,
            RecordType::Ptr => sluice_metrics::DnsKind::Ptr,
        };
        let counted = match &result {
            Ok(_) => sluice_metrics::DnsResult::Ok,
            Err(LookupError::NoSuchName { .. } | LookupError::NoRecords { .. }) => {
                sluice_metrics::DnsResult::NotFound
            }
            // Our own limit ("no answer … within …") or hickory's ("request
            // timed out"): both are temporary errors with only words to tell.
            Err(LookupError::Temporary(why))
                if why.contains(" within ") || why.contains("timed out") =>
            {
                sluice_metrics::DnsResult::Timeout
            }
            Err(LookupError::Temporary(_) | LookupError::InvalidName(_)) => {
                sluice_metrics::DnsResult::Error
            }
        };
        sluice_metrics::dns_lookup(kind, counted);
        result
    }

    fn lookup_uncounted(
        &self,
        record_type: RecordType,
        name: &str,
        limit: Option<Duration>,
    ) -> Result<Answer, LookupError> {
        let query = query_name(record_type, name)?;
        let Inner { resolver, runtime } = &*self.inner;
        let lookup = resolver.lookup(query, record_type.hickory());
        // The timer must be made inside the runtime: hence the async block.
        let result = runtime.block_on(async {
            match limit {
                Some(limit) => tokio::time::timeout(limit, lookup).await.map_err(|_| {
                    LookupError::Temporary(format!("no answer for {name} within {limit:?}"))
                }),
                None => Ok(lookup.await),
            }
        })?;
        let lookup = result.map_err(|e| classify(&e))?;
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now());
        let records: Vec<Record> = lookup
            .answers()
            .iter()
            .filter_map(|record| Record::of_type(record_type, &record.data))
            .collect();
        if records.is_empty() {
            // Only a CNAME came back, say: the name exists, and has nothing
            // of this type for as long as that answer holds.
            return Err(LookupError::NoRecords { negative_ttl: ttl });
        }
        Ok(Answer { records, ttl })
    }

    /// The MX records of `domain` as (preference, exchange) in the order
    /// received; the exchange is `""` for the root (a null MX, RFC 7505).
    pub fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, LookupError> {
        let answer = self.lookup(RecordType::Mx, domain)?;
        Ok(answer
            .records
            .into_iter()
            .filter_map(|record| match record {
                Record::Mx {
                    preference,
                    exchange,
                } => Some((preference, exchange)),
                _ => None,
            })
            .collect())
    }

    /// The addresses of each host, A before AAAA, looked up concurrently;
    /// the results come in the order of `hosts`.
    pub fn addresses(&self, hosts: &[&str]) -> Vec<Result<Vec<IpAddr>, LookupError>> {
        let Inner { resolver, runtime } = &*self.inner;
        let lookups: Vec<_> = hosts
            .iter()
            .map(|host| {
                let resolver = resolver.clone();
                let name = query_name(RecordType::A, host);
                runtime.spawn(async move {
                    let lookup = resolver.lookup_ip(name?).await.map_err(|e| classify(&e))?;
                    Ok(lookup.iter().collect::<Vec<IpAddr>>())
                })
            })
            .collect();
        runtime.block_on(async move {
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
