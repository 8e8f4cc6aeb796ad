//! `sluice-loadgen`: sends mail to an SMTP server as fast as it takes it
//! (or at a fixed rate) and reports throughput and accept latency.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_loadgen::seconds;
use sluice_loadgen::{GeneratorConfig, Latency, LatencySummary, Progress, generator};

/// SMTP load generator for Sluice's benchmarks.
///
/// Latency is measured per message from the moment the final "." of DATA
/// is written to the moment the reply arrives. With --rate the load is open
/// loop: message i is due at start + i/rate, and the latency from that due
/// time is reported too, so time spent waiting for a free connection counts.
#[derive(Debug, Parser)]
#[command(name = "sluice-loadgen", version)]
struct Args {
    /// The SMTP server, host:port.
    #[arg(default_value = "127.0.0.1:2525")]
    target: SocketAddr,
    /// Concurrent connections.
    #[arg(short, long, default_value_t = 20)]
    connections: usize,
    /// Messages in all (with --duration and no -n: until the time is up).
    #[arg(short = 'n', long)]
    messages: Option<u64>,
    /// Messages per connection before it is closed and reopened
    /// (default: connections stay open for the whole run).
    #[arg(short = 'm', long, value_name = "M")]
    per_connection: Option<u64>,
    /// One message per connection (the same as -m 1).
    #[arg(long, conflicts_with = "per_connection")]
    one_per_connection: bool,
    /// Octets per message, header block included.
    #[arg(short, long, default_value_t = 4096)]
    size: usize,
    /// Recipients per message.
    #[arg(short, long, default_value_t = 1)]
    recipients: usize,
    /// The reverse-path (MAIL FROM).
    #[arg(long, default_value = "loadgen@bench.test")]
    from: String,
    /// Recipients are rcpt<i>@<DOMAIN>.
    #[arg(long, value_name = "DOMAIN", default_value = "remote.test")]
    to_domain: String,
    /// Our EHLO name.
    #[arg(long, default_value = "loadgen.bench.test")]
    helo: String,
    /// Open loop: messages per second, all connections together.
    #[arg(long)]
    rate: Option<f64>,
    /// Start no message after this many seconds.
    #[arg(short, long, value_name = "SECS")]
    duration: Option<f64>,
    /// Seconds a connect, read or write may take before the message fails.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,
    /// Seed of the random message bodies.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the accept-latency percentiles (.hgrm) to this file.
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
    /// With --rate: write the latency from the due time (.hgrm) here.
    #[arg(long, value_name = "FILE")]
    hgrm_due: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
    /// STARTTLS on every connection (the certificate is not verified).
    #[arg(long)]
    tls: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice-loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> io::Result<ExitCode> {
    let messages = match (args.messages, args.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => 20_000,
    };
    let config = GeneratorConfig {
        target: args.target,
        connections: args.connections,
        messages,
        per_connection: if args.one_per_connection {
            Some(1)
        } else {
            args.per_connection
        },
        size: args.size,
        recipients: args.recipients,
        from: args.from.clone(),
        recipient_domain: args.to_domain.clone(),
        helo: args.helo.clone(),
        rate: args.rate,
        duration: args
            .duration
            .map(|d| seconds(d, "--duration"))
            .transpose()?,
        io_timeout: seconds(args.timeout, "--timeout")?,
        seed: args.seed,
        tls: args.tls,
    };
    let progress = Progress::default();
    let bar = progress_bar(args, messages);
    let done = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        if let Some(bar) = &bar {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let accepted = progress.accepted.load(Ordering::Relaxed);
                    let failed = progress.failed.load(Ordering::Relaxed);
                    bar.set_position(accepted + failed);
                    bar.set_message(format!("{failed} failed"));
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
        let result = generator::run(&config, &progress);
        done.store(true, Ordering::Relaxed);
        result
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let r = &result.report;
    let mut out = io::stdout().lock();
    let reuse = match config.per_connection {
        None => "kept open".to_string(),
        Some(1) => "one message each".to_string(),
        Some(m) => format!("{m} messages each"),
    };
    writeln!(
        out,
        "sluice-loadgen: {} over {} connections ({reuse}), {} octets, {} recipient(s){}",
        r.target,
        r.connections,
        r.message_size,
        r.recipients,
        r.rate
            .map_or(String::new(), |x| format!(", open loop at {x} msg/s"))
    )?;
    writeln!(
        out,
        "  accepted {}, 4xx {}, 5xx {}, errors {} in {:.3} s",
        r.accepted, r.temp_failed, r.perm_failed, r.errors, r.elapsed_s
    )?;
    if let Some(e) = &r.first_error {
        writeln!(out, "  first error: {e}")?;
    }
    writeln!(
        out,
        "  throughput {:.1} msg/s, {:.2} MB/s",
        r.messages_per_s, r.megabytes_per_s
    )?;
    print_latency(
        &mut out,
        "accept latency (end of DATA → 250)",
        &r.accept_latency,
    )?;
    if let Some(l) = &r.latency_from_due {
        print_latency(&mut out, "latency from the scheduled time", l)?;
    }
    if let Some(path) = &args.json {
        let mut w = create(path)?;
        serde_json::to_writer_pretty(&mut w, r).map_err(io::Error::other)?;
        writeln!(w)?;
        w.flush()?;
    }
    if let Some(path) = &args.hgrm {
        write_hgrm(path, &result.accept)?;
    }
    if let (Some(path), Some(h)) = (&args.hgrm_due, &result.from_due) {
        write_hgrm(path, h)?;
    }
    Ok(if r.errors == 0 && r.accepted > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn progress_bar(args: &Args, messages: u64) -> Option<ProgressBar> {
    if args.quiet || !io::stderr().is_terminal() {
        return None;
    }
    let bar = if messages == u64::MAX {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::new(messages)
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

fn print_latency(out: &mut impl Write, title: &str, s: &LatencySummary) -> io::Result<()> {
    writeln!(
        out,
        "  {title}, ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (n={})",
        s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms, s.count
    )
}

fn create(path: &Path) -> io::Result<BufWriter<File>> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn write_hgrm(path: &Path, h: &Latency) -> io::Result<()> {
    let mut w = create(path)?;
    h.write_hgrm(&mut w)?;
    w.flush()
}
