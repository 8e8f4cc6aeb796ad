//! Where delivery to each recipient stands, why, and the changes the
//! delivery side journals; with their binary encodings.

use std::fmt;
use std::net::SocketAddr;

use sluice_smtp::{EnhancedCode, Reply, Stage};

use crate::QueueId;
use crate::SpoolError;
use crate::codec::{Reader, put_str, put_u8, put_u32, put_u64};
use crate::entry::{ip, put_ip};

/// Where delivery to one recipient stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RecipientState {
    /// Not yet attempted (every recipient starts here).
    #[default]
    Pending,
    /// Delivered: final.
    Delivered,
    /// Permanently failed (a DSN is due to the reverse-path): final.
    Failed(Reason),
    /// Temporarily failed; retry not before `until_unix_ms`.
    Deferred {
        /// Earliest next attempt, in milliseconds since the Unix epoch.
        until_unix_ms: u64,
        /// Attempts made so far.
        attempts: u32,
        /// Why the last attempt failed.
        last: Reason,
    },
}

impl RecipientState {
    /// Delivered or failed: nothing more will happen to this recipient. A
    /// message whose recipients are all final leaves the spool.
    pub fn is_final(&self) -> bool {
        matches!(self, RecipientState::Delivered | RecipientState::Failed(_))
    }

    /// The reason kept with a failed or deferred recipient.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            RecipientState::Failed(reason) | RecipientState::Deferred { last: reason, .. } => {
                Some(reason)
            }
            RecipientState::Pending | RecipientState::Delivered => None,
        }
    }
}

/// Why a delivery attempt ended as it did: the reply that decided it, who
/// gave it and at which stage. Kept typed in the journal, so a bounce built
/// days later names the host that refused (RFC 3464 `Remote-MTA`) and quotes
/// its reply (`Diagnostic-Code`) from fields, never from text parsed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The next hop's reply, or our own words in the form of a reply
    /// (`451 4.4.1 Connection refused by …`).
    pub reply: Reply,
    /// The next hop that gave [`reply`](Self::reply); `None` when the reply
    /// is our own (local delivery, no connection, DNS, a timeout).
    pub remote_mta: Option<RemoteMta>,
    /// Where the session was when the reply came; `None` where there was
    /// no session (local delivery) or it is not known (older spools).
    pub stage: Option<Stage>,
}

/// A next hop that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMta {
    /// Its name as we looked it up (an MX host, a route's host), or the
    /// address literal `[192.0.2.1]` when we had no name.
    pub name: String,
    /// The address and port we were connected to, when known.
    pub addr: Option<SocketAddr>,
}

impl Reason {
    /// A reply of our own, with no next hop behind it.
    pub fn local(reply: Reply) -> Reason {
        Reason {
            reply,
            remote_mta: None,
            stage: None,
        }
    }
}

impl fmt::Display for RemoteMta {
    /// `mx.remote.test[192.0.2.1]:25`, as Postfix names a next hop.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Piece by piece: a delivery's log line writes this twice.
        let Some(addr) = self.addr else {
            return f.write_str(&self.name);
        };
        let ip = sluice_smtp::IpText(addr.ip());
        f.write_str(&self.name)?;
        // A next hop named by its address (`[192.0.2.1]`) is not named twice.
        let literal = self
            .name
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|inner| ip.is_written_as(inner));
        if !literal {
            f.write_str("[")?;
            ip.fmt(f)?;
            f.write_str("]")?;
        }
        f.write_str(":")?;
        addr.port().fmt(f)
    }
}

impl fmt::Display for Reason {
    /// For logs and `sluice queue` only (nothing reads it back):
    /// `mx.remote.test[192.0.2.1]:25 said: 550 5.1.1 … (in reply to RCPT)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Piece by piece (a line per delivery writes it): `write!` costs
        // more than the text.
        if let Some(remote) = &self.remote_mta {
            remote.fmt(f)?;
            f.write_str(" said: ")?;
        }
        self.reply.fmt(f)?;
        match (&self.remote_mta, self.stage) {
            (Some(_), Some(stage)) => {
                f.write_str(" (in reply to ")?;
                f.write_str(stage_words(stage))?;
                f.write_str(")")
            }
            _ => Ok(()),
        }
    }
}

/// A stage's number on disk. Fixed for good: a new stage takes the next
/// free number, whatever its place in [`Stage::ALL`].
fn stage_tag(stage: Stage) -> u8 {
    match stage {
        Stage::Connect => 1,
        Stage::Greeting => 2,
        Stage::Hello => 3,
        Stage::Mail => 4,
        Stage::Rcpt => 5,
        Stage::Data => 6,
        Stage::EndOfData => 7,
        Stage::Auth => 8,
    }
}

/// RFC 3464 style: "in reply to RCPT TO command".
fn stage_words(stage: Stage) -> &'static str {
    match stage {
        Stage::Connect => "our connection",
        Stage::Greeting => "our connection (greeting)",
        Stage::Hello => "EHLO",
        Stage::Auth => "AUTH",
        Stage::Mail => "MAIL FROM",
        Stage::Rcpt => "RCPT TO",
        Stage::Data => "DATA",
        Stage::EndOfData => "end of data",
    }
}

/// A change of one recipient's state, appended to the journal by the delivery
/// side through [`SpoolHandle::journal`](crate::SpoolHandle::journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The message.
    pub id: QueueId,
    /// Index into the entry's `envelope.recipients`.
    pub recipient: u32,
    /// The recipient's new state.
    pub state: RecipientState,
}

/// A change of a whole message's state, through
/// [`SpoolHandle::mark`](crate::SpoolHandle::mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageMark {
    /// Delivery is finished (e.g. the DSN for the failed recipients is
    /// queued): the message leaves the spool whatever its recipients' states.
    Done,
    /// Removed by the operator (`sluice queue delete`): leaves the spool.
    Deleted,
    /// Held by the operator: stays queued but is not to be delivered.
    Held,
    /// Released from hold.
    Released,
}

// Tags of the encoded states. 2 and 3 are the text-reply forms of earlier
// releases, read and never written.
const PENDING: u8 = 0;
const DELIVERED: u8 = 1;
const FAILED_V1: u8 = 2;
const DEFERRED_V1: u8 = 3;
const FAILED: u8 = 4;
const DEFERRED: u8 = 5;

impl RecipientState {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RecipientState::Pending => put_u8(out, PENDING),
            RecipientState::Delivered => put_u8(out, DELIVERED),
            RecipientState::Failed(reason) => {
                put_u8(out, FAILED);
                reason.encode(out);
            }
            RecipientState::Deferred {
                until_unix_ms,
                attempts,
                last,
            } => {
                put_u8(out, DEFERRED);
                put_u64(out, *until_unix_ms);
                put_u32(out, *attempts);
                last.encode(out);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<RecipientState, SpoolError> {
        Ok(match r.u8()? {
            PENDING => RecipientState::Pending,
            DELIVERED => RecipientState::Delivered,
            FAILED => RecipientState::Failed(Reason::decode(r)?),
            DEFERRED => RecipientState::Deferred {
                until_unix_ms: r.u64()?,
                attempts: r.u32()?,
                last: Reason::decode(r)?,
            },
            FAILED_V1 => RecipientState::Failed(crate::legacy::reason_v1(&r.str()?, 5)),
            DEFERRED_V1 => {
                let until_unix_ms = r.u64()?;
                let attempts = r.u32()?;
                RecipientState::Deferred {
                    until_unix_ms,
                    attempts,
                    last: crate::legacy::reason_v1(&r.str()?, 4),
                }
            }
            _ => return Err(SpoolError::Corrupt("unknown recipient state")),
        })
    }
}

impl Reason {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.reply.code().to_le_bytes());
        match self.reply.enhanced() {
            None => put_u8(out, 0),
            Some(e) => {
                put_u8(out, 1);
                put_u8(out, e.class);
                out.extend_from_slice(&e.subject.to_le_bytes());
                out.extend_from_slice(&e.detail.to_le_bytes());
            }
        }
        let lines = self.reply.lines();
        put_u32(out, lines.len() as u32);
        for line in lines {
            put_str(out, line);
        }
        match &self.remote_mta {
            None => put_u8(out, 0),
            Some(remote) => {
                put_u8(out, 1);
                put_str(out, &remote.name);
                match remote.addr {
                    None => put_u8(out, 0),
                    Some(addr) => {
                        put_u8(out, 1);
                        put_ip(out, addr.ip());
                        out.extend_from_slice(&addr.port().to_le_bytes());
                    }
                }
            }
        }
        put_u8(
            out,
            match self.stage {
                None => 0,
                Some(stage) => stage_tag(stage),
            },
        );
    }

    fn decode(r: &mut Reader<'_>) -> Result<Reason, SpoolError> {
        let u16 = |r: &mut Reader<'_>| -> Result<u16, SpoolError> {
            let b = r.take(2)?;
            Ok(u16::from_le_bytes([b[0], b[1]]))
        };
        let code = u16(r)?;
        if !(200..600).contains(&code) {
            return Err(SpoolError::Corrupt("reply code out of range"));
        }
        let enhanced = match r.u8()? {
            0 => None,
            1 => Some(EnhancedCode::new(r.u8()?, u16(r)?, u16(r)?)),
            _ => return Err(SpoolError::Corrupt("bad enhanced code flag")),
        };
        let n = r.count(4)?;
        let mut lines = Vec::with_capacity(n);
        for _ in 0..n {
            lines.push(r.str()?);
        }
        let remote_mta = match r.u8()? {
            0 => None,
            1 => {
                let name = r.str()?;
                let addr = match r.u8()? {
                    0 => None,
                    1 => {
                        let ip = ip(r)?;
                        Some(SocketAddr::new(ip, u16(r)?))
                    }
                    _ => return Err(SpoolError::Corrupt("bad remote address flag")),
                };
                Some(RemoteMta { name, addr })
            }
            _ => return Err(SpoolError::Corrupt("bad remote MTA flag")),
        };
        let stage = match r.u8()? {
            0 => None,
            n => Some(
                Stage::ALL
                    .into_iter()
                    .find(|s| stage_tag(*s) == n)
                    .ok_or(SpoolError::Corrupt("unknown stage"))?,
            ),
        };
        Ok(Reason {
            reply: Reply::multiline(code, enhanced, lines),
            remote_mta,
            stage,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_reason() -> impl Strategy<Value = Reason> {
        let enhanced = proptest::option::of(
            (
                prop_oneof![Just(2u8), Just(4), Just(5)],
                0u16..999,
                0u16..999,
            )
                .prop_map(|(c, s, d)| EnhancedCode::new(c, s, d)),
        );
        let remote = proptest::option::of(
            (
                "[a-z.]{1,20}",
                proptest::option::of(
                    (any::<std::net::IpAddr>(), any::<u16>())
                        .prop_map(|(ip, port)| SocketAddr::new(ip, port)),
                ),
            )
                .prop_map(|(name, addr)| RemoteMta { name, addr }),
        );
        (
            200u16..600,
            enhanced,
            proptest::collection::vec("[ -~]{0,30}", 1..3),
            remote,
            proptest::option::of(proptest::sample::select(Stage::ALL.to_vec())),
        )
            .prop_map(|(code, enhanced, lines, remote_mta, stage)| Reason {
                reply: Reply::multiline(code, enhanced, lines),
                remote_mta,
                stage,
            })
    }

    pub(crate) fn arb_state() -> impl Strategy<Value = RecipientState> {
        prop_oneof![
            Just(RecipientState::Pending),
            Just(RecipientState::Delivered),
            arb_reason().prop_map(RecipientState::Failed),
            (any::<u64>(), any::<u32>(), arb_reason()).prop_map(
                |(until_unix_ms, attempts, last)| {
                    RecipientState::Deferred {
                        until_unix_ms,
                        attempts,
                        last,
                    }
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn state_round_trips(state in arb_state()) {
            let mut buf = Vec::new();
            state.encode(&mut buf);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(RecipientState::decode(&mut r).unwrap(), state);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut r = Reader::new(&bytes);
            while r.remaining() > 0 && RecipientState::decode(&mut r).is_ok() {}
        }
    }

    #[test]
    fn a_reason_names_the_host_and_the_stage() {
        let reason = Reason {
            reply: Reply::new(
                550,
                Some(EnhancedCode::new(5, 1, 1)),
                "<b@remote.test>: no such user",
            ),
            remote_mta: Some(RemoteMta {
                name: "mx1.remote.test".into(),
                addr: Some("192.0.2.1:25".parse().unwrap()),
            }),
            stage: Some(Stage::Rcpt),
        };
        assert_eq!(
            reason.to_string(),
            "mx1.remote.test[192.0.2.1]:25 said: 550 5.1.1 <b@remote.test>: no such user (in reply to RCPT TO)"
        );
        let literal = RemoteMta {
            name: "[192.0.2.1]".into(),
            addr: Some("192.0.2.1:2525".parse().unwrap()),
        };
        assert_eq!(literal.to_string(), "[192.0.2.1]:2525");
        let own = Reason::local(Reply::new(
            451,
            Some(EnhancedCode::new(4, 4, 1)),
            "Connection refused",
        ));
        assert_eq!(own.to_string(), "451 4.4.1 Connection refused");
    }
}
