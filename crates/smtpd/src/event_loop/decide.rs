//! What a connection's events become: the recipient policy, filter calls
//! (answered at once or later through the inbox), and the hand-off to the
//! spool whose completion carries the `250`.

use sluice_smtp::server::{Decision, Event};
use sluice_smtp::{EnhancedCode, Reply};
use sluice_spool::{MessageMark, QueueId, SpoolError};

use super::{Completion, CompletionKind, EventLoop, conn_mut};
use crate::conn::Waiting as Wait;
use crate::filter::{Defer, Later, MessageChanges, Stage, Verdict};

impl EventLoop {
    pub(super) fn on_event(&mut self, slot: usize) {
        let conn = self.conns[slot].as_mut().expect("caller checked");
        // Only the kind of event matters here (call_filter reads the rest
        // where it lies), so nothing is cloned on this per-command path.
        let Some(event) = conn.session.event() else {
            return;
        };
        match event {
            Event::Hello { .. } => self.call_filter(slot, FilterStage::Hello),
            Event::Mail { .. } => self.call_filter(slot, FilterStage::Mail),
            // Filters first: the relay-refusal plugin must see a disguised
            // relay attempt (`user%remote.test@local`) before the mailbox
            // check calls it an unknown local user.
            Event::Rcpt { .. } => self.call_filter(slot, FilterStage::Rcpt),
            Event::StartData => {
                let id = self.shared.spool.new_id();
                conn.start_message(id, &self.shared.session.hostname);
                conn.session.decide(Decision::Accept);
            }
            Event::Message => {
                conn.message = conn.session.take_message();
                self.call_filter(slot, FilterStage::Message);
            }
        }
    }

    pub(super) fn call_filter(&mut self, slot: usize, stage: FilterStage) {
        self.next_serial += 1;
        let conn = self.conns[slot].as_mut().expect("caller checked");
        conn.serial = self.next_serial;
        let mut later = Some(Later::new(self.inbox.clone(), slot, conn.serial));
        let event = conn.session.event();
        let verdict = {
            let stage_ref = match (stage, event) {
                (FilterStage::Connect, _) => Some(Stage::Connect),
                (FilterStage::Hello, Some(Event::Hello { greeting, name })) => Some(Stage::Hello {
                    greeting: *greeting,
                    name,
                }),
                (
                    FilterStage::Mail,
                    Some(Event::Mail {
                        reverse_path,
                        params,
                    }),
                ) => Some(Stage::Mail {
                    reverse_path,
                    params,
                }),
                (
                    FilterStage::Rcpt,
                    Some(Event::Rcpt {
                        forward_path,
                        params,
                    }),
                ) => conn.session.transaction().map(|transaction| Stage::Rcpt {
                    transaction,
                    forward_path,
                    params,
                }),
                (FilterStage::Message, _) => {
                    conn.message
                        .as_ref()
                        .map(|(transaction, message)| Stage::Message {
                            transaction,
                            message,
                        })
                }
                _ => None,
            };
            match stage_ref {
                Some(s) => self.shared.filter.check(&conn.info, s, Defer(&mut later)),
                None => Some(Verdict::Continue),
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
                let reply = Reply::new(
                    451,
                    Some(EnhancedCode::new(4, 3, 0)),
                    "Filter failed; try again later",
                );
                self.filter_answered(slot, stage, Verdict::Reject(reply));
            }
            (None, None) => conn_mut(&mut self.conns, slot).waiting = Some(Wait::Filter(stage)),
        }
    }

    pub(super) fn filter_answered(&mut self, slot: usize, stage: FilterStage, verdict: Verdict) {
        let conn = conn_mut(&mut self.conns, slot);
        match (stage, verdict) {
            (FilterStage::Connect, Verdict::Continue | Verdict::Modify(_)) => {
                conn.session.greet(None)
            }
            (FilterStage::Connect, Verdict::Reject(reply) | Verdict::Disconnect(reply)) => {
                conn.session.greet(Some(reply));
            }
            (FilterStage::Message, Verdict::Continue) => {
                self.submit(slot, MessageChanges::default())
            }
            (FilterStage::Message, Verdict::Modify(changes)) => self.submit(slot, changes),
            (FilterStage::Message, refusal) => {
                let decision = match refusal {
                    Verdict::Disconnect(reply) => Decision::Disconnect(reply),
                    Verdict::Reject(reply) => Decision::Reject(reply),
                    Verdict::Continue | Verdict::Modify(_) => unreachable!("handled above"),
                };
                conn.log_transaction(&decision_reply(&decision));
                conn.message = None;
                conn.session.decide(decision);
            }
            (FilterStage::Rcpt, Verdict::Continue | Verdict::Modify(_)) => {
                let decision = match conn.session.event() {
                    Some(Event::Rcpt { forward_path, .. }) => {
                        // The built-in policy: the mailbox must exist, and
                        // relaying needs a trusted client. It stays behind
                        // the filters so that no configuration of plugins
                        // can make an open relay.
                        match self.shared.policy.check_rcpt(forward_path, conn.ip) {
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
                    _ => Decision::Accept,
                };
                conn.session.decide(decision);
            }
            (_, Verdict::Continue | Verdict::Modify(_)) => conn.session.decide(Decision::Accept),
            (stage, Verdict::Reject(reply)) => {
                tracing::info!(conn = conn.info.id, client = %conn.ip, ?stage, result = %reply, "refused by filter");
                conn.session.decide(Decision::Reject(reply));
            }
            (stage, Verdict::Disconnect(reply)) => {
                tracing::info!(conn = conn.info.id, client = %conn.ip, ?stage, result = %reply, "disconnected by filter");
                conn.session.decide(Decision::Disconnect(reply));
            }
        }
    }

    pub(super) fn submit(&mut self, slot: usize, changes: MessageChanges) {
        let conn = conn_mut(&mut self.conns, slot);
        conn.add_headers(&changes.headers);
        let Some((envelope, body)) = conn.envelope() else {
            conn.session.decide(Decision::Reject(Reply::new(
                451,
                Some(EnhancedCode::new(4, 3, 0)),
                "Local error in processing",
            )));
            return;
        };
        if changes.discard {
            // The client must not learn that a filter dropped its message.
            let reply = Reply::new(
                250,
                Some(EnhancedCode::new(2, 0, 0)),
                format!("Ok: queued as {}", envelope.id),
            );
            conn.log_transaction("discarded by filter");
            conn.message = None;
            conn.session.decide(Decision::AcceptWith(reply));
            return;
        }
        self.next_serial += 1;
        conn.serial = self.next_serial;
        conn.waiting = Some(Wait::Spool);
        let (inbox, serial) = (self.inbox.clone(), conn.serial);
        let on_queued = self.shared.on_queued.clone();
        let spool = self.shared.spool.clone();
        let done = move |result: Result<QueueId, SpoolError>| {
            // Delivery may start before the client has its 250: the
            // message is durable, and that is what matters.
            if let Ok(id) = &result {
                on_queued(*id);
            }
            inbox.push(Completion {
                slot,
                serial,
                kind: CompletionKind::Spool(result),
            })
        };
        let done: sluice_spool::Completion = if changes.quarantine {
            // Held before anyone hears of it, so that no delivery can start.
            Box::new(move |result| match result {
                Ok(id) => spool.mark(
                    id,
                    MessageMark::Held,
                    Box::new(move |marked| done(marked.map(|()| id))),
                ),
                Err(e) => done(Err(e)),
            })
        } else {
            Box::new(done)
        };
        self.shared.spool.submit(envelope, body, done);
    }

    pub(super) fn spool_answered(&mut self, slot: usize, result: Result<QueueId, SpoolError>) {
        let conn = conn_mut(&mut self.conns, slot);
        let decision = match result {
            Ok(id) => Decision::AcceptWith(Reply::new(
                250,
                Some(EnhancedCode::new(2, 0, 0)),
                format!("Ok: queued as {id}"),
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
                Decision::Reject(Reply::new(
                    451,
                    Some(EnhancedCode::new(4, 3, 0)),
                    "Local error in processing; try again later",
                ))
            }
        };
        conn.log_transaction(&decision_reply(&decision));
        conn.message = None;
        conn.session.decide(decision);
    }
}

fn decision_reply(decision: &Decision) -> String {
    match decision {
        Decision::Accept => "accepted".into(),
        Decision::AcceptWith(r) | Decision::Reject(r) | Decision::Disconnect(r) => r.to_string(),
    }
}

/// Which filter stage a connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterStage {
    Connect,
    Hello,
    Mail,
    Rcpt,
    Message,
}
