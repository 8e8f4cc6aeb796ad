//! `sluice queue …`: the operator's view of the spool.
//!
//! `list`, `summary` and `show` ask the running server first: it answers
//! from its in-memory index, streaming, without replaying the spool (a
//! million queued messages are listed in seconds, not in the time a restart
//! takes). With no server running they read the spool directly (read-only,
//! no lock), which replays it. The commands that change the queue go to the
//! running server through the control socket.

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_smtp::ForwardPath;
use sluice_spool::{MessageSummary, QueueId, RecipientState, ScanOrder, Spool, SpoolHandle};

use crate::control;

/// Which messages `queue list` shows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only messages with a recipient in this domain (case-insensitive).
    pub domain: Option<String>,
    /// Only messages with a recipient in this state, or held ones.
    pub state: Option<StateFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    /// Not yet attempted.
    Queued,
    /// Failed for now, to be retried.
    Deferred,
    /// Held by the operator.
    Held,
}

impl StateFilter {
    fn name(self) -> &'static str {
        match self {
            StateFilter::Queued => "queued",
            StateFilter::Deferred => "deferred",
            StateFilter::Held => "held",
        }
    }
}

impl Filter {
    fn matches(&self, m: &MessageSummary) -> bool {
        let in_domain = |forward_path: &ForwardPath| {
            let domain = self.domain.as_deref().unwrap_or_default();
            let domain = domain.strip_suffix('.').unwrap_or(domain);
            matches!(forward_path, ForwardPath::Path(p)
                if p.mailbox.domain.text().eq_ignore_ascii_case(domain))
        };
        let domain_ok =
            self.domain.is_none() || m.recipients.iter().any(|r| in_domain(&r.forward_path));
        let state_ok = match self.state {
            None => true,
            Some(StateFilter::Held) => m.held,
            Some(StateFilter::Queued) => m
                .recipients
                .iter()
                .any(|r| r.state == RecipientState::Pending),
            Some(StateFilter::Deferred) => m
                .recipients
                .iter()
                .any(|r| matches!(r.state, RecipientState::Deferred { .. })),
        };
        domain_ok && state_ok
    }

    /// The filter as control-socket words: ` domain=D state=S`.
    fn to_words(&self) -> String {
        let mut words = String::new();
        if let Some(d) = &self.domain {
            words += &format!(" domain={d}");
        }
        if let Some(s) = self.state {
            words += &format!(" state={}", s.name());
        }
        words
    }

    /// The inverse of [`Filter::to_words`].
    pub fn from_words<'a>(words: impl Iterator<Item = &'a str>) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for word in words {
            match word.split_once('=') {
                Some(("domain", d)) if !d.is_empty() => filter.domain = Some(d.to_owned()),
                Some(("state", s)) => {
                    filter.state = Some(
                        <StateFilter as clap::ValueEnum>::from_str(s, true)
                            .map_err(|_| format!("unknown state {s:?}"))?,
                    );
                }
                _ => return Err(format!("unknown filter {word:?}")),
            }
        }
        Ok(filter)
    }
}

fn open(dir: &Path) -> Result<Spool, String> {
    if !dir.is_dir() {
        return Err(format!("{}: no spool directory here", dir.display()));
    }
    Spool::open_read_only(dir)
        .map(|(spool, _)| spool)
        .map_err(|e| format!("cannot read the spool in {}: {e}", dir.display()))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `command` on the server that owns `dir`, copying its answer to
/// `out`; with no server there, `direct` reads the spool instead.
fn ask_or_read<W: Write>(
    dir: &Path,
    command: &str,
    out: &mut W,
    direct: impl FnOnce(&SpoolHandle, &mut W) -> Result<(), String>,
) -> Result<(), String> {
    match control::stream(dir, command, out) {
        Err(control::StreamError::NoServer) => {
            let spool = open(dir)?;
            direct(&spool.handle(), out)
        }
        Err(control::StreamError::Failed(e)) => Err(e),
        Ok(()) => Ok(()),
    }
}

/// Prints the queued messages, oldest first: id, age, size, sender, and each
/// recipient with its state.
pub fn list(dir: &Path, filter: &Filter, out: &mut impl Write) -> Result<(), String> {
    ask_or_read(
        dir,
        &format!("list{}", filter.to_words()),
        out,
        |spool, out| write_list(spool, filter, now_ms(), out),
    )
}

/// `list`'s text, from `spool`, streamed to `out`.
pub fn write_list(
    spool: &SpoolHandle,
    filter: &Filter,
    now: u64,
    out: &mut impl Write,
) -> Result<(), String> {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let (mut count, mut total) = (0u64, 0u64);
    let mut failed = None;
    spool
        .scan(ScanOrder::OldestFirst, |m| {
            if !filter.matches(&m) {
                return true;
            }
            count += 1;
            total += m.size;
            let written = write_message_lines(&mut out, &m, now);
            failed = written.err();
            failed.is_none()
        })
        .map_err(|e| format!("cannot list the queue: {e}"))?;
    if let Some(e) = failed {
        return Err(e.to_string());
    }
    writeln!(out, "-- {count} message(s), {total} bytes").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

fn write_message_lines(out: &mut impl Write, m: &MessageSummary, now: u64) -> std::io::Result<()> {
    let held = if m.held { "  (held)" } else { "" };
    let age = age(now.saturating_sub(m.arrival_unix_ms));
    writeln!(
        out,
        "{}  {age:>6}  {:>9}  {}{held}",
        m.id, m.size, m.reverse_path
    )?;
    for r in &m.recipients {
        writeln!(out, "    {}  {}", r.forward_path, state(&r.state, now))?;
    }
    Ok(())
}

/// Prints one message: its envelope, each recipient's state and last reply,
/// and the headers of its content.
pub fn show(dir: &Path, id: &str, out: &mut impl Write) -> Result<(), String> {
    let id: QueueId = id
        .parse()
        .map_err(|_| format!("{id:?} is not a queue id"))?;
    ask_or_read(dir, &format!("show {id}"), out, |spool, out| {
        write_show(spool, id, now_ms(), out)
    })
}

/// `show`'s text, from `spool`.
pub fn write_show(
    spool: &SpoolHandle,
    id: QueueId,
    now: u64,
    out: &mut impl Write,
) -> Result<(), String> {
    let message = spool
        .get(id)
        .map_err(|e| format!("cannot read {id}: {e}"))?
        .ok_or_else(|| format!("{id} is not in the queue (delivered, bounced or deleted)"))?;
    let entry = &message.entry;
    let e = &entry.envelope;
    let held = if message.held { "  (held)" } else { "" };
    let mut text = format!("id:       {id}{held}\n");
    text += &format!(
        "age:      {}\n",
        age(now.saturating_sub(entry.arrival_unix_ms))
    );
    text += &format!("client:   [{}] helo={}\n", entry.client_ip, entry.helo);
    text += &format!("sender:   {} {}\n", e.reverse_path, e.params);
    text += &format!("size:     {} bytes\n", message.body().len());
    for (r, s) in e.recipients.iter().zip(&message.states) {
        text += &format!(
            "rcpt:     {} {}  {}\n",
            r.forward_path,
            r.params,
            state(s, now)
        );
    }
    let body = message.body();
    let header_end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len(), |p| p + 2);
    text += "headers:\n";
    for line in String::from_utf8_lossy(&body[..header_end]).lines() {
        text += &format!("    {line}\n");
    }
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

/// Upper bounds of `queue summary`'s age columns, in minutes: Postfix
/// `qshape`'s, so a reader of one reads the other.
const AGE_COLUMNS: [u64; 10] = [5, 10, 20, 40, 80, 160, 320, 640, 1280, u64::MAX];

/// Prints the queue's shape as Postfix's `qshape` does: per destination
/// domain, how many messages wait for it (a message counts once per domain
/// it has recipients in that are not yet delivered or failed), by age.
pub fn summary(dir: &Path, filter: &Filter, out: &mut impl Write) -> Result<(), String> {
    ask_or_read(
        dir,
        &format!("summary{}", filter.to_words()),
        out,
        |spool, out| write_summary(spool, filter, now_ms(), out),
    )
}

/// `summary`'s text, from `spool`.
pub fn write_summary(
    spool: &SpoolHandle,
    filter: &Filter,
    now: u64,
    out: &mut impl Write,
) -> Result<(), String> {
    let mut rows: std::collections::HashMap<String, [u64; AGE_COLUMNS.len()]> =
        std::collections::HashMap::new();
    let mut domains: Vec<String> = Vec::new();
    spool
        .scan(ScanOrder::Any, |m| {
            if !filter.matches(&m) {
                return true;
            }
            let minutes = now.saturating_sub(m.arrival_unix_ms) / 60_000;
            let column = AGE_COLUMNS
                .iter()
                .position(|&bound| minutes < bound)
                .unwrap_or(AGE_COLUMNS.len() - 1);
            domains.clear();
            domains.extend(
                m.recipients
                    .iter()
                    .filter(|r| !r.state.is_final())
                    .map(|r| match &r.forward_path {
                        ForwardPath::Postmaster => "(postmaster)".to_owned(),
                        ForwardPath::Path(p) => p.mailbox.domain.text().to_ascii_lowercase(),
                    }),
            );
            domains.sort();
            domains.dedup();
            for domain in domains.drain(..) {
                rows.entry(domain).or_default()[column] += 1;
            }
            true
        })
        .map_err(|e| format!("cannot list the queue: {e}"))?;
    let mut rows: Vec<(String, [u64; AGE_COLUMNS.len()])> = rows.into_iter().collect();
    // Busiest first, as qshape sorts.
    rows.sort_by(|a, b| {
        let total = |r: &[u64]| r.iter().sum::<u64>();
        total(&b.1).cmp(&total(&a.1)).then_with(|| a.0.cmp(&b.0))
    });
    let mut total = [0u64; AGE_COLUMNS.len()];
    for (_, row) in &rows {
        for (t, n) in total.iter_mut().zip(row) {
            *t += n;
        }
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(5);
    let mut text = format!("{:>width$} {:>6}", "", "T");
    for bound in AGE_COLUMNS {
        let label = match bound {
            u64::MAX => "1280+".to_owned(),
            b => b.to_string(),
        };
        text += &format!(" {label:>5}");
    }
    text.push('\n');
    let mut line = |name: &str, row: &[u64]| {
        text += &format!("{name:>width$} {:>6}", row.iter().sum::<u64>());
        for n in row {
            text += &format!(" {n:>5}");
        }
        text.push('\n');
    };
    line("TOTAL", &total);
    for (domain, row) in &rows {
        line(domain, row);
    }
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

/// A recipient's state as `list` and `show` print it (written straight to
/// the output: a million of them are listed at a time).
fn state(state: &RecipientState, now: u64) -> StateText<'_> {
    StateText(state, now)
}

struct StateText<'a>(&'a RecipientState, u64);

impl fmt::Display for StateText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RecipientState::Pending => f.write_str("queued"),
            RecipientState::Delivered => f.write_str("delivered"),
            RecipientState::Failed(reason) => write!(f, "failed: {reason}"),
            RecipientState::Deferred {
                attempts,
                last,
                until_unix_ms,
            } => write!(
                f,
                "deferred after {attempts} attempt(s), next in {}: {last}",
                age(until_unix_ms.saturating_sub(self.1))
            ),
        }
    }
}

/// `45s`, `12m`, `3h`, `2d`: how long a message has been queued.
fn age(ms: u64) -> Age {
    Age(ms)
}

struct Age(u64);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1000;
        let (n, unit) = match s {
            0..60 => (s, "s"),
            60..3600 => (s / 60, "m"),
            3600..86_400 => (s / 3600, "h"),
            _ => (s / 86_400, "d"),
        };
        // Through `pad`, so that `{:>6}` aligns it.
        f.pad(&format!("{n}{unit}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_smtp::{Envelope, MailParams, Recipient, ReversePath};
    use sluice_spool::{Entry, SpoolConfig, Submission};

    #[test]
    fn lists_a_queued_message_with_its_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        let handle = spool.handle();
        let id = handle.new_id();
        let path = |s: &str| sluice_smtp::Path::parse(s.as_bytes()).unwrap();
        let entry = Entry {
            id,
            arrival_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            client_ip: "192.0.2.1".parse().unwrap(),
            helo: "client.example".into(),
            envelope: Envelope {
                reverse_path: ReversePath::Path(path("<alice@example.org>")),
                params: MailParams::default(),
                recipients: vec![
                    Recipient::new(ForwardPath::Path(path("<bob@example.test>"))),
                    Recipient::new(ForwardPath::Path(path("<carol@example.test>"))),
                ],
            }
            .into(),
        };
        handle
            .submit_wait(Submission::new(
                entry,
                b"Subject: x\r\n\r\nhello\r\n".to_vec(),
            ))
            .unwrap();
        let mut out = Vec::new();
        list(dir.path(), &Filter::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let first = format!("{id}  {:>6}  {:>9}  <alice@example.org>\n", "0s", 21);
        assert!(text.starts_with(&first), "{text}");
        assert!(text.contains("    <bob@example.test>  queued\n"), "{text}");
        assert!(
            text.contains("    <carol@example.test>  queued\n"),
            "{text}"
        );
        assert!(text.ends_with("-- 1 message(s), 21 bytes\n"), "{text}");
        spool.shutdown();
    }

    #[test]
    fn summary_counts_messages_per_domain_and_age_like_qshape() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        let handle = spool.handle();
        let path = |s: &str| sluice_smtp::Path::parse(s.as_bytes()).unwrap();
        let now = now_ms();
        // (minutes old, recipients)
        let messages: [(u64, &[&str]); 4] = [
            (1, &["<a@one.test>", "<b@one.test>", "<c@two.test>"]),
            (7, &["<d@one.test>"]),
            (90, &["<e@Two.test>"]),
            (3000, &["<f@one.test>"]),
        ];
        for (minutes, rcpts) in messages {
            let entry = Entry {
                id: handle.new_id(),
                arrival_unix_ms: now - minutes * 60_000,
                client_ip: "192.0.2.1".parse().unwrap(),
                helo: "client.example".into(),
                envelope: Envelope {
                    reverse_path: ReversePath::Path(path("<s@example.org>")),
                    params: MailParams::default(),
                    recipients: rcpts
                        .iter()
                        .map(|r| Recipient::new(ForwardPath::Path(path(r))))
                        .collect(),
                }
                .into(),
            };
            handle
                .submit_wait(Submission::new(entry, b"Subject: x\r\n\r\nhi\r\n".to_vec()))
                .unwrap();
        }
        let mut out = Vec::new();
        summary(dir.path(), &Filter::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"
            ],
            "{text}"
        );
        // one.test: the first message once (two recipients), one of 7
        // minutes, one of 50 hours; two.test: 1 minute and 90 minutes.
        assert_eq!(
            lines[1],
            [
                "TOTAL", "5", "2", "1", "0", "0", "0", "1", "0", "0", "0", "1"
            ],
            "{text}"
        );
        assert_eq!(
            lines[2],
            [
                "one.test", "3", "1", "1", "0", "0", "0", "0", "0", "0", "0", "1"
            ],
            "{text}"
        );
        assert_eq!(
            lines[3],
            [
                "two.test", "2", "1", "0", "0", "0", "0", "1", "0", "0", "0", "0"
            ],
            "{text}"
        );
        spool.shutdown();
    }

    #[test]
    fn ages_read_like_an_operator_would_say_them() {
        assert_eq!(age(59_999).to_string(), "59s");
        assert_eq!(age(60_000).to_string(), "1m");
        assert_eq!(age(7_200_000).to_string(), "2h");
        assert_eq!(age(3 * 86_400_000).to_string(), "3d");
        assert_eq!(format!("{:>6}", age(60_000)), "    1m");
    }

    #[test]
    fn a_missing_directory_is_explained() {
        let e = list(
            Path::new("/nonexistent/spool"),
            &Filter::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.contains("no spool directory"), "{e}");
    }
}
