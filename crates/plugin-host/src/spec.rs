//! What the host is given: the plugins to load and the services their host
//! functions use.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sluice_directory::Directory;
use std::time::Duration;

use crate::dns::DnsResolver;
use sluice_kv::{KvStore, MemoryKv};

/// What a failing hook (trap, CPU deadline, memory limit, bad verdict) means
/// for the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// `451 4.3.0 Filter <name> failed; try again later`: fail closed, so a
    /// broken relay or spam filter never lets mail through.
    #[default]
    Tempfail,
    /// Go on as if the plugin had said CONTINUE.
    Continue,
}

/// One `[[plugin]]` of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// Names the plugin in logs, replies and errors.
    pub name: String,
    /// The `.wasm` core module.
    pub path: PathBuf,
    pub on_error: OnError,
    /// The plugin's `[plugin.config]` table as JSON, handed to `sluice_init`.
    pub config_json: String,
    /// Wall-clock time one hook call may spend running plugin code (time
    /// blocked in DNS or key-value calls is not counted; see [`HostEnv::blocking_budget`]).
    pub cpu_budget: Duration,
    /// Cap on the plugin instance's linear memory.
    pub memory_limit_mb: u32,
}

impl PluginSpec {
    pub const DEFAULT_CPU_BUDGET: Duration = Duration::from_millis(50);
    pub const DEFAULT_MEMORY_LIMIT_MB: u32 = 64;

    /// A spec with the defaults: fail closed, 50 ms, 64 MiB, config `{}`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        PluginSpec {
            name: name.into(),
            path: path.into(),
            on_error: OnError::Tempfail,
            config_json: "{}".into(),
            cpu_budget: Self::DEFAULT_CPU_BUDGET,
            memory_limit_mb: Self::DEFAULT_MEMORY_LIMIT_MB,
        }
    }
}

/// The services behind the host functions, shared by every plugin.
#[derive(Clone)]
pub struct HostEnv {
    /// `server.hostname`, and the name in `421` replies.
    pub hostname: String,
    /// Who is local: `is_local_domain` asks it.
    pub directory: Arc<Directory>,
    pub dns: Arc<DnsResolver>,
    pub kv: Arc<dyn KvStore>,
    /// Threads that run hooks; 0 means 2 × cores, and never fewer than 4,
    /// so a few plugins blocked on DNS cannot hold up every connection.
    pub filter_threads: usize,
    /// How long one hook call may spend blocked in host calls (DNS, the
    /// key-value store) in total; after that its lookups fail at once (`-2`).
    /// Bounds a plugin that would hold a connection with lookup after lookup.
    pub blocking_budget: Duration,
    /// Where compiled plugin code is kept across restarts and reloads (made
    /// mode 0700 if missing); `None` compiles every plugin at every load.
    /// A directory that cannot be used costs a warning, never a load.
    pub code_cache: Option<PathBuf>,
    /// Threads that call the host from outside (the front end's event
    /// loops) and may run a hook themselves, when its plugins make no host
    /// call that would wait: no hand-off to a filter thread and back. Each
    /// may hold one instance of every plugin at a time. 0 runs every hook
    /// on the filter threads.
    pub inline_callers: usize,
}

impl HostEnv {
    pub const DEFAULT_BLOCKING_BUDGET: Duration = Duration::from_secs(10);

    /// An environment with the embedded key-value store and default thread count.
    /// `directory` answers the plugins' `is_local_domain`: the same answer
    /// the front end's RCPT check and local delivery get.
    pub fn new(hostname: impl Into<String>, directory: Arc<Directory>, dns: DnsResolver) -> Self {
        HostEnv {
            hostname: hostname.into(),
            directory,
            dns: Arc::new(dns),
            kv: Arc::new(MemoryKv::new()),
            filter_threads: 0,
            blocking_budget: Self::DEFAULT_BLOCKING_BUDGET,
            code_cache: None,
            inline_callers: 0,
        }
    }

    pub(crate) fn thread_count(&self) -> usize {
        match self.filter_threads {
            0 => {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                (2 * cores).max(4)
            }
            n => n,
        }
    }
}

impl fmt::Debug for HostEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostEnv")
            .field("hostname", &self.hostname)
            .field("dns", &self.dns)
            .field("filter_threads", &self.filter_threads)
            .field("blocking_budget", &self.blocking_budget)
            .field("code_cache", &self.code_cache)
            .finish_non_exhaustive()
    }
}

/// Where the DNS host function sends its queries, for a [`DnsResolver`]
/// with a resolver of its own ([`DnsResolver::new`]); a server shares its
/// one resolver instead ([`DnsResolver::with_resolver`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Empty means the system's resolvers (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Bound on one `dns_lookup`, all retries included.
    pub timeout: Duration,
    /// Answers kept by the host (beyond the resolver's own cache), as text
    /// ready for plugins.
    pub cache_entries: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            cache_entries: 4096,
        }
    }
}
