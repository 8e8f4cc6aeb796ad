//! `sluice sendmail` (also run as `sendmail`, `mailq` or `newaliases`):
//! the command local programs hand mail to.
//!
//! It speaks SMTP to the running server over the local submission socket
//! (`[sendmail] socket`, `submit.sock` in the spool by default). The server
//! learns the user from the kernel, so the command needs no privilege and
//! can claim nothing: a user sends as `login@origin` unless the operator
//! trusts it to set any sender. The message is queued when this command
//! exits 0; a server that is not running gets exit status 75 (EX_TEMPFAIL),
//! which cron and most scripts report, and nothing is left half-done.
//!
//! Exit statuses are sysexits(3), as every sendmail has used them.

mod args;
mod message;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sluice_smtp::client::{ClientConfig, ClientEvent, ClientSession, Message, Outcome};
use sluice_smtp::{BodyType, Domain, ForwardPath, Path, ReversePath, Stage};

use crate::config::Config;
use args::{Args, Mode};

/// sysexits(3).
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;
const EX_IOERR: u8 = 74;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;
const EX_CONFIG: u8 = 78;

/// Where the configuration is when `-C` does not say.
const SYSTEM_CONFIG: &str = "/etc/sluice/sluice.toml";

/// How long the server may take to answer anything: its own timeouts are
/// shorter, so this only catches a server that hangs.
const REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// A failure that ends the command: what to say and the exit status.
struct Failure(u8, String);

/// Runs the command; `program` is the name it was called by.
pub fn main(program: &str, argv: &[String]) -> ExitCode {
    let outcome = Args::parse(program, argv)
        .map_err(|e| {
            Failure(
                EX_USAGE,
                format!("{e}\nusage: sendmail [-t] [-i] [-f sender] [-F name] [recipient ...]"),
            )
        })
        .and_then(run);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(status, text)) => {
            for line in text.lines() {
                eprintln!("sendmail: {line}");
            }
            ExitCode::from(status)
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    if args.mode == Mode::Version {
        println!("sluice sendmail {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let config = load_config(args.config.clone())?;
    match args.mode {
        Mode::Version => Ok(()),
        Mode::NewAliases => {
            eprintln!(
                "sendmail: aliases are [local.aliases] in the configuration, read when the \
                 server starts; there is no database to rebuild"
            );
            Ok(())
        }
        Mode::ListQueue => crate::queue::list(
            &config.spool_dir,
            &Default::default(),
            &mut std::io::stdout(),
        )
        .map_err(|e| Failure(EX_UNAVAILABLE, e)),
        Mode::FlushQueue => crate::control::request(&config.spool_dir, "flush all")
            .map(|reply| println!("{reply}"))
            .map_err(|e| Failure(EX_TEMPFAIL, e)),
        Mode::Smtp => smtp_on_stdio(&config),
        Mode::Submit => submit(&config, &args),
    }
}

/// `-C`, else `$SLUICE_CONFIG`, else the system's file if there is one,
/// else the embedded defaults (as `sluice serve` with no `--config`).
fn load_config(given: Option<PathBuf>) -> Result<Config, Failure> {
    let path = given
        .or_else(|| std::env::var_os("SLUICE_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let system = PathBuf::from(SYSTEM_CONFIG);
            system.exists().then_some(system)
        });
    match path {
        Some(path) => Config::load(&path).map_err(|e| Failure(EX_CONFIG, e)),
        None => Ok(Config::default()),
    }
}

fn connect(config: &Config) -> Result<UnixStream, Failure> {
    let path = config.sendmail.socket_path(&config.spool_dir);
    let stream = sluice_sys::unix_socket::connect(&path).map_err(|e| {
        Failure(
            EX_TEMPFAIL,
            format!(
                "cannot reach the mail server at {}: {e} (is `sluice serve` running?); \
                 the message was not sent",
                path.display()
            ),
        )
    })?;
    let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REPLY_TIMEOUT));
    Ok(stream)
}

/// `-bs`: the caller speaks SMTP itself, on standard input and output.
fn smtp_on_stdio(config: &Config) -> Result<(), Failure> {
    let stream = connect(config)?;
    let mut from_server = stream
        .try_clone()
        .map_err(|e| Failure(EX_IOERR, e.to_string()))?;
    let mut to_server = stream;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    // Until the server closes (after QUIT, or its own timeout).
    loop {
        match from_server.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                out.write_all(&buf[..n])
                    .and_then(|()| out.flush())
                    .map_err(|e| Failure(EX_IOERR, e.to_string()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure(EX_IOERR, e.to_string())),
        }
    }
}

fn submit(config: &Config, args: &Args) -> Result<(), Failure> {
    let origin = config.origin();
    let login = sluice_sys::user::current_login()
        .unwrap_or_else(|| format!("uid{}", sluice_sys::user::current_uid()));
    let reverse_path = match args.sender.as_deref().map(str::trim) {
        Some("" | "<>") => ReversePath::Null,
        Some(sender) => ReversePath::Path(path_of(sender, &origin)?),
        None => ReversePath::Path(path_of(&login, &origin)?),
    };
    let sender = match &reverse_path {
        ReversePath::Path(p) => Some(p.mailbox.text()),
        ReversePath::Null => None,
    };
    let input = message::read(std::io::stdin().lock(), args.ignore_dots)
        .map_err(|e| Failure(EX_IOERR, format!("cannot read the message: {e}")))?;
    let prepared = message::prepare(input, args.full_name.as_deref(), sender.as_deref());
    let mut named: Vec<String> = args
        .recipients
        .iter()
        .flat_map(|r| r.split(','))
        .map(str::to_string)
        .collect();
    if args.from_headers {
        named.extend(prepared.header_recipients);
    }
    let mut recipients: Vec<ForwardPath> = Vec::new();
    for r in named.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        let path = ForwardPath::Path(path_of(r, &origin)?);
        if !recipients.contains(&path) {
            recipients.push(path);
        }
    }
    if recipients.is_empty() {
        let hint = if args.from_headers {
            "no recipient addresses found in the message header"
        } else {
            "no recipients: name them, or use -t to read To:, Cc: and Bcc:"
        };
        return Err(Failure(EX_USAGE, hint.into()));
    }
    let body = prepared.message;
    let mut message = Message::new(reverse_path, recipients, body.len() as u64);
    // Just made, so not shared: changed in place.
    let envelope = message.envelope_mut();
    if body.iter().any(|&b| b >= 0x80) {
        envelope.params.body = Some(BodyType::EightBitMime);
    }
    envelope.params.ret = args.ret;
    envelope.params.envid = args.envid.clone();
    for r in &mut envelope.recipients {
        r.params.notify = args.notify;
    }
    let hostname = Domain::parse(&config.hostname())
        .unwrap_or_else(|| Domain::parse("localhost").expect("a valid name"));
    let stream = connect(config)?;
    let results = send(stream, hostname, message.clone(), &body, args.verbose)?;
    report(&message, &results)
}

/// `user@domain`, `<user@domain>`, `Name <user@domain>`, or a bare login
/// (completed with `@origin`, as Postfix's `append_at_myorigin`).
fn path_of(given: &str, origin: &str) -> Result<Path, Failure> {
    let bare = match (given.rfind('<'), given.rfind('>')) {
        (Some(open), Some(close)) if open < close => &given[open + 1..close],
        _ => given,
    }
    .trim();
    let address = if bare.contains('@') {
        bare.to_string()
    } else {
        format!("{bare}@{origin}")
    };
    Path::parse(format!("<{address}>").as_bytes())
        .map_err(|e| Failure(EX_DATAERR, format!("{given}: bad address: {e}")))
}

/// Runs one SMTP session over the socket: the message, then QUIT.
fn send(
    mut stream: UnixStream,
    hostname: Domain,
    message: Message,
    body: &[u8],
    verbose: bool,
) -> Result<Vec<sluice_smtp::client::RecipientResult>, Failure> {
    let lost = |e: std::io::Error| {
        Failure(
            EX_TEMPFAIL,
            format!("lost the mail server: {e}; the message was not sent"),
        )
    };
    let mut session = ClientSession::new(ClientConfig::new(hostname));
    session
        .send_message(message)
        .map_err(|e| Failure(EX_SOFTWARE, format!("cannot start: {e:?}")))?;
    let mut results = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while !session.output().is_empty() {
            if verbose {
                eprint!("{}", String::from_utf8_lossy(session.output()));
            }
            let n = stream.write(session.output()).map_err(lost)?;
            session.consume_output(n);
        }
        let mut closed = false;
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::SendBody(_) => {
                    // Only NotExpected can come back, and SendBody was just asked for.
                    let _ = session.send_body(body);
                }
                ClientEvent::MessageDone(done) => {
                    results = Some(done);
                    session.quit();
                }
                ClientEvent::Closed(_) => closed = true,
                ClientEvent::Ready | ClientEvent::StartTls => {}
            }
        }
        if closed {
            break;
        }
        if !session.output().is_empty() {
            continue;
        }
        match stream.read(&mut buf) {
            Ok(0) => session.connection_lost(),
            Ok(n) => {
                if verbose {
                    eprint!("{}", String::from_utf8_lossy(&buf[..n]));
                }
                session.receive(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => session.timed_out(),
            Err(e) => return Err(lost(e)),
        }
    }
    results.ok_or_else(|| Failure(EX_SOFTWARE, "the session ended without a result".into()))
}

/// Says what went wrong for whom, and picks the exit status: the message
/// was queued for every recipient (0), or the worst of what was not.
fn report(
    message: &Message,
    results: &[sluice_smtp::client::RecipientResult],
) -> Result<(), Failure> {
    let mut status = 0;
    let mut lines = Vec::new();
    for result in results {
        let rcpt = &message.envelope.recipients[result.index].forward_path;
        let (permanent, reply) = match &result.outcome {
            Outcome::Delivered(_) => continue,
            Outcome::Transient(reply) => (false, reply),
            Outcome::Permanent(reply) => (true, reply),
        };
        if result.stage == Stage::Mail {
            // Refused for the sender: the same reply for every recipient.
            let line = format!("sender {}: {reply}", message.envelope.reverse_path);
            if !lines.contains(&line) {
                lines.push(line);
            }
        } else {
            lines.push(format!("{rcpt}: {reply}"));
        }
        let this = match (permanent, result.stage) {
            (false, _) => EX_TEMPFAIL,
            (true, _) if reply.enhanced().is_some_and(|c| c.subject == 7) => EX_NOPERM,
            (true, Stage::Rcpt) => EX_NOUSER,
            (true, _) => EX_UNAVAILABLE,
        };
        // A permanent failure outranks a temporary one: retrying will not help.
        if status == 0 || (status == EX_TEMPFAIL && this != EX_TEMPFAIL) {
            status = this;
        }
    }
    match status {
        0 => Ok(()),
        status => Err(Failure(status, lines.join("\n"))),
    }
}
