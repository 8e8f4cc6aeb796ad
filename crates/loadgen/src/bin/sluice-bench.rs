//! `sluice-bench`: the helpers `benches/compare.sh` calls.
//!
//! - `cpu-ticks PID`: CPU clock ticks used so far by a process and all its
//!   descendants (reaped children included).
//! - `e2e-rate DIR`: the end-to-end messages per second of one run.
//! - `report DIR`: the comparison table for the runs under DIR, and the
//!   chart as SVG.
//! - `peak-anon PID FILE`: the largest anonymous memory of a process while it
//!   runs, kept in FILE.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_loadgen::{procstat, report, svg};

#[derive(Debug, Parser)]
#[command(name = "sluice-bench", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CPU ticks (utime+stime+cutime+cstime) of PID's process tree.
    CpuTicks { pid: u32 },
    /// Print the end-to-end msg/s of the run in DIR (run.json, sink.json…).
    E2eRate { dir: PathBuf },
    /// Keep the largest RssAnon (KiB) of PID in FILE, sampled until PID exits.
    PeakAnon {
        pid: u32,
        file: PathBuf,
        /// Milliseconds between samples.
        #[arg(long, default_value_t = 50)]
        every_ms: u64,
    },
    /// Print the Sluice/Postfix table for the runs under DIR.
    Report {
        dir: PathBuf,
        /// Also draw the latency and throughput chart into this SVG file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// A line under the chart's title (machine, date, load).
        #[arg(long, default_value = "")]
        subtitle: String,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> io::Result<()> {
    match args.command {
        Command::CpuTicks { pid } => {
            println!("{}", procstat::process_tree_ticks(pid)?);
        }
        Command::E2eRate { dir } => {
            let run = report::Run::load(&dir)?;
            let rate = run.end_to_end().ok_or_else(|| {
                io::Error::other(format!("{}: no message reached the sink", dir.display()))
            })?;
            println!("{rate:.1}");
        }
        Command::PeakAnon {
            pid,
            file,
            every_ms,
        } => {
            let mut written = Ok(());
            procstat::watch_peak_anon(pid, std::time::Duration::from_millis(every_ms), |kib| {
                written = fs::write(&file, format!("{kib}\n"));
            });
            written?;
        }
        Command::Report { dir, svg, subtitle } => {
            let results = report::Results::load(&dir)?;
            print!("{}", report::table(&results));
            if let Some(path) = svg {
                fs::write(&path, svg::render(&report::chart(&results, &subtitle)))?;
            }
        }
    }
    Ok(())
}
