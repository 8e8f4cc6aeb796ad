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
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
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
