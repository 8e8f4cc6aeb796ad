//! Running one stage through the chain: plugins in configuration order, the
//! first REJECT/TEMPFAIL/DISCONNECT ends the stage, ACCEPT skips the rest of
//! it, scores add up on the host, headers are collected for the message.

use std::sync::Arc;

use sluice_filter::MessageChanges;
use sluice_smtp::{EnhancedCode, Reply, Stage};

use crate::abi::{Hook, RawVerdict};
use crate::context::{CallCtx, ConnRecord, LogLine, MessageView, RcptView, TxView, format_score};
use crate::engine::Chain;
use crate::error::HookError;
use crate::spec::OnError;

/// The arguments of one stage.
#[derive(Debug, Clone)]
pub(crate) struct StageCall {
    pub hook: Hook,
    /// The string hooks' argument (HELO name, reverse-path, forward-path).
    pub arg: String,
    pub tx: Option<Arc<TxView>>,
    /// The recipient of the RCPT hook, as the front end parsed it.
    pub rcpt: Option<Arc<RcptView>>,
    pub message: Option<Arc<MessageView>>,
}

impl StageCall {
    /// A call with no transaction, recipient or message: connect, HELO,
    /// reset, close.
    pub(crate) fn bare(hook: Hook, arg: String) -> StageCall {
        StageCall {
            hook,
            arg,
            tx: None,
            rcpt: None,
            message: None,
        }
    }
}

/// How a stage ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every plugin said CONTINUE (or failed with `on_error = "continue"`).
    Continue,
    /// A plugin said ACCEPT, DISCARD or QUARANTINE: the rest were skipped.
    Accept,
    Reject(Reply),
    Disconnect(Reply),
}

/// One plugin's part in a stage, as a test report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRun {
    pub plugin: String,
    /// The verdict, or why the hook failed.
    pub result: Result<Option<RawVerdict>, HookError>,
    /// The reply `set_reply` chose, as given.
    pub reply: Option<(i32, String)>,
    pub scores: Vec<(String, f64)>,
    pub headers: Vec<(String, String)>,
    pub logs: Vec<LogLine>,
}

#[derive(Debug, Clone)]
pub(crate) struct StageResult {
    pub outcome: Outcome,
    pub changes: MessageChanges,
    /// Filled only when the caller asked to capture (test runs).
    pub runs: Vec<PluginRun>,
}

/// Runs `call.hook` on every plugin that has it. Must run in the
/// connection's turn (no other hook of the same connection at the same time).
pub(crate) fn run_stage(
    chain: &Chain,
    conn: &Arc<ConnRecord>,
    call: &StageCall,
    hostname: &str,
    capture: bool,
) -> StageResult {
    match run_stage_in(chain, conn, call, hostname, capture, false) {
        Some(result) => result,
        // Only a call on an event loop is abandoned; a filter thread waits.
        None => StageResult {
            outcome: Outcome::Reject(Reply::new(
                451,
                Some(EnhancedCode::new(4, 3, 0)),
                "Filter failed; try again later",
            )),
            changes: MessageChanges::default(),
            runs: Vec::new(),
        },
    }
}

/// [`run_stage`] on an event loop: `None` when a plugin made a host call
/// that would wait (then whatever the stage changed in `conn` must be put
/// back, and the stage run again on a filter thread).
pub(crate) fn run_stage_inline(
    chain: &Chain,
    conn: &Arc<ConnRecord>,
    call: &StageCall,
    hostname: &str,
) -> Option<StageResult> {
    run_stage_in(chain, conn, call, hostname, false, true)
}

fn run_stage_in(
    chain: &Chain,
    conn: &Arc<ConnRecord>,
    call: &StageCall,
    hostname: &str,
    capture: bool,
    inline: bool,
) -> Option<StageResult> {
    let hook = call.hook;
    // On an event loop, what the stage logs waits for its end: an abandoned
    // stage logs nothing, and its rerun on a filter thread logs once.
    let mut held: Vec<Held> = Vec::new();
    if hook == Hook::Helo {
        conn.state().hooks.helo = Some(call.arg.as_str().into());
    }
    let mut outcome = Outcome::Continue;
    let mut changes = MessageChanges::default();
    let mut runs = Vec::new();
    let stage = match hook {
        Hook::Connect => Some(Stage::Connect),
        Hook::Helo => Some(Stage::Hello),
        Hook::Mail => Some(Stage::Mail),
        Hook::Rcpt => Some(Stage::Rcpt),
        Hook::Data => Some(Stage::EndOfData),
        Hook::Reset | Hook::Close => None,
    };
    let mut ran_any = false;
    for (index, plugin) in chain.plugins.iter().enumerate() {
        if !plugin.has(hook) {
            continue;
        }
        ran_any = true;
        let mut ctx = CallCtx::new(
            conn.clone(),
            hook,
            call.tx.clone(),
            call.message.clone(),
            capture,
        );
        ctx.rcpt = call.rcpt.clone();
        ctx.inline = inline;
        let started = std::time::Instant::now();
        let (result, mut ctx) = plugin.call(hook, &call.arg, ctx, started);
        let took = started.elapsed();
        held.extend(
            ctx.held_logs
                .drain(..)
                .map(|line| Held::Plugin(plugin.name.clone(), line)),
        );
        sluice_metrics::filter_hook(index, stage, took);
        if inline {
            plugin.ran_inline(took);
            if matches!(result, Err(HookError::WouldBlock)) {
                sluice_metrics::filter_stage(sluice_metrics::StageRan::Abandoned);
                return None;
            }
        }
        let result = result.and_then(|raw| match raw {
            None => Ok(None),
            Some(v) => RawVerdict::from_i32(v)
                .map(Some)
                .ok_or(HookError::NotAVerdict(v)),
        });
        if capture {
            runs.push(PluginRun {
                plugin: plugin.name.to_string(),
                result: result.clone(),
                reply: ctx.reply.clone(),
                scores: ctx.scores.clone(),
                headers: ctx.headers.clone(),
                logs: ctx.logs.clone(),
            });
        }
        let verdict = match result {
            Err(why) => {
                if inline {
                    held.push(Held::Failed(plugin.name.clone(), why));
                } else {
                    hook_failed(&plugin.name, hook, conn, &why);
                }
                match plugin.on_error {
                    OnError::Continue => continue,
                    OnError::Tempfail if hook.has_verdict() => {
                        outcome = Outcome::Reject(Reply::new(
                            451,
                            Some(EnhancedCode::new(4, 3, 0)),
                            format!("Filter {} failed; try again later", plugin.name),
                        ));
                        break;
                    }
                    // Reset and close have no answer to fail.
                    OnError::Tempfail => continue,
                }
            }
            Ok(None) => continue,
            Ok(Some(verdict)) => verdict,
        };
        // Only a call that succeeded changes anything.
        commit(conn, hook, &ctx, &mut changes);
        match verdict {
            RawVerdict::Continue => {}
            RawVerdict::Accept => {
                outcome = Outcome::Accept;
                break;
            }
            RawVerdict::Reject | RawVerdict::Tempfail | RawVerdict::Disconnect => {
                let reply = reply_for(verdict, ctx.reply, hostname);
                tracing::info!(plugin = %plugin.name, hook = hook.name(), conn = conn.info.id, reply = %reply, "refused by plugin");
                outcome = match verdict {
                    RawVerdict::Disconnect => Outcome::Disconnect(reply),
                    _ => Outcome::Reject(reply),
                };
                break;
            }
            RawVerdict::Discard | RawVerdict::Quarantine => {
                let mut state = conn.state();
                // Before the message exists, the mark waits for it: from
                // connect or HELO for every transaction, else for this one.
                let marks = match hook {
                    Hook::Connect | Hook::Helo => &mut state.hooks.conn_marks,
                    _ => &mut state.hooks.tx_marks,
                };
                if verdict == RawVerdict::Discard {
                    marks.discard = true;
                } else {
                    marks.quarantine = true;
                }
                outcome = Outcome::Accept;
                break;
            }
        }
    }
    if hook == Hook::Data && !matches!(outcome, Outcome::Reject(_) | Outcome::Disconnect(_)) {
        let state = &conn.state().hooks;
        changes.discard = state.conn_marks.discard || state.tx_marks.discard;
        changes.quarantine = state.conn_marks.quarantine || state.tx_marks.quarantine;
    } else {
        changes.headers.clear();
    }
    if ran_any {
        sluice_metrics::filter_stage(if inline {
            sluice_metrics::StageRan::EventLoop
        } else {
            sluice_metrics::StageRan::FilterThread
        });
    }
    for line in held {
        match line {
            Held::Plugin(plugin, line) => {
                crate::hostfns::emit_plugin_log(&plugin, line.level, &line.text);
            }
            Held::Failed(plugin, why) => hook_failed(&plugin, hook, conn, &why),
        }
    }
    Some(StageResult {
        outcome,
        changes,
        runs,
    })
}

/// A log line of an inline stage, held until the stage is over.
enum Held {
    Plugin(Arc<str>, LogLine),
    Failed(Arc<str>, HookError),
}

fn hook_failed(plugin: &str, hook: Hook, conn: &ConnRecord, why: &HookError) {
    tracing::warn!(plugin = %plugin, hook = hook.name(), conn = conn.info.id, "hook failed: {why}");
}

fn commit(conn: &ConnRecord, hook: Hook, ctx: &CallCtx, changes: &mut MessageChanges) {
    if !ctx.scores.is_empty() {
        let mut state = conn.state();
        let scores = match hook {
            Hook::Connect | Hook::Helo => &mut state.hooks.conn_scores,
            _ => &mut state.hooks.tx_scores,
        };
        scores.extend_from_slice(&ctx.scores);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let symbols: Vec<String> = ctx
                .scores
                .iter()
                .map(|(s, v)| format!("{s}={}", format_score(*v)))
                .collect();
            tracing::debug!(conn = conn.info.id, hook = hook.name(), symbols = %symbols.join(","), "scores");
        }
    }
    changes.headers.extend(ctx.headers.iter().cloned());
}

/// The reply for a refusal: the plugin's own if its class fits the verdict,
/// else the ABI's default.
pub(crate) fn reply_for(
    verdict: RawVerdict,
    chosen: Option<(i32, String)>,
    hostname: &str,
) -> Reply {
    let classes: &[i32] = match verdict {
        RawVerdict::Reject => &[5],
        RawVerdict::Tempfail => &[4],
        _ => &[4, 5],
    };
    if let Some((code, text)) = chosen
        && (200..600).contains(&code)
        && classes.contains(&(code / 100))
    {
        let class = (code / 100) as u8;
        let (enhanced, text) = match split_enhanced(&text) {
            Some((e, rest)) if e.class == class => (e, rest),
            Some((_, rest)) => (default_enhanced(class), rest),
            None => (default_enhanced(class), text.as_str()),
        };
        return Reply::new(code as u16, Some(enhanced), truncate(text, 400).to_owned());
    }
    match verdict {
        RawVerdict::Reject => {
            Reply::new(550, Some(EnhancedCode::new(5, 7, 1)), "Rejected by policy")
        }
        RawVerdict::Tempfail => {
            Reply::new(451, Some(EnhancedCode::new(4, 7, 1)), "Try again later")
        }
        _ => Reply::new(
            421,
            Some(EnhancedCode::new(4, 7, 0)),
            format!("{hostname} Closing connection"),
        ),
    }
}

fn default_enhanced(class: u8) -> EnhancedCode {
    EnhancedCode::new(class, 7, 1)
}

/// `5.7.1 Relay access denied` → (5.7.1, "Relay access denied").
fn split_enhanced(text: &str) -> Option<(EnhancedCode, &str)> {
    let (code, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = code.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
        return None;
    }
    Some((EnhancedCode::new(class, subject, detail), rest.trim_start()))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_keeps_a_matching_code_and_enhanced_code() {
        let r = reply_for(
            RawVerdict::Reject,
            Some((554, "5.7.1 Relay access denied".into())),
            "mx",
        );
        assert_eq!(r.to_string().trim_end(), "554 5.7.1 Relay access denied");
    }

    #[test]
    fn reply_ignores_a_code_of_the_wrong_class() {
        let r = reply_for(RawVerdict::Reject, Some((451, "4.7.1 later".into())), "mx");
        assert_eq!(r.code(), 550);
        let r = reply_for(RawVerdict::Tempfail, Some((550, "5.7.1 no".into())), "mx");
        assert_eq!(r.code(), 451);
        assert_eq!(r.enhanced(), Some(EnhancedCode::new(4, 7, 1)));
    }

    #[test]
    fn reply_replaces_a_mismatched_enhanced_code() {
        let r = reply_for(
            RawVerdict::Tempfail,
            Some((450, "5.1.1 mailbox busy".into())),
            "mx",
        );
        assert_eq!(r.code(), 450);
        assert_eq!(r.enhanced(), Some(EnhancedCode::new(4, 7, 1)));
        assert_eq!(r.text(), "mailbox busy");
    }

    #[test]
    fn disconnect_defaults_to_421_with_the_hostname() {
        let r = reply_for(RawVerdict::Disconnect, None, "mx.example.test");
        assert_eq!(r.code(), 421);
        assert!(r.text().contains("mx.example.test"));
        let r = reply_for(
            RawVerdict::Disconnect,
            Some((554, "5.7.1 go away".into())),
            "mx",
        );
        assert_eq!(r.code(), 554);
    }
}
