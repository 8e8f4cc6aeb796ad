//! The label values each metric can take. Every set is closed (an enum) or
//! bounded by the configuration (listeners, plugins), so a scrape's size
//! does not grow with the traffic: no label ever holds a domain, an address
//! or a reply text.

use sluice_smtp::Stage;

/// Listeners beyond this many share the last one's series.
pub const MAX_LISTENERS: usize = 16;
/// Plugins beyond this many share the last one's series.
pub const MAX_PLUGINS: usize = 8;

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const COUNT: usize = $name::ALL.len();

            /// The label value.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

label_enum! {
    /// What became of an incoming connection.
    ConnResult {
        /// Admitted and served.
        Accepted => "accepted",
        /// Refused by the connection limits (per client, in total).
        Limited => "limited",
        /// A PROXY protocol listener refused an address not in its
        /// `proxy_trusted` list.
        ProxyRefused => "proxy_refused",
        /// The PROXY header was malformed, too long or late.
        ProxyFailed => "proxy_failed",
    }
}

label_enum! {
    /// How a delivery attempt reached the recipient.
    Transport {
        /// A Maildir on this machine.
        Local => "local",
        /// LMTP to a local mailbox server.
        Lmtp => "lmtp",
        /// SMTP to the next hop.
        Smtp => "smtp",
    }
}

label_enum! {
    /// One recipient's outcome of one delivery attempt.
    DeliveryResult {
        Delivered => "delivered",
        Deferred => "deferred",
        Failed => "failed",
    }
}

label_enum! {
    /// Which end of a TLS handshake Sluice was.
    TlsSide {
        /// A client's STARTTLS or implicit TLS.
        Server => "server",
        /// Sluice's STARTTLS to a next hop.
        Client => "client",
    }
}

label_enum! {
    /// The SASL mechanism of an AUTH attempt.
    AuthMechanism {
        Plain => "PLAIN",
        Login => "LOGIN",
    }
}

label_enum! {
    /// How an AUTH attempt ended.
    AuthOutcome {
        /// The credentials were right.
        Success => "success",
        /// Wrong credentials, a malformed exchange, or a cancelled one.
        Failure => "failure",
        /// The password backend could not answer (4xx).
        Error => "error",
        /// Refused before checking: the client or the login is locked out.
        Locked => "locked",
    }
}

label_enum! {
    /// The record type of a DNS lookup.
    DnsKind {
        Mx => "MX",
        A => "A",
        Aaaa => "AAAA",
        Txt => "TXT",
        Ptr => "PTR",
        Tlsa => "TLSA",
        Other => "other",
    }
}

label_enum! {
    /// How a DNS lookup ended.
    DnsResult {
        /// Records came back.
        Ok => "ok",
        /// The name or the record type does not exist.
        NotFound => "not_found",
        /// No answer in time.
        Timeout => "timeout",
        /// Anything else: SERVFAIL, a refused query, a broken answer.
        Error => "error",
    }
}

/// Where a refused command was, for `sluice_smtp_rejected_total`: a stage
/// of the session, or a command outside the transaction (NOOP, an unknown
/// verb, a line too long).
pub(crate) const STAGE_LABELS: usize = Stage::ALL.len() + 1;

pub(crate) fn stage_index(stage: Option<Stage>) -> usize {
    stage
        .and_then(|s| Stage::ALL.iter().position(|&t| t == s))
        .unwrap_or(Stage::ALL.len())
}

pub(crate) fn stage_label(index: usize) -> &'static str {
    match Stage::ALL.get(index) {
        // Label values read better without spaces.
        Some(Stage::EndOfData) => "end_of_data",
        Some(stage) => stage.name(),
        None => "other",
    }
}

/// Reply codes counted: 400 to 599.
pub(crate) const FIRST_CODE: u16 = 400;
pub(crate) const CODES: usize = 200;

label_enum! {
    /// Where a filter stage (the chain's hooks for one SMTP stage) ran.
    StageRan {
        /// On the event loop that asked: no hand-off.
        EventLoop => "event_loop",
        /// Begun on the event loop, abandoned there (a host call would have
        /// waited, or the hook outran its slice), then run on a filter thread.
        Abandoned => "abandoned",
        /// On a filter thread (counted again after an abandoned start).
        FilterThread => "filter_thread",
    }
}
