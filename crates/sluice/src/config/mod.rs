//! The configuration file (TOML), with defaults good enough to run without one.
//!
//! Every key is documented in `docs/configuration.md`; `deploy/sluice.toml`
//! is a complete example. Unknown keys are errors: a typo must not silently
//! become a default.
//!
//! This file is what the file may say and what it means when it says
//! nothing: the types and their defaults. [`validate`] checks what the types
//! cannot and explains it; [`wiring`] turns a valid configuration into the
//! settings of each part (front end, plugins, scheduler, transports).

pub mod auth;
pub mod msgauth;
pub mod ops;
pub mod sendmail;
pub mod shipped;
pub mod tls;
mod validate;
mod wiring;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use sluice_delivery::remote::Timeouts;
use sluice_delivery::route::SMTP_PORT;
use sluice_plugin_host::RedisKv;
use sluice_smtp::Domain;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Our name in the greeting, EHLO and `Received:`; default: the system's.
    pub hostname: Option<String>,
    /// Where the queue lives. Relative paths are relative to the working directory.
    pub spool_dir: PathBuf,
    pub listen: Vec<Listen>,
    pub limits: Limits,
    pub local: Local,
    pub relay: Relay,
    pub server: Server,
    pub spool: Spool,
    /// The server's certificates.
    pub tls: tls::Tls,
    /// SMTP AUTH on submission and smtps listeners.
    pub auth: auth::Auth,
    /// The local submission socket for `sluice sendmail`.
    pub sendmail: sendmail::Sendmail,
    /// SPF, DKIM, ARC, DMARC and iprev checks of inbound mail.
    pub authentication: msgauth::Authentication,
    /// DKIM signing keys, any number, several per domain.
    pub dkim: Vec<msgauth::Dkim>,
    pub delivery: Delivery,
    pub dns: Dns,
    /// Where plugins keep shared state (greylisting, rate limits).
    pub kv: Kv,
    /// Prometheus metrics and the health check.
    pub metrics: ops::Metrics,
    pub log: ops::Log,
    /// The filter chain, in order. Absent: the shipped relay-refusal and
    /// antispam plugins ([`shipped`]). `plugin = []` runs none (the built-in
    /// relay check still refuses plain relay attempts).
    #[serde(rename = "plugin")]
    pub plugins: Vec<Plugin>,
}

/// One `[[plugin]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    pub name: String,
    /// The `.wasm` file. A relative path is relative to the working
    /// directory. Absent: the shipped plugin of this name ([`shipped`]).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `"tempfail"` (451 4.3.0 when the plugin fails: fail closed) or `"continue"`.
    #[serde(default)]
    pub on_error: OnErrorSetting,
    /// CPU time one hook may use.
    #[serde(default = "default_cpu_budget_ms")]
    pub cpu_budget_ms: u64,
    /// The plugin's memory limit.
    #[serde(default = "default_memory_limit_mb")]
    pub memory_limit_mb: u32,
    /// Handed to the plugin as JSON when it starts.
    #[serde(default)]
    pub config: toml::Table,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnErrorSetting {
    #[default]
    Tempfail,
    Continue,
}

fn default_cpu_budget_ms() -> u64 {
    50
}

fn default_memory_limit_mb() -> u32 {
    64
}

impl Plugin {
    /// The `.wasm` file to load: the configured path, or where the shipped
    /// plugin of this name is installed.
    pub fn wasm_path(&self) -> Result<PathBuf, String> {
        match &self.path {
            Some(path) => Ok(path.clone()),
            None => shipped::find(&self.name).map_err(|e| format!("plugin {:?}: {e}", self.name)),
        }
    }
}

/// The plugins that ship with Sluice and are on by default.
fn shipped_plugins() -> Vec<Plugin> {
    shipped::DEFAULT_CHAIN
        .iter()
        .map(|name| Plugin {
            name: (*name).into(),
            path: None,
            on_error: OnErrorSetting::Tempfail,
            cpu_budget_ms: default_cpu_budget_ms(),
            memory_limit_mb: default_memory_limit_mb(),
            config: toml::Table::new(),
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub addr: SocketAddr,
    #[serde(default)]
    pub mode: ListenMode,
    /// Clients arrive through a proxy (HAProxy, a cloud load balancer)
    /// that sends a PROXY protocol header, v1 or v2, before SMTP.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The proxies' addresses: only they may send a header.
    #[serde(default)]
    pub proxy_trusted: Vec<IpNet>,
    /// What happens to a connection from anyone else.
    #[serde(default)]
    pub proxy_untrusted: ops::ProxyUntrusted,
    /// How long a proxy may take to send the header.
    #[serde(default = "default_proxy_timeout_secs")]
    pub proxy_timeout_secs: u64,
}

fn default_proxy_timeout_secs() -> u64 {
    5
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    /// Port 25 style: mail from anywhere to the local domains, relay for
    /// the trusted; STARTTLS offered when `[tls]` has a certificate.
    #[default]
    Smtp,
    /// Port 587 (RFC 6409): STARTTLS required before MAIL.
    Submission,
    /// Port 465 (RFC 8314): implicit TLS, the handshake before the greeting.
    Smtps,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub idle_timeout_secs: u64,
    pub data_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_line_length: usize,
    pub max_errors: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Local {
    pub domains: Vec<String>,
    pub maildir_root: PathBuf,
    pub users: Vec<String>,
    pub aliases: BTreeMap<String, String>,
    /// Sub-addressing: each character starts an address extension
    /// (`"+"`: `alice+lists` is delivered to `alice`); empty: off.
    pub recipient_delimiter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    pub trusted_networks: Vec<IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Delivery threads (each holds at most one connection or Maildir write).
    pub threads: usize,
    /// Deliveries in flight to one destination (a domain, or a route's next hop).
    pub max_connections_per_destination: usize,
    /// Waits before each retry of a deferred recipient; after the last, the
    /// last interval repeats.
    pub retry_schedule_secs: Vec<u64>,
    /// A recipient still deferred this long after arrival fails, and its
    /// sender gets a bounce.
    pub max_queue_lifetime_secs: u64,
    /// Domain → "host:port": the next hop for that domain, instead of DNS.
    pub routes: BTreeMap<String, String>,
    /// "host:port" to send all non-local mail to; empty = use DNS.
    pub smarthost: String,
    /// "unix:/path" or "host:port" of an LMTP server (Dovecot) for the local
    /// domains; empty = write Maildirs ourselves.
    pub lmtp: String,
    /// The port of next hops found through DNS (MX hosts, a domain's own
    /// addresses) and of address literals. For tests and unusual setups:
    /// real MX hosts listen on 25.
    pub mx_port: u16,
    /// How long to wait for a TCP connection to a next hop. RFC 5321 gives
    /// none; 30 s is Postfix's `smtp_connect_timeout`.
    pub connect_timeout_secs: u64,
    /// The next hop's `220` greeting (RFC 5321 §4.5.3.2.1: 5 min).
    pub greeting_timeout_secs: u64,
    /// Replies to EHLO, MAIL, RCPT and RSET (§4.5.3.2.2–3: 5 min).
    pub command_timeout_secs: u64,
    /// The `354` reply to DATA (§4.5.3.2.4: 2 min).
    pub data_init_timeout_secs: u64,
    /// Each write of the message must make progress (§4.5.3.2.5: 3 min).
    pub data_block_timeout_secs: u64,
    /// The reply to the final dot (§4.5.3.2.6: 10 min).
    pub data_end_timeout_secs: u64,
    /// BDAT to next hops that offer CHUNKING (a small body in the same
    /// round trip as its envelope); off: DATA always.
    pub chunking: bool,
    /// Next hops (named as in `credentials`) that get DATA although they
    /// offer CHUNKING: one whose BDAT is broken.
    pub no_chunking: Vec<String>,
    /// TLS to next hops.
    pub tls: tls::DeliveryTls,
    /// Next hop (`host:port` as a route or the smarthost names it, or
    /// `host`) → the login there.
    pub credentials: BTreeMap<String, NextHopLogin>,
}

/// A login at a next hop (a provider's relay).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextHopLogin {
    pub username: String,
    /// A file holding the password alone (a final newline is ignored);
    /// keep it readable by the service user only.
    pub password_file: PathBuf,
    /// Send the login on a connection without TLS too. Default: never.
    #[serde(default)]
    pub allow_plaintext: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// "ip:port" of the resolvers to ask; empty = the system's (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
}

/// `[kv]`: the store behind the plugins' `kv_get`, `kv_set` and `kv_incr`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kv {
    pub backend: KvBackend,
    /// `redis://[user:password@]host[:port][/db]` or `redis+unix:///path?db=N`.
    pub redis_url: String,
    /// Put before every key, so that one Redis can serve others too.
    pub key_prefix: String,
    /// For connecting to Redis and for each command: a hook waits no longer
    /// than this before the store counts as failed.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// In this process's memory: lost on restart, not shared.
    #[default]
    Memory,
    /// In Redis: shared by every server that uses it, kept across restarts.
    Redis,
}

/// `[spool]`: how the queue uses its disk.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spool {
    /// Whether the next segment file is written full of zeros ahead, so
    /// that the fdatasyncs into it skip block allocation.
    pub prepare_segments: Preparation,
}

/// `prepare_segments`: the spool's [`sluice_spool::Preparation`], as the
/// configuration spells it (the spool crate has no serde).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preparation {
    /// Where the file system writes in place (ext2/3/4, XFS).
    #[default]
    Auto,
    Always,
    Never,
}

impl From<Preparation> for sluice_spool::Preparation {
    fn from(p: Preparation) -> Self {
        match p {
            Preparation::Auto => sluice_spool::Preparation::Auto,
            Preparation::Always => sluice_spool::Preparation::Always,
            Preparation::Never => sluice_spool::Preparation::Never,
        }
    }
}

impl Spool {
    pub fn spool_config(&self) -> sluice_spool::SpoolConfig {
        sluice_spool::SpoolConfig {
            prepare_segments: self.prepare_segments.into(),
            ..sluice_spool::SpoolConfig::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Event loop threads; 0 = one per core.
    pub event_loops: usize,
    /// How long transactions in flight may finish after SIGTERM.
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: None,
            spool_dir: "var/spool".into(),
            listen: vec![Listen {
                addr: SocketAddr::from(([127, 0, 0, 1], 2525)),
                mode: ListenMode::Smtp,
                proxy_protocol: false,
                proxy_trusted: Vec::new(),
                proxy_untrusted: ops::ProxyUntrusted::Refuse,
                proxy_timeout_secs: default_proxy_timeout_secs(),
            }],
            limits: Limits::default(),
            local: Local::default(),
            relay: Relay::default(),
            server: Server::default(),
            spool: Spool::default(),
            tls: tls::Tls::default(),
            auth: auth::Auth::default(),
            sendmail: sendmail::Sendmail::default(),
            authentication: msgauth::Authentication::default(),
            dkim: Vec::new(),
            delivery: Delivery::default(),
            dns: Dns::default(),
            kv: Kv::default(),
            metrics: ops::Metrics::default(),
            log: ops::Log::default(),
            plugins: shipped_plugins(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 36_700_160,
            max_recipients: 100,
            idle_timeout_secs: 300,
            data_timeout_secs: 180,
            max_connections: 10_000,
            max_connections_per_ip: 50,
            max_line_length: 512,
            max_errors: 20,
        }
    }
}

impl Default for Local {
    fn default() -> Self {
        let mut users = vec!["postmaster".to_string()];
        if let Some(login) = current_login().filter(|l| l != "postmaster") {
            users.push(login);
        }
        Local {
            domains: vec!["localhost".into()],
            maildir_root: "var/mail".into(),
            users,
            aliases: BTreeMap::new(),
            recipient_delimiter: String::new(),
        }
    }
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            trusted_networks: vec![
                "127.0.0.0/8".parse().expect("valid network"),
                "::1/128".parse().expect("valid network"),
            ],
        }
    }
}

impl Default for Delivery {
    fn default() -> Self {
        // The client's defaults are RFC 5321's minimums, as the transport
        // knows them.
        let rfc = Timeouts::default();
        Delivery {
            threads: 32,
            max_connections_per_destination: 20,
            retry_schedule_secs: vec![60, 300, 900, 1800, 3600, 7200, 14400],
            max_queue_lifetime_secs: 432_000,
            routes: BTreeMap::new(),
            smarthost: String::new(),
            lmtp: String::new(),
            mx_port: SMTP_PORT,
            connect_timeout_secs: 30,
            greeting_timeout_secs: rfc.greeting.as_secs(),
            command_timeout_secs: rfc.command.as_secs(),
            data_init_timeout_secs: rfc.data_init.as_secs(),
            data_block_timeout_secs: rfc.data_block.as_secs(),
            data_end_timeout_secs: rfc.data_end.as_secs(),
            chunking: true,
            no_chunking: Vec::new(),
            tls: tls::DeliveryTls::default(),
            credentials: BTreeMap::new(),
        }
    }
}

impl Default for Kv {
    fn default() -> Self {
        Kv {
            backend: KvBackend::Memory,
            redis_url: RedisKv::DEFAULT_URL.into(),
            key_prefix: RedisKv::DEFAULT_PREFIX.into(),
            timeout_ms: u64::try_from(RedisKv::DEFAULT_TIMEOUT.as_millis())
                .expect("a timeout of a few hundred ms"),
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            event_loops: 0,
            shutdown_grace_secs: 10,
        }
    }
}

impl Config {
    /// Reads and checks a file; the error explains every problem found.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: Config =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config.validate().map_err(|problems| {
            let mut msg = format!("{}: the configuration has problems:", path.display());
            for p in problems {
                let _ = write!(msg, "\n  - {p}");
            }
            msg
        })?;
        Ok(config)
    }

    pub fn hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(system_hostname)
    }
}

/// The kernel's idea of our name; `localhost` if it has none.
fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| matches!(Domain::parse(s), Some(Domain::Name(_))))
        .unwrap_or_else(|| "localhost".into())
}

fn current_login() -> Option<String> {
    sluice_sys::user::current_login()
}

#[cfg(test)]
mod tests;
