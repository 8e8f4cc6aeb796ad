//! [`PluginHost`]: the chain as the front end's [`Filter`], run on a pool of
//! filter threads so that no plugin ever runs on an event loop.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use sluice_filter::{ClientInfo, Defer, Filter, Later, Stage, Verdict};
use sluice_smtp::{Envelope, ForwardPath, ReversePath};

use crate::abi::Hook;
use crate::chain::{Outcome, StageCall, StageResult, run_stage, run_stage_inline};
use crate::code_cache::CodeCacheStats;
use crate::context::{ConnInfo, ConnRecord, MessageView, RcptView, TxView};
use crate::engine::{Chain, Services, Ticker};
use crate::error::{LoadError, LoadErrorKind};
use crate::spec::{HostEnv, PluginSpec};

/// The loaded plugin chain, callable from the front end's event loops.
///
/// Hook calls run on `filter_threads` threads in the order the front end
/// made them for each connection; different connections run in parallel, so
/// a plugin blocked on DNS for one client holds one thread, not the server.
pub struct PluginHost {
    inner: Arc<Inner>,
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

struct Inner {
    chain: RwLock<Arc<Chain>>,
    services: Arc<Services>,
    threads: usize,
    /// See [`HostEnv::inline_callers`].
    inline_callers: usize,
    /// Stages run on an event loop, and stages abandoned there (a host call
    /// would have waited) and run again on a filter thread.
    ran_inline: AtomicU64,
    abandoned: AtomicU64,
    conns: Mutex<foldhash::HashMap<u64, Arc<ConnRecord>>>,
    // Last: the engines' epochs must advance while any call may still run.
    ticker: Ticker,
}

struct Job {
    conn: Arc<ConnRecord>,
    ticket: u64,
    work: Work,
}

enum Work {
    Check(StageCall, Later),
    Reset,
    Close,
}

impl PluginHost {
    /// Compiles and checks every plugin (exports, signatures, imports,
    /// `sluice_init`), then starts the filter threads. An error names the
    /// plugin and says why.
    pub fn load(specs: Vec<PluginSpec>, env: HostEnv) -> Result<PluginHost, LoadError> {
        let ticker = Ticker::start()?;
        let services = Arc::new(Services::new(&env, ticker.clock()));
        let threads = env.thread_count();
        let inline_callers = env.inline_callers;
        let chain = Chain::build(specs, &services, threads + inline_callers, &ticker)?;
        let inner = Arc::new(Inner {
            chain: RwLock::new(Arc::new(chain)),
            services,
            threads,
            inline_callers,
            ran_inline: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            conns: Mutex::default(),
            ticker,
        });
        // Unbounded: the front end's connection limit bounds what can queue
        // (one call per connection at a time, plus a reset and a close).
        let (jobs, queue) = crossbeam_channel::unbounded();
        let workers = (0..threads)
            .map(|i| {
                let (inner, queue) = (inner.clone(), queue.clone());
                std::thread::Builder::new()
                    .name(format!("sluice-filter-{i}"))
                    .spawn(move || work(&inner, &queue))
                    .map_err(|e| LoadError::host(LoadErrorKind::Thread(e.to_string())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PluginHost {
            inner,
            jobs: Some(jobs),
            workers,
        })
    }

    /// Loads `specs` as a new chain and swaps it in; calls already running
    /// finish on the old one, and connections stay open. On error the old
    /// chain stays in place and the error says which plugin failed and why.
    pub fn reload(&self, specs: Vec<PluginSpec>) -> Result<(), LoadError> {
        let chain = Chain::build(
            specs,
            &self.inner.services,
            self.inner.threads + self.inner.inline_callers,
            &self.inner.ticker,
        )?;
        *self.inner.chain.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(chain);
        Ok(())
    }

    /// The names of the plugins in the current chain, in order.
    pub fn plugin_names(&self) -> Vec<String> {
        self.inner
            .current()
            .plugins
            .iter()
            .map(|p| p.name.to_string())
            .collect()
    }

    /// What the compiled-code cache ([`HostEnv::code_cache`]) did since
    /// [`PluginHost::load`]; `None` when there is none (not configured, or
    /// its directory could not be used).
    pub fn code_cache_stats(&self) -> Option<CodeCacheStats> {
        self.inner.services.code_cache.as_ref().map(|c| c.stats())
    }

    /// Stages run on the callers' threads (the event loops) so far, and
    /// stages abandoned there because a host call would have waited (then
    /// run on a filter thread).
    pub fn inline_counts(&self) -> (u64, u64) {
        (
            self.inner.ran_inline.load(Ordering::Relaxed),
            self.inner.abandoned.load(Ordering::Relaxed),
        )
    }

    /// How many filter threads run hooks.
    pub fn filter_threads(&self) -> usize {
        self.inner.threads
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The workers outlive every sender but this one: cannot fail.
            let _ = jobs.send(job);
        }
    }
}

impl Inner {
    fn current(&self) -> Arc<Chain> {
        self.chain.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<u64, Arc<ConnRecord>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, client: &ClientInfo) -> Arc<ConnRecord> {
        let record = self
            .conns()
            .entry(client.id)
            .or_insert_with(|| {
                Arc::new(ConnRecord::new(ConnInfo {
                    id: client.id,
                    ip: client.ip(),
                    trusted: client.trusted,
                }))
            })
            .clone();
        record.follow(client);
        record
    }
}

fn work(inner: &Inner, queue: &Receiver<Job>) {
    for job in sluice_sys::parked(queue) {
        job.conn.wait_turn(job.ticket);
        let (conn, ticket) = (job.conn.clone(), job.ticket);
        // A panic in a hook (a host bug) must neither kill the thread nor
        // stall the connection's later calls; the Later it drops answers
        // 451, which is the safe answer.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| run_job(inner, job)));
        if result.is_err() {
            tracing::error!(
                conn = conn.info.id,
                "filter thread caught a panic in a hook call"
            );
        }
        conn.finish_turn(ticket);
    }
}

fn run_job(inner: &Inner, job: Job) {
    let chain = inner.current();
    let hostname = &inner.services.hostname;
    match job.work {
        Work::Check(call, later) => {
            let result = run_stage(&chain, &job.conn, &call, hostname, false);
            // The turn ends before the answer goes out: the client's next
            // command, which the answer lets it send, then finds nothing
            // queued and may run on the event loop. (`work` ends the turn
            // again after a panic; ending it twice is harmless.)
            job.conn.finish_turn(job.ticket);
            later.answer(verdict(call.hook, result));
        }
        Work::Reset => finish_transaction(&chain, &job.conn, hostname),
        Work::Close => {
            let call = StageCall::bare(Hook::Close, String::new());
            run_stage(&chain, &job.conn, &call, hostname, false);
        }
    }
}

/// Runs `stage` on an event loop; if it is abandoned (a host call would
/// wait), puts back what it changed in the connection's state first, so that
/// the filter thread that runs it again starts from the same place.
fn undo_if_abandoned<R>(conn: &ConnRecord, stage: impl FnOnce() -> Option<R>) -> Option<R> {
    let saved = conn.snapshot();
    let result = stage();
    if result.is_none() {
        conn.restore(saved);
    }
    result
}

/// The reset hooks still see the transaction's notes; then they go.
pub(crate) fn finish_transaction(chain: &Chain, conn: &Arc<ConnRecord>, hostname: &str) {
    finish_transaction_in(chain, conn, hostname, false);
}

/// [`finish_transaction`], on an event loop when `inline`: then `false`
/// (and nothing changed) if a reset hook would wait.
fn finish_transaction_in(
    chain: &Chain,
    conn: &Arc<ConnRecord>,
    hostname: &str,
    inline: bool,
) -> bool {
    if chain.has(Hook::Reset) {
        let call = StageCall::bare(Hook::Reset, String::new());
        if inline {
            let ran = undo_if_abandoned(conn, || run_stage_inline(chain, conn, &call, hostname));
            if ran.is_none() {
                return false;
            }
        } else {
            run_stage(chain, conn, &call, hostname, false);
        }
    }
    let mut state = conn.state();
    state.hooks.reset_transaction();
    state.tx = None;
    true
}

pub(crate) fn verdict(hook: Hook, result: StageResult) -> Verdict {
    match result.outcome {
        Outcome::Reject(reply) => Verdict::Reject(reply),
        Outcome::Disconnect(reply) => Verdict::Disconnect(reply),
        Outcome::Continue | Outcome::Accept if hook == Hook::Data && !result.changes.is_empty() => {
            Verdict::Modify(result.changes)
        }
        Outcome::Continue | Outcome::Accept => Verdict::Continue,
    }
}

/// `""` for `<>`, else `local@domain` (the source route is dropped).
pub(crate) fn reverse_path_arg(path: &ReversePath) -> String {
    match path {
        ReversePath::Null => String::new(),
        ReversePath::Path(p) => p.mailbox.text(),
    }
}

/// As the client wrote it between the brackets, source route and quoting
/// included: relay checks must see through `<@relay:user@elsewhere>`.
pub(crate) fn forward_path_arg(path: &ForwardPath) -> String {
    match path {
        ForwardPath::Path(p) if p.source_route.is_empty() => p.mailbox.text(),
        _ => {
            let mut text = path.to_string();
            // In place: the brackets go without a second string.
            if text.starts_with('<') && text.ends_with('>') {
                text.pop();
                text.remove(0);
            }
            text
        }
    }
}

/// The transaction's view for a RCPT or end-of-data stage.
///
/// Grown from the one the transaction's last stage got, kept on the record:
/// within a transaction recipients are only added, so the first `listed` of
/// the envelope's are the view's (MAIL and the end of a transaction forget
/// it). A view a queued job holds is copied before it changes, so the job
/// sees the transaction as it was at its stage.
fn tx_view(record: &ConnRecord, tx: &Envelope, auth: &sluice_filter::AuthResults) -> Arc<TxView> {
    let mut state = record.state();
    let (listed, mut view) = match state.tx.take() {
        Some((listed, view)) if listed <= tx.recipients.len() => (listed, view),
        _ => (
            0,
            Arc::new(TxView {
                mail_from: reverse_path_arg(&tx.reverse_path),
                rcpts: String::new(),
                auth: auth.clone(),
            }),
        ),
    };
    let added = &tx.recipients[listed..];
    if !added.is_empty() || view.auth != *auth {
        let v = Arc::make_mut(&mut view);
        for r in added {
            if !v.rcpts.is_empty() {
                v.rcpts.push('\n');
            }
            match &r.forward_path {
                ForwardPath::Postmaster => v.rcpts.push_str("postmaster"),
                ForwardPath::Path(p) => p.mailbox.push_text(&mut v.rcpts),
            }
        }
        if v.auth != *auth {
            v.auth.clone_from(auth);
        }
    }
    state.tx = Some((tx.recipients.len(), view.clone()));
    view
}

impl Filter for PluginHost {
    fn check(&self, conn: &ClientInfo, stage: Stage<'_>, defer: Defer<'_>) -> Option<Verdict> {
        let chain = self.inner.current();
        let record = self.inner.record(conn);
        let hook = match &stage {
            Stage::Connect => Hook::Connect,
            Stage::Hello { .. } => Hook::Helo,
            Stage::Mail { .. } => Hook::Mail,
            Stage::Rcpt { .. } => Hook::Rcpt,
            Stage::Message { .. } => Hook::Data,
        };
        if hook == Hook::Mail {
            // A new transaction: the last one's view goes here, on the
            // event loop, since the reset that ended it may still be queued.
            record.state().tx = None;
        }
        if !chain.has(hook) {
            // No plugin to run: only the host's own bookkeeping (the HELO
            // name, marks for the message), done here if no call of this
            // connection is queued, else queued behind them.
            let arg = match &stage {
                Stage::Hello { name, .. } => name.to_string(),
                _ => String::new(),
            };
            let call = StageCall::bare(hook, arg);
            let hostname = &self.inner.services.hostname;
            return match record
                .inline_or_ticket(|| run_stage(&chain, &record, &call, hostname, false))
            {
                Ok(result) => Some(verdict(hook, result)),
                Err(ticket) => {
                    self.send(Job {
                        conn: record,
                        ticket,
                        work: Work::Check(call, defer.later()),
                    });
                    None
                }
            };
        }
        // Everything the call needs is copied (the message too, once for the
        // whole chain): it runs on another thread, where the borrowed stage
        // cannot go.
        let call = match stage {
            Stage::Connect => StageCall::bare(hook, String::new()),
            Stage::Hello { name, .. } => StageCall::bare(hook, name.to_string()),
            Stage::Mail {
                reverse_path, auth, ..
            } => {
                let mail_from = reverse_path_arg(reverse_path);
                let view = Arc::new(TxView {
                    mail_from: mail_from.clone(),
                    rcpts: String::new(),
                    auth: auth.clone(),
                });
                // The first RCPT grows this one (a refused MAIL's goes at
                // the next MAIL).
                record.state().tx = Some((0, view.clone()));
                StageCall {
                    hook,
                    arg: mail_from,
                    tx: Some(view),
                    rcpt: None,
                    message: None,
                }
            }
            Stage::Rcpt {
                envelope,
                forward_path,
                auth,
                ..
            } => StageCall {
                hook,
                arg: forward_path_arg(forward_path),
                tx: Some(tx_view(&record, envelope, auth)),
                rcpt: Some(Arc::new(RcptView::of(forward_path))),
                message: None,
            },
            Stage::Message {
                envelope,
                queue_id,
                message,
                auth,
            } => StageCall {
                hook,
                arg: String::new(),
                tx: Some(tx_view(&record, envelope, auth)),
                rcpt: None,
                // Shared with the front end, not copied.
                message: Some(Arc::new(MessageView::new(
                    message.clone(),
                    Some(queue_id.to_owned()),
                ))),
            },
        };
        let ticket = if self.inner.inline_callers > 0 && chain.inline_ok(hook) {
            let hostname = &self.inner.services.hostname;
            let attempt = record.inline_or_ticket(|| {
                undo_if_abandoned(&record, || {
                    run_stage_inline(&chain, &record, &call, hostname)
                })
            });
            match attempt {
                Ok(Some(result)) => {
                    self.inner.ran_inline.fetch_add(1, Ordering::Relaxed);
                    return Some(verdict(hook, result));
                }
                // A lookup to wait for: a filter thread runs it all again.
                Ok(None) => {
                    self.inner.abandoned.fetch_add(1, Ordering::Relaxed);
                    record.ticket()
                }
                Err(ticket) => ticket,
            }
        } else {
            record.ticket()
        };
        self.send(Job {
            conn: record,
            ticket,
            work: Work::Check(call, defer.later()),
        });
        None
    }

    fn reset(&self, conn: &ClientInfo) {
        // No record: no hook has run for this connection, nothing to reset
        // (and a record made here could outlive the connection).
        let Some(record) = self.inner.conns().get(&conn.id).cloned() else {
            return;
        };
        let chain = self.inner.current();
        let hostname = &self.inner.services.hostname;
        let inline = !chain.has(Hook::Reset)
            || (self.inner.inline_callers > 0 && chain.inline_ok(Hook::Reset));
        // Done here, unless a reset hook must wait for something.
        let settle = || inline && finish_transaction_in(&chain, &record, hostname, true);
        let ticket = match record.inline_or_ticket(settle) {
            Ok(true) => return,
            Ok(false) => record.ticket(),
            Err(ticket) => ticket,
        };
        self.send(Job {
            conn: record,
            ticket,
            work: Work::Reset,
        });
    }

    fn close(&self, conn: &ClientInfo) {
        let Some(record) = self.inner.conns().remove(&conn.id) else {
            return;
        };
        let has_close = self.inner.current().has(Hook::Close);
        let ticket = match record.inline_or_ticket(|| ()) {
            // Nothing queued and nothing to run: the record just goes.
            Ok(()) if !has_close => return,
            Ok(()) => record.ticket(),
            Err(ticket) => ticket,
        };
        self.send(Job {
            conn: record,
            ticket,
            work: Work::Close,
        });
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        // Closing the queue lets each worker finish what is queued and exit.
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginHost")
            .field("plugins", &self.plugin_names())
            .field("filter_threads", &self.inner.threads)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_filter::MessageChanges;

    fn result(outcome: Outcome, changes: MessageChanges) -> StageResult {
        StageResult {
            outcome,
            changes,
            runs: Vec::new(),
        }
    }

    #[test]
    fn changes_become_modify_at_end_of_data_only() {
        let marked = MessageChanges {
            headers: vec![("X-Spam-Score".into(), "3".into())],
            discard: false,
            quarantine: true,
        };
        assert_eq!(
            verdict(Hook::Data, result(Outcome::Accept, marked.clone())),
            Verdict::Modify(MessageChanges {
                headers: marked.headers.clone(),
                discard: false,
                quarantine: true,
            })
        );
        assert_eq!(
            verdict(
                Hook::Data,
                result(Outcome::Continue, MessageChanges::default())
            ),
            Verdict::Continue
        );
        assert_eq!(
            verdict(Hook::Rcpt, result(Outcome::Accept, marked)),
            Verdict::Continue
        );
    }

    #[test]
    fn a_view_handed_out_keeps_its_recipients_while_the_next_grows() {
        let record = ConnRecord::new(ConnInfo {
            id: 1,
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            trusted: false,
        });
        let path =
            |text: &str| ForwardPath::Path(sluice_smtp::Path::parse(text.as_bytes()).unwrap());
        let from = sluice_smtp::Path::parse(b"<a@client.test>").unwrap();
        let mut tx = Envelope::new(ReversePath::Path(from), Default::default());
        let auth = sluice_filter::AuthResults::default();
        tx.recipients
            .push(sluice_smtp::Recipient::new(path("<b@x.test>")));
        let first = tx_view(&record, &tx, &auth);
        assert_eq!(first.rcpts, "b@x.test");
        assert_eq!(first.mail_from, "a@client.test");

        // `first` is still held (a queued job's): the next view is a copy.
        tx.recipients
            .push(sluice_smtp::Recipient::new(ForwardPath::Postmaster));
        let second = tx_view(&record, &tx, &auth);
        assert_eq!(second.rcpts, "b@x.test\npostmaster");
        assert_eq!(first.rcpts, "b@x.test");

        // Nothing new: the same view. New results (DKIM at the end of
        // data): a view with them.
        let again = tx_view(&record, &tx, &auth);
        assert!(Arc::ptr_eq(&again, &second));
        let dkim = sluice_filter::AuthResults {
            iprev: Some(sluice_filter::authres::IprevCheck {
                result: sluice_filter::authres::AuthResult::Pass,
                name: Some("client.test".into()),
            }),
            ..Default::default()
        };
        let checked = tx_view(&record, &tx, &dkim);
        assert_eq!(checked.auth, dkim);
        assert_eq!(checked.rcpts, "b@x.test\npostmaster");
        assert_eq!(second.auth, auth);

        // An envelope shorter than the view is another transaction's.
        tx.recipients.clear();
        tx.recipients
            .push(sluice_smtp::Recipient::new(path("<c@x.test>")));
        assert_eq!(tx_view(&record, &tx, &auth).rcpts, "c@x.test");
    }

    #[test]
    fn forward_paths_keep_what_the_client_wrote() {
        let path = sluice_smtp::Path::parse(b"<@relay.test,@b.test:\"odd user\"@x.test>").unwrap();
        assert_eq!(
            forward_path_arg(&ForwardPath::Path(path.clone())),
            "@relay.test,@b.test:\"odd user\"@x.test"
        );
        assert_eq!(forward_path_arg(&ForwardPath::Postmaster), "postmaster");
        assert_eq!(
            reverse_path_arg(&ReversePath::Path(path)),
            "\"odd user\"@x.test"
        );
        assert_eq!(reverse_path_arg(&ReversePath::Null), "");
    }
}
