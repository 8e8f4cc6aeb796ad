//! The generator against the sink on loopback: every count on one side
//! must match the other, and the latency numbers must be there.

use std::time::{Duration, Instant};

use sluice_loadgen::generator::{self, GeneratorConfig, Progress};
use sluice_loadgen::sink::{ReplyPolicy, Sink, SinkConfig, SinkHandle};

fn sink(policy: ReplyPolicy, stop_after: u64) -> SinkHandle {
    let mut config = SinkConfig::new("127.0.0.1:0".parse().unwrap());
    config.policy = policy;
    config.stop_after = Some(stop_after);
    config.idle_timeout = Duration::from_secs(20);
    Sink::bind(config).unwrap().start().unwrap()
}

fn load(sink: &SinkHandle, messages: u64) -> GeneratorConfig {
    let mut c = GeneratorConfig::new(sink.local_addr(), messages);
    c.connections = 4;
    c.size = 2048;
    c.io_timeout = Duration::from_secs(10);
    // A bound on the whole run, far above what it needs.
    c.duration = Some(Duration::from_secs(60));
    c
}

#[test]
fn every_message_is_counted_on_both_sides_with_latencies() {
    let sink = sink(ReplyPolicy::accept_all(), 300);
    let mut config = load(&sink, 300);
    config.recipients = 2;
    config.per_connection = Some(50);
    let progress = Progress::default();
    let result = generator::run(&config, &progress).unwrap();
    assert!(
        sink.wait_done(Duration::from_secs(10)),
        "sink did not get 300"
    );

    let r = &result.report;
    assert_eq!(
        (r.accepted, r.errors, r.temp_failed, r.perm_failed),
        (300, 0, 0, 0)
    );
    assert_eq!(
        progress.accepted.load(std::sync::atomic::Ordering::Relaxed),
        300
    );
    assert!(r.messages_per_s > 0.0 && r.elapsed_s > 0.0);
    // Each message is about the size asked for.
    assert!(
        r.bytes.abs_diff(300 * 2048) < 300 * 32,
        "{} octets",
        r.bytes
    );
    let l = &r.accept_latency;
    assert_eq!(l.count, 300);
    assert!(l.p50_ms > 0.0 && l.p50_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
    assert!(r.latency_from_due.is_none(), "closed loop has no due times");

    let s = sink.report();
    assert_eq!(
        (s.accepted, s.recipients, s.missing_timestamp),
        (300, 600, 0)
    );
    assert!(s.reached);
    // 50 messages per connection: at least 6 connections, and at most one
    // partly used one per generator thread more.
    assert!(
        (6..=10).contains(&s.connections),
        "{} connections",
        s.connections
    );
    let e2e = &s.end_to_end_latency;
    assert_eq!(e2e.count, 300);
    assert!(e2e.p50_ms > 0.0 && e2e.max_ms >= e2e.p99_ms);
    assert!(s.first_accept_unix_ns >= r.start_unix_ns);
    assert!(s.last_accept_unix_ns <= r.end_unix_ns);
    sink.shutdown();
}

#[test]
fn refusals_chosen_by_the_sink_are_what_the_generator_sees() {
    let policy = ReplyPolicy::new(0.10, 0.05).unwrap();
    // 400 messages: the policy's shares give 40 4xx and 20 5xx, ± a few.
    let expected_accepted = (0..400)
        .filter(|&k| policy.verdict(k) == sluice_loadgen::sink::Verdict::Accept)
        .count() as u64;
    let sink = sink(policy, expected_accepted);
    let config = load(&sink, 400);
    let result = generator::run(&config, &Progress::default()).unwrap();
    assert!(sink.wait_done(Duration::from_secs(10)));
    let (r, s) = (&result.report, sink.report());
    assert_eq!(r.accepted, s.accepted);
    assert_eq!(r.accepted, expected_accepted);
    assert_eq!(r.temp_failed, s.temp_rejected);
    assert_eq!(r.perm_failed, s.perm_rejected);
    assert!(r.temp_failed.abs_diff(40) <= 3, "{} 4xx", r.temp_failed);
    assert!(r.perm_failed.abs_diff(20) <= 3, "{} 5xx", r.perm_failed);
    assert_eq!(r.errors, 0);
    // Only accepted messages have an accept latency.
    assert_eq!(r.accept_latency.count, r.accepted);
    sink.shutdown();
}

#[test]
fn open_loop_keeps_the_rate_and_measures_from_the_due_time() {
    let sink = sink(ReplyPolicy::accept_all(), 100);
    let mut config = load(&sink, 100);
    config.rate = Some(200.0);
    let started = Instant::now();
    let result = generator::run(&config, &Progress::default()).unwrap();
    let took = started.elapsed();
    // Message 99 is due at 0.495 s: the run cannot be faster than that.
    assert!(took >= Duration::from_millis(495), "took {took:?}");
    assert!(took < Duration::from_secs(30));
    let r = &result.report;
    assert_eq!(r.accepted, 100);
    assert_eq!(r.rate, Some(200.0));
    let due = r.latency_from_due.as_ref().expect("open loop reports it");
    assert_eq!(due.count, 100);
    // Per message, the due time is never after the end of data was
    // written, so the distribution from the due time dominates.
    let a = &r.accept_latency;
    for (d, a) in [
        (due.p50_ms, a.p50_ms),
        (due.p99_ms, a.p99_ms),
        (due.max_ms, a.max_ms),
    ] {
        assert!(d >= a * 0.999, "from due {d} < accept {a}");
    }
    assert!(sink.wait_done(Duration::from_secs(10)));
    sink.shutdown();
}

#[test]
fn one_message_per_connection_opens_a_connection_each() {
    let sink = sink(ReplyPolicy::accept_all(), 40);
    let mut config = load(&sink, 40);
    config.per_connection = Some(1);
    let result = generator::run(&config, &Progress::default()).unwrap();
    assert!(sink.wait_done(Duration::from_secs(10)));
    assert_eq!(result.report.accepted, 40);
    assert_eq!(sink.report().connections, 40);
    sink.shutdown();
}

#[test]
fn a_server_that_is_not_there_ends_the_run_with_errors() {
    // Bind and drop to get a loopback port with nobody listening.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = GeneratorConfig::new(addr, 1_000);
    config.connections = 2;
    config.io_timeout = Duration::from_secs(2);
    config.duration = Some(Duration::from_secs(20));
    let started = Instant::now();
    let result = generator::run(&config, &Progress::default()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    let r = &result.report;
    assert_eq!(r.accepted, 0);
    assert!(
        r.errors > 0 && r.errors < 1_000,
        "gave up early: {}",
        r.errors
    );
    assert!(r.first_error.is_some());
}

/// `compare.sh --tls`: the generator says STARTTLS, the sink offers it,
/// and every message still arrives, each connection inside TLS.
#[test]
fn the_generator_and_the_sink_speak_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = sluice_testkit::tls::TestCa::new();
    let (cert, key) = ca
        .leaf(&sluice_testkit::tls::LeafSpec::new(&["127.0.0.1"], 1))
        .write(dir.path(), "sink", &ca);
    let tls = sluice_tls::ServerTls::load(sluice_tls::ServerTlsConfig {
        pairs: vec![sluice_tls::CertPair { cert, key }],
        min_version: sluice_tls::MinVersion::Tls12,
    })
    .unwrap();
    let mut config = SinkConfig::new("127.0.0.1:0".parse().unwrap());
    config.stop_after = Some(40);
    config.idle_timeout = Duration::from_secs(20);
    config.tls = Some(tls.config());
    let sink = Sink::bind(config).unwrap().start().unwrap();
    let mut load = load(&sink, 40);
    load.tls = true;
    load.per_connection = Some(10);
    let result = generator::run(&load, &Progress::default()).unwrap();
    assert!(sink.wait_done(Duration::from_secs(10)));
    // The generator requires TLS (no STARTTLS, no mail): every message
    // accepted means every connection was encrypted.
    assert_eq!((result.report.accepted, result.report.errors), (40, 0));
    assert!(sink.snapshot().connections >= 4);
}
