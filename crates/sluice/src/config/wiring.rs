//! From a valid configuration to the settings of each part: the front end,
//! the plugin host, the delivery scheduler and the transports. Nothing here
//! judges a value; `validate` has done that.

use std::sync::Arc;
use std::time::Duration;

use sluice_delivery::dispatch::{Dispatch, DispatchConfig};
use sluice_delivery::local::{self, LocalConfig};
use sluice_delivery::mta_sts::MtaSts;
use sluice_delivery::remote::tls::{Level, TlsPolicy};
use sluice_delivery::remote::{Remote, RemoteConfig, Timeouts};
use sluice_delivery::route::{RouteConfig, Router};
use sluice_delivery::scheduler::SchedulerConfig;
use sluice_directory::{Directory, DirectoryConfig};
use sluice_dns::Resolver;
use sluice_plugin_host::{DnsResolver, HostEnv, KvStore, MemoryKv, OnError, PluginSpec, RedisKv};
use sluice_smtp::server::{Extensions, ServerConfig};
use sluice_smtpd::auth::{AuthSetup, SenderPolicy};
use sluice_smtpd::msgauth::MsgAuthSetup;
use sluice_smtpd::{Listener, ListenerMode, RecipientPolicy, SmtpdConfig};
use sluice_spool::SpoolHandle;
use sluice_tls::{ClientTls, ServerTls};

use super::{Config, Delivery, KvBackend, ListenMode, OnErrorSetting};

/// How long to wait for one answer from a name server, and the bound on one
/// plugin `dns_lookup`: DNSBL and sender checks run while a client waits for
/// its reply.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Plugins' answers kept as text ready for them (DNSBL results, mostly).
const PLUGIN_DNS_CACHE_ENTRIES: usize = 10_000;

impl Config {
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
                    path: p.wasm_path()?,
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

    /// The certificates of `[tls]`, loaded and checked; `None` without.
    pub fn server_tls(&self) -> Result<Option<ServerTls>, String> {
        match self.tls.server_config()? {
            None => Ok(None),
            Some(config) => ServerTls::load(config)
                .map(Some)
                .map_err(|e| format!("tls: {e}")),
        }
    }

    /// The trust for next hops' certificates (`[delivery.tls] ca_file`, or
    /// the system's store); `None` when no destination uses TLS.
    pub fn client_tls(&self) -> Result<Option<ClientTls>, String> {
        use super::tls::SecurityLevel;
        let t = &self.delivery.tls;
        let used = t.security_level != SecurityLevel::None
            || t.policy.values().any(|l| *l != SecurityLevel::None)
            || t.mta_sts;
        if !used {
            return Ok(None);
        }
        let ca_file = (!t.ca_file.as_os_str().is_empty()).then_some(t.ca_file.as_path());
        ClientTls::new(ca_file)
            .map(Some)
            .map_err(|e| format!("delivery.tls: {e}"))
    }

    /// The server's one DNS resolver, for routing and plugins alike: one
    /// runtime, one cache.
    pub fn resolver(&self) -> Result<Resolver, String> {
        Resolver::new(&self.dns.nameservers, DNS_TIMEOUT).map_err(|e| e.to_string())
    }

    /// Who is local: the one answer the RCPT check, local delivery and the
    /// plugins' `is_local_domain` share. Build it once and hand it to each.
    pub fn directory(&self) -> Arc<Directory> {
        Arc::new(Directory::new(DirectoryConfig {
            domains: self.local_domains(),
            users: self.local.users.clone(),
            aliases: self.local.aliases.clone(),
            recipient_delimiter: self.local.recipient_delimiter.clone(),
        }))
    }

    /// What the plugins' host functions use, with a resolver of their own
    /// (`sluice plugin test`, where nothing else needs one). Its key-value
    /// store is always a fresh embedded one: a trial run must not write
    /// greylisting or rate-limit entries into the servers' shared Redis.
    pub fn host_env(&self) -> Result<HostEnv, String> {
        Ok(self.host_env_with(&self.resolver()?, self.directory()))
    }

    /// What the plugins' host functions use: our name, our directory, and
    /// lookups through `dns`; an embedded key-value store, which a server
    /// replaces with [`Config::kv_store`].
    pub fn host_env_with(&self, dns: &Resolver, directory: Arc<Directory>) -> HostEnv {
        let dns = DnsResolver::with_resolver(dns.clone(), DNS_TIMEOUT, PLUGIN_DNS_CACHE_ENTRIES);
        HostEnv::new(self.hostname(), directory, dns)
    }

    /// The plugins' shared key-value store as `[kv]` says. A Redis store is
    /// asked once whether it answers, and the answer logged; one that does
    /// not is still returned: a Redis that is down must not keep mail from
    /// being served, and hooks that use it fail by their plugin's on_error
    /// until it is back (connections are made on use, and again after a
    /// failure).
    pub fn kv_store(&self) -> Result<Arc<dyn KvStore>, String> {
        let kv = &self.kv;
        Ok(match kv.backend {
            KvBackend::Memory => Arc::new(MemoryKv::new()),
            KvBackend::Redis => {
                let redis = RedisKv::new(
                    &kv.redis_url,
                    &kv.key_prefix,
                    Duration::from_millis(kv.timeout_ms),
                )
                .map_err(|e| format!("kv.redis_url: {e}"))?;
                match redis.ping() {
                    Ok(()) => tracing::info!(
                        server = redis.server(),
                        prefix = %kv.key_prefix,
                        "key-value store: redis"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "key-value store: redis does not answer; hooks that use it fail until it does"
                    ),
                }
                Arc::new(redis)
            }
        })
    }

    /// The front end's view of this configuration.
    /// AUTH as `[auth]` sets it up; `kv` counts failed logins.
    pub fn auth_setup(&self, kv: Arc<dyn KvStore>) -> Result<Option<AuthSetup>, String> {
        use super::auth::AuthBackend;
        let a = &self.auth;
        let authenticator: Arc<dyn sluice_auth::Authenticator> = match a.backend {
            None => return Ok(None),
            Some(AuthBackend::File) => Arc::new(
                sluice_auth::PasswdFile::open(&a.users_file)
                    .map_err(|e| format!("auth.users_file: {e}"))?,
            ),
            Some(AuthBackend::Dovecot) => {
                Arc::new(sluice_auth::DovecotSasl::new(a.dovecot_socket.clone()))
            }
        };
        Ok(Some(AuthSetup {
            authenticator,
            guard: Some(sluice_auth::Guard::new(
                kv,
                a.lockout_failures,
                Duration::from_secs(a.lockout_secs),
            )),
            max_failures: a.max_failures,
            failure_delay: Duration::from_millis(a.failure_delay_ms),
            threads: a.threads,
            senders: SenderPolicy {
                explicit: a
                    .senders
                    .iter()
                    .map(|(login, list)| {
                        (
                            login.to_ascii_lowercase(),
                            list.iter().map(|s| s.to_ascii_lowercase()).collect(),
                        )
                    })
                    .collect(),
                local_domains: self.local.domains.clone(),
            },
        }))
    }

    /// Email authentication as `[authentication]` and `[[dkim]]` set it
    /// up: checks on `dns`, keys read now.
    pub fn msgauth_setup(&self, dns: &Resolver) -> Result<MsgAuthSetup, String> {
        Ok(MsgAuthSetup {
            checker: self.authentication.checker(dns, self.hostname()),
            signer: super::msgauth::signer(&self.dkim)?,
            threads: self.authentication.threads,
        })
    }

    /// The domain of local users' own addresses: as configured, else the
    /// hostname (Postfix's `myorigin`), which is always local.
    pub fn origin(&self) -> String {
        match self.sendmail.origin.as_str() {
            "" => self.hostname(),
            origin => origin.to_string(),
        }
    }

    /// The local domains: those configured, and the hostname, as Postfix's
    /// `mydestination` holds `$myhostname`: mail to `postmaster@<our name>`
    /// and cron's mail to `root@<our name>` stay here.
    pub fn local_domains(&self) -> Vec<String> {
        let mut domains = self.local.domains.clone();
        let hostname = self.hostname();
        if !domains.iter().any(|d| d.eq_ignore_ascii_case(&hostname)) {
            domains.push(hostname);
        }
        domains
    }

    pub fn smtpd(
        &self,
        directory: Arc<Directory>,
        tls: Option<Arc<ServerTls>>,
        auth: Option<AuthSetup>,
    ) -> SmtpdConfig {
        let session = ServerConfig {
            hostname: self.hostname(),
            max_line_length: self.limits.max_line_length,
            max_message_size: self.limits.max_message_size,
            max_recipients: self.limits.max_recipients,
            max_errors: self.limits.max_errors,
            extensions: Extensions::default(),
            // Per listener, from its mode (sluice_smtpd::ListenerMode).
            tls_required: false,
            auth_required: false,
        };
        let policy = RecipientPolicy::new(directory, self.relay.trusted_networks.iter().copied());
        let mut smtpd = SmtpdConfig::new(session, Vec::new(), policy);
        smtpd.listen = self
            .listen
            .iter()
            .map(|l| Listener {
                addr: l.addr,
                mode: match l.mode {
                    ListenMode::Smtp => ListenerMode::Smtp,
                    ListenMode::Submission => ListenerMode::Submission,
                    ListenMode::Smtps => ListenerMode::Smtps,
                },
                proxy: l.proxy_protocol.then(|| sluice_smtpd::ProxyProtocol {
                    trusted: l.proxy_trusted.clone(),
                    untrusted: match l.proxy_untrusted {
                        super::ops::ProxyUntrusted::Refuse => sluice_smtpd::UntrustedPeer::Refuse,
                        super::ops::ProxyUntrusted::Direct => sluice_smtpd::UntrustedPeer::Direct,
                    },
                    timeout: std::time::Duration::from_secs(l.proxy_timeout_secs),
                }),
            })
            .collect();
        smtpd.tls = tls;
        smtpd.auth = auth;
        let s = &self.sendmail;
        smtpd.local = s.enabled.then(|| sluice_smtpd::local::LocalSubmit {
            socket: s.socket_path(&self.spool_dir),
            trusted_uids: s.trusted_uids(),
            origin: self.origin(),
        });
        smtpd.tls_handshake_timeout = Duration::from_secs(self.tls.handshake_timeout_secs());
        smtpd.event_loops = self.server.event_loops;
        smtpd.max_connections = self.limits.max_connections;
        smtpd.max_connections_per_ip = self.limits.max_connections_per_ip;
        smtpd.command_timeout = Duration::from_secs(self.limits.idle_timeout_secs);
        smtpd.data_timeout = Duration::from_secs(self.limits.data_timeout_secs);
        smtpd.shutdown_grace = Duration::from_secs(self.server.shutdown_grace_secs);
        smtpd
    }

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

    /// Local and remote delivery, as the delivery threads run them; next
    /// hops are looked up through `dns`, and forwards are queued in `spool`.
    pub fn dispatch(
        &self,
        dns: &Resolver,
        directory: Arc<Directory>,
        spool: SpoolHandle,
    ) -> Result<Dispatch, String> {
        let d = &self.delivery;
        let hostname = self.hostname();
        let local = local::Local::new(LocalConfig {
            maildir_root: self.local.maildir_root.clone(),
            hostname: hostname.clone(),
        });
        let router = Router::new(
            RouteConfig {
                routes: d
                    .routes
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect(),
                smarthost: Some(d.smarthost.clone()).filter(|s| !s.is_empty()),
            },
            dns.clone(),
        )
        .map_err(|e| format!("delivery: {e:?}"))?
        .with_smtp_port(d.mx_port);
        let mut remote = Remote::new(
            RemoteConfig {
                helo_name: hostname.clone(),
                timeouts: d.timeouts(),
                idle_close: Duration::from_secs(5),
                // Postfix sets no count limit at all (only 300 s); a high one
                // still retires a connection now and then.
                max_messages_per_connection: 1000,
                chunking: d.chunking,
            },
            router,
        );
        let mut logins = std::collections::HashMap::new();
        for (hop, login) in &d.credentials {
            logins.insert(hop.clone(), read_login(hop, login)?);
        }
        remote = remote
            .with_credentials(logins)
            .with_no_chunking(d.no_chunking.iter().cloned());
        if let Some(client) = self.client_tls()? {
            if d.tls.mta_sts {
                remote = remote.with_mta_sts(MtaSts::new(
                    dns.clone(),
                    client.clone(),
                    self.spool_dir.join("mta-sts"),
                    d.tls.mta_sts_port,
                ));
            }
            let mut policy = TlsPolicy::new(client, level(d.tls.security_level));
            policy.per_domain = d
                .tls
                .policy
                .iter()
                .map(|(domain, l)| (domain.trim_end_matches('.').to_ascii_lowercase(), level(*l)))
                .collect();
            remote = remote.with_tls(policy);
        }
        Ok(Dispatch::new(DispatchConfig {
            directory,
            local,
            remote,
            lmtp: Some(d.lmtp.clone()),
            spool,
            hostname,
        }))
    }
}

impl Delivery {
    /// The SMTP and LMTP client's waits for the connection, replies and writes.
    pub fn timeouts(&self) -> Timeouts {
        let secs = Duration::from_secs;
        Timeouts {
            connect: secs(self.connect_timeout_secs),
            greeting: secs(self.greeting_timeout_secs),
            command: secs(self.command_timeout_secs),
            data_init: secs(self.data_init_timeout_secs),
            data_block: secs(self.data_block_timeout_secs),
            data_end: secs(self.data_end_timeout_secs),
        }
    }
}

/// `secure` is `verify` here: both check the MX host name, which is the
/// name Postfix's `secure` matches by default.
fn level(l: super::tls::SecurityLevel) -> Level {
    use super::tls::SecurityLevel as S;
    match l {
        S::None => Level::None,
        S::May => Level::May,
        S::Encrypt => Level::Encrypt,
        S::Verify | S::Secure => Level::Verify,
    }
}

/// The password of a next-hop login, from its file; a warning when others
/// than the service user can read it.
fn read_login(
    hop: &str,
    login: &super::NextHopLogin,
) -> Result<sluice_smtp::client::Credentials, String> {
    use std::os::unix::fs::MetadataExt;
    let path = &login.password_file;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("delivery.credentials.{hop}: {}: {e}", path.display()))?;
    if std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o077 != 0) {
        tracing::warn!(file = %path.display(), "password file is readable by others than its owner (chmod 600)");
    }
    let password = text.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(format!(
            "delivery.credentials.{hop}: {} is empty",
            path.display()
        ));
    }
    Ok(sluice_smtp::client::Credentials {
        login: login.username.clone(),
        password,
        in_clear: login.allow_plaintext,
    })
}
