//! The way into an event loop from other threads: filters answering later,
//! the spool's writer reporting a durable batch, and other loops handing
//! over connections they accepted.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use mio::{Poll, Waker};
use sluice_spool::{QueueId, SpoolError};

use sluice_filter::{Answers, Ticket, Verdict};

/// Something that finished elsewhere and concerns one connection.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) slot: usize,
    pub(crate) serial: u64,
    pub(crate) kind: CompletionKind,
}

#[derive(Debug)]
pub(crate) enum CompletionKind {
    Filter(Verdict),
    Spool(Result<QueueId, SpoolError>),
    Auth(crate::auth::AuthOutcome),
    /// Boxed: the checks' results are large, and rare beside the
    /// spool's and filters' completions.
    MsgAuth(Box<crate::msgauth::Found>),
}

/// Filters answer through the inbox of the loop that called them.
impl Answers for Inbox {
    fn answer(&self, ticket: Ticket, verdict: Verdict) {
        self.push(Completion {
            slot: ticket.slot,
            serial: ticket.serial,
            kind: CompletionKind::Filter(verdict),
        });
    }
}

/// A connection accepted (and counted against the limits) by one loop, for
/// another to serve.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub(super) stream: crate::socket::Socket,
    pub(super) peer: crate::socket::Peer,
    /// The client's address as policy sees it.
    pub(super) ip: IpAddr,
    /// Its listener's index in `Shared::listener_modes`.
    pub(super) listener: usize,
    /// What the client sent after a PROXY header, read with it.
    pub(super) early: Vec<u8>,
    /// The address the client connected to, from a PROXY header.
    pub(super) server: Option<std::net::SocketAddr>,
}

#[derive(Debug)]
pub(crate) enum Item {
    Completion(Completion),
    Arrival(Arrival),
}

/// The loop's own end of its inbox: its `Poll` (which the waker is tied to)
/// and the receiver. Made before the loop, so that every loop's [`Inbox`]
/// can be shared with all the others when they start.
#[derive(Debug)]
pub(crate) struct Inlet {
    pub(super) poll: Poll,
    pub(super) rx: Receiver<Item>,
}

impl Inlet {
    pub(crate) fn new() -> io::Result<(Inlet, Arc<Inbox>)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), super::WAKER)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let inbox = Arc::new(Inbox {
            tx,
            waker,
            armed: AtomicBool::new(false),
        });
        Ok((Inlet { poll, rx }, inbox))
    }
}

/// The way into an event loop from other threads.
#[derive(Debug)]
pub(crate) struct Inbox {
    tx: Sender<Item>,
    waker: Waker,
    /// Set while a wake-up is on its way: the spool's writer finishes a whole
    /// batch at once, and one eventfd write per batch is enough.
    pub(super) armed: AtomicBool,
}

impl Inbox {
    pub(crate) fn push(&self, completion: Completion) {
        self.send(Item::Completion(completion));
    }

    /// The sender must have counted the connection in the receiving loop's
    /// [`LoopShare::connections`](crate::LoopShare) and seen no shutdown
    /// after that: then the loop is still there to take it.
    pub(crate) fn hand_over(&self, arrival: Arrival) {
        self.send(Item::Arrival(arrival));
    }

    fn send(&self, item: Item) {
        // The loop owns the receiver until it exits; a completion sent after
        // that has nobody left to tell.
        let _ = self.tx.send(item);
        if !self.armed.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }
}
