//! What the types cannot check, explained for the operator: every problem at
//! once (`sluice check-config` and `serve` both refuse a file that has any),
//! and notes on values that are allowed but unwise.

use std::path::Path;
use std::time::Duration;

use sluice_delivery::remote::Timeouts;
use sluice_plugin_host::RedisKv;
use sluice_smtp::Domain;
use sluice_sys::unix_socket;

use super::{Config, Delivery, Kv, KvBackend, ListenMode};

impl Config {
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
        for l in &self.listen {
            if l.proxy_protocol && l.proxy_trusted.is_empty() {
                problems.push(format!(
                    "listen {}: proxy_protocol needs proxy_trusted, the proxies' addresses \
                     (a header is a claim about someone else's address: only a proxy may make it)",
                    l.addr
                ));
            }
            if l.proxy_protocol && l.proxy_timeout_secs == 0 {
                problems.push(format!(
                    "listen {}: proxy_timeout_secs must be at least 1",
                    l.addr
                ));
            }
            if !l.proxy_protocol && !l.proxy_trusted.is_empty() {
                problems.push(format!(
                    "listen {}: proxy_trusted is set but proxy_protocol is not on",
                    l.addr
                ));
            }
        }
        if let Err(e) = self.metrics.addr() {
            problems.push(e);
        }
        if self.listen.is_empty() {
            problems.push("listen: at least one [[listen]] address is needed".into());
        }
        match self.tls.server_config() {
            Err(e) => problems.push(e),
            Ok(None) => {
                for l in self.listen.iter().filter(|l| l.mode != ListenMode::Smtp) {
                    problems.push(format!(
                        "listen {}: mode {:?} needs a certificate ([tls] cert and key)",
                        l.addr, l.mode
                    ));
                }
            }
            Ok(Some(_)) => {}
        }
        problems.extend(self.auth.problems());
        problems.extend(self.sendmail.problems());
        problems.extend(self.authentication.problems());
        problems.extend(super::msgauth::dkim_problems(&self.dkim));
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
        if let Some(c) = self
            .local
            .recipient_delimiter
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '@' | '"' | '\\' | '.'))
        {
            problems.push(format!(
                "local.recipient_delimiter: {c:?} cannot start an address extension \
                 (use visible ASCII such as \"+\" or \"-\", not '@', '.', quotes or spaces)"
            ));
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
        self.validate_kv(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// What a valid configuration needs of this machine to start: the
    /// plugin files, and a way to reach its Unix sockets. `check-config`
    /// reports these with the other problems; `serve` checks them before it
    /// opens anything, so that it fails with every reason at once.
    pub fn preflight(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for p in &self.plugins {
            match p.wasm_path() {
                Err(e) => problems.push(e),
                Ok(path) if !path.is_file() => problems.push(format!(
                    "plugin {:?}: {} is not a file",
                    p.name,
                    path.display()
                )),
                Ok(_) => {}
            }
        }
        // Longer socket paths than a socket address holds are reached
        // through /proc/self/fd (sluice_sys::unix_socket).
        let control = self.spool_dir.join(crate::control::SOCKET_NAME);
        let lmtp = self.delivery.lmtp.strip_prefix("unix:").map(Path::new);
        let too_long = [
            ("spool_dir", Some(control.as_path())),
            ("delivery.lmtp", lmtp),
        ]
        .into_iter()
        .filter_map(|(what, path)| path.filter(|p| !unix_socket::fits(p)).map(|p| (what, p)));
        for (what, path) in too_long {
            if !unix_socket::long_paths_supported() {
                problems.push(format!(
                    "{what}: the socket path {} is longer than {} octets, which needs \
                     /proc/self/fd (mount /proc, or choose a shorter path)",
                    path.display(),
                    unix_socket::MAX_PATH
                ));
            }
        }
        if let Err(e) = self.server_tls() {
            problems.push(e);
        }
        if let Err(e) = super::msgauth::signer(&self.dkim) {
            problems.push(e);
        }
        if let Err(e) = self.client_tls() {
            problems.push(e);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Values that are valid but that an operator should know about, for
    /// `check-config` to print.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = self.tls_notes();
        notes.extend(self.other_notes());
        notes
    }

    /// Certificates that load but will not please clients: expired, or not
    /// valid for our own name.
    fn tls_notes(&self) -> Vec<String> {
        let Ok(Some(tls)) = self.server_tls() else {
            return Vec::new();
        };
        let now = std::time::SystemTime::now();
        let hostname = self.hostname();
        let mut notes = Vec::new();
        for cert in tls.certificates() {
            if cert.expired_at(now) {
                notes.push(format!(
                    "warning: the certificate in {} is outside its validity (not after {}): \
                     clients that verify will refuse it",
                    cert.cert.display(),
                    sluice_smtp::date::rfc5322_date(cert.not_after)
                ));
            }
        }
        if !tls.certificates().iter().any(|c| c.matches(&hostname)) {
            notes.push(format!(
                "warning: no certificate is valid for the hostname {hostname:?}: \
                 clients that verify (and MTA-STS senders) will refuse it"
            ));
        }
        notes
    }

    fn other_notes(&self) -> Vec<String> {
        let kv = &self.kv;
        let kv_unused = (kv.backend == KvBackend::Memory
            && kv.redis_url != Kv::default().redis_url)
            .then(|| {
                "kv.redis_url is set but kv.backend is \"memory\": Redis is not used \
                 (add backend = \"redis\" to share plugin state between servers)"
                    .to_owned()
            });
        let delivery = self
            .delivery
            .client_timeouts()
            .filter(|&(_, secs, rfc)| rfc.is_some_and(|rfc| secs < rfc))
            .map(|(key, secs, rfc)| {
                format!(
                    "delivery.{key} = {secs} is below RFC 5321's minimum of {}: a slow but working \
                     next hop may be cut off and the message tried again later",
                    rfc.unwrap_or_default()
                )
            });
        kv_unused.into_iter().chain(delivery).collect()
    }

    fn validate_kv(&self, problems: &mut Vec<String>) {
        let kv = &self.kv;
        if kv.timeout_ms == 0 {
            problems.push(
                "kv.timeout_ms must be at least 1 (a Redis that does not answer must not \
                 hold a connection forever)"
                    .into(),
            );
        }
        if kv.backend != KvBackend::Redis {
            return;
        }
        // The Redis client takes the path as it is: no /proc route there.
        let socket = kv
            .redis_url
            .strip_prefix("redis+unix://")
            .map(|rest| rest.split('?').next().unwrap_or(rest));
        if let Some(path) = socket.filter(|p| !unix_socket::fits(Path::new(p))) {
            problems.push(format!(
                "kv.redis_url: the socket path {path} is longer than {} octets, which the \
                 Redis client cannot reach (use a shorter path, a symlink, or TCP)",
                unix_socket::MAX_PATH
            ));
        }
        // Parsing only: Redis may well be down while the file is checked.
        if let Err(e) = RedisKv::new(&kv.redis_url, &kv.key_prefix, Duration::from_millis(1)) {
            problems.push(format!(
                "kv.redis_url {:?}: {e} (expected \"redis://host:port/db\" or \
                 \"redis+unix:///path/to/socket\")",
                kv.redis_url
            ));
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
        if d.mx_port == 0 {
            problems.push(
                "delivery.mx_port = 0 is not a port the next hops can listen on \
                 (1 to 65535; real MX hosts listen on 25)"
                    .into(),
            );
        }
        for (key, secs, _) in d.client_timeouts() {
            if secs == 0 {
                problems.push(format!(
                    "delivery.{key} must be at least 1 second (0 would give up on \
                     every next hop before it could answer)"
                ));
            }
        }
    }
}

impl Delivery {
    /// The SMTP client's timeouts as configured: key, seconds, and RFC 5321
    /// §4.5.3.2's minimum in seconds where it sets one.
    fn client_timeouts(&self) -> impl Iterator<Item = (&'static str, u64, Option<u64>)> {
        let rfc = Timeouts::default();
        let secs = |d: std::time::Duration| Some(d.as_secs());
        [
            ("connect_timeout_secs", self.connect_timeout_secs, None),
            (
                "greeting_timeout_secs",
                self.greeting_timeout_secs,
                secs(rfc.greeting),
            ),
            (
                "command_timeout_secs",
                self.command_timeout_secs,
                secs(rfc.command),
            ),
            (
                "data_init_timeout_secs",
                self.data_init_timeout_secs,
                secs(rfc.data_init),
            ),
            (
                "data_block_timeout_secs",
                self.data_block_timeout_secs,
                secs(rfc.data_block),
            ),
            (
                "data_end_timeout_secs",
                self.data_end_timeout_secs,
                secs(rfc.data_end),
            ),
        ]
        .into_iter()
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
