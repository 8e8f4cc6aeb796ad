//! `sluice`: the mail transfer agent's command line.
//!
//! The binary only wires the parts together: configuration, logging,
//! signals, the spool and the front end. Protocol logic lives in the crates.

#[cfg(feature = "count-allocations")]
mod alloc_count;
mod config;
mod control;
mod dkim;
mod logline;
mod logwriter;
mod metrics_http;
mod plugin_test;
mod queue;
mod sendmail;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use config::Config;
use config::ops::LogFormat;

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
    /// Add a user to an [auth] users_file, or change its password. The
    /// password is read from standard input (not shown on a terminal) and
    /// stored as an argon2id hash; the file is replaced atomically.
    Passwd {
        /// The login.
        name: String,
        /// The password file (Dovecot passwd-file style: name:hash).
        #[arg(long)]
        file: PathBuf,
    },
    /// Submit a message from standard input, as sendmail(1) does (also
    /// run as `sendmail`, `mailq` or `newaliases` through a symlink).
    /// Takes Postfix's options: -t -i -f -F -bs -bp -q -N -R -V -v -C.
    #[command(disable_help_flag = true)]
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
    /// Inspect and control the queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Develop and check filter plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DkimCommand {
    /// Make a signing key: writes the private key (mode 0600) and prints
    /// the TXT record to publish and the [[dkim]] table to configure.
    Keygen(dkim::KeygenArgs),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run plugins against an envelope and a message file; print each hook's
    /// verdict, score and log lines.
    Test(plugin_test::TestArgs),
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
    /// The queue's shape, like Postfix's qshape: messages per destination
    /// domain by age (minutes), busiest domain first.
    Summary {
        #[command(flatten)]
        spool: SpoolArgs,
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
    // Installed as /usr/sbin/sendmail (or mailq, newaliases): programs that
    // call it pass sendmail's options, not ours.
    let argv: Vec<String> = std::env::args().collect();
    let program = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("sluice");
    if matches!(program, "sendmail" | "mailq" | "newaliases") {
        return sendmail::main(program, &argv[1..]);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Sendmail { args } => sendmail::main("sendmail", &args),
        Command::Serve { config } => {
            #[cfg(feature = "count-allocations")]
            alloc_count::register();
            let loaded = load(config.as_deref());
            let format = loaded.as_ref().map_or(LogFormat::Text, |c| c.log.format);
            let Ok(_log) = init_logging(format).inspect_err(log_writer_failed) else {
                return ExitCode::FAILURE;
            };
            match loaded.and_then(|c| serve::serve(c, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("sluice: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file).and_then(|c| {
            c.preflight().map(|()| c).map_err(|problems| {
                let mut msg = format!("{}: the configuration cannot start here:", file.display());
                for p in problems {
                    msg.push_str("\n  - ");
                    msg.push_str(&p);
                }
                msg
            })
        }) {
            Ok(config) => {
                println!("{}: ok", file.display());
                println!("  hostname      {}", config.hostname());
                for l in &config.listen {
                    println!("  listen        {} ({:?})", l.addr, l.mode);
                }
                println!("  spool_dir     {}", config.spool_dir.display());
                println!("  local domains {}", config.local_domains().join(", "));
                println!("  local users   {}", config.local.users.join(", "));
                for p in &config.plugins {
                    // preflight found every file.
                    let path = p.wasm_path().unwrap_or_default();
                    println!("  plugin        {} ({})", p.name, path.display());
                }
                let nets: Vec<String> = config
                    .relay
                    .trusted_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                println!("  may relay     {}", nets.join(", "));
                if let Ok(Some(tls)) = config.server_tls() {
                    for c in tls.certificates() {
                        println!(
                            "  certificate   {} ({} {}, serial {}, not after {})",
                            c.cert.display(),
                            c.key_type,
                            c.names.join(" "),
                            c.serial,
                            sluice_smtp::date::rfc5322_date(c.not_after)
                        );
                    }
                }
                let d = &config.delivery;
                println!("  MX port       {}", d.mx_port);
                println!(
                    "  client waits  connect {}s, greeting {}s, command {}s, DATA {}s, \
                     each write {}s, end of data {}s",
                    d.connect_timeout_secs,
                    d.greeting_timeout_secs,
                    d.command_timeout_secs,
                    d.data_init_timeout_secs,
                    d.data_block_timeout_secs,
                    d.data_end_timeout_secs
                );
                for note in config.notes() {
                    println!("  note: {note}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Plugin {
            command: PluginCommand::Test(args),
        } => {
            let Ok(_log) = init_logging(LogFormat::Text).inspect_err(log_writer_failed) else {
                return ExitCode::FAILURE;
            };
            plugin_test::run(args)
        }
        Command::Passwd { name, file } => match passwd(&name, &file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice passwd: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Dkim {
            command: DkimCommand::Keygen(args),
        } => match dkim::keygen(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice dkim keygen: {e}");
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

fn passwd(name: &str, file: &std::path::Path) -> Result<(), String> {
    let password = sluice_sys::terminal::read_secret(&format!("Password for {name}: "))
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if password.is_empty() {
        return Err("an empty password is not a password".into());
    }
    let hash = sluice_auth::hash::hash(&password);
    sluice_auth::passwd::set_user(file, name, &hash)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    eprintln!("{name}: password set in {}", file.display());
    Ok(())
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
        QueueCommand::Summary { spool, state } => queue::summary(
            &spool.dir()?,
            &queue::Filter {
                domain: None,
                state,
            },
            &mut out,
        ),
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

fn log_writer_failed(e: &std::io::Error) {
    eprintln!("sluice: cannot start the log writer thread: {e}");
}

/// Logs to stderr through one writer thread (`logwriter`): the event loops
/// and delivery threads only copy their finished lines into its buffer, and
/// it writes a few milliseconds' worth at a time in one `write(2)`. The
/// returned guard writes what is left when `main` returns, so it must live
/// until then.
/// With `[log] format = "json"`, one JSON object per line (timestamp,
/// level, message and the event's fields at the top level), for collectors.
fn init_logging(format: LogFormat) -> std::io::Result<logwriter::Guard> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = logwriter::start(std::io::stderr())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        // Colours for a person at a terminal; for files, pipes and journald
        // the same line without them, formatted by `logline` at a fraction
        // of the cost.
        LogFormat::Text if std::io::stderr().is_terminal() => builder.with_ansi(true).init(),
        LogFormat::Text => builder.event_format(logline::LineFormat).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    Ok(guard)
}
