//! `sluice plugin test`: every hook of a chain, in order, against one
//! envelope and message, with what each plugin said and did.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use sluice_smtp::server::Greeting;
use sluice_smtp::trace::{TraceClient, TraceFields, received_header};
use sluice_smtp::{ForwardPath, Path, Reply, ReversePath};

use crate::abi::Hook;
use crate::chain::{Outcome, PluginRun, StageCall, run_stage};
use crate::context::{ConnInfo, ConnRecord, MessageView, RcptView, TxView, format_score};
use crate::engine::{Chain, Services, Ticker};
use crate::error::LoadError;
use crate::host::{finish_transaction, forward_path_arg, reverse_path_arg};
use crate::spec::{HostEnv, PluginSpec};
use sluice_filter::MessageChanges;

/// The SMTP side of a test run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestEnvelope {
    pub client_ip: IpAddr,
    pub helo: String,
    /// The reverse-path, with or without brackets; `""` or `<>` for the null path.
    pub mail_from: String,
    /// Forward-paths, with or without brackets, as a client would write them.
    pub rcpts: Vec<String>,
    /// Whether the client counts as in `relay.trusted_networks`.
    pub trusted: bool,
    /// What email authentication is to have found (`auth.*` properties).
    pub auth: sluice_filter::AuthResults,
}

/// The queue id the test message's trace header names.
pub const TEST_QUEUE_ID: &str = "TEST000000";

/// Everything a test run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct TestReport {
    pub stages: Vec<StageReport>,
    pub result: TestResult,
    /// Every score added over the connection and transaction, in order.
    pub scores: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    pub hook: Hook,
    /// The hook's argument as the plugins got it (empty for those without).
    pub arg: String,
    /// One entry per plugin that has the hook, in chain order, up to the one
    /// that ended the stage.
    pub runs: Vec<PluginRun>,
    pub outcome: Outcome,
}

/// How the transaction would have ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TestResult {
    /// Queued (or discarded or quarantined, per the changes).
    Accepted(MessageChanges),
    /// A stage was refused; recipients refused one by one do not end the run.
    Refused {
        hook: Hook,
        reply: Reply,
    },
    Disconnected {
        hook: Hook,
        reply: Reply,
    },
    /// Every recipient was refused, so there was no DATA.
    NoRecipients,
}

/// Why a test run could not run: the chain did not load, or a path of the
/// test envelope does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestRunError {
    Load(LoadError),
    ReversePath {
        given: String,
        error: sluice_smtp::AddressError,
    },
    ForwardPath {
        given: String,
        error: sluice_smtp::AddressError,
    },
}

impl fmt::Display for TestRunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestRunError::Load(e) => e.fmt(f),
            TestRunError::ReversePath { given, error } => {
                write!(f, "invalid reverse-path {given:?}: {error}")
            }
            TestRunError::ForwardPath { given, error } => {
                write!(f, "invalid forward-path {given:?}: {error}")
            }
        }
    }
}

impl std::error::Error for TestRunError {}

impl From<LoadError> for TestRunError {
    fn from(e: LoadError) -> Self {
        TestRunError::Load(e)
    }
}

/// Loads `specs` and runs every hook against `envelope` and `eml` (the
/// message as in a file; bare LF line ends are made CRLF, and a trace header
/// is put on top as the server would). Errors are load errors or an
/// envelope that does not parse.
pub fn test_run(
    specs: Vec<PluginSpec>,
    env: HostEnv,
    envelope: TestEnvelope,
    eml: &[u8],
) -> Result<TestReport, TestRunError> {
    Tester::new(specs, env)?.run(&envelope, eml)
}

/// A loaded chain that runs test transactions one after another, each on a
/// connection of its own: [`test_run`] for many envelopes without compiling
/// the plugins again for each.
pub struct Tester {
    chain: Chain,
    hostname: String,
    // Last: the engines' epochs must advance while a call may still run.
    _ticker: Ticker,
}

impl Tester {
    /// Compiles and checks the plugins, as the server would load them.
    pub fn new(specs: Vec<PluginSpec>, env: HostEnv) -> Result<Tester, LoadError> {
        let ticker = Ticker::start()?;
        let services = Arc::new(Services::new(&env, ticker.clock()));
        let chain = Chain::build(specs, &services, 1, &ticker)?;
        Ok(Tester {
            chain,
            hostname: env.hostname,
            _ticker: ticker,
        })
    }

    /// Runs every hook of one transaction; see [`test_run`].
    pub fn run(&self, envelope: &TestEnvelope, eml: &[u8]) -> Result<TestReport, TestRunError> {
        let reverse_path = parse_reverse_path(&envelope.mail_from)?;
        let forward_paths = envelope
            .rcpts
            .iter()
            .map(|r| parse_forward_path(r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut run = Run {
            chain: &self.chain,
            conn: Arc::new(ConnRecord::new(ConnInfo {
                id: 0,
                ip: envelope.client_ip,
                trusted: envelope.trusted,
            })),
            hostname: &self.hostname,
            stages: Vec::new(),
        };
        let result = run.transaction(envelope, &reverse_path, &forward_paths, eml);
        finish_transaction(&self.chain, &run.conn, &self.hostname);
        run.stage(Hook::Close, String::new(), None, None, None);
        let scores = {
            // What the close hook may have added is not part of any transaction.
            run.stages
                .iter()
                .flat_map(|s| s.runs.iter())
                .filter(|r| matches!(r.result, Ok(Some(_))))
                .flat_map(|r| r.scores.iter().cloned())
                .collect()
        };
        Ok(TestReport {
            stages: run.stages,
            result,
            scores,
        })
    }
}

impl fmt::Debug for Tester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tester")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

struct Run<'a> {
    chain: &'a Chain,
    conn: Arc<ConnRecord>,
    hostname: &'a str,
    stages: Vec<StageReport>,
}

impl Run<'_> {
    fn stage(
        &mut self,
        hook: Hook,
        arg: String,
        tx: Option<TxView>,
        rcpt: Option<RcptView>,
        message: Option<MessageView>,
    ) -> (Outcome, MessageChanges) {
        let call = StageCall {
            hook,
            arg,
            tx: tx.map(Arc::new),
            rcpt: rcpt.map(Arc::new),
            message: message.map(Arc::new),
        };
        let result = run_stage(self.chain, &self.conn, &call, self.hostname, true);
        if self.chain.has(hook) {
            self.stages.push(StageReport {
                hook,
                arg: call.arg,
                runs: result.runs,
                outcome: result.outcome.clone(),
            });
        }
        (result.outcome, result.changes)
    }

    fn transaction(
        &mut self,
        envelope: &TestEnvelope,
        reverse_path: &ReversePath,
        forward_paths: &[ForwardPath],
        eml: &[u8],
    ) -> TestResult {
        let refused = |hook, outcome| match outcome {
            Outcome::Reject(reply) => Some(TestResult::Refused { hook, reply }),
            Outcome::Disconnect(reply) => Some(TestResult::Disconnected { hook, reply }),
            Outcome::Continue | Outcome::Accept => None,
        };
        let (outcome, _) = self.stage(Hook::Connect, String::new(), None, None, None);
        if let Some(r) = refused(Hook::Connect, outcome) {
            return r;
        }
        let (outcome, _) = self.stage(Hook::Helo, envelope.helo.clone(), None, None, None);
        if let Some(r) = refused(Hook::Helo, outcome) {
            return r;
        }
        let mut tx = TxView {
            mail_from: reverse_path_arg(reverse_path),
            rcpts: String::new(),
            auth: envelope.auth.clone(),
        };
        let (outcome, _) = self.stage(
            Hook::Mail,
            tx.mail_from.clone(),
            Some(tx.clone()),
            None,
            None,
        );
        if let Some(r) = refused(Hook::Mail, outcome) {
            return r;
        }
        let mut accepted = Vec::new();
        for path in forward_paths {
            let (outcome, _) = self.stage(
                Hook::Rcpt,
                forward_path_arg(path),
                Some(tx.clone()),
                Some(RcptView::of(path)),
                None,
            );
            match outcome {
                Outcome::Disconnect(reply) => {
                    return TestResult::Disconnected {
                        hook: Hook::Rcpt,
                        reply,
                    };
                }
                Outcome::Reject(_) => {}
                Outcome::Continue | Outcome::Accept => {
                    accepted.push(match path {
                        ForwardPath::Postmaster => "postmaster".to_owned(),
                        ForwardPath::Path(p) => p.mailbox.text(),
                    });
                    tx.rcpts = accepted.join("\n");
                }
            }
        }
        if accepted.is_empty() {
            return TestResult::NoRecipients;
        }
        let message = MessageView::new(
            Arc::new(with_trace(envelope, self.hostname, &accepted, eml).into()),
            Some(TEST_QUEUE_ID.to_owned()),
        );
        let (outcome, changes) =
            self.stage(Hook::Data, String::new(), Some(tx), None, Some(message));
        refused(Hook::Data, outcome).unwrap_or(TestResult::Accepted(changes))
    }
}

fn strip_brackets(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
}

fn parse_reverse_path(s: &str) -> Result<ReversePath, TestRunError> {
    let inner = strip_brackets(s);
    if inner.is_empty() {
        return Ok(ReversePath::Null);
    }
    Path::parse(format!("<{inner}>").as_bytes())
        .map(ReversePath::Path)
        .map_err(|error| TestRunError::ReversePath {
            given: s.to_owned(),
            error,
        })
}

fn parse_forward_path(s: &str) -> Result<ForwardPath, TestRunError> {
    let inner = strip_brackets(s);
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok(ForwardPath::Postmaster);
    }
    Path::parse(format!("<{inner}>").as_bytes())
        .map(ForwardPath::Path)
        .map_err(|error| TestRunError::ForwardPath {
            given: s.to_owned(),
            error,
        })
}

/// The message as the data hook would see it on the server: our trace
/// header on top, CRLF line ends.
fn with_trace(envelope: &TestEnvelope, hostname: &str, rcpts: &[String], eml: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(eml.len() + 256);
    received_header(
        &TraceFields {
            client: TraceClient::Network {
                helo: &envelope.helo,
                ip: envelope.client_ip,
            },
            hostname,
            greeting: Greeting::Ehlo,
            tls: None,
            authenticated: false,
            queue_id: TEST_QUEUE_ID,
            single_recipient: (rcpts.len() == 1).then(|| rcpts[0].as_str()),
            time: SystemTime::now(),
        },
        &mut out,
    );
    let mut previous = 0u8;
    for &b in eml {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    out
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for stage in &self.stages {
            match stage.hook {
                Hook::Helo | Hook::Rcpt => writeln!(f, "{} {}", stage.hook.name(), stage.arg)?,
                Hook::Mail => writeln!(f, "mail <{}>", stage.arg)?,
                _ => writeln!(f, "{}", stage.hook.name())?,
            }
            for run in &stage.runs {
                write!(f, "  {}: ", run.plugin)?;
                match &run.result {
                    Ok(Some(v)) => write!(f, "{}", v.as_str())?,
                    Ok(None) => write!(f, "done")?,
                    Err(why) => write!(f, "FAILED: {why}")?,
                }
                if let Some((code, text)) = &run.reply {
                    write!(f, " (set_reply {code} {text})")?;
                }
                writeln!(f)?;
                for (symbol, score) in &run.scores {
                    writeln!(f, "    score {symbol} {}", format_score(*score))?;
                }
                for (name, value) in &run.headers {
                    writeln!(f, "    add_header {name}: {value}")?;
                }
                for line in &run.logs {
                    let level =
                        ["error", "warn", "info", "debug", "trace"][line.level.min(4) as usize];
                    writeln!(f, "    log {level}: {}", line.text)?;
                }
            }
            match &stage.outcome {
                Outcome::Reject(reply) | Outcome::Disconnect(reply) => writeln!(f, "  => {reply}")?,
                Outcome::Accept => writeln!(f, "  => accepted (rest of the stage skipped)")?,
                Outcome::Continue => {}
            }
        }
        let total: f64 = self.scores.iter().map(|(_, s)| s).sum();
        if !self.scores.is_empty() {
            let symbols: Vec<String> = self
                .scores
                .iter()
                .map(|(s, v)| format!("{s}={}", format_score(*v)))
                .collect();
            writeln!(f, "score {} ({})", format_score(total), symbols.join(", "))?;
        }
        match &self.result {
            TestResult::Accepted(changes) => {
                let what = match (changes.discard, changes.quarantine) {
                    (true, _) => "accepted, then discarded",
                    (false, true) => "accepted, quarantined",
                    (false, false) => "accepted",
                };
                writeln!(f, "result: {what}")?;
                for (name, value) in &changes.headers {
                    writeln!(f, "  + {name}: {value}")?;
                }
            }
            TestResult::Refused { hook, reply } => {
                writeln!(f, "result: refused at {}: {reply}", hook.name())?;
            }
            TestResult::Disconnected { hook, reply } => {
                writeln!(f, "result: disconnected at {}: {reply}", hook.name())?;
            }
            TestResult::NoRecipients => writeln!(f, "result: every recipient refused")?,
        }
        Ok(())
    }
}
