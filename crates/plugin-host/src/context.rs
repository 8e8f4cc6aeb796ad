//! The state hooks see: per connection and per transaction on the host side
//! (plugins keep none of their own), and per call in the instance's store.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use sluice_filter::AuthResults;
use sluice_sys::Content;
use wasmtime::{Memory, ResourceLimiter};

use crate::abi::Hook;
use crate::engine::Services;
use crate::hook_state::HookState;

/// What the host knows of a client connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub id: u64,
    pub ip: IpAddr,
    pub trusted: bool,
}

/// One connection's host-side state, and the order its hook calls run in.
#[derive(Debug)]
pub(crate) struct ConnRecord {
    pub info: ConnInfo,
    /// `conn.ip`, written once: plugins ask for it with every message.
    ip_text: Box<str>,
    state: Mutex<ConnState>,
    order: Mutex<Order>,
    turn: Condvar,
}

/// Tickets, issued by the event loop in the order the front end called us,
/// and served in that order by whichever filter threads pick the jobs up: a
/// reset must not overtake the hook before it, nor a close the last check.
#[derive(Debug, Default)]
struct Order {
    issued: u64,
    done: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// The TLS session and the login, as of the last hook called: both can
    /// start in the middle of a connection (STARTTLS, AUTH).
    pub tls: Option<sluice_filter::TlsInfo>,
    pub login: Option<String>,
    pub hooks: HookState,
    /// The transaction's view as its last stage (MAIL, RCPT, end of data)
    /// got it, with how many of the envelope's recipients it lists: the
    /// next stage adds the recipients since instead of writing them all
    /// again.
    pub tx: Option<(usize, Arc<TxView>)>,
}

impl ConnRecord {
    pub fn new(info: ConnInfo) -> Self {
        ConnRecord {
            ip_text: info.ip.to_string().into(),
            info,
            state: Mutex::default(),
            order: Mutex::default(),
            turn: Condvar::new(),
        }
    }

    /// Keeps the TLS session and the login as the front end knows them now.
    pub fn follow(&self, client: &sluice_filter::ClientInfo) {
        let mut state = self.state();
        if state.tls != client.tls {
            state.tls.clone_from(&client.tls);
        }
        if state.login != client.login {
            state.login.clone_from(&client.login);
        }
    }

    pub fn state(&self) -> MutexGuard<'_, ConnState> {
        // Updates are single assignments or inserts: a panic on another
        // thread cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn order(&self) -> MutexGuard<'_, Order> {
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` at once if no job of this connection is queued or running
    /// (the caller is the event loop that owns the connection, so none can
    /// be added meanwhile); otherwise hands out a ticket for a queued job.
    pub fn inline_or_ticket<R>(&self, f: impl FnOnce() -> R) -> Result<R, u64> {
        let mut order = self.order();
        if order.issued == order.done {
            return Ok(f());
        }
        order.issued += 1;
        Err(order.issued)
    }

    /// What the hooks may change, to put back if a hook run on an event
    /// loop is abandoned (and run again on a filter thread).
    pub fn snapshot(&self) -> HookState {
        self.state().hooks.clone()
    }

    pub fn restore(&self, saved: HookState) {
        self.state().hooks = saved;
    }

    /// A ticket for a queued job.
    pub fn ticket(&self) -> u64 {
        let mut order = self.order();
        order.issued += 1;
        order.issued
    }

    /// Blocks until every job with an earlier ticket has finished. Jobs are
    /// taken from one FIFO channel, so those are already running on other
    /// threads: this cannot deadlock.
    pub fn wait_turn(&self, ticket: u64) {
        let mut order = self.order();
        while order.done + 1 < ticket {
            order = self.turn.wait(order).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn finish_turn(&self, ticket: u64) {
        let mut order = self.order();
        order.done = order.done.max(ticket);
        drop(order);
        self.turn.notify_all();
    }
}

/// The envelope as far as it is known at MAIL, RCPT and end of data.
#[derive(Debug, Clone, Default)]
pub(crate) struct TxView {
    /// `""` for `<>`, else `local@domain`.
    pub mail_from: String,
    /// Accepted forward-paths so far, one per line.
    pub rcpts: String,
    /// What email authentication found so far (SPF from MAIL on; DKIM,
    /// ARC and DMARC at the end of data).
    pub auth: AuthResults,
}

/// The forward-path of the RCPT hook in parts, as the front end's parser
/// read it, so that a plugin judges exactly the address the server took
/// (`rcpt.local_part`, `rcpt.domain`) instead of parsing the text again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RcptView {
    /// The local part, unquoted (`john doe`, `user%remote.test`).
    pub local_part: String,
    /// The domain, or an address literal in brackets; `None` for
    /// `<Postmaster>`, which has none.
    pub domain: Option<String>,
}

impl RcptView {
    pub fn of(path: &sluice_smtp::ForwardPath) -> RcptView {
        match path {
            sluice_smtp::ForwardPath::Postmaster => RcptView {
                local_part: "postmaster".into(),
                domain: None,
            },
            sluice_smtp::ForwardPath::Path(p) => RcptView {
                local_part: p.mailbox.local_part.unquoted().into_owned(),
                domain: Some(p.mailbox.domain.text()),
            },
        }
    }
}

/// The message at end of data, shared by every plugin of the chain (and
/// with the front end, which owns it: nothing is copied for the plugins).
#[derive(Debug)]
pub(crate) struct MessageView {
    pub bytes: Arc<Content>,
    pub queue_id: Option<String>,
    headers: OnceLock<Vec<(String, String)>>,
}

impl MessageView {
    pub fn new(bytes: Arc<Content>, queue_id: Option<String>) -> Self {
        MessageView {
            bytes,
            queue_id,
            headers: OnceLock::new(),
        }
    }

    /// The `index`-th field named `name` (any case), value unfolded.
    pub fn header(&self, name: &str, index: usize) -> Option<&str> {
        self.headers
            .get_or_init(|| crate::message::parse_headers(&self.bytes))
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .nth(index)
            .map(|(_, v)| v.as_str())
    }
}

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// 0 error, 1 warn, 2 info, 3 debug, 4 trace.
    pub level: u8,
    pub text: String,
}

/// Bounds on what one hook call may pile up on the host.
pub(crate) const MAX_LOG_LINES: usize = 64;
pub(crate) const MAX_LOG_LINE: usize = 2048;
pub(crate) const MAX_ADDED_HEADERS: usize = 64;
pub(crate) const MAX_SCORES: usize = 256;

/// Inputs and outputs of one hook call.
#[derive(Debug)]
pub(crate) struct CallCtx {
    pub conn: Arc<ConnRecord>,
    pub hook: Hook,
    pub tx: Option<Arc<TxView>>,
    /// Set for the RCPT hook only.
    pub rcpt: Option<Arc<RcptView>>,
    pub message: Option<Arc<MessageView>>,
    /// Read on the first `now_ms` of the call, then frozen for the rest of
    /// it (most hooks never ask, and a clock read is not free).
    pub now_ms: Option<i64>,
    /// Keep log lines for a test report (they go to tracing regardless).
    pub capture_logs: bool,
    /// Running on an event loop: a host call that would wait must not,
    /// and raises [`HostCallError::WouldBlock`](crate::error::HostCallError) instead.
    pub inline: bool,
    /// Log lines of an inline call, held until its stage is over.
    pub held_logs: Vec<LogLine>,
    pub reply: Option<(i32, String)>,
    pub headers: Vec<(String, String)>,
    pub scores: Vec<(String, f64)>,
    pub logs: Vec<LogLine>,
}

pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl CallCtx {
    pub fn new(
        conn: Arc<ConnRecord>,
        hook: Hook,
        tx: Option<Arc<TxView>>,
        message: Option<Arc<MessageView>>,
        capture_logs: bool,
    ) -> Self {
        CallCtx {
            conn,
            hook,
            tx,
            rcpt: None,
            message,
            now_ms: None,
            capture_logs,
            inline: false,
            held_logs: Vec::new(),
            reply: None,
            headers: Vec::new(),
            scores: Vec::new(),
            logs: Vec::new(),
        }
    }

    pub fn now_ms(&mut self) -> i64 {
        *self.now_ms.get_or_insert_with(wall_clock_ms)
    }

    /// The value of a `get_property` name, if it has one: borrowed where
    /// the call's views hold it (the hot ones, asked at every RCPT), made
    /// where it has to be.
    pub fn property<'a>(&'a self, name: &[u8], services: &'a Services) -> Option<Cow<'a, str>> {
        let info = &self.conn.info;
        let owned = |value: Option<String>| value.map(Cow::Owned);
        Some(match name {
            b"conn.ip" => Cow::Borrowed(&*self.conn.ip_text),
            b"conn.trusted" => flag(info.trusted),
            b"conn.auth" => return owned(self.conn.state().login.clone()),
            b"conn.tls" => flag(self.conn.state().tls.is_some()),
            b"conn.tls_version" => {
                return owned(self.conn.state().tls.as_ref().map(|t| t.version.clone()));
            }
            b"conn.tls_cipher" => {
                return owned(self.conn.state().tls.as_ref().map(|t| t.cipher.clone()));
            }
            b"conn.tls_sni" => return owned(self.conn.state().tls.as_ref()?.sni.clone()),
            b"conn.helo" => {
                return owned(self.conn.state().hooks.helo.as_deref().map(str::to_owned));
            }
            b"server.hostname" => Cow::Borrowed(services.hostname.as_str()),
            b"tx.id" => Cow::Borrowed(self.message.as_ref()?.queue_id.as_deref()?),
            b"tx.mail_from" => Cow::Borrowed(self.tx.as_ref()?.mail_from.as_str()),
            b"tx.rcpts" => Cow::Borrowed(self.tx.as_ref()?.rcpts.as_str()),
            b"rcpt.local_part" => Cow::Borrowed(self.rcpt.as_ref()?.local_part.as_str()),
            b"rcpt.domain" => Cow::Borrowed(self.rcpt.as_ref()?.domain.as_deref()?),
            b"tx.score" => {
                let state = self.conn.state();
                let total =
                    state.hooks.score_total() + self.scores.iter().map(|(_, s)| s).sum::<f64>();
                Cow::Owned(format_score(total))
            }
            b"tx.symbols" => {
                let state = self.conn.state();
                // One line per score, written where they go.
                let mut lines = String::new();
                for (i, (sym, s)) in state.hooks.scores().chain(&self.scores).enumerate() {
                    if i > 0 {
                        lines.push('\n');
                    }
                    lines.push_str(sym);
                    lines.push(' ');
                    push_score(&mut lines, *s);
                }
                Cow::Owned(lines)
            }
            b"msg.size" => Cow::Owned(self.message.as_ref()?.bytes.len().to_string()),
            name if name.starts_with(b"auth.") => {
                return owned(auth_property(&self.tx.as_ref()?.auth, name));
            }
            _ => return None,
        })
    }
}

/// The `auth.*` properties (ABI.md): keywords and names separated by
/// spaces, one line per DKIM signature; no value for a check that did not
/// run.
fn auth_property(auth: &AuthResults, name: &[u8]) -> Option<String> {
    let spf = |c: &sluice_filter::authres::SpfCheck| format!("{} {}", c.result, c.domain);
    Some(match name {
        b"auth.spf" => spf(auth.spf()?),
        b"auth.spf_helo" => spf(auth.spf_helo.as_ref()?),
        b"auth.dkim" => {
            if auth.dkim.is_empty() {
                return None;
            }
            let lines: Vec<String> = auth
                .dkim
                .iter()
                .map(|d| format!("{} {} {}", d.result, d.domain, d.selector))
                .collect();
            lines.join("\n")
        }
        b"auth.dmarc" => {
            let d = auth.dmarc.as_ref()?;
            format!("{} {} {}", d.result, d.policy, d.header_from)
        }
        b"auth.arc" => auth.arc?.to_string(),
        b"auth.iprev" => {
            let i = auth.iprev.as_ref()?;
            match &i.name {
                Some(name) => format!("{} {name}", i.result),
                None => i.result.to_string(),
            }
        }
        _ => return None,
    })
}

fn flag(b: bool) -> Cow<'static, str> {
    Cow::Borrowed(if b { "1" } else { "0" })
}

/// Scores as `X-Spam-Status` and logs show them: at most 3 decimals, no
/// trailing zeros.
pub fn format_score(score: f64) -> String {
    let mut text = String::new();
    push_score(&mut text, score);
    text
}

/// Appends [`format_score`]'s text to `out`.
pub(crate) fn push_score(out: &mut String, score: f64) {
    use std::fmt::Write as _;
    let start = out.len();
    // Writing to a String cannot fail.
    let _ = write!(out, "{score:.3}");
    let kept = out[start..]
        .trim_end_matches('0')
        .trim_end_matches('.')
        .len();
    out.truncate(start + kept);
    if &out[start..] == "-0" {
        out.truncate(start);
        out.push('0');
    }
}

/// The data of every instance's store.
pub(crate) struct HostState {
    pub services: Arc<Services>,
    pub plugin: Arc<str>,
    pub memory: Option<Memory>,
    pub memory_limit: usize,
    /// Set when the plugin asked for more memory than its limit, so the
    /// resulting trap can be reported as what it is.
    pub memory_exceeded: bool,
    /// Set for each hook call; `None` while `sluice_init` runs.
    pub call: Option<CallCtx>,
    /// Epoch tick at which plugin code must stop; moved on by the time the
    /// call (or `sluice_init`) spends blocked in host calls.
    pub deadline: u64,
    pub blocked: Duration,
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            // Trap rather than let memory.grow return -1: a plugin out of
            // memory cannot do its job, and the instance must be replaced.
            self.memory_exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} MiB exceeded",
                self.memory_limit >> 20
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_print_short() {
        assert_eq!(format_score(5.0), "5");
        assert_eq!(format_score(2.5), "2.5");
        assert_eq!(format_score(-0.0001), "0");
        assert_eq!(format_score(1.23456), "1.235");
        assert_eq!(format_score(-1.5), "-1.5");
        assert_eq!(format_score(10.0), "10");
        let mut out = "RATE ".to_owned();
        push_score(&mut out, -0.0004);
        assert_eq!(out, "RATE 0");
    }

    /// A connection's record: an untrusted client.
    fn stranger() -> ConnRecord {
        ConnRecord::new(ConnInfo {
            id: 1,
            ip: "192.0.2.1".parse().unwrap(),
            trusted: false,
        })
    }

    #[test]
    fn a_snapshot_keeps_its_notes_when_the_stage_writes_after_it() {
        let record = stranger();
        record.state().hooks.conn_notes.set(b"seen", b"helo");
        let saved = record.snapshot();
        record.state().hooks.conn_notes.set(b"seen", b"mail");
        record.state().hooks.tx_notes.set(b"new", b"1");
        assert_eq!(
            record.state().hooks.conn_notes.get(b"seen"),
            Some(&b"mail"[..])
        );
        record.restore(saved);
        assert_eq!(
            record.state().hooks.conn_notes.get(b"seen"),
            Some(&b"helo"[..])
        );
        assert_eq!(record.state().hooks.tx_notes.get(b"new"), None);
    }

    #[test]
    fn a_snapshot_keeps_its_scores_when_the_stage_adds_after_it() {
        let record = stranger();
        let score = |name: &str, value: f64| (name.to_owned(), value);
        record
            .state()
            .hooks
            .conn_scores
            .extend_from_slice(&[score("HELO_BARE", 1.5)]);
        let saved = record.snapshot();
        record
            .state()
            .hooks
            .tx_scores
            .extend_from_slice(&[score("BAD_RCPT", 3.0)]);
        record
            .state()
            .hooks
            .conn_scores
            .extend_from_slice(&[score("LATE", 0.25)]);
        assert_eq!(record.state().hooks.score_total(), 4.75);
        record.restore(saved);
        let state = record.state();
        let kept: Vec<_> = state.hooks.scores().cloned().collect();
        assert_eq!(kept, vec![score("HELO_BARE", 1.5)]);
    }

    #[test]
    fn tickets_run_in_order() {
        let record = Arc::new(stranger());
        assert_eq!(record.inline_or_ticket(|| 7), Ok(7));
        let first = record.ticket();
        let second = record.ticket();
        assert_eq!(record.inline_or_ticket(|| ()), Err(3));
        let log = Arc::new(Mutex::new(Vec::new()));
        let waiter = {
            let (record, log) = (record.clone(), log.clone());
            std::thread::spawn(move || {
                record.wait_turn(second);
                log.lock().unwrap().push(second);
                record.finish_turn(second);
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(log.lock().unwrap().is_empty(), "second ran before first");
        record.wait_turn(first);
        log.lock().unwrap().push(first);
        record.finish_turn(first);
        waiter.join().unwrap();
        assert_eq!(*log.lock().unwrap(), vec![first, second]);
    }
}
