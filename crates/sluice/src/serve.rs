//! `sluice serve`: the parts started in order, and stopped in reverse.
//!
//! Start: spool (recovery) → delivery scheduler → control socket → plugins →
//! front end. Stop (SIGTERM/SIGINT): the front end finishes transactions in
//! flight, then the control socket goes, the scheduler journals what is in
//! flight, and the spool flushes last.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};
use sluice_delivery::scheduler::Scheduler;
use sluice_dns::Resolver;
use sluice_plugin_host::PluginHost;
use sluice_smtpd::Smtpd;
use sluice_spool::Spool;
use sluice_tls::{CertInfo, ServerTls};

use crate::config::Config;
use crate::control::ControlServer;

pub fn serve(config: Config, config_path: Option<PathBuf>) -> Result<(), String> {
    // Past a file-size limit (systemd's LimitFSIZE=, `ulimit -f`) the kernel
    // sends SIGXFSZ, whose default action kills the process. With a handler
    // installed, the write fails with EFBIG instead, the spool reports
    // "storage full", and the client gets 452 4.3.1 while we keep serving.
    signal_hook::flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)))
        .map_err(|e| format!("cannot handle SIGXFSZ: {e}"))?;
    config
        .preflight()
        .map_err(|problems| format!("cannot start: {}", problems.join("; ")))?;
    let dir = &config.spool_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create spool directory {}: {e}", dir.display()))?;
    let (spool, report) = Spool::open(dir, config.spool.spool_config())
        .map_err(|e| format!("cannot open the spool in {}: {e}", dir.display()))?;
    tracing::info!(
        spool = %dir.display(),
        messages = report.live_messages,
        torn_tail_bytes = report.torn_tail_bytes,
        "spool recovered"
    );
    // One resolver for routing and plugins: one DNS runtime, one cache.
    let dns = config.resolver()?;
    // One directory for the RCPT check, local delivery and the plugins.
    let directory = config.directory();
    // The scheduler hears of every new message from the spool itself.
    let scheduler = Scheduler::start(
        config.scheduler(),
        spool.handle(),
        Arc::new(config.dispatch(&dns, directory.clone(), spool.handle())?),
    )
    .map_err(|e| e.to_string())?;
    let control = ControlServer::start(dir, scheduler.handle(), spool.handle())?;
    // Bound before the front end: a taken port stops the start, not the
    // metrics alone.
    let metrics_listener = config
        .metrics
        .addr()?
        .map(crate::metrics_http::bind)
        .transpose()?;
    sluice_metrics::add_collector(crate::metrics_http::queue_collector(scheduler.handle()));
    sluice_metrics::add_collector(crate::metrics_http::spool_collector(spool.handle()));
    // One key-value store for the plugins and the count of failed logins.
    let kv = config.kv_store()?;
    let plugins = Arc::new(load_plugins(&config, &dns, directory.clone(), kv.clone())?);
    let auth = config.auth_setup(kv)?;

    let tls = config.server_tls()?.map(Arc::new);
    if let Some(tls) = &tls {
        log_certificates("TLS certificate", &tls.certificates());
    }
    let renewals = tls
        .clone()
        .map(|tls| watch_certificates(tls, config.tls.reload_check_secs()))
        .transpose()?;
    let mut smtpd_config = config.smtpd(directory, tls.clone(), auth);
    smtpd_config.msgauth = config.msgauth_setup(&dns)?;
    if let Some(signer) = &smtpd_config.msgauth.signer {
        tracing::info!(keys = ?signer, "DKIM signing");
    }
    let hostname = smtpd_config.session.hostname.clone();
    // Before the listeners announce themselves: a supervisor (or a test)
    // may send SIGTERM as soon as it reads "listening on", and the signal
    // must then wait here for its thread rather than kill the process.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let smtpd = Smtpd::start(smtpd_config, spool.handle(), plugins.clone())
        .map_err(|e| format!("cannot listen: {e}"))?;
    for addr in smtpd.local_addrs() {
        // Tests and scripts read this line to learn the port (addr may say port 0).
        tracing::info!("listening on {addr} as {hostname}");
    }
    if config.sendmail.enabled {
        let socket = config.sendmail.socket_path(&config.spool_dir);
        tracing::info!(socket = %socket.display(), "local submission (sendmail) ready");
    }

    let stopper = smtpd.stopper();
    let metrics = match metrics_listener {
        Some(listener) => {
            let accepting = stopper.clone();
            let server = crate::metrics_http::MetricsServer::start(
                listener,
                Arc::new(move || accepting.is_accepting()),
            )?;
            tracing::info!("metrics on http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    // systemd's Type=notify: ready once the listeners are up. Outside
    // systemd (no NOTIFY_SOCKET) these calls do nothing.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let signal_handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    let mut reloading = vec![sd_notify::NotifyState::Reloading];
                    reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
                    let _ = sd_notify::notify(false, &reloading);
                    reload_plugins(&plugins, config_path.as_deref());
                    if let Some(tls) = &tls {
                        match tls.reload() {
                            Ok(certs) => log_certificates("TLS certificate reloaded", &certs),
                            Err(e) => tracing::warn!(
                                error = %e,
                                "TLS certificates not reloaded: the old ones stay in service"
                            ),
                        }
                    }
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    continue;
                }
                tracing::info!(signal, "shutting down: finishing transactions in flight");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                stopper.stop();
                return;
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    smtpd.wait();
    drop(metrics);
    signal_handle.close();
    drop(renewals);
    // Receiving has stopped; deliveries in flight finish and are journaled
    // before the spool closes.
    drop(control);
    scheduler.shutdown();
    spool.shutdown();
    tracing::info!("stopped");
    Ok(())
}

fn load_plugins(
    config: &Config,
    dns: &Resolver,
    directory: Arc<sluice_directory::Directory>,
    kv: Arc<dyn sluice_plugin_host::KvStore>,
) -> Result<PluginHost, String> {
    let mut env = config.host_env_with(dns, directory);
    // Compiled plugin code is kept beside the queue, so a restart or a SIGHUP
    // with unchanged .wasm files skips Cranelift (seconds in a debug build).
    env.code_cache = Some(config.spool_dir.join("plugin-cache"));
    env.kv = kv;
    // Hooks whose plugins need nothing to wait for run on the event loop
    // that asks (no hand-off to a filter thread and back): one caller each.
    env.inline_callers = match config.server.event_loops {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let specs = config.plugin_specs()?;
    for spec in &specs {
        tracing::info!(plugin = %spec.name, path = %spec.path.display(), "filter");
    }
    let host = PluginHost::load(specs, env).map_err(|e| e.to_string())?;
    let names = host.plugin_names();
    tracing::info!(plugins = %names.join(","), "filters loaded");
    Ok(host)
}

/// SIGHUP: read the configuration again and swap in its plugins. Connections
/// stay up; a chain that fails to load leaves the running one in place.
fn reload_plugins(host: &PluginHost, config_path: Option<&std::path::Path>) {
    let specs = match config_path {
        Some(path) => Config::load(path).and_then(|c| c.plugin_specs()),
        None => Config::default().plugin_specs(),
    };
    match specs.and_then(|specs| host.reload(specs).map_err(|e| e.to_string())) {
        Ok(()) => tracing::info!(plugins = %host.plugin_names().join(","), "filters reloaded"),
        Err(e) => tracing::warn!(error = %e, "filters not reloaded: kept the old version"),
    }
}

fn log_certificates(what: &str, certs: &[CertInfo]) {
    for cert in certs {
        tracing::info!(
            file = %cert.cert.display(),
            names = %cert.names.join(","),
            serial = %cert.serial,
            key = cert.key_type,
            not_after = %sluice_smtp::date::rfc5322_date(cert.not_after),
            "{what}"
        );
        if cert.expired_at(std::time::SystemTime::now()) {
            tracing::warn!(file = %cert.cert.display(), "TLS certificate is outside its validity");
        }
    }
}

/// Looks at the certificate files every `secs` seconds and puts a renewal
/// in service (certbot and friends replace them without telling anyone).
/// Stops when the returned sender is dropped.
fn watch_certificates(
    tls: Arc<ServerTls>,
    secs: u64,
) -> Result<std::sync::mpsc::SyncSender<()>, String> {
    let (stop, stopped) = std::sync::mpsc::sync_channel::<()>(0);
    if secs == 0 {
        return Ok(stop);
    }
    let every = std::time::Duration::from_secs(secs);
    std::thread::Builder::new()
        .name("tls-watch".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(every)
            {
                match tls.reload_if_changed() {
                    None => {}
                    Some(Ok(certs)) => log_certificates("TLS certificate reloaded", &certs),
                    Some(Err(e)) => tracing::warn!(
                        error = %e,
                        "TLS certificate files changed but do not load: the old ones stay in service"
                    ),
                }
            }
        })
        .map_err(|e| format!("cannot start the certificate watcher: {e}"))?;
    Ok(stop)
}
