//! MTA-STS (RFC 8461): a domain publishes, over DNS and HTTPS, which of
//! its MX hosts may receive its mail and that they must show a valid
//! certificate. The policy is fetched on the delivery thread that needs it,
//! and kept (in memory and under the spool directory) for its `max_age`,
//! fetched again only when the TXT record's `id` changes or it runs out.

mod fetch;
mod policy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_dns::{LookupError, Record, RecordType, Resolver};
use sluice_tls::ClientTls;

pub use policy::{Mode, Policy};

/// How long a policy fetch may take, connection and all.
const FETCH_LIMIT: Duration = Duration::from_secs(10);

/// A policy as cached: the TXT id it came with, and when it was fetched.
#[derive(Debug, Clone)]
struct Cached {
    id: String,
    fetched: SystemTime,
    policy: Policy,
}

impl Cached {
    fn fresh(&self, now: SystemTime) -> bool {
        now.duration_since(self.fetched)
            .is_ok_and(|age| age < self.policy.max_age)
    }
}

/// Looks up, fetches and caches policies. Share one between the delivery
/// threads.
#[derive(Debug)]
pub struct MtaSts {
    dns: Resolver,
    client: ClientTls,
    /// Where policies are kept across restarts (`<spool>/mta-sts`).
    dir: PathBuf,
    /// The HTTPS port policies are fetched from: 443, except in tests.
    port: u16,
    memory: Mutex<HashMap<String, Cached>>,
}

impl MtaSts {
    pub fn new(dns: Resolver, client: ClientTls, dir: PathBuf, port: u16) -> MtaSts {
        MtaSts {
            dns,
            client,
            dir,
            port,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// The policy in force for mail to `domain`, if it has one. Errors on
    /// the way (DNS, HTTPS) mean no policy unless one is cached (§5.1):
    /// a policy cannot be forced on a domain by breaking its web server,
    /// and cannot be lifted by breaking its DNS while a cached one lasts.
    pub fn policy(&self, domain: &str) -> Option<Policy> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let now = SystemTime::now();
        let cached = self.cached(&domain).filter(|c| c.fresh(now));
        let id = match self.record_id(&domain) {
            Ok(Some(id)) => id,
            Ok(None) | Err(_) => return cached.map(|c| c.policy),
        };
        if let Some(c) = cached.as_ref().filter(|c| c.id == id) {
            return Some(c.policy.clone());
        }
        let host = format!("mta-sts.{domain}");
        let fetched = self.fetch(&host);
        match fetched {
            Ok((text, policy)) => {
                tracing::info!(domain, id, mode = ?policy.mode, "MTA-STS policy fetched");
                let entry = Cached {
                    id,
                    fetched: now,
                    policy: policy.clone(),
                };
                self.store(&domain, &entry, &text);
                Some(policy)
            }
            Err(e) => {
                tracing::warn!(domain, error = %e, "MTA-STS policy not fetched");
                cached.map(|c| c.policy)
            }
        }
    }

    fn record_id(&self, domain: &str) -> Result<Option<String>, LookupError> {
        let answer = match self
            .dns
            .lookup(RecordType::Txt, &format!("_mta-sts.{domain}"))
        {
            Ok(answer) => answer,
            Err(LookupError::NoRecords { .. } | LookupError::NoSuchName { .. }) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let ids: Vec<String> = answer
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Txt(strings) => {
                    Some(String::from_utf8_lossy(&strings.concat()).into_owned())
                }
                _ => None,
            })
            .filter(|text| text.starts_with("v=STSv1"))
            .filter_map(|text| policy::record_id(&text))
            .collect();
        // §3.1: more than one STSv1 record is as good as none.
        Ok(match ids.as_slice() {
            [id] => Some(id.clone()),
            _ => None,
        })
    }

    fn fetch(&self, host: &str) -> Result<(String, Policy), String> {
        let addrs = match self.dns.addresses(&[host]).pop() {
            Some(Ok(ips)) if !ips.is_empty() => ips,
            Some(Err(e)) => return Err(format!("{host}: {e:?}")),
            _ => return Err(format!("{host}: no address")),
        };
        let addrs: Vec<_> = addrs
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, self.port))
            .collect();
        let text = fetch::get_policy(self.client.config(true), host, &addrs, FETCH_LIMIT)?;
        let policy = Policy::parse(&text)?;
        Ok((text, policy))
    }

    fn cached(&self, domain: &str) -> Option<Cached> {
        if let Some(c) = self.lock().get(domain) {
            return Some(c.clone());
        }
        let loaded = self.load(domain)?;
        self.lock().insert(domain.to_owned(), loaded.clone());
        Some(loaded)
    }

    fn path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.policy"))
    }

    /// The file: two lines of ours (`sluice-id:`, `sluice-fetched:` in
    /// seconds since the epoch), then the policy as fetched.
    fn load(&self, domain: &str) -> Option<Cached> {
        let text = std::fs::read_to_string(self.path(domain)).ok()?;
        let mut lines = text.splitn(3, '\n');
        let id = lines.next()?.strip_prefix("sluice-id: ")?.to_owned();
        let secs: u64 = lines
            .next()?
            .strip_prefix("sluice-fetched: ")?
            .parse()
            .ok()?;
        let policy = Policy::parse(lines.next()?).ok()?;
        Some(Cached {
            id,
            fetched: UNIX_EPOCH + Duration::from_secs(secs),
            policy,
        })
    }

    fn store(&self, domain: &str, entry: &Cached, text: &str) {
        self.lock().insert(domain.to_owned(), entry.clone());
        let secs = entry
            .fetched
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let content = format!("sluice-id: {}\nsluice-fetched: {secs}\n{text}", entry.id);
        // Written beside and renamed: a crash leaves the old policy or the
        // new one, never half of one.
        let path = self.path(domain);
        let tmp = path.with_extension("tmp");
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, content))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(domain, error = %e, "MTA-STS policy not kept on disk");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
