//! The resolver behind `dns_lookup`: hickory, bounded by a timeout, with a
//! small cache of answers already formatted for plugins.
//!
//! hickory is async only and hooks run on plain filter threads, so the
//! resolver keeps a one-worker tokio runtime and each lookup is a `block_on`
//! on the calling filter thread. The worker drives the exchanges with the name
//! servers whatever the callers do, so many filter threads can wait at once.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{ResolverBuilder, TokioResolver};

use crate::spec::DnsConfig;

/// A lookup's result as the ABI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    /// The records as text, one per line.
    Records(String),
    /// The name exists, without records of that type.
    NoData,
    NxDomain,
    /// Timeout, SERVFAIL, a network error, an invalid name or query type.
    Failed,
}

pub struct DnsResolver {
    // Dropped before the runtime its tasks live on.
    resolver: TokioResolver,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
    cache: Mutex<HashMap<(u16, String), (Instant, DnsAnswer)>>,
    cache_entries: usize,
}

impl fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsResolver")
            .field("timeout", &self.timeout)
            .field("cache_entries", &self.cache_entries)
            .finish_non_exhaustive()
    }
}

/// How long a "no such name" or "no data" answer is kept when the server
/// sent no SOA to say (RFC 2308 would have it from the SOA minimum).
const NEGATIVE_TTL: u32 = 60;
const MAX_NEGATIVE_TTL: u32 = 300;

impl DnsResolver {
    pub fn new(config: &DnsConfig) -> Result<DnsResolver, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-plugin-dns")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the plugin DNS runtime: {e}"))?;
        let provider = TokioRuntimeProvider::default();
        let mut builder: ResolverBuilder<TokioRuntimeProvider> = if config.nameservers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|addr| {
                    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .into_iter()
                        .map(|mut c| {
                            c.port = addr.port();
                            c
                        })
                        .collect();
                    NameServerConfig::new(addr.ip(), true, connections)
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options = builder.options_mut();
        options.timeout = config.timeout;
        // DNSBL answers and the like must come from DNS, never a hosts file.
        options.use_hosts_file = ResolveHosts::Never;
        let resolver = {
            let _context = runtime.enter();
            builder
                .build()
                .map_err(|e| format!("cannot build the plugin DNS resolver: {e}"))?
        };
        Ok(DnsResolver {
            resolver,
            runtime,
            timeout: config.timeout,
            cache: Mutex::new(HashMap::new()),
            cache_entries: config.cache_entries,
        })
    }

    /// Looks `name` up (`qtype` 1 A, 28 AAAA, 15 MX, 16 TXT, 12 PTR); blocks
    /// the calling thread for at most the configured timeout. For PTR, an IP
    /// address is turned into its `in-addr.arpa`/`ip6.arpa` name.
    pub fn lookup(&self, qtype: u16, name: &str) -> DnsAnswer {
        let Some(record_type) = record_type(qtype) else {
            return DnsAnswer::Failed;
        };
        let key = (qtype, name.trim_end_matches('.').to_ascii_lowercase());
        let now = Instant::now();
        if let Some((until, answer)) = self.cache_lock().get(&key)
            && *until > now
        {
            return answer.clone();
        }
        let Some(query) = query_name(record_type, &key.1) else {
            return DnsAnswer::Failed;
        };
        // The timer must be made inside the runtime: hence the async block.
        let result = self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, self.resolver.lookup(query, record_type)).await
        });
        let (answer, ttl) = match result {
            Err(_elapsed) => return DnsAnswer::Failed,
            Ok(Ok(lookup)) => {
                let lines: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| format_record(record_type, &r.data))
                    .collect();
                let ttl = lookup.valid_until().saturating_duration_since(now);
                if lines.is_empty() {
                    // Only a CNAME came back, say.
                    (DnsAnswer::NoData, ttl)
                } else {
                    (DnsAnswer::Records(lines.join("\n")), ttl)
                }
            }
            Ok(Err(e)) => match negative(&e) {
                Some((answer, ttl)) => (answer, Duration::from_secs(ttl.into())),
                None => return DnsAnswer::Failed,
            },
        };
        if !ttl.is_zero() && self.cache_entries > 0 {
            let mut cache = self.cache_lock();
            if cache.len() >= self.cache_entries {
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= self.cache_entries {
                    // Still full of live answers: start over rather than keep
                    // an LRU; they are one query away.
                    cache.clear();
                }
            }
            cache.insert(key, (now + ttl, answer.clone()));
        }
        answer
    }

    fn cache_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(u16, String), (Instant, DnsAnswer)>> {
        // Entries are inserted whole; a panic elsewhere cannot leave one torn.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn record_type(qtype: u16) -> Option<RecordType> {
    Some(match qtype {
        1 => RecordType::A,
        28 => RecordType::AAAA,
        15 => RecordType::MX,
        16 => RecordType::TXT,
        12 => RecordType::PTR,
        _ => return None,
    })
}

fn query_name(record_type: RecordType, name: &str) -> Option<Name> {
    let mut name = match (record_type, name.parse::<IpAddr>()) {
        (RecordType::PTR, Ok(ip)) => Name::from(ip),
        _ => Name::from_utf8(name).ok()?,
    };
    // Absolute: no search domain from resolv.conf is ever appended.
    name.set_fqdn(true);
    Some(name)
}

fn format_record(record_type: RecordType, data: &RData) -> Option<String> {
    Some(match (record_type, data) {
        (RecordType::A, RData::A(a)) => a.to_string(),
        (RecordType::AAAA, RData::AAAA(a)) => a.to_string(),
        (RecordType::MX, RData::MX(mx)) => format!("{} {}", mx.preference, host(&mx.exchange)),
        (RecordType::PTR, RData::PTR(ptr)) => host(&ptr.0),
        (RecordType::TXT, RData::TXT(txt)) => {
            // RFC 7208 §3.3: the strings of one record are joined without
            // spaces. A line break inside would split one answer in two.
            let joined: Vec<u8> = txt
                .txt_data
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            String::from_utf8_lossy(&joined).replace(['\r', '\n'], " ")
        }
        _ => return None,
    })
}

fn host(name: &Name) -> String {
    let mut host = name.to_lowercase().to_ascii();
    if host.ends_with('.') && host.len() > 1 {
        host.pop();
    }
    host
}

/// NXDOMAIN and NODATA, with how long they may be cached.
fn negative(error: &NetError) -> Option<(DnsAnswer, u32)> {
    let NetError::Dns(DnsError::NoRecordsFound(no)) = error else {
        return None;
    };
    let ttl = no
        .negative_ttl
        .unwrap_or(NEGATIVE_TTL)
        .min(MAX_NEGATIVE_TTL);
    let answer = if error.is_nx_domain() {
        DnsAnswer::NxDomain
    } else {
        DnsAnswer::NoData
    };
    Some((answer, ttl))
}
