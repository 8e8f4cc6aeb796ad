//! Email authentication on the loop: a stranger's sender (SPF, iprev) at
//! MAIL and message (DKIM, ARC, DMARC) at the end of data go to the
//! `[authentication]` workers; our own clients' messages are DKIM-signed.
//! The answers come back through the inbox and go to the filters with
//! their stage.

use sluice_smtp::Stage;
use sluice_smtp::server::Event;

use super::{EventLoop, conn_mut};
use crate::conn::Waiting as Wait;

impl EventLoop {
    /// At MAIL: a stranger's sender is checked (SPF, iprev) before the
    /// filters hear of it; anyone else's goes to them at once.
    pub(super) fn check_sender(&mut self, slot: usize) {
        let conn = conn_mut(&mut self.conns, slot);
        conn.auth_results = sluice_filter::AuthResults::default();
        let known = conn.sender_checks.take();
        let checks = self.shared.msgauth.checker.as_ref().map(|c| c.checks());
        let wanted = checks.is_some_and(|c| c.any());
        let (Some(jobs), true, false) = (&self.shared.msgauth_jobs, wanted, conn.privileged())
        else {
            return self.call_filter(slot, Stage::Mail);
        };
        let Some(Event::Mail { reverse_path, .. }) = conn.session.event() else {
            return self.call_filter(slot, Stage::Mail);
        };
        let mail_from = match reverse_path {
            sluice_smtp::ReversePath::Path(p) => p.mailbox.text(),
            sluice_smtp::ReversePath::Null => String::new(),
        };
        let helo = conn
            .session
            .greeting_name()
            .map(|(_, name)| name.to_string())
            .unwrap_or_default();
        let work = crate::msgauth::Work::Sender {
            ip: conn.ip,
            helo,
            mail_from,
            known,
        };
        self.send_msgauth(slot, jobs.clone(), work);
    }

    /// At the end of data: a stranger's message is checked (DKIM, ARC,
    /// DMARC), ours is signed, before the filters see it.
    pub(super) fn check_message(&mut self, slot: usize) {
        let conn = conn_mut(&mut self.conns, slot);
        let (Some(jobs), Some(message)) = (&self.shared.msgauth_jobs, &conn.message) else {
            return self.call_filter(slot, Stage::EndOfData);
        };
        let content = conn.content_start().min(message.len())..message.len();
        let work = if conn.privileged() {
            let Some(signer) = &self.shared.msgauth.signer else {
                return self.call_filter(slot, Stage::EndOfData);
            };
            let domain = crate::msgauth::from_domain(&conn.added_fields, &message[content.clone()]);
            let Some(domain) = domain.filter(|d| signer.signs_for(d)) else {
                return self.call_filter(slot, Stage::EndOfData);
            };
            if signer.is_cheap_for(&domain) {
                // Ed25519: cheaper than the trip to a worker and back.
                let signed = signer.sign(&domain, &[&conn.added_fields, &message[content]]);
                return self.msgauth_answered(slot, crate::msgauth::Found::Signed(signed));
            }
            crate::msgauth::Work::Sign {
                domain,
                added: conn.added_fields.clone(),
                message: message.clone(),
                content,
            }
        } else {
            let Some(sender) = conn.sender_checks.clone() else {
                return self.call_filter(slot, Stage::EndOfData);
            };
            crate::msgauth::Work::Message {
                message: message.clone(),
                content,
                sender,
            }
        };
        self.send_msgauth(slot, jobs.clone(), work);
    }

    fn send_msgauth(
        &mut self,
        slot: usize,
        jobs: crossbeam_channel::Sender<crate::msgauth::Job>,
        work: crate::msgauth::Work,
    ) {
        self.next_serial += 1;
        let conn = conn_mut(&mut self.conns, slot);
        conn.serial = self.next_serial;
        conn.waiting = Some(Wait::MsgAuth);
        // The workers outlive the loops; a send cannot fail while they run.
        let _ = jobs.send(crate::msgauth::Job {
            inbox: self.inbox.clone(),
            slot,
            serial: conn.serial,
            work,
        });
    }

    /// The workers' answer: the filters are called with it.
    pub(super) fn msgauth_answered(&mut self, slot: usize, found: crate::msgauth::Found) {
        use crate::msgauth::Found;
        let conn = conn_mut(&mut self.conns, slot);
        match found {
            Found::Sender(checks) => {
                conn.auth_results = checks.results();
                conn.sender_checks = Some(checks);
                self.call_filter(slot, Stage::Mail);
            }
            Found::Message(checks, forged) => {
                if !forged.is_empty() {
                    tracing::info!(conn = conn.info.id, client = %conn.ip, fields = forged.len(), "Authentication-Results with our name removed");
                }
                conn.auth_results = checks.results;
                // Ours first, right after Received:, as RFC 8601 §5 asks.
                let mut fields = checks.header.into_bytes();
                fields.append(&mut conn.added_fields);
                conn.added_fields = fields;
                conn.removed = forged;
                self.call_filter(slot, Stage::EndOfData);
            }
            Found::Signed(Ok(signatures)) => {
                let mut fields = signatures.into_bytes();
                fields.append(&mut conn.added_fields);
                conn.added_fields = fields;
                self.call_filter(slot, Stage::EndOfData);
            }
            Found::Signed(Err(why)) => {
                // The mail still goes, unsigned: a receiver may file it as
                // spam, which beats not sending it at all.
                tracing::error!(conn = conn.info.id, error = %why, "DKIM signing failed; sent unsigned");
                self.call_filter(slot, Stage::EndOfData);
            }
        }
    }
}
