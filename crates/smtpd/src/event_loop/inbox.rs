//! The way into an event loop from other threads: filters answering later
//! and the spool's writer reporting a durable batch.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use mio::Waker;
use sluice_spool::{QueueId, SpoolError};

use crate::filter::Verdict;

/// Something that finished elsewhere and concerns one connection.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(super) slot: usize,
    pub(super) serial: u64,
    pub(super) kind: CompletionKind,
}

#[derive(Debug)]
pub(crate) enum CompletionKind {
    Filter(Verdict),
    Spool(Result<QueueId, SpoolError>),
}

impl Completion {
    pub(crate) fn filter(slot: usize, serial: u64, verdict: Verdict) -> Self {
        Completion {
            slot,
            serial,
            kind: CompletionKind::Filter(verdict),
        }
    }
}

/// The way into an event loop from other threads.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub(super) tx: Sender<Completion>,
    pub(super) waker: Waker,
    /// Set while a wake-up is on its way: the spool's writer finishes a whole
    /// batch at once, and one eventfd write per batch is enough.
    pub(super) armed: AtomicBool,
}

impl Inbox {
    pub(crate) fn push(&self, completion: Completion) {
        // The loop owns the receiver until it exits; a send after that has
        // nobody left to tell.
        let _ = self.tx.send(completion);
        if !self.armed.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }
}
