//! The `sendmail` command line, as Postfix's sendmail(1) takes it: what
//! cron, PHP's `mail()`, `git send-email` and forty years of scripts pass.
//!
//! clap cannot parse it: options glue to their values (`-fuser`, `-oi`),
//! `-q` takes an optional value, and unknown `-o` options must be ignored
//! rather than refused. So this is getopt, by hand, for this one grammar.

use std::path::PathBuf;

use sluice_smtp::params::{Notify, Ret};

/// What the command was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Read a message from standard input and submit it (`-bm`, the default).
    Submit,
    /// Speak SMTP on standard input and output (`-bs`).
    Smtp,
    /// List the queue (`-bp`, or run as `mailq`).
    ListQueue,
    /// Retry every deferred message now (`-q`).
    FlushQueue,
    /// Rebuild the aliases database (`-bi`, or run as `newaliases`): there
    /// is none, aliases are read from the configuration.
    NewAliases,
    /// `-bV` / `--version`.
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub mode: Mode,
    /// `-C`: the configuration file.
    pub config: Option<PathBuf>,
    /// `-f` / `-r`: the envelope sender.
    pub sender: Option<String>,
    /// `-F`: the sender's full name, for a `From:` the command adds.
    pub full_name: Option<String>,
    /// `-t`: also take recipients from `To:`, `Cc:` and `Bcc:`.
    pub from_headers: bool,
    /// `-i` / `-oi`: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    /// `-N`: DSN NOTIFY for every recipient.
    pub notify: Option<Notify>,
    /// `-R`: DSN RET.
    pub ret: Option<Ret>,
    /// `-V`: DSN ENVID.
    pub envid: Option<String>,
    /// `-v`: print the server's replies.
    pub verbose: bool,
    /// Recipients named on the command line.
    pub recipients: Vec<String>,
}

/// Why the command line makes no sense (exit status 64, EX_USAGE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Options that take a value (glued or as the next argument).
const WITH_VALUE: &[char] = &[
    'A', 'B', 'C', 'F', 'L', 'N', 'O', 'R', 'V', 'X', 'b', 'e', 'f', 'h', 'o', 'p', 'r',
];

impl Args {
    fn new(mode: Mode) -> Args {
        Args {
            mode,
            config: None,
            sender: None,
            full_name: None,
            from_headers: false,
            ignore_dots: false,
            notify: None,
            ret: None,
            envid: None,
            verbose: false,
            recipients: Vec::new(),
        }
    }

    /// Parses the arguments after the program name; `program` (its last
    /// path component) picks the mode for `mailq` and `newaliases`.
    pub fn parse(program: &str, args: &[String]) -> Result<Args, UsageError> {
        let mut parsed = Args::new(match program {
            "mailq" => Mode::ListQueue,
            "newaliases" => Mode::NewAliases,
            _ => Mode::Submit,
        });
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            if arg == "--" {
                break;
            }
            if arg == "--version" {
                parsed.mode = Mode::Version;
                continue;
            }
            let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
                // The first recipient: everything from here is recipients.
                i -= 1;
                break;
            };
            for (at, flag) in flags.char_indices() {
                if flag == 'q' {
                    // `-q` alone, or `-q<interval>` (ignored: no daemon mode).
                    parsed.mode = Mode::FlushQueue;
                    break;
                }
                if WITH_VALUE.contains(&flag) {
                    let glued = &flags[at + flag.len_utf8()..];
                    let value = if !glued.is_empty() {
                        glued.to_string()
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Err(UsageError(format!("option -{flag} needs a value")));
                    };
                    parsed.option(flag, value)?;
                    break;
                }
                match flag {
                    't' => parsed.from_headers = true,
                    'i' => parsed.ignore_dots = true,
                    'v' => parsed.verbose = true,
                    // Accepted and meaningless here: -G (gateway), -I
                    // (newaliases, below), -n (no aliasing), -m (me too),
                    // -U (initial user submission), -x.
                    'I' => parsed.mode = Mode::NewAliases,
                    'G' | 'n' | 'm' | 'U' | 'x' => {}
                    other => return Err(UsageError(format!("unknown option -{other}"))),
                }
            }
        }
        parsed.recipients.extend(args[i..].iter().cloned());
        Ok(parsed)
    }

    fn option(&mut self, flag: char, value: String) -> Result<(), UsageError> {
        match flag {
            'C' => self.config = Some(PathBuf::from(value)),
            'f' | 'r' => self.sender = Some(value),
            'F' => self.full_name = Some(value),
            'b' => {
                self.mode = match value.as_str() {
                    "m" => Mode::Submit,
                    "s" => Mode::Smtp,
                    "p" => Mode::ListQueue,
                    "i" => Mode::NewAliases,
                    "V" => Mode::Version,
                    other => {
                        return Err(UsageError(format!(
                            "-b{other} is not supported (only -bm, -bs, -bp, -bi, -bV)"
                        )));
                    }
                }
            }
            // -oi is -i; -oem, -odb, -odi, -om, -oX... are sendmail options
            // with no meaning here, ignored (below) as Postfix does.
            'o' if value == "i" => self.ignore_dots = true,
            'N' => self.notify = Some(parse_notify(&value)?),
            'R' => {
                self.ret = Some(match value.to_ascii_lowercase().as_str() {
                    "full" => Ret::Full,
                    "hdrs" => Ret::Hdrs,
                    _ => return Err(UsageError(format!("-R {value}: use full or hdrs"))),
                })
            }
            'V' => self.envid = Some(value),
            // -A (Am/Ac), -B (body type: found from the message itself),
            // -L (syslog label), -O, -X, -e, -h, -p: accepted, ignored.
            _ => {}
        }
        Ok(())
    }
}

/// `-N never` or a comma list of `success`, `delay`, `failure`.
fn parse_notify(value: &str) -> Result<Notify, UsageError> {
    let lower = value.to_ascii_lowercase();
    if lower == "never" {
        return Ok(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for word in lower.split(',').map(str::trim) {
        match word {
            "success" => success = true,
            "failure" => failure = true,
            "delay" => delay = true,
            _ => {
                return Err(UsageError(format!(
                    "-N {value}: use never, or any of success, delay, failure"
                )));
            }
        }
    }
    Ok(Notify::On {
        success,
        failure,
        delay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, UsageError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        Args::parse("sendmail", &args)
    }

    #[test]
    fn what_cron_and_scripts_pass_parses() {
        // Debian cron: -FCronDaemon -i -B8BITMIME -oem <user>
        let cron = parse("-FCronDaemon -i -B8BITMIME -oem alice").unwrap();
        assert_eq!(cron.full_name.as_deref(), Some("CronDaemon"));
        assert!(cron.ignore_dots);
        assert_eq!(cron.recipients, ["alice"]);
        assert_eq!(cron.mode, Mode::Submit);
        // PHP mail(): -t -i; git: -i -f addr rcpt; glued flags.
        let php = parse("-ti").unwrap();
        assert!(php.from_headers && php.ignore_dots && php.recipients.is_empty());
        let git = parse("-oi -f me@example.test -- you@example.test -x").unwrap();
        assert_eq!(git.sender.as_deref(), Some("me@example.test"));
        assert_eq!(git.recipients, ["you@example.test", "-x"]);
        assert_eq!(
            parse("-fme@x -r you@y a").unwrap().sender.as_deref(),
            Some("you@y")
        );
    }

    #[test]
    fn modes_and_dsn_options() {
        assert_eq!(parse("-bs").unwrap().mode, Mode::Smtp);
        assert_eq!(parse("-bp").unwrap().mode, Mode::ListQueue);
        assert_eq!(parse("-q").unwrap().mode, Mode::FlushQueue);
        assert_eq!(parse("-q30m").unwrap().mode, Mode::FlushQueue);
        assert_eq!(Args::parse("mailq", &[]).unwrap().mode, Mode::ListQueue);
        assert_eq!(
            Args::parse("newaliases", &[]).unwrap().mode,
            Mode::NewAliases
        );
        let dsn = parse("-N success,delay -R hdrs -V env-1 a@b").unwrap();
        assert_eq!(
            dsn.notify,
            Some(Notify::On {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(dsn.ret, Some(Ret::Hdrs));
        assert_eq!(dsn.envid.as_deref(), Some("env-1"));
        assert_eq!(parse("-Nnever a").unwrap().notify, Some(Notify::Never));
    }

    #[test]
    fn nonsense_is_a_usage_error_naming_the_problem() {
        assert!(parse("-bd").unwrap_err().0.contains("-bd"));
        assert!(parse("-k").unwrap_err().0.contains("-k"));
        assert!(parse("-f").unwrap_err().0.contains("-f needs a value"));
        assert!(parse("-N sometimes a").unwrap_err().0.contains("sometimes"));
    }
}
