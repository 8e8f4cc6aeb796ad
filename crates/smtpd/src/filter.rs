//! The filter hook points: connect, HELO/EHLO, MAIL, RCPT and end of data.
//!
//! The plugin host implements [`Filter`]; the front end calls it at each stage
//! and never waits for it. A filter that can answer at once (from memory)
//! returns the verdict; one that must wait for something (a plugin on another
//! thread, a DNS answer) keeps the [`Later`] and answers through it from any
//! thread. The event loop then wakes and carries on with that connection;
//! every other connection keeps being served in the meantime.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use sluice_smtp::server::{Greeting, Transaction};
use sluice_smtp::{Domain, ForwardPath, MailParams, RcptParams, Reply, ReversePath};

use crate::event_loop::{Completion, Inbox};

/// What a filter knows about the connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Unique for the server's lifetime; filters key per-connection state on it.
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Whether the client's address is in `relay.trusted_networks`.
    pub trusted: bool,
}

/// The stage a filter is called at, with what that stage is about.
#[derive(Debug)]
pub enum Stage<'a> {
    /// Before the greeting.
    Connect,
    Hello {
        greeting: Greeting,
        name: &'a Domain,
    },
    Mail {
        reverse_path: &'a ReversePath,
        params: &'a MailParams,
    },
    /// One recipient, as the client gave it, before the built-in policy
    /// (mailbox exists, relay allowed) looks at it.
    Rcpt {
        transaction: &'a Transaction,
        forward_path: &'a ForwardPath,
        params: &'a RcptParams,
    },
    /// The whole message (trace header included) before it goes to the spool.
    Message {
        transaction: &'a Transaction,
        message: &'a [u8],
    },
}

/// What filters may change about a message at the end of data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageChanges {
    /// Header fields to add, in order, right after our `Received:` header
    /// (`X-Spam-Status`, say). A name that is not a valid field name, or a
    /// value with CR or LF, is dropped: a filter must not be able to inject
    /// a second header or a body.
    pub headers: Vec<(String, String)>,
    /// Answer `250` but do not queue the message.
    pub discard: bool,
    /// Queue the message, held for the operator (`sluice queue release`).
    pub quarantine: bool,
}

/// A filter's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on to the next filter, or accept the stage if this was the last.
    Continue,
    /// Accept, with changes to the message. Only the end-of-data stage
    /// ([`Stage::Message`]) has a message to change; elsewhere this is
    /// [`Verdict::Continue`].
    Modify(MessageChanges),
    /// Refuse the stage with this reply: 5xx to reject, 4xx to ask the client
    /// to try later. The connection stays open.
    Reject(Reply),
    /// Send this reply (normally 421) and close the connection.
    Disconnect(Reply),
}

/// The filter chain as the front end sees it.
pub trait Filter: Send + Sync + 'static {
    /// Called at each stage. Return `Some(verdict)` to answer now; or take the
    /// [`Later`] out of `defer`, return `None`, and call `later.answer(verdict)`
    /// exactly once, from any thread.
    fn check(&self, conn: &Connection, stage: Stage<'_>, defer: Defer<'_>) -> Option<Verdict>;

    /// The transaction ended (RSET, new EHLO, message accepted or refused).
    fn reset(&self, _conn: &Connection) {}

    /// The connection closed.
    fn close(&self, _conn: &Connection) {}
}

/// No filters: every stage continues at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFilter;

impl Filter for NoFilter {
    fn check(&self, _: &Connection, _: Stage<'_>, _: Defer<'_>) -> Option<Verdict> {
        Some(Verdict::Continue)
    }
}

/// Where a filter that cannot answer at once takes its [`Later`] from.
#[derive(Debug)]
pub struct Defer<'a>(pub(crate) &'a mut Option<Later>);

impl Defer<'_> {
    /// Takes the handle for answering later.
    pub fn later(self) -> Later {
        self.0.take().expect("a Defer holds its Later until taken")
    }
}

/// The way back to the event loop for a verdict given later.
///
/// Dropping a `Later` without answering is a filter bug; the connection is
/// then answered `451 4.3.0` rather than left hanging (fail closed).
pub struct Later {
    inbox: Option<Arc<Inbox>>,
    slot: usize,
    serial: u64,
}

impl Later {
    pub(crate) fn new(inbox: Arc<Inbox>, slot: usize, serial: u64) -> Self {
        Later {
            inbox: Some(inbox),
            slot,
            serial,
        }
    }

    /// Forgets the connection without answering: for the front end, when the
    /// filter answered at once and this handle was never taken.
    pub(crate) fn disarm(mut self) {
        self.inbox = None;
    }

    /// Hands the verdict to the event loop that owns the connection.
    pub fn answer(mut self, verdict: Verdict) {
        if let Some(inbox) = self.inbox.take() {
            inbox.push(Completion::filter(self.slot, self.serial, verdict));
        }
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            let reply = Reply::new(
                451,
                Some(sluice_smtp::EnhancedCode::new(4, 3, 0)),
                "Filter failed to answer; try again later",
            );
            inbox.push(Completion::filter(
                self.slot,
                self.serial,
                Verdict::Reject(reply),
            ));
        }
    }
}

impl fmt::Debug for Later {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Later")
            .field("slot", &self.slot)
            .field("serial", &self.serial)
            .finish()
    }
}
