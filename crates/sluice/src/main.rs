//! `sluice`: the mail transfer agent's command line.
//!
//! The binary only wires the parts together: configuration, logging,
//! signals, the spool and the front end. Protocol logic lives in the crates.

mod config;
mod control;
mod queue;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use config::Config;
use control::ControlServer;
use sluice_delivery::scheduler::Scheduler;
use sluice_smtpd::{NoFilter, Smtpd};
use sluice_spool::{Spool, SpoolConfig};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A spool-and-deliver mail transfer agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (with no --config: embedded defaults, 127.0.0.1:2525).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and explain what is wrong with it.
    CheckConfig { file: PathBuf },
    /// Inspect the queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
}

/// Where the spool is: given directly, or read from a config file.
#[derive(Debug, clap::Args)]
struct SpoolArgs {
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The spool directory (overrides the config's spool_dir).
    #[arg(long)]
    spool: Option<PathBuf>,
}

impl SpoolArgs {
    fn dir(&self) -> Result<PathBuf, String> {
        match &self.spool {
            Some(dir) => Ok(dir.clone()),
            None => load(self.config.as_deref()).map(|c| c.spool_dir),
        }
    }
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// List queued messages: id, age, size, sender, recipients and their state.
    List {
        #[command(flatten)]
        spool: SpoolArgs,
        /// Only messages with a recipient in this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only messages with a recipient in this state.
        #[arg(long, value_enum)]
        state: Option<queue::StateFilter>,
    },
    /// Show one message: envelope, each recipient's state and last reply, headers.
    Show {
        id: String,
        #[command(flatten)]
        spool: SpoolArgs,
    },
    /// Retry now: one message, or with --all every deferred one (needs the running server).
    Flush {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        spool: SpoolArgs,
    },
    /// Keep a message queued but do not deliver it until released.
    Hold {
        id: String,
        #[command(flatten)]
        spool: SpoolArgs,
    },
    /// Let a held message be delivered again.
    Release {
        id: String,
        #[command(flatten)]
        spool: SpoolArgs,
    },
    /// Remove a message from the queue, without a bounce.
    Delete {
        id: String,
        #[command(flatten)]
        spool: SpoolArgs,
    },
    /// Fail every undelivered recipient now and bounce the message to its sender.
    Bounce {
        id: String,
        #[command(flatten)]
        spool: SpoolArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            init_logging();
            match load(config.as_deref()).and_then(serve) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("sluice: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!("{}: ok", file.display());
                println!("  hostname      {}", config.hostname());
                for l in &config.listen {
                    println!("  listen        {} ({:?})", l.addr, l.mode);
                }
                println!("  spool_dir     {}", config.spool_dir.display());
                println!("  local domains {}", config.local.domains.join(", "));
                println!("  local users   {}", config.local.users.join(", "));
                let nets: Vec<String> = config
                    .relay
                    .trusted_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                println!("  may relay     {}", nets.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Queue { command } => match queue_command(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn queue_command(command: QueueCommand) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let control = |spool: &SpoolArgs, command: String| -> Result<(), String> {
        let reply = control::request(&spool.dir()?, &command)?;
        println!("{reply}");
        Ok(())
    };
    match command {
        QueueCommand::List {
            spool,
            domain,
            state,
        } => queue::list(&spool.dir()?, &queue::Filter { domain, state }, &mut out),
        QueueCommand::Show { id, spool } => queue::show(&spool.dir()?, &id, &mut out),
        QueueCommand::Flush { id, all, spool } => match (id, all) {
            (Some(id), _) => control(&spool, format!("flush {id}")),
            (None, true) => control(&spool, "flush all".into()),
            (None, false) => Err("name a queue id, or --all".into()),
        },
        QueueCommand::Hold { id, spool } => control(&spool, format!("hold {id}")),
        QueueCommand::Release { id, spool } => control(&spool, format!("release {id}")),
        QueueCommand::Delete { id, spool } => control(&spool, format!("delete {id}")),
        QueueCommand::Bounce { id, spool } => control(&spool, format!("bounce {id}")),
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn serve(config: Config) -> Result<(), String> {
    // Past a file-size limit (systemd's LimitFSIZE=, `ulimit -f`) the kernel
    // sends SIGXFSZ, whose default action kills the process. With a handler
    // installed, the write fails with EFBIG instead, the spool reports
    // "storage full", and the client gets 452 4.3.1 while we keep serving.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| format!("cannot handle SIGXFSZ: {e}"))?;
    std::fs::create_dir_all(&config.spool_dir).map_err(|e| {
        format!(
            "cannot create spool directory {}: {e}",
            config.spool_dir.display()
        )
    })?;
    let (spool, report) = Spool::open(&config.spool_dir, SpoolConfig::default()).map_err(|e| {
        format!(
            "cannot open the spool in {}: {e}",
            config.spool_dir.display()
        )
    })?;
    tracing::info!(
        spool = %config.spool_dir.display(),
        messages = report.live_messages,
        torn_tail_bytes = report.torn_tail_bytes,
        "spool recovered"
    );
    let scheduler = Scheduler::start(
        config.scheduler(),
        spool.handle(),
        Arc::new(config.dispatch()?),
    )?;
    let control = ControlServer::start(&config.spool_dir, scheduler.handle())?;

    let smtpd_config = config.smtpd();
    let hostname = smtpd_config.session.hostname.clone();
    let to_scheduler = scheduler.handle();
    let smtpd = Smtpd::start(
        smtpd_config,
        spool.handle(),
        Arc::new(NoFilter),
        Arc::new(move |id| to_scheduler.queued(id)),
    )
    .map_err(|e| format!("cannot listen: {e}"))?;
    for addr in smtpd.local_addrs() {
        // Tests and scripts read this line to learn the port (addr may say port 0).
        tracing::info!("listening on {addr} as {hostname}");
    }

    let stopper = smtpd.stopper();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "shutting down: finishing transactions in flight");
                stopper.stop();
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    smtpd.wait();
    signal_handle.close();
    // Receiving has stopped; deliveries in flight finish and are journaled
    // before the spool closes.
    drop(control);
    scheduler.shutdown();
    spool.shutdown();
    tracing::info!("stopped");
    Ok(())
}
