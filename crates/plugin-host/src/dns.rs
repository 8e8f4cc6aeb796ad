//! The resolver behind `dns_lookup`: the server's [`Resolver`], bounded by a
//! timeout, with a small cache of answers already formatted for plugins.
//!
//! Lookups block the calling filter thread; the resolver's own runtime
//! drives the exchanges with the name servers, so many filter threads can
//! wait at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_dns::{LookupError, Record, RecordType, Resolver};

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

type Cache = HashMap<(u16, String), (Instant, DnsAnswer)>;

/// How long a failed lookup (timeout, SERVFAIL, no name server) is kept.
const FAILURE_TTL: Duration = Duration::from_secs(30);

pub struct DnsResolver {
    resolver: Resolver,
    timeout: Duration,
    cache: Mutex<Cache>,
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

impl DnsResolver {
    /// A resolver of its own that asks `config.nameservers`: for tools and
    /// tests that run plugins without a server around them.
    pub fn new(config: &DnsConfig) -> Result<DnsResolver, sluice_dns::ResolverError> {
        let resolver = Resolver::new(&config.nameservers, config.timeout)?;
        Ok(DnsResolver::with_resolver(
            resolver,
            config.timeout,
            config.cache_entries,
        ))
    }

    /// Plugins' lookups through `resolver`, shared with the rest of the
    /// server (its name servers, its runtime, its cache); each `dns_lookup`
    /// is bounded by `timeout`, and up to `cache_entries` formatted answers
    /// are kept here as well.
    pub fn with_resolver(resolver: Resolver, timeout: Duration, cache_entries: usize) -> Self {
        DnsResolver {
            resolver,
            timeout,
            cache: Mutex::new(HashMap::new()),
            cache_entries,
        }
    }

    /// The answer for `name` if one is cached and fresh: never blocks, for a
    /// hook that runs on an event loop.
    pub fn cached(&self, qtype: u16, name: &str) -> Option<DnsAnswer> {
        let key = (qtype, name.trim_end_matches('.').to_ascii_lowercase());
        self.cache_lock()
            .get(&key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, answer)| answer.clone())
    }

    /// Looks `name` up (`qtype` 1 A, 28 AAAA, 15 MX, 16 TXT, 12 PTR); blocks
    /// the calling thread for at most the configured timeout. For PTR, an IP
    /// address is turned into its `in-addr.arpa`/`ip6.arpa` name.
    pub fn lookup(&self, qtype: u16, name: &str) -> DnsAnswer {
        let Some(record_type) = RecordType::from_code(qtype) else {
            return DnsAnswer::Failed;
        };
        let key = (qtype, name.trim_end_matches('.').to_ascii_lowercase());
        if let Some((until, answer)) = self.cache_lock().get(&key)
            && *until > Instant::now()
        {
            return answer.clone();
        }
        let (answer, ttl) = match self
            .resolver
            .lookup_within(record_type, &key.1, self.timeout)
        {
            Ok(answer) => {
                let lines: Vec<String> = answer.records.iter().map(format_record).collect();
                (DnsAnswer::Records(lines.join("\n")), answer.ttl)
            }
            Err(LookupError::NoSuchName { negative_ttl }) => (DnsAnswer::NxDomain, negative_ttl),
            Err(LookupError::NoRecords { negative_ttl }) => (DnsAnswer::NoData, negative_ttl),
            // Kept briefly too (RFC 2308 §7 allows up to five minutes): a
            // name server that is down would otherwise be asked, and waited
            // for, at every hook that needs the name; and a hook on an event
            // loop could never find the answer cached.
            Err(LookupError::InvalidName(_) | LookupError::Temporary(_)) => {
                (DnsAnswer::Failed, FAILURE_TTL)
            }
        };
        if !ttl.is_zero() && self.cache_entries > 0 {
            let now = Instant::now();
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

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Entries are inserted whole; a panic elsewhere cannot leave one torn.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One line of a `dns_lookup` answer, as ABI.md has it.
fn format_record(record: &Record) -> String {
    match record {
        Record::A(a) => a.to_string(),
        Record::Aaaa(a) => a.to_string(),
        Record::Mx {
            preference,
            exchange,
        } => format!("{preference} {}", abi_host(exchange)),
        Record::Ptr(host) => abi_host(host).to_owned(),
        Record::Txt(strings) => {
            // RFC 7208 §3.3: the strings of one record are joined without
            // spaces. A line break inside would split one answer in two.
            String::from_utf8_lossy(&strings.concat()).replace(['\r', '\n'], " ")
        }
    }
}

/// Plugins see the root as "." (a null MX is `0 .`), not as the empty name.
fn abi_host(host: &str) -> &str {
    if host.is_empty() { "." } else { host }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_as_plugins_read_them() {
        assert_eq!(
            format_record(&Record::A("192.0.2.1".parse().unwrap())),
            "192.0.2.1"
        );
        assert_eq!(
            format_record(&Record::Aaaa("2001:db8::1".parse().unwrap())),
            "2001:db8::1"
        );
        assert_eq!(
            format_record(&Record::Mx {
                preference: 10,
                exchange: "mx1.example.org".into()
            }),
            "10 mx1.example.org"
        );
        assert_eq!(
            format_record(&Record::Mx {
                preference: 0,
                exchange: String::new()
            }),
            "0 ."
        );
        assert_eq!(
            format_record(&Record::Ptr("mail.example.org".into())),
            "mail.example.org"
        );
        assert_eq!(
            format_record(&Record::Txt(vec![
                b"v=spf1 ip4:192.0.2.0/24".to_vec(),
                b" -all\r\nx".to_vec()
            ])),
            "v=spf1 ip4:192.0.2.0/24 -all  x"
        );
    }
}
