//! Sluice's metrics, served to Prometheus.
//!
//! Recording is a function call from any thread (`sluice_metrics::received(…)`):
//! it adds to that thread's own [`Shard`](shard::Shard), found through a
//! thread-local, so the hot path takes no lock and writes no memory another
//! thread writes. [`render`] sums the shards when Prometheus scrapes (every
//! 15 s or so), then asks the registered [collectors](add_collector) for the
//! gauges that are cheaper to read than to keep (the queue, from the
//! scheduler).
//!
//! The registry is process-wide, as a server has one set of metrics; the
//! names of listeners and plugins (bounded by the configuration) are set
//! once at start with [`set_listeners`] and [`set_plugins`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

mod labels;
mod shard;
mod text;

pub use labels::{
    AuthMechanism, AuthOutcome, ConnResult, DeliveryResult, DnsKind, DnsResult, MAX_LISTENERS,
    MAX_PLUGINS, StageRan, TlsSide, Transport,
};
pub use text::{CONTENT_TYPE, Exposition, Kind};

use labels::{CODES, FIRST_CODE, STAGE_LABELS, stage_index, stage_label};
use shard::{BOUNDS_NS, Histogram, Shard};
use sluice_smtp::Stage;

type Collector = Box<dyn Fn(&mut Exposition) + Send + Sync>;

struct Registry {
    live: Mutex<Vec<Arc<Shard>>>,
    /// The counts of threads that have ended.
    retired: Shard,
    listeners: Mutex<Vec<String>>,
    plugins: Mutex<Vec<String>>,
    collectors: Mutex<Vec<Collector>>,
}

static REGISTRY: Registry = Registry {
    live: Mutex::new(Vec::new()),
    retired: Shard::new(),
    listeners: Mutex::new(Vec::new()),
    plugins: Mutex::new(Vec::new()),
    collectors: Mutex::new(Vec::new()),
};

/// A panic while holding one of these locks leaves plain data behind,
/// still good to read.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This thread's shard, registered on first use; folded into `retired`
/// when the thread ends.
struct Local(Arc<Shard>);

impl Local {
    fn new() -> Local {
        let shard = Arc::new(Shard::new());
        lock(&REGISTRY.live).push(shard.clone());
        Local(shard)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // Under the lock a scrape takes: it sees these counts either in
        // the live shard or in `retired`, never in both or neither.
        let mut live = lock(&REGISTRY.live);
        live.retain(|s| !Arc::ptr_eq(s, &self.0));
        REGISTRY.retired.add(&self.0);
    }
}

thread_local! {
    static LOCAL: Local = Local::new();
}

fn with(f: impl Fn(&Shard)) {
    // During the thread's own teardown the thread-local may be gone:
    // count into `retired` directly.
    if LOCAL.try_with(|l| f(&l.0)).is_err() {
        f(&REGISTRY.retired);
    }
}

fn inc(counter: &std::sync::atomic::AtomicU64, by: u64) {
    counter.fetch_add(by, Relaxed);
}

/// Listener names (their addresses), in the order their indexes count.
pub fn set_listeners(names: Vec<String>) {
    *lock(&REGISTRY.listeners) = names;
}

/// Plugin names, in the order of the chain.
pub fn set_plugins(names: Vec<String>) {
    *lock(&REGISTRY.plugins) = names;
}

/// Adds gauges read at scrape time. A collector runs on the thread that
/// serves the scrape and must not block for long.
pub fn add_collector(collector: impl Fn(&mut Exposition) + Send + Sync + 'static) {
    lock(&REGISTRY.collectors).push(Box::new(collector));
}

fn listener(index: usize) -> usize {
    index.min(MAX_LISTENERS - 1)
}

/// An incoming connection and what became of it.
pub fn connection(listener_index: usize, result: ConnResult) {
    with(|s| inc(&s.connections[listener(listener_index)][result as usize], 1));
}

/// A connection starts being served (for the open-connections gauge).
pub fn connection_opened(listener_index: usize) {
    with(|s| inc(&s.opened[listener(listener_index)], 1));
}

/// A served connection ended.
pub fn connection_closed(listener_index: usize) {
    with(|s| inc(&s.closed[listener(listener_index)], 1));
}

/// A command refused with `code` (4xx or 5xx) at `stage` (`None`: outside
/// the transaction's stages, like an unknown command).
pub fn rejected(stage: Option<Stage>, code: u16) {
    let Some(i) = code
        .checked_sub(FIRST_CODE)
        .map(usize::from)
        .filter(|&i| i < CODES)
    else {
        return;
    };
    with(|s| inc(&s.rejected[stage_index(stage)][i], 1));
}

/// A message accepted (its `250` sent) on a listener, and how long it took
/// from the end of its data to the `250` (filters, checks, the spool's
/// fdatasync).
pub fn received(listener_index: usize, bytes: u64, accept: Duration) {
    with(|s| {
        let l = listener(listener_index);
        inc(&s.received[l], 1);
        inc(&s.received_bytes[l], bytes);
        s.accept.observe(accept);
    });
}

/// A large message's bytes went through a spill file in the spool's
/// directory (counted when the message is complete, whatever then becomes of it).
pub fn spilled(bytes: u64) {
    with(|s| {
        inc(&s.spilled, 1);
        inc(&s.spilled_bytes, bytes);
    });
}

/// One group commit of the spool: how many submissions one fdatasync made
/// durable, and how long it took.
pub fn spool_commit(submissions: usize, took: Duration) {
    with(|s| {
        inc(&s.spool_commits, 1);
        inc(&s.spool_committed, submissions as u64);
        s.fsync.observe(took);
    });
}

/// One recipient's outcome of a delivery attempt.
pub fn delivery(transport: Transport, result: DeliveryResult, tls: bool) {
    with(|s| {
        inc(
            &s.deliveries[transport as usize][result as usize][usize::from(tls)],
            1,
        )
    });
}

/// How long one delivery attempt (one job: a message to one destination)
/// took.
pub fn delivery_attempt(transport: Transport, took: Duration) {
    with(|s| s.attempt[transport as usize].observe(took));
}

/// A TLS handshake, finished or failed.
pub fn tls_handshake(side: TlsSide, ok: bool) {
    with(|s| inc(&s.tls_handshakes[side as usize][usize::from(ok)], 1));
}

/// An AUTH attempt.
pub fn auth_attempt(mechanism: AuthMechanism, outcome: AuthOutcome) {
    with(|s| inc(&s.auth[mechanism as usize][outcome as usize], 1));
}

/// A DNS lookup.
pub fn dns_lookup(kind: DnsKind, result: DnsResult) {
    with(|s| inc(&s.dns[kind as usize][result as usize], 1));
}

/// A filter stage ran (or was abandoned) where `ran` says.
pub fn filter_stage(ran: StageRan) {
    with(|s| inc(&s.filter_stages[ran as usize], 1));
}

/// One plugin's hook at one stage (`None`: the reset and close hooks), and
/// how long it ran.
pub fn filter_hook(plugin_index: usize, stage: Option<Stage>, took: Duration) {
    let plugin = plugin_index.min(MAX_PLUGINS - 1);
    with(|s| s.filter[plugin][stage_index(stage)].observe(took));
}

/// The whole scrape: every counter summed over the threads, then the
/// collectors' gauges.
pub fn render() -> String {
    let total = Shard::new();
    {
        let live = lock(&REGISTRY.live);
        for shard in live.iter() {
            total.add(shard);
        }
        total.add(&REGISTRY.retired);
    }
    let listeners = lock(&REGISTRY.listeners).clone();
    let plugins = lock(&REGISTRY.plugins).clone();
    let mut e = Exposition::new();
    write_counters(&mut e, &total, &listeners, &plugins);
    for collector in lock(&REGISTRY.collectors).iter() {
        collector(&mut e);
    }
    e.finish()
}

fn bounds() -> Vec<f64> {
    BOUNDS_NS.iter().map(|&ns| ns as f64 / 1e9).collect()
}

/// A counter family with one series and no labels.
fn counter(e: &mut Exposition, name: &str, help: &str, c: &std::sync::atomic::AtomicU64) {
    e.family(name, help, Kind::Counter);
    e.sample(name, &[], get(c));
}

fn histogram(e: &mut Exposition, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let counts: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
    let sum = h.sum_ns.load(Relaxed) as f64 / 1e9;
    e.histogram(name, labels, &bounds(), &counts, sum);
}

fn get(c: &std::sync::atomic::AtomicU64) -> f64 {
    c.load(Relaxed) as f64
}

fn write_counters(e: &mut Exposition, t: &Shard, listeners: &[String], plugins: &[String]) {
    let listeners: Vec<&str> = listeners
        .iter()
        .take(MAX_LISTENERS)
        .map(String::as_str)
        .collect();

    let name = "sluice_smtp_connections_total";
    e.family(
        name,
        "Incoming connections, by listener and what became of them.",
        Kind::Counter,
    );
    for (l, listener) in listeners.iter().enumerate() {
        for &result in ConnResult::ALL {
            let v = get(&t.connections[l][result as usize]);
            e.sample(
                name,
                &[("listener", listener), ("result", result.name())],
                v,
            );
        }
    }

    let name = "sluice_smtp_connections";
    e.family(name, "Connections being served now.", Kind::Gauge);
    for (l, listener) in listeners.iter().enumerate() {
        let open = t.opened[l]
            .load(Relaxed)
            .saturating_sub(t.closed[l].load(Relaxed));
        e.sample(name, &[("listener", listener)], open as f64);
    }

    let name = "sluice_smtp_rejected_total";
    e.family(
        name,
        "Commands refused with a 4xx or 5xx reply, by stage and reply code.",
        Kind::Counter,
    );
    for stage in 0..STAGE_LABELS {
        for code in 0..CODES {
            let v = t.rejected[stage][code].load(Relaxed);
            if v > 0 {
                let code = (FIRST_CODE + code as u16).to_string();
                e.sample(
                    name,
                    &[("stage", stage_label(stage)), ("code", &code)],
                    v as f64,
                );
            }
        }
    }

    let name = "sluice_messages_received_total";
    e.family(
        name,
        "Messages accepted (250 after the data), by listener.",
        Kind::Counter,
    );
    for (l, listener) in listeners.iter().enumerate() {
        e.sample(name, &[("listener", listener)], get(&t.received[l]));
    }
    let name = "sluice_received_bytes_total";
    e.family(
        name,
        "Bytes of the messages accepted, by listener.",
        Kind::Counter,
    );
    for (l, listener) in listeners.iter().enumerate() {
        e.sample(name, &[("listener", listener)], get(&t.received_bytes[l]));
    }
    let name = "sluice_accept_duration_seconds";
    e.family(
        name,
        "From the end of a message's data to its 250: filters, checks and the spool's fdatasync.",
        Kind::Histogram,
    );
    histogram(e, name, &[], &t.accept);

    counter(
        e,
        "sluice_spool_commits_total",
        "Group commits of the spool (one fdatasync each).",
        &t.spool_commits,
    );
    counter(
        e,
        "sluice_spool_committed_total",
        "Submissions made durable by the spool's group commits.",
        &t.spool_committed,
    );
    counter(
        e,
        "sluice_spilled_messages_total",
        "Large messages whose bytes went through a spill file in the spool's directory while they arrived.",
        &t.spilled,
    );
    counter(
        e,
        "sluice_spilled_bytes_total",
        "Bytes of those messages.",
        &t.spilled_bytes,
    );
    let name = "sluice_spool_fsync_duration_seconds";
    e.family(
        name,
        "How long each group commit's fdatasync took.",
        Kind::Histogram,
    );
    histogram(e, name, &[], &t.fsync);

    let name = "sluice_deliveries_total";
    e.family(
        name,
        "Recipients' delivery attempts, by transport, result and whether TLS carried them.",
        Kind::Counter,
    );
    for &transport in Transport::ALL {
        for &result in DeliveryResult::ALL {
            for tls in [false, true] {
                let v = get(&t.deliveries[transport as usize][result as usize][usize::from(tls)]);
                let tls = if tls { "true" } else { "false" };
                e.sample(
                    name,
                    &[
                        ("transport", transport.name()),
                        ("result", result.name()),
                        ("tls", tls),
                    ],
                    v,
                );
            }
        }
    }
    let name = "sluice_delivery_attempt_duration_seconds";
    e.family(
        name,
        "How long each delivery attempt (one message to one destination) took.",
        Kind::Histogram,
    );
    for &transport in Transport::ALL {
        histogram(
            e,
            name,
            &[("transport", transport.name())],
            &t.attempt[transport as usize],
        );
    }

    let name = "sluice_tls_handshakes_total";
    e.family(
        name,
        "TLS handshakes, as server (clients' STARTTLS, implicit TLS) and as client (to next hops).",
        Kind::Counter,
    );
    for &side in TlsSide::ALL {
        for ok in [true, false] {
            let result = if ok { "ok" } else { "failed" };
            e.sample(
                name,
                &[("side", side.name()), ("result", result)],
                get(&t.tls_handshakes[side as usize][usize::from(ok)]),
            );
        }
    }

    let name = "sluice_filter_stages_total";
    e.family(
        name,
        "Filter stages (the plugins' hooks for one SMTP stage), by where they ran.",
        Kind::Counter,
    );
    for &ran in StageRan::ALL {
        e.sample(
            name,
            &[("ran", ran.name())],
            get(&t.filter_stages[ran as usize]),
        );
    }

    let name = "sluice_auth_attempts_total";
    e.family(
        name,
        "SMTP AUTH attempts, by mechanism and outcome.",
        Kind::Counter,
    );
    for &mechanism in AuthMechanism::ALL {
        for &outcome in AuthOutcome::ALL {
            e.sample(
                name,
                &[("mechanism", mechanism.name()), ("result", outcome.name())],
                get(&t.auth[mechanism as usize][outcome as usize]),
            );
        }
    }

    let name = "sluice_dns_lookups_total";
    e.family(
        name,
        "DNS lookups (routing, SPF, DKIM, DMARC, plugins), by record type and result.",
        Kind::Counter,
    );
    for &kind in DnsKind::ALL {
        for &result in DnsResult::ALL {
            e.sample(
                name,
                &[("type", kind.name()), ("result", result.name())],
                get(&t.dns[kind as usize][result as usize]),
            );
        }
    }

    let name = "sluice_filter_duration_seconds";
    e.family(
        name,
        "How long each filter plugin's hook ran, by plugin and stage.",
        Kind::Histogram,
    );
    for (p, plugin) in plugins.iter().take(MAX_PLUGINS).enumerate() {
        for (stage, h) in t.filter[p].iter().enumerate() {
            if h.count() > 0 {
                histogram(
                    e,
                    name,
                    &[("plugin", plugin), ("stage", stage_label(stage))],
                    h,
                );
            }
        }
    }

    let name = "sluice_build_info";
    e.family(
        name,
        "Always 1; the labels say which Sluice this is.",
        Kind::Gauge,
    );
    e.sample(name, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, line_start: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn counts_from_threads_that_ended_are_kept() {
        set_listeners(vec!["127.0.0.1:25".into()]);
        let series = "sluice_messages_received_total{listener=\"127.0.0.1:25\"}";
        let before = value(&render(), series);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..10 {
                        received(0, 100, Duration::from_millis(1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = render();
        assert_eq!(value(&text, series) - before, 40.0);
        assert!(
            value(&text, "sluice_accept_duration_seconds_count") >= 40.0,
            "{text}"
        );
    }

    #[test]
    fn spilled_messages_and_bytes_are_counted() {
        let before = render();
        spilled(300_000);
        spilled(1_000);
        let text = render();
        let grew = |series: &str| value(&text, series) - value(&before, series);
        assert_eq!(grew("sluice_spilled_messages_total"), 2.0, "{text}");
        assert_eq!(grew("sluice_spilled_bytes_total"), 301_000.0);
    }

    #[test]
    fn rejections_are_counted_by_stage_and_code_and_odd_codes_ignored() {
        let series = "sluice_smtp_rejected_total{stage=\"rcpt\",code=\"550\"}";
        let before = value(&render(), series);
        rejected(Some(Stage::Rcpt), 550);
        rejected(Some(Stage::Rcpt), 550);
        rejected(Some(Stage::Rcpt), 250); // not a refusal
        rejected(None, 700); // not a reply code
        let text = render();
        assert_eq!(value(&text, series) - before, 2.0);
        assert!(!text.contains("code=\"250\""));
        assert!(!text.contains("code=\"700\""));
    }

    #[test]
    fn collectors_add_their_gauges() {
        add_collector(|e| {
            e.family("sluice_test_gauge", "A test.", Kind::Gauge);
            e.sample("sluice_test_gauge", &[], 7.0);
        });
        assert_eq!(value(&render(), "sluice_test_gauge"), 7.0);
    }
}
