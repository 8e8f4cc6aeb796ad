//! The configuration file (TOML), with defaults good enough to run without one.
//!
//! Every key is documented in `docs/configuration.md`; `deploy/sluice.toml`
//! is a complete example. Unknown keys are errors: a typo must not silently
//! become a default.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use sluice_delivery::dispatch::Dispatch;
use sluice_delivery::local::{self, LocalConfig};
use sluice_delivery::remote::{Remote, RemoteConfig};
use sluice_delivery::route::{RouteConfig, Router};
use sluice_delivery::scheduler::SchedulerConfig;
use sluice_plugin_host::{DnsConfig, DnsResolver, HostEnv, OnError, PluginSpec};
use sluice_smtp::Domain;
use sluice_smtp::server::{Extensions, ServerConfig};
use sluice_smtpd::{RecipientPolicy, SmtpdConfig};

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
    pub delivery: Delivery,
    pub dns: Dns,
    /// The filter chain, in order. Absent: the shipped relay-refusal and
    /// antispam plugins. `plugin = []` runs none (the built-in relay check
    /// still refuses plain relay attempts).
    #[serde(rename = "plugin")]
    pub plugins: Vec<Plugin>,
}

/// One `[[plugin]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    pub name: String,
    /// The `.wasm` file. A relative path is relative to the working directory.
    pub path: PathBuf,
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

/// The plugins that ship with Sluice and are on by default, where
/// `plugins/build.sh` puts them.
fn shipped_plugins() -> Vec<Plugin> {
    let plugin = |name: &str| Plugin {
        name: name.into(),
        path: format!("plugins/dist/{name}.wasm").into(),
        on_error: OnErrorSetting::Tempfail,
        cpu_budget_ms: default_cpu_budget_ms(),
        memory_limit_mb: default_memory_limit_mb(),
        config: toml::Table::new(),
    };
    vec![plugin("relay-refusal"), plugin("antispam")]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub addr: SocketAddr,
    #[serde(default)]
    pub mode: ListenMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    /// Port 25 style: mail from anywhere to the local domains, relay for the trusted.
    #[default]
    Smtp,
    /// Port 587 (RFC 6409): needs AUTH, which is not built yet.
    Submission,
    /// Port 465 (RFC 8314): implicit TLS, not built yet.
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
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// "ip:port" of the resolvers to ask; empty = the system's (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
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
            }],
            limits: Limits::default(),
            local: Local::default(),
            relay: Relay::default(),
            server: Server::default(),
            delivery: Delivery::default(),
            dns: Dns::default(),
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
        Delivery {
            threads: 32,
            max_connections_per_destination: 20,
            retry_schedule_secs: vec![60, 300, 900, 1800, 3600, 7200, 14400],
            max_queue_lifetime_secs: 432_000,
            routes: BTreeMap::new(),
            smarthost: String::new(),
            lmtp: String::new(),
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

    /// Checks what the types cannot: every problem, not just the first.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Some(h) = self
            .hostname
            .as_ref()
            .filter(|h| !matches!(Domain::parse(h), Some(Domain::Name(_))))
        {
            problems.push(format!("hostname {h:?} is not a valid domain name"));
        }
        if self.listen.is_empty() {
            problems.push("listen: at least one [[listen]] address is needed".into());
        }
        for l in &self.listen {
            if l.mode != ListenMode::Smtp {
                problems.push(format!(
                    "listen {}: mode {:?} is not supported yet (only \"smtp\")",
                    l.addr, l.mode
                ));
            }
        }
        let lim = &self.limits;
        if lim.max_line_length < 512 {
            problems.push(format!(
                "limits.max_line_length = {} is below RFC 5321's minimum of 512",
                lim.max_line_length
            ));
        }
        if lim.max_message_size < 1024 {
            problems.push("limits.max_message_size must be at least 1024 octets".into());
        }
        if lim.max_recipients == 0 {
            problems
                .push("limits.max_recipients must be at least 1 (RFC 5321 asks for 100)".into());
        }
        if lim.idle_timeout_secs == 0 || lim.data_timeout_secs == 0 {
            problems.push("limits: timeouts must be at least 1 second".into());
        }
        if lim.max_connections == 0 || lim.max_connections_per_ip == 0 {
            problems.push("limits: connection limits must be at least 1".into());
        }
        if lim.max_errors == 0 {
            problems.push("limits.max_errors must be at least 1".into());
        }
        if self.local.domains.is_empty() {
            problems.push("local.domains: at least one local domain is needed".into());
        }
        for d in &self.local.domains {
            if !matches!(Domain::parse(d), Some(Domain::Name(_))) {
                problems.push(format!("local.domains: {d:?} is not a valid domain name"));
            }
        }
        for u in &self.local.users {
            if u.is_empty() || u.contains(['@', ' ', '/', '\0']) || u.starts_with('.') {
                problems.push(format!(
                    "local.users: {u:?} cannot be a mailbox name (no '@', '/', spaces, or leading dot)"
                ));
            }
        }
        for (alias, target) in &self.local.aliases {
            if alias.is_empty() || alias.contains('@') {
                problems.push(format!(
                    "local.aliases: {alias:?} must be a bare local part"
                ));
            }
            if target.is_empty() {
                problems.push(format!("local.aliases: {alias:?} has an empty target"));
            }
        }
        self.validate_delivery(&mut problems);
        self.validate_plugins(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn validate_plugins(&self, problems: &mut Vec<String>) {
        let mut names = std::collections::HashSet::new();
        for p in &self.plugins {
            if !names.insert(p.name.as_str()) {
                problems.push(format!("plugin {:?} is listed twice", p.name));
            }
            if p.cpu_budget_ms == 0 || p.memory_limit_mb == 0 {
                problems.push(format!(
                    "plugin {:?}: cpu_budget_ms and memory_limit_mb must be at least 1",
                    p.name
                ));
            }
        }
    }

    /// The plugin host's view of the `[[plugin]]` tables.
    pub fn plugin_specs(&self) -> Result<Vec<PluginSpec>, String> {
        self.plugins
            .iter()
            .map(|p| {
                let config_json = serde_json::to_string(&p.config).map_err(|e| {
                    format!("plugin {:?}: its config cannot be passed on: {e}", p.name)
                })?;
                Ok(PluginSpec {
                    name: p.name.clone(),
                    path: p.path.clone(),
                    on_error: match p.on_error {
                        OnErrorSetting::Tempfail => OnError::Tempfail,
                        OnErrorSetting::Continue => OnError::Continue,
                    },
                    config_json,
                    cpu_budget: Duration::from_millis(p.cpu_budget_ms),
                    memory_limit_mb: p.memory_limit_mb,
                })
            })
            .collect()
    }

    /// What the plugins' host functions use: our name, our domains, DNS.
    pub fn host_env(&self) -> Result<HostEnv, String> {
        let dns = DnsResolver::new(&DnsConfig {
            nameservers: self.dns.nameservers.clone(),
            // DNSBL and sender checks run while a client waits for its reply.
            timeout: Duration::from_secs(5),
            cache_entries: 10_000,
        })?;
        Ok(HostEnv::new(
            self.hostname(),
            self.local.domains.clone(),
            dns,
        ))
    }

    fn validate_delivery(&self, problems: &mut Vec<String>) {
        let d = &self.delivery;
        if d.threads == 0 || d.max_connections_per_destination == 0 {
            problems.push(
                "delivery: threads and max_connections_per_destination must be at least 1".into(),
            );
        }
        if d.retry_schedule_secs.is_empty() || d.retry_schedule_secs.contains(&0) {
            problems.push(
                "delivery.retry_schedule_secs needs at least one interval, none of them 0".into(),
            );
        }
        if d.max_queue_lifetime_secs == 0 {
            problems.push("delivery.max_queue_lifetime_secs must be at least 1".into());
        }
        for (domain, target) in &d.routes {
            if !matches!(Domain::parse(domain), Some(Domain::Name(_))) {
                problems.push(format!(
                    "delivery.routes: {domain:?} is not a valid domain name"
                ));
            }
            if let Err(e) = check_host_port(target) {
                problems.push(format!("delivery.routes.{domain}: {e}"));
            }
        }
        if let (false, Err(e)) = (d.smarthost.is_empty(), check_host_port(&d.smarthost)) {
            problems.push(format!("delivery.smarthost: {e}"));
        }
        let lmtp_tcp = !d.lmtp.is_empty() && !d.lmtp.starts_with("unix:/");
        if let (true, Err(e)) = (lmtp_tcp, check_host_port(&d.lmtp)) {
            problems.push(format!("delivery.lmtp: {e} (or \"unix:/path/to/socket\")"));
        }
    }

    pub fn hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(system_hostname)
    }

    /// The front end's view of this configuration.
    pub fn smtpd(&self) -> SmtpdConfig {
        let session = ServerConfig {
            hostname: self.hostname(),
            max_line_length: self.limits.max_line_length,
            max_message_size: self.limits.max_message_size,
            max_recipients: self.limits.max_recipients,
            max_errors: self.limits.max_errors,
            extensions: Extensions::default(),
        };
        let policy = RecipientPolicy::new(
            self.local.domains.iter().cloned(),
            self.local.users.iter().cloned(),
            self.local
                .aliases
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            self.relay.trusted_networks.iter().copied(),
        );
        let mut smtpd = SmtpdConfig::new(
            session,
            self.listen.iter().map(|l| l.addr).collect(),
            policy,
        );
        smtpd.event_loops = self.server.event_loops;
        smtpd.max_connections = self.limits.max_connections;
        smtpd.max_connections_per_ip = self.limits.max_connections_per_ip;
        smtpd.command_timeout = Duration::from_secs(self.limits.idle_timeout_secs);
        smtpd.data_timeout = Duration::from_secs(self.limits.data_timeout_secs);
        smtpd.shutdown_grace = Duration::from_secs(self.server.shutdown_grace_secs);
        smtpd
    }
}

impl Config {
    /// The delivery scheduler's view of this configuration.
    pub fn scheduler(&self) -> SchedulerConfig {
        let d = &self.delivery;
        SchedulerConfig {
            threads: d.threads,
            max_connections_per_destination: d.max_connections_per_destination,
            retry_schedule: d
                .retry_schedule_secs
                .iter()
                .map(|&s| Duration::from_secs(s))
                .collect(),
            max_queue_lifetime: Duration::from_secs(d.max_queue_lifetime_secs),
            hostname: self.hostname(),
        }
    }

    /// Local and remote delivery, as the delivery threads run them.
    pub fn dispatch(&self) -> Result<Dispatch, String> {
        let d = &self.delivery;
        let hostname = self.hostname();
        let local = local::Local::new(LocalConfig {
            maildir_root: self.local.maildir_root.clone(),
            users: self.local.users.clone(),
            aliases: self.local.aliases.clone(),
            hostname: hostname.clone(),
        });
        let router = Router::new(RouteConfig {
            routes: d
                .routes
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            smarthost: Some(d.smarthost.clone()).filter(|s| !s.is_empty()),
            nameservers: self.dns.nameservers.clone(),
            ..RouteConfig::default()
        })?;
        let remote = Remote::new(
            RemoteConfig {
                helo_name: hostname,
                // RFC 5321 §4.5.3.2 gives no connect timeout; 30 s is what
                // Postfix uses (smtp_connect_timeout).
                connect_timeout: Duration::from_secs(30),
                idle_close: Duration::from_secs(5),
                // Postfix sets no count limit at all (only 300 s); a high one
                // still retires a connection now and then.
                max_messages_per_connection: 1000,
            },
            router,
        );
        Ok(Dispatch::new(
            self.local.domains.iter().cloned(),
            local,
            remote,
            Some(d.lmtp.clone()),
        ))
    }
}

/// `host:port` or `[ipv6]:port`, with a port that is a number.
fn check_host_port(target: &str) -> Result<(), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("{target:?} needs a port, as in \"mx.example.net:25\""))?;
    port.parse::<u16>()
        .map_err(|_| format!("{target:?}: {port:?} is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid = host.parse::<std::net::IpAddr>().is_ok()
        || matches!(Domain::parse(host), Some(Domain::Name(_)));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{target:?}: {host:?} is not a host name or address"
        ))
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
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|p| p.join("; "))?;
        Ok(config)
    }

    #[test]
    fn the_documented_example_parses_with_every_value_taken() {
        let c = parse(
            r#"
            hostname = "mx.example.test"
            spool_dir = "/var/spool/sluice"
            [[listen]]
            addr = "127.0.0.1:2525"
            mode = "smtp"
            [limits]
            max_message_size = 36700160
            max_recipients = 100
            idle_timeout_secs = 300
            max_connections = 10000
            max_connections_per_ip = 50
            [local]
            domains = ["example.test"]
            maildir_root = "var/mail"
            users = ["postmaster", "alice"]
            aliases = { root = "postmaster" }
            [relay]
            trusted_networks = ["127.0.0.0/8", "::1/128"]
            "#,
        )
        .unwrap();
        assert_eq!(c.hostname(), "mx.example.test");
        assert_eq!(c.spool_dir, PathBuf::from("/var/spool/sluice"));
        assert_eq!(
            c.local.aliases.get("root").map(String::as_str),
            Some("postmaster")
        );
        let smtpd = c.smtpd();
        assert_eq!(smtpd.session.max_message_size, 36_700_160);
        assert_eq!(smtpd.max_connections_per_ip, 50);
        assert!(smtpd.policy.is_trusted("::1".parse().unwrap()));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let c = parse(include_str!("../../../deploy/sluice.toml")).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.local.users, ["postmaster", "alice", "bob"]);
        assert_eq!(
            c.local.aliases.get("abuse").map(String::as_str),
            Some("postmaster")
        );
    }

    #[test]
    fn an_empty_file_means_the_embedded_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen[0].addr, SocketAddr::from(([127, 0, 0, 1], 2525)));
        assert_eq!(c.local.domains, ["localhost"]);
        assert!(c.local.users.contains(&"postmaster".to_string()));
        assert_eq!(c.limits.max_line_length, 512);
    }

    #[test]
    fn delivery_settings_are_checked() {
        let c = parse(
            "[delivery]\nsmarthost = \"127.0.0.1:2626\"\nroutes = { \"remote.test\" = \"[::1]:25\" }\n\
             lmtp = \"unix:/run/dovecot/lmtp\"\n[dns]\nnameservers = [\"127.0.0.1:5353\"]\n",
        )
        .unwrap();
        assert_eq!(c.delivery.threads, 32);
        assert_eq!(
            c.dns.nameservers,
            ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]
        );
        let e = parse(
            "[delivery]\nsmarthost = \"relay.example.net\"\nroutes = { \"a.test\" = \"h:x\" }\n",
        )
        .unwrap_err();
        assert!(e.contains("needs a port"), "{e}");
        assert!(e.contains("\"x\" is not a port number"), "{e}");
        let e = parse("[delivery]\nretry_schedule_secs = []\nlmtp = \"dovecot\"\n").unwrap_err();
        assert!(
            e.contains("retry_schedule_secs needs at least one interval"),
            "{e}"
        );
        assert!(e.contains("delivery.lmtp"), "{e}");
    }

    #[test]
    fn plugins_default_to_the_shipped_ones_and_can_be_configured() {
        let c = parse("").unwrap();
        let names: Vec<&str> = c.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["relay-refusal", "antispam"]);
        assert_eq!(
            c.plugins[0].path,
            PathBuf::from("plugins/dist/relay-refusal.wasm")
        );

        let c = parse("plugin = []\n").unwrap();
        assert!(c.plugins.is_empty());

        let c = parse(
            "[[plugin]]\nname = \"antispam\"\npath = \"/usr/lib/sluice/antispam.wasm\"\non_error = \"continue\"\n\
             [plugin.config]\ndnsbl_zones = [\"zen.example\"]\nreject_score = 10.0\n",
        )
        .unwrap();
        let specs = c.plugin_specs().unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].on_error, OnError::Continue);
        assert_eq!(specs[0].cpu_budget, Duration::from_millis(50));
        let json: serde_json::Value = serde_json::from_str(&specs[0].config_json).unwrap();
        assert_eq!(json["dnsbl_zones"][0], "zen.example");
        assert_eq!(json["reject_score"], 10.0);

        let e = parse("[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\non_error = \"ignore\"\n")
            .unwrap_err();
        assert!(e.contains("on_error"), "{e}");
        let e = parse("[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\n[[plugin]]\nname = \"a\"\npath = \"b.wasm\"\n")
            .unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn typos_and_bad_values_are_explained() {
        let e = parse("[limits]\nmax_mesage_size = 10\n").unwrap_err();
        assert!(e.contains("unknown field `max_mesage_size`"), "{e}");
        let e = parse("[relay]\ntrusted_networks = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(e.contains("trusted_networks"), "{e}");
        let e = parse("[limits]\nmax_line_length = 100\n[local]\ndomains = [\"bad domain\"]\n")
            .unwrap_err();
        assert!(e.contains("max_line_length = 100 is below"), "{e}");
        assert!(
            e.contains("\"bad domain\" is not a valid domain name"),
            "{e}"
        );
        let e = parse("[[listen]]\naddr = \"127.0.0.1:587\"\nmode = \"submission\"\n").unwrap_err();
        assert!(e.contains("not supported yet"), "{e}");
    }
}
