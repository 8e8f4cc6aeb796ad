//! What a connection's events become: the recipient policy, filter calls
//! (answered at once or later through the inbox), and the hand-off to the
//! spool whose completion carries the `250`. SMTP AUTH's hand-off to the
//! password workers is in `auth`, the email-authentication checks' (SPF,
//! DKIM, DMARC) and DKIM signing in `msgauth`.

use std::sync::Arc;
use std::time::Instant;

use sluice_filter::{Defer, Later, MessageChanges, Stage as FilterStage, Ticket, Verdict};
use sluice_smtp::server::{Decision, Event};
use sluice_smtp::{EnhancedCode, Reply, Stage};
use sluice_spool::{QueueId, SpoolError};

use super::{Completion, CompletionKind, EventLoop, conn_mut};
use crate::conn::ContentError;
use crate::conn::Waiting as Wait;

/// `451 4.3.0` for a state the front end should never be in: refusing is
/// always safe, accepting is not (the relay backstop must not be skipped).
fn impossible(what: &str) -> Reply {
    tracing::error!("front end in an impossible state: {what}; refusing");
    sluice_filter::tempfail("Local error in processing; try again later")
}

impl EventLoop {
    pub(super) fn on_event(&mut self, slot: usize) {
        let conn = self.conns[slot].as_mut().expect("caller checked");
        // Only the kind of event matters here (call_filter reads the rest
        // where it lies), so nothing is cloned on this per-command path.
        let Some(event) = conn.session.event() else {
            return;
        };
        match event {
            // Filters first at RCPT: the relay-refusal plugin must see a
            // disguised relay attempt (`user%remote.test@local`) before the
            // mailbox check calls it an unknown local user.
            Event::Mail { reverse_path, .. } => {
                // RFC 6409 §6.1: a user sends as the addresses it owns.
                let senders = self.shared.auth.as_ref().map(|a| &a.senders);
                if let (Some(user), Some(local)) = (&conn.local, &self.shared.local) {
                    if let Some(own) = local.correct_reverse_path(user, reverse_path, senders) {
                        tracing::info!(conn = conn.info.id, uid = user.uid, login = %user.login, given = %reverse_path, sender = %own, "sender rewritten");
                        let _ = conn.session.set_reverse_path(own);
                    }
                    self.check_sender(slot);
                    return;
                }
                let refusal = match (&conn.info.login, senders) {
                    (Some(login), Some(senders)) => senders.check_mail(login, reverse_path),
                    _ => None,
                };
                match refusal {
                    Some(reply) => {
                        tracing::info!(conn = conn.info.id, client = %conn.ip, login = conn.info.login.as_deref().unwrap_or(""), result = %reply, "sender refused");
                        let _ = conn.decide(Decision::Reject(reply));
                    }
                    None => self.check_sender(slot),
                }
            }
            Event::Hello { .. } | Event::Rcpt { .. } => {
                let stage = event.stage();
                self.call_filter(slot, stage);
            }
            Event::Auth { .. } => self.check_auth(slot),
            Event::StartData => {
                let id = self.shared.spool.new_id();
                let decision = match conn.start_message(id, &self.shared.session.hostname) {
                    Ok(()) => Decision::Accept,
                    Err(e) => Decision::Reject(impossible(&e.to_string())),
                };
                let _ = conn.decide(decision);
            }
            Event::Message => match conn.take_content() {
                Ok(message) => {
                    conn.data_ended = Some(Instant::now());
                    if let (Some(_), Some(id), Some(tx)) =
                        (&conn.local, conn.queue_id(), conn.session.transaction())
                    {
                        conn.added_fields = crate::local::missing_fields(
                            &message,
                            &tx.reverse_path,
                            &self.shared.session.hostname,
                            &id.to_string(),
                            std::time::SystemTime::now(),
                        );
                    } else if let (Some(login), Some(auth), Some(id)) =
                        (&conn.info.login, &self.shared.auth, conn.queue_id())
                    {
                        let fixed = crate::auth::fix_message(
                            &message,
                            login,
                            &auth.senders,
                            &self.shared.session.hostname,
                            &id.to_string(),
                            std::time::SystemTime::now(),
                        );
                        match fixed {
                            Ok(fields) => conn.added_fields = fields,
                            Err(reply) => {
                                conn.log_transaction(&reply.to_string());
                                let _ = conn.decide(Decision::Reject(reply));
                                return;
                            }
                        }
                    }
                    conn.message = Some(Arc::new(message));
                    self.check_message(slot);
                }
                Err(ContentError::Session(e)) => {
                    let _ = conn
                        .session
                        .decide(Decision::Reject(impossible(&e.to_string())));
                }
                Err(ContentError::Spill(e)) => {
                    tracing::warn!(conn = conn.info.id, error = %e, "message refused: its spill file failed");
                    let reply = Reply::new(
                        452,
                        Some(EnhancedCode::new(4, 3, 1)),
                        "Insufficient system storage for this message; try again later",
                    );
                    conn.log_transaction(&reply.to_string());
                    let _ = conn.decide(Decision::Reject(reply));
                }
            },
        }
    }

    /// Calls the filters at `stage`, with what the pending event (or, at
    /// the end of data, the message) says.
    pub(super) fn call_filter(&mut self, slot: usize, stage: Stage) {
        self.next_serial += 1;
        let conn = self.conns[slot].as_mut().expect("caller checked");
        conn.serial = self.next_serial;
        let ticket = Ticket {
            slot,
            serial: conn.serial,
        };
        let mut later = Some(Later::new(self.inbox.clone(), ticket));
        // Only the end of data shows the queue id to the filters.
        let queue_id = match stage {
            Stage::EndOfData => conn.queue_id().map(|id| id.to_string()),
            _ => None,
        };
        let verdict = {
            let event = conn.session.event();
            let filter_stage = match (stage, event) {
                (Stage::Connect, _) => Some(FilterStage::Connect),
                (Stage::Hello, Some(Event::Hello { greeting, name })) => Some(FilterStage::Hello {
                    greeting: *greeting,
                    name,
                }),
                (
                    Stage::Mail,
                    Some(Event::Mail {
                        reverse_path,
                        params,
                    }),
                ) => Some(FilterStage::Mail {
                    reverse_path,
                    params,
                    auth: &conn.auth_results,
                }),
                (
                    Stage::Rcpt,
                    Some(Event::Rcpt {
                        forward_path,
                        params,
                    }),
                ) => conn
                    .session
                    .transaction()
                    .map(|envelope| FilterStage::Rcpt {
                        envelope,
                        forward_path,
                        params,
                        auth: &conn.auth_results,
                    }),
                (Stage::EndOfData, Some(Event::Message)) => {
                    match (conn.session.transaction(), &conn.message, &queue_id) {
                        (Some(envelope), Some(message), Some(queue_id)) => {
                            Some(FilterStage::Message {
                                envelope,
                                queue_id,
                                message,
                                auth: &conn.auth_results,
                            })
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            match filter_stage {
                Some(s) => self
                    .shared
                    .filter
                    .check(&conn.info, s, Defer::new(&mut later)),
                None => Some(Verdict::Reject(impossible(&format!(
                    "no event to filter at {stage}"
                )))),
            }
        };
        match (verdict, later) {
            (Some(verdict), later) => {
                if let Some(later) = later {
                    later.disarm();
                }
                self.filter_answered(slot, stage, verdict);
            }
            (None, Some(later)) => {
                // The filter neither answered nor kept the handle: a bug in
                // the filter, and never a reason to accept.
                later.disarm();
                let reply = sluice_filter::tempfail("Filter failed; try again later");
                self.filter_answered(slot, stage, Verdict::Reject(reply));
            }
            (None, None) => conn_mut(&mut self.conns, slot).waiting = Some(Wait::Filter(stage)),
        }
    }

    pub(super) fn filter_answered(&mut self, slot: usize, stage: Stage, verdict: Verdict) {
        let conn = conn_mut(&mut self.conns, slot);
        let decision = match (stage, verdict) {
            (Stage::Connect, Verdict::Continue | Verdict::Modify(_)) => {
                conn.session.greet(None);
                return;
            }
            (Stage::Connect, Verdict::Reject(reply) | Verdict::Disconnect(reply)) => {
                sluice_metrics::rejected(Some(Stage::Connect), reply.code());
                conn.session.greet(Some(reply));
                return;
            }
            (Stage::EndOfData, Verdict::Continue) => {
                return self.submit(slot, MessageChanges::default());
            }
            (Stage::EndOfData, Verdict::Modify(changes)) => return self.submit(slot, changes),
            (Stage::EndOfData, refusal) => {
                let decision = match refusal {
                    Verdict::Disconnect(reply) => Decision::Disconnect(reply),
                    Verdict::Reject(reply) => Decision::Reject(reply),
                    Verdict::Continue | Verdict::Modify(_) => unreachable!("handled above"),
                };
                conn.log_transaction(&decision_reply(&decision));
                conn.message = None;
                decision
            }
            (Stage::Rcpt, Verdict::Continue | Verdict::Modify(_)) => {
                // The built-in policy: the mailbox must exist, and relaying
                // needs a trusted client. It stays behind the filters so
                // that no configuration of plugins can make an open relay.
                match conn.session.event() {
                    Some(Event::Rcpt { forward_path, .. }) => {
                        match self.shared.policy.check_rcpt(
                            forward_path,
                            conn.ip,
                            conn.info.login.is_some(),
                        ) {
                            crate::policy::RcptVerdict::Refuse(reply) => {
                                // Postfix's "NOQUEUE: reject" line: what an
                                // operator greps for when a sender says mail
                                // bounced.
                                tracing::info!(
                                    conn = conn.info.id,
                                    client = %conn.ip,
                                    to = %forward_path,
                                    result = %reply,
                                    "recipient refused"
                                );
                                Decision::Reject(reply)
                            }
                            _ => Decision::Accept,
                        }
                    }
                    _ => Decision::Reject(impossible("RCPT answered without a pending RCPT")),
                }
            }
            (_, Verdict::Continue | Verdict::Modify(_)) => Decision::Accept,
            (stage, Verdict::Reject(reply)) => {
                tracing::info!(conn = conn.info.id, client = %conn.ip, %stage, result = %reply, "refused by filter");
                Decision::Reject(reply)
            }
            (stage, Verdict::Disconnect(reply)) => {
                tracing::info!(conn = conn.info.id, client = %conn.ip, %stage, result = %reply, "disconnected by filter");
                Decision::Disconnect(reply)
            }
        };
        if let Err(e) = conn.decide(decision) {
            // Nothing was pending: refusing is all that is left.
            conn.session.close_with(impossible(&e.to_string()));
        }
    }

    pub(super) fn submit(&mut self, slot: usize, changes: MessageChanges) {
        let conn = conn_mut(&mut self.conns, slot);
        let Some(submission) = conn.submission(&changes) else {
            let _ = conn
                .session
                .decide(Decision::Reject(impossible("no message to submit")));
            return;
        };
        if changes.discard {
            // The client must not learn that a filter dropped its message.
            let reply = Reply::new(
                250,
                Some(EnhancedCode::new(2, 0, 0)),
                queued_as(submission.entry.id),
            );
            conn.log_transaction("discarded by filter");
            let _ = conn.decide(Decision::AcceptWith(reply));
            return;
        }
        self.next_serial += 1;
        conn.serial = self.next_serial;
        conn.waiting = Some(Wait::Spool);
        let (inbox, serial) = (self.inbox.clone(), conn.serial);
        // The spool tells the scheduler itself once the message is durable;
        // delivery may start before the client has its 250, which is fine.
        self.shared.spool.submit(
            submission,
            Box::new(move |result: Result<QueueId, SpoolError>| {
                inbox.push(Completion {
                    slot,
                    serial,
                    kind: CompletionKind::Spool(result),
                })
            }),
        );
    }

    pub(super) fn spool_answered(&mut self, slot: usize, result: Result<QueueId, SpoolError>) {
        let conn = conn_mut(&mut self.conns, slot);
        // Before the decision, which may go on to the next message.
        conn.reclaim_message_buffer();
        let decision = match result {
            Ok(id) => Decision::AcceptWith(Reply::new(
                250,
                Some(EnhancedCode::new(2, 0, 0)),
                queued_as(id),
            )),
            Err(e) if e.is_storage_full() => {
                tracing::error!(error = %e, "spool is full");
                Decision::Reject(Reply::new(
                    452,
                    Some(EnhancedCode::new(4, 3, 1)),
                    "Insufficient system storage",
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed");
                Decision::Reject(sluice_filter::tempfail(
                    "Local error in processing; try again later",
                ))
            }
        };
        conn.log_transaction(&decision_reply(&decision));
        let _ = conn.decide(decision);
    }
}

/// The text of the `250` for a queued message, written in two pieces (one
/// a message; `format!` costs more than the text).
fn queued_as(id: QueueId) -> String {
    const TEXT: &str = "Ok: queued as ";
    let id = id.text();
    let mut text = String::with_capacity(TEXT.len() + id.as_str().len());
    text.push_str(TEXT);
    text.push_str(id.as_str());
    text
}

fn decision_reply(decision: &Decision) -> String {
    match decision {
        Decision::Accept => "accepted".into(),
        Decision::AcceptWith(r) | Decision::Reject(r) | Decision::Disconnect(r) => {
            use std::fmt::Write as _;
            // Room for a typical reply, so that the text is not copied as
            // the string doubles.
            let mut text = String::with_capacity(64);
            let _ = write!(text, "{r}");
            text
        }
    }
}
