//! The filter contract: what the SMTP front end asks its filters at each
//! stage of a transaction, and what they may answer.
//!
//! The front end (`sluice-smtpd`) calls a [`Filter`] at connect, HELO/EHLO,
//! MAIL, each RCPT, and the end of data, and never waits for it: a filter
//! that can answer at once returns the [`Verdict`]; one that must wait for
//! something (a plugin on another thread, a DNS answer) keeps the [`Later`]
//! and answers through it from any thread. The plugin host
//! (`sluice-plugin-host`) implements the trait; neither side depends on the
//! other, only on this crate.

pub mod authres;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use authres::AuthResults;
use sluice_smtp::server::Greeting;
use sluice_smtp::{
    Domain, EnhancedCode, Envelope, ForwardPath, MailParams, RcptParams, Reply, ReversePath,
};
use sluice_sys::Content;

/// What a filter knows about the client and its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Unique for the server's lifetime; filters key per-connection state on it.
    pub id: u64,
    /// The client's address and port (the real client's, behind a proxy
    /// that speaks the PROXY protocol).
    pub peer: SocketAddr,
    /// Our address and port the client connected to.
    pub local: SocketAddr,
    /// Whether the client's address is in `relay.trusted_networks`.
    pub trusted: bool,
    /// The TLS session, once the connection is encrypted.
    pub tls: Option<TlsInfo>,
    /// The authenticated user (SMTP AUTH), once the client has logged in.
    pub login: Option<String>,
}

impl ClientInfo {
    /// The client's IP address as policy sees it: an IPv4-mapped IPv6
    /// address is the IPv4 one.
    pub fn ip(&self) -> IpAddr {
        let ip = self.peer.ip();
        match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        }
    }
}

/// What a filter may know about the TLS session of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: String,
    /// The IANA name of the cipher suite, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The server name the client asked for (SNI), if it sent one.
    pub sni: Option<String>,
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
        /// SPF (HELO and MAIL FROM) and iprev, when they were checked.
        auth: &'a AuthResults,
    },
    /// One recipient, as the client gave it, before the built-in policy
    /// (mailbox exists, relay allowed) looks at it.
    Rcpt {
        envelope: &'a Envelope,
        forward_path: &'a ForwardPath,
        params: &'a RcptParams,
        auth: &'a AuthResults,
    },
    /// The whole message before it goes to the spool.
    Message {
        envelope: &'a Envelope,
        /// The queue id the message will have (it is in our `Received:`).
        queue_id: &'a str,
        /// The message as stored: our `Received:` header, then the content
        /// as received.
        message: &'a Arc<Content>,
        /// Everything checked, DKIM, ARC and DMARC included.
        auth: &'a AuthResults,
    },
}

impl Stage<'_> {
    /// The stage in the protocol's one vocabulary.
    pub fn stage(&self) -> sluice_smtp::Stage {
        match self {
            Stage::Connect => sluice_smtp::Stage::Connect,
            Stage::Hello { .. } => sluice_smtp::Stage::Hello,
            Stage::Mail { .. } => sluice_smtp::Stage::Mail,
            Stage::Rcpt { .. } => sluice_smtp::Stage::Rcpt,
            Stage::Message { .. } => sluice_smtp::Stage::EndOfData,
        }
    }
}

/// What filters may change about a message at the end of data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageChanges {
    /// Header fields to add, in order, right after our `Received:` header
    /// (`X-Spam-Status`, say). A name that is not a valid field name, or a
    /// value with CR or LF, is dropped: a filter must not be able to inject
    /// a second header or a body. See [`valid_header_field`].
    pub headers: Vec<(String, String)>,
    /// Answer `250` but do not queue the message.
    pub discard: bool,
    /// Queue the message, held for the operator (`sluice queue release`).
    pub quarantine: bool,
}

impl MessageChanges {
    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && !self.discard && !self.quarantine
    }
}

/// Whether `name: value` may be added to a message as one header field:
/// the name is printable ASCII without `:` (RFC 5322 §3.6.8), and the value
/// holds no CR or LF, so nothing can end the field or the header early.
pub fn valid_header_field(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.contains(['\r', '\n'])
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

/// `451 4.3.0`: a filter could not decide. The one reply for every way a
/// filter can fail to answer, so that a client sees the same words for the
/// same trouble.
pub fn tempfail(text: impl Into<String>) -> Reply {
    Reply::new(451, Some(EnhancedCode::new(4, 3, 0)), text.into())
}

/// The filter chain as the front end sees it.
pub trait Filter: Send + Sync + 'static {
    /// Called at each stage. Return `Some(verdict)` to answer now; or take the
    /// [`Later`] out of `defer`, return `None`, and call `later.answer(verdict)`
    /// exactly once, from any thread.
    fn check(&self, client: &ClientInfo, stage: Stage<'_>, defer: Defer<'_>) -> Option<Verdict>;

    /// The transaction ended (RSET, new EHLO, message accepted or refused).
    fn reset(&self, _client: &ClientInfo) {}

    /// The connection closed.
    fn close(&self, _client: &ClientInfo) {}
}

/// No filters: every stage continues at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFilter;

impl Filter for NoFilter {
    fn check(&self, _: &ClientInfo, _: Stage<'_>, _: Defer<'_>) -> Option<Verdict> {
        Some(Verdict::Continue)
    }
}

/// Where a filter that cannot answer at once takes its [`Later`] from.
#[derive(Debug)]
pub struct Defer<'a>(&'a mut Option<Later>);

impl<'a> Defer<'a> {
    /// For the caller of [`Filter::check`]: `slot` holds the [`Later`] until
    /// the filter takes it.
    pub fn new(slot: &'a mut Option<Later>) -> Self {
        Defer(slot)
    }

    /// Takes the handle for answering later.
    pub fn later(self) -> Later {
        self.0.take().expect("a Defer holds its Later until taken")
    }
}

/// Where verdicts given later go: the front end's way back to the event
/// loop that owns the connection. One per event loop, shared by all its
/// calls, so that a [`Later`] costs no allocation.
pub trait Answers: Send + Sync {
    /// Delivers `verdict` for the call `ticket` names.
    fn answer(&self, ticket: Ticket, verdict: Verdict);
}

/// Which call a verdict answers; opaque to filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The connection's place in its event loop.
    pub slot: usize,
    /// Tags the call, so that an answer to an earlier one is recognised.
    pub serial: u64,
}

/// The way back to the front end for a verdict given later.
///
/// Dropping a `Later` without answering is a filter bug; the connection is
/// then answered `451 4.3.0` rather than left hanging (fail closed).
pub struct Later {
    to: Option<Arc<dyn Answers>>,
    ticket: Ticket,
}

impl Later {
    /// A handle that hands its verdict to `to` with `ticket`.
    pub fn new(to: Arc<dyn Answers>, ticket: Ticket) -> Self {
        Later {
            to: Some(to),
            ticket,
        }
    }

    /// Hands the verdict back.
    pub fn answer(mut self, verdict: Verdict) {
        if let Some(to) = self.to.take() {
            to.answer(self.ticket, verdict);
        }
    }

    /// Forgets the handle without answering. For the caller of
    /// [`Filter::check`] only, when the filter answered at once and never
    /// took this handle out of its [`Defer`].
    pub fn disarm(mut self) {
        self.to = None;
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            to.answer(
                self.ticket,
                Verdict::Reject(tempfail("Filter failed to answer; try again later")),
            );
        }
    }
}

impl fmt::Debug for Later {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Later")
            .field("ticket", &self.ticket)
            .field("armed", &self.to.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Ticket, Verdict)>>);

    impl Answers for Recorder {
        fn answer(&self, ticket: Ticket, verdict: Verdict) {
            self.0.lock().unwrap().push((ticket, verdict));
        }
    }

    fn recorder() -> (Later, Arc<Recorder>) {
        let got = Arc::new(Recorder::default());
        let ticket = Ticket { slot: 3, serial: 7 };
        (Later::new(got.clone(), ticket), got)
    }

    #[test]
    fn a_later_answers_once_and_a_dropped_one_fails_closed() {
        let (later, got) = recorder();
        later.answer(Verdict::Continue);
        assert_eq!(
            *got.0.lock().unwrap(),
            [(Ticket { slot: 3, serial: 7 }, Verdict::Continue)]
        );

        let (later, got) = recorder();
        drop(later);
        let got = got.0.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            matches!(&got[0].1, Verdict::Reject(r) if r.code() == 451 && r.enhanced() == Some(EnhancedCode::new(4, 3, 0))),
            "{got:?}"
        );
    }

    #[test]
    fn a_disarmed_later_says_nothing() {
        let (later, got) = recorder();
        later.disarm();
        assert!(got.0.lock().unwrap().is_empty());
    }

    #[test]
    fn header_fields_cannot_inject_lines() {
        assert!(valid_header_field("X-Spam-Status", "Yes, score=7"));
        assert!(!valid_header_field(
            "X-Bad",
            "a\r\nBcc: victim@example.test"
        ));
        assert!(!valid_header_field("X Bad", "a"));
        assert!(!valid_header_field("X:Bad", "a"));
        assert!(!valid_header_field("", "a"));
        assert!(!valid_header_field("X-Ünicode", "a"));
    }

    #[test]
    fn mapped_ipv4_clients_are_ipv4_to_policy() {
        let client = ClientInfo {
            id: 1,
            peer: "[::ffff:192.0.2.7]:4000".parse().unwrap(),
            local: "127.0.0.1:25".parse().unwrap(),
            trusted: false,
            tls: None,
            login: None,
        };
        assert_eq!(client.ip(), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
