//! Harness for the end-to-end tests: builds and runs the real `sluice`
//! binary, talks to it over loopback sockets byte for byte, and reads its
//! spool back through the spool crate (read-only) to check what was queued.
//!
//! Every wait here is bounded in time, every process started is stopped by
//! its PID, and every server listens on a kernel-chosen loopback port so that
//! tests run in parallel.

mod binary;
mod client;
mod dnsmasq;
pub mod dovecot;
mod judges;
mod mailbox;
mod outcome;
mod process;
mod queue;
mod server;
mod sink;
pub mod tls;

pub use binary::sluice_bin;
pub use client::{Client, Reply, send_message, try_send_message};
pub use dnsmasq::Dnsmasq;
pub use judges::judge;
pub use mailbox::{
    Delivered, MaildirMessage, maildir_messages, received_prefix, split_received, wait_for_maildir,
};
pub use outcome::{TRICKY, dot_stuff, submit};
pub use process::run;
pub use queue::{QueuedMessage, queue_by_id, read_queue};
pub use server::{HOSTNAME, Server, ServerBuilder};
pub use sink::{Sink, SinkBuilder, Transaction};

use std::time::{Duration, Instant};

/// Polls `f` every few milliseconds until it returns `Some`, for at most
/// `limit`. Tests use it instead of fixed sleeps.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
