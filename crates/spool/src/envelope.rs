//! The plain-data envelope and per-recipient delivery state, and their binary
//! encodings (see the crate documentation for the byte layout).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::codec::{Reader, put_str, put_u8, put_u32, put_u64};
use crate::{QueueId, SpoolError};

/// Version byte that starts every encoded envelope.
const ENVELOPE_VERSION: u8 = 1;

/// The SMTP envelope of one message, as plain data: the spool knows nothing
/// about sessions and does not interpret these fields (except `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The message's queue id, from [`Spool::new_id`](crate::Spool::new_id).
    pub id: QueueId,
    /// The reverse-path of MAIL FROM, without angle brackets; `""` for the
    /// null reverse-path `<>` (never bounced).
    pub reverse_path: String,
    /// The ESMTP parameters of MAIL as text, e.g. `"BODY=8BITMIME RET=HDRS"`.
    pub mail_params: String,
    /// The forward-paths, in RCPT order; journal entries refer to them by index.
    pub recipients: Vec<Recipient>,
    /// When the message was accepted, in milliseconds since the Unix epoch.
    pub arrival_unix_ms: u64,
    /// The SMTP client's address.
    pub client_ip: IpAddr,
    /// The client's HELO/EHLO argument.
    pub helo: String,
    /// 0 7bit, 1 8bitmime, 2 binarymime (opaque to the spool).
    pub body_type: u8,
    /// Whether MAIL carried the SMTPUTF8 parameter.
    pub smtputf8: bool,
}

/// One forward-path of the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path, without angle brackets.
    pub address: String,
    /// The ESMTP parameters of its RCPT command as text, e.g. `"NOTIFY=FAILURE"`.
    pub params: String,
}

/// Where delivery to one recipient stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RecipientState {
    /// Not yet attempted (every recipient starts here).
    #[default]
    Pending,
    /// Delivered: final.
    Delivered,
    /// Permanently failed (a DSN is due to the reverse-path): final.
    Failed {
        /// The reply that explains the failure, for the DSN.
        reply: String,
    },
    /// Temporarily failed; retry not before `until_unix_ms`.
    Deferred {
        /// Earliest next attempt, in milliseconds since the Unix epoch.
        until_unix_ms: u64,
        /// Attempts made so far.
        attempts: u32,
        /// The last temporary-failure reply.
        reply: String,
    },
}

impl RecipientState {
    /// Delivered or failed: nothing more will happen to this recipient. A
    /// message whose recipients are all final leaves the spool.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RecipientState::Delivered | RecipientState::Failed { .. }
        )
    }
}

/// A change of one recipient's state, appended to the journal by the delivery
/// side through [`SpoolHandle::journal`](crate::SpoolHandle::journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The message.
    pub id: QueueId,
    /// Index into [`Envelope::recipients`].
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

impl Envelope {
    /// Appends the binary encoding of the envelope to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, ENVELOPE_VERSION);
        put_u64(out, self.id.0);
        put_u64(out, self.arrival_unix_ms);
        match self.client_ip {
            IpAddr::V4(a) => {
                put_u8(out, 4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                put_u8(out, 6);
                out.extend_from_slice(&a.octets());
            }
        }
        put_u8(out, self.body_type);
        put_u8(out, u8::from(self.smtputf8));
        put_str(out, &self.reverse_path);
        put_str(out, &self.mail_params);
        put_str(out, &self.helo);
        put_u32(out, self.recipients.len() as u32);
        for r in &self.recipients {
            put_str(out, &r.address);
            put_str(out, &r.params);
        }
    }

    /// Decodes an envelope encoded by [`Envelope::encode`]; the input must be
    /// exactly one envelope.
    pub(crate) fn decode(buf: &[u8]) -> Result<Envelope, SpoolError> {
        let mut r = Reader::new(buf);
        if r.u8()? != ENVELOPE_VERSION {
            return Err(SpoolError::Corrupt("unknown envelope version"));
        }
        let id = QueueId(r.u64()?);
        let arrival_unix_ms = r.u64()?;
        let client_ip = match r.u8()? {
            4 => {
                let b = r.take(4)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(r.take(16)?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return Err(SpoolError::Corrupt("bad address family")),
        };
        let body_type = r.u8()?;
        let smtputf8 = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(SpoolError::Corrupt("bad SMTPUTF8 flag")),
        };
        let reverse_path = r.str()?;
        let mail_params = r.str()?;
        let helo = r.str()?;
        // Each recipient is at least two empty strings: 8 bytes.
        let n = r.count(8)?;
        let mut recipients = Vec::with_capacity(n);
        for _ in 0..n {
            recipients.push(Recipient {
                address: r.str()?,
                params: r.str()?,
            });
        }
        r.finish()?;
        Ok(Envelope {
            id,
            reverse_path,
            mail_params,
            recipients,
            arrival_unix_ms,
            client_ip,
            helo,
            body_type,
            smtputf8,
        })
    }
}

impl RecipientState {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RecipientState::Pending => put_u8(out, 0),
            RecipientState::Delivered => put_u8(out, 1),
            RecipientState::Failed { reply } => {
                put_u8(out, 2);
                put_str(out, reply);
            }
            RecipientState::Deferred {
                until_unix_ms,
                attempts,
                reply,
            } => {
                put_u8(out, 3);
                put_u64(out, *until_unix_ms);
                put_u32(out, *attempts);
                put_str(out, reply);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<RecipientState, SpoolError> {
        Ok(match r.u8()? {
            0 => RecipientState::Pending,
            1 => RecipientState::Delivered,
            2 => RecipientState::Failed { reply: r.str()? },
            3 => RecipientState::Deferred {
                until_unix_ms: r.u64()?,
                attempts: r.u32()?,
                reply: r.str()?,
            },
            _ => return Err(SpoolError::Corrupt("unknown recipient state")),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_state() -> impl Strategy<Value = RecipientState> {
        prop_oneof![
            Just(RecipientState::Pending),
            Just(RecipientState::Delivered),
            ".{0,40}".prop_map(|reply| RecipientState::Failed { reply }),
            (any::<u64>(), any::<u32>(), ".{0,40}").prop_map(|(until_unix_ms, attempts, reply)| {
                RecipientState::Deferred {
                    until_unix_ms,
                    attempts,
                    reply,
                }
            }),
        ]
    }

    pub(crate) fn arb_envelope() -> impl Strategy<Value = Envelope> {
        let ip = prop_oneof![
            any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ];
        let rcpt = ("\\PC{0,30}", "\\PC{0,20}")
            .prop_map(|(address, params)| Recipient { address, params });
        (
            any::<u64>(),
            "\\PC{0,40}",
            "[A-Z0-9= ]{0,30}",
            proptest::collection::vec(rcpt, 0..8),
            any::<u64>(),
            ip,
            "\\PC{0,30}",
            any::<u8>(),
            any::<bool>(),
        )
            .prop_map(
                |(
                    id,
                    reverse_path,
                    mail_params,
                    recipients,
                    arrival_unix_ms,
                    client_ip,
                    helo,
                    body_type,
                    smtputf8,
                )| {
                    Envelope {
                        id: QueueId(id),
                        reverse_path,
                        mail_params,
                        recipients,
                        arrival_unix_ms,
                        client_ip,
                        helo,
                        body_type,
                        smtputf8,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn envelope_round_trips(env in arb_envelope()) {
            let mut buf = Vec::new();
            env.encode(&mut buf);
            prop_assert_eq!(Envelope::decode(&buf).unwrap(), env);
        }

        #[test]
        fn truncated_envelope_is_an_error(env in arb_envelope(), cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            env.encode(&mut buf);
            let cut = cut.index(buf.len());
            prop_assert!(Envelope::decode(&buf[..cut]).is_err());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Envelope::decode(&bytes);
            let mut r = Reader::new(&bytes);
            while r.remaining() > 0 && RecipientState::decode(&mut r).is_ok() {}
        }

        #[test]
        fn state_round_trips(state in arb_state()) {
            let mut buf = Vec::new();
            state.encode(&mut buf);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(RecipientState::decode(&mut r).unwrap(), state);
            prop_assert!(r.finish().is_ok());
        }
    }

    #[test]
    fn huge_recipient_count_is_rejected_without_allocating() {
        let env = Envelope {
            id: QueueId(1),
            reverse_path: String::new(),
            mail_params: String::new(),
            recipients: vec![],
            arrival_unix_ms: 0,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: "h".into(),
            body_type: 0,
            smtputf8: false,
        };
        let mut buf = Vec::new();
        env.encode(&mut buf);
        let n = buf.len();
        buf[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Envelope::decode(&buf),
            Err(SpoolError::Corrupt(_))
        ));
    }
}
