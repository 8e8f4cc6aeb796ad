//! Email authentication on the front end: SPF and iprev when a stranger
//! says MAIL, DKIM, ARC and DMARC at its end of data, and DKIM signing of
//! what our own users send.
//!
//! The checks wait on DNS and the signatures on RSA, so both run on worker
//! threads of their own and answer through the event loop's inbox, as the
//! filters and password checks do. The results reach the filters with the
//! stage (`sluice_filter::authres`), and the message gets one
//! `Authentication-Results:` field, ours, after any field claiming our name
//! is taken out (RFC 8601 §5).

use std::ops::Range;
use std::sync::Arc;

use crossbeam_channel::Sender;
use sluice_msgauth::{Checker, MessageChecks, SenderChecks, Signer};
use sluice_sys::Content;

use crate::event_loop::{Completion, CompletionKind, Inbox};

/// What the front end needs for email authentication.
#[derive(Debug, Clone, Default)]
pub struct MsgAuthSetup {
    /// Checks of what untrusted clients send; `None`: no checks.
    pub checker: Option<Checker>,
    /// Keys that sign what trusted and logged-in clients send; `None`: no
    /// signing.
    pub signer: Option<Arc<Signer>>,
    /// Threads that run checks and signatures.
    pub threads: usize,
}

impl MsgAuthSetup {
    pub fn is_active(&self) -> bool {
        self.checker.is_some() || self.signer.as_ref().is_some_and(|s| !s.is_empty())
    }
}

/// Work for the threads.
pub(crate) enum Work {
    /// SPF of the HELO name and the reverse-path, and iprev unless known.
    Sender {
        ip: std::net::IpAddr,
        helo: String,
        mail_from: String,
        known: Option<SenderChecks>,
    },
    /// DKIM, ARC and DMARC of `message[content]`.
    Message {
        message: Arc<Content>,
        content: Range<usize>,
        sender: SenderChecks,
    },
    /// A signature over the fields added in front (`Date:`, ...) and
    /// `message[content]`, with the keys of `domain` (the `From:` one).
    Sign {
        domain: String,
        added: Vec<u8>,
        message: Arc<Content>,
        content: Range<usize>,
    },
}

/// What the threads found.
#[derive(Debug)]
pub(crate) enum Found {
    Sender(SenderChecks),
    /// The checks, and the ranges of `content` holding fields that claim
    /// our authserv-id.
    Message(MessageChecks, Vec<Range<usize>>),
    /// `DKIM-Signature:` fields (empty: no key for the domain), or why
    /// signing failed.
    Signed(Result<String, String>),
}

pub(crate) struct Job {
    pub inbox: Arc<Inbox>,
    pub slot: usize,
    pub serial: u64,
    pub work: Work,
}

/// Starts the threads; returns where jobs go.
pub(crate) fn start_workers(setup: &MsgAuthSetup) -> std::io::Result<Sender<Job>> {
    let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
    for i in 0..setup.threads.max(1) {
        let (queue, setup) = (queue.clone(), setup.clone());
        std::thread::Builder::new()
            .name(format!("smtpd-msgauth-{i}"))
            .spawn(move || {
                crate::short_slice();
                for job in sluice_sys::parked(&queue) {
                    let found = run(&setup, job.work);
                    job.inbox.push(Completion {
                        slot: job.slot,
                        serial: job.serial,
                        kind: CompletionKind::MsgAuth(Box::new(found)),
                    });
                }
            })?;
    }
    Ok(jobs)
}

fn run(setup: &MsgAuthSetup, work: Work) -> Found {
    match work {
        Work::Sender {
            ip,
            helo,
            mail_from,
            known,
        } => {
            let checker = setup.checker.as_ref().expect("sender work needs a checker");
            Found::Sender(checker.sender(ip, &helo, &mail_from, known.as_ref()))
        }
        Work::Message {
            message,
            content,
            sender,
        } => {
            let checker = setup
                .checker
                .as_ref()
                .expect("message work needs a checker");
            let content = &message[content];
            let checks = checker.message(content, &sender);
            let forged = sluice_msgauth::forged_results(content, checker.authserv_id());
            Found::Message(checks, forged)
        }
        Work::Sign {
            domain,
            added,
            message,
            content,
        } => match &setup.signer {
            Some(signer) => Found::Signed(signer.sign(&domain, &[&added, &message[content]])),
            None => Found::Signed(Ok(String::new())),
        },
    }
}

/// The domain of the `From:` address, from the fields added in front or
/// the message's own header. Only the `From:` field is parsed (mail-parser
/// knows its grammar), not the whole header: this runs for every message
/// our users send.
pub(crate) fn from_domain(added: &[u8], content: &[u8]) -> Option<String> {
    [added, content].iter().find_map(|part| {
        let field = from_field(part)?;
        let parsed = mail_parser::MessageParser::new().parse_headers(field)?;
        let from = parsed.from()?.first()?.address()?.to_string();
        from.rsplit_once('@')
            .map(|(_, domain)| domain.to_ascii_lowercase())
    })
}

/// The first `From:` field of the header section, its folded lines and
/// CRLF included.
fn from_field(message: &[u8]) -> Option<&[u8]> {
    // After each CRLF: a line's end is found a vector at a time, not by
    // comparing every pair of octets.
    let line_end = |at: usize| {
        memchr::memmem::find(&message[at..], b"\r\n").map_or(message.len(), |p| at + p + 2)
    };
    let mut at = 0;
    while at < message.len() {
        let end = line_end(at);
        if end == at + 2 {
            return None; // the empty line: the header is over
        }
        if end - at > 5 && message[at..at + 5].eq_ignore_ascii_case(b"from:") {
            let mut stop = end;
            while stop < message.len() && matches!(message[stop], b' ' | b'\t') {
                stop = line_end(stop);
            }
            return Some(&message[at..stop]);
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_comes_from_the_added_fields_or_the_message() {
        assert_eq!(
            from_domain(b"", b"From: Alice <alice@Example.TEST>\r\n\r\nhi\r\n").as_deref(),
            Some("example.test")
        );
        assert_eq!(
            from_domain(b"From: <cron@host.test>\r\n", b"Subject: x\r\n\r\nhi\r\n").as_deref(),
            Some("host.test")
        );
        assert_eq!(from_domain(b"", b"Subject: x\r\n\r\nhi\r\n"), None);
        assert_eq!(
            from_domain(
                b"",
                b"Subject: x\r\nFROM: \"Smith,\r\n J.\" <j@Folded.test>\r\n\r\n"
            )
            .as_deref(),
            Some("folded.test")
        );
        assert_eq!(
            from_domain(b"", b"Subject: x\r\n\r\nFrom: body@not.header\r\n"),
            None,
            "a From: line in the body is not the header's"
        );
    }
}
