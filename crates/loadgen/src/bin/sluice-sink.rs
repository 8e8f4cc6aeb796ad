//! `sluice-sink`: an SMTP server that accepts (or refuses a chosen share
//! of) everything, counts it, and measures end-to-end latency from the
//! generator's `X-Loadgen-Sent` header.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use sluice_loadgen::seconds;
use sluice_loadgen::sink::{ReplyPolicy, Sink, SinkConfig};

/// SMTP sink for Sluice's benchmarks.
///
/// Prints "listening on ADDR" once ready, running counters on stderr, and a
/// summary on stdout when it stops: after --count accepted messages, after
/// --max-time, or on SIGTERM/SIGINT.
#[derive(Debug, Parser)]
#[command(name = "sluice-sink", version)]
struct Args {
    /// Where to listen; port 0 lets the kernel choose.
    #[arg(short, long, default_value = "127.0.0.1:2626")]
    listen: SocketAddr,
    /// Stop after this many accepted messages.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Share of messages (0–1) refused with 451 4.3.0 at the end of data.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    temp_fail: f64,
    /// Share of messages (0–1) refused with 554 5.3.0 at the end of data.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    perm_fail: f64,
    /// Milliseconds to wait before answering each end of data.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    delay_ms: f64,
    /// Our name in the greeting.
    #[arg(long, default_value = "sink.loadgen.test")]
    hostname: String,
    /// Stop after this many seconds whatever the count.
    #[arg(long, value_name = "SECS")]
    max_time: Option<f64>,
    /// Seconds between running counters (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    interval: f64,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the end-to-end latency percentiles (.hgrm) to this file.
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
    /// Offer STARTTLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice-sink: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> io::Result<ExitCode> {
    let policy = ReplyPolicy::new(args.temp_fail, args.perm_fail)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut config = SinkConfig::new(args.listen);
    config.hostname = args.hostname.clone();
    config.policy = policy;
    config.delay = seconds(args.delay_ms / 1000.0, "--delay-ms")?;
    config.stop_after = args.count;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = sluice_tls::ServerTls::load(sluice_tls::ServerTlsConfig {
            pairs: vec![sluice_tls::CertPair {
                cert: cert.clone(),
                key: key.clone(),
            }],
            min_version: sluice_tls::MinVersion::Tls12,
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        config.tls = Some(tls.config());
    }
    let max_time = args
        .max_time
        .map(|s| seconds(s, "--max-time"))
        .transpose()?;
    let interval = seconds(args.interval, "--interval")?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let sink = Sink::bind(config)?;
    println!("sluice-sink: listening on {}", sink.local_addr());
    io::stdout().flush()?;
    let sink = sink.start()?;

    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut last_accepted = 0;
    let reached = loop {
        if sink.wait_done(Duration::from_millis(50)) {
            break true;
        }
        if stop.load(Ordering::Relaxed) || max_time.is_some_and(|t| started.elapsed() >= t) {
            break false;
        }
        if !interval.is_zero() && last_report.elapsed() >= interval {
            let s = sink.snapshot();
            let rate = (s.accepted - last_accepted) as f64 / last_report.elapsed().as_secs_f64();
            eprintln!(
                "sluice-sink: {} accepted ({rate:.0}/s), {} 4xx, {} 5xx, {} connections",
                s.accepted, s.temp_rejected, s.perm_rejected, s.connections
            );
            last_report = Instant::now();
            last_accepted = s.accepted;
        }
    };

    if reached {
        // The last message was counted just before its 250 was written:
        // give the connection threads a moment to send it, so the client
        // does not see the connection drop under its last message.
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = sink.report();
    let e2e = &report.end_to_end_latency;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "sluice-sink: {} accepted ({} recipients, {:.1} MB), {} 4xx, {} 5xx, over {} connections; \
         {:.1} msg/s from the first to the last",
        report.accepted,
        report.recipients,
        report.bytes as f64 / 1e6,
        report.temp_rejected,
        report.perm_rejected,
        report.connections,
        report.messages_per_s
    )?;
    writeln!(
        out,
        "  end-to-end latency (X-Loadgen-Sent → here), ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  \
         p99.9 {:.3}  max {:.3}  (n={}, {} without the header)",
        e2e.p50_ms,
        e2e.p90_ms,
        e2e.p99_ms,
        e2e.p999_ms,
        e2e.max_ms,
        e2e.count,
        report.missing_timestamp
    )?;
    if let Some(path) = &args.json {
        let mut w = BufWriter::new(File::create(path)?);
        serde_json::to_writer_pretty(&mut w, &report).map_err(io::Error::other)?;
        writeln!(w)?;
        w.flush()?;
    }
    if let Some(path) = &args.hgrm {
        let mut w = BufWriter::new(File::create(path)?);
        sink.end_to_end().write_hgrm(&mut w)?;
        w.flush()?;
    }
    out.flush()?;
    drop(out);
    // Connection threads may still sit in `read` on open connections; the
    // process exit ends them.
    std::process::exit(if args.count.is_none() || reached {
        0
    } else {
        3
    });
}
