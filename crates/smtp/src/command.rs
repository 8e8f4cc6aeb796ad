//! SMTP commands (RFC 5321 §4.1.1) and their ESMTP parameters.
//!
//! [`Command::parse`] takes one line without its CRLF and either returns the
//! command or a [`CommandError`] whose [`reply`](CommandError::reply) says
//! what is wrong. Formatting ([`fmt::Display`], [`Command::write_to`]) gives
//! the canonical wire form, which parses back to the same command.
//!
//! Leniencies, each because real clients need it: verbs, `FROM:`/`TO:` and
//! parameter keywords in any case; runs of spaces or tabs wherever one space
//! is due, and trailing white space; spaces between `FROM:`/`TO:` and the
//! path (Postfix takes them too); an address literal after HELO (old Windows
//! clients send `HELO [192.0.2.1]`). The angle brackets stay mandatory.

use std::fmt;

use crate::address::{AddressError, Domain, ForwardPath, ReversePath};
use crate::params::{MailParams, ParamError, RcptParams};
use crate::reply::{EnhancedCode, Reply};
use crate::syntax::{AnyPath, Scanner};

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain` (RFC 821 clients).
    Helo(Domain),
    /// `EHLO domain-or-address-literal`.
    Ehlo(Domain),
    Mail {
        reverse_path: ReversePath,
        params: MailParams,
    },
    Rcpt {
        forward_path: ForwardPath,
        params: RcptParams,
    },
    Data,
    /// `BDAT chunk-size [LAST]` (RFC 3030).
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    /// `NOOP [string]`: the argument is ignored, but kept for format∘parse.
    /// Text arguments (here, VRFY, EXPN, HELP) never start or end with
    /// white space and hold no control character but HTAB.
    Noop(Option<String>),
    Quit,
    Vrfy(String),
    Expn(String),
    Help(Option<String>),
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954). The mechanism is
    /// upper-cased (SASL names are upper case, RFC 4422 §3.1); the initial
    /// response is kept as sent (base64, or `=` for an empty one).
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
}

/// Which command a line was (or tried to be), for replies and statistics
/// even when the arguments do not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
}

impl Command {
    pub fn verb(&self) -> Verb {
        match self {
            Command::Helo(_) => Verb::Helo,
            Command::Ehlo(_) => Verb::Ehlo,
            Command::Mail { .. } => Verb::Mail,
            Command::Rcpt { .. } => Verb::Rcpt,
            Command::Data => Verb::Data,
            Command::Bdat { .. } => Verb::Bdat,
            Command::Rset => Verb::Rset,
            Command::Noop(_) => Verb::Noop,
            Command::Quit => Verb::Quit,
            Command::Vrfy(_) => Verb::Vrfy,
            Command::Expn(_) => Verb::Expn,
            Command::Help(_) => Verb::Help,
            Command::StartTls => Verb::StartTls,
            Command::Auth { .. } => Verb::Auth,
        }
    }
}

impl Verb {
    /// The verb as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Helo => "HELO",
            Verb::Ehlo => "EHLO",
            Verb::Mail => "MAIL",
            Verb::Rcpt => "RCPT",
            Verb::Data => "DATA",
            Verb::Bdat => "BDAT",
            Verb::Rset => "RSET",
            Verb::Noop => "NOOP",
            Verb::Quit => "QUIT",
            Verb::Vrfy => "VRFY",
            Verb::Expn => "EXPN",
            Verb::Help => "HELP",
            Verb::StartTls => "STARTTLS",
            Verb::Auth => "AUTH",
        }
    }

    /// Recognizes a verb in any case.
    pub fn from_bytes(word: &[u8]) -> Option<Verb> {
        if word.len() == 8 {
            return word
                .eq_ignore_ascii_case(b"STARTTLS")
                .then_some(Verb::StartTls);
        }
        let word: [u8; 4] = word.try_into().ok()?;
        Some(match &word.map(|b| b.to_ascii_uppercase()) {
            b"HELO" => Verb::Helo,
            b"EHLO" => Verb::Ehlo,
            b"MAIL" => Verb::Mail,
            b"RCPT" => Verb::Rcpt,
            b"DATA" => Verb::Data,
            b"BDAT" => Verb::Bdat,
            b"RSET" => Verb::Rset,
            b"NOOP" => Verb::Noop,
            b"QUIT" => Verb::Quit,
            b"VRFY" => Verb::Vrfy,
            b"EXPN" => Verb::Expn,
            b"HELP" => Verb::Help,
            b"AUTH" => Verb::Auth,
            _ => return None,
        })
    }

    /// The command's syntax, for replies that refuse a malformed one.
    fn usage(self) -> &'static str {
        match self {
            Verb::Helo => "HELO <domain>",
            Verb::Ehlo => "EHLO <domain or address literal>",
            Verb::Mail => "MAIL FROM:<address> [parameters]",
            Verb::Rcpt => "RCPT TO:<address> [parameters]",
            Verb::Data => "DATA",
            Verb::Bdat => "BDAT <chunk size> [LAST]",
            Verb::Rset => "RSET",
            Verb::Noop => "NOOP [text]",
            Verb::Quit => "QUIT",
            Verb::Vrfy => "VRFY <user or mailbox>",
            Verb::Expn => "EXPN <mailing list>",
            Verb::Help => "HELP [topic]",
            Verb::StartTls => "STARTTLS",
            Verb::Auth => "AUTH <mechanism> [initial response]",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits off the first word of `s` (already trimmed) and the rest, trimmed.
fn first_word(s: &str) -> (&str, &str) {
    match s.split_once(is_blank) {
        Some((word, rest)) => (word, rest.trim_start_matches(is_blank)),
        None => (s, ""),
    }
}

/// `FROM:` or `TO:` in any case, then optional blanks.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.as_bytes().get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword.as_bytes())
        .then(|| args[keyword.len()..].trim_start_matches(is_blank))
}

/// The path at the start of `s`, and what follows it (the parameters).
fn path_and_params(s: &str) -> Result<(AnyPath, &str), ErrorKind> {
    let mut sc = Scanner::new(s);
    let path = sc.any_path().map_err(ErrorKind::Address)?;
    let rest = &s[sc.pos()..];
    if !rest.is_empty() && !rest.starts_with(is_blank) {
        return Err(ErrorKind::Address(AddressError::TrailingCharacters));
    }
    Ok((path, rest))
}

/// A free-text argument (VRFY, NOOP...): kept as is, but no control characters.
fn text(args: &str) -> Result<String, ErrorKind> {
    if args.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ErrorKind::ControlCharacter);
    }
    Ok(args.to_owned())
}

fn no_args(args: &str, command: Command) -> Result<Command, ErrorKind> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(ErrorKind::UnexpectedArgument)
    }
}

fn parse_args(verb: Verb, args: &str) -> Result<Command, ErrorKind> {
    let required = matches!(
        verb,
        Verb::Helo
            | Verb::Ehlo
            | Verb::Mail
            | Verb::Rcpt
            | Verb::Bdat
            | Verb::Vrfy
            | Verb::Expn
            | Verb::Auth
    );
    if required && args.is_empty() {
        return Err(ErrorKind::MissingArgument);
    }
    Ok(match verb {
        Verb::Helo => Command::Helo(Domain::parse(args).ok_or(ErrorKind::InvalidArgument)?),
        Verb::Ehlo => Command::Ehlo(Domain::parse(args).ok_or(ErrorKind::InvalidArgument)?),
        Verb::Mail => {
            let rest = strip_keyword(args, "FROM:").ok_or(ErrorKind::InvalidArgument)?;
            let (path, params) = path_and_params(rest)?;
            let reverse_path = match path {
                AnyPath::Null => ReversePath::Null,
                AnyPath::Path(path) => ReversePath::Path(path),
                AnyPath::Postmaster => {
                    return Err(ErrorKind::Address(AddressError::MissingDomain));
                }
            };
            let params = MailParams::parse(params).map_err(ErrorKind::Param)?;
            Command::Mail {
                reverse_path,
                params,
            }
        }
        Verb::Rcpt => {
            let rest = strip_keyword(args, "TO:").ok_or(ErrorKind::InvalidArgument)?;
            let (path, params) = path_and_params(rest)?;
            let forward_path = match path {
                AnyPath::Postmaster => ForwardPath::Postmaster,
                AnyPath::Path(path) => ForwardPath::Path(path),
                AnyPath::Null => return Err(ErrorKind::Address(AddressError::NullPath)),
            };
            let params = RcptParams::parse(params).map_err(ErrorKind::Param)?;
            Command::Rcpt {
                forward_path,
                params,
            }
        }
        Verb::Bdat => {
            let (size, rest) = first_word(args);
            let size = crate::params::parse_decimal(size).ok_or(ErrorKind::InvalidArgument)?;
            let last = match rest {
                "" => false,
                r if r.eq_ignore_ascii_case("LAST") => true,
                _ => return Err(ErrorKind::InvalidArgument),
            };
            Command::Bdat { size, last }
        }
        Verb::Auth => {
            let (mechanism, response) = first_word(args);
            // RFC 4422 §3.1: 1 to 20 of upper-case letters, digits, '-' and '_'.
            let mech_ok = mechanism.len() <= 20
                && mechanism
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            // RFC 4954 §4: base64, or "=" for an empty initial response.
            let response_ok = response
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
            if !mech_ok || !response_ok {
                return Err(ErrorKind::InvalidArgument);
            }
            Command::Auth {
                mechanism: mechanism.to_ascii_uppercase(),
                initial_response: (!response.is_empty()).then(|| response.to_owned()),
            }
        }
        Verb::Vrfy => Command::Vrfy(text(args)?),
        Verb::Expn => Command::Expn(text(args)?),
        Verb::Noop => Command::Noop(if args.is_empty() {
            None
        } else {
            Some(text(args)?)
        }),
        Verb::Help => Command::Help(if args.is_empty() {
            None
        } else {
            Some(text(args)?)
        }),
        Verb::Data => no_args(args, Command::Data)?,
        Verb::Rset => no_args(args, Command::Rset)?,
        Verb::Quit => no_args(args, Command::Quit)?,
        Verb::StartTls => no_args(args, Command::StartTls)?,
    })
}

impl Command {
    /// Parses one command line, without its CRLF (the line reader strips it).
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        let verb_end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(line.len());
        let verb = Verb::from_bytes(&line[..verb_end]);
        let error = |kind| CommandError { verb, kind };
        let line = std::str::from_utf8(line).map_err(|_| error(ErrorKind::NotUtf8))?;
        let Some(verb) = verb else {
            return Err(error(ErrorKind::Unrecognized));
        };
        // verb_end is at an ASCII blank or the end, so a char boundary.
        let args = line[verb_end..].trim_matches(is_blank);
        parse_args(verb, args).map_err(error)
    }

    /// Appends the canonical wire form plus CRLF (the delivery client sends this).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Command::Mail {
                reverse_path,
                params,
            } => EnvelopeCommand::Mail(reverse_path, params).write_to(out),
            Command::Rcpt {
                forward_path,
                params,
            } => EnvelopeCommand::Rcpt(forward_path, params).write_to(out),
            _ => {
                use std::io::Write as _;
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{self}\r\n");
            }
        }
    }
}

/// The canonical wire form, without CRLF.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Helo(domain) => write!(f, "HELO {domain}"),
            Command::Ehlo(domain) => write!(f, "EHLO {domain}"),
            Command::Mail {
                reverse_path,
                params,
            } => EnvelopeCommand::Mail(reverse_path, params).fmt(f),
            Command::Rcpt {
                forward_path,
                params,
            } => EnvelopeCommand::Rcpt(forward_path, params).fmt(f),
            Command::Bdat { size, last } => {
                write!(f, "BDAT {size}{}", if *last { " LAST" } else { "" })
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                write!(f, "AUTH {mechanism}")?;
                match initial_response {
                    Some(response) => write!(f, " {response}"),
                    None => Ok(()),
                }
            }
            Command::Vrfy(arg) | Command::Expn(arg) => write!(f, "{} {arg}", self.verb()),
            Command::Noop(Some(arg)) | Command::Help(Some(arg)) => {
                write!(f, "{} {arg}", self.verb())
            }
            Command::Data
            | Command::Rset
            | Command::Quit
            | Command::StartTls
            | Command::Noop(None)
            | Command::Help(None) => f.write_str(self.verb().as_str()),
        }
    }
}

/// MAIL or RCPT from borrowed parts, in [`Command`]'s wire form: the
/// delivery client writes a message's envelope without copying it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EnvelopeCommand<'a> {
    Mail(&'a ReversePath, &'a MailParams),
    Rcpt(&'a ForwardPath, &'a RcptParams),
}

impl EnvelopeCommand<'_> {
    /// Appends the wire form plus CRLF: the same octets as `Display`,
    /// written piece by piece (two a message; the formatting machinery
    /// costs more than the text).
    pub(crate) fn write_to(self, out: &mut Vec<u8>) {
        let (verb, path): (&[u8], _) = match self {
            EnvelopeCommand::Mail(ReversePath::Null, _) => (b"MAIL FROM:<>", None),
            EnvelopeCommand::Mail(ReversePath::Path(p), _) => (b"MAIL FROM:", Some(p)),
            EnvelopeCommand::Rcpt(ForwardPath::Postmaster, _) => (b"RCPT TO:<postmaster>", None),
            EnvelopeCommand::Rcpt(ForwardPath::Path(p), _) => (b"RCPT TO:", Some(p)),
        };
        out.extend_from_slice(verb);
        if let Some(path) = path {
            path.write_to(out);
        }
        let mut wire = ByteWriter(out);
        // Writing to a Vec cannot fail.
        let _ = match self {
            EnvelopeCommand::Mail(_, params) => params.write_wire(&mut wire),
            EnvelopeCommand::Rcpt(_, params) => params.write_wire(&mut wire),
        };
        out.extend_from_slice(b"\r\n");
    }
}

/// `fmt::Write` into a byte buffer, for the parts written with `write!`.
pub(crate) struct ByteWriter<'a>(pub &'a mut Vec<u8>);

impl fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl fmt::Display for EnvelopeCommand<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EnvelopeCommand::Mail(reverse_path, params) => {
                write!(f, "MAIL FROM:{reverse_path}")?;
                params.write_wire(f)
            }
            EnvelopeCommand::Rcpt(forward_path, params) => {
                write!(f, "RCPT TO:{forward_path}")?;
                params.write_wire(f)
            }
        }
    }
}

/// Why a command line was refused; [`CommandError::reply`] is what the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    verb: Option<Verb>,
    kind: ErrorKind,
}

/// What was wrong with a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// RFC 6531 allows UTF-8 in commands, and nothing else but ASCII.
    NotUtf8,
    /// Not a command this server knows (or an empty line).
    Unrecognized,
    MissingArgument,
    /// DATA, RSET, QUIT and STARTTLS take none.
    UnexpectedArgument,
    /// The argument does not fit the command's syntax (bad HELO domain,
    /// BDAT size, AUTH mechanism, MAIL without `FROM:`...).
    InvalidArgument,
    /// A control character in a free-text argument.
    ControlCharacter,
    /// The path of MAIL or RCPT.
    Address(AddressError),
    /// The ESMTP parameters of MAIL or RCPT.
    Param(ParamError),
}

impl CommandError {
    /// The command the line was, when its verb was recognized.
    pub fn verb(&self) -> Option<Verb> {
        self.verb
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The reply that refuses the line: 500 when the command is not known,
    /// 501 when its arguments are wrong, 555 for parameters we do not
    /// implement (RFC 5321 §4.1.1.11), with RFC 3463 enhanced codes.
    pub fn reply(&self) -> Reply {
        let usage = self.verb.map_or("", Verb::usage);
        let verb = self.verb.map_or("", Verb::as_str);
        let (code, detail, text): (u16, (u16, u16), std::borrow::Cow<'static, str>) = match &self
            .kind
        {
            ErrorKind::NotUtf8 => (
                if self.verb.is_some() { 501 } else { 500 },
                (5, 2),
                "Syntax error, the command line is not valid UTF-8".into(),
            ),
            ErrorKind::Unrecognized => (500, (5, 2), "Syntax error, command unrecognized".into()),
            ErrorKind::MissingArgument => (
                501,
                (5, 4),
                format!("Syntax error, argument missing: {usage}").into(),
            ),
            ErrorKind::UnexpectedArgument => (
                501,
                (5, 4),
                format!("Syntax error, {verb} takes no argument").into(),
            ),
            ErrorKind::InvalidArgument => match self.verb {
                Some(Verb::Helo | Verb::Ehlo) => (
                    501,
                    (5, 4),
                    format!("Invalid domain name, expected {usage}").into(),
                ),
                _ => (
                    501,
                    (5, 4),
                    format!("Syntax error, expected {usage}").into(),
                ),
            },
            ErrorKind::ControlCharacter => (
                501,
                (5, 4),
                "Syntax error, control character in the argument".into(),
            ),
            ErrorKind::Address(e) => match self.verb {
                Some(Verb::Rcpt) => (
                    501,
                    (1, 3),
                    format!("Bad recipient address syntax: {e}").into(),
                ),
                _ => (
                    501,
                    (1, 7),
                    format!("Bad sender address syntax: {e}").into(),
                ),
            },
            ErrorKind::Param(e) => match e {
                ParamError::Syntax => (501, (5, 4), "Syntax error in parameters".into()),
                ParamError::InvalidValue { keyword, expected } => (
                    501,
                    (5, 4),
                    format!("Syntax error in parameter {keyword}, expected {expected}").into(),
                ),
                ParamError::Conflicting { keyword } => (
                    501,
                    (5, 4),
                    format!(
                        "Syntax error in parameters, {keyword} given twice with different values"
                    )
                    .into(),
                ),
                ParamError::Unsupported { keyword } => (
                    555,
                    (5, 4),
                    format!("Unsupported parameter {keyword}").into(),
                ),
                ParamError::WrongCommand { keyword } => (
                    555,
                    (5, 4),
                    format!("Unsupported parameter {keyword} on {verb}").into(),
                ),
            },
        };
        Reply::new(code, Some(EnhancedCode::new(5, detail.0, detail.1)), text)
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reply().fmt(f)
    }
}

impl std::error::Error for CommandError {}
